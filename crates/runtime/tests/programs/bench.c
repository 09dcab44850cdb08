/* Per-access cost. Usage: bench MODE FILE N
 *   plain  : N stores + N loads on an untraced shared mapping of FILE
 *   floor  : N stores on a PROT_NONE page whose SIGSEGV handler only skips
 *            the 2-byte instruction (the exception floor); run without the runtime
 *   traced : N stores + N loads on a traced mapping of FILE
 * Prints "ns_per_access X". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void skip(int sig, siginfo_t *info, void *ctx) {
    (void)sig; (void)info;
    ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP] += 2;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    long n = atol(argv[3]);
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    volatile uint32_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 2; }
    double start, end;
    long accesses;
    if (strcmp(argv[1], "floor") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = skip;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
        mprotect((void *)p, 4096, PROT_NONE);
        start = now();
        for (long i = 0; i < n; i++)
            __asm__ volatile("movl %k1, (%0)" : : "r"(p), "r"(i) : "memory"); /* 89 xx: 2 bytes */
        end = now();
        accesses = n;
    } else {
        uint32_t sum = 0;
        start = now();
        for (long i = 0; i < n; i++) {
            p[i & 63] = (uint32_t)i;
            sum += p[(i + 1) & 63];
        }
        end = now();
        accesses = 2 * n;
        if (sum == 12345) printf("!\n");
    }
    printf("ns_per_access %.1f\n", (end - start) / accesses);
    return 0;
}
