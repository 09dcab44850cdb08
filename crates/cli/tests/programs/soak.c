/* Load: worker threads hammer traced memory while another thread keeps
 * forking, exec'ing, spawning and creating threads that access it too.
 * Usage: soak FILE WORKERS PER_WORKER UNIT
 *   Worker w writes (w << 32 | k), k = 0..PER_WORKER-1, at offset w * 8.
 *   Until the workers are done, the churn thread repeats, with n counting
 *   its rounds: a forked child writes UNIT values (1 << 60 | n << 20 | k) at
 *   0x800; a fork+exec'd and a posix_spawned "soak leaf FILE KIND n UNIT"
 *   write (KIND << 60 | n << 20 | k) at 0xc00 (KIND 2 and 4); a new thread
 *   writes (3 << 60 | n << 20 | k) at 0xe00 and exits.
 *   Prints "rounds N". */
#define _GNU_SOURCE
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include "common.h"

extern char **environ;
static volatile uint64_t *dev;
static long per_worker, unit;
static atomic_int workers_left;
static const char *self, *path;

/*
 * Built with -DSOAK_PATCHABLE, every store is a 7-byte `mov [reg+disp32],
 * reg` that the runtime can patch (`record --patch`); otherwise whatever the
 * compiler makes of dev[i] = v (often too short to patch).
 */
static inline void store(long index, uint64_t value)
{
#ifdef SOAK_PATCHABLE
	__asm__ volatile("movq %1, 0x400(%0)" : : "r"(dev + index - 0x80), "r"(value) : "memory");
#else
	dev[index] = value;
#endif
}

static void write_unit(long offset, uint64_t kind, uint64_t round)
{
	for (long k = 0; k < unit; k++)
		store(offset / 8, kind << 60 | round << 20 | (uint64_t)k);
}

static void *worker(void *arg)
{
	uint64_t w = (uint64_t)(uintptr_t)arg;
	for (long k = 0; k < per_worker; k++)
		store((long)w, w << 32 | (uint64_t)k);
	atomic_fetch_sub(&workers_left, 1);
	return NULL;
}

static uint64_t thread_round;
static void *short_thread(void *arg)
{
	(void)arg;
	write_unit(0xe00, 3, thread_round);
	return NULL;
}

static int wait_ok(pid_t pid)
{
	int status;
	return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	self = argv[0];
	if (argc == 6 && strcmp(argv[1], "leaf") == 0) {
		dev = (volatile uint64_t *)map_file(argv[2], 4096);
		unit = atol(argv[5]);
		write_unit(0xc00, (uint64_t)atol(argv[3]), (uint64_t)atol(argv[4]));
		return 0;
	}
	if (argc != 5) {
		fprintf(stderr, "usage: soak FILE WORKERS PER_WORKER UNIT\n");
		return 2;
	}
	path = argv[1];
	long workers = atol(argv[2]);
	per_worker = atol(argv[3]);
	unit = atol(argv[4]);
	if (workers < 1 || workers > 256)
		return 2;
	dev = (volatile uint64_t *)map_file(path, 4096);
	atomic_store(&workers_left, (int)workers);
	pthread_t threads[256];
	for (long w = 0; w < workers; w++)
		pthread_create(&threads[w], NULL, worker, (void *)(uintptr_t)w);

	uint64_t round = 0;
	int ok = 1;
	while (atomic_load(&workers_left) > 0) {
		char kind_exec[] = "2", kind_spawn[] = "4", round_text[32], unit_text[32];
		snprintf(round_text, sizeof round_text, "%llu", (unsigned long long)round);
		snprintf(unit_text, sizeof unit_text, "%ld", unit);

		pid_t child = fork();
		if (child == 0) {
			write_unit(0x800, 1, round);
			_exit(0);
		}
		pid_t execed = fork();
		if (execed == 0) {
			execl(self, self, "leaf", path, kind_exec, round_text, unit_text, (char *)NULL);
			_exit(3);
		}
		char *spawn_argv[] = { (char *)self, "leaf", (char *)path, kind_spawn, round_text, unit_text, NULL };
		pid_t spawned;
		if (posix_spawn(&spawned, self, NULL, NULL, spawn_argv, environ) != 0)
			return 2;
		thread_round = round;
		pthread_t thread;
		pthread_create(&thread, NULL, short_thread, NULL);
		pthread_join(thread, NULL);
		ok &= wait_ok(child) & wait_ok(execed) & wait_ok(spawned);
		round++;
	}
	for (long w = 0; w < workers; w++)
		pthread_join(threads[w], NULL);
	printf("rounds %llu\n", (unsigned long long)round);
	return ok ? 0 : 1;
}
