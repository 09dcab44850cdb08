/* Outlives its recorder (issue 13). Writes register 0 once, writes its pid
 * into READY, waits until GO exists (unless GO is "-"), then writes i to
 * register 0 and reads it back N times, and prints the sum of what it read.
 * Untraced, it prints the same line.
 * Usage: gone BAR N READY GO */
#include <stdint.h>
#include <string.h>
#include "common.h"

int main(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	volatile unsigned char *bar = map_file(argv[1], 4096);
	uint64_t n = strtoull(argv[2], NULL, 10);
	const char *ready = argv[3], *go = argv[4];
	*(volatile uint64_t *)bar = 1;

	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", ready);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return 2;
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
	if (rename(tmp, ready) != 0)
		return 2;

	if (strcmp(go, "-") != 0)
		while (access(go, F_OK) != 0)
			usleep(1000);
	uint64_t sum = 0;
	for (uint64_t i = 0; i < n; i++) {
		*(volatile uint64_t *)bar = i;
		sum += *(volatile uint64_t *)bar;
	}
	printf("sum %llu\n", (unsigned long long)sum);
	return 0;
}
