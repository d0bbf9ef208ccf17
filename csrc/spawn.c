/* Running the sandbox's VM: a child that never outlives us, and signals
 * passed on to the command inside it instead of killing the VM. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

static const int passed[] = {SIGINT, SIGTERM, SIGHUP};

static volatile sig_atomic_t child, notify_fd = -1, signals_seen, timed_out;

/* The first signal goes to the guest as its number on a line; a second
 * one, like the timeout, ends the VM at once. Only async-signal-safe calls. */
static void on_signal(int sig)
{
	if (sig == SIGALRM) {
		timed_out = 1;
		kill(child, SIGKILL);
	} else if (signals_seen++ == 0 && notify_fd >= 0) {
		char line[3] = {(char)('0' + sig / 10), (char)('0' + sig % 10), '\n'};
		if (write(notify_fd, line, sizeof line) < 0) /* could not pass it on: end it instead */
			kill(child, SIGKILL);
	} else
		kill(child, SIGKILL);
}

/*
 * core.spawn(argv, {notify = path of a FIFO the guest reads, timeout = seconds})
 *   -> status, how ("exit" | "signal" | "timeout")
 * Runs argv (searched in PATH) with stdin from /dev/null, in its own
 * process group (so a terminal's ^C reaches only us), killed if we die.
 * While it runs, SIGINT, SIGTERM and SIGHUP are written to `notify`; the
 * caller's own handlers are put back afterwards.
 */
static int l_spawn(lua_State *L)
{
	size_t i, n;
	const char **argv;
	const char *notify = NULL;
	lua_Integer timeout;
	struct sigaction sa, old[sizeof passed / sizeof *passed], old_alarm;
	sigset_t block, saved;
	pid_t pid, parent = getpid();
	int status = 0, fd = -1;

	luaL_checktype(L, 1, LUA_TTABLE);
	n = lua_rawlen(L, 1);
	if (n == 0)
		return raise_error(L, "spawn", NULL, EINVAL, "argv is empty");
	argv = lua_newuserdatauv(L, (n + 1) * sizeof *argv, 0);
	for (i = 0; i < n; i++) {
		lua_rawgeti(L, 1, (lua_Integer)i + 1);
		argv[i] = luaL_checkstring(L, -1);
		lua_pop(L, 1); /* still referenced by the argv table */
	}
	argv[n] = NULL;
	if (lua_type(L, 2) == LUA_TTABLE && lua_getfield(L, 2, "notify") == LUA_TSTRING)
		notify = lua_tostring(L, -1);
	timeout = opt_int_field(L, 2, "timeout", 0);
	if (notify && (fd = open(notify, O_RDWR | O_NONBLOCK | O_CLOEXEC)) < 0)
		return raise_error(L, "spawn", notify, errno, "cannot open");

	/* Handlers go in before the fork, with the signals held until the
	 * child's number is known. */
	sigemptyset(&block);
	for (i = 0; i < sizeof passed / sizeof *passed; i++)
		sigaddset(&block, passed[i]);
	sigaddset(&block, SIGALRM);
	sigprocmask(SIG_BLOCK, &block, &saved);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: waitpid wakes up */
	sigfillset(&sa.sa_mask);
	signals_seen = timed_out = 0;
	notify_fd = fd;
	for (i = 0; i < sizeof passed / sizeof *passed; i++) {
		sigaction(passed[i], NULL, &old[i]);
		if (old[i].sa_handler != SIG_IGN) /* nohup stays nohup */
			sigaction(passed[i], &sa, NULL);
	}
	sigaction(SIGALRM, &sa, &old_alarm);

	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent) /* we died before prctl took */
			_exit(127);
		if (null > 0) {
			dup2(null, 0);
			close(null);
		}
		for (i = 0; i < sizeof passed / sizeof *passed; i++)
			signal(passed[i], old[i].sa_handler == SIG_IGN ? SIG_IGN : SIG_DFL);
		signal(SIGTTOU, SIG_IGN); /* a background group may write to the terminal */
		sigprocmask(SIG_SETMASK, &saved, NULL);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (pid > 0) {
		siginfo_t info;
		child = pid;
		if (timeout > 0)
			alarm((unsigned)timeout);
		sigprocmask(SIG_SETMASK, &saved, NULL);
		/* Wait for the end without reaping: until the signals are held
		 * again, a handler may still kill this pid, so it must not be
		 * free for reuse. */
		while (waitid(P_PID, pid, &info, WEXITED | WNOWAIT) < 0 && errno == EINTR)
			;
		sigprocmask(SIG_BLOCK, &block, NULL);
		if (timeout > 0)
			alarm(0);
		waitpid(pid, &status, 0);
	}
	{
		int err = errno;
		sigprocmask(SIG_BLOCK, &block, NULL);
		for (i = 0; i < sizeof passed / sizeof *passed; i++)
			sigaction(passed[i], &old[i], NULL);
		sigaction(SIGALRM, &old_alarm, NULL);
		notify_fd = -1;
		child = 0;
		sigprocmask(SIG_SETMASK, &saved, NULL);
		if (fd >= 0)
			close(fd);
		if (pid < 0)
			return raise_error(L, "spawn", argv[0], err, "cannot fork");
	}
	if (WIFEXITED(status)) {
		lua_pushinteger(L, WEXITSTATUS(status));
		lua_pushliteral(L, "exit");
	} else if (timed_out) {
		lua_pushinteger(L, 124);
		lua_pushliteral(L, "timeout");
	} else {
		lua_pushinteger(L, 128 + WTERMSIG(status));
		lua_pushliteral(L, "signal");
	}
	return 2;
}

void spawn_open(lua_State *L)
{
	lua_pushcfunction(L, l_spawn);
	lua_setfield(L, -2, "spawn");
}
