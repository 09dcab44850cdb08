//! What the patched sites' fast path reads per thread and per ring slot,
//! at addresses machine code can reach without calling anything.
//!
//! # Safety
//!
//! A patched site's fast path (docs/ARCHITECTURE.md, "Patched sites") is
//! generated machine code that runs in the program's thread with no
//! function call, so it finds its thread's state through the `fs`
//! segment: a block of initial-exec thread-local storage, [`ThreadBlock`],
//! at a fixed offset from the thread pointer, found once with a
//! `@gottpoff` relocation in assembly (Rust has no stable initial-exec
//! `#[thread_local]`). Initial-exec TLS of a preloaded library lives in
//! the static TLS block every thread gets when it is created, so reading
//! it never allocates, in a signal handler or not. The per-slot state,
//! [`SlotBlock`], is a static array the code addresses through a pointer
//! kept in the thread block. Both need raw pointers and assembly, hence
//! `unsafe`.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mmiotrace_shm::{RawLayout, Shm};

use crate::sys;

const SLOTS: usize = mmiotrace_shm::MAX_SLOTS as usize;

/// Per ring slot: what the fast path needs to push into the ring, and the
/// flag that says a push into it is under way.
#[repr(C, align(64))]
pub struct SlotBlock {
    /// A push into the slot's ring is under way (the fast path's, or
    /// `log::push`'s): a nested push, from a signal handler that
    /// interrupted it, borrows another slot. The fast path also holds it
    /// while it uses a traced range's alias, which [`wait_for_fast_paths`]
    /// relies on.
    pub pushing: AtomicBool,
    /// The slot's owner has logged a record into the ring since it
    /// claimed it ([`note_logged`]): the recorder knows its ids, which the
    /// fast path's compact records do not carry.
    logged: AtomicBool,
    /// The ring's [`RawLayout`].
    header: AtomicU64,
    slot_header: AtomicU64,
    records: AtomicU64,
    /// `ring_entries - 1`.
    mask: AtomicU64,
    ring_entries: AtomicU64,
    /// The ring's `read_pos` as the fast path last read it: it reads the
    /// shared one (a cache line the recorder writes) only when this one
    /// says the ring is full.
    read_pos_seen: AtomicU64,
}

impl SlotBlock {
    const fn new() -> SlotBlock {
        SlotBlock {
            pushing: AtomicBool::new(false),
            header: AtomicU64::new(0),
            slot_header: AtomicU64::new(0),
            records: AtomicU64::new(0),
            mask: AtomicU64::new(0),
            ring_entries: AtomicU64::new(0),
            logged: AtomicBool::new(false),
            read_pos_seen: AtomicU64::new(0),
        }
    }
}

/// Offsets in [`SlotBlock`], for the machine code.
pub mod slot_at {
    use super::SlotBlock;
    pub const PUSHING: i32 = core::mem::offset_of!(SlotBlock, pushing) as i32;
    pub const HEADER: i32 = core::mem::offset_of!(SlotBlock, header) as i32;
    pub const SLOT_HEADER: i32 = core::mem::offset_of!(SlotBlock, slot_header) as i32;
    pub const RECORDS: i32 = core::mem::offset_of!(SlotBlock, records) as i32;
    pub const MASK: i32 = core::mem::offset_of!(SlotBlock, mask) as i32;
    pub const RING_ENTRIES: i32 = core::mem::offset_of!(SlotBlock, ring_entries) as i32;
    pub const READ_POS_SEEN: i32 = core::mem::offset_of!(SlotBlock, read_pos_seen) as i32;
}

static SLOT_BLOCKS: [SlotBlock; SLOTS] = [const { SlotBlock::new() }; SLOTS];

/// Notes that `slot`'s owner logged a record into its ring (`log::push`).
pub fn note_logged(slot: usize) {
    if let Some(block) = SLOT_BLOCKS.get(slot) {
        block.logged.store(true, Ordering::Relaxed);
    }
}

/// A new owner claimed `slot`: it has logged nothing yet.
pub fn forget_owner(slot: usize) {
    if let Some(block) = SLOT_BLOCKS.get(slot) {
        block.logged.store(false, Ordering::Relaxed);
    }
}

/// Whether `slot`'s owner has logged a record since it claimed the slot:
/// only then may its fast path log compact records into the ring, whose
/// thread and process the recorder takes from the ring's last record.
pub fn logged(slot: usize) -> bool {
    SLOT_BLOCKS
        .get(slot)
        .is_some_and(|block| block.logged.load(Ordering::Relaxed))
}

/// The flag of `slot` that says a push into its ring is under way.
pub fn pushing(slot: usize) -> Option<&'static AtomicBool> {
    SLOT_BLOCKS.get(slot).map(|block| &block.pushing)
}

/// Per thread, in initial-exec TLS.
#[repr(C, align(64))]
pub struct ThreadBlock {
    /// The value a patched load's instruction reads: the fast path loads
    /// the device's value from the alias into it, and then runs the site's
    /// instruction with its memory operand rewritten to `fs:` here.
    pub value: [u64; 8],
    /// Non-zero from the fast path's start until that instruction has read
    /// [`ThreadBlock::value`]: a fast path in a signal handler that
    /// interrupted it takes the slow path instead.
    pub busy: u8,
    /// The thread's [`SlotBlock`], 0 until the slow path sets it up.
    pub slot_block: u64,
    /// A read-modify-write's store, kept between the fast path's two
    /// halves (around the site's instruction): the alias address, and its
    /// compact record's map id and offset (`mmiotrace_shm::compact::key`).
    pub rmw_alias: u64,
    pub rmw_key: u64,
}

/// Offsets in [`ThreadBlock`].
pub mod thread_at {
    use super::ThreadBlock;
    pub const VALUE: i32 = core::mem::offset_of!(ThreadBlock, value) as i32;
    pub const BUSY: i32 = core::mem::offset_of!(ThreadBlock, busy) as i32;
    pub const SLOT_BLOCK: i32 = core::mem::offset_of!(ThreadBlock, slot_block) as i32;
    pub const RMW_ALIAS: i32 = core::mem::offset_of!(ThreadBlock, rmw_alias) as i32;
    pub const RMW_KEY: i32 = core::mem::offset_of!(ThreadBlock, rmw_key) as i32;
}

const BLOCK_SIZE: usize = core::mem::size_of::<ThreadBlock>();
const _: () = assert!(BLOCK_SIZE == 128);

// The thread block in .tbss, and a function that returns its offset from
// the thread pointer (the value the linker resolves `@gottpoff` to).
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".balign 64",
    "mmiotrace_thread_block:",
    ".zero 128",
    ".popsection",
    ".pushsection .text.mmiotrace_thread_block_offset,\"ax\",@progbits",
    ".globl mmiotrace_thread_block_offset",
    ".hidden mmiotrace_thread_block_offset",
    ".type mmiotrace_thread_block_offset,@function",
    "mmiotrace_thread_block_offset:",
    "mov rax, qword ptr [rip + mmiotrace_thread_block@GOTTPOFF]",
    "ret",
    ".size mmiotrace_thread_block_offset, . - mmiotrace_thread_block_offset",
    ".popsection",
);

unsafe extern "C" {
    safe fn mmiotrace_thread_block_offset() -> i64;
}

/// The thread block's offset from the thread pointer, if it fits the
/// `fs:[disp32]` operands of the fast path.
pub fn offset() -> Option<i32> {
    i32::try_from(mmiotrace_thread_block_offset()).ok()
}

/// The calling thread's block.
fn mine() -> *mut ThreadBlock {
    let thread_pointer: u64;
    // SAFETY: on x86-64 Linux `fs:0` holds the thread pointer itself (the
    // TLS ABI); reading it touches no other memory.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) thread_pointer, options(nostack, readonly, preserves_flags));
    }
    thread_pointer.wrapping_add(mmiotrace_thread_block_offset() as u64) as *mut ThreadBlock
}

/// Whether the calling thread's fast path is set up.
pub fn set_up() -> bool {
    // SAFETY: the calling thread's own block, read with a volatile load
    // because machine code writes it.
    unsafe { core::ptr::read_volatile(&raw const (*mine()).slot_block) != 0 }
}

/// Sets up the calling thread's fast path: it logs to `slot` of `shm`,
/// which it owns and has logged a record into ([`logged`]).
pub fn set_up_for(shm: &Shm, slot: usize) {
    let Some(block) = SLOT_BLOCKS.get(slot) else {
        return;
    };
    let layout: RawLayout = shm.raw_layout(slot);
    // Relaxed: read only by the owner thread of the slot, this one.
    block.header.store(layout.header, Ordering::Relaxed);
    block
        .slot_header
        .store(layout.slot_header, Ordering::Relaxed);
    block.records.store(layout.records, Ordering::Relaxed);
    block.mask.store(layout.ring_entries - 1, Ordering::Relaxed);
    block
        .ring_entries
        .store(layout.ring_entries, Ordering::Relaxed);
    // Any value at or below the real read_pos will do: it only ever makes
    // the fast path read the real one.
    block.read_pos_seen.store(0, Ordering::Relaxed);
    // SAFETY: the calling thread's own block.
    unsafe { core::ptr::write_volatile(&raw mut (*mine()).slot_block, block as *const _ as u64) };
}

/// Turns the calling thread's fast path off (its slot is given back, or
/// it is a fork child's thread, whose process has another pid).
pub fn clear() {
    // SAFETY: the calling thread's own block.
    unsafe {
        core::ptr::write_volatile(&raw mut (*mine()).slot_block, 0);
        core::ptr::write_volatile(&raw mut (*mine()).busy, 0);
    }
}

/// The fork child handler: the pushes other threads of the parent had
/// under way are not the child's, and the calling thread logs to no slot
/// until its slow path sets it up again.
pub fn after_fork_in_child() {
    for block in SLOT_BLOCKS.iter() {
        block.pushing.store(false, Ordering::Relaxed);
    }
    clear();
}

/// Set once a fast path exists: from then on, retiring a range waits for
/// the fast paths ([`wait_for_fast_paths`]).
static FAST_PATHS: AtomicBool = AtomicBool::new(false);

/// Notes that a fast path has been written.
pub fn fast_paths_exist() {
    FAST_PATHS.store(true, Ordering::Release);
}

/// Waits until no fast path that may have seen a range before it was
/// retired still uses it. The caller has stored the range's retirement.
///
/// The fast path holds no count: it sets its slot's `pushing` flag with a
/// plain store and then reads the range. `membarrier` makes every thread
/// of the process run a full barrier, so afterwards each thread either
/// had its flag visible here, or reads the range after the barrier and
/// sees it retired (the asymmetric barrier of userspace RCU).
pub fn wait_for_fast_paths() {
    if !FAST_PATHS.load(Ordering::Acquire) {
        return;
    }
    sys::membarrier_sync_core();
    // A signal handler of this thread that interrupted its own fast path
    // (and then unmapped the range) must not wait for itself.
    // SAFETY: the calling thread's own block.
    let own = unsafe { core::ptr::read_volatile(&raw const (*mine()).slot_block) };
    for block in SLOT_BLOCKS.iter() {
        if block as *const SlotBlock as u64 == own {
            continue;
        }
        let mut spins = 0u32;
        // SYNC POINT: pairs with the fast path's plain store of 0 to the
        // flag after its last use of the alias (x86 keeps stores in order).
        while block.pushing.load(Ordering::Acquire) {
            spins = spins.saturating_add(1);
            if spins < 100 {
                sys::yield_now();
            } else {
                sys::sleep_micros(100);
            }
        }
    }
}
