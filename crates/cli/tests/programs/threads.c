/* T threads × N iterations on one shared traced page. Iteration k of thread t
 * writes value(t, k) with width 1 << (k % 4) at t*64 + (k % 4)*8, then reads it
 * back. Usage: threads FILE [THREADS [ITERATIONS]] */
#include <pthread.h>
#include <stdint.h>
#include "common.h"

static volatile unsigned char *bar;
static long iterations = 50000;

static uint64_t value(uint64_t t, uint64_t k)
{
	uint64_t x = (t + 1) * 0x9e3779b97f4a7c15ull ^ (k + 1) * 0xd1b54a32d192ed03ull;
	return x ^ (x >> 29);
}

static void *worker(void *arg)
{
	uint64_t t = (uint64_t)(uintptr_t)arg;
	uint64_t mismatches = 0;
	for (long k = 0; k < iterations; k++) {
		unsigned w = (unsigned)(k % 4);
		volatile unsigned char *p = bar + t * 64 + w * 8;
		uint64_t v = value(t, (uint64_t)k);
		switch (w) {
		case 0: *(volatile uint8_t *)p = (uint8_t)v; mismatches += *(volatile uint8_t *)p != (uint8_t)v; break;
		case 1: *(volatile uint16_t *)p = (uint16_t)v; mismatches += *(volatile uint16_t *)p != (uint16_t)v; break;
		case 2: *(volatile uint32_t *)p = (uint32_t)v; mismatches += *(volatile uint32_t *)p != (uint32_t)v; break;
		case 3: *(volatile uint64_t *)p = v; mismatches += *(volatile uint64_t *)p != v; break;
		}
	}
	return (void *)(uintptr_t)mismatches;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: threads FILE [THREADS [ITERATIONS]]\n");
		return 2;
	}
	long threads = argc > 2 ? atol(argv[2]) : 8;
	if (argc > 3)
		iterations = atol(argv[3]);
	if (threads < 1 || threads > 64)
		return 2;
	bar = map_file(argv[1], 4096);
	pthread_t tids[64];
	for (long t = 0; t < threads; t++)
		pthread_create(&tids[t], NULL, worker, (void *)(uintptr_t)t);
	uint64_t mismatches = 0;
	for (long t = 0; t < threads; t++) {
		void *ret;
		pthread_join(tids[t], &ret);
		mismatches += (uint64_t)(uintptr_t)ret;
	}
	printf("mismatches %llu\n", (unsigned long long)mismatches);
	return mismatches != 0;
}
