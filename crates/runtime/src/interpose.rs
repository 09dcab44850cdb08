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
    signals::real_sigaction(sig, act, old)
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
