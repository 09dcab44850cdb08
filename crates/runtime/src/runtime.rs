//! Runtime state: configuration from the environment, the shared-memory
//! file, and arming and disarming of traced mappings.
//!
//! # Safety
//!
//! This module maps, unmaps and re-protects memory on the program's behalf
//! (the program's traced ranges and the runtime's aliases) and maps the
//! shared-memory file; those calls are `unsafe` because they can pull memory
//! out from under other code. Each names the range it owns.

use core::ffi::c_int;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};

use mmiotrace_shm::{ENV_SHM_PATH, MAX_PAYLOAD, PushResult, Record, Shm, StopReason, kind};

use crate::msg::Msg;
use crate::ranges::{self, Range};
use crate::sys::{self, Errno, SignalsBlocked};
use crate::{glob, signals, single_step, threads};

const PAGE: u64 = 4096;

const UNINIT: u8 = 0;
const LOADING: u8 = 1;
const ENABLED: u8 = 2;
const DISABLED: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static LOADING_TID: AtomicU32 = AtomicU32::new(0);
static SHM: OnceLock<Shm> = OnceLock::new();

const PATTERN_BYTES: usize = 4096;
/// `MMIOTRACE_TRACE`, copied once; atomics make the static safe to share.
static PATTERNS: [AtomicU8; PATTERN_BYTES] = [const { AtomicU8::new(0) }; PATTERN_BYTES];
static PATTERNS_LEN: AtomicUsize = AtomicUsize::new(0);

static HANDLERS_READY: AtomicBool = AtomicBool::new(false);
/// `MMIOTRACE_NO_FOLLOW` was set: only the recorder's own child is traced.
static NO_FOLLOW: AtomicBool = AtomicBool::new(false);
/// A child forked under `--no-follow`: armed ranges keep working (their
/// pages stay `PROT_NONE`, so every access still needs the handler), but
/// nothing is logged and new mappings are not armed.
static MUTED: AtomicBool = AtomicBool::new(false);
static MUTATION_LOCK: AtomicBool = AtomicBool::new(false);
static WARNED_PRIVATE: AtomicBool = AtomicBool::new(false);

/// The shared-memory file, once the runtime is enabled.
pub fn shm() -> Option<Shm> {
    SHM.get().copied()
}

/// Whether tracing is on, without loading the configuration: the cheap
/// test of the system-call interposers (nothing is traced before it is on).
pub fn tracing_active() -> bool {
    STATE.load(Ordering::Acquire) == ENABLED
}

/// Whether this process runs armed ranges without logging (see [`MUTED`]).
pub fn muted() -> bool {
    MUTED.load(Ordering::Relaxed)
}

/// Runs when the runtime is loaded, before the program's `main`: resolves
/// the real libc functions that the runtime shadows, creates the signal
/// mask view, and under `--no-follow` turns the runtime off in every
/// process but the recorder's own child (a process that child spawned has
/// another parent; the child's own `exec`s keep its pid and parent).
extern "C" fn on_load() {
    crate::syscalls::resolve_all();
    threads::init_mask_view();
    if !followed() {
        let _ = STATE.compare_exchange(UNINIT, DISABLED, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// False under `--no-follow` in a process whose parent is not the recorder.
fn followed() -> bool {
    let Some(recorder) = getenv(b"MMIOTRACE_NO_FOLLOW\0") else {
        return true;
    };
    NO_FOLLOW.store(true, Ordering::Relaxed);
    // SAFETY: getppid has no arguments and cannot fail.
    let parent = unsafe { libc::syscall(libc::SYS_getppid) } as u64;
    parse_decimal(recorder) == Some(parent)
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;

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

/// Whether tracing is on: loads the configuration at the first call. With
/// `MMIOTRACE_SHM` unset the runtime is a pure pass-through.
pub fn enabled() -> bool {
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
                    let state = if load_config() { ENABLED } else { DISABLED };
                    // SYNC POINT: pairs with the Acquire loads above: SHM,
                    // PATTERNS and the thread key are set before this.
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

fn getenv(name: &[u8]) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns a pointer into the
    // environment, which the program does not modify while loading libraries.
    let value = unsafe { libc::getenv(name.as_ptr() as *const libc::c_char) };
    if value.is_null() {
        return None;
    }
    // SAFETY: getenv returns a NUL-terminated string.
    Some(unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes())
}

fn shm_path_from_env() -> Option<&'static [u8]> {
    let mut name = [0u8; 64];
    let env_name = ENV_SHM_PATH.as_bytes();
    name.get_mut(..env_name.len())?.copy_from_slice(env_name);
    getenv(&name)
}

/// Whether this process is (or is about to be) traced: decides whether the
/// signal-mask interposers keep SIGSEGV and SIGTRAP deliverable. Never
/// loads the configuration (it may run inside a signal handler).
pub fn tracing_requested() -> bool {
    match STATE.load(Ordering::Acquire) {
        ENABLED => true,
        DISABLED => false,
        _ => shm_path_from_env().is_some(),
    }
}

fn load_config() -> bool {
    let Some(path) = shm_path_from_env() else {
        return false;
    };
    // Another library's constructor may map a file before on_load() runs.
    if !followed() {
        return false;
    }
    let shm = match open_shm_inherited().map_or_else(|| open_shm(path), Ok) {
        Ok(shm) => shm,
        Err(what) => {
            Msg::new()
                .text("tracing is OFF: cannot use the shared-memory file ")
                .bytes(path)
                .text(": ")
                .text(what)
                .emit();
            return false;
        }
    };
    if let Some(patterns) = getenv(b"MMIOTRACE_TRACE\0") {
        let len = patterns.len().min(PATTERN_BYTES);
        for (slot, &byte) in PATTERNS.iter().zip(patterns.iter()) {
            slot.store(byte, Ordering::Relaxed);
        }
        PATTERNS_LEN.store(len, Ordering::Relaxed);
        if patterns.len() > PATTERN_BYTES {
            Msg::new()
                .text("MMIOTRACE_TRACE is longer than 4096 bytes; the rest is ignored")
                .emit();
        }
    }
    threads::init();
    threads::forget_replaced_image(&shm);
    single_step::init();
    let _ = SHM.set(shm);
    true
}

/// Maps the shared-memory file through the descriptor the recorder left
/// open for us (`MMIOTRACE_SHM_FD`). It works where the path does not: in a
/// mount namespace that hides /dev/shm, or after a chroot. The descriptor
/// stays open so that programs this one execs can use it too.
fn open_shm_inherited() -> Option<Shm> {
    let digits = getenv(b"MMIOTRACE_SHM_FD\0")?;
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let fd = digits
        .iter()
        .fold(0i32, |fd, &digit| fd * 10 + i32::from(digit - b'0'));
    map_shm(fd).ok()
}

fn open_shm(path: &[u8]) -> Result<Shm, &'static str> {
    let mut buf = [0u8; 4096];
    let with_nul = buf.get_mut(..path.len() + 1).ok_or("path too long")?;
    if let Some(dst) = with_nul.get_mut(..path.len()) {
        dst.copy_from_slice(path);
    }
    let fd = sys::open(with_nul, libc::O_RDWR | libc::O_CLOEXEC).map_err(|_| "cannot open it")?;
    // The recorder keeps recording while any open file description of the
    // file holds a shared lock (see docs/ARCHITECTURE.md); the mapping keeps
    // this one, and so its lock, alive after the close below.
    // SAFETY: flock has no memory effects.
    unsafe { libc::syscall(libc::SYS_flock, fd, libc::LOCK_SH) };
    let shm = map_shm(fd);
    sys::close(fd);
    shm
}

fn map_shm(fd: i32) -> Result<Shm, &'static str> {
    let len = sys::file_size(fd).map_err(|_| "cannot size it");
    let mapped = len.and_then(|len| {
        // SAFETY: a fresh mapping at an address the kernel picks.
        unsafe {
            sys::mmap(
                0,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        }
        .map(|base| (base, len as usize))
        .map_err(|_| "cannot map it")
    });
    let (base, len) = mapped?;
    // SAFETY: base..base+len is a shared read-write mapping of the file that
    // the runtime never unmaps.
    unsafe { Shm::from_raw(base as *mut u8, len) }.map_err(|err| match err {
        mmiotrace_shm::ShmError::BadVersion(_) => {
            "layout version differs (runtime and recorder from different builds)"
        }
        mmiotrace_shm::ShmError::BadMagic => "not an mmiotrace shared-memory file",
        _ => "bad header",
    })
}

/// Decoder warm-up and handler installation, once, at the first traced
/// mapping (DESIGN §4).
fn ensure_handlers() {
    if HANDLERS_READY.load(Ordering::Acquire) {
        return;
    }
    signals::warm_up_decoder();
    signals::install();
    HANDLERS_READY.store(true, Ordering::Release);
}

struct MutationLock {
    _signals: SignalsBlocked,
}

impl MutationLock {
    fn take() -> MutationLock {
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

fn is_traced_path(path: &[u8]) -> bool {
    if glob::DEFAULT_PATTERNS
        .iter()
        .any(|p| glob::matches(p, path))
    {
        return true;
    }
    let len = PATTERNS_LEN.load(Ordering::Relaxed).min(PATTERN_BYTES);
    let mut buf = [0u8; PATTERN_BYTES];
    for (dst, src) in buf.iter_mut().zip(PATTERNS.iter()).take(len) {
        *dst = src.load(Ordering::Relaxed);
    }
    buf.get(..len)
        .unwrap_or(&[])
        .split(|&b| b == b'\n')
        .any(|pattern| !pattern.is_empty() && glob::matches(pattern, path))
}

/// The real path of `fd` (`readlink /proc/self/fd/N`) into `buf`.
pub(crate) fn fd_path(fd: c_int, buf: &mut [u8; 4096]) -> Option<usize> {
    let mut link = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    let mut len = 0;
    for &b in prefix {
        *link.get_mut(len)? = b;
        len += 1;
    }
    let mut digits = [0u8; 20];
    for &b in sys::decimal(u64::from(fd as u32), &mut digits) {
        *link.get_mut(len)? = b;
        len += 1;
    }
    sys::readlink(link.get(..len + 1)?, buf).ok()
}

fn round_up(len: u64) -> u64 {
    len.wrapping_add(PAGE - 1) & !(PAGE - 1)
}

fn overlaps_traced(lo: u64, hi: u64) -> bool {
    let mut found = [(0usize, Range::EMPTY); ranges::CAPACITY];
    ranges::overlapping(lo, hi, &mut found) != 0
}

/// Logs `record` (and its payload) to `slot`'s ring: every push of the
/// runtime goes through here. Async-signal-safe.
pub fn push(shm: &Shm, slot: usize, record: Record, payload: &[u8]) {
    if let PushResult::Stopped(reason) = shm.push(slot, record, payload) {
        tracing_stopped(shm, reason);
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

pub(crate) fn push_outside_handler(record: Record, payload: &[u8]) {
    let Some(shm) = shm().filter(|_| !muted()) else {
        return;
    };
    let _blocked = SignalsBlocked::new();
    let me = threads::me(&shm);
    let payload = payload.get(..payload.len().min(MAX_PAYLOAD)).unwrap_or(&[]);
    push(
        &shm,
        me.slot,
        Record {
            tid: me.tid,
            pid: me.pid,
            ..record
        },
        payload,
    );
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
    let file_backed = flags & libc::MAP_ANONYMOUS == 0 && fd >= 0;
    if !file_backed || !enabled() || muted() {
        // SAFETY: the caller's contract.
        let mapped = unsafe { sys::mmap(addr, len, prot, flags, fd, offset) }?;
        if fixed && STATE.load(Ordering::Acquire) == ENABLED {
            forget_replaced(mapped, len);
        }
        return Ok(mapped);
    }
    let mut path = [0u8; 4096];
    let path_len = fd_path(fd, &mut path).unwrap_or(0);
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
    let path = match crate::vfio::describe(fd, offset as u64, &mut vfio_path) {
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
    let Some(shm) = shm() else { return };
    // SAFETY: a new mapping at an address the kernel picks; only the
    // runtime will know it.
    let alias = match unsafe { sys::mmap(0, len, prot, libc::MAP_SHARED, fd, offset) } {
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
    push_outside_handler(
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
            push_outside_handler(
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
    if STATE.load(Ordering::Acquire) != ENABLED || !overlaps_traced(lo, hi) {
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
    if STATE.load(Ordering::Acquire) != ENABLED || !overlaps_traced(lo, hi) {
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
        // SAFETY: the alias of a range the program owns; the emulator
        // checks the recorded protection before every access.
        unsafe { sys::mprotect(range.alias as usize, range.len as usize, prot) }?;
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
    if STATE.load(Ordering::Acquire) != ENABLED || !overlaps_traced(lo, hi) {
        // SAFETY: the caller's contract.
        let moved = unsafe { sys::mremap(old, old_len, new_len, flags, new_addr) }?;
        if flags & libc::MREMAP_FIXED != 0 && STATE.load(Ordering::Acquire) == ENABLED {
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
                push_outside_handler(
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

/// Pushes a MARK record with `text`, cut visibly to
/// [`mmiotrace_shm::MAX_MARK_LEN`] bytes if it is longer.
pub fn mark(text: &[u8]) {
    if !enabled() {
        return;
    }
    let mut clipped = [0u8; mmiotrace_shm::MAX_MARK_LEN];
    let len = mmiotrace_shm::clip_mark(text, text.len() as u64, &mut clipped);
    push_outside_handler(
        Record {
            kind: kind::MARK,
            ..Record::default()
        },
        clipped.get(..len).unwrap_or(&[]),
    );
}
