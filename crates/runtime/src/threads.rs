//! Per-thread state without `thread_local!`.
//!
//! # Safety
//!
//! `thread_local!` in a cdylib uses the general-dynamic TLS model, whose
//! first touch in a thread may call malloc, which a signal handler must
//! not (docs/ARCHITECTURE.md, "The rules the runtime keeps"), and the SIGSEGV
//! handler needs the thread's ring slot. Instead, each thread's slot index
//! is kept in a pthread key whose index is below 32: those live in the
//! thread descriptor's static block, so `pthread_setspecific` cannot
//! allocate and `pthread_getspecific` is a plain load. The key's destructor
//! gives the slot back at thread exit. If the key index is 32 or more, the
//! runtime falls back to finding the slot whose owner is `gettid()`.
//! This module calls the pthread functions and registers C callbacks, which
//! is why it needs `unsafe`.

use core::ffi::c_void;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use mmiotrace_shm::Shm;

use crate::state::{self, MAX_SLOTS};
use crate::{msg, ranges, sys, tls};

const KEY_NONE: u8 = 0;
const KEY_DIRECT: u8 = 1;
const KEY_FALLBACK: u8 = 2;

static KEY_MODE: AtomicU8 = AtomicU8::new(KEY_NONE);
static KEY: AtomicU32 = AtomicU32::new(0);
static PID: AtomicU32 = AtomicU32::new(0);
/// The key of each thread's [`MaskView`], if one below 32 could be made.
static VIEW_KEY: AtomicU32 = AtomicU32::new(NO_VIEW_KEY);
const NO_VIEW_KEY: u32 = u32::MAX;

/// Slot and identity of the calling thread.
#[derive(Debug, Clone, Copy)]
pub struct Me {
    pub slot: usize,
    pub tid: u32,
    pub pid: u32,
}

/// What the program believes about SIGSEGV and SIGTRAP in the calling
/// thread's signal mask. The runtime never lets either be blocked (a traced
/// access would kill the thread), so it keeps the program's view here, per
/// thread, in a pthread key below 32 (a plain load and store, no allocation,
/// copied by `fork` with the thread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaskView {
    /// Kernel-set bits (`1 << (sig - 1)`) of SIGSEGV/SIGTRAP the program has blocked.
    pub blocked: u64,
    /// Those of them sent (by `kill`, not by a fault) while "blocked": raised
    /// again when the program unblocks them.
    pub pending: u64,
}

/// The two signals the view covers, as kernel-set bits.
pub const VIEW_SIGNALS: u64 = (1 << (libc::SIGSEGV - 1)) | (1 << (libc::SIGTRAP - 1));

impl MaskView {
    fn pack(self) -> usize {
        // Both sets only use the SIGSEGV and SIGTRAP bits (10 and 4).
        ((self.blocked & VIEW_SIGNALS) | ((self.pending & VIEW_SIGNALS) << 32)) as usize
    }

    fn unpack(value: usize) -> MaskView {
        let value = value as u64;
        MaskView {
            blocked: value & VIEW_SIGNALS,
            pending: (value >> 32) & VIEW_SIGNALS,
        }
    }
}

/// Creates the mask-view key. Called when the runtime is loaded, before the
/// program can call `sigprocmask`.
pub fn init_mask_view() {
    if VIEW_KEY.load(Ordering::Acquire) != NO_VIEW_KEY {
        return;
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; no destructor.
    if unsafe { libc::pthread_key_create(&mut key, None) } == 0 && key < 32 {
        VIEW_KEY.store(key, Ordering::Release);
    }
}

/// The calling thread's view of its mask (all clear if there is no key).
pub fn mask_view() -> MaskView {
    let key = VIEW_KEY.load(Ordering::Acquire);
    if key == NO_VIEW_KEY {
        return MaskView::default();
    }
    // SAFETY: key index < 32: a load from the thread descriptor.
    MaskView::unpack(unsafe { libc::pthread_getspecific(key) } as usize)
}

/// Replaces the calling thread's view. Async-signal-safe.
pub fn set_mask_view(view: MaskView) {
    let key = VIEW_KEY.load(Ordering::Acquire);
    if key != NO_VIEW_KEY {
        // SAFETY: key index < 32: a store into the thread descriptor's
        // static block, which cannot allocate.
        unsafe { libc::pthread_setspecific(key, view.pack() as *const c_void) };
    }
}

/// Creates the slot key. Called once, from initialisation, before any slot
/// is claimed (`init` then registers [`after_fork_in_child`] and
/// [`release_at_exit`]).
pub fn init() {
    PID.store(sys::getpid(), Ordering::Relaxed);
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor has the signature
    // pthread expects and stays valid for the life of the process (the
    // runtime is never unloaded: it is preloaded).
    let created = unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } == 0;
    if created && key < 32 {
        KEY.store(key, Ordering::Relaxed);
        KEY_MODE.store(KEY_DIRECT, Ordering::Release);
    } else {
        KEY_MODE.store(KEY_FALLBACK, Ordering::Release);
    }
}

/// Gives back slots owned by the calling thread's id. Called when a new
/// image starts: a slot owned by our own thread id belongs to the image that
/// `exec` replaced (same thread id, same process), which released nothing.
/// Its records stay in the ring for the recorder.
pub fn forget_replaced_image(shm: &Shm) {
    let tid = sys::gettid();
    for slot in 0..shm.slots_used().min(MAX_SLOTS) {
        if shm.slot_owner(slot) == tid {
            shm.reclaim_slot(slot, tid);
        }
    }
}

/// `exit()` runs no pthread key destructor for the calling thread: give its
/// slot back here, so that processes that come and go (fork, exec) do not
/// use up the slots. A push made later in the exit path claims one again.
pub extern "C" fn release_at_exit() {
    let Some(shm) = state::shm() else {
        return;
    };
    let _blocked = sys::SignalsBlocked::new();
    // A process that logged nothing since its recorder was killed still
    // says so, and removes the file the recorder left.
    if let Some(reason) = shm.check_stopped() {
        state::tracing_stopped(&shm, reason);
    }
    if let Some(slot) = my_slot(&shm) {
        if KEY_MODE.load(Ordering::Acquire) == KEY_DIRECT {
            // SAFETY: key index < 32: no allocation.
            unsafe { libc::pthread_setspecific(KEY.load(Ordering::Relaxed), sys::NULL) };
        }
        tls::clear();
        forget_pending(slot);
        shm.release_slot(slot);
    }
}

/// The thread part of the fork child handler: the child's own pid, and no
/// slot until its first push.
pub fn after_fork_in_child() {
    PID.store(sys::getpid(), Ordering::Relaxed);
    if KEY_MODE.load(Ordering::Acquire) == KEY_DIRECT {
        // The inherited value names the parent thread's slot; this thread
        // claims its own at its first push.
        // SAFETY: key was created in init(); index < 32, so no allocation.
        unsafe { libc::pthread_setspecific(KEY.load(Ordering::Relaxed), sys::NULL) };
    }
}

extern "C" fn on_thread_exit(value: *mut c_void) {
    let slot = (value as usize).wrapping_sub(1);
    if let Some(shm) = state::shm() {
        if slot < shm.slot_count() {
            tls::clear();
            forget_pending(slot);
            shm.release_slot(slot);
        }
    }
}

/// The calling thread's slot and ids, claiming a slot at its first use.
/// Waits (sleeping) while every slot is taken. Async-signal-safe.
pub fn me(shm: &Shm) -> Me {
    let pid = PID.load(Ordering::Relaxed);
    let usable = shm.slot_count().min(MAX_SLOTS);
    match KEY_MODE.load(Ordering::Acquire) {
        KEY_DIRECT => {
            let key = KEY.load(Ordering::Relaxed);
            // SAFETY: key index < 32: a load from the thread descriptor.
            let value = unsafe { libc::pthread_getspecific(key) } as usize;
            let slot = value.wrapping_sub(1);
            if value != 0 && slot < usable {
                return Me {
                    slot,
                    tid: shm.slot_owner(slot),
                    pid,
                };
            }
            let tid = sys::gettid();
            let slot = claim(shm, tid, usable);
            // SAFETY: key index < 32, so pthread_setspecific stores into
            // the static block without allocating.
            unsafe { libc::pthread_setspecific(key, (slot + 1) as *const c_void) };
            Me { slot, tid, pid }
        }
        _ => {
            let tid = sys::gettid();
            let used = shm.slots_used().min(usable);
            if let Some(slot) = (0..used).find(|&slot| shm.slot_owner(slot) == tid) {
                return Me { slot, tid, pid };
            }
            Me {
                slot: claim(shm, tid, usable),
                tid,
                pid,
            }
        }
    }
}

/// The calling thread's slot and ids if it has claimed a slot already
/// (a patched site's trampoline never claims one: it runs with signals
/// deliverable, and a claim is not re-entrant).
pub fn me_if_claimed(shm: &Shm) -> Option<Me> {
    let slot = my_slot(shm)?;
    Some(Me {
        slot,
        tid: shm.slot_owner(slot),
        pid: PID.load(Ordering::Relaxed),
    })
}

/// A slot for one push that interrupted a push of the calling thread
/// (`log::push`); the caller gives it back with `Shm::release_slot`.
/// Waits (sleeping) while every slot is taken.
pub fn borrow_slot(shm: &Shm, tid: u32) -> usize {
    claim(shm, tid, shm.slot_count().min(MAX_SLOTS))
}

/// The slot of the calling thread if it has one (the SIGTRAP handler must
/// not claim one).
pub fn my_slot(shm: &Shm) -> Option<usize> {
    let usable = shm.slot_count().min(MAX_SLOTS);
    if KEY_MODE.load(Ordering::Acquire) == KEY_DIRECT {
        // SAFETY: as in me().
        let value = unsafe { libc::pthread_getspecific(KEY.load(Ordering::Relaxed)) } as usize;
        let slot = value.wrapping_sub(1);
        return (value != 0 && slot < usable).then_some(slot);
    }
    let tid = sys::gettid();
    (0..shm.slots_used().min(usable)).find(|&slot| shm.slot_owner(slot) == tid)
}

fn claim(shm: &Shm, tid: u32, usable: usize) -> usize {
    let mut warned = false;
    let mut reclaimed = false;
    loop {
        if let Some(slot) = shm.claim_slot(tid) {
            if slot < usable {
                forget_pending(slot);
                tls::forget_owner(slot);
                return slot;
            }
            // Beyond what this runtime can index: hand it back and wait.
            shm.release_slot(slot);
        }
        // Slots of threads that died without releasing them (killed, or
        // exited in fallback mode) can be reused.
        for slot in 0..usable {
            let owner = shm.slot_owner(slot);
            if owner != 0 && !sys::thread_exists(owner) && shm.reclaim_slot(slot, owner) {
                reclaimed = true;
            }
        }
        if reclaimed {
            reclaimed = false;
            continue;
        }
        if !warned {
            warned = true;
            // Once per recording, however many threads wait: the recorder's
            // summary counts them.
            if shm.note_slot_wait() {
                msg::Msg::new()
                    .text("every ring slot is taken; thread ")
                    .dec(u64::from(tid))
                    .text(" waits for one to free (and so may others; raise --rings)")
                    .emit();
            }
        }
        sys::sleep_micros(1000);
    }
}

/// State of one instruction of a thread on the slow path (single-stepped
/// on the alias; see `slow_path`).
#[derive(Debug)]
struct Pending {
    active: AtomicU32,
    /// Rebased registers: encoding index + 1 (0 = none) and the amount added.
    gpr: [AtomicU32; 2],
    added: [AtomicU64; 2],
    /// Range holds (table index + 1, 0 = none).
    hold: [AtomicU32; 2],
    /// The program's own TF before the runtime set it.
    program_tf: AtomicU32,
    /// The interrupted context's signal mask, restored after the step (the
    /// step itself runs with asynchronous signals blocked).
    program_mask: AtomicU64,
}

impl Pending {
    const fn new() -> Pending {
        Pending {
            active: AtomicU32::new(0),
            gpr: [AtomicU32::new(0), AtomicU32::new(0)],
            added: [AtomicU64::new(0), AtomicU64::new(0)],
            hold: [AtomicU32::new(0), AtomicU32::new(0)],
            program_tf: AtomicU32::new(0),
            program_mask: AtomicU64::new(0),
        }
    }
}

// Only the slot's owner thread touches its entry, so Relaxed suffices.
static PENDING: [Pending; MAX_SLOTS] = [const { Pending::new() }; MAX_SLOTS];

/// One rebased register of an instruction on the slow path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebased {
    pub gpr: usize,
    pub added: u64,
    pub hold: usize,
}

/// Whether the thread owning `slot` has an instruction on the slow path in flight.
pub fn pending_active(slot: usize) -> bool {
    PENDING
        .get(slot)
        .is_some_and(|p| p.active.load(Ordering::Relaxed) != 0)
}

/// Records an instruction on the slow path for the SIGTRAP handler.
pub fn set_pending(slot: usize, rebased: &[Option<Rebased>; 2], program_tf: bool) {
    let Some(pending) = PENDING.get(slot) else {
        return;
    };
    for (i, item) in rebased.iter().enumerate() {
        let (gpr, added, hold) = match item {
            Some(r) => (r.gpr as u32 + 1, r.added, r.hold as u32 + 1),
            None => (0, 0, 0),
        };
        if let (Some(g), Some(a), Some(h)) = (
            pending.gpr.get(i),
            pending.added.get(i),
            pending.hold.get(i),
        ) {
            g.store(gpr, Ordering::Relaxed);
            a.store(added, Ordering::Relaxed);
            h.store(hold, Ordering::Relaxed);
        }
    }
    pending
        .program_tf
        .store(u32::from(program_tf), Ordering::Relaxed);
    pending.active.store(1, Ordering::Relaxed);
}

/// Blocks asynchronous signals in `mask` (an interrupted context's kernel
/// signal mask) for the single step of a slow-path instruction, keeping the
/// program's mask to give back in [`restore_step_mask`]. A signal handler
/// that ran between the fault and the step would see the rebased registers,
/// and one that made a slow-path access itself would find the slot busy.
pub fn block_signals_for_step(slot: usize, mask: &mut u64) {
    if let Some(pending) = PENDING.get(slot) {
        pending.program_mask.store(*mask, Ordering::Relaxed);
        *mask |= sys::async_signals();
    }
}

/// The mask [`block_signals_for_step`] kept, into `mask`.
pub fn restore_step_mask(slot: usize, mask: &mut u64) {
    if let Some(pending) = PENDING.get(slot) {
        *mask = pending.program_mask.load(Ordering::Relaxed);
    }
}

/// Takes the slow-path instruction of `slot`: the rebased registers and
/// whether the program had TF set itself. The caller releases the holds.
pub fn take_pending(slot: usize) -> Option<([Option<Rebased>; 2], bool)> {
    let pending = PENDING.get(slot)?;
    if pending.active.swap(0, Ordering::Relaxed) == 0 {
        return None;
    }
    let mut out = [None, None];
    for (i, item) in out.iter_mut().enumerate() {
        let gpr = pending.gpr.get(i).map_or(0, |g| g.load(Ordering::Relaxed));
        if gpr != 0 {
            *item = Some(Rebased {
                gpr: gpr as usize - 1,
                added: pending
                    .added
                    .get(i)
                    .map_or(0, |a| a.load(Ordering::Relaxed)),
                hold: pending
                    .hold
                    .get(i)
                    .map_or(0, |h| h.load(Ordering::Relaxed))
                    .wrapping_sub(1) as usize,
            });
        }
    }
    Some((out, pending.program_tf.load(Ordering::Relaxed) != 0))
}

/// Drops a slow-path instruction that will never trap (thread exit, a new
/// owner of the slot), releasing its holds.
fn forget_pending(slot: usize) {
    if let Some((rebased, _)) = take_pending(slot) {
        for r in rebased.iter().flatten() {
            ranges::release_index(r.hold);
        }
    }
}
