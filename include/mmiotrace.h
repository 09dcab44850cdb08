/* mmiotrace.h: put markers into an mmiotrace trace from a traced program.
 *
 *     #include "mmiotrace.h"
 *     mmiotrace_mark("before reset");
 *
 * Header-only: nothing to link. Under `mmiotrace record` the preloaded
 * runtime exports mmiotrace_runtime_mark(), found with dlsym at the first
 * call; without the runtime, mmiotrace_mark() does nothing. The text
 * appears in the trace as a MARK line; text beyond 4096 bytes is cut and
 * ends with "…[truncated N bytes]" (4096 bytes in all). Link with -ldl on
 * glibc older than 2.34. */
#ifndef MMIOTRACE_H
#define MMIOTRACE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_DEFAULT */
#endif
#include <dlfcn.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*mmiotrace_mark_fn)(const char *text);

static inline void mmiotrace_mark(const char *text) {
    /* 0: not looked up yet; (mmiotrace_mark_fn)1: looked up, absent. */
    static mmiotrace_mark_fn resolved;
    mmiotrace_mark_fn fn = __atomic_load_n(&resolved, __ATOMIC_ACQUIRE);
    if (fn == 0) {
        fn = (mmiotrace_mark_fn)dlsym(RTLD_DEFAULT, "mmiotrace_runtime_mark");
        if (fn == 0) fn = (mmiotrace_mark_fn)1;
        __atomic_store_n(&resolved, fn, __ATOMIC_RELEASE);
    }
    if (fn != (mmiotrace_mark_fn)1) fn(text);
}

#ifdef __cplusplus
}
#endif

#endif /* MMIOTRACE_H */
