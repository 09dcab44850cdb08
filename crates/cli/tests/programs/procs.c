/* Processes under the recorder: fork, exec, posix_spawn, vfork, orphans and
 * daemons. Every mode writes 32-bit values to its own offsets of FILE.
 * Usage: procs MODE FILE [ARGS]
 *   leaf FILE N OFFSET : map FILE and write 0..N-1 at OFFSET (the program
 *       the other modes exec).
 *   fork FILE : parent and child write 1000 values each (offsets 0x10 and
 *       0x8); prints PARENT and CHILD pids.
 *   exec FILE : writes once at 0, then execs "leaf FILE 5 0x100" (same pid).
 *   execchain FILE N : writes N at 0x40, then execs "execchain FILE N-1"
 *       until N is 0: N + 1 images in one process.
 *   spawn FILE : posix_spawn, vfork+exec and fork+exec of leaf
 *       (offsets 0x200, 0x300, 0x400); prints their pids.
 *   orphan FILE : forks a child and exits at once; the child waits 300 ms,
 *       writes 100 values at 0x500, forks a grandchild that writes 100 at
 *       0x600, and execs leaf (100 values at 0x700).
 *   daemon FILE GO DONE : forks a child that writes 10 values at 0x800 and
 *       exits at once; the child waits for the file GO to exist, writes
 *       5000 values at 0x900, creates DONE and exits.
 *   nofollow FILE : writes at 0; a forked child writes through the
 *       inherited mapping at 0x8 and maps and writes its own at 0xc; a
 *       fork+exec'd leaf writes at 0xa00; then the parent checks the file
 *       and execs leaf itself (offset 0xb00). */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include "common.h"

extern char **environ;
static const char *self;

static volatile uint32_t *map32(const char *path)
{
	return (volatile uint32_t *)map_file(path, 4096);
}

static void write_values(volatile uint32_t *dev, long offset, long n)
{
	for (long i = 0; i < n; i++)
		dev[offset / 4] = (uint32_t)i;
}

static int leaf(const char *path, long n, long offset)
{
	write_values(map32(path), offset, n);
	return 0;
}

static void exec_leaf(const char *path, const char *n, const char *offset)
{
	execl(self, self, "leaf", path, n, offset, (char *)NULL);
	perror("execl");
	_exit(3);
}

static int wait_ok(pid_t pid)
{
	int status;
	if (waitpid(pid, &status, 0) != pid)
		return 0;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) != 0)
		;
}

static int file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	self = argv[0];
	if (argc < 3) {
		fprintf(stderr, "usage: procs MODE FILE [ARGS]\n");
		return 2;
	}
	const char *mode = argv[1], *path = argv[2];
	if (strcmp(mode, "leaf") == 0 && argc == 5)
		return leaf(path, atol(argv[3]), strtol(argv[4], NULL, 0));

	if (strcmp(mode, "fork") == 0) {
		volatile uint32_t *dev = map32(path);
		dev[0] = 1;
		pid_t child = fork();
		if (child == 0) {
			for (int i = 0; i < 1000; i++)
				dev[2] = (uint32_t)i;
			_exit(dev[0] == 1 ? 0 : 1);
		}
		for (int i = 0; i < 1000; i++)
			dev[4] = (uint32_t)i;
		int ok = wait_ok(child);
		printf("PARENT %d\nCHILD %d\n", getpid(), child);
		return ok ? 0 : 1;
	}

	if (strcmp(mode, "exec") == 0) {
		map32(path)[0] = 0xe1;
		printf("PID %d\n", getpid());
		exec_leaf(path, "5", "0x100");
	}

	if (strcmp(mode, "execchain") == 0 && argc == 4) {
		long n = atol(argv[3]);
		map32(path)[0x40 / 4] = (uint32_t)n;
		if (n == 0)
			return 0;
		char next[32];
		snprintf(next, sizeof next, "%ld", n - 1);
		execl(self, self, "execchain", path, next, (char *)NULL);
		perror("execl");
		return 3;
	}

	if (strcmp(mode, "spawn") == 0) {
		map32(path)[0] = 0x5;
		char *spawn_argv[] = { (char *)self, "leaf", (char *)path, "5", "0x200", NULL };
		pid_t spawned;
		int err = posix_spawn(&spawned, self, NULL, NULL, spawn_argv, environ);
		if (err != 0) {
			fprintf(stderr, "posix_spawn: %s\n", strerror(err));
			return 1;
		}
		int ok = wait_ok(spawned);
		pid_t vforked = vfork();
		if (vforked == 0)
			exec_leaf(path, "5", "0x300");
		ok &= wait_ok(vforked);
		pid_t forked = fork();
		if (forked == 0)
			exec_leaf(path, "5", "0x400");
		ok &= wait_ok(forked);
		printf("SPAWNED %d\nVFORKED %d\nFORKED %d\n", spawned, vforked, forked);
		return ok ? 0 : 1;
	}

	if (strcmp(mode, "orphan") == 0) {
		if (fork() != 0)
			return 0;
		sleep_ms(300);
		write_values(map32(path), 0x500, 100);
		pid_t grandchild = fork();
		if (grandchild == 0) {
			write_values(map32(path), 0x600, 100);
			_exit(0);
		}
		wait_ok(grandchild);
		exec_leaf(path, "100", "0x700");
	}

	if (strcmp(mode, "daemon") == 0 && argc == 5) {
		write_values(map32(path), 0x800, 10);
		pid_t child = fork();
		if (child != 0) {
			printf("DAEMON %d\n", child);
			return 0;
		}
		/* Like any daemon, let go of the terminal and the pipes. */
		setsid();
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		/* A test that failed never says GO: give up after a minute
		 * rather than linger for ever. */
		for (int waited = 0; !file_exists(argv[3]); waited += 10) {
			if (waited > 60000)
				_exit(1);
			sleep_ms(10);
		}
		write_values(map32(path), 0x900, 5000);
		close(open(argv[4], O_CREAT | O_WRONLY, 0600));
		_exit(0);
	}

	if (strcmp(mode, "nofollow") == 0) {
		volatile uint32_t *dev = map32(path);
		dev[0] = 0x70;
		printf("FIRST %d\n", getpid());
		pid_t child = fork();
		if (child == 0) {
			dev[2] = 0x71;
			volatile uint32_t *own = map32(path);
			own[3] = 0x72;
			_exit(dev[2] == 0x71 && own[3] == 0x72 && dev[0] == 0x70 ? 0 : 1);
		}
		int ok = wait_ok(child);
		pid_t execed = fork();
		if (execed == 0)
			exec_leaf(path, "5", "0xa00");
		ok &= wait_ok(execed);
		/* The children's writes landed (read through the traced mapping). */
		printf("CHILD %d EXECED %d sees %x %x %x\n", child, execed, dev[2], dev[3], dev[0xa00 / 4 + 0] + dev[0xa00 / 4 + 4]);
		if (!ok)
			return 1;
		exec_leaf(path, "5", "0xb00");
	}
	fprintf(stderr, "procs: bad mode %s\n", mode);
	return 2;
}
