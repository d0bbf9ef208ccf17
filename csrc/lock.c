/* Locks between processes (devmapper.Lock): an exclusive flock on a file. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "internal.h"

#define LOCK_TYPE "devmapper.Lock"

struct lock {
	int fd;			/* -1 once closed */
};

/* One idempotent close for :close(), __close and __gc. */
static int l_close(lua_State *L)
{
	struct lock *l = luaL_checkudata(L, 1, LOCK_TYPE);
	if (l->fd >= 0) {
		close(l->fd);	/* the lock goes with the last descriptor */
		l->fd = -1;
	}
	return 0;
}

static int l_tostring(lua_State *L)
{
	struct lock *l = luaL_checkudata(L, 1, LOCK_TYPE);
	lua_getiuservalue(L, 1, 1);
	if (l->fd < 0)
		lua_pushstring(L, LOCK_TYPE " (closed)");
	else
		lua_pushfstring(L, LOCK_TYPE " %s", lua_tostring(L, -1));
	return 1;
}

/* The directories above path, made 0700 where missing. 0, or -1 with errno. */
static int make_parents(const char *path)
{
	char dir[4096];
	char *p;
	if (strlen(path) >= sizeof dir)
		return errno = ENAMETOOLONG, -1;
	strcpy(dir, path);
	for (p = strchr(dir + 1, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return 0;
}

static int l_nap(lua_State *L)
{
	struct timespec ts = {0, 50 * 1000 * 1000};
	(void)L;
	nanosleep(&ts, NULL);
	return 0;
}

/*
 * core.lock(path) -> Lock: an exclusive flock on path (made 0600, with its
 * directories, if missing), waiting until it is free. The wait naps through
 * lua_call, so that hooks run between tries: a signal dmlua turns into an
 * error interrupts the wait (a blocking flock would be restarted).
 */
static int l_lock(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	struct lock *l = lua_newuserdatauv(L, sizeof(*l), 1);
	l->fd = -1;
	luaL_setmetatable(L, LOCK_TYPE);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	if (make_parents(path) < 0)
		return raise_error(L, "lock", path, errno, "cannot make the lock file's directory");
	if ((l->fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600)) < 0)
		return raise_error(L, "lock", path, errno, "cannot open the lock file");
	while (flock(l->fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno;
		if (err != EWOULDBLOCK && err != EINTR) {
			close(l->fd);
			l->fd = -1;
			return raise_error(L, "lock", path, err, "cannot lock");
		}
		lua_pushcfunction(L, l_nap);
		lua_call(L, 0, 0);
	}
	return 1;
}

void lock_open(lua_State *L)
{
	static const luaL_Reg meta[] = {
		{"__close", l_close},
		{"__gc", l_close},
		{"__tostring", l_tostring},
		{NULL, NULL}
	};
	static const luaL_Reg methods[] = {
		{"close", l_close},
		{NULL, NULL}
	};
	lua_pushcfunction(L, l_lock);
	lua_setfield(L, -2, "lock");
	luaL_newmetatable(L, LOCK_TYPE);
	luaL_setfuncs(L, meta, 0);
	luaL_newlib(L, methods);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
}
