//! The recorder's liveness, which the kernel reports to the runtimes through
//! a robust futex word in the header.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::{FUTEX_TID_MASK, Shm};

/// `struct robust_list` (linux/futex.h): one entry of a thread's list of
/// robust futexes.
#[repr(C)]
#[derive(Debug)]
struct RobustList {
    next: *const RobustList,
}

/// `struct robust_list_head` (linux/futex.h).
#[repr(C)]
#[derive(Debug)]
struct RobustListHead {
    list: RobustList,
    /// From an entry to its futex word.
    futex_offset: isize,
    list_op_pending: *const RobustList,
}

/// The recorder's liveness, announced to the runtimes through the kernel.
///
/// A thread of the recorder registers a robust futex list
/// (`set_robust_list(2)`) with one entry, the header's liveness word, and
/// stores its thread id there. When that thread ends, for whatever reason
/// (the recorder returns, is killed with SIGKILL, crashes), the kernel
/// sets `FUTEX_OWNER_DIED` in the word, in the shared mapping. A runtime
/// reads it with one load ([`Shm::recorder_gone`]); no descriptor, path or
/// pid that a program could close, hide or reuse is involved.
///
/// The thread only waits: it owns no lock, so replacing its C library's
/// robust list (used for robust mutexes) loses nothing.
#[derive(Debug)]
pub struct RecorderLiveness {
    stop: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RecorderLiveness {
    /// Starts the thread and returns once the word is set. Fails where the
    /// kernel has no robust futexes; the word then stays 0, which the
    /// runtimes read as "alive" (they wait for the recorder, as before).
    pub fn announce(shm: Shm) -> std::io::Result<RecorderLiveness> {
        let stop = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let (registered, result) = std::sync::mpsc::channel();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mmiotrace-alive".to_owned())
            .spawn(move || {
                let word = shm.recorder_word();
                // Leaked: the kernel reads the list when the thread exits,
                // after its stack frames are gone.
                let entry: &'static mut RobustList = Box::leak(Box::new(RobustList {
                    next: std::ptr::null(),
                }));
                let head: &'static mut RobustListHead = Box::leak(Box::new(RobustListHead {
                    list: RobustList {
                        next: std::ptr::null(),
                    },
                    futex_offset: (word as *const AtomicU32 as isize)
                        .wrapping_sub(entry as *const RobustList as isize),
                    list_op_pending: std::ptr::null(),
                }));
                // A circular list of one: head -> entry -> head.
                entry.next = &head.list;
                head.list.next = entry;
                // SAFETY: `head` is a valid robust_list_head that lives
                // forever (leaked), and its one entry's futex word is the
                // header's liveness word, which stays mapped (the recorder
                // never unmaps the file).
                let ret = unsafe {
                    libc::syscall(
                        libc::SYS_set_robust_list,
                        head as *const RobustListHead,
                        std::mem::size_of::<RobustListHead>(),
                    )
                };
                if ret != 0 {
                    let _ = registered.send(Err(std::io::Error::last_os_error()));
                    return;
                }
                // SAFETY: gettid has no arguments and cannot fail.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
                // SYNC POINT: pairs with the loads in Shm::recorder_gone();
                // written before the recorder starts the program.
                word.store(tid & FUTEX_TID_MASK, Ordering::Release);
                let _ = registered.send(Ok(()));
                let (lock, wake) = &*thread_stop;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !*stopped {
                    stopped = wake.wait(stopped).unwrap_or_else(|e| e.into_inner());
                }
            })?;
        let outcome = result
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the liveness thread ended")));
        outcome.map(|()| RecorderLiveness {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RecorderLiveness {
    /// Ends the thread: from then on the runtimes see the recorder as gone.
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
