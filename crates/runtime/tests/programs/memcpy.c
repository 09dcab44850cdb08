/* glibc's memcpy (an unmodified library routine: on a CPU with AVX-512 its
 * EVEX variant, 64-byte stores from ZMM16 and up) copies ITERATIONS
 * blocks of SIZE bytes into a traced mapping, each block different.
 * Usage: memcpy FILE SIZE ITERATIONS. Prints the final image's checksum
 * ("IMAGE <fnv1a>") and FAIL lines. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLOTS 16

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    size_t size = strtoul(argv[2], NULL, 0);
    long iterations = strtol(argv[3], NULL, 0);
    if (size == 0 || size > 4096) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    uint8_t *dev = mmap(NULL, SLOTS * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    static uint8_t image[SLOTS * 4096];
    uint8_t block[4096];
    for (long i = 0; i < iterations; i++) {
        for (size_t k = 0; k < size; k++) block[k] = (uint8_t)(i * 31 + k * 7 + 1);
        size_t at = (size_t)(i % SLOTS) * 4096;
        memcpy(dev + at, block, size);
        memcpy(image + at, block, size);
    }
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (size_t k = 0; k < sizeof image; k++) hash = (hash ^ image[k]) * 0x100000001b3ULL;
    printf("IMAGE %016" PRIx64 "\n", hash);
    return 0;
}
