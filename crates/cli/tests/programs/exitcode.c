/* One traced write of the exit code, a marker, then exits with it.
 * Usage: exitcode FILE CODE */
#include <stdint.h>
#include "../../../../include/mmiotrace.h"
#include "common.h"

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	volatile unsigned char *bar = map_file(argv[1], 4096);
	int code = atoi(argv[2]);
	mmiotrace_mark("about to exit");
	*(volatile uint16_t *)(bar + 2) = (uint16_t)code;
	munmap((void *)bar, 4096);
	return code;
}
