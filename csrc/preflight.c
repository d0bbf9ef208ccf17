/* Before the first kernel operation: can the control devices be used? */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "internal.h"

#define HINT "; `dmlua --sandbox script.lua` runs the script in a VM with a real device-mapper kernel"

struct control {
	const char *kind;	/* "dm" or "loop" */
	const char *node;	/* the control device */
	const char *misc;	/* its name in /proc/misc */
	const char *module;	/* its module, under /sys/module */
	const char *what;	/* for messages */
	int mknod;		/* make a missing node, as libdevmapper does */
	int ok;			/* checked once, then remembered */
};

static struct control controls[] = {
	{"dm", "/dev/mapper/control", "device-mapper", "dm_mod", "device-mapper", 1, 0},
	{"loop", "/dev/loop-control", "loop-control", "loop", "the loop driver", 0, 0},
};

/* The misc minor registered under name in /proc/misc, or -1. */
static int misc_minor(const char *name)
{
	char line[128], dev[64];
	int minor, found = -1;
	FILE *f = fopen("/proc/misc", "re");
	if (!f)
		return -1;
	while (found < 0 && fgets(line, sizeof line, f))
		if (sscanf(line, "%d %63s", &minor, dev) == 2 && strcmp(dev, name) == 0)
			found = minor;
	fclose(f);
	return found;
}

static int try_open(const char *node)
{
	int fd = open(node, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

/* Opens the control device, or raises one error saying what is missing. */
static void check(lua_State *L, struct control *c)
{
	char module[64];
	struct stat st;
	int err, minor, loaded;
	if (try_open(c->node) == 0)
		return;
	err = errno;
	minor = misc_minor(c->misc);
	snprintf(module, sizeof module, "/sys/module/%s", c->module);
	loaded = minor >= 0 || stat(module, &st) == 0;
	if (err == ENOENT && minor >= 0 && c->mknod) {
		/* the driver is there and only the node is missing */
		mkdir("/dev/mapper", 0755);
		if (mknod(c->node, S_IFCHR | 0600, makedev(10, minor)) == 0 && try_open(c->node) == 0)
			return;
	}
	if (err == EACCES || err == EPERM) {
		if (geteuid() != 0)
			raise_error(L, "preflight", c->node, err, "not root: %s needs root to open %s" HINT,
			            c->what, c->node);
		raise_error(L, "preflight", c->node, err, "root may not open %s (a container or a security "
		            "policy denies the device)" HINT, c->node);
	}
	if ((err == ENOENT || err == ENODEV || err == ENXIO) && !loaded)
		raise_error(L, "preflight", c->node, err, "%s is not in this kernel, or its module is not loaded "
		            "(/proc/misc has no %s, there is no %s; as root: modprobe %s), so %s cannot be used" HINT,
		            c->what, c->misc, module, c->module, c->node);
	if (err == ENOENT)
		raise_error(L, "preflight", c->node, err, "no device node: the kernel has %s (misc minor %d in "
		            "/proc/misc) but there is no %s (a container without the device?)" HINT,
		            c->what, minor, c->node);
	raise_error(L, "preflight", c->node, err, "cannot open %s" HINT, c->node);
}

/* core.preflight("dm"|"loop") -> true, or raises (op "preflight"). A
 * success is remembered: the check runs until it passes once. */
static int l_preflight(lua_State *L)
{
	const char *kind = luaL_checkstring(L, 1);
	size_t i;
	for (i = 0; i < sizeof controls / sizeof *controls; i++)
		if (strcmp(kind, controls[i].kind) == 0) {
			if (!controls[i].ok)
				check(L, &controls[i]);
			controls[i].ok = 1;
			lua_pushboolean(L, 1);
			return 1;
		}
	return raise_error(L, "preflight", kind, EINVAL, "kind must be \"dm\" or \"loop\"");
}

void preflight_open(lua_State *L)
{
	lua_pushcfunction(L, l_preflight);
	lua_setfield(L, -2, "preflight");
}
