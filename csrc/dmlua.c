/*
 * dmlua: a Lua 5.4 interpreter with lua-devmapper built in. Its command line
 * is lua5.4's, plus --trace, --dry-run and --sandbox.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "devmapper.h"

static const char *progname = "dmlua";

/*
 * Signals, as lua.c does: SIGINT, SIGTERM and SIGHUP only set a hook, and
 * the hook raises a Lua error (the module's error object, op "signal") at
 * the next safe point, so scopes, <close> variables and transactions undo.
 * Never inside a critical section (a suspend window): the hook stays armed
 * until it is left. Later signals are counted but raise nothing, so that the
 * undo finishes. The exit status is then 128 + the first signal's number.
 */
static const int trapped[] = {SIGINT, SIGTERM, SIGHUP};
static lua_State *globalL;
static volatile sig_atomic_t first_signal;
static int trapping;	/* not for --sandbox: the VM's runner has its own */
static struct sigaction saved[3];

static const char *signame(int sig)
{
	return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "a signal";
}

static void lstop(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	if (devmapper_critical() > 0)
		return;
	lua_sethook(L, NULL, 0, 0);
	luaL_requiref(L, "devmapper.core", luaopen_devmapper_core, 0);
	lua_getfield(L, -1, "error");
	lua_createtable(L, 0, 5);
	lua_pushliteral(L, "signal");
	lua_setfield(L, -2, "op");
	lua_pushinteger(L, EINTR);
	lua_setfield(L, -2, "errno");
	lua_pushfstring(L, "interrupted by %s", signame(first_signal));
	lua_setfield(L, -2, "message");
	lua_pushinteger(L, first_signal);
	lua_setfield(L, -2, "signal");
	lua_call(L, 1, 0);
}

static void laction(int sig)
{
	if (first_signal)
		return;
	first_signal = sig;
	lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* While Lua code runs; a signal the caller ignores (nohup, a background
 * job) stays ignored. */
static void trap(int on)
{
	size_t i;
	for (i = 0; i < sizeof trapped / sizeof *trapped; i++) {
		if (on) {
			struct sigaction sa;
			sigaction(trapped[i], NULL, &saved[i]);
			if (saved[i].sa_handler == SIG_IGN)
				continue;
			memset(&sa, 0, sizeof sa);
			sa.sa_handler = laction;
			sa.sa_flags = SA_RESTART;
			sigemptyset(&sa.sa_mask);
			sigaction(trapped[i], &sa, NULL);
		} else
			sigaction(trapped[i], &saved[i], NULL);
	}
}

/* Whatever way the process exits (os.exit too), a signal sets the status. */
static void signal_status(void)
{
	if (first_signal) {
		fflush(NULL);
		_exit(128 + first_signal);
	}
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: %s [options] [script [args]]\n"
	        "  -e stat   execute string 'stat'\n"
	        "  -i        enter interactive mode after executing 'script'\n"
	        "  -l mod    require library 'mod' into global 'mod'\n"
	        "  -l g=mod  require library 'mod' into global 'g'\n"
	        "  -v        show version information\n"
	        "  -E        ignore environment variables\n"
	        "  -W        turn warnings on\n"
	        "  --trace   print each kernel operation as a dmsetup/losetup command\n"
	        "  --dry-run perform no kernel operation, print what would be done\n"
	        "  --sandbox run in a throwaway VM with a real device-mapper kernel\n"
	        "  --udev    with --sandbox: run systemd-udevd in the VM, as on a real machine\n"
	        "  --        stop handling options\n"
	        "  -         stop handling options and execute stdin\n",
	        progname);
}

static int msghandler(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (msg == NULL) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			msg = lua_tostring(L, -1);
		else
			msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

static int report(lua_State *L, int status)
{
	if (status != LUA_OK) {
		fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
		fflush(stderr);
		lua_pop(L, 1);
	}
	return status;
}

static int docall(lua_State *L, int narg, int nres)
{
	int base = lua_gettop(L) - narg, status;
	lua_pushcfunction(L, msghandler);
	lua_insert(L, base);
	if (trapping)
		trap(1);
	status = lua_pcall(L, narg, nres, base);
	if (trapping && !first_signal)
		trap(0);	/* after a signal, later ones stay harmless */
	lua_remove(L, base);
	return status;
}

static int dochunk(lua_State *L, int status)
{
	if (status == LUA_OK)
		status = docall(L, 0, 0);
	return report(L, status);
}

static int dorequire(lua_State *L, const char *spec)
{
	const char *eq = strchr(spec, '=');
	const char *mod = eq ? eq + 1 : spec;
	int status;
	lua_getglobal(L, "require");
	lua_pushstring(L, mod);
	status = docall(L, 1, 1);
	if (status == LUA_OK) {
		if (eq)
			lua_pushlstring(L, spec, eq - spec);
		else
			lua_pushstring(L, mod);
		lua_insert(L, -2); /* name below the module */
		lua_setglobal(L, lua_tostring(L, -2));
		lua_pop(L, 1);
	}
	return report(L, status);
}

/* arg = {[-n]=interpreter and options, [0]=script, [1..]=script args} */
static void createargtable(lua_State *L, char **argv, int argc, int script)
{
	int i;
	if (script == argc) /* no script: arg[0] is the interpreter */
		script = 0;
	lua_createtable(L, argc - script - 1, script + 1);
	for (i = 0; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i - script);
	}
	lua_setglobal(L, "arg");
}

static int pushargs(lua_State *L)
{
	int i, n;
	lua_getglobal(L, "arg");
	n = (int)luaL_len(L, -1);
	luaL_checkstack(L, n + 3, "too many arguments to script");
	for (i = 1; i <= n; i++)
		lua_rawgeti(L, -i, i);
	lua_remove(L, -i);
	return n;
}

static int runscript(lua_State *L, const char *fname)
{
	int status, n;
	if (strcmp(fname, "-") == 0)
		fname = NULL;
	status = luaL_loadfile(L, fname);
	if (status == LUA_OK) {
		n = pushargs(L);
		status = docall(L, n, LUA_MULTRET);
	}
	return report(L, status);
}

static void repl(lua_State *L)
{
	char line[4096];
	for (;;) {
		int status;
		fputs("> ", stdout);
		fflush(stdout);
		if (!fgets(line, sizeof line, stdin))
			break;
		lua_pushfstring(L, "return %s", line);
		status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin");
		lua_remove(L, -2);
		if (status != LUA_OK) {
			lua_pop(L, 1);
			status = luaL_loadbuffer(L, line, strlen(line), "=stdin");
		}
		if (status == LUA_OK)
			status = docall(L, 0, LUA_MULTRET);
		if (status == LUA_OK && lua_gettop(L) > 0) {
			lua_getglobal(L, "print");
			lua_insert(L, 1);
			if (lua_pcall(L, lua_gettop(L) - 1, 0, 0) != LUA_OK)
				report(L, LUA_ERRRUN);
		} else
			report(L, status);
		lua_settop(L, 0);
	}
	fputc('\n', stdout);
}

static int handle_luainit(lua_State *L)
{
	const char *name = "=LUA_INIT_5_4";
	const char *init = getenv(name + 1);
	if (!init) {
		name = "=LUA_INIT";
		init = getenv(name + 1);
	}
	if (!init)
		return LUA_OK;
	if (init[0] == '@')
		return dochunk(L, luaL_loadfile(L, init + 1));
	return dochunk(L, luaL_loadbuffer(L, init, strlen(init), name));
}

/* --sandbox: run this same dmlua, with the other arguments, in the VM. */
static int sandbox(lua_State *L, char **argv, int argc, int first)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	int i, j = 1, status;
	if (n < 0)
		return fprintf(stderr, "%s: cannot find own executable\n", progname), 1;
	self[n] = '\0';
	lua_getglobal(L, "require");
	lua_pushliteral(L, "devmapper.sandbox");
	if (report(L, docall(L, 1, 1)) != LUA_OK)
		return 1;
	lua_getfield(L, -1, "run");
	lua_newtable(L);
	lua_pushstring(L, self);
	lua_rawseti(L, -2, j++);
	for (i = 1; i < argc; i++)
		if (i >= first || (strcmp(argv[i], "--sandbox") != 0 && strcmp(argv[i], "--udev") != 0)) {
			lua_pushstring(L, argv[i]);
			lua_rawseti(L, -2, j++);
		}
	status = docall(L, 1, 1);
	if (report(L, status) != LUA_OK)
		return 1;
	return (int)lua_tointeger(L, -1);
}

struct opts {
	int script, interactive, version, noenv, warn, sandbox, udev, exec_stdin;
};

/* Checks the options; returns the index of the script (or argc), -1 on error. */
static int collect(char **argv, int argc, struct opts *o)
{
	int i;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-')
			return i;
		if (strcmp(a, "--") == 0)
			return i + 1;
		if (strcmp(a, "-") == 0)
			return o->exec_stdin = 1, i;
		if (strcmp(a, "--trace") == 0)
			setenv("DMLUA_TRACE", "1", 1);
		else if (strcmp(a, "--dry-run") == 0)
			setenv("DMLUA_DRY_RUN", "1", 1);
		else if (strcmp(a, "--sandbox") == 0)
			o->sandbox = 1;
		else if (strcmp(a, "--udev") == 0)
			o->udev = 1;
		else if (strcmp(a, "-i") == 0)
			o->interactive = o->version = 1;
		else if (strcmp(a, "-v") == 0)
			o->version = 1;
		else if (strcmp(a, "-E") == 0)
			o->noenv = 1;
		else if (strcmp(a, "-W") == 0)
			o->warn = 1;
		else if ((strncmp(a, "-e", 2) == 0 || strncmp(a, "-l", 2) == 0)) {
			if (a[2] == '\0' && ++i >= argc)
				return -1;
		} else
			return -1;
	}
	return i;
}

/* Runs -e and -l in order. */
static int runargs(lua_State *L, char **argv, int n)
{
	int i;
	for (i = 1; i < n; i++) {
		const char *a = argv[i], *v;
		if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l'))
			continue;
		v = a[2] ? a + 2 : argv[++i];
		if (a[1] == 'e') {
			if (dochunk(L, luaL_loadbuffer(L, v, strlen(v), "=(command line)")) != LUA_OK)
				return 0;
		} else if (dorequire(L, v) != LUA_OK)
			return 0;
	}
	return 1;
}

static int pmain(lua_State *L)
{
	int argc = (int)lua_tointeger(L, 1);
	char **argv = lua_touserdata(L, 2);
	struct opts o = {0};
	int script = collect(argv, argc, &o);
	if (script < 0) {
		usage();
		return 0;
	}
	luaL_checkversion(L);
	if (o.noenv) {
		lua_pushboolean(L, 1);
		lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
	}
	luaL_openlibs(L);
	devmapper_preload(L);
	createargtable(L, argv, argc, script);
	lua_gc(L, LUA_GCRESTART);
	lua_gc(L, LUA_GCGEN, 0, 0);
	if (o.udev && !o.sandbox) {
		fprintf(stderr, "%s: '--udev' needs '--sandbox'\n", progname);
		usage();
		return 0;
	}
	if (o.sandbox) {
		if (o.udev)
			setenv("DMLUA_SANDBOX_UDEV", "1", 1);
		lua_pushinteger(L, sandbox(L, argv, argc, script));
		return 1;
	}
	trapping = 1;
	if (o.warn)
		lua_warning(L, "@on", 0);
	if (o.version)
		printf("%s (lua-devmapper)\n", LUA_COPYRIGHT);
	if (!o.noenv && handle_luainit(L) != LUA_OK)
		return 0;
	if (!runargs(L, argv, script))
		return 0;
	if (script < argc && runscript(L, argv[script]) != LUA_OK)
		return 0;
	if (o.interactive)
		repl(L);
	else if (script == argc && !o.version && argc > 0 && !o.exec_stdin) {
		int has_e = 0, i;
		for (i = 1; i < argc; i++)
			has_e |= strncmp(argv[i], "-e", 2) == 0 || strncmp(argv[i], "-l", 2) == 0;
		if (!has_e) {
			if (isatty(0)) {
				printf("%s (lua-devmapper)\n", LUA_COPYRIGHT);
				repl(L);
			} else if (runscript(L, "-") != LUA_OK)
				return 0;
		}
	}
	lua_pushinteger(L, 0);
	return 1;
}

int main(int argc, char **argv)
{
	lua_State *L = luaL_newstate();
	int status, code = 1;
	if (argv[0] && argv[0][0])
		progname = argv[0];
	if (!L) {
		fprintf(stderr, "%s: cannot create state: not enough memory\n", progname);
		return 1;
	}
	globalL = L;
	atexit(signal_status);
	lua_gc(L, LUA_GCSTOP);
	lua_pushcfunction(L, pmain);
	lua_pushinteger(L, argc);
	lua_pushlightuserdata(L, argv);
	status = lua_pcall(L, 2, 1, 0);
	if (status == LUA_OK && lua_isinteger(L, -1))
		code = (int)lua_tointeger(L, -1);
	else
		report(L, status);
	lua_close(L);
	return code;
}
