/* A hook plugin (include/mmiotrace_hook.h): bits that read as 0, as on a
 * device whose "ready" bit never sets.
 *
 *     cc -shared -fPIC -O2 -I include -o stuck_bits.so examples/hooks/stuck_bits.c
 *     STUCK_OFFSET=0x20 STUCK_MASK=0x10000000 \
 *         mmiotrace record --hook-lib ./stuck_bits.so -- ./my-driver
 *
 * STUCK_OFFSET is the byte offset of a register (in every traced
 * mapping), STUCK_MASK the bits that read as 0 in it. Both are read once,
 * when the runtime loads the plugin, never in the signal handler. */
#include <stdint.h>
#include <stdlib.h>

#include "mmiotrace_hook.h"

static uint64_t stuck_offset = UINT64_MAX;
static uint64_t stuck_mask;

__attribute__((constructor)) static void configure(void)
{
	const char *offset = getenv("STUCK_OFFSET");
	const char *mask = getenv("STUCK_MASK");
	if (offset && mask) {
		stuck_offset = strtoull(offset, NULL, 0);
		stuck_mask = strtoull(mask, NULL, 0);
	}
}

int mmiotrace_hook_access(struct mmiotrace_hook_access *access)
{
	/* A read of the register, or a piece of one, after the device answered. */
	uint64_t start = access->offset;
	uint64_t end = start + access->width;
	if (access->dir != MMIOTRACE_HOOK_READ || access->phase != MMIOTRACE_HOOK_AFTER ||
	    end <= stuck_offset || start >= stuck_offset + 8)
		return MMIOTRACE_HOOK_PASS;
	uint64_t mask = start >= stuck_offset ? stuck_mask >> (8 * (start - stuck_offset))
					      : stuck_mask << (8 * (stuck_offset - start));
	if ((access->value & mask) == 0)
		return MMIOTRACE_HOOK_PASS;
	access->value &= ~mask;
	return MMIOTRACE_HOOK_MODIFIED;
}
