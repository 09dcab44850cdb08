/* mmiotrace_hook.h: the C ABI of a hook plugin for `mmiotrace record
 * --hook-lib LIB.so` and `mmiotrace record --model LIB.so` (docs/HOOKS.md).
 *
 * A plugin is a shared library that exports mmiotrace_hook_access() and,
 * optionally, mmiotrace_hook_map(). The runtime that mmiotrace preloads
 * into the traced program loads it with dlopen() when the program maps its
 * first traced file (its constructors run then, outside any signal
 * handler), in every traced process.
 *
 * WHERE THE CALLBACK RUNS. mmiotrace_hook_access() is called from the
 * runtime's SIGSEGV handler, on the thread that made the access, possibly
 * on several threads at once, possibly while that thread was inside
 * malloc, holding a lock, or in the middle of anything else. So inside it:
 *   - no allocation (malloc, new, Rust's Box/Vec/String/format!), no free;
 *   - no locks (pthread mutexes, Rust's Mutex/RwLock, stdio, printf);
 *   - only async-signal-safe functions (signal-safety(7)): write(2) and
 *     clock_gettime(2) are fine, printf(3) is not;
 *   - no access to traced mappings (it would fault inside the handler);
 *   - no unwinding out of it: a Rust plugin is built with panic=abort
 *     and must not panic; a C++ one must not throw;
 *   - keep state in static memory, with atomics for what several threads
 *     share, and return quickly: the program waits.
 * mmiotrace_hook_map() runs outside the handler (inside the program's
 * mmap call) and may allocate, but must not map a traced file itself.
 *
 * CALLS. Accesses of 1, 2, 4 or 8 bytes to traced mappings reach the
 * plugin (wider vector accesses, and accesses made for system calls that
 * were handed traced memory, do not), unless a --hook rule already acted
 * on the access. An access the program's instruction makes in several
 * pieces (it crosses a mapping's end, or is split into power-of-two parts)
 * is one call per piece.
 *   - A write: one call, phase MMIOTRACE_HOOK_BEFORE, `value` the value the
 *     program writes. Return PASS to write it, MODIFIED to write `value` as
 *     the callback changed it, DROP to write nothing.
 *   - A read: a call with phase MMIOTRACE_HOOK_BEFORE and `value` 0.
 *     Return MODIFIED to answer it yourself with `value` (the device is not
 *     read), DROP to answer all ones (a device that is not there), or PASS
 *     to read the device. After a PASS, a second call with phase
 *     MMIOTRACE_HOOK_AFTER and `value` the value the device gave: return
 *     MODIFIED to give the program `value` instead, PASS to leave it.
 *   - `value` is cut to `width` bytes after the call.
 * With --model, no device is behind the mapping: what the plugin passes
 * goes to anonymous memory (reads of it return what was last passed there,
 * zero at first), and what it answers is the device's own value (it is not
 * marked in the trace). With --hook-lib, every access the plugin changes
 * (MODIFIED or DROP) is marked in the trace as `hook=0` with the device's
 * value.
 *
 * VERSIONS. `abi_version` is MMIOTRACE_HOOK_ABI_VERSION of the runtime
 * that calls; fields are only ever added at the end. */
#ifndef MMIOTRACE_HOOK_H
#define MMIOTRACE_HOOK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MMIOTRACE_HOOK_ABI_VERSION 1

/* Return values of mmiotrace_hook_access(). */
#define MMIOTRACE_HOOK_PASS 0
#define MMIOTRACE_HOOK_MODIFIED 1
#define MMIOTRACE_HOOK_DROP 2

/* mmiotrace_hook_access.dir */
#define MMIOTRACE_HOOK_READ 0
#define MMIOTRACE_HOOK_WRITE 1

/* mmiotrace_hook_access.phase */
#define MMIOTRACE_HOOK_BEFORE 0
#define MMIOTRACE_HOOK_AFTER 1

struct mmiotrace_hook_access {
	uint32_t abi_version;
	/* The mapping: the id of its MAP line in the trace. */
	uint32_t map_id;
	/* Byte offset of the access in the mapping (as in the file). */
	uint64_t offset;
	/* See CALLS above; little-endian, the low `width` bytes. */
	uint64_t value;
	/* 1, 2, 4 or 8 bytes. */
	uint8_t width;
	/* MMIOTRACE_HOOK_READ or MMIOTRACE_HOOK_WRITE. */
	uint8_t dir;
	/* MMIOTRACE_HOOK_BEFORE or MMIOTRACE_HOOK_AFTER. */
	uint8_t phase;
	uint8_t reserved;
	/* The thread making the access. */
	uint32_t tid;
};

/* Required. Called for each access, in the signal handler (see above). */
int mmiotrace_hook_access(struct mmiotrace_hook_access *access);

/* Optional. Called when a traced mapping appears, before any access to
 * it: its map id, the mapped file's path, the offset in the file and the
 * length. Outside the signal handler. */
void mmiotrace_hook_map(uint32_t map_id, const char *path, uint64_t file_offset, uint64_t len);

#ifdef __cplusplus
}
#endif

#endif /* MMIOTRACE_HOOK_H */
