//! Arming and disarming: the logic of the `mmap`, `munmap`, `mprotect` and
//! `mremap` interposers. A shared mapping of a traced file gets an alias
//! and a `PROT_NONE` program range, entered in the range table; later
//! calls split, re-protect, move or forget traced ranges with their
//! aliases.
//!
//! # Safety
//!
//! This module maps, unmaps and re-protects memory on the program's behalf
//! (the program's traced ranges and the runtime's aliases); those calls
//! are `unsafe` because they can pull memory out from under other code.
//! Each names the range it owns.

use core::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};

use mmiotrace_shm::{Record, kind};

use crate::msg::Msg;
use crate::ranges::{self, Range};
use crate::state::{self, MutationLock};
use crate::sys::{self, Errno};
use crate::{config, context, displaced, glob, hooks, init, log, patch, signals, vfio};

const PAGE: u64 = 4096;

static HANDLERS_READY: AtomicBool = AtomicBool::new(false);
static WARNED_PRIVATE: AtomicBool = AtomicBool::new(false);

/// What the handlers need, made once, at the first traced mapping and
/// outside any handler: the decoder's tables, the code cells and scratch
/// buffers of displaced execution, then the handlers themselves.
fn ensure_handlers() {
    if HANDLERS_READY.load(Ordering::Acquire) {
        return;
    }
    context::warm_up_decoder();
    displaced::prepare();
    signals::install();
    HANDLERS_READY.store(true, Ordering::Release);
}

fn is_traced_path(path: &[u8]) -> bool {
    if glob::DEFAULT_PATTERNS
        .iter()
        .any(|p| glob::matches(p, path))
    {
        return true;
    }
    let mut buf = [0u8; config::VALUE_BYTES];
    let Some((patterns, _)) = config::trace_patterns(&mut buf) else {
        return false;
    };
    patterns
        .split(|&b| b == b'\n')
        .any(|pattern| !pattern.is_empty() && glob::matches(pattern, path))
}

fn round_up(len: u64) -> u64 {
    len.wrapping_add(PAGE - 1) & !(PAGE - 1)
}

fn overlaps_traced(lo: u64, hi: u64) -> bool {
    let mut found = [(0usize, Range::EMPTY); ranges::CAPACITY];
    ranges::overlapping(lo, hi, &mut found) != 0
}

/// The `mmap` interposer's logic.
///
/// # Safety
///
/// As `mmap(2)`: with `MAP_FIXED` the caller owns the range.
pub unsafe fn mmap(
    addr: usize,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    offset: i64,
) -> Result<usize, Errno> {
    let fixed = flags & libc::MAP_FIXED != 0;
    if fixed {
        patch::forget_code(
            addr as u64,
            (addr as u64).saturating_add(round_up(len as u64)),
        );
    }
    let file_backed = flags & libc::MAP_ANONYMOUS == 0 && fd >= 0;
    if !file_backed || !init::enabled() || state::muted() {
        // SAFETY: the caller's contract.
        let mapped = unsafe { sys::mmap(addr, len, prot, flags, fd, offset) }?;
        if fixed && state::tracing_active() {
            forget_replaced(mapped, len);
        }
        return Ok(mapped);
    }
    let mut path = [0u8; 4096];
    let path_len = sys::fd_path(fd, &mut path).unwrap_or(0);
    let path = path.get(..path_len).unwrap_or(&[]);
    let map_type = flags & 0x0f;
    let shared = map_type == libc::MAP_SHARED || map_type == libc::MAP_SHARED_VALIDATE;
    if path.is_empty() || !is_traced_path(path) {
        // SAFETY: the caller's contract.
        let mapped = unsafe { sys::mmap(addr, len, prot, flags, fd, offset) }?;
        if fixed {
            forget_replaced(mapped, len);
        }
        return Ok(mapped);
    }
    if !shared {
        if !WARNED_PRIVATE.swap(true, Ordering::Relaxed) {
            Msg::new()
                .text("MAP_PRIVATE mapping of ")
                .bytes(path)
                .text(" is NOT traced (only MAP_SHARED mappings can be aliased)")
                .emit();
        }
        // SAFETY: the caller's contract.
        let mapped = unsafe { sys::mmap(addr, len, prot, flags, fd, offset) }?;
        if fixed {
            forget_replaced(mapped, len);
        }
        return Ok(mapped);
    }
    ensure_handlers();
    // A VFIO device fd's mapping is named by its device and region.
    let mut vfio_path = [0u8; 4096];
    let path = match vfio::describe(fd, offset as u64, &mut vfio_path) {
        Some(len) => vfio_path.get(..len).unwrap_or(path),
        None => path,
    };
    // SAFETY: the caller's contract; the real call reports the real errors.
    let mapped = unsafe { sys::mmap(addr, len, prot, flags, fd, offset) }?;
    arm(mapped, len, prot, fd, offset, path, fixed);
    Ok(mapped)
}

/// Makes `start..start+len`, just mapped from `fd`, a traced range.
fn arm(start: usize, len: usize, prot: c_int, fd: c_int, offset: i64, path: &[u8], fixed: bool) {
    let Some(shm) = state::shm() else { return };
    // Under --model nothing real is behind the mapping: the alias is
    // anonymous memory, which the plugin's passed accesses use.
    let alias = if hooks::model() {
        // SAFETY: a new mapping at an address the kernel picks; only the
        // runtime will know it.
        unsafe { sys::mmap(0, len, prot, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0) }
    } else {
        // SAFETY: as above, of the program's file.
        unsafe { sys::mmap(0, len, prot, libc::MAP_SHARED, fd, offset) }
    };
    let alias = match alias {
        Ok(alias) => alias,
        Err(errno) => {
            Msg::new()
                .text("cannot map a second view of ")
                .bytes(path)
                .text(" (errno ")
                .dec(errno.0 as u64)
                .text("): this mapping is NOT traced")
                .emit();
            return;
        }
    };
    let _lock = MutationLock::take();
    if fixed {
        // Nothing is unmapped here, so this cannot fail.
        let _ = forget_locked(start as u64, len as u64, false);
    }
    let map_id = shm.next_map_id();
    // Before the range can fault: the hooks of its path.
    hooks::note_map(map_id, path, offset as u64, len as u64);
    let range = Range {
        start: start as u64,
        len: round_up(len as u64),
        alias: alias as u64,
        map_id,
        prot: prot as u32,
        map_offset: 0,
    };
    let index = match ranges::insert(range) {
        Ok(index) => index,
        Err(ranges::TableFull) => {
            Msg::new()
                .text("too many traced mappings (")
                .dec(ranges::CAPACITY as u64)
                .text("): this mapping of ")
                .bytes(path)
                .text(" is NOT traced")
                .emit();
            // SAFETY: the alias was created above and nobody else knows it.
            let _ = unsafe { sys::munmap(alias, len) };
            return;
        }
    };
    // SAFETY: the program's new mapping; nothing has used it yet. From now
    // on every access to it faults into the runtime's handler.
    if let Err(errno) = unsafe { sys::mprotect(start, len, libc::PROT_NONE) } {
        Msg::new()
            .text("cannot protect the mapping of ")
            .bytes(path)
            .text(" (errno ")
            .dec(errno.0 as u64)
            .text("): it is NOT traced")
            .emit();
        ranges::retire(index);
        ranges::free(index);
        // SAFETY: the entry is gone, so no handler uses the alias.
        let _ = unsafe { sys::munmap(alias, len) };
        return;
    }
    log::push_outside_handler(
        Record {
            kind: kind::MAP,
            map_id,
            offset: offset as u64,
            value: len as u64,
            aux: start as u64,
            ..Record::default()
        },
        path,
    );
}

/// A `MAP_FIXED` mapping replaced `start..start+len`: forget traced ranges there.
fn forget_replaced(start: usize, len: usize) {
    let (lo, hi) = (start as u64, start as u64 + round_up(len as u64));
    if !overlaps_traced(lo, hi) {
        return;
    }
    let _lock = MutationLock::take();
    // Nothing is unmapped here, so this cannot fail.
    let _ = forget_locked(lo, hi - lo, false);
}

/// Splits the live range that strictly contains `at` in two, so that
/// `at` becomes a boundary.
fn split_at(at: u64) {
    let mut found = [(0usize, Range::EMPTY); ranges::CAPACITY];
    let count = ranges::overlapping(at, at + 1, &mut found);
    for &(index, range) in found.iter().take(count) {
        if range.start >= at || at >= range.end() {
            continue;
        }
        let head_len = at - range.start;
        let head = Range {
            len: head_len,
            ..range
        };
        let tail = Range {
            start: at,
            len: range.len - head_len,
            alias: range.alias + head_len,
            map_offset: range.map_offset + head_len,
            ..range
        };
        let Ok(head_index) = ranges::insert(head) else {
            Msg::new()
                .text("range table full: cannot split a traced range")
                .emit();
            return;
        };
        if ranges::insert(tail).is_err() {
            ranges::retire(head_index);
            ranges::free(head_index);
            Msg::new()
                .text("range table full: cannot split a traced range")
                .emit();
            return;
        }
        // Both halves are live and cover the same memory: handlers may use
        // either from here on.
        ranges::retire(index);
        ranges::free(index);
    }
}

/// Removes traced ranges inside `lo..lo+len` (whole pages), unmapping their
/// alias parts, and the program's range too when `unmap_program`. Pushes
/// UNMAP for mappings with nothing left. Caller holds the mutation lock.
fn forget_locked(lo: u64, len: u64, unmap_program: bool) -> Result<(), Errno> {
    let hi = lo.saturating_add(round_up(len));
    split_at(lo);
    split_at(hi);
    let mut found = [(0usize, Range::EMPTY); ranges::CAPACITY];
    let count = ranges::overlapping(lo, hi, &mut found);
    let found = found.get(..count).unwrap_or(&[]);
    for &(index, _) in found {
        ranges::retire(index);
    }
    let result = if unmap_program {
        // SAFETY: the program asked to unmap this range.
        unsafe { sys::munmap(lo as usize, len as usize) }
    } else {
        Ok(())
    };
    for &(index, range) in found {
        // SAFETY: the entry is retired and no handler holds it, so nothing
        // uses this part of the alias any more.
        let _ = unsafe { sys::munmap(range.alias as usize, range.len as usize) };
        ranges::free(index);
        if !ranges::map_id_live(range.map_id) {
            log::push_outside_handler(
                Record {
                    kind: kind::UNMAP,
                    map_id: range.map_id,
                    ..Record::default()
                },
                &[],
            );
        }
    }
    result
}

/// The `munmap` interposer's logic.
///
/// # Safety
///
/// As `munmap(2)`.
pub unsafe fn munmap(addr: usize, len: usize) -> Result<(), Errno> {
    let (lo, hi) = (
        addr as u64,
        (addr as u64).saturating_add(round_up(len as u64)),
    );
    patch::forget_code(lo, hi);
    if !state::tracing_active() || !overlaps_traced(lo, hi) {
        // SAFETY: the caller's contract.
        return unsafe { sys::munmap(addr, len) };
    }
    let _lock = MutationLock::take();
    forget_locked(lo, len as u64, true)
}

/// The `mprotect` interposer's logic: a traced range stays `PROT_NONE`;
/// the new protection applies to its alias and to what the emulator allows.
///
/// # Safety
///
/// As `mprotect(2)`.
pub unsafe fn mprotect(addr: usize, len: usize, prot: c_int) -> Result<(), Errno> {
    let (lo, hi) = (
        addr as u64,
        (addr as u64).saturating_add(round_up(len as u64)),
    );
    // Writable code may change under a patched site.
    if prot & libc::PROT_WRITE != 0 {
        patch::forget_code(lo, hi);
    }
    if !state::tracing_active() || !overlaps_traced(lo, hi) {
        // SAFETY: the caller's contract.
        return unsafe { sys::mprotect(addr, len, prot) };
    }
    let _lock = MutationLock::take();
    split_at(lo);
    split_at(hi);
    let mut found = [(0usize, Range::EMPTY); ranges::CAPACITY];
    let count = ranges::overlapping(lo, hi, &mut found);
    let mut cursor = lo;
    for &(index, range) in found.iter().take(count) {
        if cursor < range.start {
            // SAFETY: an untraced part of the caller's range.
            unsafe { sys::mprotect(cursor as usize, (range.start - cursor) as usize, prot) }?;
        }
        // Permissions taken away are taken from the recorded protection
        // first, and the alias loses them only once nothing that checked
        // the old one is still accessing it (a patched site's fast path, a
        // handler): an access never faults on the alias. Permissions
        // given are recorded once the alias has them.
        let kept = range.prot & prot as u32;
        if kept != range.prot {
            ranges::set_prot(index, kept);
            ranges::quiesce(index);
        }
        // SAFETY: the alias of a range the program owns; the emulator
        // and the fast path check the recorded protection before every
        // access.
        if let Err(errno) = unsafe { sys::mprotect(range.alias as usize, range.len as usize, prot) }
        {
            // The program's mprotect fails: its protection stays.
            ranges::set_prot(index, range.prot);
            return Err(errno);
        }
        ranges::set_prot(index, prot as u32);
        cursor = range.end();
    }
    if cursor < hi {
        // SAFETY: an untraced part of the caller's range.
        unsafe { sys::mprotect(cursor as usize, (hi - cursor) as usize, prot) }?;
    }
    Ok(())
}

/// The `mremap` interposer's logic. A traced mapping moves or resizes with
/// its alias; its records keep their map id and offsets.
///
/// # Safety
///
/// As `mremap(2)`.
pub unsafe fn mremap(
    old: usize,
    old_len: usize,
    new_len: usize,
    flags: c_int,
    new_addr: usize,
) -> Result<usize, Errno> {
    let (lo, hi) = (
        old as u64,
        (old as u64).saturating_add(round_up(old_len as u64).max(PAGE)),
    );
    patch::forget_code(lo, hi);
    if flags & libc::MREMAP_FIXED != 0 {
        let to = new_addr as u64;
        patch::forget_code(to, to.saturating_add(round_up(new_len as u64)));
    }
    if !state::tracing_active() || !overlaps_traced(lo, hi) {
        // SAFETY: the caller's contract.
        let moved = unsafe { sys::mremap(old, old_len, new_len, flags, new_addr) }?;
        if flags & libc::MREMAP_FIXED != 0 && state::tracing_active() {
            forget_replaced(moved, new_len);
        }
        return Ok(moved);
    }
    let _lock = MutationLock::take();
    let Some(whole) = whole_mapping(lo, hi, old_len, flags) else {
        Msg::new()
            .text("mremap of traced memory at ")
            .hex(old as u64)
            .text(" that is not one whole traced mapping (or with MREMAP_DONTUNMAP) is not supported; it fails with EINVAL")
            .emit();
        return Err(Errno(libc::EINVAL));
    };
    let mut found = [(0usize, Range::EMPTY); ranges::CAPACITY];
    let count = ranges::overlapping(lo, hi, &mut found);
    let found = found.get(..count).unwrap_or(&[]);
    for &(index, _) in found {
        ranges::retire(index);
    }
    let revive = |found: &[(usize, Range)]| {
        for &(index, range) in found {
            // Same memory, same alias: a fresh live entry, then the old one goes.
            let _ = ranges::insert(range);
            ranges::free(index);
        }
    };
    // SAFETY: the caller's contract; the retired entries keep handlers off
    // the alias while both move.
    let moved = match unsafe { sys::mremap(old, old_len, new_len, flags, new_addr) } {
        Ok(moved) => moved,
        Err(errno) => {
            revive(found);
            return Err(errno);
        }
    };
    if flags & libc::MREMAP_FIXED != 0 {
        // Whatever was traced at the destination was replaced.
        let _ = forget_locked(moved as u64, new_len as u64, false);
    }
    // SAFETY: the alias is the runtime's own and no handler holds it.
    let alias = unsafe {
        sys::mremap(
            whole.alias as usize,
            whole.len as usize,
            new_len,
            libc::MREMAP_MAYMOVE,
            0,
        )
    };
    let new_range = alias.ok().map(|alias| Range {
        start: moved as u64,
        len: round_up(new_len as u64),
        alias: alias as u64,
        ..whole
    });
    match new_range.map(ranges::insert) {
        Some(Ok(_)) => {
            // Offsets past the old length, or a new address: the trace
            // says so, so that its MAP covers every access it holds.
            let covered_before = whole.map_offset + whole.len;
            let covered_now = whole.map_offset + new_len as u64;
            if moved as u64 != whole.start || covered_now > covered_before {
                log::push_outside_handler(
                    Record {
                        kind: kind::REMAP,
                        map_id: whole.map_id,
                        value: covered_now,
                        aux: (moved as u64).wrapping_sub(whole.map_offset),
                        ..Record::default()
                    },
                    &[],
                );
            }
        }
        _ => {
            Msg::new()
                .text("cannot move the alias of the traced mapping at ")
                .hex(old as u64)
                .text(": from now on it is NOT traced")
                .emit();
            // SAFETY: the program's own (moved) range gets its protection
            // back, untraced, rather than faulting forever.
            let _ = unsafe { sys::mprotect(moved, new_len, whole.prot as c_int) };
        }
    }
    for &(index, _) in found {
        ranges::free(index);
    }
    Ok(moved)
}

/// The traced pieces of `lo..hi` if they form one whole, contiguous traced
/// mapping (after partial unmaps or mprotects it may be several entries),
/// as one range. Caller holds the mutation lock.
fn whole_mapping(lo: u64, hi: u64, old_len: usize, flags: c_int) -> Option<Range> {
    const MREMAP_DONTUNMAP: c_int = 4;
    if old_len == 0 || flags & MREMAP_DONTUNMAP != 0 {
        return None;
    }
    let mut found = [(0usize, Range::EMPTY); ranges::CAPACITY];
    let count = ranges::overlapping(lo, hi, &mut found);
    let pieces = found.get(..count)?;
    let (_, first) = *pieces.first()?;
    let mut whole = first;
    for &(_, piece) in pieces.get(1..)? {
        let contiguous = piece.start == whole.end()
            && piece.alias == whole.alias + whole.len
            && piece.map_id == whole.map_id
            && piece.prot == whole.prot;
        if !contiguous {
            return None;
        }
        whole.len += piece.len;
    }
    (whole.start == lo && whole.end() == hi).then_some(whole)
}
