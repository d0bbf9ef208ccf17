/* Block-device facts, read from sysfs by major:minor (no device is opened). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "internal.h"

/* First line of /sys/dev/block/M:m/<rel>, or 0 when absent (one open,
 * read and close: table checks read these for every device they name). */
static int sysfs_line(unsigned ma, unsigned mi, const char *rel, char *buf, size_t size)
{
	char p[128];
	ssize_t n;
	int fd;
	snprintf(p, sizeof p, "/sys/dev/block/%u:%u/%s", ma, mi, rel);
	if ((fd = open(p, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 1;
}

/* The node name from uevent's DEVNAME= line. */
static int devname(unsigned ma, unsigned mi, char *buf, size_t size)
{
	char p[128], line[256];
	FILE *f;
	int found = 0;
	snprintf(p, sizeof p, "/sys/dev/block/%u:%u/uevent", ma, mi);
	if (!(f = fopen(p, "re")))
		return 0;
	while (!found && fgets(line, sizeof line, f))
		if (strncmp(line, "DEVNAME=", 8) == 0) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(buf, size, "/dev/%s", line + 8);
			found = 1;
		}
	fclose(f);
	return found;
}

/* {"M:m", ...} of the devices stacked on this one (sysfs holders/). */
static void push_holders(lua_State *L, unsigned ma, unsigned mi)
{
	char p[128], buf[64];
	struct dirent *e;
	DIR *d;
	int i = 0;
	lua_newtable(L);
	snprintf(p, sizeof p, "/sys/dev/block/%u:%u/holders", ma, mi);
	if (!(d = opendir(p)))
		return;
	while ((e = readdir(d))) {
		char dev[300];
		FILE *f;
		if (e->d_name[0] == '.')
			continue;
		snprintf(dev, sizeof dev, "/sys/block/%s/dev", e->d_name);
		if ((f = fopen(dev, "re"))) {
			if (fgets(buf, sizeof buf, f)) {
				buf[strcspn(buf, "\n")] = '\0';
				lua_pushstring(L, buf);
				lua_seti(L, -2, ++i);
			}
			fclose(f);
		}
	}
	closedir(d);
}

/* "major:minor" in plain decimal, nothing before or after (sscanf would
 * take "+7:0", "7:0:0" or "7:0 x"); 0 when dev is not that. */
static int devno(const char *dev, unsigned *ma, unsigned *mi)
{
	char *end;
	unsigned long a, b;
	if (!isdigit((unsigned char)dev[0]))
		return 0;
	a = strtoul(dev, &end, 10);
	if (*end != ':' || !isdigit((unsigned char)end[1]))
		return 0;
	b = strtoul(end + 1, &end, 10);
	if (*end || a > 0xfff || b > 0xfffff)
		return 0;
	*ma = (unsigned)a;
	*mi = (unsigned)b;
	return 1;
}

/*
 * core.blkdev(dev[, brief]) where dev is a path to a block device or
 * "major:minor" -> {path, major, minor, sectors, logical_block_size,
 * readonly, dm_name?, dm_uuid?, loop_backing?, holders = {"M:m", ...}}.
 * brief: only major, minor, sectors and logical_block_size (what a table's
 * checks need: two sysfs reads). Raises when it is not a block device.
 */
static int l_blkdev(lua_State *L)
{
	const char *dev = luaL_checkstring(L, 1);
	int brief = lua_toboolean(L, 2);
	unsigned ma, mi;
	char buf[4096];
	struct stat st;
	if (!devno(dev, &ma, &mi)) {
		if (stat(dev, &st) != 0)
			return raise_error(L, "blkdev", dev, errno, "cannot stat");
		if (!S_ISBLK(st.st_mode))
			return raise_error(L, "blkdev", dev, ENOTBLK, "not a block device");
		ma = major(st.st_rdev);
		mi = minor(st.st_rdev);
	}
	if (!sysfs_line(ma, mi, "size", buf, sizeof buf))
		return raise_error(L, "blkdev", dev, ENODEV, "no such block device");
	lua_createtable(L, 0, 8);
	lua_pushinteger(L, strtoll(buf, NULL, 10));
	lua_setfield(L, -2, "sectors");
	lua_pushinteger(L, ma);
	lua_setfield(L, -2, "major");
	lua_pushinteger(L, mi);
	lua_setfield(L, -2, "minor");
	lua_pushinteger(L, sysfs_line(ma, mi, "queue/logical_block_size", buf, sizeof buf)
	                       ? strtol(buf, NULL, 10) : 512);
	lua_setfield(L, -2, "logical_block_size");
	if (brief)
		return 1;
	lua_pushboolean(L, sysfs_line(ma, mi, "ro", buf, sizeof buf) && strcmp(buf, "0") != 0);
	lua_setfield(L, -2, "readonly");
	if (sysfs_line(ma, mi, "dm/name", buf, sizeof buf)) {
		lua_pushstring(L, buf);
		lua_setfield(L, -2, "dm_name");
		lua_pushfstring(L, "/dev/mapper/%s", buf);
		lua_setfield(L, -2, "path");
		if (sysfs_line(ma, mi, "dm/uuid", buf, sizeof buf) && *buf) {
			lua_pushstring(L, buf);
			lua_setfield(L, -2, "dm_uuid");
		}
	} else if (devname(ma, mi, buf, sizeof buf)) {
		lua_pushstring(L, buf);
		lua_setfield(L, -2, "path");
	}
	if (sysfs_line(ma, mi, "loop/backing_file", buf, sizeof buf)) {
		lua_pushstring(L, buf);
		lua_setfield(L, -2, "loop_backing");
	}
	push_holders(L, ma, mi);
	lua_setfield(L, -2, "holders");
	return 1;
}

void blkdev_open(lua_State *L)
{
	static const luaL_Reg f[] = {{"blkdev", l_blkdev}, {NULL, NULL}};
	luaL_setfuncs(L, f, 0);
}
