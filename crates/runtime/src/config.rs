//! The environment the recorder sets, copied once.
//!
//! `MMIOTRACE_SHM`, `MMIOTRACE_SHM_FD`, `MMIOTRACE_TRACE`,
//! `MMIOTRACE_NO_FOLLOW` and `MMIOTRACE_MODE` are read with `getenv` while
//! libraries load ([`capture`], from the runtime's constructor, or earlier
//! from a call another library's constructor makes) and kept here in
//! atomics. Later readers (the first traced `mmap`, the signal-mask
//! interposers, which may run in a signal handler) read the copies, never
//! the environment, which the program may change meanwhile.
//!
//! # Safety
//!
//! `getenv` returns a pointer into the environment; it is read only while
//! libraries load, when nothing modifies the environment.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use mmiotrace_shm::ENV_SHM_PATH;

/// Longest value kept of `MMIOTRACE_SHM` and `MMIOTRACE_TRACE`.
pub const VALUE_BYTES: usize = 4096;

/// One environment variable's value, copied.
struct Value {
    present: AtomicBool,
    /// The value's whole length (what is kept is cut at [`VALUE_BYTES`]).
    len: AtomicUsize,
    bytes: [AtomicU8; VALUE_BYTES],
}

impl Value {
    const fn new() -> Value {
        Value {
            present: AtomicBool::new(false),
            len: AtomicUsize::new(0),
            bytes: [const { AtomicU8::new(0) }; VALUE_BYTES],
        }
    }

    fn store(&self, value: Option<&[u8]>) {
        let Some(value) = value else { return };
        for (slot, &byte) in self.bytes.iter().zip(value.iter()) {
            slot.store(byte, Ordering::Relaxed);
        }
        self.len.store(value.len(), Ordering::Relaxed);
        self.present.store(true, Ordering::Relaxed);
    }

    /// The value (cut at [`VALUE_BYTES`]) in `out`, and its whole length.
    fn load<'a>(&self, out: &'a mut [u8; VALUE_BYTES]) -> Option<(&'a [u8], usize)> {
        if !self.present.load(Ordering::Relaxed) {
            return None;
        }
        let len = self.len.load(Ordering::Relaxed);
        let kept = len.min(VALUE_BYTES);
        for (dst, src) in out.iter_mut().zip(self.bytes.iter()).take(kept) {
            *dst = src.load(Ordering::Relaxed);
        }
        Some((out.get(..kept).unwrap_or(&[]), len))
    }
}

static CAPTURED: AtomicBool = AtomicBool::new(false);
static SHM_PATH: Value = Value::new();
static TRACE: Value = Value::new();
/// `MMIOTRACE_HOOKS`: the hook file of `record --hook`/`--hook-lib`/`--model`.
static HOOKS: Value = Value::new();
/// `MMIOTRACE_SHM_FD` when it is a descriptor number, else -1.
static SHM_FD: AtomicI32 = AtomicI32::new(-1);
static NO_FOLLOW: AtomicBool = AtomicBool::new(false);
/// `MMIOTRACE_NO_FOLLOW`'s recorder pid; `u64::MAX` when it is not a number.
static RECORDER_PID: AtomicU64 = AtomicU64::new(u64::MAX);
static SINGLE_STEP: AtomicBool = AtomicBool::new(false);
/// `MMIOTRACE_PATCH`: `on` patches hot access sites, `off` never does,
/// `general` patches them without the trampolines' fast path (every
/// patched access goes through the general path: for comparison and
/// debugging); unset means [`PATCH_BY_DEFAULT`].
static PATCH: AtomicU8 = AtomicU8::new(PATCH_UNSET);
const PATCH_UNSET: u8 = 0;
const PATCH_ON: u8 = 1;
const PATCH_OFF: u8 = 2;
const PATCH_GENERAL: u8 = 3;
/// Whether sites are patched when `MMIOTRACE_PATCH` is unset.
pub const PATCH_BY_DEFAULT: bool = true;

/// Copies the environment, once. Called while libraries load: from the
/// runtime's constructor, or before it from the first call that needs the
/// configuration. Two racing copies store the same values.
pub fn capture() {
    if CAPTURED.load(Ordering::Acquire) {
        return;
    }
    let mut name = [0u8; 64];
    let env_name = ENV_SHM_PATH.as_bytes();
    if let Some(dst) = name.get_mut(..env_name.len()) {
        dst.copy_from_slice(env_name);
        SHM_PATH.store(getenv(&name));
    }
    TRACE.store(getenv(b"MMIOTRACE_TRACE\0"));
    HOOKS.store(getenv(b"MMIOTRACE_HOOKS\0"));
    if let Some(digits) = getenv(b"MMIOTRACE_SHM_FD\0") {
        if !digits.is_empty() && digits.len() <= 9 && digits.iter().all(u8::is_ascii_digit) {
            let fd = digits
                .iter()
                .fold(0i32, |fd, &digit| fd * 10 + i32::from(digit - b'0'));
            SHM_FD.store(fd, Ordering::Relaxed);
        }
    }
    if let Some(recorder) = getenv(b"MMIOTRACE_NO_FOLLOW\0") {
        NO_FOLLOW.store(true, Ordering::Relaxed);
        if let Some(pid) = parse_decimal(recorder) {
            RECORDER_PID.store(pid, Ordering::Relaxed);
        }
    }
    match getenv(b"MMIOTRACE_PATCH\0") {
        Some(b"on") => PATCH.store(PATCH_ON, Ordering::Relaxed),
        Some(b"off") => PATCH.store(PATCH_OFF, Ordering::Relaxed),
        Some(b"general") => PATCH.store(PATCH_GENERAL, Ordering::Relaxed),
        _ => {}
    }
    if getenv(b"MMIOTRACE_MODE\0") == Some(b"single-step") {
        SINGLE_STEP.store(true, Ordering::Relaxed);
    }
    // SYNC POINT: pairs with the Acquire load above: a reader that sees
    // CAPTURED sees every value stored before it.
    CAPTURED.store(true, Ordering::Release);
}

fn getenv(name: &[u8]) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns a pointer into the
    // environment, which nothing modifies while libraries load, the only
    // time this runs (see the module's Safety section).
    let value = unsafe { libc::getenv(name.as_ptr() as *const libc::c_char) };
    if value.is_null() {
        return None;
    }
    // SAFETY: getenv returns a NUL-terminated string.
    Some(unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes())
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0')),
    )
}

/// `MMIOTRACE_SHM`, the shared-memory file's path, into `out`, with its
/// whole length (more than `out` holds when it is too long to open).
pub fn shm_path(out: &mut [u8; VALUE_BYTES]) -> Option<(&[u8], usize)> {
    capture();
    SHM_PATH.load(out)
}

/// Whether `MMIOTRACE_SHM` is set: this process is to be traced.
pub fn shm_path_set() -> bool {
    capture();
    SHM_PATH.present.load(Ordering::Relaxed)
}

/// `MMIOTRACE_SHM_FD`, the descriptor of the shared-memory file the
/// recorder left open, when it is a number.
pub fn shm_fd() -> Option<i32> {
    capture();
    Some(SHM_FD.load(Ordering::Relaxed)).filter(|&fd| fd >= 0)
}

/// `MMIOTRACE_TRACE`, the path patterns one per line, into `out`, with its
/// whole length.
pub fn trace_patterns(out: &mut [u8; VALUE_BYTES]) -> Option<(&[u8], usize)> {
    capture();
    TRACE.load(out)
}

/// `MMIOTRACE_NO_FOLLOW`: `None` when unset, else the recorder's pid
/// (`Some(None)` when the value is not a number).
pub fn no_follow() -> Option<Option<u64>> {
    capture();
    NO_FOLLOW
        .load(Ordering::Relaxed)
        .then(|| Some(RECORDER_PID.load(Ordering::Relaxed)).filter(|&pid| pid != u64::MAX))
}

/// Whether `MMIOTRACE_MODE` is `single-step`.
pub fn single_step_mode() -> bool {
    capture();
    SINGLE_STEP.load(Ordering::Relaxed)
}

/// Whether hot access sites are patched (`MMIOTRACE_PATCH`).
pub fn patch_enabled() -> bool {
    capture();
    match PATCH.load(Ordering::Relaxed) {
        PATCH_ON | PATCH_GENERAL => true,
        PATCH_OFF => false,
        _ => PATCH_BY_DEFAULT,
    }
}

/// Whether patched sites get the fast path (not `MMIOTRACE_PATCH=general`).
pub fn patch_fast_enabled() -> bool {
    capture();
    PATCH.load(Ordering::Relaxed) != PATCH_GENERAL
}

/// `MMIOTRACE_HOOKS`, the hook file's path, into `out`, with its whole
/// length.
pub fn hooks_path(out: &mut [u8; VALUE_BYTES]) -> Option<(&[u8], usize)> {
    capture();
    HOOKS.load(out)
}
