//! System calls handed traced memory.
//!
//! A traced range is `PROT_NONE` in the program's view, so the kernel cannot
//! copy to or from it: `write(fd, bar, n)` would fail with `EFAULT` where the
//! untraced program succeeds. The runtime interposes the libc wrappers that
//! take a data buffer — `read`, `write`, `pread`/`pread64`, `pwrite`/
//! `pwrite64`, `readv`, `writev`, `preadv`/`preadv64`, `pwritev`/`pwritev64`,
//! `send`, `sendto`, `recv`, `recvfrom` and the fortified `__read_chk`,
//! `__pread_chk`, `__pread64_chk` — and performs the copy itself, through
//! the alias, on a bounce buffer:
//!
//! - data the kernel reads (`write` and friends) is read from the alias into
//!   the bounce buffer first, each access logged as a `R`;
//! - data the kernel writes (`read` and friends) lands in the bounce buffer
//!   and is then stored through the alias, logged as `W`, for the bytes the
//!   call returned.
//!
//! The copy is logged as a `memcpy` would make it: naturally aligned 8-byte
//! accesses, with 4-, 2- and 1-byte ones at unaligned edges, in address
//! order, with pc 0 (no instruction of the program made them). Parts of a
//! buffer outside traced memory go to the kernel directly (the call becomes
//! its vectored form, so it stays one system call), so the kernel still
//! reports `EFAULT` for them. A traced part whose protection forbids the
//! copy fails with `EFAULT`, as it would untraced.
//!
//! A buffer that touches no traced range costs one scan of the range table
//! (nothing at all before the first traced mapping), then the real call.
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
//! Exporting symbols that shadow libc's needs exact C signatures; the real
//! functions are found with `dlsym(RTLD_NEXT)` and called through
//! transmuted pointers; the copies read and write the program's buffers and
//! the aliases through raw addresses. All of that is `unsafe`.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mmiotrace_shm::{Record, kind};

use crate::msg::Msg;
use crate::ranges::{self, Range};
use crate::sys::{self, Errno, SignalsBlocked};
use crate::{runtime, threads, vfio};

/// A libc function the runtime shadows, found once with `dlsym(RTLD_NEXT)`.
#[derive(Debug)]
pub struct RealFn {
    /// NUL-terminated.
    name: &'static [u8],
    addr: AtomicUsize,
}

impl RealFn {
    const fn new(name: &'static [u8]) -> RealFn {
        RealFn {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    /// The real function's address. Resolved when the runtime is loaded
    /// ([`resolve_all`]); only a call that comes before that resolves here.
    pub fn get(&self) -> Option<usize> {
        let addr = self.addr.load(Ordering::Relaxed);
        if addr != 0 {
            return Some(addr);
        }
        // SAFETY: a NUL-terminated name; RTLD_NEXT finds the definition
        // after this library's, i.e. libc's.
        let found = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr().cast()) } as usize;
        self.addr.store(found, Ordering::Relaxed);
        (found != 0).then_some(found)
    }
}

pub static REAL_PTHREAD_CREATE: RealFn = RealFn::new(b"pthread_create\0");
static REAL_READ: RealFn = RealFn::new(b"read\0");
static REAL_WRITE: RealFn = RealFn::new(b"write\0");
static REAL_PREAD: RealFn = RealFn::new(b"pread64\0");
static REAL_PWRITE: RealFn = RealFn::new(b"pwrite64\0");
static REAL_READV: RealFn = RealFn::new(b"readv\0");
static REAL_WRITEV: RealFn = RealFn::new(b"writev\0");
static REAL_PREADV: RealFn = RealFn::new(b"preadv64\0");
static REAL_PWRITEV: RealFn = RealFn::new(b"pwritev64\0");
static REAL_SENDTO: RealFn = RealFn::new(b"sendto\0");
static REAL_RECVFROM: RealFn = RealFn::new(b"recvfrom\0");
static REAL_SENDMSG: RealFn = RealFn::new(b"sendmsg\0");
static REAL_RECVMSG: RealFn = RealFn::new(b"recvmsg\0");
static REAL_IOCTL: RealFn = RealFn::new(b"ioctl\0");
static REAL_CHK_FAIL: RealFn = RealFn::new(b"__chk_fail\0");

/// Resolves every real function, when the runtime is loaded: later calls,
/// which may come from signal handlers, never enter `dlsym`.
pub fn resolve_all() {
    for real in [
        &REAL_PTHREAD_CREATE,
        &REAL_READ,
        &REAL_WRITE,
        &REAL_PREAD,
        &REAL_PWRITE,
        &REAL_READV,
        &REAL_WRITEV,
        &REAL_PREADV,
        &REAL_PWRITEV,
        &REAL_SENDTO,
        &REAL_RECVFROM,
        &REAL_SENDMSG,
        &REAL_RECVMSG,
        &REAL_IOCTL,
        &REAL_CHK_FAIL,
    ] {
        real.get();
    }
}

/// Most pieces one call's buffers may split into (the kernel's `IOV_MAX`).
const MAX_PIECES: usize = 1024;

/// Whether any of `buffers` touches traced memory.
fn touches_traced(buffers: &[libc::iovec]) -> bool {
    runtime::tracing_active()
        && buffers.iter().any(|b| {
            let lo = b.iov_base as u64;
            b.iov_len != 0 && ranges::any_overlap(lo, lo.saturating_add(b.iov_len as u64))
        })
}

/// Which way the kernel copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The kernel reads the buffers (`write`).
    Out,
    /// The kernel writes the buffers (`read`).
    In,
}

/// One piece of the program's buffers, as the kernel will see it.
#[derive(Debug, Clone, Copy)]
struct Piece {
    /// The program's address.
    addr: u64,
    len: u64,
    /// Offset in the bounce buffer, for traced pieces.
    bounce: Option<u64>,
}

/// An anonymous mapping holding the bounce buffer and the piece tables
/// (an interposer may run in a signal handler: no malloc).
struct Scratch {
    base: usize,
    len: usize,
}

impl Scratch {
    fn new(len: usize) -> Option<Scratch> {
        let len = (len.max(1) + 4095) & !4095;
        // SAFETY: a fresh private mapping at an address the kernel picks.
        let base = unsafe {
            sys::mmap(
                0,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        }
        .ok()?;
        Some(Scratch { base, len })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(); nothing refers to it any more.
        let _ = unsafe { sys::munmap(self.base, self.len) };
    }
}

/// A call split into pieces, with its scratch memory.
struct Split {
    scratch: Scratch,
    pieces: *mut Piece,
    iovecs: *mut libc::iovec,
    count: usize,
}

impl Split {
    fn pieces(&self) -> &[Piece] {
        // SAFETY: `count` pieces were written into the scratch mapping,
        // which lives as long as `self`.
        unsafe { core::slice::from_raw_parts(self.pieces, self.count) }
    }

    fn iovecs(&self) -> *const libc::iovec {
        self.iovecs
    }

    fn bounce(&self, offset: u64) -> *mut u8 {
        (self.scratch.base + offset as usize) as *mut u8
    }
}

/// Splits `buffers` into pieces inside and outside traced ranges, checks
/// the protection of the traced ones, and sets up the kernel's iovecs (the
/// bounce buffer for traced pieces, the program's memory for the others).
fn split(buffers: &[libc::iovec], direction: Direction) -> Result<Split, Errno> {
    let needed = if direction == Direction::Out {
        libc::PROT_READ
    } else {
        libc::PROT_WRITE
    };
    let mut count = 0usize;
    let mut traced_bytes = 0u64;
    for_each_piece(buffers, |_, len, range| {
        count += 1;
        if let Some(range) = range {
            if range.prot as c_int & needed == 0 {
                return Err(Errno(libc::EFAULT));
            }
            traced_bytes += len;
        }
        Ok(())
    })?;
    if count > MAX_PIECES {
        Msg::new()
            .text("a system call's buffers split into more than 1024 pieces around traced memory; it fails with EINVAL")
            .emit();
        return Err(Errno(libc::EINVAL));
    }
    let tables = count * (core::mem::size_of::<Piece>() + core::mem::size_of::<libc::iovec>());
    let bounce_len = (traced_bytes as usize + 63) & !63;
    let scratch = Scratch::new(bounce_len + tables).ok_or(Errno(libc::ENOMEM))?;
    let pieces = (scratch.base + bounce_len) as *mut Piece;
    let iovecs =
        (scratch.base + bounce_len + count * core::mem::size_of::<Piece>()) as *mut libc::iovec;
    let mut index = 0usize;
    let mut bounce = 0u64;
    for_each_piece(buffers, |addr, len, range| {
        if index >= count {
            // The table changed between the passes; the pieces counted fit.
            return Err(Errno(libc::EAGAIN));
        }
        let piece = Piece {
            addr,
            len,
            bounce: range.map(|_| bounce),
        };
        let base = match piece.bounce {
            Some(offset) => scratch.base as u64 + offset,
            None => addr,
        };
        if range.is_some() {
            bounce += len;
            if bounce > traced_bytes {
                return Err(Errno(libc::EAGAIN));
            }
        }
        // SAFETY: index < count, inside the tables carved from the scratch
        // mapping above (both 8-aligned: bounce_len is a multiple of 64).
        unsafe {
            pieces.add(index).write(piece);
            iovecs.add(index).write(libc::iovec {
                iov_base: base as *mut c_void,
                iov_len: len as usize,
            });
        }
        index += 1;
        Ok(())
    })?;
    Ok(Split {
        scratch,
        pieces,
        iovecs,
        count: index,
    })
}

fn for_each_piece(
    buffers: &[libc::iovec],
    mut each: impl FnMut(u64, u64, Option<Range>) -> Result<(), Errno>,
) -> Result<(), Errno> {
    for buffer in buffers {
        let mut pos = buffer.iov_base as u64;
        let end = pos.saturating_add(buffer.iov_len as u64);
        while pos < end {
            let (piece_end, range) = ranges::piece_at(pos, end);
            each(pos, piece_end - pos, range)?;
            pos = piece_end;
        }
    }
    Ok(())
}

/// The accesses a `memcpy` of `addr..addr+len` makes: the widest naturally
/// aligned width that fits, at each position.
fn widths(addr: u64, len: u64) -> impl Iterator<Item = (u64, u8)> {
    let end = addr + len;
    let mut pos = addr;
    core::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let mut width = 8u64;
        while width > 1 && (pos % width != 0 || pos + width > end) {
            width /= 2;
        }
        let at = pos;
        pos += width;
        Some((at, width as u8))
    })
}

/// Logs accesses made on behalf of a system call.
struct Logger {
    target: Option<(mmiotrace_shm::Shm, threads::Me)>,
    _blocked: SignalsBlocked,
}

impl Logger {
    fn new() -> Logger {
        let blocked = SignalsBlocked::new();
        let target = runtime::shm()
            .filter(|_| !runtime::muted())
            .map(|shm| (shm, threads::me(&shm)));
        Logger {
            target,
            _blocked: blocked,
        }
    }

    fn log(&self, kind: u8, range: &Range, addr: u64, width: u8, value: u64) {
        let Some((shm, me)) = &self.target else {
            return;
        };
        let record = Record {
            kind,
            width,
            map_id: range.map_id,
            offset: range.offset_of(addr),
            value,
            pc: 0,
            tid: me.tid,
            pid: me.pid,
            ..Record::default()
        };
        crate::runtime::push(shm, me.slot, record, &[]);
    }
}

/// Reads the traced pieces through their aliases into the bounce buffer.
fn fill_bounce(split: &Split) -> Result<(), Errno> {
    let logger = Logger::new();
    for piece in split.pieces() {
        let Some(offset) = piece.bounce else { continue };
        copy_traced(piece.addr, piece.len, |range, at, width| {
            let dst = split.bounce(offset + (at - piece.addr));
            // SAFETY: `at..at+width` lies in the held range, so its alias is
            // mapped (readable: split() checked the program's protection);
            // one access of exactly `width` bytes, aligned to it; `dst` is
            // inside the bounce buffer (the piece's part of it).
            let value = unsafe {
                let src = range.alias_of(at) as usize;
                let value = load(src, width);
                core::ptr::copy_nonoverlapping(value.to_le_bytes().as_ptr(), dst, width as usize);
                value
            };
            logger.log(kind::READ, range, at, width, value);
        })?;
    }
    Ok(())
}

/// Stores the first `done` bytes the kernel put into the bounce buffer
/// through the aliases of the traced pieces.
fn drain_bounce(split: &Split, done: usize) -> Result<(), Errno> {
    let logger = Logger::new();
    let mut left = done as u64;
    for piece in split.pieces() {
        if left == 0 {
            break;
        }
        let len = piece.len.min(left);
        left -= len;
        let Some(offset) = piece.bounce else { continue };
        copy_traced(piece.addr, len, |range, at, width| {
            let src = split.bounce(offset + (at - piece.addr));
            let mut bytes = [0u8; 8];
            // SAFETY: `src` is inside the bounce buffer; the alias of the
            // held range is mapped (writable: split() checked); one aligned
            // access of exactly `width` bytes.
            let value = unsafe {
                core::ptr::copy_nonoverlapping(src, bytes.as_mut_ptr(), width as usize);
                let value = u64::from_le_bytes(bytes);
                store(range.alias_of(at) as usize, width, value);
                value
            };
            logger.log(kind::WRITE, range, at, width, value);
        })?;
    }
    Ok(())
}

/// Calls `each(range, address, width)` for the accesses that copy
/// `addr..addr+len`, holding the range each lies in.
fn copy_traced(addr: u64, len: u64, mut each: impl FnMut(&Range, u64, u8)) -> Result<(), Errno> {
    let end = addr + len;
    let mut pos = addr;
    while pos < end {
        // The program may have unmapped it meanwhile: as untraced, the copy fails.
        let held = ranges::lookup(pos).ok_or(Errno(libc::EFAULT))?;
        let piece_end = end.min(held.range.end());
        for (at, width) in widths(pos, piece_end - pos) {
            each(&held.range, at, width);
        }
        pos = piece_end;
    }
    Ok(())
}

/// One load of exactly `width` (1, 2, 4 or 8) bytes.
///
/// # Safety
///
/// `addr..addr+width` is mapped readable and aligned to `width`.
unsafe fn load(addr: usize, width: u8) -> u64 {
    // SAFETY: the caller's contract; volatile keeps it one access.
    unsafe {
        match width {
            1 => u64::from(core::ptr::read_volatile(addr as *const u8)),
            2 => u64::from(core::ptr::read_volatile(addr as *const u16)),
            4 => u64::from(core::ptr::read_volatile(addr as *const u32)),
            _ => core::ptr::read_volatile(addr as *const u64),
        }
    }
}

/// One store of exactly `width` bytes.
///
/// # Safety
///
/// As [`load`], writable.
unsafe fn store(addr: usize, width: u8, value: u64) {
    // SAFETY: the caller's contract; volatile keeps it one access.
    unsafe {
        match width {
            1 => core::ptr::write_volatile(addr as *mut u8, value as u8),
            2 => core::ptr::write_volatile(addr as *mut u16, value as u16),
            4 => core::ptr::write_volatile(addr as *mut u32, value as u32),
            _ => core::ptr::write_volatile(addr as *mut u64, value),
        }
    }
}

fn fail(errno: c_int) -> isize {
    sys::set_errno(errno);
    -1
}

/// Runs a call whose buffers touch traced memory. `call` performs the
/// system call on the kernel's view: the iovecs and their count.
fn through_alias(
    buffers: &[libc::iovec],
    direction: Direction,
    call: impl FnOnce(*const libc::iovec, usize) -> isize,
) -> isize {
    let split = match split(buffers, direction) {
        Ok(split) => split,
        Err(Errno(errno)) => return fail(errno),
    };
    if direction == Direction::Out {
        if let Err(Errno(errno)) = fill_bounce(&split) {
            return fail(errno);
        }
    }
    let ret = call(split.iovecs(), split.count);
    if direction == Direction::In && ret > 0 {
        let saved = sys::get_errno();
        if let Err(Errno(errno)) = drain_bounce(&split, ret as usize) {
            return fail(errno);
        }
        sys::set_errno(saved);
    }
    ret
}

/// The real function `real` as a function pointer of type `F`, or `None`
/// (with `errno` set) if libc has none.
///
/// # Safety
///
/// `F` is the function's C signature.
unsafe fn real<F: Copy>(real: &RealFn) -> Option<F> {
    let Some(addr) = real.get() else {
        sys::set_errno(libc::ENOSYS);
        return None;
    };
    // SAFETY: F is a function pointer type of the symbol's signature
    // (the caller's contract), and `addr` is that symbol.
    Some(unsafe { core::mem::transmute_copy::<usize, F>(&addr) })
}

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

fn one(buf: *const c_void, len: usize) -> [libc::iovec; 1] {
    [libc::iovec {
        iov_base: buf as *mut c_void,
        iov_len: len,
    }]
}

/// The program's iovec array as a slice (empty when it cannot be one).
///
/// # Safety
///
/// `iov` points at `count` readable iovecs when `count` is in range.
unsafe fn iovecs<'a>(iov: *const libc::iovec, count: c_int) -> &'a [libc::iovec] {
    if iov.is_null() || !(1..=MAX_PIECES as c_int).contains(&count) {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts(iov, count as usize) }
}

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
                &REAL_PREAD
            } else {
                &REAL_READ
            },
            if offset.is_some() {
                &REAL_PREADV
            } else {
                &REAL_READV
            },
        ),
        Direction::Out => (
            if offset.is_some() {
                &REAL_PWRITE
            } else {
                &REAL_WRITE
            },
            if offset.is_some() {
                &REAL_PWRITEV
            } else {
                &REAL_WRITEV
            },
        ),
    };
    let call_simple = |buf: *mut c_void, len: usize| -> isize {
        match offset {
            None => {
                // SAFETY: read/write's signature.
                let Some(f) = (unsafe { real::<ReadWrite>(simple) }) else {
                    return -1;
                };
                // SAFETY: the caller's (or the bounce buffer's) valid buffer.
                unsafe { f(fd, buf, len) }
            }
            Some(offset) => {
                // SAFETY: pread64/pwrite64's signature.
                let Some(f) = (unsafe { real::<PreadPwrite>(simple) }) else {
                    return -1;
                };
                // SAFETY: as above.
                unsafe { f(fd, buf, len, offset) }
            }
        }
    };
    let buffers = one(buf, len);
    if !touches_traced(&buffers) {
        return call_simple(buf, len);
    }
    through_alias(&buffers, direction, |iov, count| {
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
            let Some(f) = (unsafe { real::<Vectored>(vectored) }) else {
                return -1;
            };
            // SAFETY: `count` iovecs that split() set up.
            unsafe { f(fd, iov, count as c_int) }
        }
        Some(offset) => {
            // SAFETY: preadv64/pwritev64's signature.
            let Some(f) = (unsafe { real::<PVectored>(vectored) }) else {
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
        (Direction::In, false) => &REAL_READV,
        (Direction::In, true) => &REAL_PREADV,
        (Direction::Out, false) => &REAL_WRITEV,
        (Direction::Out, true) => &REAL_PWRITEV,
    };
    // SAFETY: the caller's iovec array.
    let buffers = unsafe { iovecs(iov, count) };
    if !touches_traced(buffers) {
        let count = count.max(0) as usize;
        return match offset {
            None => {
                // SAFETY: readv/writev's signature.
                let Some(f) = (unsafe { real::<Vectored>(real_fn) }) else {
                    return -1;
                };
                // SAFETY: the caller's arguments, unchanged.
                unsafe { f(fd, iov, count as c_int) }
            }
            Some(offset) => {
                // SAFETY: preadv64/pwritev64's signature.
                let Some(f) = (unsafe { real::<PVectored>(real_fn) }) else {
                    return -1;
                };
                // SAFETY: as above.
                unsafe { f(fd, iov, count as c_int, offset) }
            }
        };
    }
    through_alias(buffers, direction, |iov, count| {
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
    let buffers = one(buf, len);
    let direction = match peer {
        Peer::To(..) => Direction::Out,
        Peer::From(..) => Direction::In,
    };
    if !touches_traced(&buffers) {
        return match peer {
            Peer::To(addr, addr_len) => {
                // SAFETY: sendto's signature.
                let Some(f) = (unsafe { real::<SendTo>(&REAL_SENDTO) }) else {
                    return -1;
                };
                // SAFETY: the caller's arguments, unchanged.
                unsafe { f(fd, buf, len, flags, addr, addr_len) }
            }
            Peer::From(addr, addr_len) => {
                // SAFETY: recvfrom's signature.
                let Some(f) = (unsafe { real::<RecvFrom>(&REAL_RECVFROM) }) else {
                    return -1;
                };
                // SAFETY: the caller's arguments, unchanged.
                unsafe { f(fd, buf, len, flags, addr, addr_len) }
            }
        };
    }
    through_alias(&buffers, direction, |iov, count| {
        // SAFETY: zeroed is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_iov = iov as *mut libc::iovec;
        msg.msg_iovlen = count;
        match peer {
            Peer::To(addr, addr_len) => {
                msg.msg_name = addr as *mut c_void;
                msg.msg_namelen = addr_len;
                // SAFETY: sendmsg's signature.
                let Some(f) = (unsafe { real::<MsgCall>(&REAL_SENDMSG) }) else {
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
                let Some(f) = (unsafe { real::<MsgCall>(&REAL_RECVMSG) }) else {
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
        if let Some(f) = unsafe { real::<unsafe extern "C" fn() -> !>(&REAL_CHK_FAIL) } {
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
    let Some(f) = (unsafe { real::<Ioctl>(&REAL_IOCTL) }) else {
        return -1;
    };
    // SAFETY: the caller's arguments, unchanged.
    let ret = unsafe { f(fd, request, arg) };
    if ret >= 0 && request == vfio::VFIO_GROUP_GET_DEVICE_FD {
        // SAFETY: the device name string the ioctl just read.
        unsafe { vfio::note_device_fd(ret, arg as *const core::ffi::c_char) };
    }
    if ret == -1 && sys::get_errno() == libc::EFAULT && runtime::tracing_active() {
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

#[cfg(test)]
mod tests {
    use super::widths;

    #[test]
    fn copies_are_logged_as_aligned_accesses() {
        let got: Vec<(u64, u8)> = widths(0x1003, 14).collect();
        assert_eq!(got, [(0x1003, 1), (0x1004, 4), (0x1008, 8), (0x1010, 1)]);
        let got: Vec<(u64, u8)> = widths(0x2000, 16).collect();
        assert_eq!(got, [(0x2000, 8), (0x2008, 8)]);
    }
}
