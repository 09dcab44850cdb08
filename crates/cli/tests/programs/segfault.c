/* Makes two traced accesses, then dereferences a null pointer: the genuine
 * segfault must kill it as it would untraced. Usage: segfault FILE */
#include <stdint.h>
#include "common.h"

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	volatile unsigned char *bar = map_file(argv[1], 4096);
	*(volatile uint32_t *)(bar + 0x10) = 0xc0ffee;
	uint32_t v = *(volatile uint32_t *)(bar + 0x10);
	printf("read %#x\n", v);
	fflush(stdout);
	*(volatile int *)(uintptr_t)(v & 0) = 1;
	return 0;
}
