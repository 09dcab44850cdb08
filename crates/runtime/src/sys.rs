//! Raw system calls.
//!
//! # Safety
//!
//! The runtime exports `mmap`, `munmap`, `mremap` and `mprotect` itself, so
//! calling libc's wrappers from inside the runtime would call the runtime
//! again. Every call here goes straight to the kernel through
//! `syscall(2)`, which is async-signal-safe and allocates nothing, so the
//! same functions serve the interposers, the initialisation and the signal
//! handlers. Functions that can change memory the caller does not own
//! (`mmap` with `MAP_FIXED`, `munmap`, `mprotect`, `mremap`) stay `unsafe`;
//! the others only pass pointers to buffers they borrow and are safe.

use core::ffi::{c_int, c_long, c_void};

/// An `errno` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub c_int);

fn last_errno() -> Errno {
    // SAFETY: __errno_location returns this thread's errno slot, valid for
    // the life of the thread.
    Errno(unsafe { *libc::__errno_location() })
}

/// Reads this thread's `errno`.
pub fn get_errno() -> c_int {
    last_errno().0
}

/// Sets this thread's `errno` (to report an interposer's failure, or to
/// restore it at the end of a signal handler).
pub fn set_errno(value: c_int) {
    // SAFETY: as in last_errno.
    unsafe { *libc::__errno_location() = value };
}

fn check(ret: c_long) -> Result<usize, Errno> {
    if ret == -1 {
        Err(last_errno())
    } else {
        Ok(ret as usize)
    }
}

/// `mmap(2)` without going through the runtime's own `mmap` export.
///
/// # Safety
///
/// With `MAP_FIXED`, `addr..addr+len` is replaced: the caller must own it.
pub unsafe fn mmap(
    addr: usize,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: i64,
) -> Result<usize, Errno> {
    // SAFETY: the caller upholds the MAP_FIXED contract; otherwise the
    // kernel picks a free range and nothing existing is touched.
    check(unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, offset) })
}

/// `munmap(2)`.
///
/// # Safety
///
/// Nothing may use `addr..addr+len` afterwards.
pub unsafe fn munmap(addr: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller guarantees the range is no longer used.
    check(unsafe { libc::syscall(libc::SYS_munmap, addr, len) }).map(|_| ())
}

/// `mprotect(2)`.
///
/// # Safety
///
/// Removing access from memory that Rust code still references is undefined
/// behaviour; the caller must own the range.
pub unsafe fn mprotect(addr: usize, len: usize, prot: c_int) -> Result<(), Errno> {
    // SAFETY: the caller owns the range.
    check(unsafe { libc::syscall(libc::SYS_mprotect, addr, len, prot) }).map(|_| ())
}

/// `mremap(2)`.
///
/// # Safety
///
/// As for `munmap` on the old range and `mmap` with `MAP_FIXED` on
/// `new_addr` when `MREMAP_FIXED` is given.
pub unsafe fn mremap(
    old: usize,
    old_len: usize,
    new_len: usize,
    flags: c_int,
    new_addr: usize,
) -> Result<usize, Errno> {
    // SAFETY: the caller owns both ranges.
    check(unsafe { libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new_addr) })
}

/// `open(2)` of a NUL-terminated path.
pub fn open(path: &[u8], flags: c_int) -> Result<c_int, Errno> {
    if path.last() != Some(&0) {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: `path` is NUL-terminated (checked above) and borrowed for the call.
    check(unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, 0) })
        .map(|fd| fd as c_int)
}

/// `close(2)`.
pub fn close(fd: c_int) {
    // SAFETY: closing a descriptor the caller owns has no memory effects.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// Removes the file at `path`, which must end with a NUL byte.
pub fn unlink(path: &[u8]) -> Result<(), Errno> {
    if path.last() != Some(&0) {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: `path` is NUL-terminated (checked above) and borrowed for the call.
    check(unsafe { libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, path.as_ptr(), 0) })
        .map(|_| ())
}

/// Size of the file behind `fd`.
pub fn file_size(fd: c_int) -> Result<u64, Errno> {
    // SAFETY: lseek has no memory effects.
    let end = check(unsafe { libc::syscall(libc::SYS_lseek, fd, 0i64, libc::SEEK_END) })?;
    Ok(end as u64)
}

/// `readlink(2)` of a NUL-terminated path into `buf`; returns the length.
pub fn readlink(path: &[u8], buf: &mut [u8]) -> Result<usize, Errno> {
    if path.last() != Some(&0) {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: `path` is NUL-terminated; `buf` is writable for buf.len() bytes.
    check(unsafe {
        libc::syscall(
            libc::SYS_readlinkat,
            libc::AT_FDCWD,
            path.as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    })
}

/// The real path of `fd` (`readlink /proc/self/fd/N`) into `buf`.
pub fn fd_path(fd: c_int, buf: &mut [u8; 4096]) -> Option<usize> {
    let mut link = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    let mut len = 0;
    for &b in prefix {
        *link.get_mut(len)? = b;
        len += 1;
    }
    let mut digits = [0u8; 20];
    for &b in decimal(u64::from(fd as u32), &mut digits) {
        *link.get_mut(len)? = b;
        len += 1;
    }
    readlink(link.get(..len + 1)?, buf).ok()
}

/// `write(2)` of all of `bytes` to standard error, ignoring failures.
pub fn write_stderr(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is readable for rest.len() bytes.
        let ret = unsafe { libc::syscall(libc::SYS_write, 2, rest.as_ptr(), rest.len()) };
        if ret <= 0 {
            if ret == -1 && get_errno() == libc::EINTR {
                continue;
            }
            return;
        }
        rest = rest.get(ret as usize..).unwrap_or(&[]);
    }
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// The process id.
pub fn getpid() -> u32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_getpid) as u32 }
}

/// Whether a thread with id `tid` exists anywhere on the system.
pub fn thread_exists(tid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let ret = unsafe { libc::syscall(libc::SYS_kill, tid as c_int, 0) };
    if ret != 0 && get_errno() == libc::ESRCH {
        return false;
    }
    // `kill` succeeds for a zombie (a process that exited and that its
    // parent has not reaped yet), which will never log again.
    !matches!(thread_state(tid), Some(b'Z' | b'X' | b'x'))
}

/// `value` in decimal, written into `digits` without allocating.
pub fn decimal(value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    let mut value = value;
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &digits[start..]
}

/// The state letter of thread `tid` in `/proc/TID/stat` (`R`, `S`, `Z`...),
/// or `None` if it cannot be read (no /proc, another pid namespace).
fn thread_state(tid: u32) -> Option<u8> {
    let mut path = [0u8; 32];
    let mut len = 0;
    for &b in b"/proc/" {
        *path.get_mut(len)? = b;
        len += 1;
    }
    let mut digits = [0u8; 20];
    for &b in decimal(u64::from(tid), &mut digits) {
        *path.get_mut(len)? = b;
        len += 1;
    }
    for &b in b"/stat\0" {
        *path.get_mut(len)? = b;
        len += 1;
    }
    let fd = open(path.get(..len)?, libc::O_RDONLY | libc::O_CLOEXEC).ok()?;
    let mut buf = [0u8; 512];
    // SAFETY: reads at most buf.len() bytes into buf.
    let read = unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) };
    close(fd);
    let stat = buf.get(..usize::try_from(read).ok()?)?;
    // `PID (COMM) STATE ...`; COMM may contain spaces and parentheses.
    let after_comm = stat.iter().rposition(|&b| b == b')')?;
    stat.get(after_comm + 2).copied()
}

/// Sends `sig` to the calling thread.
pub fn raise_in_thread(sig: c_int) {
    // SAFETY: tgkill has no memory effects.
    unsafe { libc::syscall(libc::SYS_tgkill, getpid() as c_int, gettid() as c_int, sig) };
}

/// Sends the calling thread SIGBUS as the kernel does for a bus error at
/// `addr` (`si_code` `BUS_ADRERR`, `si_addr` `addr`), so that a handler
/// that reads `si_addr` sees the address. A process may send itself any
/// `si_code` with `rt_tgsigqueueinfo`.
pub fn raise_bus_error(addr: u64) {
    // siginfo_t is 128 bytes: si_signo, si_errno, si_code (ints), then the
    // union, whose first member for SIGBUS is si_addr (at offset 16).
    let mut info = [0u64; 16];
    info[0] = libc::SIGBUS as u32 as u64;
    info[1] = BUS_ADRERR as u64;
    info[2] = addr;
    // SAFETY: `info` is a valid 128-byte siginfo_t for the call's duration.
    unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            getpid() as c_int,
            gettid() as c_int,
            libc::SIGBUS,
            info.as_ptr(),
        )
    };
}

/// `si_code` of a bus error at a nonexistent physical address.
const BUS_ADRERR: c_int = 2;

/// Sleeps `micros` microseconds.
pub fn sleep_micros(micros: u64) {
    let ts = libc::timespec {
        tv_sec: (micros / 1_000_000) as libc::time_t,
        tv_nsec: ((micros % 1_000_000) * 1000) as libc::c_long,
    };
    // SAFETY: `ts` is valid; a null remainder is allowed.
    unsafe { libc::syscall(libc::SYS_nanosleep, &ts as *const libc::timespec, 0usize) };
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: i64 = 32;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: i64 = 64;

/// Registers the process for [`membarrier_sync_core`]; `false` if the
/// kernel cannot.
pub fn register_membarrier_sync_core() -> bool {
    // SAFETY: membarrier has no memory arguments.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
            0,
        ) == 0
    }
}

/// Makes every running thread of the process run a full memory barrier
/// and a core-serialising instruction before it goes on in user space.
pub fn membarrier_sync_core() -> bool {
    // SAFETY: membarrier has no memory arguments.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
            0,
        ) == 0
    }
}

/// Gives up the CPU.
pub fn yield_now() {
    // SAFETY: sched_yield has no arguments or memory effects.
    unsafe { libc::syscall(libc::SYS_sched_yield) };
}

/// The kernel's signal set (64 bits on x86-64), not glibc's 1024-bit `sigset_t`.
pub type KernelSigset = u64;

/// Every signal that can arrive asynchronously, i.e. all but the ones a
/// faulting instruction raises. Blocked while the runtime pushes a record, so
/// that a signal handler on the same thread cannot interleave with the push.
pub fn async_signals() -> KernelSigset {
    let mut set = !0u64;
    for sig in [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
    ] {
        set &= !(1u64 << (sig - 1));
    }
    set
}

/// `rt_sigprocmask(SIG_SETMASK or SIG_BLOCK, set)`, returning the old mask.
pub fn sigprocmask(how: c_int, set: KernelSigset) -> KernelSigset {
    let mut old: KernelSigset = 0;
    // SAFETY: both pointers reference 8-byte sets that live across the call,
    // which is the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            &set as *const KernelSigset,
            &mut old as *mut KernelSigset,
            core::mem::size_of::<KernelSigset>(),
        )
    };
    old
}

/// Blocks the asynchronous signals until the guard drops.
#[derive(Debug)]
pub struct SignalsBlocked {
    old: KernelSigset,
}

impl SignalsBlocked {
    pub fn new() -> SignalsBlocked {
        SignalsBlocked {
            old: sigprocmask(libc::SIG_BLOCK, async_signals()),
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        sigprocmask(libc::SIG_SETMASK, self.old);
    }
}

/// The FS or GS segment base of the calling thread (`arch_prctl(ARCH_GET_FS/GS)`).
pub fn segment_base(gs: bool) -> Option<u64> {
    const ARCH_GET_FS: c_int = 0x1003;
    const ARCH_GET_GS: c_int = 0x1004;
    let mut base: u64 = 0;
    let code = if gs { ARCH_GET_GS } else { ARCH_GET_FS };
    // SAFETY: the kernel writes 8 bytes to `base`, which lives across the call.
    let ret = unsafe { libc::syscall(libc::SYS_arch_prctl, code, &mut base as *mut u64) };
    (ret == 0).then_some(base)
}

/// Reads `out.len()` bytes from `addr`, which the caller has checked is
/// mapped readable (the code bytes of the faulting instruction).
///
/// # Safety
///
/// `addr..addr+out.len()` must be readable.
pub unsafe fn copy_from(addr: usize, out: &mut [u8]) {
    // SAFETY: the caller guarantees the source is readable; `out` is a
    // distinct Rust buffer.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) };
}

/// Null pointer as `*mut c_void`, spelled once.
pub const NULL: *mut c_void = core::ptr::null_mut();
