/* The floor for bench/run.lua: the same device-mapper work in plain C over
 * libdevmapper, with nothing around it. Each operation runs as a batch over
 * n devices (bench-f1 ... bench-fn), timed on its own; before each batch a
 * failed open of /bench-marker-<op> marks the place for `strace`.
 *
 *   floor ops <n> <dev>        create, table, suspend+resume, reload, remove
 *   floor stack <n> <dev>      apply (create n), re-apply (info + table of n),
 *                              teardown (remove n); linear slices of <dev>
 *   floor crypt <n> <dev>      the same with crypt slices (hex keys)
 *
 * Prints "<op> <nanoseconds per device>" lines. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libdevmapper.h>

static const char *dev;
static int use_crypt;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void mark(const char *op)
{
	char p[64];
	snprintf(p, sizeof p, "/bench-marker-%s", op);
	close(open(p, O_RDONLY));
}

/* The table of device i: an 8-sector slice of dev at offset 8 * i (+ shift). */
static void add_table(struct dm_task *dmt, int i, int shift)
{
	char params[512];
	if (use_crypt)
		snprintf(params, sizeof params, "aes-xts-plain64 "
		         "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
		         " 0 %s %d", dev, 8 * i + shift);
	else
		snprintf(params, sizeof params, "%s %d", dev, 8 * i + shift);
	dm_task_add_target(dmt, 0, 8, use_crypt ? "crypt" : "linear", params);
	if (use_crypt)
		dm_task_secure_data(dmt);
}

static int run(int type, int i, int table)
{
	char name[32];
	struct dm_task *dmt = dm_task_create(type);
	uint32_t cookie = 0;
	int ok, udev = type == DM_DEVICE_CREATE || type == DM_DEVICE_RESUME || type == DM_DEVICE_REMOVE;
	if (!dmt)
		return 0;
	snprintf(name, sizeof name, "bench-f%d", i);
	dm_task_set_name(dmt, name);
	if (table)
		add_table(dmt, i, table > 1 ? 8 * 1024 : 0);
	if (type == DM_DEVICE_REMOVE)
		dm_task_retry_remove(dmt);
	if (udev)
		dm_task_set_cookie(dmt, &cookie, 0);
	ok = dm_task_run(dmt);
	if (udev)
		dm_udev_wait(cookie);
	if (ok && type == DM_DEVICE_TABLE) {
		uint64_t start, length;
		char *ttype, *params;
		dm_get_next_target(dmt, NULL, &start, &length, &ttype, &params);
	}
	if (ok && type == DM_DEVICE_INFO) {
		struct dm_info info;
		ok = dm_task_get_info(dmt, &info) && info.exists;
	}
	dm_task_destroy(dmt);
	return ok;
}

/* Runs step(i) for i = 1..n as one timed batch. */
#define BATCH(label, step)                                                   \
	do {                                                                 \
		double t0;                                                   \
		mark(label);                                                 \
		t0 = now();                                                  \
		for (i = 1; i <= n; i++)                                     \
			if (!(step))                                         \
				return fprintf(stderr, "%s %d failed\n", label, i), 1; \
		printf("%s %.0f\n", label, (now() - t0) / n);                \
	} while (0)

int main(int argc, char **argv)
{
	int i, n;
	if (argc != 4)
		return fprintf(stderr, "usage: floor ops|stack|crypt <n> <dev>\n"), 2;
	n = atoi(argv[2]);
	dev = argv[3];
	use_crypt = strcmp(argv[1], "crypt") == 0;
	if (access("/run/udev/control", F_OK) != 0) {
		setenv("DM_DISABLE_UDEV", "1", 0);
		dm_udev_set_sync_support(0);
	}
	{	/* libdevmapper's first task checks the driver version: not part of any operation */
		char v[64];
		dm_driver_version(v, sizeof v);
	}
	if (strcmp(argv[1], "ops") == 0) {
		BATCH("create", run(DM_DEVICE_CREATE, i, 1));
		BATCH("table", run(DM_DEVICE_TABLE, i, 0));
		BATCH("suspend+resume", run(DM_DEVICE_SUSPEND, i, 0) && run(DM_DEVICE_RESUME, i, 0));
		BATCH("reload", run(DM_DEVICE_RELOAD, i, 2) && run(DM_DEVICE_SUSPEND, i, 0) &&
		                run(DM_DEVICE_RESUME, i, 0));
		BATCH("remove", run(DM_DEVICE_REMOVE, i, 0));
	} else {
		BATCH("apply", run(DM_DEVICE_CREATE, i, 1));
		BATCH("re-apply", run(DM_DEVICE_INFO, i, 0) && run(DM_DEVICE_TABLE, i, 0));
		BATCH("teardown", run(DM_DEVICE_REMOVE, i, 0));
	}
	mark("end");
	return 0;
}
