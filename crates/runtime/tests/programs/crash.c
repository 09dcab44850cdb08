/* Faults that are not the runtime's must behave as without it.
 * Usage: crash FILE MODE
 *   null      : a NULL store after tracing is set up -> dies with SIGSEGV
 *   readonly  : a store to a PROT_READ traced mapping -> dies with SIGSEGV
 *   handler   : the program's own SIGSEGV handler (installed after the
 *               runtime's) catches a genuine fault with siglongjmp, then
 *               traced accesses still work -> exit 0
 *   sigdfl    : kill(getpid(), SIGSEGV) -> dies with SIGSEGV
 *   trap      : int3 with no handler -> dies with SIGTRAP
 *   blocked   : SIGSEGV blocked with sigprocmask and pthread_sigmask, then
 *               traced accesses -> exit 0
 *   signal    : a handler installed with signal() catches a genuine fault
 *               (siglongjmp), then traced accesses still work -> exit 0 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile int *volatile wild = (volatile int *)16;
static volatile int caught;

static void on_segv_plain(int sig) {
    (void)sig;
    caught = 1;
    siglongjmp(env, 1);
}

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    (void)sig; (void)ctx;
    caught = info->si_addr == (void *)16;
    siglongjmp(env, 1);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    int readonly = strcmp(argv[2], "readonly") == 0;
    volatile uint32_t *dev = mmap(NULL, 4096, readonly ? PROT_READ : PROT_READ | PROT_WRITE,
                                  MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) { perror("mmap"); return 2; }
    uint32_t first = dev[1];
    printf("read %u\n", first);
    fflush(stdout);
    if (strcmp(argv[2], "null") == 0) {
        *wild = 1;
    } else if (readonly) {
        dev[2] = 7;
    } else if (strcmp(argv[2], "handler") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
        if (sigsetjmp(env, 1) == 0) *wild = 1;
        dev[3] = 0x33;
        printf("caught %d after %u\n", caught, dev[3]);
        return caught ? 0 : 1;
    } else if (strcmp(argv[2], "blocked") == 0) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGSEGV);
        sigprocmask(SIG_BLOCK, &set, NULL);
        dev[3] = 0x44;
        pthread_sigmask(SIG_SETMASK, &set, NULL);
        printf("blocked got %u\n", dev[3]);
        return 0;
    } else if (strcmp(argv[2], "signal") == 0) {
        signal(SIGSEGV, on_segv_plain);
        if (sigsetjmp(env, 1) == 0) *wild = 1;
        dev[3] = 0x55;
        printf("caught %d after %u\n", caught, dev[3]);
        return caught ? 0 : 1;
    } else if (strcmp(argv[2], "sigdfl") == 0) {
        kill(getpid(), SIGSEGV);
    } else if (strcmp(argv[2], "trap") == 0) {
        __asm__ volatile("int3");
    }
    printf("survived\n");
    return 0;
}
