/* T threads x N accesses on one traced page.
 * Usage: threads FILE THREADS ACCESSES
 * Thread t owns bytes t*64..t*64+32. Access k of thread t belongs to pair
 * p = k/2 of width 1<<(p%4) at offset t*64+(p%4)*8: even k writes
 * value(t,p), odd k reads it back (and checks it). Prints "T t tid" lines. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static uint8_t *dev;
static long accesses;
static volatile int bad;

static uint64_t value_of(uint64_t t, uint64_t p) {
    return (p * 0x9E3779B97F4A7C15ULL) ^ (t << 56) ^ t;
}

static void *worker(void *arg) {
    uint64_t t = (uint64_t)(uintptr_t)arg;
    printf("T %lu %d\n", (unsigned long)t, gettid());
    fflush(stdout);
    for (long k = 0; k < accesses; k++) {
        uint64_t p = (uint64_t)k / 2;
        unsigned which = p % 4;
        uint8_t *at = dev + t * 64 + which * 8;
        uint64_t v = value_of(t, p);
        if ((k & 1) == 0) {
            switch (which) {
            case 0: *(volatile uint8_t *)at = (uint8_t)v; break;
            case 1: *(volatile uint16_t *)at = (uint16_t)v; break;
            case 2: *(volatile uint32_t *)at = (uint32_t)v; break;
            default: *(volatile uint64_t *)at = v; break;
            }
        } else {
            uint64_t got, want;
            switch (which) {
            case 0: got = *(volatile uint8_t *)at; want = (uint8_t)v; break;
            case 1: got = *(volatile uint16_t *)at; want = (uint16_t)v; break;
            case 2: got = *(volatile uint32_t *)at; want = (uint32_t)v; break;
            default: got = *(volatile uint64_t *)at; want = v; break;
            }
            if (got != want) bad = 1;
        }
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
    accesses = atol(argv[3]);
    pthread_t ids[64];
    for (int t = 0; t < threads && t < 64; t++)
        pthread_create(&ids[t], NULL, worker, (void *)(uintptr_t)t);
    for (int t = 0; t < threads && t < 64; t++) pthread_join(ids[t], NULL);
    munmap(dev, 4096);
    printf("BAD %d\n", bad);
    return bad;
}
