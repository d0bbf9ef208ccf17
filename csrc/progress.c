/* Progress of long work: ticks to a Lua callback, and work (libcryptsetup's
 * key derivation) run in a worker thread while the Lua thread ticks. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/keyctl.h>

#include "internal.h"

#define TICK_MS 100
#define WORKER_STACK (1024 * 1024)

/* The tick's table, built and handed over inside a protected call (building
 * it may raise: out of memory) so that nothing unwinds past a running worker. */
struct tick {
	const char *op, *phase, *unit, *what;
	lua_Integer done, total;	/* total < 0: unknown (nil) */
	int finished;
};

static int tick_call(lua_State *L)
{
	const struct tick *t = lua_touserdata(L, 2);
	lua_settop(L, 1);
	lua_createtable(L, 0, 7);
	lua_pushstring(L, t->op);
	lua_setfield(L, -2, "op");
	lua_pushstring(L, t->phase);
	lua_setfield(L, -2, "phase");
	lua_pushinteger(L, t->done);
	lua_setfield(L, -2, "done");
	if (t->total >= 0) {
		lua_pushinteger(L, t->total);
		lua_setfield(L, -2, "total");
	}
	lua_pushstring(L, t->unit);
	lua_setfield(L, -2, "unit");
	if (t->what) {
		lua_pushstring(L, t->what);
		lua_setfield(L, -2, "what");
	}
	if (t->finished) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "finished");
	}
	lua_call(L, 1, 0);
	return 0;
}

int progress_tick(lua_State *L, int cb, const char *op, const char *phase, const char *what, lua_Integer done,
                  lua_Integer total, const char *unit, int finished)
{
	struct tick t = {op, phase, unit, what, done, total, finished};
	if (!lua_checkstack(L, 3))
		return LUA_OK;	/* no room: a tick is skipped, not the work */
	cb = lua_absindex(L, cb);
	lua_pushcfunction(L, tick_call);
	lua_pushvalue(L, cb);
	lua_pushlightuserdata(L, &t);
	return lua_pcall(L, 2, 0, 0);
}

static lua_Integer ms_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (lua_Integer)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

struct job {
	void (*fn)(void *);
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
};

/* The operation whose work runs in a worker that holds libcryptsetup and
 * libdevmapper (NULL otherwise): core.c refuses every call into them meanwhile. */
static const char *busy_op;

const char *progress_busy(void)
{
	return busy_op;
}

static void *worker(void *p)
{
	struct job *j = p;
	j->fn(j->arg);
	/* libcryptsetup puts a LUKS2 volume key on its way to the kernel in the
	 * thread keyring: the worker's goes now, not when the kernel reaps it */
	syscall(SYS_keyctl, KEYCTL_CLEAR, KEY_SPEC_THREAD_KEYRING);
	pthread_mutex_lock(&j->mu);
	j->done = 1;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

/*
 * The worker's stack is locked, undumpable memory of our own (with a guard
 * page below it), wiped once the worker is joined: what libcryptsetup left
 * on it (passphrase and key material in its frames) never reaches swap, a
 * core dump, or glibc's cache of thread stacks.
 */
static int start(pthread_t *t, struct job *j, void **mem, size_t *len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	pthread_attr_t attr;
	sigset_t all, old;
	int rc;
	*len = WORKER_STACK + page;
	if (!(*mem = secure_alloc(len)))
		return errno;
	mprotect(*mem, page, PROT_NONE);
	pthread_attr_init(&attr);
	pthread_attr_setstack(&attr, (char *)*mem + page, *len - page);
	/* every signal blocked in the worker: they reach the Lua thread, whose
	 * hook (dmlua's) then raises in the next tick's callback */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(t, &attr, worker, j);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc) {
		mprotect(*mem, page, PROT_READ | PROT_WRITE);
		secure_free(*mem, *len);
	}
	return rc;
}

int progress_run(lua_State *L, int cb, const char *op, const char *phase, const char *what, lua_Integer total,
                 int exclusive, void (*fn)(void *), void *arg)
{
	struct job j = {fn, arg, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
	pthread_condattr_t ca;
	struct timespec t0, until;
	pthread_t t;
	void *mem;
	size_t len, page = (size_t)sysconf(_SC_PAGESIZE);
	int status;
	if (!cb || lua_isnoneornil(L, cb)) {
		fn(arg);
		return LUA_OK;
	}
	cb = lua_absindex(L, cb);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((status = progress_tick(L, cb, op, phase, what, 0, total, "ms", 0)) != LUA_OK)
		return status;	/* nothing started */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j.cv, &ca);
	pthread_condattr_destroy(&ca);
	if (start(&t, &j, &mem, &len) != 0) {
		/* no thread: the work runs here, without ticks */
		pthread_cond_destroy(&j.cv);
		fn(arg);
		return progress_tick(L, cb, op, phase, what, ms_since(&t0), total, "ms", 1);
	}
	if (exclusive)
		busy_op = op;
	pthread_mutex_lock(&j.mu);
	while (!j.done) {
		/* the next tick 100 ms from now: a slow callback is not called
		 * back to back to catch up */
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += TICK_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (!j.done && pthread_cond_timedwait(&j.cv, &j.mu, &until) != ETIMEDOUT)
			;
		if (j.done || status != LUA_OK)
			continue;	/* after a raising callback: only wait */
		pthread_mutex_unlock(&j.mu);
		status = progress_tick(L, cb, op, phase, what, ms_since(&t0), total, "ms", 0);
		pthread_mutex_lock(&j.mu);
	}
	pthread_mutex_unlock(&j.mu);
	pthread_join(t, NULL);
	if (exclusive)
		busy_op = NULL;
	pthread_cond_destroy(&j.cv);
	mprotect(mem, page, PROT_READ | PROT_WRITE);
	secure_free(mem, len);
	if (status == LUA_OK)
		status = progress_tick(L, cb, op, phase, what, ms_since(&t0), total, "ms", 1);
	return status;
}
