/* Keys derived from passphrases: PBKDF2, scrypt, their calibration, and
 * cryptsetup's plain-mode key. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/provider.h>

#include "internal.h"

#define PBKDF2_MIN 1000		/* NIST SP 800-132, as cryptsetup */

/* A passphrase: a Lua string (the caller's choice) or an open Key. */
static const unsigned char *secret_arg(lua_State *L, int idx, size_t *len, const char *op)
{
	struct key *k;
	if (lua_type(L, idx) == LUA_TSTRING)
		return (const unsigned char *)lua_tolstring(L, idx, len);
	if (!luaL_testudata(L, idx, KEY_TYPE))
		raise_error(L, op, NULL, EINVAL, "the passphrase must be a string or a devmapper.Key, got %s",
		            luaL_typename(L, idx));
	k = key_check(L, idx, op);
	*len = k->size;
	return k->bytes;
}

/*
 * The digests cryptsetup offers come from OpenSSL's default and legacy
 * providers (whirlpool is only in the legacy one), loaded as cryptsetup's
 * OpenSSL backend loads them: into a library context of our own, so that
 * the process's default context (an embedder's) is left as it was.
 */
static OSSL_LIB_CTX *digests;
static int legacy;	/* whether the legacy provider loaded */

static OSSL_LIB_CTX *digest_ctx(void)
{
	if (!digests && (digests = OSSL_LIB_CTX_new())) {
		/* a provider that fails to load leaves its reasons queued: not ours to report */
		ERR_set_mark();
		OSSL_PROVIDER_load(digests, "default");
		legacy = OSSL_PROVIDER_load(digests, "legacy") != NULL;
		ERR_pop_to_mark();
	}
	return digests;
}

/* The digest called name (EVP_MD_free it), or raise naming op. A digest
 * of no fixed size (NULL, the SHAKE XOFs) cannot make a key. */
static EVP_MD *digest_fetch(lua_State *L, const char *name, const char *op)
{
	EVP_MD *md;
	ERR_set_mark();
	md = digest_ctx() ? EVP_MD_fetch(digests, name, NULL) : NULL;
	ERR_pop_to_mark();
	if (md && (EVP_MD_get_size(md) <= 0 || (EVP_MD_get_flags(md) & EVP_MD_FLAG_XOF))) {
		EVP_MD_free(md);
		raise_error(L, op, NULL, EINVAL, "hash '%s' has no fixed digest size: it cannot make a key", name);
	}
	if (md)
		return md;
	if (!legacy)
		raise_error(L, op, NULL, EINVAL, "unknown hash '%s' (OpenSSL's legacy provider, which has whirlpool "
		            "and others, did not load: is its ossl-modules/legacy.so installed?)", name);
	raise_error(L, op, NULL, EINVAL, "unknown hash '%s' (OpenSSL has sha256, sha512, sha3-256, ripemd160, "
	            "whirlpool, sm3, blake2b512, ...)", name);
	return NULL;
}

/* PBKDF2-HMAC with the digest called hash, without SP 800-132's lower
 * bounds (as PKCS5_PBKDF2_HMAC and cryptsetup). */
static int pbkdf2(const unsigned char *pass, size_t plen, const unsigned char *salt, size_t slen,
                  uint64_t iter, const char *hash, unsigned char *out, size_t size)
{
	EVP_KDF *kdf = digest_ctx() ? EVP_KDF_fetch(digests, "PBKDF2", NULL) : NULL;
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	int pkcs5 = 1, ok;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)pass, plen),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, slen),
		OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_ITER, &iter),
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)hash, 0),
		OSSL_PARAM_construct_int(OSSL_KDF_PARAM_PKCS5, &pkcs5),
		OSSL_PARAM_construct_end(),
	};
	ok = ctx && EVP_KDF_derive(ctx, out, size, params) == 1;
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return ok;
}

/* OpenSSL's scrypt needs 128 r (N + p + 2) bytes; 0 if that overflows. */
static uint64_t scrypt_mem(uint64_t N, uint64_t r, uint64_t p)
{
	if (r > (1u << 30) || N > (UINT64_MAX / 128) / r / 2 || p > (UINT64_MAX / 128) / r / 2)
		return 0;
	return 128 * r * (N + p + 2);
}

static int scrypt(const unsigned char *pass, size_t plen, const unsigned char *salt, size_t slen,
                  uint64_t N, uint64_t r, uint64_t p, unsigned char *out, size_t size)
{
	uint64_t mem = scrypt_mem(N, r, p);
	return mem && EVP_PBE_scrypt((const char *)pass, plen, salt, slen, N, r, p, mem + 4096, out, size) == 1;
}

/* A derivation for the worker thread (progress.c): the passphrase copied
 * into locked memory of its own, and the key made there too, copied into
 * the new Key once the worker is done (a callback could close either Key
 * meanwhile: debug.getlocal reaches the one on this C function's stack). */
struct derive {
	unsigned char *pass;	/* plen bytes, then the size bytes of out */
	size_t plen, pcap, slen, size;
	const unsigned char *salt;
	const char *hash;	/* NULL: scrypt */
	uint64_t cost, r, p;
	unsigned char *out;
	unsigned long err;	/* OpenSSL's error in the worker (its queue is the worker's) */
	int ok;
};

static void derive_work(void *p)
{
	struct derive *d = p;
	d->ok = d->hash ? pbkdf2(d->pass, d->plen, d->salt, d->slen, d->cost, d->hash, d->out, d->size)
	                : scrypt(d->pass, d->plen, d->salt, d->slen, d->cost, d->r, d->p, d->out, d->size);
	if (!d->ok)
		d->err = ERR_peek_last_error();
	ERR_clear_error();
}

static const char *derive_reason(const struct derive *d)
{
	const char *s = d->err ? ERR_reason_error_string(d->err) : NULL;
	return s ? s : "no reason given";
}

/* Derive into k (reserved), ticking the callback at cb (0: none) with the
 * expected milliseconds at ms (0: unknown); raises as op on failure. */
static void derive(lua_State *L, struct key *k, struct derive *d, const unsigned char *pass, int cb, int ms)
{
	int status;
	lua_Integer total = ms && !lua_isnoneornil(L, ms) ? luaL_checkinteger(L, ms) : -1;
	if (cb && lua_isnoneornil(L, cb))
		cb = 0;
	if (cb)
		luaL_checktype(L, cb, LUA_TFUNCTION);
	d->pcap = d->plen + d->size;
	if (!(d->pass = secure_alloc(&d->pcap))) {
		key_release(k);
		raise_error(L, "key.derive", NULL, errno, "cannot map memory for the passphrase");
	}
	memcpy(d->pass, pass, d->plen);
	d->out = d->pass + d->plen;
	status = progress_run(L, cb, "key.derive", "derive", k->origin, total, 0, derive_work, d);
	if (status == LUA_OK && d->ok && k->bytes && k->cap >= d->size) {
		memcpy(k->bytes, d->out, d->size);
		k->fingerprint[0] = '\0';	/* (a callback may have asked for it before) */
	}
	secure_free(d->pass, d->pcap);
	if (status != LUA_OK) {
		key_release(k);
		lua_error(L);
	}
	if (!d->ok) {
		key_release(k);
		if (d->hash)
			raise_error(L, "key.derive", NULL, 0, "PBKDF2 failed: %s", derive_reason(d));
		raise_error(L, "key.derive", NULL, 0, "scrypt (N=%I, r=%I, p=%I) failed: %s", (lua_Integer)d->cost,
		            (lua_Integer)d->r, (lua_Integer)d->p, derive_reason(d));
	}
	if (!k->bytes)
		raise_error(L, "key.derive", NULL, 0, "attempt to use a closed key (closed while it was derived)");
	k->size = d->size;
}

/* core.key_pbkdf2(pass, hash, salt, iterations, size[, progress, expected ms]) */
static int l_pbkdf2(lua_State *L)
{
	size_t plen, slen, size;
	const unsigned char *pass = secret_arg(L, 1, &plen, "key.derive");
	const char *hash = luaL_checkstring(L, 2);
	const unsigned char *salt = (const unsigned char *)luaL_checklstring(L, 3, &slen);
	lua_Integer iter = luaL_checkinteger(L, 4);
	struct key *k;
	struct derive d = {0};
	EVP_MD_free(digest_fetch(L, hash, "key.derive"));	/* a clear error for an unknown one */
	size = key_size_arg(L, 5, "key.derive");
	if (iter < 1 || iter > INT32_MAX)
		return raise_error(L, "key.derive", NULL, EINVAL, "iterations must be 1 to %d", INT32_MAX);
	k = key_push(L, "pbkdf2");
	snprintf(k->origin, sizeof(k->origin), "pbkdf2-%s", hash);
	key_reserve(L, k, size, "key.derive");
	d.plen = plen, d.salt = salt, d.slen = slen, d.size = size, d.hash = hash, d.cost = (uint64_t)iter;
	derive(L, k, &d, pass, 6, 7);
	return 1;
}

/* core.key_scrypt(pass, salt, N, r, p, size[, progress, expected ms]) */
static int l_scrypt(lua_State *L)
{
	size_t plen, slen, size;
	const unsigned char *pass = secret_arg(L, 1, &plen, "key.derive");
	const unsigned char *salt = (const unsigned char *)luaL_checklstring(L, 2, &slen);
	lua_Integer N = luaL_checkinteger(L, 3), r = luaL_checkinteger(L, 4), p = luaL_checkinteger(L, 5);
	struct key *k;
	struct derive d = {0};
	size = key_size_arg(L, 6, "key.derive");
	if (N < 2 || (N & (N - 1)) || r < 1 || p < 1)
		return raise_error(L, "key.derive", NULL, EINVAL, "scrypt needs N a power of 2 above 1, r >= 1, p >= 1");
	k = key_push(L, "scrypt");
	key_reserve(L, k, size, "key.derive");
	d.plen = plen, d.salt = salt, d.slen = slen, d.size = size, d.cost = (uint64_t)N, d.r = (uint64_t)r,
	d.p = (uint64_t)p;
	derive(L, k, &d, pass, 7, 8);
	return 1;
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A calibration under way: what it times, and the progress callback. */
struct bench {
	lua_State *L;
	const char *hash;	/* PBKDF2's digest; NULL for scrypt */
	size_t size;		/* PBKDF2's cost grows with the blocks it makes */
	int progress;		/* the callback's index, or 0 */
	char what[32];
	double target, spent;
};

/* A calibration tick: CPU milliseconds spent so far (the total is not known
 * ahead: the runs grow until one is long enough). A raising callback stops
 * the calibration with its error (nothing is held here then). */
static void bench_tick(struct bench *b, int finished)
{
	if (b->progress && progress_tick(b->L, b->progress, "key.derive", "calibrate", b->what,
	                                 (lua_Integer)(b->spent * 1000), -1, "ms", finished) != LUA_OK)
		lua_error(b->L);
}

/* CPU seconds of one derivation of a throwaway passphrase at this cost. */
static double bench_run(struct bench *b, uint64_t cost, uint64_t r, uint64_t p)
{
	static const unsigned char pass[] = "calibration", salt[32];
	unsigned char out[KEY_MAX];
	double t = cpu_now();
	int ok = b->hash ? pbkdf2(pass, sizeof(pass) - 1, salt, sizeof(salt), cost, b->hash, out, b->size)
	               : scrypt(pass, sizeof(pass) - 1, salt, sizeof(salt), cost, r, p, out, b->size);
	t = cpu_now() - t;
	secure_wipe(out, b->size);
	if (!ok)
		raise_error(b->L, "key.derive", NULL, 0, "benchmark failed: %s", openssl_reason());
	b->spent += t;
	bench_tick(b, 0);
	return t > 1e-6 ? t : 1e-6;
}

/* The fastest of t and n more runs: other load only ever makes a run slower. */
static double bench_best(struct bench *b, uint64_t cost, uint64_t r, uint64_t p, double t, int n)
{
	while (n-- > 0) {
		double u = bench_run(b, cost, r, p);
		if (u < t)
			t = u;
	}
	return t;
}

/*
 * core.key_calibrate(kdf, hash, size, seconds, memory, progress) -> cost
 * progress: a function called with each tick (see progress.c), or nil.
 * pbkdf2: iterations, grown until one run takes a quarter of the target
 * (at most 0.25 s), then scaled linearly from the best of three runs; never
 * below 1000, as cryptsetup.
 * scrypt: N, r, p. N (a power of 2) doubles while a run at r = 8 stays
 * under half the target and 128 * 16 * N bytes fit in memory; then r (up
 * to 16) and p meet the target, from runs at p = 1 and p = 2.
 */
static int l_calibrate(lua_State *L)
{
	const char *kdf = luaL_checkstring(L, 1);
	const char *hash = luaL_optstring(L, 2, "sha256");
	lua_Integer memory = luaL_optinteger(L, 5, 128 << 20);
	struct bench b = {L, NULL, key_size_arg(L, 3, "key.derive"), lua_isnoneornil(L, 6) ? 0 : 6,
	                  "", luaL_checknumber(L, 4), 0};
	double t;
	if (b.progress)
		luaL_checktype(L, 6, LUA_TFUNCTION);
	if (!(b.target > 0 && b.target <= 3600))
		return raise_error(L, "key.derive", NULL, EINVAL, "time must be above 0 and at most 3600 seconds");
	if (strcmp(kdf, "pbkdf2") == 0) {
		double enough = b.target / 4 < 0.25 ? b.target / 4 : 0.25, it;
		uint64_t iter = PBKDF2_MIN;
		EVP_MD_free(digest_fetch(L, hash, "key.derive"));
		b.hash = hash;
		snprintf(b.what, sizeof(b.what), "pbkdf2-%s", hash);
		while ((t = bench_run(&b, iter, 0, 0)) < enough && iter < INT32_MAX) {
			it = iter * (t < enough / 16 ? 16 : 1.25 * enough / t);
			iter = it < INT32_MAX ? (uint64_t)it : INT32_MAX;
		}
		t = bench_best(&b, iter, 0, 0, t, 2);
		it = iter * b.target / t;
		lua_pushinteger(L, it < PBKDF2_MIN ? PBKDF2_MIN : it > INT32_MAX ? INT32_MAX : (lua_Integer)it);
	} else if (strcmp(kdf, "scrypt") == 0) {
		uint64_t N = 1024, r, p;
		double w, a, c;
		snprintf(b.what, sizeof(b.what), "scrypt");
		if (memory < 128 * 16 * 1024)
			return raise_error(L, "key.derive", NULL, EINVAL, "scrypt needs memory of at least 2 MiB");
		while (2 * (t = bench_run(&b, N, 8, 1)) <= b.target && 128 * 16 * 2 * N <= (uint64_t)memory)
			N *= 2;
		/* a run costs r/8 (a + c p): a is filling the memory, c each pass over it */
		t = bench_best(&b, N, 8, 1, t, 1);
		c = bench_best(&b, N, 8, 2, HUGE_VAL, 2) - t;
		c = c > t / 2 ? c : t / 2;
		a = t > c ? t - c : 0;
		for (p = 1; (w = 8 * b.target / (a + c * p)) > 16.5; p++)
			;
		r = w < 1.5 ? 1 : (uint64_t)(w + 0.5);
		lua_pushinteger(L, (lua_Integer)N);
		lua_pushinteger(L, (lua_Integer)r);
		lua_pushinteger(L, (lua_Integer)p);
	} else
		return raise_error(L, "key.derive", NULL, EINVAL, "kdf must be pbkdf2 or scrypt, got '%s'", kdf);
	bench_tick(&b, 1);
	return strcmp(kdf, "scrypt") == 0 ? 3 : 1;
}

/*
 * core.key_plain(pass, hash, size): cryptsetup's plain-mode key.
 * "plain" takes the passphrase bytes as they are, cut to size or padded with
 * zeros (cryptsetup hands "plain" on as no hash at all). "name[:n]" fills n
 * bytes (default: all) and pads the rest with zeros; with a digest, round i
 * hashes i 'A' bytes then the passphrase, each round adding one digest,
 * the last one cut short. "plain:n" needs at least n passphrase bytes.
 */
static int l_plain(lua_State *L)
{
	size_t plen, size, fill, done = 0;
	const unsigned char *pass = secret_arg(L, 1, &plen, "key.plain");
	const char *spec = luaL_checkstring(L, 2);
	const char *colon = strchr(spec, ':');
	char name[64];
	struct key *k;
	EVP_MD *md;
	size = key_size_arg(L, 3, "key.plain");
	fill = size;
	snprintf(name, sizeof(name), "%.*s", colon ? (int)(colon - spec) : (int)strlen(spec), spec);
	if (colon) {
		char *end;
		long n = strtol(colon + 1, &end, 10);
		if (colon[1] < '0' || colon[1] > '9' || *end || n < 1 || (size_t)n > size)
			return raise_error(L, "key.plain", NULL, EINVAL,
			                   "hash '%s': the length after ':' must be 1 to the key size (%d)", spec, (int)size);
		fill = (size_t)n;
	}
	md = strcmp(name, "plain") ? digest_fetch(L, name, "key.plain") : NULL;
	k = key_push(L, "plain");
	snprintf(k->origin, sizeof(k->origin), "plain-%s", name);
	key_reserve(L, k, size, "key.plain");	/* (md leaks if this raises: out of memory) */
	if (!md) {
		if (colon && plen < fill) {
			key_release(k);
			return raise_error(L, "key.plain", NULL, EINVAL,
			                   "hash '%s' needs a passphrase of at least %d bytes", spec, (int)fill);
		}
		memcpy(k->bytes, pass, plen < fill ? plen : fill);
	} else {
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		unsigned char digest[EVP_MAX_MD_SIZE];
		int round, i, ok = ctx != NULL;
		for (round = 0; ok && done < fill; round++) {
			size_t len = (size_t)EVP_MD_get_size(md);
			ok = EVP_DigestInit_ex(ctx, md, NULL);
			for (i = 0; ok && i < round; i++)
				ok = EVP_DigestUpdate(ctx, "A", 1);
			ok = ok && EVP_DigestUpdate(ctx, pass, plen) && EVP_DigestFinal_ex(ctx, digest, NULL);
			if (len > fill - done)
				len = fill - done;
			memcpy(k->bytes + done, digest, len);
			done += len;
		}
		secure_wipe(digest, sizeof(digest));
		EVP_MD_CTX_free(ctx);
		EVP_MD_free(md);
		if (!ok) {
			key_release(k);
			return raise_error(L, "key.plain", NULL, 0, "hashing failed: %s", openssl_reason());
		}
	}
	k->size = size;
	return 1;
}

/* core.digest_size(name) -> bytes, or nil for a name OpenSSL does not know
 * (a kernel crypto API name of its own, say). */
static int l_digest_size(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	EVP_MD *md;
	int size;
	ERR_set_mark();
	md = digest_ctx() ? EVP_MD_fetch(digests, name, NULL) : NULL;
	ERR_pop_to_mark();
	size = md ? EVP_MD_get_size(md) : 0;
	EVP_MD_free(md);
	if (size <= 0)
		return lua_pushnil(L), 1;
	lua_pushinteger(L, size);
	return 1;
}

void kdf_open(lua_State *L)
{
	static const luaL_Reg core[] = {
		{"key_pbkdf2", l_pbkdf2},
		{"key_scrypt", l_scrypt},
		{"key_calibrate", l_calibrate},
		{"key_plain", l_plain},
		{"digest_size", l_digest_size},
		{NULL, NULL}
	};
	luaL_setfuncs(L, core, 0);
}
