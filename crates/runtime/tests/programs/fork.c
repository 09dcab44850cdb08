/* After fork the child has its own ring slot and pid.
 * Usage: fork FILE [many]. Prints "PARENT pid" and "CHILD pid".
 * With "many": 40 children one after the other, each writing once and
 * leaving with exit() or _exit(), so that slots must be given back or
 * reclaimed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    volatile uint32_t *dev = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    dev[0] = 1;
    fflush(stdout);
    if (argc == 3 && strcmp(argv[2], "many") == 0) {
        for (int i = 0; i < 40; i++) {
            pid_t child = fork();
            if (child == 0) {
                dev[6] = (uint32_t)i;
                if (i % 2) _exit(0);
                exit(0);
            }
            int status;
            waitpid(child, &status, 0);
        }
        return 0;
    }
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < 1000; i++) dev[2] = (uint32_t)i;
        _exit(dev[0] == 1 ? 0 : 1);
    }
    for (int i = 0; i < 1000; i++) dev[4] = (uint32_t)i;
    int status;
    waitpid(child, &status, 0);
    printf("PARENT %d\nCHILD %d\n", getpid(), child);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
