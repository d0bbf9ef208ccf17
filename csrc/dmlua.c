/*
 * dmlua: a Lua 5.4 interpreter with lua-devmapper built in. Its command line
 * is lua5.4's, read in the same order as Lua's own lua.c reads it, plus
 * --trace, --dry-run, --sandbox, --udev, --help and --version.
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

#if defined(DMLUA_READLINE)
#include <readline/readline.h>
#include <readline/history.h>
#endif

static void usage_text(FILE *f)
{
	fprintf(f,
	        "usage: %s [options] [script [args]]\n"
	        "Available options are:\n"
	        "  -e stat   execute string 'stat'\n"
	        "  -i        enter interactive mode after executing 'script'\n"
	        "  -l mod    require library 'mod' into global 'mod'\n"
	        "  -l g=mod  require library 'mod' into global 'g'\n"
	        "  -v        show version information\n"
	        "  -E        ignore environment variables\n"
	        "  -W        turn warnings on\n"
	        "  --        stop handling options\n"
	        "  -         stop handling options and execute stdin\n"
	        "lua-devmapper's own:\n"
	        "  --trace   print a transcript: each kernel operation as the dmsetup, losetup or\n"
	        "            keyctl command it stands for, a bash script that replays (--trace=FILE)\n"
	        "  --dry-run perform no kernel operation, print what would be done\n"
	        "  --json    print plans and errors as JSON\n"
	        "  --sandbox run in a throwaway VM with a real device-mapper kernel\n"
	        "  --udev    with --sandbox: run systemd-udevd in the VM, as on a real machine\n"
	        "  --help    show this and exit\n"
	        "  --version show the versions of Lua, lua-devmapper and the kernel's driver, and exit\n",
	        progname);
	fflush(f);
}

/* Why the command line was refused, then the usage, as lua5.4 does. */
static void print_usage(const char *bad)
{
	if (bad[1] == 'e' || bad[1] == 'l')
		fprintf(stderr, "%s: '%s' needs argument\n", progname, bad);
	else
		fprintf(stderr, "%s: unrecognized option '%s'\n", progname, bad);
	usage_text(stderr);
}

/* An error line; pname is NULL in interactive mode. */
static void l_message(const char *pname, const char *msg)
{
	if (pname)
		fprintf(stderr, "%s: ", pname);
	fprintf(stderr, "%s\n", msg);
	fflush(stderr);
}

static int json_mode;	/* --json: errors as JSON objects, one per line */

static int json_error(lua_State *L);

/*
 * On a terminal, long work (key derivation, LUKS key slots, a snapshot
 * merge) draws one progress line on stderr: devmapper.progress's default
 * becomes its draw function as the module loads. Elsewhere (a pipe, a
 * file, an embedder; DMLUA_PROGRESS=0) the module calls nothing.
 */
static int progress_tty;
static const char progress_default[] =
	"local pre = package.preload\n"
	"local load = pre['devmapper.progress']\n"
	"if load then pre['devmapper.progress'] = function(...)\n"
	"  local m = load(...)\n"
	"  m.default = m.draw\n"
	"  return m\n"
	"end end\n";

/* An error ends the line a tick drew (the callback raised, or a signal). */
static void progress_clear(lua_State *L)
{
	int top = lua_gettop(L);
	if (!progress_tty || !lua_checkstack(L, 4))
		return;
	lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	if (lua_getfield(L, -1, "devmapper.progress") == LUA_TTABLE && lua_getfield(L, -1, "drawn") == LUA_TBOOLEAN &&
	    lua_toboolean(L, -1)) {
		fputs("\r\033[K", stderr);
		lua_pushboolean(L, 0);
		lua_setfield(L, -3, "drawn");
	}
	lua_settop(L, top);
}

static int report(lua_State *L, int status)
{
	if (status != LUA_OK) {
		const char *msg;
		progress_clear(L);
		msg = lua_tostring(L, -1);
		/* --json: a load error (syntax, no such file) is a string yet */
		if (json_mode && msg && msg[0] != '{') {
			lua_pushcfunction(L, json_error);
			lua_insert(L, -2);
			if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
				lua_pop(L, 1);
				lua_pushstring(L, msg);
			}
		}
		l_message(json_mode ? NULL : progname, lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	return status;
}

/* --json: the error (at 1) as {"error": {...}}, made by devmapper.json. */
static int json_error(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	int traceback = msg != NULL && luaL_getmetafield(L, 1, "__tostring") == LUA_TNIL && lua_getstack(L, 1, &(lua_Debug){0});
	lua_settop(L, 1);
	lua_getglobal(L, "require");
	lua_pushliteral(L, "devmapper.json");
	if (lua_pcall(L, 1, 1, 0) != LUA_OK)
		return 0;
	lua_getfield(L, -1, "error");
	lua_pushvalue(L, 1);
	if (traceback)
		luaL_traceback(L, L, NULL, 1);
	else
		lua_pushnil(L);
	if (lua_pcall(L, 2, 1, 0) != LUA_OK || !lua_isstring(L, -1))
		return 0;
	return 1;
}

/* A string error gets a traceback; an object with __tostring is its own
 * message (the module's error objects say what failed and why). */
static int msghandler(lua_State *L)
{
	const char *msg;
	if (json_mode && json_error(L))
		return 1;
	lua_settop(L, 1);
	msg = lua_tostring(L, 1);
	if (msg == NULL) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			return 1;
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
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

static void print_version(void)
{
	printf("%s (lua-devmapper)\n", LUA_COPYRIGHT);
	fflush(stdout);
}

static int dochunk(lua_State *L, int status)
{
	if (status == LUA_OK)
		status = docall(L, 0, 0);
	return report(L, status);
}

static int dostring(lua_State *L, const char *s, const char *name)
{
	return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l mod or -l g=mod: global g (or mod) = require(mod) */
static int dolibrary(lua_State *L, const char *spec)
{
	const char *eq = strchr(spec, '=');
	int status;
	lua_getglobal(L, "require");
	lua_pushstring(L, eq ? eq + 1 : spec);
	status = docall(L, 1, 1);
	if (status == LUA_OK) {
		lua_pushlstring(L, spec, eq ? (size_t)(eq - spec) : strlen(spec));
		lua_insert(L, -2);
		lua_setglobal(L, lua_tostring(L, -2));
		lua_pop(L, 1);
	}
	return report(L, status);
}

/* arg = {[-n] = the interpreter and its options, [0] = the script, [1..] = its arguments} */
static void createargtable(lua_State *L, char **argv, int argc, int script)
{
	int i;
	if (script == argc)	/* no script: arg[0] is the interpreter */
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
	if (lua_getglobal(L, "arg") != LUA_TTABLE)
		luaL_error(L, "'arg' is not a table");
	n = (int)luaL_len(L, -1);
	luaL_checkstack(L, n + 3, "too many arguments to script");
	for (i = 1; i <= n; i++)
		lua_rawgeti(L, -i, i);
	lua_remove(L, -i);
	return n;
}

/* The script at argv[0]; "-" is stdin, unless "--" came just before it. */
static int handle_script(lua_State *L, char **argv)
{
	const char *fname = argv[0];
	int status;
	if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0)
		fname = NULL;
	status = luaL_loadfile(L, fname);
	if (status == LUA_OK) {
		int n = pushargs(L);
		status = docall(L, n, LUA_MULTRET);
	}
	return report(L, status);
}

/* The interactive loop: a line is tried as an expression ("return <line>;"),
 * then as statements, reading more lines while the chunk is incomplete. */
#define MAXINPUT 512

#if defined(DMLUA_READLINE)
static int readline_into(char **b, const char *prompt) { return (*b = readline(prompt)) != NULL; }
static void saveline(const char *line) { add_history(line); }
static void freeline(char *b) { free(b); }
#else
static int readline_into(char **b, const char *prompt)
{
	fputs(prompt, stdout);
	fflush(stdout);
	return fgets(*b, MAXINPUT, stdin) != NULL;
}
static void saveline(const char *line) { (void)line; }
static void freeline(char *b) { (void)b; }
#endif

static const char *get_prompt(lua_State *L, int firstline)
{
	if (lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2") == LUA_TNIL)
		return firstline ? "> " : ">> ";
	{
		const char *p = luaL_tolstring(L, -1, NULL);
		lua_remove(L, -2);
		return p;
	}
}

/* A syntax error that ends at "<eof>": the chunk goes on in the next line. */
static int incomplete(lua_State *L, int status)
{
	static const char mark[] = "<eof>";
	size_t len, mlen = sizeof mark - 1;
	const char *msg;
	if (status != LUA_ERRSYNTAX)
		return 0;
	msg = lua_tolstring(L, -1, &len);
	if (len < mlen || strcmp(msg + len - mlen, mark) != 0)
		return 0;
	lua_pop(L, 1);
	return 1;
}

static int pushline(lua_State *L, int firstline)
{
	char buffer[MAXINPUT];
	char *b = buffer;
	size_t len;
	const char *prompt = get_prompt(L, firstline);
	int got = readline_into(&b, prompt);
	lua_pop(L, 1);
	if (!got)
		return 0;
	len = strlen(b);
	if (len > 0 && b[len - 1] == '\n')
		b[--len] = '\0';
	if (firstline && b[0] == '=')	/* "=x" is "return x", as in Lua 5.2 */
		lua_pushfstring(L, "return %s", b + 1);
	else
		lua_pushlstring(L, b, len);
	freeline(b);
	return 1;
}

static int addreturn(lua_State *L)
{
	const char *line = lua_tostring(L, -1);
	const char *expr = lua_pushfstring(L, "return %s;", line);
	int status = luaL_loadbuffer(L, expr, strlen(expr), "=stdin");
	if (status == LUA_OK) {
		lua_remove(L, -2);
		if (line[0] != '\0')
			saveline(line);
	} else
		lua_pop(L, 2);
	return status;
}

static int multiline(lua_State *L)
{
	for (;;) {
		size_t len;
		const char *chunk = lua_tolstring(L, 1, &len);
		int status = luaL_loadbuffer(L, chunk, len, "=stdin");
		if (!incomplete(L, status)) {
			saveline(chunk);
			return status;
		}
		if (!pushline(L, 0)) {	/* the input ended inside the chunk: its syntax error */
			saveline(chunk);
			return luaL_loadbuffer(L, chunk, len, "=stdin");
		}
		lua_pushliteral(L, "\n");
		lua_insert(L, -2);
		lua_concat(L, 3);
	}
}

/* One statement or expression, compiled; -1 at the end of input. */
static int loadline(lua_State *L)
{
	int status;
	lua_settop(L, 0);
	if (!pushline(L, 1))
		return -1;
	if ((status = addreturn(L)) != LUA_OK)
		status = multiline(L);
	lua_remove(L, 1);
	return status;
}

static void print_results(lua_State *L)
{
	int n = lua_gettop(L);
	if (n == 0)
		return;
	luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
	lua_getglobal(L, "print");
	lua_insert(L, 1);
	if (lua_pcall(L, n, 0, 0) != LUA_OK)
		l_message(progname, lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1)));
}

static void repl(lua_State *L)
{
	const char *name = progname;
	int status;
	progname = NULL;	/* errors in interactive mode carry no program name */
	while ((status = loadline(L)) != -1) {
		if (status == LUA_OK)
			status = docall(L, 0, LUA_MULTRET);
		if (status == LUA_OK)
			print_results(L);
		else
			report(L, status);
	}
	lua_settop(L, 0);
	fputc('\n', stdout);
	fflush(stdout);
	progname = name;
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
	return dostring(L, init, name);
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

/* --version: Lua's, the module's and the kernel driver's (or why it is not there). */
static int show_versions(lua_State *L)
{
	print_version();
	lua_getglobal(L, "require");
	lua_pushliteral(L, "devmapper");
	if (report(L, docall(L, 1, 1)) != LUA_OK)
		return 1;
	lua_getfield(L, -1, "_VERSION");
	printf("%s\n", lua_tostring(L, -1));
	lua_pop(L, 1);
	lua_getfield(L, -1, "version");
	if (docall(L, 0, 1) == LUA_OK)
		printf("device-mapper driver %s\n", lua_tostring(L, -1));
	else
		printf("device-mapper driver: not available here (%s)\n", lua_tostring(L, -1));
	fflush(stdout);
	return 0;
}

enum { HAS_ERROR = 1, HAS_I = 2, HAS_V = 4, HAS_E = 8, HAS_CAPITAL_E = 16, HAS_W = 32,
       HAS_SANDBOX = 64, HAS_UDEV = 128, HAS_HELP = 256, HAS_VERSION = 512 };

/* The options, as lua5.4 reads them, plus dmlua's long ones. Returns the
 * flags; *first is the script's index (argc if none), or the bad option's. */
static int collectargs(char **argv, int *first)
{
	int args = 0, i;
	for (i = 1; argv[i] != NULL; i++) {
		const char *a = argv[i];
		*first = i;
		if (a[0] != '-')
			return args;
		if (strcmp(a, "--trace") == 0)
			setenv("DMLUA_TRACE", "1", 1);
		else if (strncmp(a, "--trace=", 8) == 0 && a[8] != '\0')
			setenv("DMLUA_TRACE", a + 8, 1);
		else if (strcmp(a, "--dry-run") == 0)
			setenv("DMLUA_DRY_RUN", "1", 1);
		else if (strcmp(a, "--json") == 0) {
			setenv("DMLUA_JSON", "1", 1);
			json_mode = 1;
		}
		else if (strcmp(a, "--sandbox") == 0)
			args |= HAS_SANDBOX;
		else if (strcmp(a, "--udev") == 0)
			args |= HAS_UDEV;
		else if (strcmp(a, "--help") == 0)
			return args | HAS_HELP;
		else if (strcmp(a, "--version") == 0)
			return args | HAS_VERSION;
		else switch (a[1]) {
		case '-':	/* "--" ends the options; "--x" is unknown */
			if (a[2] != '\0')
				return HAS_ERROR;
			*first = i + 1;
			return args;
		case '\0':	/* "-": the script is stdin */
			return args;
		case 'E':
			if (a[2] != '\0')
				return HAS_ERROR;
			args |= HAS_CAPITAL_E;
			break;
		case 'W':
			if (a[2] != '\0')
				return HAS_ERROR;
			args |= HAS_W;
			break;
		case 'i':
			if (a[2] != '\0')
				return HAS_ERROR;
			args |= HAS_I | HAS_V;
			break;
		case 'v':
			if (a[2] != '\0')
				return HAS_ERROR;
			args |= HAS_V;
			break;
		case 'e':
			args |= HAS_E;
			/* fall through - both need an argument */
		case 'l':
			if (a[2] == '\0') {
				i++;
				if (argv[i] == NULL || argv[i][0] == '-')
					return HAS_ERROR;	/* *first is the option */
			}
			break;
		default:
			return HAS_ERROR;
		}
	}
	*first = i;
	return args;
}

/* -e, -l and -W, in the order given. */
static int runargs(lua_State *L, char **argv, int n)
{
	int i;
	for (i = 1; i < n; i++) {
		int option = argv[i][1];
		if (option == 'e' || option == 'l') {
			const char *extra = argv[i][2] ? argv[i] + 2 : argv[++i];
			int status = option == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra);
			if (status != LUA_OK)
				return 0;
		} else if (option == 'W' && argv[i][2] == '\0')
			lua_warning(L, "@on", 0);
	}
	return 1;
}

static int pmain(lua_State *L)
{
	int argc = (int)lua_tointeger(L, 1);
	char **argv = lua_touserdata(L, 2);
	int script = argc;
	int args = argc > 0 ? collectargs(argv, &script) : 0;
	luaL_checkversion(L);
	if (args == HAS_ERROR) {
		print_usage(argv[script]);
		return 0;
	}
	if (args & HAS_HELP) {
		usage_text(stdout);
		lua_pushboolean(L, 1);
		return 1;
	}
	if ((args & HAS_UDEV) && !(args & HAS_SANDBOX)) {
		fprintf(stderr, "%s: '--udev' needs '--sandbox'\n", progname);
		return 0;
	}
	if ((args & HAS_V) && !(args & HAS_SANDBOX))
		print_version();
	if (args & HAS_CAPITAL_E) {
		lua_pushboolean(L, 1);
		lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
	}
	luaL_openlibs(L);
	devmapper_preload(L);
	createargtable(L, argv, argc, script);
	lua_gc(L, LUA_GCRESTART);
	lua_gc(L, LUA_GCGEN, 0, 0);
	if (args & HAS_VERSION) {
		lua_pushboolean(L, show_versions(L) == 0);
		return 1;
	}
	if (args & HAS_SANDBOX) {
		if (args & HAS_UDEV)
			setenv("DMLUA_SANDBOX_UDEV", "1", 1);
		/* the guest's stderr is its console, a terminal: it draws only if ours is one */
		setenv("DMLUA_PROGRESS", isatty(STDERR_FILENO) ? "1" : "0", 0);
		lua_pushinteger(L, sandbox(L, argv, argc, script));
		return 1;
	}
	trapping = 1;
	if (isatty(STDERR_FILENO) && !(getenv("DMLUA_PROGRESS") && strcmp(getenv("DMLUA_PROGRESS"), "0") == 0)) {
		progress_tty = 1;
		if (luaL_dostring(L, progress_default) != LUA_OK)
			lua_pop(L, 1);
	}
	if (!(args & HAS_CAPITAL_E) && handle_luainit(L) != LUA_OK)
		return 0;
	if (!runargs(L, argv, script))
		return 0;
	if (script < argc && handle_script(L, argv + script) != LUA_OK)
		return 0;
	if (args & HAS_I)
		repl(L);
	else if (script == argc && !(args & (HAS_E | HAS_V))) {
		if (isatty(0)) {
			print_version();
			repl(L);
		} else
			dochunk(L, luaL_loadfile(L, NULL));	/* stdin; its error is reported, not the exit status */
	}
	lua_pushboolean(L, 1);
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
	if (status == LUA_OK && lua_isinteger(L, -1))	/* --sandbox: the guest's status */
		code = (int)lua_tointeger(L, -1);
	else if (status == LUA_OK)
		code = lua_toboolean(L, -1) ? 0 : 1;
	else
		report(L, status);
	lua_close(L);
	return code;
}
