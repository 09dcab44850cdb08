/* Instructions the emulator does not know: displaced execution with values
 * (cmps, cmpxchg, xchg) or, when not even that can, the slow path (gather).
 * Usage: displaced FILE MODE
 *   cmps    : repe cmpsb, traced vs plain, equal for 6 bytes then different
 *   cmpxchg : lock cmpxchg succeeding then failing
 *   xchg    : xchg [rax], rax: its address register is also its data
 *   gather  : vpgatherdd, element addresses in a vector register: slow path
 *   refused : vpgatherdd without a base register: nothing to rebase ->
 *             refused with a message, dies with SIGSEGV */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    uint8_t *dev = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    if (strcmp(argv[2], "cmps") == 0) {
        uint8_t buf[16];
        for (int i = 0; i < 16; i++) buf[i] = (uint8_t)i;
        uint8_t init[16];
        memcpy(init, buf, 16);
        init[6] = 0xee;
        if (pwrite(fd, init, 16, 100) != 16) return 2;
        void *s = dev + 100, *d = buf;
        long n = 16;
        __asm__ volatile("repe cmpsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory", "cc");
        printf("left %ld at %ld\n", n, (long)((uint8_t *)s - dev));
        return 0;
    }
    if (strcmp(argv[2], "cmpxchg") == 0) {
        *(volatile uint64_t *)(dev + 8) = 5;
        uint64_t expected = 5, desired = 9;
        uint8_t ok1, ok2;
        __asm__ volatile("lock cmpxchgq %3, (%2)\n\tsetz %1"
                         : "+a"(expected), "=q"(ok1) : "d"(dev + 8), "r"(desired) : "memory", "cc");
        uint64_t seen = expected;
        expected = 5;
        __asm__ volatile("lock cmpxchgq %3, (%2)\n\tsetz %1"
                         : "+a"(expected), "=q"(ok2) : "d"(dev + 8), "r"(desired) : "memory", "cc");
        printf("ok %d %d seen %lu then %lu\n", ok1, ok2, (unsigned long)seen, (unsigned long)expected);
        return 0;
    }
    if (strcmp(argv[2], "xchg") == 0) {
        *(volatile uint64_t *)(dev + 16) = 77;
        uint64_t r = (uint64_t)(uintptr_t)(dev + 16);
        __asm__ volatile("xchgq %0, (%0)" : "+r"(r) : : "memory");
        printf("got %lu left %d\n", (unsigned long)r,
               *(volatile uint64_t *)(dev + 16) == (uint64_t)(uintptr_t)(dev + 16));
        return 0;
    }
    if (strcmp(argv[2], "gather") == 0 || strcmp(argv[2], "refused") == 0) {
        if (!__builtin_cpu_supports("avx2")) { printf("SKIP no avx2\n"); return 0; }
        for (int i = 0; i < 8; i++) *(volatile uint32_t *)(dev + 64 + 4 * i) = 0x100 + i;
        uint32_t out[8], idx[8] = {7, 6, 5, 4, 3, 2, 1, 0};
        if (strcmp(argv[2], "gather") == 0) {
            __asm__ volatile("vmovdqu (%1), %%ymm1\n\t"
                             "vpcmpeqd %%ymm2, %%ymm2, %%ymm2\n\t"
                             "vpxor %%ymm0, %%ymm0, %%ymm0\n\t"
                             "vpgatherdd %%ymm2, (%2,%%ymm1,4), %%ymm0\n\t"
                             "vmovdqu %%ymm0, (%0)\n\tvzeroupper"
                             : : "r"(out), "r"(idx), "r"(dev + 64) : "memory", "xmm0", "xmm1", "xmm2");
        } else {
            uint64_t addrs[4];
            for (int i = 0; i < 4; i++) addrs[i] = (uint64_t)(uintptr_t)(dev + 64 + 8 * i);
            __asm__ volatile("vmovdqu (%1), %%ymm1\n\t"
                             "vpcmpeqd %%ymm2, %%ymm2, %%ymm2\n\t"
                             "vpgatherqq %%ymm2, 0(,%%ymm1,1), %%ymm0\n\t"
                             "vmovdqu %%ymm0, (%0)\n\tvzeroupper"
                             : : "r"(out), "r"(addrs) : "memory", "xmm0", "xmm1", "xmm2");
            printf("survived\n");
        }
        for (int i = 0; i < 8; i++) printf("%x ", out[i]);
        printf("\n");
        return 0;
    }
    return 2;
}
