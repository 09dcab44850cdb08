/* Writes i to register 0 and reads register 8, for i = 0, 1, 2, ... without
 * end, and after each pair stores i into PROGRESS with pwrite. The test kills
 * it. Usage: counter FILE PROGRESS */
#include <stdint.h>
#include "common.h"

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	volatile unsigned char *bar = map_file(argv[1], 4096);
	int progress = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (progress < 0)
		return 2;
	for (uint64_t i = 0;; i++) {
		*(volatile uint64_t *)bar = i;
		(void)*(volatile uint32_t *)(bar + 8);
		if (pwrite(progress, &i, sizeof i, 0) != sizeof i)
			return 3;
	}
}
