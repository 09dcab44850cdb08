//! Sites shorter than a `jmp rel32` (2 to 4 bytes), patched by
//! *instruction punning* (E9Patch, Duck et al., PLDI 2020): the jump's
//! opcode and the low bytes of its displacement overwrite the site, and
//! its high bytes are the bytes of the instructions that follow, left as
//! they are. Those fixed bytes decide where the jump can land: a window
//! of 16 MiB (a 4-byte site), 64 KiB (3 bytes) or 256 bytes (2 bytes) at
//! a distance they set. The trampoline is mapped there, in pages of its
//! own, if any are free; otherwise the site stays on the fault path.
//!
//! The bytes a punned jump borrows must never change while it is there:
//! they are *locked* ([`lock`]), and a site whose own bytes are locked is
//! not patched. Only the holder of the patch lock reads or changes the
//! locks.

use core::sync::atomic::{AtomicU64, Ordering};

use super::{CHUNK_BASE, CHUNK_CAP, CHUNK_USED, TRAMPOLINE, free_chunk, publish_chunk};
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

/// A trampoline slot for the short site of `len` bytes at `pc`, in pages
/// mapped for it inside its window: (chunk index, address).
pub fn space(pc: u64, len: usize) -> Option<(usize, usize)> {
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
    // A chunk with room at an address in the window: short sites followed
    // by the same bytes share one.
    for (i, base) in CHUNK_BASE.iter().enumerate() {
        let base = base.load(Ordering::Acquire);
        let used = CHUNK_USED[i].load(Ordering::Relaxed);
        let next = (base + used) as u64;
        if base != 0
            && used + TRAMPOLINE <= CHUNK_CAP[i].load(Ordering::Relaxed)
            && (lo..=hi).contains(&next)
        {
            return Some((i, next as usize));
        }
    }
    let chunk = free_chunk()?;
    // Candidates: the window's start, then page starts in it, at most 64
    // of them spread over it. Each gets a 64 KiB chunk (room for the next
    // short sites that land near), or just the pages its trampoline needs.
    let span = hi - lo + 1;
    let step = (span / 64).max(4096) & !4095;
    let mut target = lo;
    let mut tries = 0;
    while target <= hi && tries < 65 {
        tries += 1;
        let map = target & !4095;
        for want in [SHARED, TRAMPOLINE as u64] {
            let map_end = (target + want + 4095) & !4095;
            let map_len = (map_end - map) as usize;
            if map_fixed(map, map_len) {
                let cap = (map_end - target) as usize / TRAMPOLINE * TRAMPOLINE;
                publish_chunk(chunk, target as usize, cap, map as usize, map_len);
                return Some((chunk, target as usize));
            }
        }
        target = (map + step).max(map + 4096);
    }
    None
}

/// Bytes of trampolines a punned site's chunk is made for.
const SHARED: u64 = 64 << 10;

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
    use super::window;

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
