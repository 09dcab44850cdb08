//! The shared-memory file through which the runtime hands events to the recorder.
//!
//! # Layout
//!
//! ```text
//! offset 0               Header (HEADER_SIZE bytes, #[repr(C)])
//! HEADER_SIZE + i*stride  slot i: SlotHeader (192 bytes) then ring_entries × entry (32 bytes each)
//! ```
//!
//! Every thread that logs claims one slot and is its ring's only producer;
//! the recorder is every ring's only consumer. Positions are free-running
//! `u64` entry counts, so `write_pos - read_pos` is the fill level.
//!
//! A [`Record`] takes two entries; a patched site's load or store takes
//! one ([`compact`]). Either may be followed by `ext` continuation entries
//! that carry raw payload bytes: the path of a `MAP`, the text of a `MARK`,
//! a value wider than 8 bytes. A record and its continuations are
//! published together.
//!
//! The layout uses offsets only, never pointers, so that every process maps
//! it at its own address. Nothing here allocates, locks or formats: the
//! producer side runs inside the runtime's SIGSEGV handler.
//!
//! # Safety
//!
//! This crate reads and writes a memory region that other processes share.
//! The unsafe code is confined to turning the base address into references to
//! `#[repr(C)]` structures at checked offsets, and to copying records in and
//! out of the rings; the atomic positions order those copies. (The one
//! other `unsafe` is the `rdtsc` intrinsic, in `tsc`.)

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, compiler_fence};

pub mod glob;
pub mod hooks;
mod liveness;
mod mark;
mod tsc;

pub use liveness::RecorderLiveness;
pub use mark::{MAX_MARK_LEN, clip_mark};
pub use tsc::{TSC_CLOCK_HISTORY, TscClock, TscPair, read_tsc, tsc_is_usable};

/// First bytes of the file.
pub const MAGIC: [u8; 8] = *b"MMIOSHM\0";
/// Bumped on any change of the layout below.
pub const VERSION: u32 = 5;
/// Bytes before the first slot.
pub const HEADER_SIZE: usize = 4096;
/// Bytes of one [`Record`]: two ring entries.
pub const RECORD_SIZE: usize = 64;
/// Bytes of one ring entry. A ring is an array of entries: a [`Record`]
/// takes two, its payload whole entries after them; a patched site's load
/// or store is logged in one ([`compact`]).
pub const ENTRY_SIZE: usize = 32;
/// Entries of a [`Record`].
pub const RECORD_ENTRIES: u64 = (RECORD_SIZE / ENTRY_SIZE) as u64;
/// Environment variable that carries the shared-memory file's path to the runtime.
pub const ENV_SHM_PATH: &str = "MMIOTRACE_SHM";
/// Environment variable with an inherited file descriptor of the same file.
/// The runtime tries it first: it still works where the path does not, e.g.
/// in a mount namespace that hides /dev/shm, or after a chroot.
pub const ENV_SHM_FD: &str = "MMIOTRACE_SHM_FD";

/// `Header::flags`: a full ring drops the event (counted in `Header::lost`) instead of waiting.
pub const FLAG_DROP: u32 = 1;
/// `Header::flags`: every record's time is the raw TSC ([`read_tsc`]) and
/// carries [`RECORD_FLAG_TSC`]; without it, nanoseconds since
/// `Header::clock_base_ns`. Set by [`Shm::init`] where [`tsc_is_usable`],
/// so that every producer stamps on one clock and the recorder can merge
/// the rings by time.
pub const FLAG_TSC_TIME: u32 = 2;

/// How far the recorder stays behind its own clock when it merges the
/// rings by time, in the units of the records' time (TSC ticks with
/// [`FLAG_TSC_TIME`], nanoseconds without): a producer that is not yet
/// stamping ([`Shm::publication`]) when the recorder looks may still have
/// read a time up to this much older, because its store of the flag waits
/// in its store buffer, or its `rdtsc` ran ahead of that store. Both take
/// nanoseconds; 100,000 is 20 µs of a 5 GHz TSC and 100 µs of a 1 GHz one.
pub const MERGE_SLACK: u64 = 100_000;

/// Longest path of the shared-memory file that the header carries.
pub const MAX_SHM_PATH: usize = 1024;

/// Set by the kernel in a robust futex word whose owner thread died
/// (`FUTEX_OWNER_DIED`, linux/futex.h).
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
/// The owner's thread id in a robust futex word (`FUTEX_TID_MASK`).
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// Record kinds.
pub mod kind {
    /// An access that read `width` bytes at `offset` into map `map_id`.
    pub const READ: u8 = 1;
    /// An access that wrote `width` bytes.
    pub const WRITE: u8 = 2;
    /// An access the runtime performed without knowing its value;
    /// `aux` holds up to 8 instruction bytes, `width` how many.
    pub const UNKNOWN: u8 = 3;
    /// A traced mapping appeared: `offset` is the file offset, `value` the
    /// length, `aux` the program's address; the path follows as payload.
    pub const MAP: u8 = 4;
    /// A traced mapping went away.
    pub const UNMAP: u8 = 5;
    /// A user marker; the text follows as payload.
    pub const MARK: u8 = 6;
    /// A traced mapping moved or grew (`mremap`): it keeps its map id and
    /// offsets; `aux` is the program's new address of offset 0, `value`
    /// the length that covers every offset now. The recorder writes it as
    /// a second `MAP` line of the same id.
    pub const REMAP: u8 = 7;
}

/// `Record::flags`: the access was made by displaced or slow-path execution.
pub const RECORD_FLAG_SLOW_PATH: u8 = 1;
/// `Record::flags`: a hook changed or marked the access (docs/HOOKS.md):
/// `value` is what the program saw or wrote, `aux` what the device gave or
/// got, and a 4-byte payload holds the rule number (0 for the plugin).
pub const RECORD_FLAG_HOOKED: u8 = 2;
/// `Record::flags`, with [`RECORD_FLAG_HOOKED`]: the device was not
/// accessed (a dropped write, a read the hook answered); `aux` is 0.
pub const RECORD_FLAG_NO_DEVICE: u8 = 4;
/// `Record::flags`: `time_ns` holds the raw TSC ([`read_tsc`], `rdtsc`) of
/// the event instead of nanoseconds since `Header::clock_base_ns`
/// ([`Shm::push`] keeps it as it is). The recorder converts it (see
/// [`TscClock`]) and clears the flag, so no trace file ever holds this
/// flag. Producers set it only where [`tsc_is_usable`]; never on other
/// architectures than x86_64.
pub const RECORD_FLAG_TSC: u8 = 8;

/// `Record::flags`: a patched site's fast path logged the access (in
/// machine code, without an exception). For tests and measurements: the
/// trace does not keep it.
pub const RECORD_FLAG_FAST_PATH: u8 = 16;

/// One ring entry. Plain data: a producer fills it, then publishes it with
/// the `Release` store of `SlotHeader::write_pos`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    /// Access width in bytes (1..=64); for `UNKNOWN`, instruction bytes in `aux`.
    pub width: u8,
    /// Continuation entries ([`ENTRY_SIZE`] bytes each) that follow this
    /// record's two.
    pub ext: u8,
    pub flags: u8,
    pub map_id: u32,
    /// The record's position in its ring (its `write_pos`), set by
    /// [`Shm::push`]: a sequence number per ring. The trace's global order
    /// is made by the recorder, which merges the rings by `time_ns`.
    pub seq: u64,
    /// The time the producer stamped when it published the record:
    /// nanoseconds since `Header::clock_base_ns`, or with
    /// [`RECORD_FLAG_TSC`] the raw TSC (see [`FLAG_TSC_TIME`]).
    pub time_ns: u64,
    pub tid: u32,
    pub pid: u32,
    pub offset: u64,
    /// The low 8 bytes of the value (little-endian). Wider values travel whole in the payload.
    pub value: u64,
    pub pc: u64,
    pub aux: u64,
}

const _: () = assert!(std::mem::size_of::<Record>() == RECORD_SIZE);

/// Longest payload one record can carry in continuation entries.
pub const MAX_PAYLOAD: usize = 255 * ENTRY_SIZE;

/// The one-entry record of a load or store that a patched site's fast path
/// logs (in machine code): four little-endian `u64`s.
///
/// - word 0: [`TAG`](compact::TAG) and the flags in the low byte, the width
///   in the next, the pc in the top 48 bits (a user-space address);
/// - word 1: the time, the raw TSC;
/// - word 2: the map id in the top 16 bits, the offset in the map below
///   ([`key`](compact::key));
/// - word 3: the value's low 8 bytes; a wider value follows whole in
///   `ext` entries (flags bits 2-3).
///
/// The thread and process are those of the ring's last [`Record`]: a
/// thread's first record in a ring is always one (the fast path runs only
/// once the general path has given the thread its slot, and never on a
/// borrowed one). The consumer turns a compact record into a [`Record`].
pub mod compact {
    use super::{RECORD_FLAG_FAST_PATH, RECORD_FLAG_TSC, Record, kind};

    /// Set in the first byte of a compact record; a [`Record`]'s first
    /// byte is its kind, which never has it.
    pub const TAG: u8 = 0x80;
    /// Flag: a store (else a load).
    pub const WRITE: u8 = 1;
    /// The continuation entries (0 to 2) are in bits 2-3 of the flags.
    pub const EXT_SHIFT: u32 = 2;
    /// Bits of the offset in word 2.
    pub const OFFSET_BITS: u32 = 48;

    /// Word 2's map id and offset, for a map whose id and every offset
    /// fit (`None` otherwise: its accesses are logged as records).
    pub fn key(map_id: u32, offset: u64) -> Option<u64> {
        (map_id < 1 << (64 - OFFSET_BITS) && offset >> OFFSET_BITS == 0)
            .then(|| u64::from(map_id) << OFFSET_BITS | offset)
    }

    /// Word 0 of a site's records: the same for every access it makes.
    pub fn head(write: bool, width: u8, ext: u8, pc: u64) -> u64 {
        u64::from(TAG | (u8::from(write) * WRITE) | ((ext & 3) << EXT_SHIFT))
            | u64::from(width) << 8
            | pc << 16
    }

    /// The [`Record`] a compact record stands for, at ring position `seq`
    /// of a ring whose last record was thread `tid` of process `pid`.
    #[inline]
    pub fn expand(words: [u64; 4], seq: u64, tid: u32, pid: u32) -> Record {
        let flags = words[0] as u8;
        Record {
            kind: if flags & WRITE != 0 {
                kind::WRITE
            } else {
                kind::READ
            },
            width: (words[0] >> 8) as u8,
            ext: (flags >> EXT_SHIFT) & 3,
            flags: RECORD_FLAG_TSC | RECORD_FLAG_FAST_PATH,
            map_id: (words[2] >> OFFSET_BITS) as u32,
            seq,
            time_ns: words[1],
            tid,
            pid,
            offset: words[2] & ((1 << OFFSET_BITS) - 1),
            value: words[3],
            pc: words[0] >> 16,
            aux: 0,
        }
    }
}

#[repr(C, align(64))]
#[derive(Debug)]
struct Padded<T>(T);

/// The file header. Written once by the recorder before the program starts,
/// apart from the atomics.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    pub header_size: u32,
    pub slot_count: u32,
    /// Entries per ring; a power of two.
    pub ring_entries: u32,
    pub total_size: u64,
    /// `CLOCK_MONOTONIC` in nanoseconds when recording started.
    pub clock_base_ns: u64,
    pub flags: u32,
    pub recorder_pid: u32,
    /// Length of `shm_path`.
    pub shm_path_len: u32,
    /// The file's own path, so that a runtime that finds the recorder gone
    /// can remove it.
    pub shm_path: [u8; MAX_SHM_PATH],
    next_map_id: Padded<AtomicU32>,
    lost: Padded<AtomicU64>,
    full_waits: Padded<AtomicU64>,
    slots_used: Padded<AtomicU32>,
    /// A [`StopReason`] once nobody drains the rings any more, 0 before.
    stopped: Padded<AtomicU32>,
    /// The recorder's liveness: a robust futex word that holds the thread
    /// id of a recorder thread, in which the kernel sets
    /// `FUTEX_OWNER_DIED` when that thread ends, however the recorder ends
    /// (see [`RecorderLiveness`]). 0 when the recorder does not announce it.
    recorder_alive: Padded<AtomicU32>,
    /// Non-zero once a runtime has said that tracing stopped (once per run).
    stop_notice: Padded<AtomicU32>,
    /// Threads that had to wait for a free ring slot.
    slot_waits: Padded<AtomicU64>,
    /// Non-zero once a runtime has said that every slot is taken (once per run).
    slot_notice: Padded<AtomicU32>,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

/// Per-slot control block, one cache line per party that writes.
#[repr(C)]
#[derive(Debug)]
pub struct SlotHeader {
    /// Thread id of the producer that owns the ring, 0 when free.
    owner_tid: Padded<AtomicU32>,
    /// The producer's line: what it published, and whether it is stamping.
    write: Padded<WriteLine>,
    read: Padded<ReadLine>,
}

/// What the ring's consumer writes.
#[repr(C)]
#[derive(Debug)]
struct ReadLine {
    /// Entries consumed so far (`read_pos`).
    pos: AtomicU64,
    /// The thread (low half) and process (high half) of the last
    /// [`Record`] consumed: those of the [`compact`] records after it.
    ids: AtomicU64,
}

/// What a ring's producer writes on every push, in one cache line.
#[repr(C)]
#[derive(Debug)]
struct WriteLine {
    /// Records published so far (`write_pos`).
    pos: AtomicU64,
    /// Non-zero from just before the producer reads the time for a record
    /// until after it has published that record (see [`Shm::publication`]).
    stamping: AtomicU64,
}

const SLOT_HEADER_SIZE: usize = std::mem::size_of::<SlotHeader>();
const _: () = assert!(SLOT_HEADER_SIZE == 192);

/// The addresses of one ring and of the shared counters ([`Shm::raw_layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLayout {
    /// The file header: the stop reason at
    /// [`RawLayout::STOPPED`], the recorder's liveness word at
    /// [`RawLayout::RECORDER_ALIVE`].
    pub header: u64,
    /// The slot header: `write_pos` at [`RawLayout::WRITE_POS`], the
    /// stamping flag at [`RawLayout::STAMPING`], `read_pos` at
    /// [`RawLayout::READ_POS`].
    pub slot_header: u64,
    /// The ring's first entry.
    pub records: u64,
    /// Entries in the ring (a power of two).
    pub ring_entries: u64,
}

impl RawLayout {
    pub const STOPPED: usize = core::mem::offset_of!(Header, stopped);
    pub const RECORDER_ALIVE: usize = core::mem::offset_of!(Header, recorder_alive);
    pub const WRITE_POS: usize =
        core::mem::offset_of!(SlotHeader, write) + core::mem::offset_of!(WriteLine, pos);
    pub const STAMPING: usize =
        core::mem::offset_of!(SlotHeader, write) + core::mem::offset_of!(WriteLine, stamping);
    pub const READ_POS: usize =
        core::mem::offset_of!(SlotHeader, read) + core::mem::offset_of!(ReadLine, pos);
    /// The bit of the liveness word that says the recorder is gone.
    pub const RECORDER_GONE: u32 = FUTEX_OWNER_DIED;
}

/// Sizes chosen by the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub slot_count: u32,
    /// Entries per ring; rounded up to a power of two.
    pub ring_entries: u32,
    pub drop_when_full: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            slot_count: 128,
            ring_entries: 65536,
            drop_when_full: false,
        }
    }
}

/// Fewest records a ring may hold.
pub const MIN_RING_ENTRIES: u32 = 512;
/// Most entries a ring may hold (64 MiB of ring).
pub const MAX_RING_ENTRIES: u32 = 1 << 21;
/// Most slots a file may have (the runtime keeps per-slot state in fixed tables).
pub const MAX_SLOTS: u32 = 1024;

impl Config {
    /// Entries per ring: `ring_entries` rounded up to a power of two.
    fn ring_entries(&self) -> usize {
        (self.ring_entries.clamp(MIN_RING_ENTRIES, MAX_RING_ENTRIES) as usize).next_power_of_two()
    }

    /// Whether the sizes are within [`MIN_RING_ENTRIES`]..=[`MAX_RING_ENTRIES`]
    /// entries per ring and 1..=[`MAX_SLOTS`] slots.
    pub fn check(&self) -> Result<(), ShmError> {
        if !(MIN_RING_ENTRIES..=MAX_RING_ENTRIES).contains(&self.ring_entries)
            || !(1..=MAX_SLOTS).contains(&self.slot_count)
        {
            return Err(ShmError::BadGeometry);
        }
        Ok(())
    }

    fn slot_stride(&self) -> usize {
        SLOT_HEADER_SIZE + self.ring_entries() * ENTRY_SIZE
    }

    /// Size of the file this configuration needs.
    pub fn total_size(&self) -> usize {
        HEADER_SIZE + self.slot_count as usize * self.slot_stride()
    }
}

/// Why a region is not a usable shared-memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShmError {
    TooSmall,
    BadMagic,
    BadVersion(u32),
    BadGeometry,
    Misaligned,
}

impl std::fmt::Display for ShmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShmError::TooSmall => write!(f, "shared-memory file is smaller than its header says"),
            ShmError::BadMagic => write!(f, "not an mmiotrace shared-memory file (bad magic)"),
            ShmError::BadVersion(v) => write!(
                f,
                "shared-memory layout version {v}, this build speaks {VERSION}: runtime and recorder are from different builds"
            ),
            ShmError::BadGeometry => write!(
                f,
                "impossible shared-memory geometry (rings: 1 to {MAX_SLOTS}; entries per ring: {MIN_RING_ENTRIES} to {MAX_RING_ENTRIES})"
            ),
            ShmError::Misaligned => write!(f, "shared-memory mapping is not page aligned"),
        }
    }
}

impl std::error::Error for ShmError {}

/// What a producer does when its ring is full and the recorder is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    Pushed,
    /// The ring was full in drop mode: the event was counted in `lost` and not written.
    Dropped,
    /// The payload is longer than [`MAX_PAYLOAD`] or than a ring can hold.
    TooLarge,
    /// Nobody drains the rings any more, for this reason: nothing was
    /// written, and no later push will write anything.
    Stopped(StopReason),
}

/// Why nobody drains the rings any more (`Header::stopped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The recorder finished the trace while traced processes still ran
    /// (they outlived PROGRAM and `--linger`); it said so itself.
    Finished = 1,
    /// The recorder could not write the trace; it says so itself.
    WriteFailed = 2,
    /// The recorder ended without finishing (killed, or crashed); a
    /// runtime noticed.
    RecorderGone = 3,
}

impl StopReason {
    fn from_raw(raw: u32) -> Option<StopReason> {
        match raw {
            1 => Some(StopReason::Finished),
            2 => Some(StopReason::WriteFailed),
            3 => Some(StopReason::RecorderGone),
            _ => None,
        }
    }
}

/// A mapped shared-memory file. Cheap to copy; every process maps it at its own address.
#[derive(Debug, Clone, Copy)]
pub struct Shm {
    base: *mut u8,
    len: usize,
    slot_count: usize,
    ring_entries: usize,
    stride: usize,
}

// SAFETY: all shared state behind `base` is either immutable after `init` or
// accessed through atomics (positions, counters) that order the plain record
// copies; see the SYNC POINT comments.
unsafe impl Send for Shm {}
// SAFETY: as for Send.
unsafe impl Sync for Shm {}

/// A record read from a ring, with its payload.
#[derive(Debug, Clone)]
pub struct Popped {
    pub record: Record,
    pub payload: Vec<u8>,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; clock_gettime is async-signal-safe
    // (it is a vDSO call without locks).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub fn now_ns() -> u64 {
    monotonic_ns()
}

impl Shm {
    /// Lays out a fresh file in `base[..len]`, which must be zeroed, page
    /// aligned and at least `config.total_size()` bytes. `path` is the
    /// file's path, for a runtime that has to remove it (see
    /// [`Shm::path`]); one longer than [`MAX_SHM_PATH`] is not kept.
    ///
    /// # Safety
    ///
    /// `base..base+len` must be a writable mapping that stays mapped as long as
    /// the returned `Shm` or any copy of it is used, and nothing else may
    /// access it during this call.
    pub unsafe fn init(
        base: *mut u8,
        len: usize,
        config: &Config,
        path: &[u8],
    ) -> Result<Shm, ShmError> {
        if (base as usize) % 4096 != 0 {
            return Err(ShmError::Misaligned);
        }
        config.check()?;
        if len < config.total_size() {
            return Err(ShmError::TooSmall);
        }
        // SAFETY: `base` is aligned and points at HEADER_SIZE writable bytes
        // (checked above) that nobody else accesses yet.
        let header = unsafe { &mut *(base as *mut Header) };
        header.magic = MAGIC;
        header.version = VERSION;
        header.header_size = HEADER_SIZE as u32;
        header.slot_count = config.slot_count;
        header.ring_entries = config.ring_entries() as u32;
        header.total_size = config.total_size() as u64;
        header.clock_base_ns = monotonic_ns();
        header.flags = if config.drop_when_full { FLAG_DROP } else { 0 }
            | if tsc_is_usable() { FLAG_TSC_TIME } else { 0 };
        header.recorder_pid = std::process::id();
        if let Some(dst) = header.shm_path.get_mut(..path.len()) {
            dst.copy_from_slice(path);
            header.shm_path_len = path.len() as u32;
        }
        // SAFETY: the header was just written in full.
        unsafe { Shm::from_raw(base, len) }
    }

    /// Checks the header of an existing file and returns a handle to it.
    ///
    /// # Safety
    ///
    /// `base..base+len` must be a readable and writable shared mapping of an
    /// mmiotrace shared-memory file that stays mapped while the `Shm` is used.
    pub unsafe fn from_raw(base: *mut u8, len: usize) -> Result<Shm, ShmError> {
        if (base as usize) % 4096 != 0 {
            return Err(ShmError::Misaligned);
        }
        if len < HEADER_SIZE {
            return Err(ShmError::TooSmall);
        }
        // SAFETY: aligned, at least HEADER_SIZE readable bytes (checked above).
        let header = unsafe { &*(base as *const Header) };
        if header.magic != MAGIC {
            return Err(ShmError::BadMagic);
        }
        if header.version != VERSION {
            return Err(ShmError::BadVersion(header.version));
        }
        let ring_entries = header.ring_entries as usize;
        if header.header_size as usize != HEADER_SIZE
            || !ring_entries.is_power_of_two()
            || !(MIN_RING_ENTRIES..=MAX_RING_ENTRIES).contains(&header.ring_entries)
            || !(1..=MAX_SLOTS).contains(&header.slot_count)
        {
            return Err(ShmError::BadGeometry);
        }
        let stride = SLOT_HEADER_SIZE + ring_entries * ENTRY_SIZE;
        let need = HEADER_SIZE + header.slot_count as usize * stride;
        if need as u64 != header.total_size {
            return Err(ShmError::BadGeometry);
        }
        if len < need {
            return Err(ShmError::TooSmall);
        }
        Ok(Shm {
            base,
            len,
            slot_count: header.slot_count as usize,
            ring_entries,
            stride,
        })
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn header(&self) -> &Header {
        // SAFETY: checked in from_raw: aligned and in bounds; the non-atomic
        // fields are never written after init.
        unsafe { &*(self.base as *const Header) }
    }

    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    pub fn ring_entries(&self) -> usize {
        self.ring_entries
    }

    fn slot_header(&self, slot: usize) -> &SlotHeader {
        assert!(slot < self.slot_count, "slot index out of range");
        // SAFETY: slot < slot_count, so the slot header lies inside the
        // mapping (geometry checked in from_raw) and is 64-byte aligned.
        unsafe { &*(self.base.add(HEADER_SIZE + slot * self.stride) as *const SlotHeader) }
    }

    /// The entry at free-running position `pos` of `slot`'s ring.
    ///
    /// # Safety
    ///
    /// `slot < slot_count` (callers check it with [`Shm::slot_header`]
    /// first); otherwise the pointer leaves the mapping.
    unsafe fn entry_ptr(&self, slot: usize, pos: u64) -> *mut u8 {
        let index = (pos as usize) & (self.ring_entries - 1);
        // SAFETY: slot < slot_count (the caller's contract) and index <
        // ring_entries, so this stays in the mapping.
        unsafe {
            self.base
                .add(HEADER_SIZE + slot * self.stride + SLOT_HEADER_SIZE + index * ENTRY_SIZE)
        }
    }

    /// Writes `record` into the two entries at `pos` (the second may be
    /// the ring's first).
    ///
    /// # Safety
    ///
    /// As [`Shm::entry_ptr`]; the entries are the caller's to write.
    unsafe fn write_record(&self, slot: usize, pos: u64, record: &Record) {
        let bytes = (record as *const Record).cast::<u8>();
        for half in 0..RECORD_ENTRIES {
            // SAFETY: a Record is RECORD_SIZE bytes; each entry is
            // ENTRY_SIZE writable bytes (the caller's contract).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.add(half as usize * ENTRY_SIZE),
                    self.entry_ptr(slot, pos + half),
                    ENTRY_SIZE,
                );
            }
        }
    }

    /// Writes `payload` into whole entries from `pos` on, zero past its end.
    ///
    /// # Safety
    ///
    /// As [`Shm::entry_ptr`]; the entries are the caller's to write.
    unsafe fn write_payload(&self, slot: usize, pos: u64, payload: &[u8]) {
        for (i, chunk) in payload.chunks(ENTRY_SIZE).enumerate() {
            // SAFETY: each entry is ENTRY_SIZE writable bytes (the
            // caller's contract), and a chunk is at most that long.
            unsafe {
                let dst = self.entry_ptr(slot, pos + i as u64);
                std::ptr::write_bytes(dst, 0, ENTRY_SIZE);
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), dst, chunk.len());
            }
        }
    }

    /// The record at `pos`: a [`Record`] from its two entries, or a
    /// [`compact`] one expanded (with the ids of the ring's last record),
    /// and how many entries it takes, continuations included.
    ///
    /// # Safety
    ///
    /// As [`Shm::entry_ptr`]; the entries at `pos` are published and not
    /// yet consumed.
    #[inline]
    unsafe fn read_record(&self, slot: usize, pos: u64, ids: u64) -> (Record, u64) {
        // SAFETY: the caller's contract (the slot is checked).
        let entry = unsafe { self.entry_ptr(slot, pos) };
        // SAFETY: a published entry, 32-byte aligned, that the producer
        // does not write until it is consumed (the caller's contract).
        let words = unsafe { std::ptr::read(entry as *const [u64; 4]) };
        if words[0] as u8 & compact::TAG != 0 {
            let record = compact::expand(words, pos, ids as u32, (ids >> 32) as u32);
            return (record, 1 + u64::from(record.ext));
        }
        let mut record = Record::default();
        let bytes = (&mut record as *mut Record).cast::<u8>();
        for half in 0..RECORD_ENTRIES {
            // SAFETY: as above, for both entries; a Record is RECORD_SIZE
            // bytes of plain data (any bytes are a valid Record).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.entry_ptr(slot, pos + half),
                    bytes.add(half as usize * ENTRY_SIZE),
                    ENTRY_SIZE,
                );
            }
        }
        (record, RECORD_ENTRIES + u64::from(record.ext))
    }

    /// Appends the `ext` entries after position `from` to `payload`.
    ///
    /// # Safety
    ///
    /// As [`Shm::read_record`], for those entries.
    unsafe fn read_payload(&self, slot: usize, from: u64, ext: u64, payload: &mut Vec<u8>) {
        for i in 0..ext {
            // SAFETY: the caller's contract; read as a slice, not a
            // volatile array: that one was copied byte by byte.
            let chunk =
                unsafe { std::slice::from_raw_parts(self.entry_ptr(slot, from + i), ENTRY_SIZE) };
            payload.extend_from_slice(chunk);
        }
    }

    /// Allocates the next map id (starting at 1).
    pub fn next_map_id(&self) -> u32 {
        self.header().next_map_id.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether every record's time is the raw TSC ([`FLAG_TSC_TIME`]).
    pub fn tsc_time(&self) -> bool {
        self.header().flags & FLAG_TSC_TIME != 0
    }

    /// Now, on the clock the records are stamped with ([`FLAG_TSC_TIME`]).
    pub fn now_stamp(&self) -> u64 {
        if self.tsc_time() {
            read_tsc()
        } else {
            monotonic_ns().saturating_sub(self.header().clock_base_ns)
        }
    }

    /// Stamps `record` with the time now, unless it carries a TSC reading
    /// already ([`RECORD_FLAG_TSC`]).
    #[inline]
    fn stamp(&self, record: &mut Record) {
        if record.flags & RECORD_FLAG_TSC == 0 {
            record.time_ns = self.now_stamp();
            if self.tsc_time() {
                record.flags |= RECORD_FLAG_TSC;
            }
        }
    }

    /// Whether `slot`'s producer is between reading the time for a record
    /// and publishing it, and then its `write_pos` (read after the flag).
    ///
    /// What the recorder's merge by time rests on: a record that is not
    /// published when this says `false` gets a time later than the
    /// recorder's clock read before this call, less [`MERGE_SLACK`]; one
    /// that is being stamped gets a time no earlier than the ring's
    /// records before it.
    pub fn publication(&self, slot: usize) -> (bool, u64) {
        let line = &self.slot_header(slot).write.0;
        // SYNC POINT: pairs with the Release stores of the flag's clearing
        // and of pos in push(): a flag seen clear comes with every record
        // published before it was cleared.
        let stamping = line.stamping.load(Ordering::Acquire) != 0;
        (stamping, line.pos.load(Ordering::Acquire))
    }

    /// Where `slot`'s ring and the counters a push touches lie in this
    /// process's mapping, for a producer that pushes without calling
    /// [`Shm::push`] (the runtime's patched sites, written in machine
    /// code). Such a producer must do what `push` does, with [`compact`]
    /// records (its thread's records before them in the ring are
    /// [`Record`]s): the same space check; the stamping flag set before it reads the time and cleared
    /// after `write_pos` is stored; the record written before `write_pos`
    /// is stored; no push while the file is stopped or the recorder gone
    /// (it leaves those cases to `push`).
    pub fn raw_layout(&self, slot: usize) -> RawLayout {
        let slot_header = self.slot_header(slot) as *const SlotHeader as u64;
        RawLayout {
            header: self.base as u64,
            slot_header,
            records: slot_header + SLOT_HEADER_SIZE as u64,
            ring_entries: self.ring_entries as u64,
        }
    }

    /// Events dropped because a ring was full in drop mode.
    pub fn lost(&self) -> u64 {
        self.header().lost.0.load(Ordering::Relaxed)
    }

    /// How many pushes had to wait for the recorder.
    pub fn full_waits(&self) -> u64 {
        self.header().full_waits.0.load(Ordering::Relaxed)
    }

    /// Slots ever claimed (an upper bound on the slots the recorder must scan).
    pub fn slots_used(&self) -> usize {
        (self.header().slots_used.0.load(Ordering::Acquire) as usize).min(self.slot_count)
    }

    /// Marks the file as no longer drained. The recorder calls this when it
    /// stops recording while traced processes may still run (they outlived
    /// the program it started); their pushes then write nothing and never
    /// wait for a full ring.
    pub fn close(&self) {
        self.stop(StopReason::Finished);
    }

    /// Marks the file as no longer drained, for `reason`, unless it already
    /// was (the first reason stays). Returns the reason that holds.
    pub fn stop(&self, reason: StopReason) -> StopReason {
        // SYNC POINT: the Release pairs with the Acquire load in
        // stop_reason(); the Acquire failure load pairs with another
        // process's Release here.
        match self.header().stopped.0.compare_exchange(
            0,
            reason as u32,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => reason,
            Err(raw) => StopReason::from_raw(raw).unwrap_or(reason),
        }
    }

    /// Why the rings are no longer drained, if they are not.
    pub fn stop_reason(&self) -> Option<StopReason> {
        // SYNC POINT: pairs with the Release CAS in stop().
        StopReason::from_raw(self.header().stopped.0.load(Ordering::Acquire))
    }

    /// Whether [`Shm::close`] or [`Shm::stop`] was called.
    pub fn is_closed(&self) -> bool {
        self.stop_reason().is_some()
    }

    /// The liveness word for [`RecorderLiveness::announce`].
    pub fn recorder_word(&self) -> &AtomicU32 {
        &self.header().recorder_alive.0
    }

    /// Whether the recorder announced its liveness and has since ended: the
    /// kernel set `FUTEX_OWNER_DIED` in the word (see [`RecorderLiveness`]).
    pub fn recorder_gone(&self) -> bool {
        // Relaxed: the kernel's store is the only change after the
        // announcement, and seeing it late only delays the notice.
        self.recorder_word().load(Ordering::Relaxed) & FUTEX_OWNER_DIED != 0
    }

    /// Why the rings are no longer drained, if they are not; records
    /// [`StopReason::RecorderGone`] the first time the recorder is found gone.
    pub fn check_stopped(&self) -> Option<StopReason> {
        if let Some(reason) = self.stop_reason() {
            return Some(reason);
        }
        self.recorder_gone()
            .then(|| self.stop(StopReason::RecorderGone))
    }

    /// True exactly once per file: for the first caller after the rings
    /// stopped being drained, which then tells the user.
    pub fn take_stop_notice(&self) -> bool {
        self.header().stop_notice.0.swap(1, Ordering::Relaxed) == 0
    }

    /// Counts a thread that waits for a free ring slot. True for the first
    /// in the file's life, which then tells the user.
    pub fn note_slot_wait(&self) -> bool {
        self.header().slot_waits.0.fetch_add(1, Ordering::Relaxed);
        self.header().slot_notice.0.swap(1, Ordering::Relaxed) == 0
    }

    /// Threads that had to wait for a free ring slot.
    pub fn slot_waits(&self) -> u64 {
        self.header().slot_waits.0.load(Ordering::Relaxed)
    }

    /// The path the recorder gave the file (see [`Shm::init`]).
    pub fn path(&self) -> &[u8] {
        let header = self.header();
        let len = (header.shm_path_len as usize).min(MAX_SHM_PATH);
        header.shm_path.get(..len).unwrap_or(&[])
    }

    /// Claims a free slot for thread `tid`. Returns `None` if every slot is owned.
    pub fn claim_slot(&self, tid: u32) -> Option<usize> {
        for slot in 0..self.slot_count {
            let owner = &self.slot_header(slot).owner_tid.0;
            // SYNC POINT: the Acquire CAS pairs with the Release store in
            // release_slot(), so the new owner sees the old owner's write_pos.
            if owner.load(Ordering::Relaxed) == 0
                && owner
                    .compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.header()
                    .slots_used
                    .0
                    .fetch_max(slot as u32 + 1, Ordering::Release);
                return Some(slot);
            }
        }
        None
    }

    /// Gives a slot back. Records still in its ring stay there for the
    /// recorder; the next owner appends after them.
    pub fn release_slot(&self, slot: usize) {
        // SYNC POINT: pairs with the Acquire CAS in claim_slot().
        self.slot_header(slot)
            .owner_tid
            .0
            .store(0, Ordering::Release);
    }

    /// The thread owning `slot`, 0 if free.
    pub fn slot_owner(&self, slot: usize) -> u32 {
        self.slot_header(slot).owner_tid.0.load(Ordering::Relaxed)
    }

    /// Frees `slot` if it is still owned by `tid` (the recorder reclaims
    /// slots of threads that died without releasing them).
    pub fn reclaim_slot(&self, slot: usize, tid: u32) -> bool {
        let slot_header = self.slot_header(slot);
        if slot_header.owner_tid.0.load(Ordering::Acquire) != tid {
            return false;
        }
        // A thread that died while stamping would hold the merge back: the
        // slot is still `tid`'s, and `tid` is gone, so nobody else stores it.
        slot_header.write.0.stamping.store(0, Ordering::Release);
        slot_header
            .owner_tid
            .0
            .compare_exchange(tid, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// Appends `record` (and `payload` in continuation records) to `slot`'s
    /// ring, with its position in the ring as `seq` and stamped with the
    /// time ([`FLAG_TSC_TIME`]), unless the record carries
    /// [`RECORD_FLAG_TSC`], whose `time_ns` (the caller's TSC reading) is
    /// kept as it is.
    ///
    /// Only the slot's owner may call this. It never allocates or locks;
    /// when the ring is full it waits for the recorder (sleeping in short
    /// steps), or in drop mode counts the event as lost. Once nobody drains
    /// the rings (the recorder stopped, or is gone) it writes nothing and
    /// returns [`PushResult::Stopped`].
    pub fn push(&self, slot: usize, mut record: Record, payload: &[u8]) -> PushResult {
        let ext = payload.len().div_ceil(ENTRY_SIZE);
        if payload.len() > MAX_PAYLOAD || ext + RECORD_ENTRIES as usize > self.ring_entries {
            if let Some(reason) = self.check_stopped() {
                return PushResult::Stopped(reason);
            }
            return PushResult::TooLarge;
        }
        let needed = RECORD_ENTRIES + ext as u64;
        let write_pos = match self.wait_for_room(slot, needed) {
            Ok(write_pos) => write_pos,
            Err(result) => {
                if result == PushResult::Dropped {
                    self.header().lost.0.fetch_add(1, Ordering::Relaxed);
                }
                return result;
            }
        };
        record.ext = ext as u8;
        record.seq = write_pos;
        let line = &self.slot_header(slot).write.0;
        line.stamping.store(1, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        self.stamp(&mut record);
        // SAFETY: slot_header() above checked the slot; positions
        // write_pos..write_pos+needed are free (checked against read_pos
        // above) and only this thread writes them.
        unsafe {
            self.write_record(slot, write_pos, &record);
            self.write_payload(slot, write_pos + RECORD_ENTRIES, payload);
        }
        // SYNC POINT: pairs with the Acquire load of write_pos in pop(); the
        // records written above become visible to the recorder.
        self.slot_header(slot)
            .write
            .0
            .pos
            .store(write_pos + needed, Ordering::Release);
        line.stamping.store(0, Ordering::Release);
        PushResult::Pushed
    }

    /// Appends a [`compact`] record, as a patched site's fast path does in
    /// machine code: word 0 `head`, word 2 `key`, word 3 `value`'s low 8
    /// bytes, the time (the TSC) read with the ring's stamping flag set,
    /// and a value wider than 8 bytes whole in the entries after it. For
    /// tests and measurements of what consumes such records; the caller
    /// must have logged a [`Record`] into the ring first (its ids are the
    /// compact record's), and the file must stamp with the TSC
    /// ([`FLAG_TSC_TIME`]): otherwise nothing is written
    /// ([`PushResult::TooLarge`]). Waits for room as [`Shm::push`].
    pub fn push_compact(&self, slot: usize, head: u64, key: u64, value: &[u8]) -> PushResult {
        let ext = if value.len() > 8 {
            value.len().div_ceil(ENTRY_SIZE) as u64
        } else {
            0
        };
        if !self.tsc_time() || value.len() > 64 || head as u8 & compact::TAG == 0 {
            return PushResult::TooLarge;
        }
        let write_pos = match self.wait_for_room(slot, 1 + ext) {
            Ok(write_pos) => write_pos,
            Err(result) => {
                if result == PushResult::Dropped {
                    self.header().lost.0.fetch_add(1, Ordering::Relaxed);
                }
                return result;
            }
        };
        let mut low = [0u8; 8];
        low[..value.len().min(8)].copy_from_slice(&value[..value.len().min(8)]);
        let line = &self.slot_header(slot).write.0;
        // SAFETY: slot_header() checked the slot; the entries from
        // write_pos are free (wait_for_room) and only this thread writes
        // them until write_pos is stored.
        unsafe {
            let entry = self.entry_ptr(slot, write_pos) as *mut u64;
            entry.write(head);
            entry.add(2).write(key);
            entry.add(3).write(u64::from_le_bytes(low));
            if ext > 0 {
                self.write_payload(slot, write_pos + 1, value);
            }
            line.stamping.store(1, Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            entry.add(1).write(read_tsc());
        }
        // SYNC POINT: pairs with the Acquire load of write_pos in consume().
        line.pos.store(write_pos + 1 + ext, Ordering::Release);
        line.stamping.store(0, Ordering::Release);
        PushResult::Pushed
    }

    /// Logs a run of up to `max` records (at most half a ring's entries) that the
    /// caller makes one by one, each right after the access it describes:
    /// `each(i, record)` fills record `i` (kind, width, map id, offset,
    /// value, pc, tid, pid) and returns false to end the run before it.
    /// `each` is called for every record however the push goes (so the
    /// accesses it makes happen exactly once); when the records cannot be
    /// logged (the rings are no longer drained, or a full ring in drop
    /// mode) it fills a scratch record, which is discarded.
    ///
    /// Room for `max` records is waited for first, as [`Shm::push`] waits
    /// for one. The run is published at the end with one store, and its
    /// records share one time, taken then. Used for the elements of one
    /// string instruction (a `rep movsb` logs a record per byte).
    /// Returns how many records `each` filled, and how the push went.
    pub fn push_run(
        &self,
        slot: usize,
        max: usize,
        mut each: impl FnMut(usize, &mut Record) -> bool,
    ) -> (usize, PushResult) {
        let max = max.min(self.ring_entries / 2 / RECORD_ENTRIES as usize);
        let write_pos = match self.wait_for_room(slot, max as u64 * RECORD_ENTRIES) {
            Ok(write_pos) => write_pos,
            Err(result) => {
                let mut scratch = Record::default();
                let mut made = 0;
                while made < max && each(made, &mut scratch) {
                    made += 1;
                }
                if result == PushResult::Dropped {
                    // Every record of the run is lost.
                    self.header()
                        .lost
                        .0
                        .fetch_add(made as u64, Ordering::Relaxed);
                }
                return (made, result);
            }
        };
        let mut made = 0;
        let mut record = Record::default();
        while made < max {
            record = Record::default();
            if !each(made, &mut record) {
                break;
            }
            // SAFETY: slot_header() (in wait_for_room) checked the slot;
            // the entries of max records from write_pos are free and only
            // this thread writes them until write_pos is stored below.
            unsafe { self.write_record(slot, write_pos + made as u64 * RECORD_ENTRIES, &record) };
            made += 1;
        }
        if made == 0 {
            return (0, PushResult::Pushed);
        }
        let line = &self.slot_header(slot).write.0;
        line.stamping.store(1, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        record.flags = 0;
        self.stamp(&mut record);
        for i in 0..made as u64 {
            let pos = write_pos + i * RECORD_ENTRIES;
            // SAFETY: as above: written by this thread, not yet published.
            // These fields lie in a record's first entry.
            unsafe {
                let entry = self.entry_ptr(slot, pos);
                let at = |offset: usize| entry.add(offset);
                *at(core::mem::offset_of!(Record, ext)) = 0;
                let flags = at(core::mem::offset_of!(Record, flags));
                *flags = (*flags & !RECORD_FLAG_TSC) | record.flags;
                *(at(core::mem::offset_of!(Record, seq)) as *mut u64) = pos;
                *(at(core::mem::offset_of!(Record, time_ns)) as *mut u64) = record.time_ns;
            }
        }
        // SYNC POINT: pairs with the Acquire load of write_pos in consume();
        // the records written above become visible to the recorder.
        self.slot_header(slot)
            .write
            .0
            .pos
            .store(write_pos + made as u64 * RECORD_ENTRIES, Ordering::Release);
        line.stamping.store(0, Ordering::Release);
        (made, PushResult::Pushed)
    }

    /// `slot`'s `write_pos` once the ring has room for `needed` records:
    /// waits for the recorder (sleeping in short steps) while it is full;
    /// [`PushResult::Dropped`] instead in drop mode (the caller counts what
    /// is lost), [`PushResult::Stopped`] once nobody drains the rings. Only the
    /// slot's owner calls this.
    fn wait_for_room(&self, slot: usize, needed: u64) -> Result<u64, PushResult> {
        if let Some(reason) = self.check_stopped() {
            return Err(PushResult::Stopped(reason));
        }
        let slot_header = self.slot_header(slot);
        // Only this thread stores write_pos.
        let write_pos = slot_header.write.0.pos.load(Ordering::Relaxed);
        let mut waited = false;
        loop {
            // SYNC POINT: pairs with the Release store of read_pos in
            // consume(): the recorder has finished reading the records it
            // released.
            let read_pos = slot_header.read.0.pos.load(Ordering::Acquire);
            if write_pos + needed - read_pos <= self.ring_entries as u64 {
                return Ok(write_pos);
            }
            // Nobody will ever drain a closed file, nor one whose recorder
            // is gone: waiting would hang the process for good.
            if let Some(reason) = self.check_stopped() {
                return Err(PushResult::Stopped(reason));
            }
            if self.header().flags & FLAG_DROP != 0 {
                return Err(PushResult::Dropped);
            }
            if !waited {
                waited = true;
                self.header().full_waits.0.fetch_add(1, Ordering::Relaxed);
            }
            wait_briefly();
        }
    }

    /// The next record of `slot`'s ring, if one has been published, without
    /// consuming it.
    pub fn peek(&self, slot: usize) -> Option<Record> {
        let slot_header = self.slot_header(slot);
        let read_pos = slot_header.read.0.pos.load(Ordering::Relaxed);
        // SYNC POINT: pairs with the Release store of write_pos in push().
        let write_pos = slot_header.write.0.pos.load(Ordering::Acquire);
        if read_pos == write_pos {
            return None;
        }
        let ids = slot_header.read.0.ids.load(Ordering::Relaxed);
        // SAFETY: slot_header() above checked the slot; read_pos <
        // write_pos, so the record was published.
        Some(unsafe { self.read_record(slot, read_pos, ids) }.0)
    }

    /// Consumes the next record of `slot`'s ring, with its payload. Only the
    /// recorder calls this.
    pub fn pop(&self, slot: usize) -> Option<Popped> {
        let mut popped = None;
        let mut payload = Vec::new();
        self.consume(slot, 1, &mut payload, |record, payload| {
            popped = Some(Popped {
                record: *record,
                payload: payload.to_vec(),
            });
            true
        });
        popped
    }

    /// Hands the published records of `slot`'s ring to `each`, in order,
    /// each with its payload (copied into `payload`, which is reused), and
    /// consumes those `each` accepts: it stops at the first record for
    /// which `each` returns false (which stays in the ring), after `max`
    /// records (a record and its continuations count as one), or when none
    /// is left. Returns how many it consumed. Only the recorder calls this.
    ///
    /// It reads the producer's position once and gives the entries back
    /// with one store at the end, so the producer's cache line of
    /// `read_pos` changes once per call, not once per record.
    pub fn consume(
        &self,
        slot: usize,
        max: usize,
        payload: &mut Vec<u8>,
        mut each: impl FnMut(&Record, &[u8]) -> bool,
    ) -> usize {
        let slot_header = self.slot_header(slot);
        let start = slot_header.read.0.pos.load(Ordering::Relaxed);
        let mut ids = slot_header.read.0.ids.load(Ordering::Relaxed);
        // SYNC POINT: pairs with the Release store of write_pos in push():
        // every entry before it is published.
        let write_pos = slot_header.write.0.pos.load(Ordering::Acquire);
        let mut read_pos = start;
        let mut taken = 0;
        while taken < max && read_pos < write_pos {
            // SAFETY: slot_header() above checked the slot; read_pos <
            // write_pos, so the record's first entry was published, and
            // the producer writes it again only after the Release store of
            // read_pos below.
            let (record, entries) = unsafe { self.read_record(slot, read_pos, ids) };
            if read_pos + entries > write_pos {
                // Cannot happen (a record and its continuations are
                // published together); leave it for a later call rather
                // than read past what was published.
                break;
            }
            payload.clear();
            let ext = u64::from(record.ext);
            if ext > 0 {
                // SAFETY: as above; the continuations were published with
                // the record (checked against write_pos above).
                unsafe { self.read_payload(slot, read_pos + entries - ext, ext, payload) };
            }
            if !each(&record, payload) {
                break;
            }
            if entries - ext == RECORD_ENTRIES {
                ids = u64::from(record.tid) | u64::from(record.pid) << 32;
            }
            read_pos += entries;
            taken += 1;
        }
        if read_pos != start {
            slot_header.read.0.ids.store(ids, Ordering::Relaxed);
            // SYNC POINT: pairs with the Acquire load of read_pos in push():
            // the copies above are done before the producer may overwrite
            // these entries.
            slot_header.read.0.pos.store(read_pos, Ordering::Release);
        }
        taken
    }

    /// Hands every published entry of `slot`'s ring to `out` as it is, in
    /// at most two slices (the ring may wrap), and frees them once `out`
    /// has taken them all: the recorder's way to empty a ring fast when it
    /// is behind, decoding later ([`decode_entries`]). Published entries
    /// are whole records (a record and its continuations are published
    /// together), read without looking at them: the lines the producer is
    /// writing next to them move between the cores only once. Nothing is
    /// taken when there are more than `max_entries`, or when `out` fails
    /// (its error is returned). Returns the ring position of the first
    /// entry and the number of entries. The ids the ring's [`compact`]
    /// records take are not updated (see [`Shm::consumer_ids`]). Only the
    /// recorder calls this.
    pub fn take_entries<E>(
        &self,
        slot: usize,
        max_entries: u64,
        mut out: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(u64, u64), E> {
        let slot_header = self.slot_header(slot);
        let start = slot_header.read.0.pos.load(Ordering::Relaxed);
        // SYNC POINT: pairs with the Release store of write_pos in push():
        // every entry before it is published.
        let end = slot_header.write.0.pos.load(Ordering::Acquire);
        if end - start > max_entries {
            return Ok((start, 0));
        }
        let mut pos = start;
        while pos < end {
            let index = (pos as usize) & (self.ring_entries - 1);
            let n = ((end - pos) as usize).min(self.ring_entries - index);
            // SAFETY: slot_header() checked the slot; entries pos..pos+n
            // are published (below write_pos) and contiguous in the ring
            // (they stop at its end); the producer writes them again only
            // after read_pos passes them.
            let bytes =
                unsafe { std::slice::from_raw_parts(self.entry_ptr(slot, pos), n * ENTRY_SIZE) };
            out(bytes)?;
            pos += n as u64;
        }
        if end != start {
            // SYNC POINT: pairs with the Acquire load of read_pos in push():
            // the copies above are done before the producer may overwrite
            // these entries.
            slot_header.read.0.pos.store(end, Ordering::Release);
        }
        Ok((start, end - start))
    }

    /// The thread (low half) and process (high half) that `slot`'s next
    /// [`compact`] record takes: those of the last [`Record`] consumed.
    pub fn consumer_ids(&self, slot: usize) -> u64 {
        self.slot_header(slot).read.0.ids.load(Ordering::Relaxed)
    }

    /// Sets [`Shm::consumer_ids`], after records moved with
    /// [`Shm::take_entries`] were decoded elsewhere. Only the recorder
    /// calls this.
    pub fn set_consumer_ids(&self, slot: usize, ids: u64) {
        self.slot_header(slot)
            .read
            .0
            .ids
            .store(ids, Ordering::Relaxed);
    }

    /// Consumes up to `max` published records of `slot`'s ring, appending
    /// them to `out` (see [`Shm::consume`]), and returns how many it took.
    pub fn pop_batch(&self, slot: usize, max: usize, out: &mut Vec<Popped>) -> usize {
        let mut payload = Vec::new();
        self.consume(slot, max, &mut payload, |record, payload| {
            out.push(Popped {
                record: *record,
                payload: payload.to_vec(),
            });
            true
        })
    }

    /// Entries published but not yet consumed in `slot`.
    pub fn pending(&self, slot: usize) -> u64 {
        let slot_header = self.slot_header(slot);
        slot_header.write.0.pos.load(Ordering::Acquire)
            - slot_header.read.0.pos.load(Ordering::Relaxed)
    }
}

/// The entries of the record whose first entry holds `words`, and its time.
#[inline]
fn record_extent(words: [u64; 4]) -> (u64, u64) {
    let first = words[0].to_le_bytes();
    if first[0] & compact::TAG != 0 {
        (
            1 + u64::from((first[0] >> compact::EXT_SHIFT) & 3),
            words[1],
        )
    } else {
        // A Record: `ext` is its third byte, `time_ns` its third word.
        (RECORD_ENTRIES + u64::from(first[2]), words[2])
    }
}

/// The time of the record whose first entry starts `bytes` (entries that
/// [`Shm::take_entries`] moved), if `bytes` holds that entry: what the
/// recorder's merge looks at before it decodes the record.
#[inline]
pub fn entry_time(bytes: &[u8]) -> Option<u64> {
    let head = bytes.get(..ENTRY_SIZE)?;
    Some(record_extent(entry_words(head)).1)
}

/// The bytes of the record whose first entry starts `bytes` (entries that
/// [`Shm::take_entries`] moved), if `bytes` holds that entry; `bytes` may
/// end before the record does.
#[inline]
pub fn record_len(bytes: &[u8]) -> Option<usize> {
    let head = bytes.get(..ENTRY_SIZE)?;
    Some(record_extent(entry_words(head)).0 as usize * ENTRY_SIZE)
}

/// The four words of a ring entry.
#[inline]
fn entry_words(entry: &[u8]) -> [u64; 4] {
    let word = |i: usize| {
        let mut le = [0u8; 8];
        if let Some(bytes) = entry.get(8 * i..8 * i + 8) {
            le.copy_from_slice(bytes);
        }
        u64::from_le_bytes(le)
    };
    [word(0), word(1), word(2), word(3)]
}

/// Decodes the record that starts `bytes` (entries that
/// [`Shm::take_entries`] moved), at ring position `pos`: a [`compact`]
/// one takes the ids in `ids`, which a [`Record`] sets. Returns the record,
/// its payload (the entries after the record's own) and the bytes it
/// takes; `None`, with `ids` untouched, when `bytes` ends before the
/// record does.
#[inline]
pub fn decode_entry<'a>(
    bytes: &'a [u8],
    pos: u64,
    ids: &mut u64,
) -> Option<(Record, &'a [u8], usize)> {
    let words = entry_words(bytes.get(..ENTRY_SIZE)?);
    let (entries, _) = record_extent(words);
    let whole = bytes.get(..entries as usize * ENTRY_SIZE)?;
    if words[0] as u8 & compact::TAG != 0 {
        let record = compact::expand(words, pos, *ids as u32, (*ids >> 32) as u32);
        return Some((record, &whole[ENTRY_SIZE..], whole.len()));
    }
    let mut record = Record::default();
    // SAFETY: a Record is RECORD_SIZE bytes of plain data, any bytes a
    // valid one; `whole` holds at least that many (RECORD_ENTRIES entries).
    unsafe {
        std::ptr::copy_nonoverlapping(
            whole.as_ptr(),
            (&mut record as *mut Record).cast::<u8>(),
            RECORD_SIZE,
        );
    }
    *ids = u64::from(record.tid) | u64::from(record.pid) << 32;
    Some((record, &whole[RECORD_SIZE..], whole.len()))
}

/// Decodes records from entries that [`Shm::take_entries`] moved, the
/// first at ring position `pos` (see [`decode_entry`]): at most `max`
/// records, appended to `out`. Returns the bytes decoded (whole records;
/// what is left is a record cut short, which cannot happen with what
/// `take_entries` moves).
pub fn decode_entries(
    bytes: &[u8],
    mut pos: u64,
    ids: &mut u64,
    max: usize,
    out: &mut Vec<Popped>,
) -> usize {
    let mut at = 0;
    let mut decoded = 0;
    while decoded < max {
        let Some((record, payload, len)) = bytes
            .get(at..)
            .and_then(|rest| decode_entry(rest, pos, ids))
        else {
            break;
        };
        out.push(Popped {
            record,
            payload: payload.to_vec(),
        });
        at += len;
        pos += (len / ENTRY_SIZE) as u64;
        decoded += 1;
    }
    at
}

/// Sleeps 20 µs with a raw `nanosleep` (async-signal-safe).
fn wait_briefly() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 20_000,
    };
    // SAFETY: `ts` is valid; a null remainder pointer is allowed.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// Text payloads (paths, markers) are NUL-padded to whole records; this
/// returns the bytes up to the first NUL.
pub fn payload_text(payload: &[u8]) -> &[u8] {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    &payload[..end]
}

#[cfg(test)]
mod tests;
