/* The floor for bench/cycle.lua: N create + table read + remove cycles in
 * plain C over libdevmapper, with nothing else around them. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <libdevmapper.h>

static int run(int type, int with_table)
{
	struct dm_task *dmt = dm_task_create(type);
	uint32_t cookie = 0;
	int ok;
	if (!dmt)
		return 0;
	dm_task_set_name(dmt, "bench-floor");
	if (with_table)
		dm_task_add_target(dmt, 0, 8, "zero", "");
	if (type != DM_DEVICE_TABLE)
		dm_task_set_cookie(dmt, &cookie, 0);
	ok = dm_task_run(dmt);
	if (type != DM_DEVICE_TABLE)
		dm_udev_wait(cookie);
	if (ok && type == DM_DEVICE_TABLE) {
		uint64_t start, length;
		char *ttype, *params;
		dm_get_next_target(dmt, NULL, &start, &length, &ttype, &params);
	}
	dm_task_destroy(dmt);
	return ok;
}

int main(int argc, char **argv)
{
	int i, n = argc > 1 ? atoi(argv[1]) : 100;
	if (access("/run/udev/control", F_OK) != 0) {
		setenv("DM_DISABLE_UDEV", "1", 0);
		dm_udev_set_sync_support(0);
	}
	for (i = 0; i < n; i++)
		if (!run(DM_DEVICE_CREATE, 1) || !run(DM_DEVICE_RESUME, 0) ||
		    !run(DM_DEVICE_TABLE, 0) || !run(DM_DEVICE_REMOVE, 0))
			return fprintf(stderr, "cycle %d failed\n", i), 1;
	return 0;
}
