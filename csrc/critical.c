/* Critical sections: windows (a suspend..resume) that an embedder's signal
 * handling must not break into. The module keeps the count; it installs no
 * signal handler itself. */
#include <errno.h>

#include "devmapper.h"
#include "internal.h"

static int depth;

int devmapper_critical(void)
{
	return depth;
}

/* core.critical_enter() -> depth */
static int l_enter(lua_State *L)
{
	lua_pushinteger(L, ++depth);
	return 1;
}

/* core.critical_leave() -> depth; raises when no section is open. */
static int l_leave(lua_State *L)
{
	if (depth == 0)
		return raise_error(L, "critical_leave", NULL, EINVAL, "no critical section is open");
	lua_pushinteger(L, --depth);
	return 1;
}

void critical_open(lua_State *L)
{
	lua_pushcfunction(L, l_enter);
	lua_setfield(L, -2, "critical_enter");
	lua_pushcfunction(L, l_leave);
	lua_setfield(L, -2, "critical_leave");
}
