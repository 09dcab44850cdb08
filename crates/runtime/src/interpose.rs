//! The symbols the runtime exports to the preloaded program.
//!
//! # Safety
//!
//! Exporting unmangled symbols that shadow libc's (`mmap`, `munmap`,
//! `mremap`, `mprotect`, `sigaction`) is what makes interposition work, and
//! it is `unsafe` by nature: the signatures must match the C ones exactly.
//! These functions only convert between the C calling convention (return
//! value plus `errno`) and the runtime's `Result`s.

use core::ffi::{c_char, c_int, c_void};

use crate::sys::{self, Errno};
use crate::{runtime, signals};

fn to_ptr(result: Result<usize, Errno>) -> *mut c_void {
    match result {
        Ok(addr) => addr as *mut c_void,
        Err(errno) => {
            sys::set_errno(errno.0);
            libc::MAP_FAILED
        }
    }
}

fn to_int(result: Result<(), Errno>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(errno) => {
            sys::set_errno(errno.0);
            -1
        }
    }
}

/// `mmap(2)`: traced files get an alias and a `PROT_NONE` program range.
///
/// # Safety
///
/// As `mmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: libc::off_t,
) -> *mut c_void {
    // SAFETY: the caller's contract is mmap's.
    to_ptr(unsafe { runtime::mmap(addr as usize, len, prot, flags, fd, offset) })
}

/// `mmap64(2)`, the same call on x86-64.
///
/// # Safety
///
/// As `mmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: libc::off64_t,
) -> *mut c_void {
    // SAFETY: the caller's contract is mmap's.
    to_ptr(unsafe { runtime::mmap(addr as usize, len, prot, flags, fd, offset) })
}

/// `munmap(2)`.
///
/// # Safety
///
/// As `munmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    // SAFETY: the caller's contract is munmap's.
    to_int(unsafe { runtime::munmap(addr as usize, len) })
}

/// `mprotect(2)`.
///
/// # Safety
///
/// As `mprotect(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int {
    // SAFETY: the caller's contract is mprotect's.
    to_int(unsafe { runtime::mprotect(addr as usize, len, prot) })
}

/// `mremap(2)`. C declares it variadic; on x86-64 the optional fifth
/// argument arrives in the same register as a fixed one, and it is only
/// read when `MREMAP_FIXED` says it was passed.
///
/// # Safety
///
/// As `mremap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: usize,
    new_len: usize,
    flags: c_int,
    new_addr: *mut c_void,
) -> *mut c_void {
    let new_addr = if flags & libc::MREMAP_FIXED != 0 {
        new_addr as usize
    } else {
        0
    };
    // SAFETY: the caller's contract is mremap's.
    to_ptr(unsafe { runtime::mremap(old as usize, old_len, new_len, flags, new_addr) })
}

/// `sigaction(2)`: once the runtime handles SIGSEGV and SIGTRAP, the
/// program's handlers for them are remembered and chained to, not installed.
///
/// # Safety
///
/// As `sigaction(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    if let Some(ret) = signals::program_sigaction(sig, act, old) {
        return ret;
    }
    if !act.is_null() && runtime::tracing_requested() {
        // A handler that blocks SIGSEGV would be killed by its own traced access.
        // SAFETY: the caller passed a readable sigaction.
        let mut copy = unsafe { *act };
        keep_deliverable(&mut copy.sa_mask);
        return signals::real_sigaction(sig, &copy, old);
    }
    signals::real_sigaction(sig, act, old)
}

/// Removes the runtime's synchronous signals from a set the program wants blocked.
fn keep_deliverable(set: &mut libc::sigset_t) {
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigdelset(set, libc::SIGSEGV);
        libc::sigdelset(set, libc::SIGTRAP);
    }
}

/// `signal()` in its BSD flavour, as glibc's: the handler stays installed,
/// system calls restart, the signal is blocked while its handler runs.
///
/// # Safety
///
/// As `signal(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    simple_signal(sig, handler, libc::SA_RESTART, true)
}

/// Same as `signal`.
///
/// # Safety
///
/// As `signal(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bsd_signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    simple_signal(sig, handler, libc::SA_RESTART, true)
}

/// `signal()` in its System V flavour: one-shot, not blocked in its handler.
///
/// # Safety
///
/// As `signal(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysv_signal(
    sig: c_int,
    handler: libc::sighandler_t,
) -> libc::sighandler_t {
    simple_signal(sig, handler, libc::SA_RESETHAND | libc::SA_NODEFER, false)
}

/// Same as `sysv_signal`.
///
/// # Safety
///
/// As `signal(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __sysv_signal(
    sig: c_int,
    handler: libc::sighandler_t,
) -> libc::sighandler_t {
    simple_signal(sig, handler, libc::SA_RESETHAND | libc::SA_NODEFER, false)
}

fn simple_signal(
    sig: c_int,
    handler: libc::sighandler_t,
    flags: c_int,
    block_self: bool,
) -> libc::sighandler_t {
    if handler == libc::SIG_ERR || !(1..65).contains(&sig) {
        sys::set_errno(libc::EINVAL);
        return libc::SIG_ERR;
    }
    // SAFETY: zeroed sigactions are valid; the set functions get valid sets.
    let (mut act, mut old): (libc::sigaction, libc::sigaction) =
        unsafe { (core::mem::zeroed(), core::mem::zeroed()) };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    // SAFETY: as above.
    unsafe {
        libc::sigemptyset(&mut act.sa_mask);
        if block_self {
            libc::sigaddset(&mut act.sa_mask, sig);
        }
    }
    // SAFETY: valid pointers to the two sigactions above.
    if unsafe { sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// glibc's internal signals (thread cancellation, setxid), which it never
/// lets a program block.
const GLIBC_INTERNAL: u64 = (1 << (32 - 1)) | (1 << (33 - 1));

fn mask_change(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    let mut kernel_set: u64 = 0;
    if !set.is_null() {
        // SAFETY: a readable sigset_t, whose first 8 bytes are the kernel's set.
        kernel_set = unsafe { *(set as *const u64) };
        if how != libc::SIG_UNBLOCK {
            kernel_set &= !GLIBC_INTERNAL;
            if runtime::tracing_requested() {
                // A thread that blocks SIGSEGV would be killed by its next
                // traced access.
                kernel_set &= !((1 << (libc::SIGSEGV - 1)) | (1 << (libc::SIGTRAP - 1)));
            }
        }
    }
    let mut old_set: u64 = 0;
    // SAFETY: rt_sigprocmask reads and writes 8-byte sets that live across
    // the call; a null new set only queries.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            if set.is_null() {
                core::ptr::null()
            } else {
                &kernel_set as *const u64
            },
            &mut old_set as *mut u64,
            8usize,
        )
    };
    if ret == 0 && !old.is_null() {
        // SAFETY: a writable sigset_t.
        unsafe {
            libc::sigemptyset(old);
            *(old as *mut u64) = old_set;
        }
    }
    if ret == 0 { 0 } else { sys::get_errno() }
}

/// `sigprocmask(2)`: SIGSEGV and SIGTRAP cannot be blocked while tracing.
///
/// # Safety
///
/// As `sigprocmask(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigprocmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    match mask_change(how, set, old) {
        0 => 0,
        errno => {
            sys::set_errno(errno);
            -1
        }
    }
}

/// `pthread_sigmask(3)`: as `sigprocmask`, returning the error number.
///
/// # Safety
///
/// As `pthread_sigmask(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_sigmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    mask_change(how, set, old)
}

/// Pushes a MARK record with `text` into the trace (see include/mmiotrace.h).
///
/// # Safety
///
/// `text` is null or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmiotrace_runtime_mark(text: *const c_char) {
    if text.is_null() {
        return;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let text = unsafe { core::ffi::CStr::from_ptr(text) };
    runtime::mark(text.to_bytes());
}
