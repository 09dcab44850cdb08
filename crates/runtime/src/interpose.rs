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

use crate::context::{kernel_set, kernel_set_mut};
use crate::sys::{self, Errno};
use crate::threads::{self, MaskView, VIEW_SIGNALS};
use crate::{arming, init, log, real, signals, state};

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
    to_ptr(unsafe { arming::mmap(addr as usize, len, prot, flags, fd, offset) })
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
    to_ptr(unsafe { arming::mmap(addr as usize, len, prot, flags, fd, offset) })
}

/// `munmap(2)`.
///
/// # Safety
///
/// As `munmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    // SAFETY: the caller's contract is munmap's.
    to_int(unsafe { arming::munmap(addr as usize, len) })
}

/// `mprotect(2)`.
///
/// # Safety
///
/// As `mprotect(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int {
    // SAFETY: the caller's contract is mprotect's.
    to_int(unsafe { arming::mprotect(addr as usize, len, prot) })
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
    to_ptr(unsafe { arming::mremap(old as usize, old_len, new_len, flags, new_addr) })
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
    if !state::tracing_requested() {
        return signals::real_sigaction(sig, act, old);
    }
    let previous_view = signals::sa_mask_view(sig);
    let ret = if act.is_null() {
        signals::real_sigaction(sig, act, old)
    } else {
        // A handler that blocks SIGSEGV would be killed by its own traced access.
        // SAFETY: the caller passed a readable sigaction.
        let mut copy = unsafe { *act };
        let wanted = kernel_set(&copy.sa_mask) & VIEW_SIGNALS;
        keep_deliverable(&mut copy.sa_mask);
        let ret = signals::real_sigaction(sig, &copy, old);
        if ret == 0 {
            signals::set_sa_mask_view(sig, wanted);
        }
        ret
    };
    if ret == 0 && !old.is_null() {
        // The program reads back the mask it set.
        // SAFETY: the caller passed a writable sigaction, just filled in.
        unsafe { *kernel_set_mut(&mut (*old).sa_mask) |= previous_view };
    }
    ret
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

/// Changes the calling thread's mask. While tracing, SIGSEGV and SIGTRAP
/// stay deliverable (a thread that blocked SIGSEGV would be killed by its
/// next traced access), and the program's view of them is kept in
/// [`threads::mask_view`]: it reads back the mask it set.
fn mask_change(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    let tracing = state::tracing_requested();
    let mut view = threads::mask_view();
    let old_view = view;
    let mut new_set: u64 = 0;
    if !set.is_null() {
        // SAFETY: the caller passed a readable sigset_t.
        new_set = kernel_set(unsafe { &*set });
        let wanted = new_set & VIEW_SIGNALS;
        view.blocked = match how {
            libc::SIG_BLOCK => view.blocked | wanted,
            libc::SIG_UNBLOCK => view.blocked & !wanted,
            libc::SIG_SETMASK => wanted,
            _ => view.blocked,
        };
        if how != libc::SIG_UNBLOCK {
            new_set &= !GLIBC_INTERNAL;
            if tracing {
                new_set &= !VIEW_SIGNALS;
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
                &new_set as *const u64
            },
            &mut old_set as *mut u64,
            8usize,
        )
    };
    if ret != 0 {
        return sys::get_errno();
    }
    if !old.is_null() {
        let seen = if tracing {
            (old_set & !VIEW_SIGNALS) | old_view.blocked
        } else {
            old_set
        };
        // SAFETY: the caller passed a writable sigset_t.
        let old = unsafe { &mut *old };
        // SAFETY: a valid sigset_t.
        unsafe { libc::sigemptyset(old) };
        *kernel_set_mut(old) = seen;
    }
    if tracing && view != old_view {
        // Signals sent while "blocked" arrive now, as they would have.
        let release = view.pending & !view.blocked;
        view.pending &= !release;
        threads::set_mask_view(view);
        for sig in [libc::SIGSEGV, libc::SIGTRAP] {
            if release & (1 << (sig - 1)) != 0 {
                sys::raise_in_thread(sig);
            }
        }
    }
    0
}

/// What a thread created by [`pthread_create`] starts with when its
/// creator's view of the mask is not empty.
struct StartWithView {
    start: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
    blocked: u64,
}

extern "C" fn start_with_view(boxed: *mut c_void) -> *mut c_void {
    // SAFETY: pthread_create below passes a pointer from malloc holding a
    // StartWithView, which this thread alone owns.
    let start = unsafe { core::ptr::read(boxed as *const StartWithView) };
    // SAFETY: as above; freed once.
    unsafe { libc::free(boxed) };
    threads::set_mask_view(MaskView {
        blocked: start.blocked,
        pending: 0,
    });
    (start.start)(start.arg)
}

/// `pthread_create(3)`: a new thread inherits its creator's signal mask,
/// and so its view of SIGSEGV/SIGTRAP (see [`mask_change`]). Only when that
/// view is not empty does the runtime wrap the start routine.
///
/// # Safety
///
/// As `pthread_create(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> c_int {
    type Create = unsafe extern "C" fn(
        *mut libc::pthread_t,
        *const libc::pthread_attr_t,
        extern "C" fn(*mut c_void) -> *mut c_void,
        *mut c_void,
    ) -> c_int;
    let Some(real) = real::PTHREAD_CREATE.get() else {
        return libc::EAGAIN;
    };
    // SAFETY: the address dlsym returned for pthread_create.
    let real: Create = unsafe { core::mem::transmute(real) };
    let view = threads::mask_view();
    if view.blocked == 0 {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real(thread, attr, start, arg) };
    }
    // SAFETY: malloc of a plain-data struct's size.
    let boxed = unsafe { libc::malloc(core::mem::size_of::<StartWithView>()) };
    if boxed.is_null() {
        return libc::EAGAIN;
    }
    // SAFETY: `boxed` is a fresh allocation of the right size and alignment.
    unsafe {
        core::ptr::write(
            boxed as *mut StartWithView,
            StartWithView {
                start,
                arg,
                blocked: view.blocked,
            },
        )
    };
    // SAFETY: the caller's arguments, with a start routine that takes `boxed`.
    let ret = unsafe { real(thread, attr, start_with_view, boxed) };
    if ret != 0 {
        // SAFETY: the thread was not created, so nothing else owns it.
        unsafe { libc::free(boxed) };
    }
    ret
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
    if init::enabled() {
        log::mark(text.to_bytes());
    }
}
