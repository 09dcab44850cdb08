/* Patched access sites (docs/ARCHITECTURE.md, "Patched sites").
 *
 * Usage: patch FILE sites|threads|fork|altstack|neighbours|genuine|remap
 * (FILE is traced).
 *
 * sites: every site below runs ITER times, first on REF (plain memory),
 * then on DEV (the traced mapping of FILE), with the same registers and
 * flags; results must agree. Each site is one instruction of 5 bytes or
 * more (a 32-bit displacement is forced), so it is patched after a few
 * faults, except the three short ones (2 to 4 bytes), which only
 * punning can patch. The program prints the events the trace
 * must hold, in order:  E R|W <width> <offset> <value>  (hex), and FAIL
 * lines for any difference.
 *
 * threads: 8 threads store through one shared site (patched while they
 * run), 4,000 stores each of (thread << 24 | i), to their own offsets.
 *
 * fork: the site is patched in the parent, then a child runs it too.
 *
 * altstack: a small alternate signal stack (the signal frame and 5 KiB), on which the
 * runtime's SIGSEGV handler runs and patches the site.
 *
 * neighbours: a short site right before a long one, both hot.
 *
 * genuine: a real segfault at a site, before and after it is patched.
 *
 * remap: stores through a patched site while the mapping is replaced. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <ucontext.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define ITER 20
#define CF 1ULL
#define ARITH_FLAGS 0x8d5ULL /* CF PF AF ZF SF OF */

static uint8_t *dev;
static uint8_t ref[4096] __attribute__((aligned(64)));
static int failures;

static void expect(char dir, int width, long off, uint64_t value) {
    printf("E %c %d %lx %" PRIx64 "\n", dir, width, off, value);
}

static void check(const char *what, int i, uint64_t on_ref, uint64_t on_dev) {
    if (on_ref != on_dev) {
        printf("FAIL %s #%d: ref %" PRIx64 " dev %" PRIx64 "\n", what, i, on_ref, on_dev);
        failures++;
    }
}

/* Stores with the carry flag set or clear before, flags read after: a
 * store must leave them alone. */
#define STORE(name, insn, width, off, value)                                     \
    do {                                                                          \
        uint64_t f_ref, f_dev, v = (value);                                       \
        uint64_t carry = i & 1;                                                   \
        asm volatile("bt $0, %[c]\n\t" insn "\n\tpushfq\n\tpopq %[f]"            \
                     : [f] "=r"(f_ref)                                            \
                     : [p] "r"(ref + (off)), [v] "r"(v), [c] "r"(carry)           \
                     : "memory", "cc");                                           \
        asm volatile("bt $0, %[c]\n\t" insn "\n\tpushfq\n\tpopq %[f]"            \
                     : [f] "=r"(f_dev)                                            \
                     : [p] "r"(dev + (off)), [v] "r"(v), [c] "r"(carry)           \
                     : "memory", "cc");                                           \
        check(name " flags", i, f_ref & ARITH_FLAGS, f_dev & ARITH_FLAGS);        \
        check(name " carry", i, carry, f_dev & CF);                               \
        uint64_t mask = (width) == 8 ? ~0ULL : (1ULL << (8 * (width))) - 1;       \
        expect('W', width, off, v & mask);                                        \
    } while (0)

/* Loads into a register that holds a marker first: the result and the
 * flags must agree (the value read is what REF holds, written before). */
#define LOAD(name, insn, width, off, logged)                                     \
    do {                                                                          \
        uint64_t r_ref = 0xa5a5a5a5a5a5a5a5ULL ^ i, r_dev = r_ref, f_ref, f_dev;  \
        asm volatile(insn "\n\tpushfq\n\tpopq %[f]"                               \
                     : [r] "+r"(r_ref), [f] "=r"(f_ref)                           \
                     : [p] "r"(ref + (off))                                       \
                     : "memory", "cc");                                           \
        asm volatile(insn "\n\tpushfq\n\tpopq %[f]"                               \
                     : [r] "+r"(r_dev), [f] "=r"(f_dev)                           \
                     : [p] "r"(dev + (off))                                       \
                     : "memory", "cc");                                           \
        check(name, i, r_ref, r_dev);                                             \
        check(name " flags", i, f_ref & ARITH_FLAGS, f_dev & ARITH_FLAGS);        \
        expect('R', width, off, logged);                                          \
    } while (0)

static uint64_t ref_le(long off, int width) {
    uint64_t v = 0;
    memcpy(&v, ref + off, width);
    return v;
}

/* One site shared by traced and untraced memory (as libc's memcpy is). */
__attribute__((noinline)) static void shared_store(uint8_t *p, uint32_t v) {
    asm volatile("%{disp32%} movl %k1, 0(%0)" : : "r"(p), "r"(v) : "memory");
}

static void sites(void) {
    uint32_t *heap = malloc(64);
    for (int i = 0; i < ITER; i++) {
        uint64_t x = 0x0123456789abcdefULL * (i + 1);
        STORE("st8", "%{disp32%} movb %b[v], 0(%[p])", 1, 0x10, x);
        STORE("st16", "%{disp32%} movw %w[v], 0(%[p])", 2, 0x22, x >> 8);
        STORE("st32", "%{disp32%} movl %k[v], 0(%[p])", 4, 0x34, x >> 16);
        STORE("st64", "%{disp32%} movq %[v], 0(%[p])", 8, 0x48, x);
        STORE("st32 imm", "%{disp32%} movl $0x5a5a1234, 0(%[p])", 4, 0x60, 0x5a5a1234);
        STORE("st64 imm", "%{disp32%} movq $-2, 0(%[p])", 8, 0x68, (uint64_t)-2);
        STORE("short", "movl %k[v], (%[p])", 4, 0x70, x >> 3);
        STORE("short16", "movw %w[v], (%[p])", 2, 0x7c, x >> 7);
        LOAD("short load", "movq (%[p]), %[r]", 8, 0x48, ref_le(0x48, 8));
        LOAD("ld8", "%{disp32%} movb 0(%[p]), %b[r]", 1, 0x10, ref_le(0x10, 1));
        LOAD("ld16", "%{disp32%} movw 0(%[p]), %w[r]", 2, 0x22, ref_le(0x22, 2));
        LOAD("ld32", "%{disp32%} movl 0(%[p]), %k[r]", 4, 0x34, ref_le(0x34, 4));
        LOAD("ld64", "%{disp32%} movq 0(%[p]), %[r]", 8, 0x48, ref_le(0x48, 8));
        LOAD("movzx", "%{disp32%} movzbl 0(%[p]), %k[r]", 1, 0x10, ref_le(0x10, 1));
        LOAD("movsx", "%{disp32%} movswq 0(%[p]), %[r]", 2, 0x22, ref_le(0x22, 2));
        LOAD("movsxd", "%{disp32%} movslq 0(%[p]), %[r]", 4, 0x34, ref_le(0x34, 4));
        LOAD("cmp", "%{disp32%} cmpl %k[r], 0(%[p])", 4, 0x34, ref_le(0x34, 4));
        LOAD("test", "%{disp32%} testq %[r], 0(%[p])", 8, 0x48, ref_le(0x48, 8));
        /* The same site on the heap (untraced, runs natively) and on DEV. */
        shared_store((uint8_t *)heap, (uint32_t)x);
        check("untraced through a shared site", i, (uint32_t)x, heap[0]);
        shared_store(dev + 0x80, (uint32_t)(x >> 32));
        expect('W', 4, 0x80, (uint32_t)(x >> 32));
        /* r12 as base, r13 as value, r14 as index. */
        register uint64_t base asm("r12") = (uint64_t)(dev + 0x100);
        register uint64_t value asm("r13") = x;
        register uint64_t index asm("r14") = 3;
        asm volatile("movq %0, 8(%1,%2,8)" : : "r"(value), "r"(base), "r"(index) : "memory");
        expect('W', 8, 0x120, x);
    }
    free(heap);
}

struct worker {
    int id;
};

#define PER_THREAD 4000

static void *work(void *arg) {
    int id = ((struct worker *)arg)->id;
    for (uint32_t i = 0; i < PER_THREAD; i++)
        shared_store(dev + 64 * id, (uint32_t)id << 24 | i);
    return NULL;
}

static void threads(void) {
    pthread_t t[8];
    struct worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i].id = i;
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
}

static void forked(void) {
    for (uint32_t i = 0; i < 10; i++) shared_store(dev, 0x100 + i);
    pid_t child = fork();
    if (child == 0) {
        for (uint32_t i = 0; i < 10; i++) shared_store(dev + 4, 0x200 + i);
        exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("FAIL child status %d\n", status);
        failures++;
    }
    for (uint32_t i = 0; i < 10; i++) shared_store(dev + 8, 0x300 + i);
}

/* Two hot sites back to back: a short one whose punned jump borrows the
 * first byte of the long one after it. */
__attribute__((noinline)) static void neighbours(uint8_t *p, uint32_t v) {
    asm volatile("movl %k1, 8(%0)\n\t%{disp32%} movl %k1, 0x10(%0)" : : "r"(p), "r"(v) : "memory");
}

static sigjmp_buf genuine_env;
static volatile uint64_t genuine_rip, genuine_addr;

static void on_genuine_fault(int sig, siginfo_t *info, void *ctx) {
    (void)sig;
    genuine_rip = (uint64_t)((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
    genuine_addr = (uint64_t)info->si_addr;
    siglongjmp(genuine_env, 1);
}

/* A fault at the shared site on an unmapped page: its pc and address as
 * the program's handler sees them. */
static void genuine_fault(uint8_t *unmapped, uint64_t *rip, uint64_t *addr) {
    if (sigsetjmp(genuine_env, 1) == 0) {
        shared_store(unmapped, 1);
        printf("FAIL no fault\n");
        failures++;
    }
    *rip = genuine_rip;
    *addr = genuine_addr;
}

/* genuine: a real segfault at a site, before and after it is patched,
 * reaches the program's own handler with the same pc and address. */
static void genuine(void) {
    struct sigaction sa = {.sa_sigaction = on_genuine_fault, .sa_flags = SA_SIGINFO};
    sigaction(SIGSEGV, &sa, NULL);
    uint8_t *hole = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t rip0, addr0, rip1, addr1;
    genuine_fault(hole + 64, &rip0, &addr0);
    for (uint32_t i = 0; i < 10; i++) shared_store(dev + 16, 0x600 + i);
    genuine_fault(hole + 64, &rip1, &addr1);
    if (rip0 != rip1 || addr0 != addr1 || addr0 != (uint64_t)(hole + 64)) {
        printf("FAIL genuine fault: before %" PRIx64 " at %" PRIx64 ", after %" PRIx64 " at %" PRIx64 "\n",
               rip0, addr0, rip1, addr1);
        failures++;
    }
    printf("genuine fault at pc %" PRIx64 "\n", rip1);
}

/* remap: 4 threads store through one patched site while the main thread
 * maps the file again and unmaps the old mapping, 100 times (a
 * read-write lock keeps each store on a live mapping). */
static pthread_rwlock_t remap_lock = PTHREAD_RWLOCK_INITIALIZER;
static uint8_t *volatile remap_dev;
static int remap_fd;

static volatile int remap_done;

static void *remap_worker(void *arg) {
    int id = ((struct worker *)arg)->id;
    for (uint32_t i = 0; !remap_done && i < 0xffffff; i++) {
        pthread_rwlock_rdlock(&remap_lock);
        shared_store(remap_dev + 64 * id, (uint32_t)id << 24 | i);
        pthread_rwlock_unlock(&remap_lock);
        if (i >= 8) usleep(20); /* a few stores per mapping, once patched */
    }
    return NULL;
}

static void remap(void) {
    remap_dev = dev;
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i].id = i;
        pthread_create(&t[i], NULL, remap_worker, &w[i]);
    }
    for (int round = 0; round < 100; round++) {
        uint8_t *next = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, remap_fd, 0);
        if (next == MAP_FAILED) {
            printf("FAIL mmap\n");
            failures++;
            break;
        }
        pthread_rwlock_wrlock(&remap_lock);
        uint8_t *old = remap_dev;
        remap_dev = next;
        munmap(old, 4096);
        pthread_rwlock_unlock(&remap_lock);
        usleep(100);
    }
    remap_done = 1;
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
}

static uint8_t *probe_top;
static size_t probe_used;

static void probe(int sig) {
    uint8_t here;
    (void)sig;
    probe_used = (size_t)(probe_top - &here);
}

/* The bytes a signal frame and a small handler take on this machine. */
static size_t signal_frame(void) {
    static uint8_t stack[64 << 10] __attribute__((aligned(64)));
    stack_t ss = {.ss_sp = stack, .ss_size = sizeof stack, .ss_flags = 0};
    struct sigaction sa = {.sa_handler = probe, .sa_flags = SA_ONSTACK};
    probe_top = stack + sizeof stack;
    sigaltstack(&ss, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    return probe_used;
}

static void small_altstack(void) {
    /* The signal frame, and a little over 4 KiB: room for the handler's
     * access (about 3.2 KiB), not for patching. */
    size_t size = signal_frame() + 4400;
    /* A guard page right below it: an overflow faults. */
    size_t pages = (size + 4095) / 4096;
    uint8_t *guard = mmap(NULL, (pages + 1) * 4096, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (guard == MAP_FAILED || mprotect(guard, 4096, PROT_NONE) != 0) {
        printf("FAIL stack mapping\n");
        failures++;
        return;
    }
    uint8_t *top = guard + (pages + 1) * 4096;
    stack_t ss = {.ss_sp = top - size, .ss_size = size, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) {
        printf("FAIL sigaltstack\n");
        failures++;
        return;
    }
    for (uint32_t i = 0; i < 20; i++) shared_store(dev + 12, 0x400 + i);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 2;
    remap_fd = fd;
    dev = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dev == MAP_FAILED) return 2;
    memset(ref, 0, sizeof ref);
    if (!strcmp(argv[2], "sites"))
        sites();
    else if (!strcmp(argv[2], "threads"))
        threads();
    else if (!strcmp(argv[2], "fork"))
        forked();
    else if (!strcmp(argv[2], "altstack"))
        small_altstack();
    else if (!strcmp(argv[2], "remap"))
        remap();
    else if (!strcmp(argv[2], "genuine"))
        genuine();
    else if (!strcmp(argv[2], "neighbours"))
        for (uint32_t i = 0; i < 20; i++) neighbours(dev, 0x500 + i);
    else
        return 2;
    fflush(stdout);
    return failures ? 1 : 0;
}
