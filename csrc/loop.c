/* Loop devices through /dev/loop-control and the loop ioctls. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/loop.h>

#include "internal.h"

#ifndef LOOP_CONFIGURE
#define LOOP_CONFIGURE 0x4C0A
struct loop_config {
	__u32 fd;
	__u32 block_size;
	struct loop_info64 info;
	__u64 __reserved[8];
};
#endif

/* core.loop_file(path, bytes, {reuse=}): a sparse file of that size.
 * An existing file is refused unless reuse is set (then only grown). */
static int l_file(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	lua_Integer bytes = luaL_checkinteger(L, 2);
	int reuse = opt_bool_field(L, 3, "reuse", 0);
	struct stat st;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | (reuse ? 0 : O_EXCL), 0600);
	if (fd < 0)
		return raise_error(L, "loop.create", path, errno, "cannot create backing file");
	if (fstat(fd, &st) == 0 && st.st_size < bytes && ftruncate(fd, bytes) != 0) {
		int err = errno;
		close(fd);
		return raise_error(L, "loop.create", path, err, "cannot size backing file");
	}
	close(fd);
	return 0;
}

/* Open descriptors of the autoclear loops this process attached. */
#define MAX_HELD 64
static struct { int number, fd; } held[MAX_HELD];
static int nheld;

static void hold(int number, int fd)
{
	if (nheld == MAX_HELD) {
		close(fd);
		return;
	}
	held[nheld].number = number;
	held[nheld++].fd = fd;
}

static void release(int number)
{
	int i;
	for (i = 0; i < nheld; i++)
		if (held[i].number == number) {
			close(held[i].fd);
			held[i] = held[--nheld];
			return;
		}
}

static int loop_path(char *buf, size_t size, int n)
{
	return snprintf(buf, size, "/dev/loop%d", n);
}

/* Old kernels (before 5.8) have no LOOP_CONFIGURE: set the fd, then the status. */
static int configure_legacy(int lfd, struct loop_config *cfg)
{
	if (ioctl(lfd, LOOP_SET_FD, cfg->fd) < 0)
		return -1;
	if (ioctl(lfd, LOOP_SET_STATUS64, &cfg->info) < 0) {
		int err = errno;
		ioctl(lfd, LOOP_CLR_FD, 0);
		errno = err;
		return -1;
	}
	return 0;
}

static void push_loop(lua_State *L, int n, dev_t rdev)
{
	char path[32];
	loop_path(path, sizeof path, n);
	lua_createtable(L, 0, 4);
	lua_pushstring(L, path);
	lua_setfield(L, -2, "path");
	lua_pushinteger(L, n);
	lua_setfield(L, -2, "number");
	lua_pushinteger(L, major(rdev));
	lua_setfield(L, -2, "major");
	lua_pushinteger(L, minor(rdev));
	lua_setfield(L, -2, "minor");
}

/* The backing file's identity, which outlives a rename or an unlink. */
static void push_backing(lua_State *L, unsigned long long ino, unsigned long long dev)
{
	lua_pushinteger(L, (lua_Integer)ino);
	lua_setfield(L, -2, "inode");
	lua_pushinteger(L, (lua_Integer)dev);
	lua_setfield(L, -2, "device");
}

/*
 * core.loop_attach(file, {readonly=, autoclear=, offset=, sizelimit=,
 * direct_io=, partscan=, block_size=}) -> {path=, number=, major=, minor=,
 * inode=, device=} (the backing file's, as loop_info reports them).
 * Another process may take the free device between GET_FREE and CONFIGURE
 * (EBUSY): then ask for the next free one.
 */
static int l_attach(lua_State *L)
{
	const char *file = luaL_checkstring(L, 1);
	int ro = opt_bool_field(L, 2, "readonly", 0);
	struct loop_config cfg;
	int ffd, ctl, tries;

	memset(&cfg, 0, sizeof cfg);
	cfg.info.lo_offset = opt_int_field(L, 2, "offset", 0);
	cfg.info.lo_sizelimit = opt_int_field(L, 2, "sizelimit", 0);
	cfg.block_size = (__u32)opt_int_field(L, 2, "block_size", 0);
	if (opt_bool_field(L, 2, "autoclear", 0))
		cfg.info.lo_flags |= LO_FLAGS_AUTOCLEAR;
	if (opt_bool_field(L, 2, "partscan", 0))
		cfg.info.lo_flags |= LO_FLAGS_PARTSCAN;
	if (opt_bool_field(L, 2, "direct_io", 0))
		cfg.info.lo_flags |= LO_FLAGS_DIRECT_IO;
	if (ro)
		cfg.info.lo_flags |= LO_FLAGS_READ_ONLY;
	strncpy((char *)cfg.info.lo_file_name, file, LO_NAME_SIZE - 1);

	if ((ffd = open(file, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC)) < 0)
		return raise_error(L, "loop.attach", file, errno, "cannot open backing file");
	cfg.fd = ffd;
	if ((ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC)) < 0) {
		int err = errno;
		close(ffd);
		return raise_error(L, "loop.attach", file, err, "cannot open /dev/loop-control");
	}
	for (tries = 0; tries < 64; tries++) {
		char path[32];
		struct stat st;
		int n = ioctl(ctl, LOOP_CTL_GET_FREE), lfd, rc;
		if (n < 0)
			break;
		loop_path(path, sizeof path, n);
		if ((lfd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC)) < 0)
			break;
		rc = ioctl(lfd, LOOP_CONFIGURE, &cfg);
		/* kernels before 5.8 answer EINVAL (or ENOTTY) to LOOP_CONFIGURE */
		if (rc < 0 && (errno == EINVAL || errno == ENOTTY))
			rc = configure_legacy(lfd, &cfg);
		if (rc == 0) {
			struct stat fst;
			fstat(lfd, &st);
			fstat(ffd, &fst);
			/* An autoclear loop goes when its last opener closes it: hold it
			 * open until loop_detach, or it would go right now. */
			if (cfg.info.lo_flags & LO_FLAGS_AUTOCLEAR)
				hold(n, lfd);
			else
				close(lfd);
			close(ctl);
			close(ffd);
			push_loop(L, n, st.st_rdev);
			push_backing(L, fst.st_ino, fst.st_dev);
			return 1;
		}
		close(lfd);
		if (errno != EBUSY)
			break;
	}
	{
		int err = errno;
		close(ctl);
		close(ffd);
		return raise_error(L, "loop.attach", file, err, "cannot attach");
	}
}

/* core.loop_detach(path): LOOP_CLR_FD; a device still open (say, under a
 * dm table) is detached by the kernel when its last user closes it. */
static int l_detach(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return raise_error(L, "loop.detach", path, errno, "cannot open");
	struct loop_info64 info;
	int number = ioctl(fd, LOOP_GET_STATUS64, &info) == 0 ? (int)info.lo_number : -1;
	if (ioctl(fd, LOOP_CLR_FD, 0) < 0) {
		int err = errno;
		close(fd);
		if (err == ENXIO && number < 0) /* not bound: nothing to do */
			return 0;
		return raise_error(L, "loop.detach", path, err, "cannot detach");
	}
	close(fd);
	release(number);
	return 0;
}

/* Reads the full backing file name from sysfs (the ioctl keeps 64 bytes). */
static int backing_file(int n, char *buf, size_t size)
{
	char p[64];
	FILE *f;
	snprintf(p, sizeof p, "/sys/block/loop%d/loop/backing_file", n);
	if (!(f = fopen(p, "re")))
		return 0;
	if (!fgets(buf, size, f)) {
		fclose(f);
		return 0;
	}
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return 1;
}

/* core.loop_info(path) -> {path, number, major, minor, backing_file, inode,
 * device, offset, sizelimit, readonly, autoclear, partscan, direct_io}, or
 * nil if unbound */
static int l_info(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	struct loop_info64 info;
	struct stat st;
	char file[PATH_MAX];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return raise_error(L, "loop.info", path, errno, "cannot open");
	if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0) {
		int err = errno;
		close(fd);
		if (err == ENXIO)
			return lua_pushnil(L), 1;
		return raise_error(L, "loop.info", path, err, "not a loop device");
	}
	fstat(fd, &st);
	close(fd);
	push_loop(L, info.lo_number, st.st_rdev);
	push_backing(L, info.lo_inode, info.lo_device);
	if (!backing_file(info.lo_number, file, sizeof file))
		snprintf(file, sizeof file, "%s", (char *)info.lo_file_name);
	lua_pushstring(L, file);
	lua_setfield(L, -2, "backing_file");
	lua_pushinteger(L, info.lo_offset);
	lua_setfield(L, -2, "offset");
	lua_pushinteger(L, info.lo_sizelimit);
	lua_setfield(L, -2, "sizelimit");
	lua_pushboolean(L, info.lo_flags & LO_FLAGS_READ_ONLY);
	lua_setfield(L, -2, "readonly");
	lua_pushboolean(L, info.lo_flags & LO_FLAGS_AUTOCLEAR);
	lua_setfield(L, -2, "autoclear");
	lua_pushboolean(L, info.lo_flags & LO_FLAGS_PARTSCAN);
	lua_setfield(L, -2, "partscan");
	lua_pushboolean(L, info.lo_flags & LO_FLAGS_DIRECT_IO);
	lua_setfield(L, -2, "direct_io");
	return 1;
}

/* core.loop_find(file) -> {"/dev/loopN", ...} attached to that file */
static int l_find(lua_State *L)
{
	const char *file = luaL_checkstring(L, 1);
	char want[PATH_MAX], have[PATH_MAX];
	int n, i = 0;
	struct dirent *e;
	DIR *d = opendir("/sys/block");
	if (!realpath(file, want))
		snprintf(want, sizeof want, "%s", file);
	lua_newtable(L);
	while (d && (e = readdir(d))) {
		char path[32];
		if (sscanf(e->d_name, "loop%d", &n) != 1 || !backing_file(n, have, sizeof have))
			continue;
		if (strcmp(have, want) == 0) {
			loop_path(path, sizeof path, n);
			lua_pushstring(L, path);
			lua_seti(L, -2, ++i);
		}
	}
	if (d)
		closedir(d);
	return 1;
}

void loop_open(lua_State *L)
{
	static const luaL_Reg f[] = {
		{"loop_file", l_file}, {"loop_attach", l_attach}, {"loop_detach", l_detach},
		{"loop_info", l_info}, {"loop_find", l_find}, {NULL, NULL}};
	luaL_setfuncs(L, f, 0);
}
