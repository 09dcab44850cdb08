/* Instructions the emulator does not know run displaced on the alias.
 * Usage: displaced FILE MODE
 *   cmps    : repe cmpsb, traced vs plain, equal for 6 bytes then different
 *   cmpxchg : lock cmpxchg succeeding then failing
 *   refused : xchg [rax], rax: its address register is also its data ->
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
    if (strcmp(argv[2], "refused") == 0) {
        uint64_t r = (uint64_t)(uintptr_t)(dev + 16);
        __asm__ volatile("xchgq %0, (%0)" : "+r"(r) : : "memory");
        printf("survived\n");
        return 0;
    }
    return 2;
}
