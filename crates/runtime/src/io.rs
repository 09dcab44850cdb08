//! The exported system calls that take a data buffer: `read`, `write`,
//! `pread`/`pread64`, `pwrite`/`pwrite64`, `readv`, `writev`,
//! `preadv`/`preadv64`, `pwritev`/`pwritev64`, `send`, `sendto`, `recv`,
//! `recvfrom` and the fortified `__read_chk`, `__pread_chk`,
//! `__pread64_chk`. A buffer in traced memory goes through the copy engine
//! (`copy`); `pread`/`pwrite` on a VFIO device are logged as device
//! accesses (`vfio`).
//!
//! `ioctl` is interposed only to *report*: when it fails with `EFAULT` and
//! its argument points into traced memory, a message names the call, once.
//! Not covered, and failing with `EFAULT` as the kernel decides: raw
//! `syscall(2)` and inline `syscall` instructions, calls libc makes
//! internally (for example `fwrite` of a large buffer), and every other
//! system call.
//!
//! # Safety
//!
//! Exporting symbols that shadow libc's needs exact C signatures, and the
//! real functions are called through transmuted pointers (`real`).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::copy::{self, Direction};
use crate::msg::Msg;
use crate::real::{self, RealFn};
use crate::{ranges, state, sys, vfio};

type ReadWrite = unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;
type PreadPwrite = unsafe extern "C" fn(c_int, *mut c_void, usize, i64) -> isize;
type Vectored = unsafe extern "C" fn(c_int, *const libc::iovec, c_int) -> isize;
type PVectored = unsafe extern "C" fn(c_int, *const libc::iovec, c_int, i64) -> isize;
type SendTo =
    unsafe extern "C" fn(c_int, *mut c_void, usize, c_int, *const c_void, libc::socklen_t) -> isize;
type RecvFrom = unsafe extern "C" fn(
    c_int,
    *mut c_void,
    usize,
    c_int,
    *mut c_void,
    *mut libc::socklen_t,
) -> isize;
type MsgCall = unsafe extern "C" fn(c_int, *const libc::msghdr, c_int) -> isize;

/// `read`/`write` and `pread`/`pwrite` share this: `offset` is `None` for the former.
///
/// # Safety
///
/// As `read(2)`/`write(2)`.
unsafe fn plain(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    offset: Option<i64>,
    direction: Direction,
) -> isize {
    let (simple, vectored) = match direction {
        Direction::In => (
            if offset.is_some() {
                &real::PREAD
            } else {
                &real::READ
            },
            if offset.is_some() {
                &real::PREADV
            } else {
                &real::READV
            },
        ),
        Direction::Out => (
            if offset.is_some() {
                &real::PWRITE
            } else {
                &real::WRITE
            },
            if offset.is_some() {
                &real::PWRITEV
            } else {
                &real::WRITEV
            },
        ),
    };
    let call_simple = |buf: *mut c_void, len: usize| -> isize {
        match offset {
            None => {
                // SAFETY: read/write's signature.
                let Some(f) = (unsafe { simple.function::<ReadWrite>() }) else {
                    return -1;
                };
                // SAFETY: the caller's (or the bounce buffer's) valid buffer.
                unsafe { f(fd, buf, len) }
            }
            Some(offset) => {
                // SAFETY: pread64/pwrite64's signature.
                let Some(f) = (unsafe { simple.function::<PreadPwrite>() }) else {
                    return -1;
                };
                // SAFETY: as above.
                unsafe { f(fd, buf, len, offset) }
            }
        }
    };
    let buffers = copy::one(buf, len);
    if !copy::touches_traced(&buffers) {
        return call_simple(buf, len);
    }
    copy::through_alias(&buffers, direction, |iov, count| {
        if count == 1 {
            // SAFETY: split() made one iovec.
            let only = unsafe { *iov };
            return call_simple(only.iov_base, only.iov_len);
        }
        call_vectored(vectored, fd, iov, count, offset)
    })
}

fn call_vectored(
    vectored: &RealFn,
    fd: c_int,
    iov: *const libc::iovec,
    count: usize,
    offset: Option<i64>,
) -> isize {
    match offset {
        None => {
            // SAFETY: readv/writev's signature.
            let Some(f) = (unsafe { vectored.function::<Vectored>() }) else {
                return -1;
            };
            // SAFETY: `count` iovecs that split() set up.
            unsafe { f(fd, iov, count as c_int) }
        }
        Some(offset) => {
            // SAFETY: preadv64/pwritev64's signature.
            let Some(f) = (unsafe { vectored.function::<PVectored>() }) else {
                return -1;
            };
            // SAFETY: as above.
            unsafe { f(fd, iov, count as c_int, offset) }
        }
    }
}

/// `readv`/`writev`/`preadv`/`pwritev`.
///
/// # Safety
///
/// As `readv(2)`.
unsafe fn vectored(
    fd: c_int,
    iov: *const libc::iovec,
    count: c_int,
    offset: Option<i64>,
    direction: Direction,
) -> isize {
    let real_fn = match (direction, offset.is_some()) {
        (Direction::In, false) => &real::READV,
        (Direction::In, true) => &real::PREADV,
        (Direction::Out, false) => &real::WRITEV,
        (Direction::Out, true) => &real::PWRITEV,
    };
    // SAFETY: the caller's iovec array.
    let buffers = unsafe { copy::iovecs(iov, count) };
    if !copy::touches_traced(buffers) {
        let count = count.max(0) as usize;
        return match offset {
            None => {
                // SAFETY: readv/writev's signature.
                let Some(f) = (unsafe { real_fn.function::<Vectored>() }) else {
                    return -1;
                };
                // SAFETY: the caller's arguments, unchanged.
                unsafe { f(fd, iov, count as c_int) }
            }
            Some(offset) => {
                // SAFETY: preadv64/pwritev64's signature.
                let Some(f) = (unsafe { real_fn.function::<PVectored>() }) else {
                    return -1;
                };
                // SAFETY: as above.
                unsafe { f(fd, iov, count as c_int, offset) }
            }
        };
    }
    copy::through_alias(buffers, direction, |iov, count| {
        call_vectored(real_fn, fd, iov, count, offset)
    })
}

/// The address argument of a socket call.
#[derive(Debug, Clone, Copy)]
enum Peer {
    /// `sendto`'s destination (null for `send`).
    To(*const c_void, libc::socklen_t),
    /// `recvfrom`'s source and its in/out length (null for `recv`).
    From(*mut c_void, *mut libc::socklen_t),
}

/// `send`/`sendto`/`recv`/`recvfrom`: one buffer, and a peer address.
///
/// # Safety
///
/// As `sendto(2)`/`recvfrom(2)`.
unsafe fn socket(fd: c_int, buf: *mut c_void, len: usize, flags: c_int, peer: Peer) -> isize {
    let buffers = copy::one(buf, len);
    let direction = match peer {
        Peer::To(..) => Direction::Out,
        Peer::From(..) => Direction::In,
    };
    if !copy::touches_traced(&buffers) {
        return match peer {
            Peer::To(addr, addr_len) => {
                // SAFETY: sendto's signature.
                let Some(f) = (unsafe { real::SENDTO.function::<SendTo>() }) else {
                    return -1;
                };
                // SAFETY: the caller's arguments, unchanged.
                unsafe { f(fd, buf, len, flags, addr, addr_len) }
            }
            Peer::From(addr, addr_len) => {
                // SAFETY: recvfrom's signature.
                let Some(f) = (unsafe { real::RECVFROM.function::<RecvFrom>() }) else {
                    return -1;
                };
                // SAFETY: the caller's arguments, unchanged.
                unsafe { f(fd, buf, len, flags, addr, addr_len) }
            }
        };
    }
    copy::through_alias(&buffers, direction, |iov, count| {
        // SAFETY: zeroed is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_iov = iov as *mut libc::iovec;
        msg.msg_iovlen = count;
        match peer {
            Peer::To(addr, addr_len) => {
                msg.msg_name = addr as *mut c_void;
                msg.msg_namelen = addr_len;
                // SAFETY: sendmsg's signature.
                let Some(f) = (unsafe { real::SENDMSG.function::<MsgCall>() }) else {
                    return -1;
                };
                // SAFETY: a msghdr over split()'s iovecs and the caller's address.
                unsafe { f(fd, &msg, flags) }
            }
            Peer::From(addr, addr_len) => {
                msg.msg_name = addr;
                if !addr_len.is_null() {
                    // SAFETY: the caller's readable socklen_t.
                    msg.msg_namelen = unsafe { *addr_len };
                }
                // SAFETY: recvmsg's signature.
                let Some(f) = (unsafe { real::RECVMSG.function::<MsgCall>() }) else {
                    return -1;
                };
                // SAFETY: as above.
                let ret = unsafe { f(fd, &msg, flags) };
                if ret >= 0 && !addr_len.is_null() {
                    // SAFETY: the caller's writable socklen_t.
                    unsafe { *addr_len = msg.msg_namelen };
                }
                ret
            }
        }
    })
}

/// `read(2)`.
///
/// # Safety
///
/// As `read(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, len: usize) -> isize {
    // SAFETY: the caller's contract.
    unsafe { plain(fd, buf, len, None, Direction::In) }
}

/// `write(2)`.
///
/// # Safety
///
/// As `write(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, len: usize) -> isize {
    // SAFETY: the caller's contract.
    unsafe { plain(fd, buf as *mut c_void, len, None, Direction::Out) }
}

/// `pread(2)`.
///
/// # Safety
///
/// As `pread(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, len: usize, offset: i64) -> isize {
    // SAFETY: the caller's contract.
    let ret = unsafe { plain(fd, buf, len, Some(offset), Direction::In) };
    // SAFETY: the buffer the call just filled.
    unsafe { vfio::after_region_io(fd, buf as *const u8, len, offset, ret, false) };
    ret
}

/// `pread64`, the same call on x86-64.
///
/// # Safety
///
/// As `pread(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, len: usize, offset: i64) -> isize {
    // SAFETY: the caller's contract.
    let ret = unsafe { plain(fd, buf, len, Some(offset), Direction::In) };
    // SAFETY: the buffer the call just filled.
    unsafe { vfio::after_region_io(fd, buf as *const u8, len, offset, ret, false) };
    ret
}

/// `pwrite(2)`.
///
/// # Safety
///
/// As `pwrite(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, len: usize, offset: i64) -> isize {
    // SAFETY: the caller's contract.
    let ret = unsafe { plain(fd, buf as *mut c_void, len, Some(offset), Direction::Out) };
    // SAFETY: the buffer the call just wrote from.
    unsafe { vfio::after_region_io(fd, buf as *const u8, len, offset, ret, true) };
    ret
}

/// `pwrite64`, the same call on x86-64.
///
/// # Safety
///
/// As `pwrite(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, len: usize, offset: i64) -> isize {
    // SAFETY: the caller's contract.
    let ret = unsafe { plain(fd, buf as *mut c_void, len, Some(offset), Direction::Out) };
    // SAFETY: the buffer the call just wrote from.
    unsafe { vfio::after_region_io(fd, buf as *const u8, len, offset, ret, true) };
    ret
}

/// `readv(2)`.
///
/// # Safety
///
/// As `readv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, count: c_int) -> isize {
    // SAFETY: the caller's contract.
    unsafe { vectored(fd, iov, count, None, Direction::In) }
}

/// `writev(2)`.
///
/// # Safety
///
/// As `writev(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, count: c_int) -> isize {
    // SAFETY: the caller's contract.
    unsafe { vectored(fd, iov, count, None, Direction::Out) }
}

/// `preadv(2)`.
///
/// # Safety
///
/// As `preadv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn preadv(
    fd: c_int,
    iov: *const libc::iovec,
    count: c_int,
    offset: i64,
) -> isize {
    // SAFETY: the caller's contract.
    unsafe { vectored(fd, iov, count, Some(offset), Direction::In) }
}

/// `preadv64`, the same call on x86-64.
///
/// # Safety
///
/// As `preadv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn preadv64(
    fd: c_int,
    iov: *const libc::iovec,
    count: c_int,
    offset: i64,
) -> isize {
    // SAFETY: the caller's contract.
    unsafe { vectored(fd, iov, count, Some(offset), Direction::In) }
}

/// `pwritev(2)`.
///
/// # Safety
///
/// As `pwritev(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwritev(
    fd: c_int,
    iov: *const libc::iovec,
    count: c_int,
    offset: i64,
) -> isize {
    // SAFETY: the caller's contract.
    unsafe { vectored(fd, iov, count, Some(offset), Direction::Out) }
}

/// `pwritev64`, the same call on x86-64.
///
/// # Safety
///
/// As `pwritev(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwritev64(
    fd: c_int,
    iov: *const libc::iovec,
    count: c_int,
    offset: i64,
) -> isize {
    // SAFETY: the caller's contract.
    unsafe { vectored(fd, iov, count, Some(offset), Direction::Out) }
}

/// `send(2)`.
///
/// # Safety
///
/// As `send(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize {
    let peer = Peer::To(core::ptr::null(), 0);
    // SAFETY: the caller's contract; no address.
    unsafe { socket(fd, buf as *mut c_void, len, flags, peer) }
}

/// `sendto(2)`.
///
/// # Safety
///
/// As `sendto(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    addr: *const libc::sockaddr,
    addr_len: libc::socklen_t,
) -> isize {
    let peer = Peer::To(addr as *const c_void, addr_len);
    // SAFETY: the caller's contract.
    unsafe { socket(fd, buf as *mut c_void, len, flags, peer) }
}

/// `recv(2)`.
///
/// # Safety
///
/// As `recv(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize {
    let peer = Peer::From(sys::NULL, core::ptr::null_mut());
    // SAFETY: the caller's contract; no address.
    unsafe { socket(fd, buf, len, flags, peer) }
}

/// `recvfrom(2)`.
///
/// # Safety
///
/// As `recvfrom(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    flags: c_int,
    addr: *mut libc::sockaddr,
    addr_len: *mut libc::socklen_t,
) -> isize {
    let peer = Peer::From(addr as *mut c_void, addr_len);
    // SAFETY: the caller's contract.
    unsafe { socket(fd, buf, len, flags, peer) }
}

fn check_fortified(len: usize, buf_len: usize) {
    if len > buf_len {
        // SAFETY: __chk_fail takes no arguments and does not return.
        if let Some(f) = unsafe { real::CHK_FAIL.function::<unsafe extern "C" fn() -> !>() } {
            // SAFETY: as above.
            unsafe { f() }
        }
        sys::raise_in_thread(libc::SIGABRT);
    }
}

/// `__read_chk`, which `_FORTIFY_SOURCE` calls instead of `read`.
///
/// # Safety
///
/// As `read(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    buf_len: usize,
) -> isize {
    check_fortified(len, buf_len);
    // SAFETY: the caller's contract.
    unsafe { plain(fd, buf, len, None, Direction::In) }
}

/// `__pread_chk`.
///
/// # Safety
///
/// As `pread(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __pread_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    offset: i64,
    buf_len: usize,
) -> isize {
    check_fortified(len, buf_len);
    // SAFETY: the caller's contract.
    let ret = unsafe { plain(fd, buf, len, Some(offset), Direction::In) };
    // SAFETY: the buffer the call just filled.
    unsafe { vfio::after_region_io(fd, buf as *const u8, len, offset, ret, false) };
    ret
}

/// `__pread64_chk`.
///
/// # Safety
///
/// As `pread(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __pread64_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    offset: i64,
    buf_len: usize,
) -> isize {
    check_fortified(len, buf_len);
    // SAFETY: the caller's contract.
    let ret = unsafe { plain(fd, buf, len, Some(offset), Direction::In) };
    // SAFETY: the buffer the call just filled.
    unsafe { vfio::after_region_io(fd, buf as *const u8, len, offset, ret, false) };
    ret
}

static REPORTED_IOCTL: AtomicBool = AtomicBool::new(false);

/// `ioctl(2)`, passed through; reports once when it fails with `EFAULT`
/// because its argument points into traced memory. C declares it variadic;
/// on x86-64 the third argument arrives in the same register either way.
///
/// # Safety
///
/// As `ioctl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: libc::c_ulong, arg: *mut c_void) -> c_int {
    type Ioctl = unsafe extern "C" fn(c_int, libc::c_ulong, *mut c_void) -> c_int;
    // SAFETY: ioctl's signature (three arguments on x86-64).
    let Some(f) = (unsafe { real::IOCTL.function::<Ioctl>() }) else {
        return -1;
    };
    // SAFETY: the caller's arguments, unchanged.
    let ret = unsafe { f(fd, request, arg) };
    if ret >= 0 && request == vfio::VFIO_GROUP_GET_DEVICE_FD {
        // SAFETY: the device name string the ioctl just read.
        unsafe { vfio::note_device_fd(ret, arg as *const core::ffi::c_char) };
    }
    if ret == -1 && sys::get_errno() == libc::EFAULT && state::tracing_active() {
        let addr = arg as u64;
        if ranges::any_overlap(addr, addr.saturating_add(1))
            && !REPORTED_IOCTL.swap(true, Ordering::Relaxed)
        {
            Msg::new()
                .text("ioctl(fd ")
                .dec(fd as u64)
                .text(", request ")
                .hex(request)
                .text(") failed with EFAULT: its argument ")
                .hex(addr)
                .text(" is in traced memory, which the kernel cannot access while it is traced (reported once)")
                .emit();
            sys::set_errno(libc::EFAULT);
        }
    }
    ret
}
