/* Accesses for the single-step comparison mode (MMIOTRACE_MODE=single-step).
 * Usage: single_step FILE MODE
 *   forms    : one access of each kind the kernel's decoder knows, then an
 *              RMW (logged as UNKNOWN) and rep stosl; prints what it read
 *   readonly : a store to a PROT_READ traced mapping -> dies with SIGSEGV */
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
    int readonly = strcmp(argv[2], "readonly") == 0;
    uint8_t *dev = mmap(NULL, 4096, readonly ? PROT_READ : PROT_READ | PROT_WRITE,
                        MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    if (readonly) {
        *(volatile uint32_t *)(dev + 8) = 1;
        return 0;
    }
    uint32_t value = 0x11223344;
    uint64_t wide = 0x8877665544332211ULL;
    uint64_t loaded64;
    uint32_t loaded_byte;
    __asm__ volatile("movl %1, (%0)" : : "r"(dev + 0), "r"(value) : "memory");
    __asm__ volatile("movl $0x55667788, (%0)" : : "r"(dev + 4) : "memory");
    __asm__ volatile("movq %1, (%0)" : : "r"(dev + 8), "r"(wide) : "memory");
    __asm__ volatile("movq (%1), %0" : "=r"(loaded64) : "r"(dev + 8) : "memory");
    __asm__ volatile("movzbl (%1), %0" : "=r"(loaded_byte) : "r"(dev + 1) : "memory");
    __asm__ volatile("addl %1, (%0)" : : "r"(dev + 0), "r"(1u) : "memory", "cc");
    void *d = dev + 64;
    long n = 3;
    __asm__ volatile("rep stosl" : "+D"(d), "+c"(n) : "a"(0xabcdef01u) : "memory");
    printf("loaded64 %llx byte %x word0 %x stos %x %x %x\n",
           (unsigned long long)loaded64, loaded_byte, *(volatile uint32_t *)dev,
           ((volatile uint32_t *)(dev + 64))[0], ((volatile uint32_t *)(dev + 64))[1],
           ((volatile uint32_t *)(dev + 64))[2]);
    munmap(dev, 4096);
    return 0;
}
