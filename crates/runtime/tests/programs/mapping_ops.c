/* Traced mappings changed after the fact: partial munmap, mprotect,
 * mremap, MAP_FIXED over a traced range.
 * Usage: mapping_ops FILE (8 pages). Prints the expected trace:
 *   E MAP <n>, E UNMAP <n>  (n: the n-th traced mapping, from 1)
 *   E REMAP <n> <virt of offset 0> <length>  (it moved or grew)
 *   E R|W <width> <offset> <value> */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

static void w32(volatile uint8_t *base, long off, uint32_t v, long reported) {
    *(volatile uint32_t *)(base + off) = v;
    printf("E W 4 %lx %x\n", reported, v);
}

static uint32_t r32(volatile uint8_t *base, long off, long reported) {
    uint32_t v = *(volatile uint32_t *)(base + off);
    printf("E R 4 %lx %x\n", reported, v);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    volatile uint8_t *a = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED) { perror("mmap"); return 2; }
    printf("E MAP 1\n");
    for (int i = 0; i < 4; i++) w32(a, i * PAGE, i + 1, i * PAGE);

    /* A hole in the middle: the rest stays traced, offsets unchanged. */
    if (munmap((void *)(a + PAGE), PAGE) != 0) { perror("munmap"); return 1; }
    w32(a, 4, 0x10, 4);
    w32(a, 2 * PAGE + 4, 0x12, 2 * PAGE + 4);

    /* Read-only and back: the protection is the program's. */
    if (mprotect((void *)(a + 3 * PAGE), PAGE, PROT_READ) != 0) { perror("mprotect"); return 1; }
    if (r32(a, 3 * PAGE, 3 * PAGE) != 4) return 1;
    if (mprotect((void *)(a + 3 * PAGE), PAGE, PROT_READ | PROT_WRITE) != 0) { perror("mprotect"); return 1; }
    w32(a, 3 * PAGE + 4, 0x13, 3 * PAGE + 4);

    /* Grow pages 2-3 into a new place: offsets stay those of the mapping. */
    volatile uint8_t *b = mremap((void *)(a + 2 * PAGE), 2 * PAGE, 3 * PAGE, MREMAP_MAYMOVE);
    if (b == MAP_FAILED) { perror("mremap"); return 1; }
    /* It now reaches offset 5 * PAGE: described again, from b - 2 pages. */
    printf("E REMAP 1 %lx %x\n", (unsigned long)(b - 2 * PAGE), 5 * PAGE);
    if (r32(b, 4, 2 * PAGE + 4) != 0x12) return 1;
    w32(b, 2 * PAGE + 8, 0x14, 4 * PAGE + 8);

    /* Page 0 goes: the mapping still has pages, no UNMAP yet. */
    if (munmap((void *)a, PAGE) != 0) { perror("munmap"); return 1; }
    w32(b, PAGE, 0x15, 3 * PAGE);
    if (munmap((void *)b, 3 * PAGE) != 0) { perror("munmap"); return 1; }
    printf("E UNMAP 1\n");

    /* A second mapping, replaced by an anonymous MAP_FIXED mapping. */
    volatile uint8_t *c = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 5 * PAGE);
    if (c == MAP_FAILED) { perror("mmap"); return 2; }
    printf("E MAP 2\n");
    w32(c, 0, 0x20, 0);
    if (mmap((void *)c, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != c) {
        perror("mmap fixed"); return 1;
    }
    printf("E UNMAP 2\n");
    *(volatile uint32_t *)c = 0x21; /* plain memory now: not traced */

    uint32_t word;
    if (pread(fd, &word, 4, 4 * PAGE + 8) != 4 || word != 0x14) { printf("FAIL file\n"); return 1; }
    printf("DONE\n");
    return 0;
}
