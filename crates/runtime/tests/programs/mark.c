/* Markers through include/mmiotrace.h around one traced access.
 * Usage: mark FILE */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mmiotrace.h"

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    volatile uint32_t *dev = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    mmiotrace_mark("before reset");
    dev[4] = 1;
    mmiotrace_mark("after reset");
    printf("ok\n");
    return 0;
}
