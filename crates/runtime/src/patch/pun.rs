//! Sites shorter than a `jmp rel32` (2 to 4 bytes), patched by
//! *instruction punning* (E9Patch, Duck et al., PLDI 2020): the jump's
//! opcode and the low bytes of its displacement overwrite the site, and
//! its high bytes are the bytes of the instructions that follow, left as
//! they are. Those fixed bytes decide where the jump can land: a window
//! of 16 MiB (a 4-byte site), 64 KiB (3 bytes) or 256 bytes (2 bytes) at
//! a distance they set.
//!
//! What lands there is an 8-byte *entry stub*, a `jmp rel32` on to the
//! site's trampoline, which lies wherever trampolines go: a window holds
//! hundreds of stubs where it could hold a few 2 KiB trampolines, so that
//! sites with the same bytes after them (the stores before the `ret` of
//! many small functions, a short store before another one already
//! patched) do not run out of room in windows that overlap. Stubs live in
//! pages mapped inside the windows ([`stub`]); if no page of a window can
//! be mapped, the site stays on the fault path.
//!
//! The bytes a punned jump borrows must never change while it is there:
//! they are *locked* ([`lock`]), and a site whose own bytes are locked is
//! not patched. Only the holder of the patch lock reads or changes the
//! locks and the stubs.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::sys;

/// Locked ranges, `start << 8 | len` (0: a free entry).
const LOCKS: usize = 1024;
static LOCKED: [AtomicU64; LOCKS] = [const { AtomicU64::new(0) }; LOCKS];

/// Whether any byte of `lo..hi` is locked.
pub fn locked(lo: u64, hi: u64) -> bool {
    LOCKED.iter().any(|entry| {
        let packed = entry.load(Ordering::Relaxed);
        let (start, len) = (packed >> 8, packed & 0xff);
        packed != 0 && start < hi && lo < start + len
    })
}

/// Locks `lo..hi` (at most 3 bytes). Caller holds the patch lock. With no
/// free entry left, the range stays unlocked: only a later site whose
/// bytes are these could then be patched over them, and the next
/// [`space`] call finds the table full and patches no more short sites.
pub fn lock(lo: u64, hi: u64) {
    if let Some(entry) = LOCKED
        .iter()
        .find(|entry| entry.load(Ordering::Relaxed) == 0)
    {
        entry.store(lo << 8 | (hi - lo), Ordering::Relaxed);
    }
}

/// Unlocks the ranges that start in `lo..hi` (their code is changing).
/// Caller holds the patch lock.
pub fn unlock(lo: u64, hi: u64) {
    for entry in LOCKED.iter() {
        let start = entry.load(Ordering::Relaxed) >> 8;
        if start >= lo && start < hi {
            entry.store(0, Ordering::Relaxed);
        }
    }
}

/// Whether a free lock entry is left.
fn can_lock() -> bool {
    LOCKED
        .iter()
        .any(|entry| entry.load(Ordering::Relaxed) == 0)
}

/// The window of jump targets a site of `len` bytes at `pc` can reach,
/// with `fixed` the `5 - len` bytes after it: (lowest, highest).
pub fn window(pc: u64, len: usize, fixed: &[u8]) -> Option<(u64, u64)> {
    let free_bits = 8 * (len.checked_sub(1)?);
    if !(8..=24).contains(&free_bits) || fixed.len() != 5 - len {
        return None;
    }
    let mut high = 0u32;
    for (i, &byte) in fixed.iter().enumerate() {
        high |= u32::from(byte) << (free_bits + 8 * i);
    }
    let lowest = i64::from(high as i32);
    let highest = lowest + (1i64 << free_bits) - 1;
    let next = pc.checked_add(5)? as i64;
    let lo = u64::try_from(next.checked_add(lowest)?).ok()?;
    let hi = u64::try_from(next.checked_add(highest)?).ok()?;
    Some((lo, hi))
}

/// Pages of entry stubs, at most.
const STUB_PAGES: usize = 256;
/// Bytes of one stub: `jmp rel32` and 3 bytes of `int3`.
const STUB: u64 = 8;
const PAGE: u64 = 4096;
/// Stubs in a page, and the words of its bitmap of used ones.
const STUBS_PER_PAGE: usize = (PAGE / STUB) as usize;
const WORDS: usize = STUBS_PER_PAGE / 64;

/// The stub pages' addresses (0: none yet) and their used stubs.
static STUB_PAGE: [AtomicU64; STUB_PAGES] = [const { AtomicU64::new(0) }; STUB_PAGES];
static STUB_USED: [[AtomicU64; WORDS]; STUB_PAGES] =
    [const { [const { AtomicU64::new(0) }; WORDS] }; STUB_PAGES];

/// An entry stub reserved for a site: given back when dropped, unless
/// [`Stub::keep`] says the site's jump now leads to it.
pub struct Stub {
    at: u64,
}

impl Stub {
    /// Its address.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// The site jumps here now: the stub stays taken, for good (a thread
    /// may be on its way through it at any later time).
    pub fn keep(self) {
        core::mem::forget(self);
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let page = self.at & !(PAGE - 1);
        let slot = ((self.at - page) / STUB) as usize;
        if let Some(i) = STUB_PAGE
            .iter()
            .position(|p| p.load(Ordering::Relaxed) == page)
            && let Some(word) = STUB_USED.get(i).and_then(|words| words.get(slot / 64))
        {
            word.fetch_and(!(1 << (slot % 64)), Ordering::Relaxed);
        }
    }
}

/// A free entry stub for the short site of `len` bytes at `pc`, inside its
/// window: in a stub page that has one there, or in a new page mapped in
/// the window. Caller holds the patch lock.
pub fn stub(pc: u64, len: usize) -> Option<Stub> {
    if !can_lock() {
        return None;
    }
    let mut fixed = [0u8; 3];
    let fixed = fixed.get_mut(..5 - len)?;
    for (i, byte) in fixed.iter_mut().enumerate() {
        // SAFETY: pc + len .. pc + 5 lies in code the caller checked is
        // mapped readable (read-execute).
        *byte = unsafe { core::ptr::read_volatile((pc + (len + i) as u64) as *const u8) };
    }
    let (lo, hi) = window(pc, len, fixed)?;
    // First a stub that leaves a short site right before this one a
    // window far from everything (see `leaves_room`), then any.
    let preferred = |at: u64| leaves_room(pc, len, at);
    for wanted in [&preferred as &dyn Fn(u64) -> bool, &|_| true] {
        for (i, page) in STUB_PAGE.iter().enumerate() {
            if page.load(Ordering::Relaxed) != 0
                && let Some(at) = take_slot(i, lo, hi, wanted)
            {
                return Some(Stub { at });
            }
        }
        let Some(free) = STUB_PAGE
            .iter()
            .position(|page| page.load(Ordering::Relaxed) == 0)
        else {
            continue;
        };
        // Candidates: the pages of the window, at most 65 of them spread
        // over it (a 16 MiB window has 4,096), those with a wanted stub.
        let span = hi - lo + 1;
        let step = (span / 64).max(PAGE) & !(PAGE - 1);
        let mut spread = lo & !(PAGE - 1);
        for _ in 0..65 {
            if spread > hi {
                break;
            }
            // The first page from here (of 16) that has a wanted stub.
            let page = (0..16)
                .map(|k| spread + k * PAGE)
                .take_while(|&page| page <= hi)
                .find(|&page| slots(page, lo, hi).any(wanted));
            if let Some(page) = page
                && map_fixed(page, PAGE as usize)
            {
                STUB_PAGE[free].store(page, Ordering::Relaxed);
                return take_slot(free, lo, hi, wanted).map(|at| Stub { at });
            }
            spread += step;
        }
    }
    None
}

/// The stub addresses of `page` in `lo..=hi`.
fn slots(page: u64, lo: u64, hi: u64) -> impl Iterator<Item = u64> {
    let first = lo.max(page);
    let last = hi.min(page + PAGE - STUB);
    let (from, to) = if first > last {
        (1, 0)
    } else {
        ((first - page).div_ceil(STUB), (last - page) / STUB)
    };
    (from..=to).map(move |slot| page + slot * STUB)
}

/// Whether a jump from the site at `pc` (`len` bytes) to `at` leaves a
/// short site right before it a window far from the code: such a site's
/// jump borrows this jump's first bytes (`e9` and the displacement's low
/// byte or two), so those bytes set where its window lies, 16 MiB per unit
/// of the last one it borrows. Low bytes of 0x10 to 0x70 put it 256 MiB to
/// 1.8 GiB after it, clear of the libraries and the heap, where a byte
/// near 0 would put it among them (a short store before another one in
/// glibc's `memcpy` stayed unpatched so).
fn leaves_room(pc: u64, len: usize, at: u64) -> bool {
    let rel = at.wrapping_sub(pc + 5).to_le_bytes();
    let far = |byte: u8| (0x10..=0x70).contains(&byte);
    match len {
        2 => far(rel[0]),
        _ => far(rel[0]) && far(rel[1]),
    }
}

/// Takes a free stub of page `i` whose address is in `lo..=hi` and
/// `wanted`.
fn take_slot(i: usize, lo: u64, hi: u64, wanted: &dyn Fn(u64) -> bool) -> Option<u64> {
    let page = STUB_PAGE.get(i)?.load(Ordering::Relaxed);
    let words = STUB_USED.get(i)?;
    for at in slots(page, lo, hi).filter(|&at| wanted(at)) {
        let slot = ((at - page) / STUB) as usize;
        let word = words.get(slot / 64)?;
        let bit = 1u64 << (slot % 64);
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::Relaxed);
            return Some(at);
        }
    }
    None
}

/// Writes the stub at `at`: `jmp` to `target` (a trampoline within reach).
/// No thread runs it yet; the other stubs of its page keep running while
/// it is made writable for the moment.
pub fn write_stub(at: u64, target: u64) -> Option<()> {
    let rel = i32::try_from(target as i64 - (at as i64 + 5)).ok()?;
    let mut code = [0xccu8; STUB as usize];
    code[0] = 0xe9;
    code[1..5].copy_from_slice(&rel.to_le_bytes());
    let page = (at & !(PAGE - 1)) as usize;
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    // SAFETY: `page` is a stub page this module mapped; at..at+STUB is a
    // stub taken for this site, which no thread executes yet.
    unsafe {
        sys::mprotect(page, PAGE as usize, rwx).ok()?;
        core::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len());
        sys::mprotect(page, PAGE as usize, libc::PROT_READ | libc::PROT_EXEC).ok()?;
    }
    Some(())
}

/// Maps `len` bytes at exactly `at`, if nothing is mapped there.
fn map_fixed(at: u64, len: usize) -> bool {
    // SAFETY: a fresh private mapping at an address nothing else uses
    // (MAP_FIXED_NOREPLACE: never over an existing mapping).
    let got = unsafe {
        sys::mmap(
            at as usize,
            len,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    match got {
        Ok(base) if base as u64 == at => true,
        Ok(base) => {
            // A kernel without MAP_FIXED_NOREPLACE took it as a hint.
            // SAFETY: the mapping just made, not used.
            let _ = unsafe { sys::munmap(base, len) };
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{leaves_room, window};

    #[test]
    fn a_stub_leaves_the_site_before_a_window_far_away() {
        let pc = 0x7f00_0001_0000u64;
        // A 3-byte site's jump to its window's start: displacement bytes
        // 00 00, which would put the window of a short site before it
        // 0xe9 << 16 bytes (15 MiB) after that one, among the libraries.
        assert!(!leaves_room(pc, 3, pc + 5 + 0x66c3_0000));
        assert!(leaves_room(pc, 3, pc + 5 + 0x66c3_4020));
        assert!(
            !leaves_room(pc, 3, pc + 5 + 0x66c3_0820),
            "second byte 0x08"
        );
        // A 2-byte site: only its one free byte counts.
        assert!(leaves_room(pc, 2, pc + 5 + 0x0457_8930));
        assert!(!leaves_room(pc, 2, pc + 5 + 0x0457_8980));
    }

    #[test]
    fn the_fixed_bytes_set_the_window() {
        // A 4-byte site followed by 0x48 (REX.W): rel32 = 0x48xxxxxx.
        let pc = 0x5555_0000_1000u64;
        assert_eq!(
            window(pc, 4, &[0x48]),
            Some((pc + 5 + 0x4800_0000, pc + 5 + 0x48ff_ffff))
        );
        // Followed by 0x8b: a negative displacement, below the site.
        let (lo, hi) = window(pc, 4, &[0x8b]).expect("window");
        assert_eq!(lo, pc + 5 - 0x7500_0000);
        assert_eq!(hi - lo, 0xff_ffff);
        // A 3-byte site followed by 0x89 0x45: rel32 = 0x4589xxxx.
        assert_eq!(
            window(pc, 3, &[0x89, 0x45]),
            Some((pc + 5 + 0x4589_0000, pc + 5 + 0x4589_ffff))
        );
        // A 2-byte site: a 256-byte window (rel32 = 0x001000xx).
        let (lo, hi) = window(pc, 2, &[0x00, 0x10, 0x00]).expect("window");
        assert_eq!((lo, hi), (pc + 5 + 0x10_0000, pc + 5 + 0x10_00ff));
        // Below address 0: none.
        assert_eq!(window(0x40_1000, 4, &[0x80]), None);
        // Not a short site.
        assert_eq!(window(pc, 5, &[]), None);
    }
}
