/* Keys in locked memory (devmapper.Key) and logon keys in the kernel keyring. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <linux/keyctl.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "internal.h"

#define KEY_TYPE "devmapper.Key"
#define KEY_MAX 4096		/* bytes of a made or derived key */
#define DESC_MAX 4095		/* the kernel's limit on a key description */
#define PBKDF2_MIN 1000		/* NIST SP 800-132, as cryptsetup */

struct key {
	unsigned char *bytes;	/* locked, undumpable mapping; NULL once closed */
	size_t size;		/* bytes of key */
	size_t cap;		/* bytes mapped (whole pages) */
	char origin[80];	/* "random", "pbkdf2-sha256", ...: never key bytes */
};

void secure_wipe(void *p, size_t n)
{
	OPENSSL_cleanse(p, n);
}

/*
 * A private mapping of whole pages, locked so it never reaches swap and left
 * out of core dumps. If mlock fails (RLIMIT_MEMLOCK), it still serves: it is
 * wiped before it is given back all the same.
 */
static unsigned char *secure_map(size_t *len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	void *p;
	*len = (*len + page - 1) / page * page;
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, *len, MADV_DONTDUMP);
	mlock(p, *len);
	return p;
}

static void secure_unmap(void *p, size_t len)
{
	secure_wipe(p, len);
	munlock(p, len);
	munmap(p, len);
}

/* One idempotent close for :close(), __close and __gc. */
static void key_release(struct key *k)
{
	if (k->bytes) {
		secure_unmap(k->bytes, k->cap);
		k->bytes = NULL;
		k->size = k->cap = 0;
	}
}

/* Push a new Key, closed: the memory comes after the metatable (as liolib). */
static struct key *key_push(lua_State *L, const char *origin)
{
	struct key *k = lua_newuserdatauv(L, sizeof(*k), 0);
	k->bytes = NULL;
	k->size = k->cap = 0;
	snprintf(k->origin, sizeof(k->origin), "%s", origin);
	luaL_setmetatable(L, KEY_TYPE);
	return k;
}

/* Make room for need bytes, keeping those held. 0, or -1 with errno set. */
static int key_grow(struct key *k, size_t need)
{
	size_t cap = need ? need : 1;
	unsigned char *p;
	if (k->bytes && cap <= k->cap)
		return 0;
	if (!(p = secure_map(&cap)))
		return -1;
	if (k->bytes) {
		memcpy(p, k->bytes, k->size);
		secure_unmap(k->bytes, k->cap);
	}
	k->bytes = p;
	k->cap = cap;
	return 0;
}

/* key_grow, or raise (the key wiped) naming op. */
static void key_reserve(lua_State *L, struct key *k, size_t need, const char *op)
{
	if (key_grow(k, need) < 0) {
		int err = errno;
		key_release(k);
		raise_error(L, op, NULL, err, "cannot map memory for a key");
	}
}

/* The open Key at idx, or raise naming op. */
static struct key *key_check(lua_State *L, int idx, const char *op)
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

static size_t size_arg(lua_State *L, int idx, const char *op)
{
	lua_Integer n = luaL_checkinteger(L, idx);
	if (n < 1 || n > KEY_MAX)
		raise_error(L, op, NULL, EINVAL, "key size must be 1 to %d bytes, got %d", KEY_MAX, (int)n);
	return (size_t)n;
}

static const char *openssl_reason(void)
{
	unsigned long e = ERR_get_error();
	ERR_clear_error();
	return e ? ERR_reason_error_string(e) : "no reason given";
}

/* core.key_random(nbytes): from OpenSSL's private DRBG. */
static int l_random(lua_State *L)
{
	size_t n = size_arg(L, 1, "key.random");
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

/* Push a Key decoded from len hex digits straight into locked memory, or
 * raise naming op. For dm.c too: a crypt key read back from the kernel. */
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

static const EVP_MD *pbkdf2_md(lua_State *L, const char *hash)
{
	if (strcmp(hash, "sha1") && strcmp(hash, "sha256") && strcmp(hash, "sha512"))
		raise_error(L, "key.derive", NULL, EINVAL, "PBKDF2 hash must be sha1, sha256 or sha512, got '%s'", hash);
	return EVP_get_digestbyname(hash);
}

static int pbkdf2(const unsigned char *pass, size_t plen, const unsigned char *salt, size_t slen,
                  unsigned long iter, const EVP_MD *md, unsigned char *out, size_t size)
{
	return PKCS5_PBKDF2_HMAC((const char *)pass, (int)plen, salt, (int)slen, (int)iter, md,
	                         (int)size, out) == 1;
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

/* core.key_pbkdf2(pass, hash, salt, iterations, size) */
static int l_pbkdf2(lua_State *L)
{
	size_t plen, slen, size;
	const unsigned char *pass = secret_arg(L, 1, &plen, "key.derive");
	const char *hash = luaL_checkstring(L, 2);
	const unsigned char *salt = (const unsigned char *)luaL_checklstring(L, 3, &slen);
	lua_Integer iter = luaL_checkinteger(L, 4);
	const EVP_MD *md = pbkdf2_md(L, hash);
	struct key *k;
	size = size_arg(L, 5, "key.derive");
	if (iter < 1 || iter > INT32_MAX)
		return raise_error(L, "key.derive", NULL, EINVAL, "iterations must be 1 to %d", INT32_MAX);
	k = key_push(L, "pbkdf2");
	snprintf(k->origin, sizeof(k->origin), "pbkdf2-%s", hash);
	key_reserve(L, k, size, "key.derive");
	if (!pbkdf2(pass, plen, salt, slen, (unsigned long)iter, md, k->bytes, size)) {
		key_release(k);
		return raise_error(L, "key.derive", NULL, 0, "PBKDF2 failed: %s", openssl_reason());
	}
	k->size = size;
	return 1;
}

/* core.key_scrypt(pass, salt, N, r, p, size) */
static int l_scrypt(lua_State *L)
{
	size_t plen, slen, size;
	const unsigned char *pass = secret_arg(L, 1, &plen, "key.derive");
	const unsigned char *salt = (const unsigned char *)luaL_checklstring(L, 2, &slen);
	lua_Integer N = luaL_checkinteger(L, 3), r = luaL_checkinteger(L, 4), p = luaL_checkinteger(L, 5);
	struct key *k;
	size = size_arg(L, 6, "key.derive");
	if (N < 2 || (N & (N - 1)) || r < 1 || p < 1)
		return raise_error(L, "key.derive", NULL, EINVAL, "scrypt needs N a power of 2 above 1, r >= 1, p >= 1");
	k = key_push(L, "scrypt");
	key_reserve(L, k, size, "key.derive");
	if (!scrypt(pass, plen, salt, slen, (uint64_t)N, (uint64_t)r, (uint64_t)p, k->bytes, size)) {
		key_release(k);
		return raise_error(L, "key.derive", NULL, 0, "scrypt (N=%I, r=%I, p=%I) failed: %s", N, r, p,
		                   openssl_reason());
	}
	k->size = size;
	return 1;
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A calibration under way: what it times, and the progress line on stderr. */
struct bench {
	lua_State *L;
	const EVP_MD *md;	/* PBKDF2's digest; NULL for scrypt */
	size_t size;		/* PBKDF2's cost grows with the blocks it makes */
	int show;
	char what[32];
	double target, spent;
};

/* CPU seconds of one derivation of a throwaway passphrase at this cost. */
static double bench_run(struct bench *b, uint64_t cost, uint64_t r, uint64_t p)
{
	static const unsigned char pass[] = "calibration", salt[32];
	unsigned char out[KEY_MAX];
	double t = cpu_now();
	int ok = b->md ? pbkdf2(pass, sizeof(pass) - 1, salt, sizeof(salt), cost, b->md, out, b->size)
	               : scrypt(pass, sizeof(pass) - 1, salt, sizeof(salt), cost, r, p, out, b->size);
	t = cpu_now() - t;
	secure_wipe(out, b->size);
	if (!ok)
		raise_error(b->L, "key.derive", NULL, 0, "benchmark failed: %s", openssl_reason());
	b->spent += t;
	if (b->show)
		fprintf(stderr, "\rkey.derive: calibrating %s for %.1f s (%.1f s so far)\033[K", b->what, b->target,
		        b->spent);
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
 * core.key_calibrate(kdf, hash, size, seconds, memory, show) -> cost
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
	struct bench b = {L, NULL, size_arg(L, 3, "key.derive"), lua_toboolean(L, 6) && isatty(STDERR_FILENO),
	                  "", luaL_checknumber(L, 4), 0};
	double t;
	if (!(b.target > 0 && b.target <= 3600))
		return raise_error(L, "key.derive", NULL, EINVAL, "time must be above 0 and at most 3600 seconds");
	if (strcmp(kdf, "pbkdf2") == 0) {
		double enough = b.target / 4 < 0.25 ? b.target / 4 : 0.25, it;
		uint64_t iter = PBKDF2_MIN;
		b.md = pbkdf2_md(L, hash);
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
	if (b.show)
		fputs("\r\033[K", stderr);
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
	size = size_arg(L, 3, "key.plain");
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
	k = key_push(L, "plain");
	snprintf(k->origin, sizeof(k->origin), "plain-%s", name);
	key_reserve(L, k, size, "key.plain");
	if (strcmp(name, "plain") == 0) {
		if (colon && plen < fill) {
			key_release(k);
			return raise_error(L, "key.plain", NULL, EINVAL,
			                   "hash '%s' needs a passphrase of at least %d bytes", spec, (int)fill);
		}
		memcpy(k->bytes, pass, plen < fill ? plen : fill);
	} else {
		const EVP_MD *md = EVP_get_digestbyname(name);
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		unsigned char digest[EVP_MAX_MD_SIZE];
		int round, i, ok = md && ctx;
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
		if (!ok) {
			key_release(k);
			if (!md)
				return raise_error(L, "key.plain", NULL, EINVAL,
				                   "unknown hash '%s' (OpenSSL knows sha256, sha512, ripemd160, ...)", name);
			return raise_error(L, "key.plain", NULL, 0, "hashing failed: %s", openssl_reason());
		}
	}
	k->size = size;
	return 1;
}

/*
 * Read one line from a terminal with echo off, straight into k (as
 * cryptsetup's interactive entry). More than max bytes is refused, the rest
 * of the line drained. Returns 0, or -1 with errno set (EMSGSIZE: too long).
 */
static int tty_line(struct key *k, int fd, const char *prompt, size_t max)
{
	struct termios orig, quiet;
	int err = 0, restore;
	size_t n = 0;
	unsigned char c;
	if (key_grow(k, max) < 0)
		return -1;
	restore = tcgetattr(fd, &orig) == 0;
	if (restore) {
		quiet = orig;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(fd, TCSAFLUSH, &quiet);
	}
	if (prompt && write(fd, prompt, strlen(prompt)) < 0)
		err = errno;
	while (!err) {
		ssize_t got = read(fd, &c, 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			err = errno;
		if (got <= 0 || c == '\n')
			break;
		if (n == max)
			err = EMSGSIZE;	/* keep draining the line */
		else
			k->bytes[n++] = c;
	}
	while (err == EMSGSIZE && read(fd, &c, 1) == 1 && c != '\n')
		;
	secure_wipe(&c, 1);
	if (restore) {
		tcsetattr(fd, TCSAFLUSH, &orig);
		ssize_t echo = write(fd, "\n", 1);	/* for the Enter key; cosmetic */
		(void)echo;
	}
	k->size = n;
	errno = err;
	return err ? -1 : 0;
}

/* Raise with the key wiped; err EMSGSIZE means over max. */
static int read_failed(lua_State *L, struct key *k, const char *op, const char *name, int err, size_t max)
{
	key_release(k);
	if (err == EMSGSIZE)
		return raise_error(L, op, name, EINVAL, "input longer than the maximum of %d bytes", (int)max);
	return raise_error(L, op, name, err, "cannot read the passphrase");
}

/* core.key_prompt(text, max, verify): ask on /dev/tty, echo off. */
static int l_prompt(lua_State *L)
{
	const char *text = luaL_optstring(L, 1, "Passphrase: ");
	size_t max = (size_t)luaL_optinteger(L, 2, 512);
	int verify = lua_toboolean(L, 3);
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	struct key *k, *again;
	if (fd < 0)
		return raise_error(L, "key.prompt", "/dev/tty", errno, "no terminal to ask on");
	k = key_push(L, "prompt");
	if (tty_line(k, fd, text, max) < 0) {
		int err = errno;
		close(fd);
		return read_failed(L, k, "key.prompt", "/dev/tty", err, max);
	}
	if (k->size == 0) {
		close(fd);
		key_release(k);
		return raise_error(L, "key.prompt", "/dev/tty", EINVAL, "empty passphrase refused");
	}
	if (verify) {
		again = key_push(L, "prompt");
		if (tty_line(again, fd, "Verify passphrase: ", max) < 0) {
			int err = errno;
			close(fd);
			key_release(k);
			return read_failed(L, again, "key.prompt", "/dev/tty", err, max);
		}
		if (again->size != k->size || CRYPTO_memcmp(again->bytes, k->bytes, k->size)) {
			close(fd);
			key_release(k);
			key_release(again);
			return raise_error(L, "key.prompt", "/dev/tty", EINVAL, "passphrases do not match");
		}
		key_release(again);
		lua_pop(L, 1);
	}
	close(fd);
	return 1;
}

/* Skip offset bytes: seek, or read them away from a pipe. 0, or -1 with errno. */
static int skip_bytes(int fd, off_t offset)
{
	unsigned char junk[512];
	if (offset == 0 || lseek(fd, offset, SEEK_CUR) >= 0)
		return 0;
	while (offset > 0) {
		ssize_t got = read(fd, junk, offset < (off_t)sizeof(junk) ? (size_t)offset : sizeof(junk));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		offset -= got;
	}
	secure_wipe(junk, sizeof(junk));
	return offset > 0 ? -1 : 0;
}

/*
 * Read up to want bytes into k, growing it from a page (or the file's
 * size); with newline set, one byte at a time so that nothing after the
 * newline is consumed. 0, or -1 with errno set.
 */
static int read_bytes(struct key *k, int fd, size_t want, int newline)
{
	struct stat st;
	size_t first = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size < want
	               ? (size_t)st.st_size : want < 4096 ? want : 4096;
	if (key_grow(k, first) < 0)
		return -1;
	while (k->size < want) {
		ssize_t got;
		if (k->size == k->cap && key_grow(k, k->cap * 2 < want ? k->cap * 2 : want) < 0)
			return -1;
		got = read(fd, k->bytes + k->size, newline ? 1 : (k->cap < want ? k->cap : want) - k->size);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -1;
		if (got == 0)
			break;
		if (newline && k->bytes[k->size] == '\n') {
			k->bytes[k->size] = 0;
			break;
		}
		k->size += (size_t)got;
	}
	return 0;
}

/*
 * core.key_read(path_or_fd, size, max, offset, newline): cryptsetup's rules.
 * A terminal gives one line, echo off. Otherwise, with newline set (stdin
 * by default), input ends at the first newline; without it (key files) every
 * byte counts. size > 0: exactly that many bytes, else all up to max.
 * Empty or over-max input is refused.
 */
static int l_read(lua_State *L)
{
	size_t size = (size_t)luaL_optinteger(L, 2, 0);
	size_t max = (size_t)luaL_optinteger(L, 3, 8192 * 1024);
	lua_Integer offset = luaL_optinteger(L, 4, 0);
	int newline = lua_isnil(L, 5) ? -1 : lua_toboolean(L, 5);
	int fd, own = 0, r, err;
	const char *name;
	struct key *k;
	lua_settop(L, 5);
	k = key_push(L, "read");	/* at 6 */
	if (lua_type(L, 1) == LUA_TNUMBER) {
		fd = (int)luaL_checkinteger(L, 1);
		name = lua_pushfstring(L, "fd %d", fd);
	} else {
		name = luaL_checkstring(L, 1);
		if (strcmp(name, "-") == 0)
			fd = STDIN_FILENO;
		else if ((fd = open(name, O_RDONLY | O_NOCTTY | O_CLOEXEC)) < 0)
			return raise_error(L, "key.read", name, errno, "cannot open");
		else
			own = 1;
	}
	if (isatty(fd) && offset) {
		r = -1;
		errno = ESPIPE;
	} else if (isatty(fd))
		r = tty_line(k, fd, NULL, size ? size : max);
	else
		r = skip_bytes(fd, (off_t)offset) < 0 ? -1
		    : read_bytes(k, fd, size ? size : max + 1,
				 /* a file we opened may be fd 0 when stdin is closed: still a file */
				 newline < 0 ? !own && fd == STDIN_FILENO : newline);
	err = errno;
	if (own)
		close(fd);
	if (r < 0)
		return read_failed(L, k, "key.read", name, err, max);
	if (k->size == 0) {
		key_release(k);
		return raise_error(L, "key.read", name, EINVAL, "empty input refused");
	}
	if (!size && k->size > max)
		return read_failed(L, k, "key.read", name, EMSGSIZE, max);
	if (size && k->size != size) {
		int got = (int)k->size;
		key_release(k);
		return raise_error(L, "key.read", name, EINVAL, "wanted %d bytes, the input has %d", (int)size, got);
	}
	lua_settop(L, 6);
	return 1;
}

/* A description for a logon key of ours: "devmapper:" then printable, no spaces. */
static const char *desc_arg(lua_State *L, int idx, const char *op)
{
	size_t len, i;
	const char *desc = luaL_checklstring(L, idx, &len);
	int ok = len > 10 && len <= DESC_MAX && strncmp(desc, "devmapper:", 10) == 0;
	for (i = 0; ok && i < len; i++)
		ok = desc[i] > ' ' && desc[i] < 127;
	if (!ok)
		raise_error(L, op, NULL, EINVAL,
		            "keyring description must be \"devmapper:\" then printable characters without spaces "
		            "(at most %d bytes)", DESC_MAX);
	return desc;
}

/* core.key_add(desc, key): a logon key in @u; returns ":size:logon:desc". */
static int l_key_add(lua_State *L)
{
	const char *desc = desc_arg(L, 1, "key.to_keyring");
	struct key *k = key_check(L, 2, "key.to_keyring");
	if (syscall(SYS_add_key, "logon", desc, k->bytes, k->size, KEY_SPEC_USER_KEYRING) < 0)
		return raise_error(L, "key.to_keyring", desc, errno, "cannot add the logon key to the user keyring");
	lua_pushfstring(L, ":%d:logon:%s", (int)k->size, desc);
	return 1;
}

/*
 * core.key_unlink(desc): find our logon key in @u and invalidate it (gone
 * from every keyring at once); if that is not allowed, unlink it from @u.
 * Returns true if a key went, false if there was none.
 */
static int l_key_unlink(lua_State *L)
{
	const char *desc = desc_arg(L, 1, "key.unlink");
	long id = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "logon", desc, 0);
	if (id < 0 && (errno == ENOKEY || errno == EKEYREVOKED || errno == EKEYEXPIRED)) {
		lua_pushboolean(L, 0);
		return 1;
	}
	if (id < 0)
		return raise_error(L, "key.unlink", desc, errno, "cannot search the user keyring");
	if (syscall(SYS_keyctl, KEYCTL_INVALIDATE, id) < 0 &&
	    syscall(SYS_keyctl, KEYCTL_UNLINK, id, KEY_SPEC_USER_KEYRING) < 0)
		return raise_error(L, "key.unlink", desc, errno, "cannot remove the key from the user keyring");
	lua_pushboolean(L, 1);
	return 1;
}

/*
 * core.key_fingerprint(key): 32 hex digits of HMAC-SHA256 keyed by the key
 * over a fixed label. It names the key in the keyring, so that the same key
 * gives the same table text in every run (a re-applied stack is unchanged)
 * while a different key gives another; the bytes cannot be recovered from it.
 */
static int l_fingerprint(lua_State *L)
{
	static const char label[] = "lua-devmapper keyring description";
	struct key *k = key_check(L, 1, "crypt");
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	char hex[33];
	int i;
	if (!HMAC(EVP_sha256(), k->bytes, (int)k->size, (const unsigned char *)label, sizeof(label) - 1, mac, &len))
		return raise_error(L, "crypt", NULL, 0, "HMAC failed: %s", openssl_reason());
	for (i = 0; i < 16; i++)
		sprintf(hex + 2 * i, "%02x", mac[i]);
	OPENSSL_cleanse(mac, sizeof(mac));
	lua_pushstring(L, hex);
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

void key_open(lua_State *L)
{
	static const luaL_Reg core[] = {
		{"key_random", l_random},
		{"key_from_hex", l_from_hex},
		{"key_pbkdf2", l_pbkdf2},
		{"key_scrypt", l_scrypt},
		{"key_calibrate", l_calibrate},
		{"key_plain", l_plain},
		{"key_prompt", l_prompt},
		{"key_read", l_read},
		{"key_add", l_key_add},
		{"key_unlink", l_key_unlink},
		{"key_fingerprint", l_fingerprint},
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
