/* COUNT stores to register 0, a pause of PAUSE_MS milliseconds, COUNT more.
 * The store is a 7-byte `mov [reg+disp32], reg`, which `record --patch`
 * patches after a few faults: most stores then go through a trampoline's
 * fast path, which stamps its records with the raw TSC.
 * Usage: paced FILE COUNT PAUSE_MS */
#include <stdint.h>
#include <time.h>
#include "common.h"

__attribute__((noinline)) static void stores(volatile unsigned char *bar, uint64_t from, uint64_t count)
{
	for (uint64_t i = from; i < from + count; i++)
		__asm__ volatile("movq %1, 0x400(%0)" : : "r"(bar - 0x400), "r"(i) : "memory");
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	volatile unsigned char *bar = map_file(argv[1], 4096);
	uint64_t count = strtoull(argv[2], NULL, 0);
	long pause_ms = strtol(argv[3], NULL, 0);
	stores(bar, 0, count);
	struct timespec pause = { pause_ms / 1000, pause_ms % 1000 * 1000000L };
	nanosleep(&pause, NULL);
	stores(bar, count, count);
	return 0;
}
