/* Locked, undumpable, wiped memory, and the devmapper.Key that holds a secret in it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "internal.h"

void secure_wipe(void *p, size_t n)
{
	OPENSSL_cleanse(p, n);
}

/*
 * A private mapping of whole pages, locked so it never reaches swap and left
 * out of core dumps. If mlock fails (RLIMIT_MEMLOCK), it still serves: it is
 * wiped before it is given back all the same.
 */
/* The vector registers, zeroed: libc's string functions (strlen, strcpy,
 * memcpy in libdevmapper) leave pieces of a table's text, hex keys included,
 * in them, and the dynamic linker's first call through a PLT entry saves
 * them all on the stack (xsave), where a core dump finds them. */
static void clear_vector_registers(void)
{
#if defined(__x86_64__)
	if (__builtin_cpu_supports("avx"))
		__asm__ volatile("vzeroall" ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
		                 "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory");
	else
		__asm__ volatile("pxor %%xmm0, %%xmm0\n\tpxor %%xmm1, %%xmm1\n\tpxor %%xmm2, %%xmm2\n\tpxor %%xmm3, %%xmm3\n\t"
		                 "pxor %%xmm4, %%xmm4\n\tpxor %%xmm5, %%xmm5\n\tpxor %%xmm6, %%xmm6\n\tpxor %%xmm7, %%xmm7\n\t"
		                 "pxor %%xmm8, %%xmm8\n\tpxor %%xmm9, %%xmm9\n\tpxor %%xmm10, %%xmm10\n\tpxor %%xmm11, %%xmm11\n\t"
		                 "pxor %%xmm12, %%xmm12\n\tpxor %%xmm13, %%xmm13\n\tpxor %%xmm14, %%xmm14\n\tpxor %%xmm15, %%xmm15"
		                 ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
		                 "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory");
	/* libc's EVEX string functions use the upper sixteen on AVX-512 machines */
	if (__builtin_cpu_supports("avx512f"))
		__asm__ volatile("vpxord %%zmm16, %%zmm16, %%zmm16\n\tvpxord %%zmm17, %%zmm17, %%zmm17\n\t"
		                 "vpxord %%zmm18, %%zmm18, %%zmm18\n\tvpxord %%zmm19, %%zmm19, %%zmm19\n\t"
		                 "vpxord %%zmm20, %%zmm20, %%zmm20\n\tvpxord %%zmm21, %%zmm21, %%zmm21\n\t"
		                 "vpxord %%zmm22, %%zmm22, %%zmm22\n\tvpxord %%zmm23, %%zmm23, %%zmm23\n\t"
		                 "vpxord %%zmm24, %%zmm24, %%zmm24\n\tvpxord %%zmm25, %%zmm25, %%zmm25\n\t"
		                 "vpxord %%zmm26, %%zmm26, %%zmm26\n\tvpxord %%zmm27, %%zmm27, %%zmm27\n\t"
		                 "vpxord %%zmm28, %%zmm28, %%zmm28\n\tvpxord %%zmm29, %%zmm29, %%zmm29\n\t"
		                 "vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31" ::: "memory");
#endif
}

/* After C work with a secret through other libraries: the stack below the
 * caller (their frames, and the registers saved there) and the vector
 * registers, wiped. Call it from the function that did the work, at its end. */
__attribute__((noinline)) void secure_scrub(void)
{
	unsigned char below[64 * 1024];
	clear_vector_registers();
	secure_wipe(below, sizeof below);
	clear_vector_registers();
}

void *secure_alloc(size_t *len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	void *p;
	*len = (*len ? *len + page - 1 : page) / page * page;
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, *len, MADV_DONTDUMP);
	mlock(p, *len);
	return p;
}

void secure_free(void *p, size_t len)
{
	secure_wipe(p, len);
	munlock(p, len);
	munmap(p, len);
}

const char *openssl_reason(void)
{
	unsigned long e = ERR_get_error();
	ERR_clear_error();
	return e ? ERR_reason_error_string(e) : "no reason given";
}

/* One idempotent close for :close(), __close and __gc. */
void key_release(struct key *k)
{
	if (k->bytes) {
		secure_free(k->bytes, k->cap);
		k->bytes = NULL;
		k->size = k->cap = 0;
	}
}

/* The memory comes after the metatable (as liolib). */
struct key *key_push(lua_State *L, const char *origin)
{
	struct key *k = lua_newuserdatauv(L, sizeof(*k), 0);
	k->bytes = NULL;
	k->size = k->cap = 0;
	k->fingerprint[0] = '\0';
	snprintf(k->origin, sizeof(k->origin), "%s", origin);
	luaL_setmetatable(L, KEY_TYPE);
	return k;
}

int key_grow(struct key *k, size_t need)
{
	size_t cap = need ? need : 1;
	unsigned char *p;
	k->fingerprint[0] = '\0';	/* its bytes are about to change */
	if (k->bytes && cap <= k->cap)
		return 0;
	if (!(p = secure_alloc(&cap)))
		return -1;
	if (k->bytes) {
		memcpy(p, k->bytes, k->size);
		secure_free(k->bytes, k->cap);
	}
	k->bytes = p;
	k->cap = cap;
	return 0;
}

void key_reserve(lua_State *L, struct key *k, size_t need, const char *op)
{
	if (key_grow(k, need) < 0) {
		int err = errno;
		key_release(k);
		raise_error(L, op, NULL, err, "cannot map memory for a key");
	}
}

struct key *key_check(lua_State *L, int idx, const char *op)
{
	struct key *k = luaL_testudata(L, idx, KEY_TYPE);
	if (!k)
		raise_error(L, op, NULL, EINVAL, "expected a devmapper.Key, got %s", luaL_typename(L, idx));
	if (!k->bytes)
		raise_error(L, op, NULL, 0, "the key is closed (its bytes were wiped)");
	return k;
}

const unsigned char *key_bytes(lua_State *L, int idx, size_t *size)
{
	struct key *k = key_check(L, lua_absindex(L, idx), "key");
	*size = k->size;
	return k->bytes;
}

size_t key_size_arg(lua_State *L, int idx, const char *op)
{
	lua_Integer n = luaL_checkinteger(L, idx);
	if (n < 1 || n > KEY_MAX)
		raise_error(L, op, NULL, EINVAL, "key size must be 1 to %d bytes, got %d", KEY_MAX, (int)n);
	return (size_t)n;
}

/* core.key_random(nbytes): from OpenSSL's private DRBG. */
static int l_random(lua_State *L)
{
	size_t n = key_size_arg(L, 1, "key.random");
	struct key *k = key_push(L, "random");
	key_reserve(L, k, n, "key.random");
	if (RAND_priv_bytes(k->bytes, (int)n) != 1) {
		key_release(k);
		return raise_error(L, "key.random", NULL, 0, "OpenSSL's DRBG failed: %s", openssl_reason());
	}
	k->size = n;
	return 1;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decoded straight into locked memory. For dm.c too: a crypt key read back
 * from the kernel. */
void key_push_hex(lua_State *L, const char *s, size_t len, const char *op, const char *origin)
{
	size_t i;
	struct key *k;
	if (len == 0 || len % 2)
		raise_error(L, op, NULL, EINVAL, "a hex key needs an even, non-zero number of digits (got %d)", (int)len);
	if (len / 2 > KEY_MAX)
		raise_error(L, op, NULL, EINVAL, "a key is at most %d bytes", KEY_MAX);
	k = key_push(L, origin);
	key_reserve(L, k, len / 2, op);
	for (i = 0; i < len / 2; i++) {
		int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			key_release(k);
			raise_error(L, op, NULL, EINVAL, "character %d is not a hex digit", (int)(2 * i + (hi < 0 ? 1 : 2)));
		}
		k->bytes[i] = (unsigned char)(hi << 4 | lo);
	}
	k->size = len / 2;
}

/* core.key_from_hex(s) */
static int l_from_hex(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	key_push_hex(L, s, len, "key.from_hex", "hex");
	return 1;
}

/* key:hex(): the one explicit export. Built in a locked scratch Key. */
static int l_hex(lua_State *L)
{
	static const char digits[] = "0123456789abcdef";
	struct key *k = key_check(L, 1, "key.hex");
	struct key *tmp = key_push(L, "scratch");
	size_t i;
	key_reserve(L, tmp, 2 * k->size, "key.hex");
	for (i = 0; i < k->size; i++) {
		tmp->bytes[2 * i] = digits[k->bytes[i] >> 4];
		tmp->bytes[2 * i + 1] = digits[k->bytes[i] & 15];
	}
	lua_pushlstring(L, (const char *)tmp->bytes, 2 * k->size);
	key_release(tmp);
	return 1;
}

static int l_close(lua_State *L)
{
	key_release(luaL_checkudata(L, 1, KEY_TYPE));
	return 0;
}

static int l_tostring(lua_State *L)
{
	struct key *k = luaL_checkudata(L, 1, KEY_TYPE);
	if (!k->bytes)
		lua_pushstring(L, KEY_TYPE ": closed");
	else
		lua_pushfstring(L, KEY_TYPE ": %d bytes, %s", (int)k->size, k->origin);
	return 1;
}

static int l_len(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)key_check(L, 1, "key.size")->size);
	return 1;
}

/* a == b: sizes are not secret; the bytes compare in constant time. */
static int l_eq(lua_State *L)
{
	struct key *a = key_check(L, 1, "key.equal"), *b = key_check(L, 2, "key.equal");
	lua_pushboolean(L, a->size == b->size && CRYPTO_memcmp(a->bytes, b->bytes, a->size) == 0);
	return 1;
}

void secure_open(lua_State *L)
{
	static const luaL_Reg core[] = {
		{"key_random", l_random},
		{"key_from_hex", l_from_hex},
		{NULL, NULL}
	};
	static const luaL_Reg meta[] = {
		{"__close", l_close},
		{"__gc", l_close},
		{"__tostring", l_tostring},
		{"__len", l_len},
		{"__eq", l_eq},
		{NULL, NULL}
	};
	static const luaL_Reg methods[] = {
		{"close", l_close},
		{"hex", l_hex},
		{NULL, NULL}
	};
	luaL_setfuncs(L, core, 0);
	luaL_newmetatable(L, KEY_TYPE);
	luaL_setfuncs(L, meta, 0);
	luaL_newlib(L, methods);
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, "__index");
	/* core.key_methods: the Lua half adds to_keyring, through the kernel hooks */
	lua_setfield(L, -3, "key_methods");
	lua_pop(L, 1);
}
