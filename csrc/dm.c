/* Device-mapper devices through libdevmapper tasks. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <libdevmapper.h>

#include "internal.h"

/* libdevmapper's error log for the current task: kept for the error object,
 * never printed. */
static char last_log[512];

static void capture_log(int level, const char *file, int line, int dm_errno,
                        const char *f, ...)
{
	va_list ap;
	(void)file, (void)line, (void)dm_errno;
	if ((level & 7) > 3) /* only _LOG_ERR and worse */
		return;
	va_start(ap, f);
	vsnprintf(last_log, sizeof last_log, f, ap);
	va_end(ap);
}

/*
 * The kernel answers a bad table with EINVAL and logs its reason; read the
 * kernel log records written since the operation began (/dev/kmsg, when
 * readable) and keep the device-mapper ones.
 */
static int kmsg_fd = -1;

static void kmsg_mark(void)
{
	if (kmsg_fd < 0)
		kmsg_fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (kmsg_fd >= 0)
		lseek(kmsg_fd, 0, SEEK_END);
}

static void kmsg_reason(char *out, size_t size)
{
	char rec[1024];
	ssize_t n;
	out[0] = '\0';
	if (kmsg_fd < 0)
		return;
	while ((n = read(kmsg_fd, rec, sizeof rec - 1)) > 0 || (n < 0 && errno == EPIPE)) {
		char *msg, *nl;
		if (n <= 0)
			continue; /* EPIPE: records were overwritten, go on */
		rec[n] = '\0';
		if (!(msg = strchr(rec, ';')))
			continue;
		msg++;
		if ((nl = strchr(msg, '\n')))
			*nl = '\0';
		/* the first records name the cause; later ones the ioctl's failure */
		if (strncmp(msg, "device-mapper:", 14) == 0 && !strstr(out, msg)) {
			size_t len = strlen(out);
			snprintf(out + len, size - len, "%s%s", len ? "; " : "", msg);
		}
	}
}

static int udev_checked;

/* Synchronise with udev when it runs; otherwise make /dev/mapper nodes here
 * (Debian's library trusts udev to make them, which never happens then). */
static void setup_udev(void)
{
	if (udev_checked)
		return;
	udev_checked = 1;
	if (access("/run/udev/control", F_OK) != 0) {
		setenv("DM_DISABLE_UDEV", "1", 0);
		dm_udev_set_sync_support(0);
	}
}

/* How long an operation waits for udev to finish with its events before it
 * goes on without udev (seconds; core.dm_udev_timeout). */
static double udev_timeout = 30;
/* What the last operation's wait gave up on; handed to Lua once. */
static char udev_note[256];

/*
 * Waits for udev to finish with the cookie's events, at most udev_timeout
 * seconds. Past that the cookie is completed on udev's behalf (as `dmsetup
 * udevcomplete` would), libdevmapper checks the /dev/mapper node itself,
 * and the note says what was stuck.
 */
static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void udev_wait(uint32_t cookie, const char *op, const char *name)
{
	struct timespec nap = {0, 1000000};
	double deadline = now() + udev_timeout;
	int ready = 0;
	if (!cookie || !dm_udev_get_sync_support()) {
		dm_udev_wait(cookie); /* no udev: makes the nodes, never waits */
		return;
	}
	while (dm_udev_wait_immediate(cookie, &ready) && !ready) {
		if (now() >= deadline) {
			snprintf(udev_note, sizeof udev_note,
			         "%s '%s': udev did not finish with its events within %g s "
			         "(is systemd-udevd running and handling events?); "
			         "went on without it", op, name ? name : "", udev_timeout);
			dm_udev_complete(cookie);
			dm_udev_wait(cookie);
			return;
		}
		nanosleep(&nap, NULL);
		if (nap.tv_nsec < 64000000) /* 1 ms, doubling up to 64 ms */
			nap.tv_nsec *= 2;
	}
}

/* Return value of an operation that waits for udev: the note, if any. */
static int udev_result(lua_State *L)
{
	if (!udev_note[0])
		return 0;
	lua_pushstring(L, udev_note);
	udev_note[0] = '\0';
	return 1;
}

/*
 * Whether the task being run holds a secret (a hex key in its table). Its
 * text passes through libc's string functions in libdevmapper, which leave
 * pieces of it in the vector registers, and from there (the dynamic linker
 * saves them on the stack at a first call through a PLT entry) on the
 * stack: a core dump found slices of keys there. After such a task the
 * stack below and the registers are wiped.
 */
static int secret_task;

static void task_destroy(struct dm_task *dmt)
{
	dm_task_destroy(dmt);
	if (secret_task) {
		secret_task = 0;
		secure_scrub();
	}
}

static struct dm_task *new_task(lua_State *L, int type, const char *op, const char *name)
{
	struct dm_task *dmt;
	setup_udev();
	last_log[0] = '\0';
	udev_note[0] = '\0';
	if (!(dmt = dm_task_create(type))) /* e.g. no device-mapper in this kernel */
		raise_error(L, op, name, 0, "%s", last_log[0] ? last_log : "cannot create task");
	if (name && !dm_task_set_name(dmt, name)) {
		task_destroy(dmt);
		raise_error(L, op, name, EINVAL, "bad name");
	}
	return dmt;
}

/* Destroys the task and raises with libdevmapper's and the kernel's words. */
static int task_error(lua_State *L, struct dm_task *dmt, const char *op, const char *name)
{
	char reason[512];
	int err = dm_task_get_errno(dmt);
	task_destroy(dmt);
	kmsg_reason(reason, sizeof reason);
	if (!err)
		err = EINVAL;
	if (reason[0])
		return raise_error(L, op, name, err, "%s%skernel: %s", last_log,
		                   last_log[0] ? "; " : "", reason);
	return raise_error(L, op, name, err, "%s", last_log[0] ? last_log : "failed");
}

/* Runs the task, waiting for udev (or making nodes) when it changes nodes. */
static void run(lua_State *L, struct dm_task *dmt, const char *op, const char *name, int udev)
{
	uint32_t cookie = 0;
	int ok;
	if (udev && !dm_task_set_cookie(dmt, &cookie, 0))
		task_error(L, dmt, op, name);
	kmsg_mark();
	ok = dm_task_run(dmt);
	keyring_release_thread();
	if (udev)
		udev_wait(cookie, op, name);
	if (!ok)
		task_error(L, dmt, op, name);
}

static void simple(lua_State *L, int type, const char *op, int udev)
{
	const char *name = luaL_checkstring(L, 1);
	struct dm_task *dmt = new_task(L, type, op, name);
	run(L, dmt, op, name, udev);
	task_destroy(dmt);
}

/*
 * Adds the targets of a Lua array {{start=, length=, type=, params=, key=}}.
 * A Key in `key` replaces the token "<key>" in params with its hex form,
 * built in locked memory and wiped; the task is then marked secure.
 */
static void add_targets(lua_State *L, int idx, struct dm_task *dmt, const char *op, const char *name)
{
	lua_Integer i, n;
	luaL_checktype(L, idx, LUA_TTABLE);
	n = luaL_len(L, idx);
	for (i = 1; i <= n; i++) {
		lua_Integer start, length;
		const char *type, *params, *tok;
		size_t tlen = 0, plen = 0;
		int ok = 1;
		lua_geti(L, idx, i);
		start = opt_int_field(L, -1, "start", -1);
		length = opt_int_field(L, -1, "length", -1);
		lua_getfield(L, -1, "type");
		lua_getfield(L, -2, "params");
		type = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &tlen) : NULL;
		params = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &plen) : NULL;
		if (!type || !params || start < 0 || length < 0) {
			task_destroy(dmt);
			raise_error(L, op, name, EINVAL, "target %d needs start, length, type and params", (int)i);
		}
		/* C would end the text at a NUL: the kernel would get less than was written */
		if (strlen(type) != tlen || strlen(params) != plen) {
			task_destroy(dmt);
			raise_error(L, op, name, EINVAL, "target %d holds a NUL byte", (int)i);
		}
		if (opt_bool_field(L, -3, "secure", 0)) {
			dm_task_secure_data(dmt);
			secret_task = 1;
		}
		lua_getfield(L, -3, "key");
		if (!lua_isnil(L, -1) && (tok = strstr(params, "<key>"))) {
			size_t ksize, len, j;
			const unsigned char *k = key_bytes(L, -1, &ksize);
			char *buf;
			len = plen - 5 + 2 * ksize + 1;
			if (!(buf = secure_alloc(&len))) {
				task_destroy(dmt);
				raise_error(L, op, name, errno, "cannot map memory for key");
			}
			dm_task_secure_data(dmt);
			secret_task = 1;
			memcpy(buf, params, tok - params);
			for (j = 0; j < ksize; j++)
				sprintf(buf + (tok - params) + 2 * j, "%02x", k[j]);
			strcpy(buf + (tok - params) + 2 * ksize, tok + 5);
			ok = dm_task_add_target(dmt, start, length, type, buf);
			secure_free(buf, len);
		} else
			ok = dm_task_add_target(dmt, start, length, type, params);
		lua_pop(L, 4);
		if (!ok) {
			task_destroy(dmt);
			raise_error(L, op, name, ENOMEM, "cannot add target %d", (int)i);
		}
	}
}

/* Raises for a closed key now, before a task exists that it would leak. */
static void check_keys(lua_State *L, int idx)
{
	lua_Integer i, n;
	luaL_checktype(L, idx, LUA_TTABLE);
	n = luaL_len(L, idx);
	for (i = 1; i <= n; i++) {
		int top = lua_gettop(L);
		size_t size;
		if (lua_geti(L, idx, i) == LUA_TTABLE && lua_getfield(L, -1, "key") != LUA_TNIL)
			key_bytes(L, -1, &size);
		lua_settop(L, top);
	}
}

/* core.dm_create(name, targets, {uuid=, readonly=}): create, load, resume. */
static int l_create(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct dm_task *dmt;
	check_keys(L, 2);
	dmt = new_task(L, DM_DEVICE_CREATE, "create", name);
	const char *uuid = NULL;
	if (lua_type(L, 3) == LUA_TTABLE && lua_getfield(L, 3, "uuid") == LUA_TSTRING)
		uuid = lua_tostring(L, -1);
	if (uuid && !dm_task_set_uuid(dmt, uuid)) {
		task_destroy(dmt);
		raise_error(L, "create", name, EINVAL, "bad uuid");
	}
	if (opt_bool_field(L, 3, "readonly", 0))
		dm_task_set_ro(dmt);
	add_targets(L, 2, dmt, "create", name);
	/* libdevmapper creates, loads and resumes; if the load or the resume
	 * fails it removes the device again, so nothing is left half-built.
	 * Without a table there is no disk yet, so no uevent to wait for. */
	run(L, dmt, "create", name, luaL_len(L, 2) > 0);
	task_destroy(dmt);
	return udev_result(L);
}

/* core.dm_load(name, targets, {readonly=}): into the inactive slot. */
static int l_load(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct dm_task *dmt;
	check_keys(L, 2);
	dmt = new_task(L, DM_DEVICE_RELOAD, "load", name);
	if (opt_bool_field(L, 3, "readonly", 0))
		dm_task_set_ro(dmt);
	add_targets(L, 2, dmt, "load", name);
	run(L, dmt, "load", name, 0);
	task_destroy(dmt);
	return 0;
}

static int l_clear(lua_State *L) { simple(L, DM_DEVICE_CLEAR, "clear", 0); return 0; }
static int l_resume(lua_State *L) { simple(L, DM_DEVICE_RESUME, "resume", 1); return udev_result(L); }

/* core.dm_suspend(name, {noflush=, nolockfs=}) */
static int l_suspend(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct dm_task *dmt = new_task(L, DM_DEVICE_SUSPEND, "suspend", name);
	if (opt_bool_field(L, 2, "noflush", 0))
		dm_task_no_flush(dmt);
	if (opt_bool_field(L, 2, "nolockfs", 0))
		dm_task_skip_lockfs(dmt);
	run(L, dmt, "suspend", name, 0);
	task_destroy(dmt);
	return 0;
}

/* core.dm_remove(name, {retry=true, deferred=false}) */
static int l_remove(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct dm_task *dmt = new_task(L, DM_DEVICE_REMOVE, "remove", name);
	if (opt_bool_field(L, 2, "retry", 1))
		dm_task_retry_remove(dmt);
	if (opt_bool_field(L, 2, "deferred", 0))
		dm_task_deferred_remove(dmt);
	run(L, dmt, "remove", name, 1);
	task_destroy(dmt);
	return udev_result(L);
}

/* core.dm_rename(name, newname) */
static int l_rename(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const char *newname = luaL_checkstring(L, 2);
	struct dm_task *dmt = new_task(L, DM_DEVICE_RENAME, "rename", name);
	if (!dm_task_set_newname(dmt, newname)) {
		task_destroy(dmt);
		raise_error(L, "rename", name, EINVAL, "bad new name");
	}
	run(L, dmt, "rename", name, 1);
	task_destroy(dmt);
	return udev_result(L);
}

/* core.dm_message(name, sector, message) -> response or nil */
static int l_message(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	lua_Integer sector = luaL_checkinteger(L, 2);
	const char *msg = luaL_checkstring(L, 3);
	struct dm_task *dmt = new_task(L, DM_DEVICE_TARGET_MSG, "message", name);
	const char *resp;
	if (!dm_task_set_sector(dmt, sector) || !dm_task_set_message(dmt, msg)) {
		task_destroy(dmt);
		raise_error(L, "message", name, ENOMEM, "cannot set message");
	}
	run(L, dmt, "message", name, 0);
	resp = dm_task_get_message_response(dmt);
	if (resp && *resp)
		lua_pushstring(L, resp);
	else
		lua_pushnil(L);
	task_destroy(dmt);
	return 1;
}

/*
 * Which word of a target type's parameters holds a secret (dm-crypt's key),
 * as the Lua layer's declarations say: fn(type) -> word number, or nil.
 * 0 for none; a failed answer is none too (the task must not leak).
 */
static int secret_word(lua_State *L, int fn, const char *type)
{
	int n = 0;
	if (!fn)
		return 0;
	lua_pushvalue(L, fn);
	lua_pushstring(L, type);
	if (lua_pcall(L, 1, 1, 0) == LUA_OK)
		n = (int)lua_tointeger(L, -1);
	lua_pop(L, 1);
	return n;
}

/* Word n (from 1) of params, and its end; NULL when there is no such word. */
static char *nth_word(char *params, int n, char **end)
{
	char *w = params + strspn(params, " ");
	while (*w && --n > 0) {
		w += strcspn(w, " ");
		w += strspn(w, " ");
	}
	if (!*w)
		return NULL;
	*end = w + strcspn(w, " ");
	return w;
}

/*
 * A secret word read back: a keyring reference (":size:type:desc") or "-"
 * stays as it is. With keys set, a hex key comes back as a Key in `key` and
 * "<key>" in params, so that the table can be loaded again (snapshots copy
 * tables, rollbacks restore them) without a key byte in a Lua string;
 * otherwise it is shown as zeros, as dmsetup shows it.
 */
static void push_secret(lua_State *L, char *params, int n, int keys)
{
	char *end, *w = nth_word(params, n, &end);
	if (!w || *w == ':' || (*w == '-' && end == w + 1))
		return;
	if (keys) {
		key_push_hex(L, w, (size_t)(end - w), "table", "table");
		lua_setfield(L, -2, "key");
		lua_pushlstring(L, params, (size_t)(w - params));
		lua_pushstring(L, "<key>");
		lua_pushstring(L, end);
		lua_concat(L, 3);
		lua_setfield(L, -2, "params");
	} else
		memset(w, '0', (size_t)(end - w));
}

/* Pushes the targets of a TABLE or STATUS task as {{start, length, type, params}};
 * secret words as push_secret says (fn: the stack index of secret_word's function). */
static void push_targets(lua_State *L, struct dm_task *dmt, int fn, int keys)
{
	void *next = NULL;
	uint64_t start, length;
	char *type, *params;
	int i = 0;
	lua_newtable(L);
	do {
		int n;
		next = dm_get_next_target(dmt, next, &start, &length, &type, &params);
		if (!type)
			continue;
		lua_createtable(L, 0, 5);
		lua_pushinteger(L, start);
		lua_setfield(L, -2, "start");
		lua_pushinteger(L, length);
		lua_setfield(L, -2, "length");
		lua_pushstring(L, type);
		lua_setfield(L, -2, "type");
		if (params && (n = secret_word(L, fn, type)) > 0) {
			secret_task |= params[0] != '\0';	/* a table's key went through libc: scrub after */
			push_secret(L, params, n, keys);
		}
		lua_getfield(L, -1, "params");
		if (lua_isnil(L, -1)) {
			lua_pushstring(L, params ? params : "");
			lua_setfield(L, -3, "params");
		}
		lua_pop(L, 1);
		lua_seti(L, -2, ++i);
	} while (next);
}

static int read_targets(lua_State *L, int type, const char *op)
{
	const char *name = luaL_checkstring(L, 1);
	struct dm_task *dmt;
	int keys = type == DM_DEVICE_TABLE && opt_bool_field(L, 2, "keys", 0), fn = 0;
	if (lua_type(L, 2) == LUA_TTABLE && lua_getfield(L, 2, "secret") == LUA_TFUNCTION)
		fn = lua_gettop(L);
	dmt = new_task(L, type, op, name);
	if (opt_bool_field(L, 2, "inactive", 0))
		dm_task_query_inactive_table(dmt);
	/* Secrets pass through this buffer: have libdevmapper wipe it. */
	dm_task_secure_data(dmt);
	run(L, dmt, op, name, 0);
	push_targets(L, dmt, fn, keys);
	task_destroy(dmt);
	return 1;
}

/* core.dm_table(name, {inactive=, keys=, secret = function(type) -> word number}) */
static int l_table(lua_State *L) { return read_targets(L, DM_DEVICE_TABLE, "table"); }
/* core.dm_status(name, {inactive=, secret=}) */
static int l_status(lua_State *L) { return read_targets(L, DM_DEVICE_STATUS, "status"); }

static void set_bool(lua_State *L, const char *k, int v)
{
	lua_pushboolean(L, v);
	lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, k);
}

/* core.dm_info(name) -> info table, or nil when there is no such device */
static int l_info(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct dm_task *dmt = new_task(L, DM_DEVICE_INFO, "info", name);
	struct dm_info i;
	const char *uuid;
	run(L, dmt, "info", name, 0);
	if (!dm_task_get_info(dmt, &i) || !i.exists) {
		task_destroy(dmt);
		lua_pushnil(L);
		return 1;
	}
	lua_createtable(L, 0, 14);
	lua_pushstring(L, name);
	lua_setfield(L, -2, "name");
	uuid = dm_task_get_uuid(dmt);
	if (uuid && *uuid) {
		lua_pushstring(L, uuid);
		lua_setfield(L, -2, "uuid");
	}
	set_bool(L, "exists", 1);
	set_bool(L, "suspended", i.suspended);
	set_bool(L, "readonly", i.read_only);
	set_bool(L, "live_table", i.live_table);
	set_bool(L, "inactive_table", i.inactive_table);
	set_bool(L, "deferred_remove", i.deferred_remove);
	set_int(L, "open_count", i.open_count);
	set_int(L, "event_nr", i.event_nr);
	set_int(L, "major", i.major);
	set_int(L, "minor", i.minor);
	set_int(L, "target_count", i.target_count);
	task_destroy(dmt);
	return 1;
}

/* core.dm_deps(name) -> {{major=, minor=}, ...} */
static int l_deps(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct dm_task *dmt = new_task(L, DM_DEVICE_DEPS, "deps", name);
	struct dm_deps *deps;
	uint32_t i;
	run(L, dmt, "deps", name, 0);
	deps = dm_task_get_deps(dmt);
	lua_newtable(L);
	for (i = 0; deps && i < deps->count; i++) {
		lua_createtable(L, 0, 2);
		set_int(L, "major", major(deps->device[i]));
		set_int(L, "minor", minor(deps->device[i]));
		lua_seti(L, -2, i + 1);
	}
	task_destroy(dmt);
	return 1;
}

/* core.dm_list() -> {{name=, major=, minor=}, ...}, one ioctl */
static int l_list(lua_State *L)
{
	struct dm_task *dmt = new_task(L, DM_DEVICE_LIST, "list", NULL);
	struct dm_names *n;
	int i = 0;
	run(L, dmt, "list", NULL, 0);
	n = dm_task_get_names(dmt);
	lua_newtable(L);
	if (n && n->dev) {
		for (;;) {
			lua_createtable(L, 0, 3);
			lua_pushstring(L, n->name);
			lua_setfield(L, -2, "name");
			set_int(L, "major", major(n->dev));
			set_int(L, "minor", minor(n->dev));
			lua_seti(L, -2, ++i);
			if (!n->next)
				break;
			n = (struct dm_names *)((char *)n + n->next);
		}
	}
	task_destroy(dmt);
	return 1;
}

/* core.dm_version() -> driver version string, e.g. "4.47.0" */
static int l_version(lua_State *L)
{
	struct dm_task *dmt = new_task(L, DM_DEVICE_VERSION, "version", NULL);
	char v[64];
	run(L, dmt, "version", NULL, 0);
	if (!dm_task_get_driver_version(dmt, v, sizeof v))
		task_error(L, dmt, "version", NULL);
	task_destroy(dmt);
	lua_pushstring(L, v);
	return 1;
}

/* core.dm_targets() -> {name = "a.b.c", ...} */
static int l_targets(lua_State *L)
{
	struct dm_task *dmt = new_task(L, DM_DEVICE_LIST_VERSIONS, "targets", NULL);
	struct dm_versions *t, *last;
	run(L, dmt, "targets", NULL, 0);
	t = dm_task_get_versions(dmt);
	lua_newtable(L);
	do {
		last = t;
		lua_pushfstring(L, "%d.%d.%d", (int)t->version[0], (int)t->version[1], (int)t->version[2]);
		lua_setfield(L, -2, t->name);
		t = (struct dm_versions *)((char *)t + t->next);
	} while (last != t);
	task_destroy(dmt);
	return 1;
}

/* core.dm_udev() -> true when operations synchronise with udev */
static int l_udev(lua_State *L)
{
	setup_udev();
	lua_pushboolean(L, dm_udev_get_sync_support());
	return 1;
}

/* core.dm_udev_timeout([seconds]) -> the bound on each wait for udev */
static int l_udev_timeout(lua_State *L)
{
	if (!lua_isnoneornil(L, 1)) {
		double t = luaL_checknumber(L, 1);
		luaL_argcheck(L, t >= 0, 1, "must be at least 0");
		udev_timeout = t;
	}
	lua_pushnumber(L, udev_timeout);
	return 1;
}

void mapper_open(lua_State *L)
{
	static const luaL_Reg f[] = {
		{"dm_create", l_create}, {"dm_load", l_load}, {"dm_clear", l_clear},
		{"dm_suspend", l_suspend}, {"dm_resume", l_resume}, {"dm_remove", l_remove},
		{"dm_rename", l_rename}, {"dm_message", l_message}, {"dm_table", l_table},
		{"dm_status", l_status}, {"dm_info", l_info}, {"dm_deps", l_deps},
		{"dm_list", l_list}, {"dm_version", l_version}, {"dm_targets", l_targets},
		{"dm_udev", l_udev}, {"dm_udev_timeout", l_udev_timeout}, {NULL, NULL}};
	dm_log_with_errno_init(capture_log);
	luaL_setfuncs(L, f, 0);
}
