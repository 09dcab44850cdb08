/* 64 functions, each four short device stores in a row (3, 3, 2 and 3
 * bytes: movl %eax,0x10(%rdi); movl %edx,0x14(%rdi); movl %eax,(%rdi);
 * movl %edx,4(%rdi)), run 100 times each: 256 short sites, each one's
 * jump borrowing the first bytes of the next (or of the `ret` after it).
 * Usage: short_pairs FILE. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>

/* Each function its own offsets and values, so that no two are folded. */
#define F(n)                                                                    \
    static __attribute__((noinline)) void f##n(volatile uint8_t *d, uint32_t a) { \
        __asm__ volatile("movl %0, 0x10(%1)\n\tmovl %2, 0x14(%1)\n\t"           \
                         "movl %0, (%1)\n\tmovl %2, 4(%1)"                      \
                         : : "a"(a), "D"(d + 8 * (0x##n & 0xf)), "d"(a + 0x##n)  \
                         : "memory");                                           \
    }
#define G(n) F(n##0) F(n##1) F(n##2) F(n##3) F(n##4) F(n##5) F(n##6) F(n##7)
G(0) G(1) G(2) G(3) G(4) G(5) G(6) G(7)
#define C(n) f##n(dev, i);
#define H(n) C(n##0) C(n##1) C(n##2) C(n##3) C(n##4) C(n##5) C(n##6) C(n##7)

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    volatile uint8_t *dev = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    for (uint32_t i = 0; i < 100; i++) {
        H(0) H(1) H(2) H(3) H(4) H(5) H(6) H(7)
    }
    printf("DONE\n");
    return 0;
}
