/* luaopen_devmapper_core and the error object shared by every area. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "devmapper.h"
#include "internal.h"

/* "op 'name': message (strerror)" */
static int error_tostring(lua_State *L)
{
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	lua_getfield(L, 1, "op");
	luaL_addvalue(&b);
	if (lua_getfield(L, 1, "name") == LUA_TSTRING) {
		luaL_addstring(&b, " '");
		luaL_addvalue(&b);
		luaL_addstring(&b, "'");
	} else
		lua_pop(L, 1);
	luaL_addstring(&b, ": ");
	lua_getfield(L, 1, "message");
	luaL_addvalue(&b);
	return luaL_pushresult(&b), 1;
}

static void push_error_metatable(lua_State *L)
{
	if (luaL_newmetatable(L, ERROR_TYPE)) {
		lua_pushcfunction(L, error_tostring);
		lua_setfield(L, -2, "__tostring");
	}
}

int raise_error(lua_State *L, const char *op, const char *name, int err,
                const char *fmt, ...)
{
	va_list ap;
	lua_createtable(L, 0, 4);
	lua_pushstring(L, op);
	lua_setfield(L, -2, "op");
	if (name) {
		lua_pushstring(L, name);
		lua_setfield(L, -2, "name");
	}
	lua_pushinteger(L, err);
	lua_setfield(L, -2, "errno");
	va_start(ap, fmt);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	if (err) {
		lua_pushfstring(L, "%s (%s)", lua_tostring(L, -1), strerror(err));
		lua_remove(L, -2);
	}
	lua_setfield(L, -2, "message");
	push_error_metatable(L);
	lua_setmetatable(L, -2);
	return lua_error(L);
}

/* core.error{op=, name=, errno=, message=}: raise from Lua, same style. */
static int l_error(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	push_error_metatable(L);
	lua_setmetatable(L, 1);
	return lua_error(L);
}

/* core.sleep(seconds): for bounded polls (a merge finishing), without a fork. */
static int l_sleep(lua_State *L)
{
	double s = luaL_checknumber(L, 1);
	struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	return 0;
}

/* core.monotonic() -> seconds on the monotonic clock (for bounds and benchmarks). */
static int l_monotonic(lua_State *L)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	lua_pushnumber(L, (lua_Number)ts.tv_sec + ts.tv_nsec / 1e9);
	return 1;
}

lua_Integer opt_int_field(lua_State *L, int idx, const char *k, lua_Integer d)
{
	lua_Integer v = d;
	if (lua_type(L, idx) == LUA_TTABLE) {
		if (lua_getfield(L, idx, k) != LUA_TNIL) {
			int ok;
			v = lua_tointegerx(L, -1, &ok);
			if (!ok)
				luaL_error(L, "field '%s' must be an integer", k);
		}
		lua_pop(L, 1);
	}
	return v;
}

/* An optional string field of the table at idx (NULL when absent or not
 * a string); the table keeps it alive while the caller uses it. */
const char *opt_string_field(lua_State *L, int idx, const char *k, size_t *len)
{
	const char *s = NULL;
	if (lua_type(L, idx) == LUA_TTABLE) {
		lua_getfield(L, idx, k);
		if (lua_type(L, -1) == LUA_TSTRING)
			s = lua_tolstring(L, -1, len);
		lua_pop(L, 1);
	}
	return s;
}

int opt_bool_field(lua_State *L, int idx, const char *k, int d)
{
	int v = d;
	if (lua_type(L, idx) == LUA_TTABLE) {
		if (lua_getfield(L, idx, k) != LUA_TNIL)
			v = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	return v;
}

/*
 * While libcryptsetup works in a worker thread (progress.c), a progress
 * callback runs in this one: every core function that reaches
 * libdevmapper, libcryptsetup, the keyring or a device refuses then, in C,
 * so that neither a direct core call nor a signal's error in the Lua
 * layer's bookkeeping gets past it. Upvalues: the function, its name.
 */
static int guarded(lua_State *L)
{
	const char *busy = progress_busy();
	if (busy) {
		const char *name = lua_tostring(L, lua_upvalueindex(2)), *u = strchr(name, '_');
		lua_pushstring(L, u ? u + 1 : name);
		return raise_error(L, lua_tostring(L, -1), NULL, EBUSY,
		                   "the module is busy (%s runs in another thread): a progress callback must not call it",
		                   busy);
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
	return lua_gettop(L);
}

/* core.busy() -> the operation running in a worker thread, or nil */
static int l_busy(lua_State *L)
{
	const char *busy = progress_busy();
	if (!busy)
		return 0;
	lua_pushstring(L, busy);
	return 1;
}

/* What a callback may call meanwhile: errors, time, critical sections, and
 * keys made in memory (their derivation runs in a worker of its own). */
static const char *const unguarded[] = {
	"error", "sleep", "monotonic", "busy", "critical_enter", "critical_leave", "digest_size", "key_calibrate",
	"key_fingerprint", "key_from_hex", "key_pbkdf2", "key_plain", "key_prompt", "key_random", "key_read",
	"key_scrypt", "lock", "blkdev", NULL
};

static void guard_all(lua_State *L)
{
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		size_t i;
		int skip = lua_type(L, -2) != LUA_TSTRING || !lua_iscfunction(L, -1);
		for (i = 0; !skip && unguarded[i]; i++)
			skip = strcmp(lua_tostring(L, -2), unguarded[i]) == 0;
		if (!skip) {
			lua_pushvalue(L, -2);
			lua_pushcclosure(L, guarded, 2);
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, -4);	/* replacing an existing key: next goes on */
		} else
			lua_pop(L, 1);
	}
}

int luaopen_devmapper_core(lua_State *L)
{
	lua_newtable(L);
	lua_pushcfunction(L, l_error);
	lua_setfield(L, -2, "error");
	lua_pushcfunction(L, l_sleep);
	lua_setfield(L, -2, "sleep");
	lua_pushcfunction(L, l_monotonic);
	lua_setfield(L, -2, "monotonic");
	mapper_open(L);
	loop_open(L);
	blkdev_open(L);
	secure_open(L);
	kdf_open(L);
	keyinput_open(L);
	keyring_open(L);
	preflight_open(L);
	critical_open(L);
	lock_open(L);
	spawn_open(L);
	luks_open(L);
	verity_open(L);
	guard_all(L);
	lua_pushcfunction(L, l_busy);
	lua_setfield(L, -2, "busy");
	return 1;
}
