/*
 * lua-devmapper: public header for C programs that embed Lua.
 *
 *   lua_State *L = luaL_newstate();
 *   luaL_openlibs(L);
 *   devmapper_preload(L);      -- makes require "devmapper" work
 */
#ifndef DEVMAPPER_H
#define DEVMAPPER_H

#include <lua.h>

/* The C core, usually reached through require "devmapper". */
int luaopen_devmapper_core(lua_State *L);

/* Registers devmapper.core and the bundled Lua modules in package.preload
 * (available when linked with the embedded Lua sources, as dmlua is). */
void devmapper_preload(lua_State *L);

#endif
