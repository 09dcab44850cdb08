//! The copy engine of the system-call interposers (`io`): a call whose
//! buffers touch traced memory is performed on a bounce buffer, and the
//! traced parts are copied through their aliases, each access logged.
//!
//! A traced range is `PROT_NONE` in the program's view, so the kernel cannot
//! copy to or from it: `write(fd, bar, n)` would fail with `EFAULT` where the
//! untraced program succeeds. So:
//!
//! - data the kernel reads (`write` and friends) is read from the alias into
//!   the bounce buffer first, each access logged as a `R`;
//! - data the kernel writes (`read` and friends) lands in the bounce buffer
//!   and is then stored through the alias, logged as `W`, for the bytes the
//!   call returned.
//!
//! The copy is logged as a `memcpy` would make it: naturally aligned 8-byte
//! accesses, with 4-, 2- and 1-byte ones at unaligned edges, in address
//! order, with pc 0 (no instruction of the program made them), each made
//! with one instruction of its width (`access`). Parts of a buffer outside
//! traced memory go to the kernel directly (the call becomes its vectored
//! form, so it stays one system call), so the kernel still reports `EFAULT`
//! for them. A traced part whose protection forbids the copy fails with
//! `EFAULT`, as it would untraced.
//!
//! A buffer that touches no traced range costs one scan of the range table
//! (nothing at all before the first traced mapping), then the real call.
//!
//! # Safety
//!
//! The copies read and write the program's buffers, the bounce buffer and
//! the aliases through raw addresses, and the piece tables are carved out
//! of an anonymous mapping.

use core::ffi::{c_int, c_void};

use mmiotrace_shm::{Record, kind};

use crate::msg::Msg;
use crate::ranges::{self, Range};
use crate::sys::{self, Errno, SignalsBlocked};
use crate::{access, log, state, threads};

/// Most pieces one call's buffers may split into (the kernel's `IOV_MAX`).
pub const MAX_PIECES: usize = 1024;

/// Whether any of `buffers` touches traced memory.
pub fn touches_traced(buffers: &[libc::iovec]) -> bool {
    state::tracing_active()
        && buffers.iter().any(|b| {
            let lo = b.iov_base as u64;
            b.iov_len != 0 && ranges::any_overlap(lo, lo.saturating_add(b.iov_len as u64))
        })
}

/// Which way the kernel copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
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
        let target = state::shm()
            .filter(|_| !state::muted())
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
        log::push(shm, me.slot, record, &[]);
    }
}

/// Reads the traced pieces through their aliases into the bounce buffer.
fn fill_bounce(split: &Split) -> Result<(), Errno> {
    let logger = Logger::new();
    for piece in split.pieces() {
        let Some(offset) = piece.bounce else { continue };
        copy_traced(piece.addr, piece.len, |range, at, width| {
            let dst = split.bounce(offset + (at - piece.addr));
            let mut bytes = [0u8; 8];
            let part = bytes.get_mut(..usize::from(width)).unwrap_or(&mut []);
            // SAFETY: `at..at+width` lies in the held range, so its alias is
            // mapped (readable: split() checked the program's protection);
            // one access of exactly `width` (1, 2, 4 or 8) bytes, aligned to
            // it; `dst` is inside the bounce buffer (the piece's part of it).
            unsafe {
                access::load(range.alias_of(at) as usize, part);
                core::ptr::copy_nonoverlapping(part.as_ptr(), dst, part.len());
            }
            let value = u64::from_le_bytes(bytes);
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
            let part = bytes.get_mut(..usize::from(width)).unwrap_or(&mut []);
            // SAFETY: `src` is inside the bounce buffer; the alias of the
            // held range is mapped (writable: split() checked); one aligned
            // access of exactly `width` (1, 2, 4 or 8) bytes.
            unsafe {
                core::ptr::copy_nonoverlapping(src, part.as_mut_ptr(), part.len());
                access::store(range.alias_of(at) as usize, part);
            }
            let value = u64::from_le_bytes(bytes);
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

fn fail(errno: c_int) -> isize {
    sys::set_errno(errno);
    -1
}

/// Runs a call whose buffers touch traced memory. `call` performs the
/// system call on the kernel's view: the iovecs and their count.
pub fn through_alias(
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

pub fn one(buf: *const c_void, len: usize) -> [libc::iovec; 1] {
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
pub unsafe fn iovecs<'a>(iov: *const libc::iovec, count: c_int) -> &'a [libc::iovec] {
    if iov.is_null() || !(1..=MAX_PIECES as c_int).contains(&count) {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts(iov, count as usize) }
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
