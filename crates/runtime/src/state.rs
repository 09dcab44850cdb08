//! The runtime's process-wide state: whether tracing is on, the
//! shared-memory file, the muted and no-follow flags, and the lock that
//! serialises changes to the traced ranges.
//!
//! Every other module reads the state through these accessors; only `init`
//! (the configuration) and the fork handler change it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use mmiotrace_shm::{Shm, StopReason};

use crate::config;
use crate::msg::Msg;
use crate::sys::{self, SignalsBlocked};

/// Ring slots the runtime can use: as many as a file may have.
pub const MAX_SLOTS: usize = mmiotrace_shm::MAX_SLOTS as usize;

const UNINIT: u8 = 0;
const LOADING: u8 = 1;
const ENABLED: u8 = 2;
const DISABLED: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static LOADING_TID: AtomicU32 = AtomicU32::new(0);
static SHM: OnceLock<Shm> = OnceLock::new();

/// `MMIOTRACE_NO_FOLLOW` was set: only the recorder's own child is traced.
static NO_FOLLOW: AtomicBool = AtomicBool::new(false);
/// A child forked under `--no-follow`: armed ranges keep working (their
/// pages stay `PROT_NONE`, so every access still needs the handler), but
/// nothing is logged and new mappings are not armed.
static MUTED: AtomicBool = AtomicBool::new(false);
static MUTATION_LOCK: AtomicBool = AtomicBool::new(false);

/// The shared-memory file, once the runtime is enabled.
pub fn shm() -> Option<Shm> {
    SHM.get().copied()
}

/// Sets the shared-memory file, once, while the configuration loads.
pub fn set_shm(shm: Shm) {
    let _ = SHM.set(shm);
}

/// Whether tracing is on, without loading the configuration: the cheap
/// test of the system-call interposers (nothing is traced before it is on).
pub fn tracing_active() -> bool {
    STATE.load(Ordering::Acquire) == ENABLED
}

/// Whether this process is (or is about to be) traced: decides whether the
/// signal-mask interposers keep SIGSEGV and SIGTRAP deliverable. Never
/// loads the configuration (it may run inside a signal handler).
pub fn tracing_requested() -> bool {
    match STATE.load(Ordering::Acquire) {
        ENABLED => true,
        DISABLED => false,
        _ => config::shm_path_set(),
    }
}

/// Turns the runtime off for good before it loaded (`--no-follow` in a
/// process that is not the recorder's child).
pub fn disable_before_loading() {
    let _ = STATE.compare_exchange(UNINIT, DISABLED, Ordering::AcqRel, Ordering::Relaxed);
}

/// Whether tracing is on, running `load` at the first call to decide. A
/// call made by `load` itself on the same thread (libc mapping memory for
/// it) gets `false`; another thread waits for the decision.
pub fn enabled_once(load: impl FnOnce() -> bool) -> bool {
    let mut load = Some(load);
    loop {
        match STATE.load(Ordering::Acquire) {
            ENABLED => return true,
            DISABLED => return false,
            UNINIT => {
                if STATE
                    .compare_exchange(UNINIT, LOADING, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    LOADING_TID.store(sys::gettid(), Ordering::Relaxed);
                    let on = load.take().is_some_and(|load| load());
                    let state = if on { ENABLED } else { DISABLED };
                    // SYNC POINT: pairs with the Acquire loads above: SHM,
                    // the configuration and the thread key are set before this.
                    STATE.store(state, Ordering::Release);
                    return state == ENABLED;
                }
            }
            _ => {
                // Loading calls into libc (pthread_atfork, getenv); an mmap
                // made by those on this same thread passes through.
                if LOADING_TID.load(Ordering::Relaxed) == sys::gettid() {
                    return false;
                }
                sys::yield_now();
            }
        }
    }
}

/// Notes that `MMIOTRACE_NO_FOLLOW` was set (see [`after_fork_in_child`]).
pub fn set_no_follow() {
    NO_FOLLOW.store(true, Ordering::Relaxed);
}

/// Whether this process runs armed ranges without logging (see [`MUTED`]).
pub fn muted() -> bool {
    MUTED.load(Ordering::Relaxed)
}

/// Serialises changes to the traced ranges (arming, unmapping,
/// re-protecting, moving), with the asynchronous signals blocked.
#[derive(Debug)]
pub struct MutationLock {
    _signals: SignalsBlocked,
}

impl MutationLock {
    pub fn take() -> MutationLock {
        let signals = SignalsBlocked::new();
        while MUTATION_LOCK
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            sys::yield_now();
        }
        MutationLock { _signals: signals }
    }
}

impl Drop for MutationLock {
    fn drop(&mut self) {
        MUTATION_LOCK.store(false, Ordering::Release);
    }
}

/// Called in the child after fork: only the forking thread exists.
pub fn after_fork_in_child() {
    MUTATION_LOCK.store(false, Ordering::Release);
    if NO_FOLLOW.load(Ordering::Relaxed) {
        MUTED.store(true, Ordering::Relaxed);
    }
}

/// Nobody drains the rings any more. If the recorder did not say so
/// itself, the first runtime to notice tells the user, in one line for the
/// whole recording, and removes the shared-memory file that the recorder
/// left behind. The program goes on untraced: its accesses are still
/// performed, but no longer logged. Async-signal-safe.
pub fn tracing_stopped(shm: &Shm, reason: StopReason) {
    let why = match reason {
        // The recorder warned when it stopped waiting for this process.
        StopReason::Finished => return,
        StopReason::WriteFailed => "the recorder cannot write the trace (it says why)",
        StopReason::RecorderGone => {
            "the recorder is gone (killed, or it ended before the program did)"
        }
    };
    if !shm.take_stop_notice() {
        return;
    }
    if reason == StopReason::RecorderGone {
        let path = shm.path();
        let mut with_nul = [0u8; mmiotrace_shm::MAX_SHM_PATH + 1];
        if !path.is_empty()
            && let Some(dst) = with_nul.get_mut(..path.len())
        {
            dst.copy_from_slice(path);
            let _ = sys::unlink(with_nul.get(..path.len() + 1).unwrap_or(&[]));
        }
    }
    Msg::new()
        .text("tracing stopped: ")
        .text(why)
        .text("; the program goes on untraced")
        .emit();
}
