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

/*
 * Signals are the embedder's: the module installs no signal handler. Its
 * critical sections (a device's suspend..resume window, entered from Lua
 * with core.critical_enter() and left with core.critical_leave()) nest;
 * this is their depth, > 0 while inside one. An embedder that turns a
 * signal into a Lua error (as dmlua does, from a hook at the next safe
 * point, after lua.c) should wait until it is 0, so that a device is never
 * left suspended. Process-wide; not for use from a signal handler.
 */
int devmapper_critical(void);

#endif
