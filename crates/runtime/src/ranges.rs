//! The table of armed (traced) ranges: fixed size, lock-free to read.
//!
//! The SIGSEGV handler looks up the faulting address here, so a lookup
//! neither allocates nor locks. Mutations (arming, unmapping, splitting) are
//! serialised by the caller's mutation lock and never block readers; a
//! retired entry is only freed, and its alias only unmapped, once no handler
//! holds it (the per-entry in-flight counter).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// How many ranges can be traced at once.
pub const CAPACITY: usize = 256;

const FREE: u32 = 0;
const FILLING: u32 = 1;
const LIVE: u32 = 2;
const RETIRED: u32 = 3;

/// `repr(C)`: the patched sites' fast path reads these fields from machine
/// code, at the offsets of [`entry_at`].
#[repr(C, align(64))]
#[derive(Debug)]
struct Entry {
    state: AtomicU32,
    inflight: AtomicU32,
    map_id: AtomicU32,
    prot: AtomicU32,
    start: AtomicU64,
    len: AtomicU64,
    alias: AtomicU64,
    map_offset: AtomicU64,
    /// Word 2 of a compact record of the range's offset 0
    /// (`mmiotrace_shm::compact::key`), or [`NO_COMPACT`] for a range whose
    /// map id or offsets do not fit one: the fast path does not use it.
    compact: AtomicU64,
}

/// [`Entry::compact`] of a range the fast path cannot log.
const NO_COMPACT: u64 = u64::MAX;

impl Entry {
    const fn new() -> Entry {
        Entry {
            state: AtomicU32::new(FREE),
            inflight: AtomicU32::new(0),
            map_id: AtomicU32::new(0),
            prot: AtomicU32::new(0),
            start: AtomicU64::new(0),
            len: AtomicU64::new(0),
            alias: AtomicU64::new(0),
            map_offset: AtomicU64::new(0),
            compact: AtomicU64::new(NO_COMPACT),
        }
    }
}

static TABLE: [Entry; CAPACITY] = [const { Entry::new() }; CAPACITY];

/// Offsets in a table entry, for the fast path, which reads a live entry
/// without holding it: it relies on [`retire`] waiting for it instead
/// (`tls::wait_for_fast_paths`).
pub mod entry_at {
    use super::Entry;
    pub const STATE: i32 = core::mem::offset_of!(Entry, state) as i32;
    pub const MAP_ID: i32 = core::mem::offset_of!(Entry, map_id) as i32;
    pub const PROT: i32 = core::mem::offset_of!(Entry, prot) as i32;
    pub const START: i32 = core::mem::offset_of!(Entry, start) as i32;
    pub const LEN: i32 = core::mem::offset_of!(Entry, len) as i32;
    pub const ALIAS: i32 = core::mem::offset_of!(Entry, alias) as i32;
    pub const COMPACT: i32 = core::mem::offset_of!(Entry, compact) as i32;
    /// The value of `state` of a live entry.
    pub const LIVE: u32 = super::LIVE;
}

/// The address of entry `index`, for the fast path's cache of the entry
/// a site used last; 0 (none) for a range the fast path cannot log.
pub fn entry_address(index: usize) -> u64 {
    TABLE
        .get(index)
        .filter(|entry| entry.compact.load(Ordering::Relaxed) != NO_COMPACT)
        .map_or(0, |entry| entry as *const Entry as u64)
}
/// The lowest start and highest end of every range ever live, read by the
/// patched sites' trampolines (`patch`) as one quick test before the
/// table: an address outside is not traced. Only ever widened.
#[repr(C)]
#[derive(Debug)]
pub struct Bounds {
    lo: AtomicU64,
    hi: AtomicU64,
}

static BOUNDS: Bounds = Bounds {
    lo: AtomicU64::new(u64::MAX),
    hi: AtomicU64::new(0),
};

/// Where [`Bounds`] lie: the trampolines compare with `lo` and `hi + 8`.
pub fn bounds_address() -> usize {
    &BOUNDS as *const Bounds as usize
}

/// One past the highest index ever used, so lookups scan only that far.
static HIGH_WATER: AtomicU32 = AtomicU32::new(0);

/// A traced range as the table describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The program's address of the range (kept `PROT_NONE`).
    pub start: u64,
    /// Bytes, a whole number of pages.
    pub len: u64,
    /// Where the same memory is accessible to the runtime.
    pub alias: u64,
    pub map_id: u32,
    /// The protection the program asked for (`PROT_*`).
    pub prot: u32,
    /// Offset of `start` inside the mapping `map_id` was reported for
    /// (non-zero after a partial unmap or mprotect split the range).
    pub map_offset: u64,
}

impl Range {
    /// A placeholder for fixed-size buffers.
    pub const EMPTY: Range = Range {
        start: 0,
        len: 0,
        alias: 0,
        map_id: 0,
        prot: 0,
        map_offset: 0,
    };

    pub fn end(&self) -> u64 {
        self.start.wrapping_add(self.len)
    }

    /// Whether `addr..addr+width` lies inside the range.
    pub fn contains(&self, addr: u64, width: u64) -> bool {
        addr >= self.start && addr.wrapping_sub(self.start) <= self.len.saturating_sub(width)
    }

    /// The alias address of program address `addr`.
    pub fn alias_of(&self, addr: u64) -> u64 {
        self.alias.wrapping_add(addr.wrapping_sub(self.start))
    }

    /// The record offset (inside mapping `map_id`) of program address `addr`.
    pub fn offset_of(&self, addr: u64) -> u64 {
        self.map_offset.wrapping_add(addr.wrapping_sub(self.start))
    }
}

fn snapshot(entry: &Entry) -> Range {
    Range {
        start: entry.start.load(Ordering::Relaxed),
        len: entry.len.load(Ordering::Relaxed),
        alias: entry.alias.load(Ordering::Relaxed),
        map_id: entry.map_id.load(Ordering::Relaxed),
        prot: entry.prot.load(Ordering::Relaxed),
        map_offset: entry.map_offset.load(Ordering::Relaxed),
    }
}

fn scanned() -> impl Iterator<Item = (usize, &'static Entry)> {
    let high = (HIGH_WATER.load(Ordering::Acquire) as usize).min(CAPACITY);
    TABLE.iter().enumerate().take(high)
}

/// A range held in use: while it lives, the entry is not freed and its alias
/// stays mapped.
#[derive(Debug)]
pub struct Held {
    index: usize,
    pub range: Range,
}

impl Held {
    /// The entry's index in the table.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Keeps the hold past this value's life (until [`release_index`]):
    /// the slow path and the single-step mode use the alias after the
    /// handler returns.
    pub fn into_index(self) -> usize {
        let index = self.index;
        std::mem::forget(self);
        index
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        release_index(self.index);
    }
}

/// Ends a hold kept with [`Held::into_index`].
pub fn release_index(index: usize) {
    if let Some(entry) = TABLE.get(index) {
        // SYNC POINT: pairs with the SeqCst load of inflight in retire().
        // Saturating: after fork the counters were reset, and a hold taken
        // before it must not wrap the counter.
        let _ = entry
            .inflight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

/// Finds and holds the live range containing `addr`.
pub fn lookup(addr: u64) -> Option<Held> {
    for (index, entry) in scanned() {
        if entry.state.load(Ordering::Acquire) != LIVE {
            continue;
        }
        let start = entry.start.load(Ordering::Relaxed);
        if addr.wrapping_sub(start) >= entry.len.load(Ordering::Relaxed) {
            continue;
        }
        // SYNC POINT: this SeqCst increment and the SeqCst state load below
        // pair with retire()'s SeqCst state store and inflight load: either
        // retire() sees the hold, or this sees RETIRED.
        entry.inflight.fetch_add(1, Ordering::SeqCst);
        if entry.state.load(Ordering::SeqCst) == LIVE {
            // Fields are stable while the entry is LIVE and held.
            let range = snapshot(entry);
            if range.contains(addr, 1) {
                return Some(Held { index, range });
            }
        }
        release_index(index);
    }
    None
}

/// Whether any live range overlaps `lo..hi`, without holding it: the
/// cheap test the system-call interposers make on every buffer.
pub fn any_overlap(lo: u64, hi: u64) -> bool {
    scanned().any(|(_, entry)| {
        entry.state.load(Ordering::Acquire) == LIVE && {
            let start = entry.start.load(Ordering::Relaxed);
            start < hi && lo < start.wrapping_add(entry.len.load(Ordering::Relaxed))
        }
    })
}

/// The piece of `pos..end` that starts at `pos` and is either inside one
/// live range (returned) or outside all of them (`None`): its end, and the
/// range. A snapshot, without holding anything.
pub fn piece_at(pos: u64, end: u64) -> (u64, Option<Range>) {
    let mut next_start = end;
    for (_, entry) in scanned() {
        if entry.state.load(Ordering::Acquire) != LIVE {
            continue;
        }
        let range = snapshot(entry);
        if range.contains(pos, 1) {
            return (end.min(range.end()), Some(range));
        }
        if range.start > pos {
            next_start = next_start.min(range.start);
        }
    }
    (next_start, None)
}

/// Whether `addr` lies in any live range (without holding it).
pub fn is_traced(addr: u64) -> bool {
    lookup(addr).is_some()
}

/// The table has no free entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// Adds a live range. Caller holds the mutation lock.
pub fn insert(range: Range) -> Result<usize, TableFull> {
    for (index, entry) in TABLE.iter().enumerate() {
        if entry
            .state
            .compare_exchange(FREE, FILLING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        entry.start.store(range.start, Ordering::Relaxed);
        entry.len.store(range.len, Ordering::Relaxed);
        entry.alias.store(range.alias, Ordering::Relaxed);
        entry.map_id.store(range.map_id, Ordering::Relaxed);
        entry.prot.store(range.prot, Ordering::Relaxed);
        entry.map_offset.store(range.map_offset, Ordering::Relaxed);
        let last = range.map_offset.checked_add(range.len.saturating_sub(1));
        let compact = last
            .and_then(|last| mmiotrace_shm::compact::key(range.map_id, last))
            .and_then(|_| mmiotrace_shm::compact::key(range.map_id, range.map_offset));
        entry
            .compact
            .store(compact.unwrap_or(NO_COMPACT), Ordering::Relaxed);
        HIGH_WATER.fetch_max(index as u32 + 1, Ordering::Release);
        // Before the entry is live: a trampoline that finds the address
        // outside the bounds never reaches the table.
        BOUNDS.lo.fetch_min(range.start, Ordering::SeqCst);
        BOUNDS.hi.fetch_max(range.end(), Ordering::SeqCst);
        // SYNC POINT: pairs with the Acquire/SeqCst state loads in lookup():
        // the fields above are visible before the entry is.
        entry.state.store(LIVE, Ordering::SeqCst);
        return Ok(index);
    }
    Err(TableFull)
}

/// Changes the program protection recorded for a live entry. Whoever
/// read the old one may still be using it: see [`quiesce`].
pub fn set_prot(index: usize, prot: u32) {
    if let Some(entry) = TABLE.get(index) {
        // SYNC POINT: SeqCst, so that quiesce()'s SeqCst load of inflight
        // and lookup()'s SeqCst increment order it: a hold taken after
        // quiesce() looked snapshots this protection.
        entry.prot.store(prot, Ordering::SeqCst);
    }
}

/// After [`set_prot`] took permissions away from entry `index`: waits
/// until no patched site's fast path that may have checked the old
/// protection is still inside its access, and no handler holds the entry
/// (its snapshot has the old protection), so that the alias can lose the
/// permissions too without an access on it faulting.
pub fn quiesce(index: usize) {
    let Some(entry) = TABLE.get(index) else {
        return;
    };
    crate::tls::wait_for_fast_paths();
    wait_for_holders(entry);
}

/// Waits until no handler holds `entry`.
fn wait_for_holders(entry: &Entry) {
    let mut spins = 0u32;
    // SYNC POINT: pairs with the SeqCst inflight increment in lookup().
    while entry.inflight.load(Ordering::SeqCst) != 0 {
        spins += 1;
        if spins < 100 {
            crate::sys::yield_now();
        } else {
            crate::sys::sleep_micros(100);
        }
    }
}

/// Stops new lookups from finding entry `index` and waits until no handler
/// holds it. The entry stays allocated until [`free`].
pub fn retire(index: usize) {
    let Some(entry) = TABLE.get(index) else {
        return;
    };
    // SYNC POINT: pairs with the SeqCst inflight increment in lookup().
    entry.state.store(RETIRED, Ordering::SeqCst);
    crate::tls::wait_for_fast_paths();
    wait_for_holders(entry);
}

/// Returns a retired entry to the free list.
pub fn free(index: usize) {
    if let Some(entry) = TABLE.get(index) {
        entry.state.store(FREE, Ordering::Release);
    }
}

/// The live entries overlapping `lo..hi`, as (index, range), in address order.
/// Caller holds the mutation lock, so the set cannot change underneath.
pub fn overlapping(lo: u64, hi: u64, out: &mut [(usize, Range); CAPACITY]) -> usize {
    let mut count = 0;
    for (index, entry) in scanned() {
        if entry.state.load(Ordering::Acquire) != LIVE {
            continue;
        }
        let range = snapshot(entry);
        if range.start < hi && lo < range.end() {
            if let Some(slot) = out.get_mut(count) {
                *slot = (index, range);
                count += 1;
            }
        }
    }
    if let Some(found) = out.get_mut(..count) {
        found.sort_unstable_by_key(|(_, range)| range.start);
    }
    count
}

/// Whether any live entry belongs to mapping `map_id`.
pub fn map_id_live(map_id: u32) -> bool {
    scanned().any(|(_, entry)| {
        entry.state.load(Ordering::Acquire) == LIVE
            && entry.map_id.load(Ordering::Relaxed) == map_id
    })
}

/// After `fork`, only the forking thread exists: holds taken by other
/// threads of the parent can never be released in the child.
pub fn forget_holds_after_fork() {
    for entry in TABLE.iter() {
        entry.inflight.store(0, Ordering::Relaxed);
    }
}
