/* Threads that come and go. Thread i writes the 64-bit values
 * (i << 32 | k), k = 0..PER-1, at offset (i % 512) * 8 of FILE.
 * Usage: churn MODE FILE TOTAL PER
 *   short : TOTAL short-lived threads, at most 4 alive at a time.
 *   wide  : TOTAL threads alive at once: each waits until all have started
 *           before it makes its first access. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include "common.h"

static volatile uint64_t *dev;
static long per;
static pthread_barrier_t all_started;
static int wide;

static void *worker(void *arg)
{
	uint64_t i = (uint64_t)(uintptr_t)arg;
	if (wide)
		pthread_barrier_wait(&all_started);
	for (long k = 0; k < per; k++)
		dev[i % 512] = i << 32 | (uint64_t)k;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: churn short|wide FILE TOTAL PER\n");
		return 2;
	}
	wide = strcmp(argv[1], "wide") == 0;
	long total = atol(argv[3]);
	per = atol(argv[4]);
	dev = (volatile uint64_t *)map_file(argv[2], 4096);
	long batch = wide ? total : 4;
	pthread_t *threads = calloc((size_t)batch, sizeof *threads);
	if (wide)
		pthread_barrier_init(&all_started, NULL, (unsigned)total);
	for (long first = 0; first < total; first += batch) {
		long n = total - first < batch ? total - first : batch;
		for (long j = 0; j < n; j++)
			if (pthread_create(&threads[j], NULL, worker, (void *)(uintptr_t)(first + j)) != 0) {
				perror("pthread_create");
				return 2;
			}
		for (long j = 0; j < n; j++)
			pthread_join(threads[j], NULL);
	}
	printf("done %ld\n", total);
	return 0;
}
