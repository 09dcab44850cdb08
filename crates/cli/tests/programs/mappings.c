/* Mappings changed after the fact, and mappings of the same file.
 * Usage: mappings FILE (16 pages, traced). Prints the expected trace as
 *   E MAP <n> / E UNMAP <n>   (n: the n-th traced mapping, from 1; a MAP
 *                              of an n already seen describes it again)
 *   E R|W <n> <width> <offset> <value>
 * and other lines starting with "OK" or "FAIL". */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define PAGE 4096

static int maps;

static int new_map(void)
{
	printf("E MAP %d\n", ++maps);
	return maps;
}

static void w32(volatile uint8_t *base, long off, uint32_t v, int map, long reported)
{
	*(volatile uint32_t *)(base + off) = v;
	printf("E W %d 4 %lx %x\n", map, reported, v);
}

static uint32_t r32(volatile uint8_t *base, long off, int map, long reported)
{
	uint32_t v = *(volatile uint32_t *)(base + off);
	printf("E R %d 4 %lx %x\n", map, reported, v);
	return v;
}

static void check(int ok, const char *what)
{
	printf("%s %s\n", ok ? "OK" : "FAIL", what);
}

static volatile uint8_t *denied_addr;
static int denied;
extern char store_insn[], store_end[];
__attribute__((noipa)) static void store_at(volatile void *p, uint32_t v)
{
	__asm__ volatile(".globl store_insn, store_end\nstore_insn: movl %1, (%0)\nstore_end:"
			 : : "a"(p), "d"(v) : "memory");
}

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	greg_t *gregs = ((ucontext_t *)ctx)->uc_mcontext.gregs;
	denied = info->si_code == SEGV_ACCERR && info->si_addr == (void *)denied_addr &&
		 gregs[REG_RIP] == (greg_t)store_insn;
	gregs[REG_RIP] = (greg_t)store_end;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 2)
		return 2;
	int fd = open(argv[1], O_RDWR);
	if (fd < 0) {
		perror("open");
		return 2;
	}

	/* The same file mapped twice: two traced mappings of the same memory. */
	volatile uint8_t *a = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	int ma = new_map();
	volatile uint8_t *b = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, PAGE);
	int mb = new_map();
	if (a == MAP_FAILED || b == MAP_FAILED)
		return 2;
	w32(a, PAGE + 8, 0xa1, ma, PAGE + 8);
	check(r32(b, 8, mb, PAGE + 8) == 0xa1, "second mapping sees the first's write");
	w32(b, 12, 0xb1, mb, PAGE + 12);
	check(r32(a, PAGE + 12, ma, PAGE + 12) == 0xb1, "first mapping sees the second's write");

	/* MAP_PRIVATE of a traced file: not traced (a warning says so); reads
	 * see the file, writes stay private. */
	volatile uint8_t *p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		return 2;
	check(*(volatile uint32_t *)(p + PAGE + 8) == 0xa1, "private mapping reads the file");
	*(volatile uint32_t *)(p + PAGE + 8) = 0xdead;
	check(r32(a, PAGE + 8, ma, PAGE + 8) == 0xa1, "private write stays private");
	munmap((void *)p, 2 * PAGE);

	/* Read-only by mprotect: a store faults as it would untraced, reaching
	 * the program's handler with the kernel's siginfo; back to read-write,
	 * stores are traced again. */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);
	if (mprotect((void *)(a + 2 * PAGE), PAGE, PROT_READ) != 0)
		return 2;
	denied_addr = a + 2 * PAGE + 16;
	store_at(denied_addr, 0x51);
	check(denied, "store to read-only traced page faulted with SEGV_ACCERR at its address");
	check(r32(a, 2 * PAGE + 16, ma, 2 * PAGE + 16) == 0, "the refused store did not happen");
	if (mprotect((void *)(a + 2 * PAGE), PAGE, PROT_READ | PROT_WRITE) != 0)
		return 2;
	w32(a, 2 * PAGE + 16, 0x52, ma, 2 * PAGE + 16);

	/* A hole in the middle: the rest stays traced, offsets unchanged. */
	if (munmap((void *)(a + PAGE), PAGE) != 0)
		return 2;
	w32(a, 4, 0x10, ma, 4);
	w32(a, 3 * PAGE + 4, 0x13, ma, 3 * PAGE + 4);
	w32(b, 4, 0x14, mb, PAGE + 4); /* the other mapping of that page is untouched */

	/* mremap: grow and move pages 2-3 of a, shrink it back, move it. */
	volatile uint8_t *g = mremap((void *)(a + 2 * PAGE), 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE);
	if (g == MAP_FAILED)
		return 2;
	printf("E MAP %d\n", ma); /* described again: it now covers offset 5 * PAGE */
	check(r32(g, 16, ma, 2 * PAGE + 16) == 0x52, "grown mapping keeps its contents");
	w32(g, 3 * PAGE, 0x15, ma, 5 * PAGE);
	volatile uint8_t *s = mremap((void *)g, 4 * PAGE, PAGE, 0);
	if (s != g)
		return 2;
	w32(s, 20, 0x16, ma, 2 * PAGE + 20);
	volatile uint8_t *m = mmap(NULL, 2 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	volatile uint8_t *moved = mremap((void *)s, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)(m + PAGE));
	if (moved != m + PAGE)
		return 2;
	printf("E MAP %d\n", ma); /* described again: it moved */
	munmap((void *)m, PAGE);
	w32(moved, 24, 0x17, ma, 2 * PAGE + 24);
	munmap((void *)moved, PAGE);
	munmap((void *)a, PAGE);
	printf("E UNMAP %d\n", ma);

	/* MAP_FIXED over a traced range: the new mapping is plain memory. */
	*(volatile uint32_t *)(b + PAGE) = 0x20;
	printf("E W %d 4 %x 20\n", mb, 2 * PAGE);
	if (mmap((void *)b, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != b)
		return 2;
	printf("E UNMAP %d\n", mb);
	*(volatile uint32_t *)b = 0x21;

	uint32_t word;
	check(pread(fd, &word, 4, 5 * PAGE) == 4 && word == 0x15, "grown page reached the file");
	check(pread(fd, &word, 4, 2 * PAGE + 16) == 4 && word == 0x52, "store after mprotect reached the file");
	check(pread(fd, &word, 4, PAGE + 8) == 4 && word == 0xa1, "file untouched by the private write");
	printf("DONE\n");
	return 0;
}
