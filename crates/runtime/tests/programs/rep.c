/* rep movsb from plain memory to a traced mapping and back: runs displaced
 * (one single-step per element). Usage: rep FILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDWR);
    uint8_t *dev = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    uint8_t buf[64];
    for (int i = 0; i < 64; i++) buf[i] = i;
    void *d = dev + 100; void *s = buf; long n = 16;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    d = buf; s = dev + 100; n = 16;
    memset(buf, 0, 64);
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    int ok = 1; for (int i = 0; i < 16; i++) ok &= buf[i] == i;
    printf("ok %d d-buf %ld n %ld\n", ok, (long)((uint8_t*)d - buf), n);
    return 0;
}
