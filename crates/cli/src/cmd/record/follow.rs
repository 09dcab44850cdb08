//! Knowing when every traced process is gone.
//!
//! PROGRAM may fork, exec and spawn, and its descendants may outlive it. The
//! recorder keeps draining while any process that can still log exists, and
//! it learns that from a file lock rather than from a list of pids (which
//! would need pid-reuse checks and would miss a process that has not logged
//! yet):
//!
//! - The recorder opens the shared-memory file once more, takes a shared
//!   `flock` on that open file description, and passes its descriptor to
//!   PROGRAM (`MMIOTRACE_SHM_FD`, inherited across fork and exec). The
//!   runtime maps the file through it. A runtime that has to open the file
//!   by path takes a shared lock on its own description.
//! - A `flock` lock lives as long as its open file description, and that
//!   lives as long as any process has it open or mapped. So while any traced
//!   process (or a child that inherited the descriptor) is alive, the
//!   recorder's own non-blocking exclusive `flock` fails; when the last one
//!   is gone, however it ended, it succeeds.
//!
//! Policy: after PROGRAM exits, recording goes on while such processes
//! remain, for at most `--linger` seconds (a daemon must not keep the
//! recorder forever), or until Ctrl-C. Then the recorder names the processes
//! still holding the file, marks the file closed (their later events are
//! dropped instead of making them wait on a full ring), and finishes the
//! trace. With `--no-follow` only PROGRAM is traced and nothing is waited for.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The descriptor PROGRAM inherits, with the shared lock on it.
#[derive(Debug)]
pub struct Inherited {
    fd: OwnedFd,
}

impl Inherited {
    /// Opens `path` as a new open file description, locks it shared, and
    /// returns it as a descriptor numbered 64 or more without close-on-exec.
    pub fn open(path: &Path) -> Result<Inherited> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {} for the program", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) } != 0 {
            // Then Followers::any_alive() never sees a lock: recording ends
            // with PROGRAM, as it would with --no-follow.
            eprintln!(
                "mmiotrace: warning: cannot lock {} ({}): recording will end when the program does, even if processes it started are still running",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: F_DUPFD on a descriptor we own returns a new descriptor of
        // the same open file description, without FD_CLOEXEC, or -1.
        let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD, 64) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("duplicating the shared-memory fd");
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inherited { fd })
    }

    pub fn raw(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }
}

/// Whether processes that may log are still alive.
#[derive(Debug)]
pub struct Followers {
    path: PathBuf,
    probe: File,
}

impl Followers {
    pub fn new(path: &Path) -> Result<Followers> {
        let probe = File::open(path)
            .with_context(|| format!("opening {} to watch the traced processes", path.display()))?;
        Ok(Followers {
            path: path.to_owned(),
            probe,
        })
    }

    /// Whether some process still holds the shared lock (see the module docs).
    pub fn any_alive(&self) -> bool {
        // SAFETY: flock on a descriptor we own; no memory effects.
        let ret = unsafe { libc::flock(self.probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if ret == 0 {
            // SAFETY: as above; the probe holds no lock afterwards.
            unsafe { libc::flock(self.probe.as_raw_fd(), libc::LOCK_UN) };
            return false;
        }
        std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
    }

    /// The processes that have the file open or mapped (for the message
    /// when the recorder stops waiting for them).
    pub fn holders(&self) -> Vec<u32> {
        let Ok(target) = CString::new(self.path.as_os_str().as_bytes()) else {
            return Vec::new();
        };
        let me = std::process::id();
        let mut pids: Vec<u32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me && holds(pid, target.as_bytes()))
            .collect();
        pids.sort_unstable();
        pids
    }
}

fn holds(pid: u32, target: &[u8]) -> bool {
    let by_fd = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p.as_os_str().as_bytes() == target));
    by_fd
        || std::fs::read(format!("/proc/{pid}/maps")).is_ok_and(|maps| {
            maps.split(|&b| b == b'\n')
                .any(|line| line.ends_with(target))
        })
}
