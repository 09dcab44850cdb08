/* Writer threads store through one patched site while the main thread
 * takes write permission from the traced mapping and gives it back, over
 * and over. A store either happens (and is logged) or faults genuinely
 * (the program's own SIGSEGV handler skips it and counts it): never both,
 * never neither, and the runtime never hangs or faults on its alias.
 * Usage: mprotect_race FILE. Prints "T <thread> <attempts> <faults>" per
 * writer and "DONE". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define WRITERS 3
#define ROUNDS 300
#define STORE_LEN 6 /* movl %eax, 0x100(%rdi): 89 87 00 01 00 00 */

static uint8_t *dev;
static volatile int stop;
static __thread long faults;

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    (void)sig;
    ucontext_t *uc = ctx;
    uint8_t *addr = info->si_addr;
    if (addr < dev || addr >= dev + 4096) {
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    faults++;
    uc->uc_mcontext.gregs[REG_RIP] += STORE_LEN;
}

static __attribute__((noinline)) void store(uint8_t *base, uint32_t value) {
    __asm__ volatile(".byte 0x89, 0x87, 0x00, 0x01, 0x00, 0x00" : : "D"(base), "a"(value) : "memory");
}

static void *writer(void *arg) {
    long t = (long)arg;
    long attempts = 0;
    while (!stop) {
        store(dev + 8 * t, (uint32_t)(t << 24 | (attempts & 0xffffff)));
        attempts++;
    }
    printf("T %ld %ld %ld\n", t, attempts, faults);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    dev = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    pthread_t threads[WRITERS];
    for (long t = 0; t < WRITERS; t++) pthread_create(&threads[t], NULL, writer, (void *)t);
    usleep(20000);
    for (int round = 0; round < ROUNDS; round++) {
        if (mprotect(dev, 4096, PROT_READ) != 0) { perror("mprotect"); return 1; }
        usleep(300);
        if (mprotect(dev, 4096, PROT_READ | PROT_WRITE) != 0) { perror("mprotect"); return 1; }
        usleep(300);
    }
    stop = 1;
    for (int t = 0; t < WRITERS; t++) pthread_join(threads[t], NULL);
    printf("DONE\n");
    return 0;
}
