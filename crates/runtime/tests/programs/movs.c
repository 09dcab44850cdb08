/* Differential test of the emulated MOV family.
 *
 * Usage: movs FILE (FILE is traced through MMIOTRACE_TRACE).
 * Every instruction form runs twice with the same registers: on REF, plain
 * anonymous memory, and on DEV, the traced mapping of FILE. Register results
 * must agree. The program prints the events the trace must hold, in order:
 *   E R|W <width> <offset> <value>   (offsets and values in hex)
 * and FAIL lines for any difference; at the end it compares FILE's contents
 * (read with pread, which does not touch the mapping) with REF. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DEV_ADDR 0x200000000000ULL
#define REF_ADDR 0x300000000000ULL
#define STR2(x) #x
#define STR(x) STR2(x)

static uint8_t *const dev = (uint8_t *)DEV_ADDR;
static uint8_t *const ref = (uint8_t *)REF_ADDR;
static int failures;

static uint64_t load_le(const uint8_t *p, int width) {
    uint64_t v = 0;
    for (int i = width - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void expect(char dir, int width, long off, uint64_t value) {
    printf("E %c %d %lx %" PRIx64 "\n", dir, width, off, value);
}

static void check(const char *what, uint64_t on_ref, uint64_t on_dev) {
    if (on_ref != on_dev) {
        printf("FAIL %s: ref %" PRIx64 " dev %" PRIx64 "\n", what, on_ref, on_dev);
        failures++;
    }
}

#define INIT 0xa5a5a5a5a5a5a5a5ULL

/* A load into a general register: same initial value on both sides. */
#define LOAD(insn, width, off)                                              \
    do {                                                                    \
        uint64_t a = INIT, b = INIT;                                        \
        __asm__ volatile(insn : "+r"(a) : "r"(ref) : "memory");             \
        __asm__ volatile(insn : "+r"(b) : "r"(dev) : "memory");             \
        check(insn, a, b);                                                  \
        expect('R', width, off, load_le(ref + (off), width));               \
    } while (0)

/* A load into AH/BH/CH/DH. */
#define LOAD_HIGH(insn, width, off)                                         \
    do {                                                                    \
        uint64_t a = INIT, b = INIT;                                        \
        __asm__ volatile(insn : "+Q"(a) : "S"(ref) : "memory");             \
        __asm__ volatile(insn : "+Q"(b) : "S"(dev) : "memory");             \
        check(insn, a, b);                                                  \
        expect('R', width, off, load_le(ref + (off), width));               \
    } while (0)

/* A load into a named register (r8-r15, sil, dil, ...). */
#define LOAD_IN(reg, insn, width, off)                                      \
    do {                                                                    \
        register uint64_t a __asm__(reg) = INIT;                            \
        __asm__ volatile(insn : "+r"(a) : "r"(ref) : "memory");             \
        uint64_t ra = a;                                                    \
        register uint64_t b __asm__(reg) = INIT;                            \
        __asm__ volatile(insn : "+r"(b) : "r"(dev) : "memory");             \
        check(insn, ra, b);                                                 \
        expect('R', width, off, load_le(ref + (off), width));               \
    } while (0)

/* A store of a register value. */
#define STORE(insn, width, off, val)                                        \
    do {                                                                    \
        uint64_t v = (val);                                                 \
        __asm__ volatile(insn : : "r"(ref), "r"(v) : "memory");             \
        __asm__ volatile(insn : : "r"(dev), "r"(v) : "memory");             \
        expect('W', width, off, load_le(ref + (off), width));               \
    } while (0)

/* A store of an immediate. */
#define STORE_IMM(insn, width, off)                                         \
    do {                                                                    \
        __asm__ volatile(insn : : "r"(ref) : "memory");                     \
        __asm__ volatile(insn : : "r"(dev) : "memory");                     \
        expect('W', width, off, load_le(ref + (off), width));               \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    if (mmap(dev, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0) != dev) {
        perror("mmap dev"); return 2;
    }
    if (mmap(ref, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != ref) {
        perror("mmap ref"); return 2;
    }
    if (pread(fd, ref, 8192, 0) != 8192) { perror("pread"); return 2; }

    /* mov r, r/m: all widths; 32-bit zero-extends, 8/16 keep upper bits. */
    LOAD("movb 0x11(%1), %b0", 1, 0x11);
    LOAD("movw 0x12(%1), %w0", 2, 0x12);
    LOAD("movl 0x14(%1), %k0", 4, 0x14);
    LOAD("movq 0x18(%1), %q0", 8, 0x18);
    LOAD_HIGH("movb 0x21(%1), %h0", 1, 0x21);
    LOAD_IN("r13", "movb 0x22(%1), %b0", 1, 0x22);
    LOAD_IN("r9", "movw 0x23(%1), %w0", 2, 0x23);
    LOAD_IN("r15", "movl 0x25(%1), %k0", 4, 0x25);
    LOAD_IN("r8", "movq 0x29(%1), %q0", 8, 0x29);
    LOAD_IN("rsi", "movb 0x31(%1), %b0", 1, 0x31);
    LOAD_IN("rdi", "movb 0x32(%1), %b0", 1, 0x32);
    /* movzx / movsx / movsxd: every source and destination width. */
    LOAD("movzbw 0x80(%1), %w0", 1, 0x80);
    LOAD("movzbl 0x81(%1), %k0", 1, 0x81);
    LOAD("movzbq 0x82(%1), %q0", 1, 0x82);
    LOAD("movzwl 0x84(%1), %k0", 2, 0x84);
    LOAD("movzwq 0x86(%1), %q0", 2, 0x86);
    LOAD("movsbw 0x88(%1), %w0", 1, 0x88);
    LOAD("movsbl 0x89(%1), %k0", 1, 0x89);
    LOAD("movsbq 0x8a(%1), %q0", 1, 0x8a);
    LOAD("movswl 0x8c(%1), %k0", 2, 0x8c);
    LOAD("movswq 0x8e(%1), %q0", 2, 0x8e);
    LOAD("movslq 0x90(%1), %q0", 4, 0x90);
    LOAD("movsbw 0x08(%1), %w0", 1, 0x08);
    LOAD("movslq 0x0c(%1), %q0", 4, 0x0c);
    LOAD_HIGH("movzbw 0x94(%1), %w0", 1, 0x94);
    /* Addressing: index, scale, negative displacement, second page, unaligned. */
    {
        uint64_t a = INIT, b = INIT, index = 5;
        __asm__ volatile("movl 0x100(%1,%2,4), %k0" : "+r"(a) : "r"(ref), "r"(index) : "memory");
        __asm__ volatile("movl 0x100(%1,%2,4), %k0" : "+r"(b) : "r"(dev), "r"(index) : "memory");
        check("sib", a, b);
        expect('R', 4, 0x114, load_le(ref + 0x114, 4));
        uint8_t *ref_end = ref + 0x1800, *dev_end = dev + 0x1800;
        __asm__ volatile("movq -0x8(%1), %0" : "+r"(a) : "r"(ref_end) : "memory");
        __asm__ volatile("movq -0x8(%1), %0" : "+r"(b) : "r"(dev_end) : "memory");
        check("negative displacement", a, b);
        expect('R', 8, 0x17f8, load_le(ref + 0x17f8, 8));
    }
    LOAD("movq 0xffd(%1), %q0", 8, 0xffd);

    /* mov r/m, r: all widths, including high-byte and REX sources. */
    STORE("movb %b1, 0x200(%0)", 1, 0x200, 0x1122334455667788ULL);
    STORE("movw %w1, 0x202(%0)", 2, 0x202, 0x1122334455667788ULL);
    STORE("movl %k1, 0x204(%0)", 4, 0x204, 0x1122334455667788ULL);
    STORE("movq %q1, 0x208(%0)", 8, 0x208, 0x1122334455667788ULL);
    {
        uint64_t v = 0x1234;
        __asm__ volatile("movb %h1, 0x210(%0)" : : "S"(ref), "Q"(v) : "memory");
        __asm__ volatile("movb %h1, 0x210(%0)" : : "S"(dev), "Q"(v) : "memory");
        expect('W', 1, 0x210, 0x12);
        register uint64_t r12 __asm__("r12") = 0xfedcba9876543210ULL;
        __asm__ volatile("movw %w1, 0x212(%0)" : : "r"(ref), "r"(r12) : "memory");
        __asm__ volatile("movw %w1, 0x212(%0)" : : "r"(dev), "r"(r12) : "memory");
        expect('W', 2, 0x212, 0x3210);
    }
    /* mov r/m, imm: imm8/16/32 and the sign-extended imm32 of a 64-bit store. */
    STORE_IMM("movb $0x5a, 0x220(%0)", 1, 0x220);
    STORE_IMM("movw $0xbeef, 0x222(%0)", 2, 0x222);
    STORE_IMM("movl $0xdeadbeef, 0x224(%0)", 4, 0x224);
    STORE_IMM("movq $-3, 0x228(%0)", 8, 0x228);
    STORE_IMM("movq $0x7fffffff, 0x230(%0)", 8, 0x230);
    /* movnti */
    STORE("movnti %k1, 0x240(%0)", 4, 0x240, 0xcafef00d12345678ULL);
    STORE("movnti %q1, 0x248(%0)", 8, 0x248, 0xcafef00d12345678ULL);

    /* moffs forms (A0-A3): absolute 64-bit addresses. */
    {
        register uint64_t a __asm__("rax") = INIT;
        __asm__ volatile("movabsb " STR(REF_ADDR) "+0x301, %%al" : "+r"(a) : : "memory");
        uint64_t ra = a;
        register uint64_t b __asm__("rax") = INIT;
        __asm__ volatile("movabsb " STR(DEV_ADDR) "+0x301, %%al" : "+r"(b) : : "memory");
        check("moffs8 load", ra, b);
        expect('R', 1, 0x301, ref[0x301]);
    }
    {
        register uint64_t a __asm__("rax") = INIT;
        __asm__ volatile("movabsw " STR(REF_ADDR) "+0x302, %%ax" : "+r"(a) : : "memory");
        uint64_t ra = a;
        register uint64_t b __asm__("rax") = INIT;
        __asm__ volatile("movabsw " STR(DEV_ADDR) "+0x302, %%ax" : "+r"(b) : : "memory");
        check("moffs16 load", ra, b);
        expect('R', 2, 0x302, load_le(ref + 0x302, 2));
    }
    {
        register uint64_t a __asm__("rax") = INIT;
        __asm__ volatile("movabsl " STR(REF_ADDR) "+0x304, %%eax" : "+r"(a) : : "memory");
        uint64_t ra = a;
        register uint64_t b __asm__("rax") = INIT;
        __asm__ volatile("movabsl " STR(DEV_ADDR) "+0x304, %%eax" : "+r"(b) : : "memory");
        check("moffs32 load", ra, b);
        expect('R', 4, 0x304, load_le(ref + 0x304, 4));
    }
    {
        register uint64_t a __asm__("rax") = INIT;
        __asm__ volatile("movabsq " STR(REF_ADDR) "+0x308, %%rax" : "+r"(a) : : "memory");
        uint64_t ra = a;
        register uint64_t b __asm__("rax") = INIT;
        __asm__ volatile("movabsq " STR(DEV_ADDR) "+0x308, %%rax" : "+r"(b) : : "memory");
        check("moffs64 load", ra, b);
        expect('R', 8, 0x308, load_le(ref + 0x308, 8));
    }
    {
        uint64_t v = 0x0102030405060708ULL;
        __asm__ volatile("movabsb %%al, " STR(REF_ADDR) "+0x310" : : "a"(v) : "memory");
        __asm__ volatile("movabsb %%al, " STR(DEV_ADDR) "+0x310" : : "a"(v) : "memory");
        expect('W', 1, 0x310, 0x08);
        __asm__ volatile("movabsw %%ax, " STR(REF_ADDR) "+0x312" : : "a"(v) : "memory");
        __asm__ volatile("movabsw %%ax, " STR(DEV_ADDR) "+0x312" : : "a"(v) : "memory");
        expect('W', 2, 0x312, 0x0708);
        __asm__ volatile("movabsl %%eax, " STR(REF_ADDR) "+0x314" : : "a"(v) : "memory");
        __asm__ volatile("movabsl %%eax, " STR(DEV_ADDR) "+0x314" : : "a"(v) : "memory");
        expect('W', 4, 0x314, 0x05060708);
        __asm__ volatile("movabsq %%rax, " STR(REF_ADDR) "+0x318" : : "a"(v) : "memory");
        __asm__ volatile("movabsq %%rax, " STR(DEV_ADDR) "+0x318" : : "a"(v) : "memory");
        expect('W', 8, 0x318, 0x0102030405060708ULL);
    }

    /* Read-modify-write and compares: displaced execution or emulation,
     * with the value read and the value written. */
    {
        uint32_t before = (uint32_t)load_le(ref + 0x400, 4);
        __asm__ volatile("addl $7, 0x400(%0)" : : "r"(ref) : "memory", "cc");
        __asm__ volatile("addl $7, 0x400(%0)" : : "r"(dev) : "memory", "cc");
        expect('R', 4, 0x400, before);
        expect('W', 4, 0x400, load_le(ref + 0x400, 4));
        uint64_t a = 0x10, b = 0x10;
        uint64_t before8 = load_le(ref + 0x408, 8);
        __asm__ volatile("lock xaddq %0, 0x408(%1)" : "+r"(a) : "r"(ref) : "memory", "cc");
        __asm__ volatile("lock xaddq %0, 0x408(%1)" : "+r"(b) : "r"(dev) : "memory", "cc");
        check("lock xadd", a, b);
        expect('R', 8, 0x408, before8);
        expect('W', 8, 0x408, load_le(ref + 0x408, 8));
        uint64_t fa, fb;
        __asm__ volatile("cmpl $0x1000, 0x40c(%1)\n\tpushfq\n\tpopq %0" : "=r"(fa) : "r"(ref) : "memory", "cc");
        __asm__ volatile("cmpl $0x1000, 0x40c(%1)\n\tpushfq\n\tpopq %0" : "=r"(fb) : "r"(dev) : "memory", "cc");
        check("cmp flags", fa & 0x8d5, fb & 0x8d5);
        expect('R', 4, 0x40c, load_le(ref + 0x40c, 4));
        uint64_t index = 3;
        uint16_t before2 = (uint16_t)load_le(ref + 0x416, 2);
        __asm__ volatile("orw $0x8001, 0x410(%0,%1,2)" : : "r"(ref), "r"(index) : "memory", "cc");
        __asm__ volatile("orw $0x8001, 0x410(%0,%1,2)" : : "r"(dev), "r"(index) : "memory", "cc");
        expect('R', 2, 0x416, before2);
        expect('W', 2, 0x416, load_le(ref + 0x416, 2));
    }

    uint8_t file[8192];
    if (pread(fd, file, 8192, 0) != 8192) { perror("pread"); return 2; }
    for (int i = 0; i < 8192; i++) {
        if (file[i] != ref[i]) {
            printf("FAIL contents at %x: ref %02x file %02x\n", i, ref[i], file[i]);
            failures++;
            break;
        }
    }
    printf("DONE %d\n", failures);
    return failures != 0;
}
