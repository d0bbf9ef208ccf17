/* Shared by the files of the C core; not part of the public API. */
#ifndef DEVMAPPER_INTERNAL_H
#define DEVMAPPER_INTERNAL_H

#include <lua.h>
#include <lauxlib.h>

#define ERROR_TYPE "devmapper.Error"

/* Raise an error object {op, name, errno, message}; never returns.
 * err may be 0; name may be NULL. */
int raise_error(lua_State *L, const char *op, const char *name, int err,
                const char *fmt, ...);

/* Each area adds its functions to the table on top of the stack. */
void dm_open(lua_State *L);
void loop_open(lua_State *L);
void blkdev_open(lua_State *L);
void key_open(lua_State *L);

/* key.c: for dm.c, which puts key bytes into crypt tables.
 * Returns the key's bytes (locked memory) and size, or raises. */
const unsigned char *key_bytes(lua_State *L, int idx, size_t *size);
void secure_wipe(void *p, size_t n);
/* Pushes a Key decoded from len hex digits, or raises naming op. */
void key_push_hex(lua_State *L, const char *hex, size_t len, const char *op, const char *origin);

/* Optional integer field of the table at idx, with a default. */
lua_Integer opt_int_field(lua_State *L, int idx, const char *k, lua_Integer d);
int opt_bool_field(lua_State *L, int idx, const char *k, int d);

#endif
