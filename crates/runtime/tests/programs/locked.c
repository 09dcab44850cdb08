/* Locked read-modify-writes from several threads on one traced register
 * stay atomic with respect to each other under displaced execution.
 * Usage: locked FILE THREADS N: each thread does N `lock incl` and N
 * `lock xaddq` on two registers; prints the final values. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

static uint8_t *dev;
static long n;

static void *worker(void *arg) {
    (void)arg;
    for (long i = 0; i < n; i++) {
        __asm__ volatile("lock incl (%0)" : : "r"(dev) : "memory", "cc");
        uint64_t one = 1;
        __asm__ volatile("lock xaddq %0, 64(%1)" : "+r"(one) : "r"(dev) : "memory", "cc");
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    dev = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    int threads = atoi(argv[2]);
    n = atol(argv[3]);
    pthread_t ids[64];
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, worker, NULL);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    printf("inc %u xadd %lu\n", *(volatile uint32_t *)dev, (unsigned long)*(volatile uint64_t *)(dev + 64));
    return 0;
}
