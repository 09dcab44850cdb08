/* String instructions on traced memory, emulated with values.
 * Usage: strings FILE. Prints the expected trace (E R|W width offset value)
 * and FAIL lines. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int failures;

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    uint8_t *dev = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    uint8_t buf[64];
    for (int i = 0; i < 64; i++) buf[i] = (uint8_t)(0x40 + i);

    /* rep movsb: plain -> traced, 5 elements */
    void *d = dev + 100, *s = buf;
    long n = 5;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    for (int i = 0; i < 5; i++) printf("E W 1 %x %x\n", 100 + i, buf[i]);
    if (n != 0 || d != dev + 105 || s != buf + 5) { printf("FAIL movsb regs\n"); failures++; }

    /* rep movsd: traced -> plain, 2 elements */
    uint32_t out[2] = {0, 0};
    d = out; s = dev + 100; n = 2;
    __asm__ volatile("rep movsl" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    printf("E R 4 64 %x\nE R 4 68 %x\n", out[0], out[1]);
    if (out[0] != 0x43424140) { printf("FAIL movsd value %x\n", out[0]); failures++; }

    /* std; rep stosq: traced, backwards, 3 elements */
    uint64_t value = 0x1122334455667788ULL;
    d = dev + 216; n = 3;
    __asm__ volatile("std\n\trep stosq\n\tcld" : "+D"(d), "+c"(n) : "a"(value) : "memory");
    printf("E W 8 d8 %" PRIx64 "\nE W 8 d0 %" PRIx64 "\nE W 8 c8 %" PRIx64 "\n", value, value, value);
    if (d != dev + 192) { printf("FAIL stosq rdi\n"); failures++; }

    /* stosw without rep, lodsb/lodsd */
    uint64_t a = 0xabcd;
    d = dev + 300;
    __asm__ volatile("stosw" : "+D"(d) : "a"(a) : "memory");
    printf("E W 2 12c abcd\n");
    uint64_t r = 0xffffffffffffffffULL;
    s = dev + 100;
    __asm__ volatile("lodsb" : "+S"(s), "+a"(r) : : "memory");
    printf("E R 1 64 40\n");
    if (r != 0xffffffffffffff40ULL) { printf("FAIL lodsb %" PRIx64 "\n", r); failures++; }
    __asm__ volatile("lodsl" : "+S"(s), "+a"(r) : : "memory");
    printf("E R 4 65 44434241\n");
    if (r != 0x44434241ULL) { printf("FAIL lodsd %" PRIx64 "\n", r); failures++; }

    /* rep movsq traced -> traced (both sides logged, read then write) */
    d = dev + 400; s = dev + 200; n = 2;
    __asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    printf("E R 8 c8 %" PRIx64 "\nE W 8 190 %" PRIx64 "\n", value, value);
    printf("E R 8 d0 %" PRIx64 "\nE W 8 198 %" PRIx64 "\n", value, value);

    /* Long runs, logged in batches: rep movsb of 3000 bytes plain ->
     * traced, then std; rep stosl of 300 dwords down from the page's end. */
    static uint8_t big[3000];
    for (int i = 0; i < 3000; i++) big[i] = (uint8_t)(i * 7 + 3);
    d = dev + 1000; s = big; n = 3000;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    for (int i = 0; i < 3000; i++) printf("E W 1 %x %x\n", 1000 + i, big[i]);
    if (n != 0 || d != dev + 4000 || s != big + 3000) {
        printf("FAIL long movsb\n");
        failures++;
    }
    uint64_t word = 0x5a5aa5a5;
    d = dev + 4092; n = 300;
    __asm__ volatile("std\n\trep stosl\n\tcld" : "+D"(d), "+c"(n) : "a"(word) : "memory");
    for (int i = 0; i < 300; i++) printf("E W 4 %x 5a5aa5a5\n", 4092 - 4 * i);
    if (n != 0 || d != dev + 4092 - 1200) { printf("FAIL long stosl regs\n"); failures++; }

    printf("DONE %d\n", failures);
    return failures != 0;
}
