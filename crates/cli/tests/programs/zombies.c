/* Forks N children one at a time; each writes its number to register 0 and
 * ends (with exit, or with _exit when MODE is "_exit", which runs no atexit
 * handler). The parent waits for each to end without reaping it (WNOWAIT),
 * so all N are zombies until the parent reaps them at the end (issue 13).
 * Usage: zombies BAR N MODE */
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include "common.h"

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	volatile unsigned char *bar = map_file(argv[1], 4096);
	int n = atoi(argv[2]);
	int quick = strcmp(argv[3], "_exit") == 0;
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 2;
		}
		if (pid == 0) {
			*(volatile uint32_t *)bar = (uint32_t)i;
			if (quick)
				_exit(0);
			exit(0);
		}
		siginfo_t info;
		if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) != 0) {
			perror("waitid");
			return 2;
		}
	}
	int reaped = 0;
	while (wait(NULL) > 0)
		reaped++;
	printf("reaped %d\n", reaped);
	return 0;
}
