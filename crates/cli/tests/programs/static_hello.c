/* Built with -static: LD_PRELOAD cannot reach it. Creates FILE if given, so
 * that a test can tell whether it ran. Usage: static_hello [FILE] */
#include <stdio.h>

int main(int argc, char **argv)
{
	if (argc > 1) {
		FILE *ran = fopen(argv[1], "w");
		if (ran)
			fclose(ran);
	}
	puts("static hello");
	return 0;
}
