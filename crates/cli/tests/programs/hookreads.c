/* T threads each read the 32-bit registers at offsets 0 and 8, N times
 * each, and count the reads that were not 0 (the file holds zeros, so only
 * a hook makes them so). Prints "nonzero0=A nonzero8=B". Usage:
 * hookreads FILE THREADS ITERATIONS */
#include <pthread.h>
#include <stdint.h>
#include "common.h"

static volatile unsigned char *bar;
static long iterations;
static long nonzero[2];

static void *worker(void *arg)
{
	(void)arg;
	long mine[2] = {0, 0};
	for (long k = 0; k < iterations; k++) {
		mine[0] += *(volatile uint32_t *)bar != 0;
		mine[1] += *(volatile uint32_t *)(bar + 8) != 0;
	}
	__atomic_fetch_add(&nonzero[0], mine[0], __ATOMIC_RELAXED);
	__atomic_fetch_add(&nonzero[1], mine[1], __ATOMIC_RELAXED);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	bar = map_file(argv[1], 4096);
	int threads = atoi(argv[2]);
	iterations = atol(argv[3]);
	pthread_t tids[64];
	if (threads < 1 || threads > 64)
		return 2;
	for (int t = 0; t < threads; t++)
		if (pthread_create(&tids[t], NULL, worker, NULL) != 0)
			return 3;
	for (int t = 0; t < threads; t++)
		pthread_join(tids[t], NULL);
	printf("nonzero0=%ld nonzero8=%ld\n", nonzero[0], nonzero[1]);
	return 0;
}
