/* Counts malloc-family calls made while a thread is inside the runtime's
 * signal handlers. The program's own malloc/calloc/realloc/free take
 * precedence over libc's for every library, the runtime included.
 * Usage: noalloc FILE */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static _Atomic(unsigned) *in_handler;
static atomic_long in_handler_calls, all_calls;

static void note(void) {
    atomic_fetch_add(&all_calls, 1);
    if (in_handler && atomic_load(in_handler) != 0) atomic_fetch_add(&in_handler_calls, 1);
}

void *malloc(size_t n) { note(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { note(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { note(); return __libc_realloc(p, n); }
void free(void *p) { if (p) note(); __libc_free(p); }

static volatile uint64_t *dev;

static void *worker(void *arg) {
    (void)arg;
    /* The first access of a new thread claims its ring slot in the handler. */
    for (int i = 0; i < 1000; i++) {
        dev[8 + i % 8] = (uint64_t)i;
        (void)*(volatile uint16_t *)((char *)dev + 2 * (i % 16));
    }
    /* Displaced with values (integer and SSE), emulated compare and vector
     * store, and a gather on the slow path. */
    __asm__ volatile("lock addq $1, 128(%0)" : : "r"(dev) : "memory", "cc");
    __asm__ volatile("cmpl $0, 136(%0)" : : "r"(dev) : "memory", "cc");
    __asm__ volatile("xorps %%xmm0, %%xmm0\n\taddps 192(%0), %%xmm0\n\tmovdqu %%xmm0, 256(%0)"
                     : : "r"(dev) : "memory", "xmm0");
    if (__builtin_cpu_supports("avx2")) {
        __asm__ volatile("vpxor %%xmm1, %%xmm1, %%xmm1\n\tvpcmpeqd %%xmm2, %%xmm2, %%xmm2\n\t"
                         "vpgatherdd %%xmm2, 320(%0,%%xmm1,4), %%xmm0"
                         : : "r"(dev) : "memory", "xmm0", "xmm1", "xmm2");
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    in_handler = dlsym(RTLD_DEFAULT, "mmiotrace_runtime_in_handler");
    if (!in_handler) { printf("runtime not loaded\n"); return 2; }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    dev = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    long before = atomic_load(&all_calls);
    /* One thread at a time: the in-handler count is process-wide, so an
     * allocation made by another thread (thread creation and exit allocate
     * and free) while this one is in the handler would be counted too. */
    for (int t = 0; t < 4; t++) {
        pthread_t id;
        pthread_create(&id, NULL, worker, NULL);
        pthread_join(id, NULL);
    }
    worker(NULL);
    printf("AVX2 %d\n", __builtin_cpu_supports("avx2") ? 1 : 0);
    printf("IN_HANDLER %ld ALL %ld\n", atomic_load(&in_handler_calls), atomic_load(&all_calls) - before);
    return 0;
}
