//! The cost of entering the kernel and coming back: `getpid` through
//! `syscall(2)`, which glibc cannot answer from a cache, so every call is
//! a real system call. Issue 16's target for a patched traced access is a
//! fraction of it (≤ 0.2×). And the cost of the one instruction every
//! patched access's record needs, reading the TSC for its time.
//!
//! # Safety
//!
//! This module calls `libc::syscall`, a variadic C function, with
//! `SYS_getpid`, which takes no arguments, touches no memory and cannot
//! fail.

/// Makes `calls` `getpid` system calls.
pub fn getpid_loop(calls: u32) {
    for _ in 0..calls {
        // SAFETY: SYS_getpid takes no arguments and has no effect on memory.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getpid) });
    }
}

/// Reads the TSC `reads` times, back to back (`rdtsc`, as the fast path
/// stamps a record). Returns a sum of the readings, so that none is
/// optimized away.
pub fn tsc_loop(reads: u32) -> u64 {
    let mut sum = 0u64;
    for _ in 0..reads {
        // SAFETY: rdtsc has no memory effects; every x86-64 CPU has it.
        sum = sum.wrapping_add(unsafe { core::arch::x86_64::_rdtsc() });
    }
    sum
}
