/* A traced program's own signal handling behaves as untraced.
 * Usage: signals MODE FILE [ARGS]
 *   handlers FILE UNTRACED : SIGSEGV/SIGBUS/SIGTRAP handlers installed with
 *       sigaction before the first traced mapping, replaced with sigaction
 *       and signal() after it; genuine faults reach them with the kernel's
 *       siginfo and context (the handlers check both and skip the faulting
 *       instruction); traced accesses keep working in between.
 *   mask FILE : the program's view of its mask (sigprocmask,
 *       pthread_sigmask, a new thread's inherited mask, sa_mask), and a
 *       SIGSEGV sent while "blocked" arriving only when unblocked.
 *   blockedfault FILE : a genuine fault with SIGSEGV blocked kills the
 *       program, handler or not, as the kernel does.
 *   altstack FILE SIZE : handlers on an alternate stack of SIZE bytes touch
 *       traced memory: a SIGUSR1 handler, and a SIGSEGV handler for a
 *       genuine fault and for a stack overflow.
 *   alarm FILE TICKS : a SIGALRM handler at 10 kHz touches traced memory
 *       (a load and a store, a lock add, a single-stepped gather at 0x200)
 *       while the main loop does the same (gather at 0x240), until TICKS
 *       alarms. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/time.h>
#include <ucontext.h>
#include "common.h"

static volatile uint32_t *dev;
static volatile int *volatile wild = (volatile int *)16;
static sigjmp_buf env;

/* Instructions whose addresses the handlers check: each stores to (%rax). */
extern char fault_segv[], fault_segv_end[], fault_bus[], fault_bus_end[], trap_after[];
__attribute__((noipa)) static void fault_at(volatile void *p)
{
	__asm__ volatile(".globl fault_segv, fault_segv_end\n"
			 "fault_segv: movl $7, (%0)\nfault_segv_end:" : : "a"(p) : "memory");
}
__attribute__((noipa)) static void bus_at(volatile void *p)
{
	__asm__ volatile(".globl fault_bus, fault_bus_end\n"
			 "fault_bus: movl $9, (%0)\nfault_bus_end:" : : "a"(p) : "memory");
}
__attribute__((noipa)) static void trap(void)
{
	__asm__ volatile("int3\n.globl trap_after\ntrap_after:" : : : "memory");
}

static const char *segv_seen = "none";
static int context_ok;

static void check_and_skip(ucontext_t *uc, char *insn, char *end, void *addr, void *want_addr)
{
	greg_t *gregs = uc->uc_mcontext.gregs;
	context_ok = gregs[REG_RIP] == (greg_t)insn && addr == want_addr && gregs[REG_RAX] == (greg_t)want_addr;
	gregs[REG_RIP] = (greg_t)end;
}

static void on_segv_first(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	segv_seen = info->si_code == SEGV_MAPERR ? "first" : "first-wrong-code";
	check_and_skip(ctx, fault_segv, fault_segv_end, info->si_addr, (void *)16);
}

static void on_segv_second(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	segv_seen = info->si_code == SEGV_MAPERR ? "second" : "second-wrong-code";
	check_and_skip(ctx, fault_segv, fault_segv_end, info->si_addr, (void *)16);
}

static void on_segv_plain(int sig)
{
	segv_seen = sig == SIGSEGV ? "plain" : "plain-wrong-signal";
	siglongjmp(env, 1);
}

static void *bus_addr;
static int bus_ok;
static void on_bus(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	bus_ok = info->si_code == BUS_ADRERR;
	check_and_skip(ctx, fault_bus, fault_bus_end, info->si_addr, bus_addr);
	bus_ok = bus_ok && context_ok;
}

static int trap_ok;
static void on_trap(int sig, siginfo_t *info, void *ctx)
{
	(void)sig; (void)info;
	trap_ok = ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP] == (greg_t)trap_after;
}

static void install(int sig, void (*handler)(int, siginfo_t *, void *), struct sigaction *old)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(sig, &sa, old) != 0) {
		perror("sigaction");
		exit(2);
	}
}

static int handlers(const char *path, const char *untraced)
{
	install(SIGSEGV, on_segv_first, NULL);
	install(SIGBUS, on_bus, NULL);
	install(SIGTRAP, on_trap, NULL);
	dev = (volatile uint32_t *)map_file(path, 4096);
	dev[0] = 1;
	fault_at(wild);
	printf("segv %s context %d\n", segv_seen, context_ok);
	dev[1] = 2;

	struct sigaction old;
	install(SIGSEGV, on_segv_second, &old);
	printf("old handler is first: %d\n", old.sa_sigaction == on_segv_first && (old.sa_flags & SA_SIGINFO));
	context_ok = 0;
	fault_at(wild);
	printf("segv %s context %d\n", segv_seen, context_ok);
	dev[2] = 3;

	sighandler_t previous = signal(SIGSEGV, on_segv_plain);
	printf("signal returned second: %d\n", previous == (sighandler_t)on_segv_second);
	if (sigsetjmp(env, 1) == 0)
		*wild = 1;
	printf("segv %s\n", segv_seen);
	dev[3] = 4;

	/* SIGBUS: past the end of an untraced file. */
	int fd = open(untraced, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 4096) != 0) {
		perror(untraced);
		return 2;
	}
	volatile char *file = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (file == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	bus_addr = (void *)(file + 4096);
	bus_at(bus_addr);
	printf("bus %d\n", bus_ok);

	trap();
	printf("trap %d\n", trap_ok);
	dev[4] = 5;
	printf("values %u %u %u %u %u\n", dev[0], dev[1], dev[2], dev[3], dev[4]);
	return 0;
}

static int has(const sigset_t *set, int sig)
{
	return sigismember(set, sig) == 1;
}

static void *mask_thread(void *arg)
{
	(void)arg;
	sigset_t cur;
	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	printf("thread sees segv %d trap %d usr1 %d\n", has(&cur, SIGSEGV), has(&cur, SIGTRAP), has(&cur, SIGUSR1));
	dev[1] = 0x22;
	sigset_t segv;
	sigemptyset(&segv);
	sigaddset(&segv, SIGSEGV);
	pthread_sigmask(SIG_UNBLOCK, &segv, NULL);
	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	printf("thread after unblock segv %d\n", has(&cur, SIGSEGV));
	return NULL;
}

static volatile int sent_segv;
static void on_sent_segv(int sig)
{
	(void)sig;
	sent_segv++;
	dev[3] = 0x44;
}

static int mask(const char *path)
{
	dev = (volatile uint32_t *)map_file(path, 4096);
	sigset_t set, cur;
	sigemptyset(&set);
	sigaddset(&set, SIGSEGV);
	sigaddset(&set, SIGTRAP);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	dev[0] = 0x11;
	sigprocmask(SIG_SETMASK, NULL, &cur);
	printf("sigprocmask sees segv %d trap %d usr1 %d\n", has(&cur, SIGSEGV), has(&cur, SIGTRAP), has(&cur, SIGUSR1));
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	printf("pthread_sigmask sees segv %d trap %d usr1 %d\n", has(&cur, SIGSEGV), has(&cur, SIGTRAP), has(&cur, SIGUSR1));

	pthread_t thread;
	pthread_create(&thread, NULL, mask_thread, NULL);
	pthread_join(thread, NULL);
	sigprocmask(SIG_SETMASK, NULL, &cur);
	printf("main still sees segv %d\n", has(&cur, SIGSEGV));

	/* Sent while blocked: pending until unblocked. */
	signal(SIGSEGV, on_sent_segv);
	raise(SIGSEGV);
	printf("delivered while blocked %d\n", sent_segv);
	sigset_t segv;
	sigemptyset(&segv);
	sigaddset(&segv, SIGSEGV);
	sigset_t before;
	sigprocmask(SIG_UNBLOCK, &segv, &before);
	printf("delivered after unblock %d (old mask had segv %d)\n", sent_segv, has(&before, SIGSEGV));
	sigprocmask(SIG_SETMASK, NULL, &cur);
	printf("after unblock segv %d trap %d\n", has(&cur, SIGSEGV), has(&cur, SIGTRAP));

	/* A handler's sa_mask reads back as set. */
	struct sigaction sa, back;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGSEGV);
	sigaddset(&sa.sa_mask, SIGUSR1);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGUSR2, NULL, &back);
	printf("sa_mask segv %d usr1 %d\n", has(&back.sa_mask, SIGSEGV), has(&back.sa_mask, SIGUSR1));
	dev[2] = 0x33;
	return 0;
}

static int blockedfault(const char *path)
{
	dev = (volatile uint32_t *)map_file(path, 4096);
	signal(SIGSEGV, on_segv_plain);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGSEGV);
	sigprocmask(SIG_BLOCK, &set, NULL);
	dev[0] = 0x55;
	printf("blocked\n");
	fflush(stdout);
	if (sigsetjmp(env, 1) == 0)
		*wild = 1;
	printf("survived: handler %s\n", segv_seen);
	return 0;
}

static char *alt_lo, *alt_hi;
static int usr1_on_alt, segv_on_alt;
static volatile int usr1_count;

static int on_altstack(void)
{
	char here;
	return &here >= alt_lo && &here < alt_hi;
}

static void on_usr1(int sig)
{
	(void)sig;
	usr1_on_alt += on_altstack();
	int n = usr1_count++;
	dev[16 + n] = (uint32_t)n;
	*(volatile uint64_t *)(dev + 32) = (uint64_t)n << 32 | dev[16 + n];
}

static void on_segv_alt(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	segv_on_alt += on_altstack();
	/* A traced access while on the alternate stack, inside a handler that
	 * the runtime chained to from its own. */
	dev[40] = dev[40] + 1;
	if (info->si_addr == (void *)16) {
		((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP] = (greg_t)fault_segv_end;
		return;
	}
	siglongjmp(env, 1);
}

static volatile int depth;
__attribute__((noinline)) static int recurse(int n)
{
	volatile char pad[512];
	pad[0] = (char)n;
	depth = n;
	if (depth < 0)
		return 0;
	return recurse(n + 1) + pad[0];
}

static size_t alt_size;
static void *overflow_thread(void *arg)
{
	(void)arg;
	stack_t ss = { .ss_sp = malloc(alt_size), .ss_size = alt_size, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL) != 0) {
		perror("sigaltstack");
		exit(2);
	}
	alt_lo = ss.ss_sp;
	alt_hi = alt_lo + alt_size;
	if (sigsetjmp(env, 1) == 0)
		recurse(0);
	printf("overflow caught on altstack %d\n", segv_on_alt);
	return NULL;
}

static int altstack(const char *path, size_t size)
{
	dev = (volatile uint32_t *)map_file(path, 4096);
	alt_size = size;
	stack_t ss = { .ss_sp = malloc(size), .ss_size = size, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL) != 0) {
		perror("sigaltstack");
		return 2;
	}
	alt_lo = ss.ss_sp;
	alt_hi = alt_lo + size;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGUSR1, &sa, NULL);
	for (int i = 0; i < 10; i++)
		raise(SIGUSR1);
	printf("usr1 %d on altstack %d\n", usr1_count, usr1_on_alt);

	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv_alt;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigaction(SIGSEGV, &sa, NULL);
	fault_at(wild);
	printf("fault caught on altstack %d\n", segv_on_alt);

	/* A stack overflow, in a thread with a small stack and its own altstack. */
	segv_on_alt = 0;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_t thread;
	pthread_create(&thread, &attr, overflow_thread, NULL);
	pthread_join(thread, NULL);
	printf("counter %u\n", dev[40]);
	return 0;
}

static volatile uint64_t ticks;
static volatile uint64_t *dev64;

/* A gather of 4 dwords from traced memory: its addresses come from a
 * vector register, so the runtime single-steps it on the alias (a signal
 * arriving between the fault and the step must wait for the step). */
static int have_avx2;
static void gather4(long offset)
{
	static const int index[4] = { 0, 1, 2, 3 };
	if (!have_avx2)
		return;
	const char *base = (const char *)dev + offset;
	__asm__ volatile("vmovdqu %1, %%xmm1\n\t"
			 "vpcmpeqd %%xmm2, %%xmm2, %%xmm2\n\t"
			 "vpgatherdd %%xmm2, (%0,%%xmm1,4), %%xmm0"
			 : : "r"(base), "m"(index) : "xmm0", "xmm1", "xmm2", "memory");
}

static void on_alarm(int sig)
{
	(void)sig;
	dev[1] = dev[1] + 1;
	__asm__ volatile("lock addq $1, 128(%0)" : : "r"(dev) : "memory", "cc");
	gather4(0x200);
	ticks++;
}

static int alarm_mode(const char *path, uint64_t want)
{
	dev = (volatile uint32_t *)map_file(path, 4096);
	dev64 = (volatile uint64_t *)dev;
	have_avx2 = !!__builtin_cpu_supports("avx2");
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval timer = { { 0, 100 }, { 0, 100 } };
	setitimer(ITIMER_REAL, &timer, NULL);
	uint64_t writes = 0, locked = 0;
	while (ticks < want) {
		dev[64 + writes % 64] = (uint32_t)writes;
		writes++;
		if (writes % 4 == 0) {
			__asm__ volatile("lock addq $1, 136(%0)" : : "r"(dev) : "memory", "cc");
			gather4(0x240);
			locked++;
		}
	}
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	setitimer(ITIMER_REAL, &off, NULL);
	printf("ticks %llu writes %llu locked %llu gathers %d counters %u %llu %llu\n", (unsigned long long)ticks,
	       (unsigned long long)writes, (unsigned long long)locked, have_avx2, dev[1], (unsigned long long)dev64[16],
	       (unsigned long long)dev64[17]);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 4 && strcmp(argv[1], "handlers") == 0)
		return handlers(argv[2], argv[3]);
	if (argc >= 3 && strcmp(argv[1], "mask") == 0)
		return mask(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "blockedfault") == 0)
		return blockedfault(argv[2]);
	if (argc >= 4 && strcmp(argv[1], "altstack") == 0)
		return altstack(argv[2], (size_t)atol(argv[3]));
	if (argc >= 4 && strcmp(argv[1], "alarm") == 0)
		return alarm_mode(argv[2], (uint64_t)atoll(argv[3]));
	fprintf(stderr, "usage: signals MODE FILE [ARGS]\n");
	return 2;
}
