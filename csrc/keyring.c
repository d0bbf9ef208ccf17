/* Logon keys in the kernel keyring, and the keyrings that hold them. */
#include <errno.h>
#include <stdio.h>
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

void keyring_open(lua_State *L)
{
	static const luaL_Reg core[] = {
		{"key_add", l_key_add},
		{"key_unlink", l_key_unlink},
		{"key_fingerprint", l_fingerprint},
		{NULL, NULL}
	};
	luaL_setfuncs(L, core, 0);
}
