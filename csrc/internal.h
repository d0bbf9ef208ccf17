/* Shared by the files of the C core; not part of the public API. */
#ifndef DEVMAPPER_INTERNAL_H
#define DEVMAPPER_INTERNAL_H

#include <stddef.h>

#include <lua.h>
#include <lauxlib.h>

/* Nothing declared here leaves the shared object. */
#pragma GCC visibility push(hidden)

#define ERROR_TYPE "devmapper.Error"

/* Raise an error object {op, name, errno, message}; never returns.
 * err may be 0; name may be NULL. */
int raise_error(lua_State *L, const char *op, const char *name, int err,
                const char *fmt, ...);

/* Each area adds its functions to the table on top of the stack. */
void mapper_open(lua_State *L);
void loop_open(lua_State *L);
void blkdev_open(lua_State *L);
void secure_open(lua_State *L);
void kdf_open(lua_State *L);
void keyinput_open(lua_State *L);
void keyring_open(lua_State *L);
void keyring_release_thread(void);
void preflight_open(lua_State *L);
void critical_open(lua_State *L);
void lock_open(lua_State *L);
void spawn_open(lua_State *L);
void luks_open(lua_State *L);
void verity_open(lua_State *L);

/* luks.c: libcryptsetup's error lines since the last reset, which the
 * contexts given to cryptsetup_log_to write into. */
struct crypt_device;
void cryptsetup_log_reset(void);
void cryptsetup_log_to(struct crypt_device *cd);
/* Free cd (if any) and raise the error object, libcryptsetup's words appended. */
int cryptsetup_fail(lua_State *L, struct crypt_device *cd, const char *op, const char *name, int err,
                    const char *what);

/* progress.c: long work reported to a Lua callback (the function at cb).
 * progress_tick calls it with {op, phase, done, total (nil when total < 0),
 * unit, what?, finished?}: LUA_OK, or its error status with the error on top.
 * progress_run runs fn(arg) in a worker thread (every signal blocked there;
 * fn must not touch L) and ticks every 100 ms with the milliseconds spent,
 * then once with finished; without a callback (cb 0 or nil) fn runs here.
 * fn always finishes before it returns; after a raising callback it only
 * waits, and returns that status, the error on top. */
int progress_tick(lua_State *L, int cb, const char *op, const char *phase, const char *what, lua_Integer done,
                  lua_Integer total, const char *unit, int finished);
int progress_run(lua_State *L, int cb, const char *op, const char *phase, const char *what, lua_Integer total,
                 int exclusive, void (*fn)(void *), void *arg);
/* exclusive: fn holds libcryptsetup and libdevmapper; until it ends,
 * progress_busy() is op and core.c refuses the calls that use them (the
 * callback's). NULL otherwise. */
const char *progress_busy(void);

/* secure.c: locked memory, and the devmapper.Key that holds it. */
#define KEY_TYPE "devmapper.Key"
#define KEY_MAX 4096		/* bytes of a made or derived key */

struct key {
	unsigned char *bytes;	/* locked, undumpable mapping; NULL once closed */
	size_t size;		/* bytes of key */
	size_t cap;		/* bytes mapped (whole pages) */
	char origin[80];	/* "random", "pbkdf2-sha256", ...: never key bytes */
	char fingerprint[33];	/* its keyring name's hex, once made ("" until then, or after the bytes change) */
};

void secure_wipe(void *p, size_t n);
/* The stack below the caller and the vector registers, wiped (after C work
 * with a secret that passed through other libraries). */
void secure_scrub(void);
/* At least *len bytes of locked, undumpable memory (*len rounded up to
 * whole pages), or NULL with errno set; secure_free wipes and unmaps it. */
void *secure_alloc(size_t *len);
void secure_free(void *p, size_t len);

/* Push a new, empty Key (its metatable set before any memory is mapped). */
struct key *key_push(lua_State *L, const char *origin);
/* Room for need bytes, keeping those held: 0, or -1 with errno set. */
int key_grow(struct key *k, size_t need);
/* key_grow, or raise naming op (the key wiped). */
void key_reserve(lua_State *L, struct key *k, size_t need, const char *op);
/* Wipe and unmap; the Key is closed. Idempotent. */
void key_release(struct key *k);
/* The open Key at idx, or raise naming op. */
struct key *key_check(lua_State *L, int idx, const char *op);
/* The bytes (locked memory) and size of the open Key at idx, or raise. */
const unsigned char *key_bytes(lua_State *L, int idx, size_t *size);
/* Push a Key decoded from len hex digits, or raise naming op. */
void key_push_hex(lua_State *L, const char *hex, size_t len, const char *op, const char *origin);
/* Integer argument 1..KEY_MAX, or raise naming op. */
size_t key_size_arg(lua_State *L, int idx, const char *op);
/* OpenSSL's reason for its last failure (its error queue cleared). */
const char *openssl_reason(void);

/* Optional integer field of the table at idx, with a default. */
lua_Integer opt_int_field(lua_State *L, int idx, const char *k, lua_Integer d);
int opt_bool_field(lua_State *L, int idx, const char *k, int d);
const char *opt_string_field(lua_State *L, int idx, const char *k, size_t *len);

#pragma GCC visibility pop

#endif
