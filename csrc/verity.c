/* dm-verity hash trees through libcryptsetup: made (veritysetup format),
 * opened, and checked offline (veritysetup verify). The root hash is no
 * secret: it crosses to Lua as bytes. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <libcryptsetup.h>

#include "internal.h"

/* The parameters of opts (checked by the Lua layer): {hash, salt (bytes),
 * data_block_size, hash_block_size, data_blocks, hash_offset (bytes),
 * superblock = bool}. */
static void params_of(lua_State *L, int idx, struct crypt_params_verity *p, const char *data)
{
	size_t salt_size = 0;
	memset(p, 0, sizeof *p);
	if (!(p->hash_name = opt_string_field(L, idx, "hash", NULL)))
		p->hash_name = "sha256";	/* veritysetup's */
	p->salt = opt_string_field(L, idx, "salt", &salt_size);
	p->salt_size = (uint32_t)(p->salt ? salt_size : (size_t)opt_int_field(L, idx, "salt_size", 32));
	p->data_device = data;
	p->hash_type = 1;
	p->data_block_size = (uint32_t)opt_int_field(L, idx, "data_block_size", 4096);
	p->hash_block_size = (uint32_t)opt_int_field(L, idx, "hash_block_size", 4096);
	p->data_size = (uint64_t)opt_int_field(L, idx, "data_blocks", 0);
	p->hash_area_offset = (uint64_t)opt_int_field(L, idx, "hash_offset", 0);
	if (!opt_bool_field(L, idx, "superblock", 1))
		p->flags |= CRYPT_VERITY_NO_HEADER;
}

/* Push the facts of a loaded or formatted verity context: {root (bytes),
 * salt (bytes), hash, data_blocks, data_block_size, hash_block_size,
 * hash_offset, uuid}. */
static void push_facts(lua_State *L, struct crypt_device *cd, const char *root, size_t root_size)
{
	struct crypt_params_verity vp;
	lua_createtable(L, 0, 8);
	if (root) {
		lua_pushlstring(L, root, root_size);
		lua_setfield(L, -2, "root");
	}
	if (crypt_get_verity_info(cd, &vp) == 0) {
		lua_pushlstring(L, vp.salt ? vp.salt : "", vp.salt_size);
		lua_setfield(L, -2, "salt");
		lua_pushstring(L, vp.hash_name);
		lua_setfield(L, -2, "hash");
		lua_pushinteger(L, (lua_Integer)vp.data_size);
		lua_setfield(L, -2, "data_blocks");
		lua_pushinteger(L, vp.data_block_size);
		lua_setfield(L, -2, "data_block_size");
		lua_pushinteger(L, vp.hash_block_size);
		lua_setfield(L, -2, "hash_block_size");
		lua_pushinteger(L, (lua_Integer)vp.hash_area_offset);
		lua_setfield(L, -2, "hash_offset");
	}
	if (crypt_get_uuid(cd)) {
		lua_pushstring(L, crypt_get_uuid(cd));
		lua_setfield(L, -2, "uuid");
	}
}

/* core.verity_format(data, hash, opts) -> facts, root included. */
static int l_format(lua_State *L)
{
	const char *data = luaL_checkstring(L, 1), *hash = luaL_checkstring(L, 2);
	struct crypt_params_verity p;
	struct crypt_device *cd = NULL;
	char root[128];	/* a digest: 64 bytes for sha512 */
	size_t root_size = sizeof root;
	int r;
	luaL_checktype(L, 3, LUA_TTABLE);
	params_of(L, 3, &p, data);
	p.flags |= CRYPT_VERITY_CREATE_HASH;
	cryptsetup_log_reset();
	if ((r = crypt_init(&cd, hash)) < 0)
		return cryptsetup_fail(L, NULL, "verity.format", hash, -r, "cannot open the hash device");
	cryptsetup_log_to(cd);
	r = crypt_format(cd, CRYPT_VERITY, NULL, NULL, opt_string_field(L, 3, "uuid", NULL), NULL, 0, &p);
	if (r < 0)
		return cryptsetup_fail(L, cd, "verity.format", hash, -r, "cannot make the hash tree");
	if ((r = crypt_volume_key_get(cd, CRYPT_ANY_SLOT, root, &root_size, NULL, 0)) < 0)
		return cryptsetup_fail(L, cd, "verity.format", hash, -r, "cannot read the root hash");
	push_facts(L, cd, root, root_size);
	crypt_free(cd);
	return 1;
}

/* core.verity_open(data, hash, name|nil, root, opts): activate read-only,
 * or with no name check every block against the tree (offline verify). */
static int l_open(lua_State *L)
{
	const char *data = luaL_checkstring(L, 1), *hash = luaL_checkstring(L, 2);
	const char *name = luaL_optstring(L, 3, NULL), *op = name ? "verity.open" : "verity.verify";
	size_t root_size;
	const char *root = luaL_checklstring(L, 4, &root_size);
	struct crypt_params_verity p;
	struct crypt_device *cd = NULL;
	int r;
	luaL_checktype(L, 5, LUA_TTABLE);
	params_of(L, 5, &p, data);
	if (!name)
		p.flags |= CRYPT_VERITY_CHECK_HASH;
	cryptsetup_log_reset();
	if ((r = crypt_init(&cd, hash)) < 0)
		return cryptsetup_fail(L, NULL, op, name ? name : hash, -r, "cannot open the hash device");
	cryptsetup_log_to(cd);
	/* without a superblock, the parameters are given as to a format that
	 * writes nothing (as veritysetup --no-superblock does) */
	r = p.flags & CRYPT_VERITY_NO_HEADER ? crypt_format(cd, CRYPT_VERITY, NULL, NULL, NULL, NULL, 0, &p)
	                                     : crypt_load(cd, CRYPT_VERITY, &p);
	if (r < 0)
		return cryptsetup_fail(L, cd, op, name ? name : hash, -r, "cannot read the verity parameters");
	if ((r = crypt_set_data_device(cd, data)) < 0)
		return cryptsetup_fail(L, cd, op, name ? name : hash, -r, "cannot use the data device");
	r = crypt_activate_by_volume_key(cd, name, root, root_size, name ? CRYPT_ACTIVATE_READONLY : 0);
	if (r == -EPERM)
		return cryptsetup_fail(L, cd, op, name ? name : hash, EPERM, "the data does not match the root hash");
	if (r == -EFAULT)	/* libcryptsetup's word for a tree whose top is not the root hash */
		return cryptsetup_fail(L, cd, op, name ? name : hash, EPERM, "the hash tree does not match the root hash");
	if (r < 0)
		return cryptsetup_fail(L, cd, op, name ? name : hash, -r, name ? "cannot open the verity volume" : "cannot verify");
	crypt_free(cd);
	return 0;
}

/* core.verity_info(hash, hash_offset) -> the superblock's facts (no root). */
static int l_info(lua_State *L)
{
	const char *hash = luaL_checkstring(L, 1);
	struct crypt_params_verity p;
	struct crypt_device *cd = NULL;
	int r;
	memset(&p, 0, sizeof p);
	p.hash_area_offset = (uint64_t)luaL_optinteger(L, 2, 0);
	cryptsetup_log_reset();
	if ((r = crypt_init(&cd, hash)) < 0)
		return cryptsetup_fail(L, NULL, "verity.info", hash, -r, "cannot open the hash device");
	cryptsetup_log_to(cd);
	if ((r = crypt_load(cd, CRYPT_VERITY, &p)) < 0)
		return cryptsetup_fail(L, cd, "verity.info", hash, -r, "no verity superblock there");
	push_facts(L, cd, NULL, 0);
	crypt_free(cd);
	return 1;
}

void verity_open(lua_State *L)
{
	static const luaL_Reg core[] = {
		{"verity_format", l_format},
		{"verity_open", l_open},
		{"verity_info", l_info},
		{NULL, NULL}
	};
	luaL_setfuncs(L, core, 0);
}
