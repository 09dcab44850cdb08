//! Loading: the constructor that runs when the runtime is loaded, and the
//! configuration, loaded at the first traced `mmap` (or mark, or VFIO
//! access): the shared-memory file, the thread key, and the fork and exit
//! handlers.
//!
//! # Safety
//!
//! The constructor is a function pointer in `.init_array`; the fork and
//! exit handlers are C callbacks registered with libc; the shared-memory
//! file is mapped with a raw `mmap` and read as the shm crate's layout.

use mmiotrace_shm::Shm;

use crate::msg::Msg;
use crate::{config, hooks, patch, ranges, real, single_step, state, sys, threads, tls};

/// Runs when the runtime is loaded, before the program's `main`: copies
/// the configuration, resolves the real libc functions that the runtime
/// shadows, creates the signal mask view, and under `--no-follow` turns
/// the runtime off in every process but the recorder's own child (a
/// process that child spawned has another parent; the child's own `exec`s
/// keep its pid and parent).
extern "C" fn on_load() {
    config::capture();
    real::resolve_all();
    threads::init_mask_view();
    if !followed() {
        state::disable_before_loading();
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;

/// False under `--no-follow` in a process whose parent is not the recorder.
fn followed() -> bool {
    let Some(recorder) = config::no_follow() else {
        return true;
    };
    state::set_no_follow();
    // SAFETY: getppid has no arguments and cannot fail.
    let parent = unsafe { libc::syscall(libc::SYS_getppid) } as u64;
    recorder == Some(parent)
}

/// Whether tracing is on: loads the configuration at the first call. With
/// `MMIOTRACE_SHM` unset the runtime is a pure pass-through.
pub fn enabled() -> bool {
    state::enabled_once(load_config)
}

fn load_config() -> bool {
    let mut path = [0u8; config::VALUE_BYTES];
    let Some((path, path_len)) = config::shm_path(&mut path) else {
        return false;
    };
    // Another library's constructor may map a file before on_load() runs.
    if !followed() {
        return false;
    }
    let opened = match open_shm_inherited() {
        Some(shm) => Ok(shm),
        None if path_len >= config::VALUE_BYTES => Err("path too long"),
        None => open_shm(path),
    };
    let shm = match opened {
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
    let mut patterns = [0u8; config::VALUE_BYTES];
    if let Some((_, len)) = config::trace_patterns(&mut patterns)
        && len > config::VALUE_BYTES
    {
        Msg::new()
            .text("MMIOTRACE_TRACE is longer than 4096 bytes; the rest is ignored")
            .emit();
    }
    if !hooks::load() {
        return false;
    }
    threads::init();
    // SAFETY: a child handler with the C signature; no prepare/parent.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    // SAFETY: a handler with the C signature, valid for the life of the
    // process (the runtime is never unloaded: it is preloaded).
    unsafe { libc::atexit(threads::release_at_exit) };
    threads::forget_replaced_image(&shm);
    // After the slot release above, so that its exit handler runs first.
    single_step::init();
    patch::init(&shm);
    // SAFETY: as above.
    unsafe { libc::atexit(patch::report_at_exit) };
    state::set_shm(shm);
    true
}

/// The fork child handler: only the forking thread exists in the child.
extern "C" fn after_fork_in_child() {
    threads::after_fork_in_child();
    ranges::forget_holds_after_fork();
    state::after_fork_in_child();
    tls::after_fork_in_child();
    patch::after_fork_in_child();
}

/// Maps the shared-memory file through the descriptor the recorder left
/// open for us (`MMIOTRACE_SHM_FD`). It works where the path does not: in a
/// mount namespace that hides /dev/shm, or after a chroot. The descriptor
/// stays open so that programs this one execs can use it too.
fn open_shm_inherited() -> Option<Shm> {
    map_shm(config::shm_fd()?).ok()
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
