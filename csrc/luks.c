/* LUKS volumes through libcryptsetup: format, open, close, key slots and
 * the header's facts. Passphrases and volume keys go from Keys (locked
 * memory) straight to libcryptsetup: none becomes a Lua string. Its log
 * goes into the error object, never to stderr. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <libcryptsetup.h>

#include "internal.h"

/* libcryptsetup's error lines since the last reset (one Lua state runs at
 * a time in a process that drives device-mapper); verity.c shares them. */
static char log_text[1024];

void cryptsetup_log_reset(void) { log_text[0] = 0; }

static void on_log(int level, const char *msg, void *unused)
{
	size_t have = strlen(log_text), n = strlen(msg);
	(void)unused;
	if (level != CRYPT_LOG_ERROR || have >= sizeof log_text - 3)
		return;
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '.'))
		n--;
	if (have) {
		memcpy(log_text + have, "; ", 2);
		have += 2;
	}
	if (n > sizeof log_text - 1 - have)
		n = sizeof log_text - 1 - have;
	memcpy(log_text + have, msg, n);
	log_text[have + n] = 0;
}

void cryptsetup_log_to(struct crypt_device *cd)
{
	crypt_set_log_callback(cd, on_log, NULL);
}

int cryptsetup_fail(lua_State *L, struct crypt_device *cd, const char *op, const char *name, int err,
                    const char *what)
{
	if (cd)
		crypt_free(cd);
	if (log_text[0])
		return raise_error(L, op, name, err, "%s: %s", what, log_text);
	return raise_error(L, op, name, err, "%s", what);
}

/* A context for the LUKS volume at path, its header loaded (any version). */
static struct crypt_device *load(lua_State *L, const char *path, const char *op)
{
	struct crypt_device *cd = NULL;
	int r;
	cryptsetup_log_reset();
	if ((r = crypt_init(&cd, path)) < 0)
		cryptsetup_fail(L, NULL, op, path, -r, "cannot open the device");
	cryptsetup_log_to(cd);
	if ((r = crypt_load(cd, CRYPT_LUKS, NULL)) < 0)
		cryptsetup_fail(L, cd, op, path, -r, "not a LUKS volume (no LUKS header, or a damaged one)");
	return cd;
}

/* The PBKDF of opts.pbkdf ({type, hash, time_ms, iterations, memory, parallel}),
 * checked by the Lua layer; 0 when absent. */
static int pbkdf_of(lua_State *L, int idx, struct crypt_pbkdf_type *p)
{
	const char *hash;
	lua_getfield(L, idx, "pbkdf");
	if (!lua_istable(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	memset(p, 0, sizeof *p);
	p->type = opt_string_field(L, -1, "type", NULL);
	{
		/* libcryptsetup's defaults for that type, then what was given */
		const struct crypt_pbkdf_type *d = p->type ? crypt_get_pbkdf_type_params(p->type) : NULL;
		if (d)
			*p = *d;
	}
	if ((hash = opt_string_field(L, -1, "hash", NULL)))
		p->hash = hash;
	p->time_ms = (uint32_t)opt_int_field(L, lua_gettop(L), "time_ms", p->time_ms);
	p->iterations = (uint32_t)opt_int_field(L, lua_gettop(L), "iterations", 0);
	p->max_memory_kb = (uint32_t)opt_int_field(L, lua_gettop(L), "memory", p->max_memory_kb);
	p->parallel_threads = (uint32_t)opt_int_field(L, lua_gettop(L), "parallel", p->parallel_threads);
	p->flags = p->iterations ? CRYPT_PBKDF_NO_BENCHMARK : 0;
	lua_pop(L, 1);	/* opts keeps pbkdf, and its strings, alive */
	return 1;
}

/* Set the PBKDF read (before cd was made: reading may raise) by pbkdf_of. */
static void set_pbkdf(lua_State *L, struct crypt_device *cd, const struct crypt_pbkdf_type *p,
                      const char *op, const char *path)
{
	int r;
	if (p && (r = crypt_set_pbkdf_type(cd, p)) < 0)
		cryptsetup_fail(L, cd, op, path, -r, "the key derivation (pbkdf) was refused");
}

/* A secret handed to a worker thread: a copy in locked memory of its own,
 * so that a progress callback closing the Key meanwhile takes nothing from
 * under the worker. */
struct secret {
	char *bytes;
	size_t len, cap;
};

static void secret_drop(struct secret *s);

/* Copies of one or two secrets (b2 NULL: one): on failure (out of memory)
 * nothing is left, cd is freed, and it raises. */
static void secret_copy(lua_State *L, struct crypt_device *cd, const char *op, struct secret *s1,
                        const unsigned char *b1, size_t l1, struct secret *s2, const unsigned char *b2, size_t l2)
{
	struct secret *s[2] = {s1, s2};
	const unsigned char *b[2] = {b1, b2};
	size_t l[2] = {l1, l2};
	int i, err;
	for (i = 0; i < 2 && b[i]; i++) {
		s[i]->len = s[i]->cap = l[i];
		if (!(s[i]->bytes = secure_alloc(&s[i]->cap))) {
			err = errno;
			secret_drop(s1);
			if (s2)
				secret_drop(s2);
			if (cd)
				crypt_free(cd);
			raise_error(L, op, NULL, err, "cannot map memory for a key");
		}
		memcpy(s[i]->bytes, b[i], l[i]);
	}
}

static void secret_drop(struct secret *s)
{
	if (s->bytes)
		secure_free(s->bytes, s->cap);
	s->bytes = NULL;
}

/* opts.progress (a function: its index, left on the stack) or 0. */
static int progress_of(lua_State *L, int opts)
{
	if (lua_type(L, opts) != LUA_TTABLE)
		return 0;
	if (lua_getfield(L, opts, "progress") == LUA_TFUNCTION)
		return lua_gettop(L);
	lua_pop(L, 1);
	return 0;
}

/* libcryptsetup's PBKDF for the op: what the caller set, or its default. */
static const char *pbkdf_name(const struct crypt_pbkdf_type *p, const char *type)
{
	const struct crypt_pbkdf_type *d = p && p->type ? p : crypt_get_pbkdf_default(type);
	return d ? d->type : NULL;
}

struct format_job {
	struct crypt_device *cd;
	const char *type, *cipher, *mode, *uuid;
	struct secret pass, vk;
	size_t vlen;
	void *params;
	int r, step;
};

/* In the worker: the header, then the first key slot (its PBKDF). */
static void format_work(void *p)
{
	struct format_job *j = p;
	j->step = 1;
	j->r = crypt_format(j->cd, j->type, j->cipher, j->mode, j->uuid, j->vk.bytes, j->vlen, j->params);
	if (j->r < 0)
		return;
	j->step = 2;
	j->r = crypt_keyslot_add_by_volume_key(j->cd, CRYPT_ANY_SLOT, j->vk.bytes, j->vlen, j->pass.bytes, j->pass.len);
}

/* core.luks_format(path, opts, passphrase[, volume_key]) -> slot, uuid.
 * opts: {type = "luks1"|"luks2", cipher, mode, key_size (bytes), sector_size,
 * label, subsystem, uuid, pbkdf = {...}}; the volume key is made by
 * libcryptsetup unless given. */
static int l_format(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	size_t plen, vlen = 0;
	const unsigned char *pass, *vk = NULL;
	const char *type;
	struct crypt_device *cd = NULL;
	struct crypt_pbkdf_type pbkdf;
	struct crypt_params_luks1 p1 = {0};
	struct crypt_params_luks2 p2 = {0};
	struct format_job j = {0};
	int r, luks1, cb, status;
	luaL_checktype(L, 2, LUA_TTABLE);
	pass = key_bytes(L, 3, &plen);
	if (!lua_isnoneornil(L, 4))
		vk = key_bytes(L, 4, &vlen);
	else
		vlen = (size_t)opt_int_field(L, 2, "key_size", 64);
	luks1 = (type = opt_string_field(L, 2, "type", NULL)) && strcmp(type, "luks1") == 0;
	p2.sector_size = (uint32_t)opt_int_field(L, 2, "sector_size", 0);	/* 0: libcryptsetup's pick */
	p2.label = opt_string_field(L, 2, "label", NULL);
	p2.subsystem = opt_string_field(L, 2, "subsystem", NULL);
	if (pbkdf_of(L, 2, &pbkdf))
		p2.pbkdf = &pbkdf;
	j.type = luks1 ? CRYPT_LUKS1 : CRYPT_LUKS2;
	j.cipher = opt_string_field(L, 2, "cipher", NULL);
	j.mode = opt_string_field(L, 2, "mode", NULL);
	j.uuid = opt_string_field(L, 2, "uuid", NULL);
	j.vlen = vlen;
	j.params = luks1 ? (void *)&p1 : (void *)&p2;
	cb = progress_of(L, 2);
	cryptsetup_log_reset();
	if ((r = crypt_init(&cd, path)) < 0)
		return cryptsetup_fail(L, NULL, "luks.format", path, -r, "cannot open the device");
	cryptsetup_log_to(cd);
	if (luks1 && p2.pbkdf && (r = crypt_set_pbkdf_type(cd, p2.pbkdf)) < 0)
		return cryptsetup_fail(L, cd, "luks.format", path, -r, "the key derivation (pbkdf) was refused");
	j.cd = cd;
	secret_copy(L, cd, "luks.format", &j.pass, pass, plen, &j.vk, vk, vlen);
	/* a raising callback: the worker has finished; the header it wrote stays */
	status = progress_run(L, cb, "luks.format", "derive", pbkdf_name(p2.pbkdf, j.type), -1, 1, format_work, &j);
	secret_drop(&j.pass);
	secret_drop(&j.vk);
	if (status != LUA_OK) {
		crypt_free(cd);
		return lua_error(L);
	}
	if ((r = j.r) < 0)
		return cryptsetup_fail(L, cd, "luks.format", path, -r,
		                       j.step == 1 ? "cannot write the LUKS header" : "cannot add the first key slot");
	{
		/* pushing may fail (memory): free cd, and the volume key it holds, first */
		char uuid[64];
		snprintf(uuid, sizeof uuid, "%s", crypt_get_uuid(cd) ? crypt_get_uuid(cd) : "");
		crypt_free(cd);
		lua_pushinteger(L, r);
		lua_pushstring(L, uuid);
	}
	return 2;
}

struct open_job {
	struct crypt_device *cd;
	const char *name;
	int by_vk;
	struct secret k;
	uint32_t flags;
	int r;
};

static void open_work(void *p)
{
	struct open_job *j = p;
	if (j->by_vk)
		j->r = crypt_activate_by_volume_key(j->cd, j->name, j->k.bytes, j->k.len, j->flags);
	else
		j->r = crypt_activate_by_passphrase(j->cd, j->name, CRYPT_ANY_SLOT, j->k.bytes, j->k.len, j->flags);
}

/* core.luks_open(path, name, how, key, {readonly, discards}) -> slot (or
 * -1 for a volume key): how is "passphrase" or "volume_key". */
static int l_open(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
	const char *how = luaL_checkstring(L, 3);
	size_t len;
	const unsigned char *k = key_bytes(L, 4, &len);
	struct open_job j = {0};
	struct crypt_device *cd;
	int r, cb, status;
	j.name = name;
	j.by_vk = strcmp(how, "volume_key") == 0;
	if (opt_bool_field(L, 5, "readonly", 0))
		j.flags |= CRYPT_ACTIVATE_READONLY;
	if (opt_bool_field(L, 5, "discards", 0))
		j.flags |= CRYPT_ACTIVATE_ALLOW_DISCARDS;
	cb = progress_of(L, 5);
	cd = load(L, path, "luks.open");
	j.cd = cd;
	secret_copy(L, cd, "luks.open", &j.k, k, len, NULL, NULL, 0);
	status = progress_run(L, cb, "luks.open", "derive", NULL, -1, 1, open_work, &j);
	secret_drop(&j.k);
	if (status != LUA_OK) {
		/* the callback raised: what the worker opened is closed again */
		if (j.r >= 0)
			crypt_deactivate(cd, name);
		crypt_free(cd);
		return lua_error(L);
	}
	if ((r = j.r) == -EPERM)
		return cryptsetup_fail(L, cd, "luks.open", name, EPERM, j.by_vk ?
		            "the volume key does not match the header" : "no key slot opens with this passphrase");
	if (r < 0)
		return cryptsetup_fail(L, cd, "luks.open", name, -r, "cannot open the LUKS volume");
	crypt_free(cd);
	lua_pushinteger(L, j.by_vk ? -1 : r);
	return 1;
}

/* core.cryptsetup_close(name): a LUKS or verity volume, and what
 * libcryptsetup keeps for it (a volume key in the keyring), go. */
static int l_close(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct crypt_device *cd = NULL;
	int r;
	cryptsetup_log_reset();
	if ((r = crypt_init_by_name(&cd, name)) < 0)
		return cryptsetup_fail(L, NULL, "close", name, -r, "no such active volume");
	cryptsetup_log_to(cd);
	if ((r = crypt_deactivate(cd, name)) < 0)
		return cryptsetup_fail(L, cd, "close", name, -r, "cannot close the volume");
	crypt_free(cd);
	return 0;
}

/* core.luks_is(path) -> whether path holds a LUKS header (any version). */
static int l_is(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	struct crypt_device *cd = NULL;
	int r;
	cryptsetup_log_reset();
	if ((r = crypt_init(&cd, path)) < 0)
		return cryptsetup_fail(L, NULL, "luks.is_luks", path, -r, "cannot open the device");
	cryptsetup_log_to(cd);
	r = crypt_load(cd, CRYPT_LUKS, NULL);
	crypt_free(cd);
	lua_pushboolean(L, r == 0);
	return 1;
}

static void set_string(lua_State *L, const char *k, const char *v)
{
	if (v && *v) {
		lua_pushstring(L, v);
		lua_setfield(L, -2, k);
	}
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, k);
}

/* core.luks_info(path) -> the header's facts: {version, uuid, label,
 * subsystem, cipher, mode, key_size, sector_size, data_offset, keyslots =
 * {{slot, state, pbkdf?, ...}, ...}, tokens = {{token, type, json}, ...}}. */
static int l_info(lua_State *L)
{
	static const char *states[] = {"inactive", "active", "active", "unbound"};
	const char *path = luaL_checkstring(L, 1);
	struct crypt_device *cd = load(L, path, "luks.info");
	const char *type = crypt_get_type(cd);
	int slot, n = 0, max = crypt_keyslot_max(type);
	lua_createtable(L, 0, 10);
	set_int(L, "version", strcmp(type, CRYPT_LUKS1) == 0 ? 1 : 2);
	set_string(L, "uuid", crypt_get_uuid(cd));
	set_string(L, "label", crypt_get_label(cd));
	set_string(L, "subsystem", crypt_get_subsystem(cd));
	set_string(L, "cipher", crypt_get_cipher(cd));
	set_string(L, "mode", crypt_get_cipher_mode(cd));
	set_int(L, "key_size", crypt_get_volume_key_size(cd));
	set_int(L, "sector_size", crypt_get_sector_size(cd));
	set_int(L, "data_offset", (lua_Integer)crypt_get_data_offset(cd));
	lua_newtable(L);
	for (slot = 0; slot < max; slot++) {
		crypt_keyslot_info st = crypt_keyslot_status(cd, slot);
		struct crypt_pbkdf_type p;
		if (st < CRYPT_SLOT_ACTIVE || st > CRYPT_SLOT_UNBOUND)
			continue;
		lua_createtable(L, 0, 6);
		set_int(L, "slot", slot);
		set_string(L, "state", states[st - CRYPT_SLOT_INACTIVE]);
		if (crypt_keyslot_get_pbkdf(cd, slot, &p) == 0) {
			set_string(L, "pbkdf", p.type);
			set_string(L, "hash", p.hash);
			set_int(L, "iterations", p.iterations);
			if (p.max_memory_kb)
				set_int(L, "memory", p.max_memory_kb);
			if (p.parallel_threads)
				set_int(L, "parallel", p.parallel_threads);
		}
		lua_rawseti(L, -2, ++n);
	}
	lua_setfield(L, -2, "keyslots");
	/* LUKS2 tokens: {{token, type, json (its definition, as luksDump shows it)}, ...} */
	lua_newtable(L);
	n = 0;
	max = strcmp(type, CRYPT_LUKS2) == 0 ? crypt_token_max(type) : 0;
	for (slot = 0; slot < max; slot++) {
		const char *ttype = NULL, *json = NULL;
		crypt_token_info st = crypt_token_status(cd, slot, &ttype);
		if (st <= CRYPT_TOKEN_INACTIVE)
			continue;
		lua_createtable(L, 0, 3);
		set_int(L, "token", slot);
		set_string(L, "type", ttype);
		if (crypt_token_json_get(cd, slot, &json) >= 0)
			set_string(L, "json", json);
		lua_rawseti(L, -2, ++n);
	}
	lua_setfield(L, -2, "tokens");
	crypt_free(cd);
	return 1;
}

/* add_key, change_key and remove_key's check, in the worker. */
struct slot_job {
	struct crypt_device *cd;
	int what, slot, r;	/* what: 'a'dd, 'c'hange, 'r'emove's check */
	struct secret old, new;
};

static void slot_work(void *p)
{
	struct slot_job *j = p;
	if (j->what == 'a')
		j->r = crypt_keyslot_add_by_passphrase(j->cd, j->slot, j->old.bytes, j->old.len, j->new.bytes, j->new.len);
	else if (j->what == 'c')
		j->r = crypt_keyslot_change_by_passphrase(j->cd, CRYPT_ANY_SLOT, CRYPT_ANY_SLOT, j->old.bytes, j->old.len,
		                                          j->new.bytes, j->new.len);
	else
		j->r = crypt_activate_by_passphrase(j->cd, NULL, CRYPT_ANY_SLOT, j->old.bytes, j->old.len, 0);
}

/* Run a slot job: LUA_OK, or the callback raised (the copies are wiped either way). */
static int slot_run(lua_State *L, int cb, const char *op, struct slot_job *j, const char *what,
                    const unsigned char *old, size_t olen, const unsigned char *new, size_t nlen)
{
	int status;
	secret_copy(L, j->cd, op, &j->old, old, olen, &j->new, new, nlen);
	status = progress_run(L, cb, op, "derive", what, -1, 1, slot_work, j);
	secret_drop(&j->old);
	secret_drop(&j->new);
	return status;
}

/* core.luks_add_key(path, passphrase, new, slot (-1: any), opts) -> slot */
static int l_add_key(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	size_t olen, nlen;
	const unsigned char *old = key_bytes(L, 2, &olen), *new = key_bytes(L, 3, &nlen);
	int slot = (int)luaL_checkinteger(L, 4), r, cb;
	struct crypt_pbkdf_type p;
	int given = pbkdf_of(L, 5, &p);
	struct crypt_device *cd;
	struct slot_job j = {0};
	cb = progress_of(L, 5);
	cd = load(L, path, "luks.add_key");
	set_pbkdf(L, cd, given ? &p : NULL, "luks.add_key", path);
	j.cd = cd;
	j.what = 'a';
	j.slot = slot < 0 ? CRYPT_ANY_SLOT : slot;
	if (slot_run(L, cb, "luks.add_key", &j, crypt_get_pbkdf_type(cd) ? crypt_get_pbkdf_type(cd)->type : NULL,
	             old, olen, new, nlen) != LUA_OK) {
		/* the callback raised: the slot the worker added goes again */
		if (j.r >= 0)
			crypt_keyslot_destroy(cd, j.r);
		crypt_free(cd);
		return lua_error(L);
	}
	if ((r = j.r) == -EPERM)
		return cryptsetup_fail(L, cd, "luks.add_key", path, EPERM, "no key slot opens with this passphrase");
	if (r < 0)
		return cryptsetup_fail(L, cd, "luks.add_key", path, -r, "cannot add the key slot");
	crypt_free(cd);
	lua_pushinteger(L, r);
	return 1;
}

/* core.luks_change_key(path, old, new, opts) -> slot: the slot that opens
 * with old now opens with new only (cryptsetup luksChangeKey). */
static int l_change_key(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	size_t olen, nlen;
	const unsigned char *old = key_bytes(L, 2, &olen), *new = key_bytes(L, 3, &nlen);
	struct crypt_pbkdf_type p;
	int given = pbkdf_of(L, 4, &p), r, cb;
	struct crypt_device *cd;
	struct slot_job j = {0};
	cb = progress_of(L, 4);
	cd = load(L, path, "luks.change_key");
	set_pbkdf(L, cd, given ? &p : NULL, "luks.change_key", path);
	j.cd = cd;
	j.what = 'c';
	/* a raising callback: the change, made by then, stands (the old passphrase no longer opens it) */
	if (slot_run(L, cb, "luks.change_key", &j, crypt_get_pbkdf_type(cd) ? crypt_get_pbkdf_type(cd)->type : NULL,
	             old, olen, new, nlen) != LUA_OK) {
		crypt_free(cd);
		return lua_error(L);
	}
	if ((r = j.r) == -EPERM)
		return cryptsetup_fail(L, cd, "luks.change_key", path, EPERM, "no key slot opens with this passphrase");
	if (r < 0)
		return cryptsetup_fail(L, cd, "luks.change_key", path, -r, "cannot change the key slot");
	crypt_free(cd);
	lua_pushinteger(L, r);
	return 1;
}

/* core.luks_remove_key(path, passphrase[, opts]) -> slot: the slot that
 * opens with it is destroyed (cryptsetup luksRemoveKey). */
static int l_remove_key(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	size_t len;
	const unsigned char *k = key_bytes(L, 2, &len);
	int cb = progress_of(L, 3), slot, r;
	struct crypt_device *cd = load(L, path, "luks.remove_key");
	struct slot_job j = {0};
	j.cd = cd;
	j.what = 'r';
	/* a raising callback: nothing is destroyed (the check ran, nothing more) */
	if (slot_run(L, cb, "luks.remove_key", &j, NULL, k, len, NULL, 0) != LUA_OK) {
		crypt_free(cd);
		return lua_error(L);
	}
	if ((slot = j.r) == -EPERM)
		return cryptsetup_fail(L, cd, "luks.remove_key", path, EPERM, "no key slot opens with this passphrase");
	if (slot < 0)
		return cryptsetup_fail(L, cd, "luks.remove_key", path, -slot, "cannot check the passphrase");
	if ((r = crypt_keyslot_destroy(cd, slot)) < 0)
		return cryptsetup_fail(L, cd, "luks.remove_key", path, -r, "cannot destroy the key slot");
	crypt_free(cd);
	lua_pushinteger(L, slot);
	return 1;
}

/* core.luks_kill_slot(path, slot) (cryptsetup luksKillSlot, no passphrase asked). */
static int l_kill_slot(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	int slot = (int)luaL_checkinteger(L, 2), r;
	struct crypt_device *cd = load(L, path, "luks.kill_slot");
	if ((r = crypt_keyslot_destroy(cd, slot)) < 0)
		return cryptsetup_fail(L, cd, "luks.kill_slot", path, -r, "cannot destroy the key slot");
	crypt_free(cd);
	return 0;
}

/*
 * core.luks_unlock(path, how, key) -> volume key (a Key), {cipher, mode,
 * uuid, sector_size, data_offset, iv_offset, integrity?, options = {the
 * header's persistent crypt flags}}: what a crypt table of the volume
 * needs. how is "passphrase" (the key slot's PBKDF runs) or "volume_key"
 * (checked against the header, then handed back). A header with
 * requirements (an unfinished reencryption: two segments, two keys) is
 * refused: one crypt table cannot map it.
 */
static int l_unlock(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1), *how = luaL_checkstring(L, 2);
	size_t len, size;
	const unsigned char *k = key_bytes(L, 3, &len);
	struct crypt_device *cd = load(L, path, "luks.unlock");
	struct key *vk;
	uint32_t req = 0, act = 0;
	int r;
	static const struct {
		uint32_t flag;
		const char *option;
	} flags[] = {
		{CRYPT_ACTIVATE_ALLOW_DISCARDS, "allow_discards"},
		{CRYPT_ACTIVATE_SAME_CPU_CRYPT, "same_cpu_crypt"},
		{CRYPT_ACTIVATE_SUBMIT_FROM_CRYPT_CPUS, "submit_from_crypt_cpus"},
		{CRYPT_ACTIVATE_NO_READ_WORKQUEUE, "no_read_workqueue"},
		{CRYPT_ACTIVATE_NO_WRITE_WORKQUEUE, "no_write_workqueue"},
	};
	if (crypt_persistent_flags_get(cd, CRYPT_FLAGS_REQUIREMENTS, &req) == 0 && req)
		return cryptsetup_fail(L, cd, "luks.unlock", path, EINVAL, "the header has requirements (an unfinished "
		            "reencryption, or newer features) that one crypt table cannot meet");
	if (crypt_persistent_flags_get(cd, CRYPT_FLAGS_ACTIVATION, &act) < 0)
		act = 0;
	if (strcmp(how, "volume_key") == 0) {
		if ((r = crypt_volume_key_verify(cd, (const char *)k, len)) < 0)
			return cryptsetup_fail(L, cd, "luks.unlock", path, r == -EPERM ? EPERM : -r,
			            "the volume key does not match the header");
		lua_pushvalue(L, 3);
	} else {
		size = (size_t)crypt_get_volume_key_size(cd);
		vk = key_push(L, "luks");
		if (key_grow(vk, size) < 0)
			return cryptsetup_fail(L, cd, "luks.unlock", path, errno, "no locked memory for the volume key");
		r = crypt_volume_key_get(cd, CRYPT_ANY_SLOT, (char *)vk->bytes, &size, (const char *)k, len);
		if (r < 0) {
			key_release(vk);
			return cryptsetup_fail(L, cd, "luks.unlock", path, r == -EPERM ? EPERM : -r,
			            r == -EPERM ? "no key slot opens with this passphrase" : "cannot unlock the volume key");
		}
		vk->size = size;
	}
	lua_createtable(L, 0, 7);
	set_string(L, "cipher", crypt_get_cipher(cd));
	set_string(L, "mode", crypt_get_cipher_mode(cd));
	set_string(L, "uuid", crypt_get_uuid(cd));
	set_int(L, "sector_size", crypt_get_sector_size(cd));
	set_int(L, "data_offset", (lua_Integer)crypt_get_data_offset(cd));
	set_int(L, "iv_offset", (lua_Integer)crypt_get_iv_offset(cd));
	{
		struct crypt_params_integrity ip;
		size_t i;
		int n = 0;
		if (crypt_get_integrity_info(cd, &ip) == 0 && ip.integrity)
			set_string(L, "integrity", ip.integrity);
		lua_newtable(L);
		for (i = 0; i < sizeof flags / sizeof *flags; i++)
			if (act & flags[i].flag) {
				lua_pushstring(L, flags[i].option);
				lua_rawseti(L, -2, ++n);
			}
		lua_setfield(L, -2, "options");
	}
	crypt_free(cd);
	return 2;
}

/* core.luks_header_backup(path, file): the header and key slots, to a new
 * file (cryptsetup luksHeaderBackup). */
static int l_header_backup(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1), *file = luaL_checkstring(L, 2);
	struct crypt_device *cd = load(L, path, "luks.header_backup");
	int r = crypt_header_backup(cd, CRYPT_LUKS, file);
	if (r < 0)
		return cryptsetup_fail(L, cd, "luks.header_backup", path, -r, "cannot write the header backup");
	crypt_free(cd);
	return 0;
}

/* core.luks_header_restore(path, file): the device's header replaced by
 * the backup's (cryptsetup luksHeaderRestore). */
static int l_header_restore(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1), *file = luaL_checkstring(L, 2);
	struct crypt_device *cd = NULL;
	int r;
	cryptsetup_log_reset();
	if ((r = crypt_init(&cd, path)) < 0)
		return cryptsetup_fail(L, NULL, "luks.header_restore", path, -r, "cannot open the device");
	cryptsetup_log_to(cd);
	if ((r = crypt_header_restore(cd, CRYPT_LUKS, file)) < 0)
		return cryptsetup_fail(L, cd, "luks.header_restore", path, -r, "cannot restore the header");
	crypt_free(cd);
	return 0;
}

void luks_open(lua_State *L)
{
	static const luaL_Reg core[] = {
		{"luks_format", l_format},
		{"luks_open", l_open},
		{"cryptsetup_close", l_close},
		{"luks_is", l_is},
		{"luks_info", l_info},
		{"luks_add_key", l_add_key},
		{"luks_change_key", l_change_key},
		{"luks_remove_key", l_remove_key},
		{"luks_kill_slot", l_kill_slot},
		{"luks_header_backup", l_header_backup},
		{"luks_unlock", l_unlock},
		{"luks_header_restore", l_header_restore},
		{NULL, NULL}
	};
	/* what libcryptsetup logs before a context has its own callback */
	crypt_set_log_callback(NULL, on_log, NULL);
	luaL_setfuncs(L, core, 0);
}
