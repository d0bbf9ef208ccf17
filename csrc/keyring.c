/* Logon keys in the kernel keyring, and the keyrings that hold them. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#include <linux/keyctl.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "internal.h"

#define DESC_MAX 4095		/* the kernel's limit on a key description */

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

static int gone(int err)
{
	return err == ENOKEY || err == EKEYREVOKED || err == EKEYEXPIRED;
}

/* Take a key or keyring out: invalidated (gone from every keyring at once),
 * or, if that is not allowed, unlinked from @u. 0, or -1 with errno. */
static int take_out(long id)
{
	if (syscall(SYS_keyctl, KEYCTL_INVALIDATE, id) == 0 ||
	    syscall(SYS_keyctl, KEYCTL_UNLINK, id, KEY_SPEC_USER_KEYRING) == 0)
		return 0;
	return -1;
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
	if (id < 0 && gone(errno))
		return lua_pushboolean(L, 0), 1;
	if (id < 0)
		return raise_error(L, "key.unlink", desc, errno, "cannot search the user keyring");
	if (take_out(id) < 0)
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
	struct key *k = key_check(L, 1, "key.fingerprint");
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	int i;
	/* made once per key: tables name it every time a stack is compared or applied */
	if (!k->fingerprint[0]) {
		if (!HMAC(EVP_sha256(), k->bytes, (int)k->size, (const unsigned char *)label, sizeof(label) - 1, mac, &len))
			return raise_error(L, "key.fingerprint", NULL, 0, "HMAC failed: %s", openssl_reason());
		for (i = 0; i < 16; i++)
			sprintf(k->fingerprint + 2 * i, "%02x", mac[i]);
		OPENSSL_cleanse(mac, sizeof(mac));
	}
	lua_pushstring(L, k->fingerprint);
	return 1;
}

/*
 * Rings: keyrings of our own in @u, one per device ("devmapper:dev:NAME"),
 * holding links to the logon keys that device uses. What a device uses is
 * then read from the kernel, and dropping its ring unlinks exactly its keys.
 */

/* A ring or key description of ours, or raise naming op and showing what
 * was given (a description is no secret). */
static const char *name_arg(lua_State *L, int idx, const char *op, const char *what)
{
	size_t len = 0, i;
	const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
	int ok = s && len > 10 && len <= DESC_MAX && strncmp(s, "devmapper:", 10) == 0;
	luaL_Buffer b;
	for (i = 0; ok && i < len; i++)
		ok = s[i] >= 0x21 && s[i] <= 0x7e;
	if (ok)
		return s;
	if (!s)
		raise_error(L, op, NULL, EINVAL, "the %s must be a string, got %s", what, luaL_typename(L, idx));
	luaL_buffinit(L, &b);
	for (i = 0; i < len && i < 48; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\')
			luaL_addchar(&b, (char)c);
		else {
			char esc[8];
			snprintf(esc, sizeof esc, "\\x%02x", c);
			luaL_addstring(&b, esc);
		}
	}
	if (len > 48)
		luaL_addstring(&b, "...");
	luaL_pushresult(&b);
	raise_error(L, op, NULL, EINVAL, "the %s must be \"devmapper:\" and then printable characters without "
	            "spaces (bytes 0x21-0x7e), at most %d bytes in all; got \"%s\" (%d bytes)", what, DESC_MAX,
	            lua_tostring(L, -1), (int)len);
	return NULL;
}

/* The serial of keyring `ring` found from @u; 0 when there is none, -1 with
 * errno on failure. */
static long find_ring(const char *ring)
{
	long id = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "keyring", ring, 0);
	return id >= 0 ? id : gone(errno) ? 0 : -1;
}

/*
 * The ring's serial, made in @u when missing (then *made is set). add_key
 * of a keyring displaces one of the same name, so it is only called after
 * a search found none, or without one when the caller knows any ring of
 * that name is stale (`fresh`: its device's name was just taken by a
 * create; a search that misses descends into every keyring in @u). Two
 * processes racing here should hold a lock.
 */
static long ensure_ring(lua_State *L, const char *ring, const char *op, int fresh, int *made)
{
	long id = fresh ? 0 : find_ring(ring);
	*made = 0;
	if (id < 0)
		raise_error(L, op, ring, errno, "cannot search the user keyring for the keyring");
	if (id > 0)
		return id;
	if ((id = syscall(SYS_add_key, "keyring", ring, NULL, 0, KEY_SPEC_USER_KEYRING)) < 0)
		raise_error(L, op, ring, errno, "cannot make the keyring in the user keyring");
	*made = 1;
	return id;
}

/*
 * Keys added for a table are also linked, until its task has run, in this
 * thread's keyring. The kernel looks a key up by searching the caller's
 * keyrings, thread keyring first, and finds a key there at once; found
 * through @u, the search descends into the device rings one by one, and so
 * does the possession check of every keyctl call given a key's serial. So a
 * create or load stays O(1) however many rings there are.
 */
#define HELD_MAX 64
static _Thread_local long held[HELD_MAX];
static _Thread_local int nheld;

/* After a task ran (or failed): the thread keyring lets go of those keys. */
void keyring_release_thread(void)
{
	while (nheld > 0)
		syscall(SYS_keyctl, KEYCTL_UNLINK, held[--nheld], KEY_SPEC_THREAD_KEYRING);
}

/* core.ring_release(): as after a task, for a table whose task never ran. */
static int l_ring_release(lua_State *L)
{
	(void)L;
	keyring_release_thread();
	return 0;
}

/*
 * Calls given a key's serial (describe, unlink) first search the caller's
 * keyrings for it, to know whether the caller possesses it: through @u,
 * into every device ring. With the device's ring linked in the thread
 * keyring for the while, that search finds the key at once.
 */
static int ring_near(long ring)
{
	return syscall(SYS_keyctl, KEYCTL_LINK, ring, KEY_SPEC_THREAD_KEYRING) == 0;
}

static void ring_far(long ring, int near)
{
	int err = errno;
	if (near)
		syscall(SYS_keyctl, KEYCTL_UNLINK, ring, KEY_SPEC_THREAD_KEYRING);
	errno = err;
}

/* A failed add or link leaves no ring it made (this unlink needs no
 * permission on the ring itself, only on @u). Raises with err. */
static int ring_failed(lua_State *L, long id, int made, const char *op, const char *ring, int err,
                       const char *fmt, const char *desc)
{
	keyring_release_thread();
	if (made)
		syscall(SYS_keyctl, KEYCTL_UNLINK, id, KEY_SPEC_USER_KEYRING);
	return raise_error(L, op, ring, err, fmt, desc);
}

/* The serials linked in a keyring (malloc'd, *n of them), or NULL with errno. */
static int32_t *members(long ring, size_t *n)
{
	long size = syscall(SYS_keyctl, KEYCTL_READ, ring, NULL, 0), got;
	int32_t *ids = NULL, *more;
	while (size >= 0) {
		if (!(more = realloc(ids, size ? (size_t)size : 1)))
			break;
		ids = more;
		if ((got = syscall(SYS_keyctl, KEYCTL_READ, ring, ids, size)) < 0)
			break;
		if (got <= size) {
			*n = (size_t)got / sizeof(*ids);
			return ids;
		}
		size = got;	/* the keyring grew meanwhile */
	}
	free(ids);
	return NULL;
}

static int by_string(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Push, sorted, the descriptions of the members of `ring` of this type
 * whose description starts with prefix. A member we may not view, or that
 * went meanwhile, is not listed. 0, or -1 with errno.
 */
static int push_members(lua_State *L, long ring, const char *type, const char *prefix)
{
	size_t n = 0, i, found = 0, tlen = strlen(type), plen = strlen(prefix);
	int32_t *ids = members(ring, &n);
	char **descs;
	char buf[DESC_MAX + 128];
	if (!ids)
		return -1;
	if (!(descs = calloc(n ? n : 1, sizeof(*descs)))) {
		free(ids);
		return -1;
	}
	for (i = 0; i < n; i++) {
		/* "type;uid;gid;perm;description" */
		long len = syscall(SYS_keyctl, KEYCTL_DESCRIBE, (long)ids[i], buf, sizeof buf);
		char *d = buf;
		int semis = 0;
		if (len <= 0 || (size_t)len > sizeof buf || strncmp(buf, type, tlen) || buf[tlen] != ';')
			continue;
		while (*d && semis < 4)
			semis += *d++ == ';';
		if (semis == 4 && strncmp(d, prefix, plen) == 0 && !(descs[found] = strdup(d)))
			break;
		found += semis == 4 && strncmp(d, prefix, plen) == 0;
	}
	free(ids);
	qsort(descs, found, sizeof(*descs), by_string);
	lua_createtable(L, (int)found, 0);
	for (i = 0; i < found; i++) {
		lua_pushstring(L, descs[i]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
		free(descs[i]);
	}
	free(descs);
	return 0;
}

/* core.ring_add(ring, desc, key[, fresh]) -> ":size:logon:desc": the key's
 * bytes as the logon key desc in ring (made in @u if missing, without a
 * search when fresh: the caller knows a ring of that name is stale or
 * absent); an existing desc in that ring is replaced. */
static int l_ring_add(lua_State *L)
{
	const char *ring = name_arg(L, 1, "ring.add", "keyring name");
	const char *desc = name_arg(L, 2, "ring.add", "key description");
	struct key *k = key_check(L, 3, "ring.add");
	int made;
	long id = ensure_ring(L, ring, "ring.add", lua_toboolean(L, 4), &made), key = -1;
	if (nheld < HELD_MAX)
		key = syscall(SYS_add_key, "logon", desc, k->bytes, k->size, KEY_SPEC_THREAD_KEYRING);
	if (key >= 0) {
		held[nheld++] = key;
		if (syscall(SYS_keyctl, KEYCTL_LINK, key, id) < 0)
			return ring_failed(L, id, made, "ring.add", ring, errno, "cannot link the logon key '%s' into the keyring", desc);
	} else if (syscall(SYS_add_key, "logon", desc, k->bytes, k->size, id) < 0)
		return ring_failed(L, id, made, "ring.add", ring, errno, "cannot add the logon key '%s' to the keyring", desc);
	lua_pushfstring(L, ":%d:logon:%s", (int)k->size, desc);
	return 1;
}

/* core.ring_link(ring, desc[, fresh]) -> true, or false when no logon key
 * desc is reachable from @u (then no ring is made either). */
static int l_ring_link(lua_State *L)
{
	const char *ring = name_arg(L, 1, "ring.link", "keyring name");
	const char *desc = name_arg(L, 2, "ring.link", "key description");
	long id, key = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "logon", desc, 0);
	int made;
	if (key < 0 && gone(errno))
		return lua_pushboolean(L, 0), 1;
	if (key < 0)
		return raise_error(L, "ring.link", ring, errno, "cannot search the user keyring for the key '%s'", desc);
	id = ensure_ring(L, ring, "ring.link", lua_toboolean(L, 3), &made);
	if (syscall(SYS_keyctl, KEYCTL_LINK, key, id) < 0)
		return ring_failed(L, id, made, "ring.link", ring, errno, "cannot link the key '%s' into the keyring", desc);
	lua_pushboolean(L, 1);
	return 1;
}

/* core.ring_unlink(ring, desc) -> true, or false when the ring or the key
 * in it is not there. Other rings' links to the key stay. */
static int l_ring_unlink(lua_State *L)
{
	const char *ring = name_arg(L, 1, "ring.unlink", "keyring name");
	const char *desc = name_arg(L, 2, "ring.unlink", "key description");
	long key, r, id = find_ring(ring);
	int near;
	if (id < 0)
		return raise_error(L, "ring.unlink", ring, errno, "cannot search the user keyring for the keyring");
	if (id == 0)
		return lua_pushboolean(L, 0), 1;
	key = syscall(SYS_keyctl, KEYCTL_SEARCH, id, "logon", desc, 0);
	if (key < 0 && gone(errno))
		return lua_pushboolean(L, 0), 1;
	if (key < 0)
		return raise_error(L, "ring.unlink", ring, errno, "cannot search the keyring for the key '%s'", desc);
	near = ring_near(id);
	r = syscall(SYS_keyctl, KEYCTL_UNLINK, key, id);
	ring_far(id, near);
	if (r < 0) {
		if (errno == ENOENT)
			return lua_pushboolean(L, 0), 1;
		return raise_error(L, "ring.unlink", ring, errno, "cannot unlink the key '%s' from the keyring", desc);
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* core.ring_keys(ring) -> {desc, ...} of its logon keys, sorted; nil when
 * there is no such ring. */
static int l_ring_keys(lua_State *L)
{
	const char *ring = name_arg(L, 1, "ring.keys", "keyring name");
	long id = find_ring(ring);
	if (id < 0)
		return raise_error(L, "ring.keys", ring, errno, "cannot search the user keyring for the keyring");
	if (id == 0)
		return lua_pushnil(L), 1;
	int near = ring_near(id), r = push_members(L, id, "logon", "");
	ring_far(id, near);
	if (r < 0) {
		if (gone(errno))
			return lua_pushnil(L), 1;
		return raise_error(L, "ring.keys", ring, errno, "cannot read the keyring");
	}
	return 1;
}

/* core.ring_drop(ring) -> true, or false when there was no such ring: its
 * links are cleared (a key no other keyring holds goes) and it leaves @u. */
static int l_ring_drop(lua_State *L)
{
	const char *ring = name_arg(L, 1, "ring.drop", "keyring name");
	long id = find_ring(ring);
	if (id < 0)
		return raise_error(L, "ring.drop", ring, errno, "cannot search the user keyring for the keyring");
	if (id == 0)
		return lua_pushboolean(L, 0), 1;
	if (syscall(SYS_keyctl, KEYCTL_CLEAR, id) < 0)
		return raise_error(L, "ring.drop", ring, errno, "cannot clear the keyring");
	/* out of @u's list now: an invalidated keyring stays listed there until
	 * the kernel's garbage collector runs */
	if (syscall(SYS_keyctl, KEYCTL_UNLINK, id, KEY_SPEC_USER_KEYRING) == 0)
		return lua_pushboolean(L, 1), 1;
	if (take_out(id) < 0)
		return raise_error(L, "ring.drop", ring, errno, "cannot take the keyring out of the user keyring");
	lua_pushboolean(L, 1);
	return 1;
}

/* core.rings(prefix) -> {ring, ...}: keyrings linked directly in @u whose
 * description starts with prefix, sorted. */
static int l_rings(lua_State *L)
{
	const char *prefix = luaL_optstring(L, 1, "devmapper:");
	if (push_members(L, KEY_SPEC_USER_KEYRING, "keyring", prefix) < 0)
		return raise_error(L, "ring.list", prefix, errno, "cannot read the user keyring");
	return 1;
}

void keyring_open(lua_State *L)
{
	static const luaL_Reg core[] = {
		{"key_add", l_key_add},
		{"key_unlink", l_key_unlink},
		{"key_fingerprint", l_fingerprint},
		{"ring_add", l_ring_add},
		{"ring_release", l_ring_release},
		{"ring_link", l_ring_link},
		{"ring_unlink", l_ring_unlink},
		{"ring_keys", l_ring_keys},
		{"ring_drop", l_ring_drop},
		{"rings", l_rings},
		{NULL, NULL}
	};
	luaL_setfuncs(L, core, 0);
}
