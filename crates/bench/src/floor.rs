//! The exception floor: what a fault costs when the handler does nothing but
//! step over the faulting instruction. No tracer can be cheaper than this on
//! the fault path, so it is the yardstick for the traced row.
//!
//! # Safety
//!
//! This module installs a SIGSEGV handler that rewrites the interrupted
//! thread's RIP. It does so only for faults inside the armed page, whose
//! only accesses are the two 2-byte `mov`s of [`crate::access`]; any other
//! fault restores the default action and returns, so it repeats and kills
//! the process as it would have.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::access::{ACCESS_INSN_LEN, SharedPage};

static ARMED_START: AtomicUsize = AtomicUsize::new(0);
static ARMED_END: AtomicUsize = AtomicUsize::new(0);

/// While this lives, faults on `page` are skipped.
#[derive(Debug)]
pub struct SkipFaults {
    previous: libc::sigaction,
}

impl SkipFaults {
    pub fn arm(page: &SharedPage) -> anyhow::Result<Self> {
        let Range { start, end } = page.address_range();
        // SYNC POINT: the handler runs on this thread, after the mprotect
        // below; Relaxed is enough because a signal handler observes the
        // program order of the thread it interrupts.
        ARMED_START.store(start, Ordering::Relaxed);
        ARMED_END.store(end, Ordering::Relaxed);
        // SAFETY: an all-zero sigaction is a valid value (empty mask, no
        // flags) that is filled in below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = skip_faulting_access as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        // SAFETY: as above.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to live sigaction values; the handler is
        // async-signal-safe (it only reads atomics and writes the context).
        if unsafe { libc::sigaction(libc::SIGSEGV, &action, &mut previous) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        page.protect_none()?;
        Ok(Self { previous })
    }
}

impl Drop for SkipFaults {
    fn drop(&mut self) {
        // SAFETY: reinstalls the action saved in `arm`, which was valid then.
        unsafe { libc::sigaction(libc::SIGSEGV, &self.previous, std::ptr::null_mut()) };
        ARMED_END.store(0, Ordering::Relaxed);
    }
}

extern "C" fn skip_faulting_access(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let armed = ARMED_START.load(Ordering::Relaxed)..ARMED_END.load(Ordering::Relaxed);
    if !armed.contains(&addr) {
        // SAFETY: resetting to the default action is async-signal-safe; the
        // fault then repeats and ends the process with SIGSEGV.
        unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
        return;
    }
    // SAFETY: `context` is the ucontext_t the kernel saved for this thread;
    // the faulting instruction is one of access.rs's 2-byte movs.
    unsafe {
        let context = context.cast::<libc::ucontext_t>();
        (*context).uc_mcontext.gregs[libc::REG_RIP as usize] += ACCESS_INSN_LEN as i64;
    }
}
