/*
 * Embedding lua-devmapper in a C program: the README's example as a file.
 * Build against an installed tree:
 *   cc embed.c $(pkg-config --cflags --libs lua-devmapper) -o embed
 * It plans a table in Lua and prints it; with an argument it runs that
 * chunk instead (./embed 'print(require("devmapper").version())').
 */
#include <stdio.h>

#include <lauxlib.h>
#include <lualib.h>

#include "devmapper.h"

int main(int argc, char **argv)
{
	const char *chunk = argc > 1 ? argv[1]
	        : "local dm = require 'devmapper'\n"
	          "print(dm.table.parse('0 8192 striped 2 16 7:0 0 7:1 0'))\n"
	          "print(dm._VERSION)";
	lua_State *L = luaL_newstate();
	int status;
	if (!L)
		return 1;
	luaL_openlibs(L);
	devmapper_preload(L);	/* require "devmapper" now works */
	status = luaL_dostring(L, chunk);
	if (status != LUA_OK)
		fprintf(stderr, "embed: %s\n", luaL_tolstring(L, -1, NULL));
	lua_close(L);
	return status == LUA_OK ? 0 : 1;
}
