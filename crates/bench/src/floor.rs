//! The exception floor: what a fault costs when the handler does nothing but
//! step over the faulting instruction. No tracer can be cheaper than this on
//! the fault path, so it is the yardstick for the traced rows. And its
//! two-exception version, the floor of anything that single-steps the
//! faulting instruction (displaced execution, the kernel's design).
//!
//! # Safety
//!
//! This module installs SIGSEGV and SIGTRAP handlers that rewrite the
//! interrupted thread's RIP, RDI and TF. They do so only for faults inside
//! the armed page, whose only accesses are the 2-byte `mov`s of
//! [`crate::access`] with their address in RDI; any other fault restores
//! the default action, so that the process dies as it would have.

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

static STEP_START: AtomicUsize = AtomicUsize::new(0);
static STEP_END: AtomicUsize = AtomicUsize::new(0);
static STEP_SCRATCH: AtomicUsize = AtomicUsize::new(0);
/// The faulting instruction's rdi while it single-steps on the scratch page; 0 when none.
static STEP_SAVED_RDI: AtomicUsize = AtomicUsize::new(0);

const TF: i64 = 1 << 8;

/// While this lives, faults on `page` cost what the cheapest displaced
/// execution can: the SIGSEGV handler points rdi (the loop's address
/// register) at the same offset of `scratch` and sets TF; the CPU executes
/// the access there and traps; the SIGTRAP handler points rdi back and
/// clears TF. Two exceptions per access, and nothing else. One thread only.
#[derive(Debug)]
pub struct StepFaults {
    previous_segv: libc::sigaction,
    previous_trap: libc::sigaction,
}

impl StepFaults {
    pub fn arm(page: &SharedPage, scratch: &SharedPage) -> anyhow::Result<Self> {
        let Range { start, end } = page.address_range();
        // SYNC POINT: as in SkipFaults::arm, the handlers run on this thread.
        STEP_START.store(start, Ordering::Relaxed);
        STEP_END.store(end, Ordering::Relaxed);
        STEP_SCRATCH.store(scratch.address_range().start, Ordering::Relaxed);
        STEP_SAVED_RDI.store(0, Ordering::Relaxed);
        let previous_segv = install(libc::SIGSEGV, step_onto_scratch)?;
        let previous_trap = match install(libc::SIGTRAP, step_back) {
            Ok(previous) => previous,
            Err(err) => {
                // SAFETY: reinstalls the action saved just above.
                unsafe { libc::sigaction(libc::SIGSEGV, &previous_segv, std::ptr::null_mut()) };
                return Err(err);
            }
        };
        let armed = Self {
            previous_segv,
            previous_trap,
        };
        page.protect_none()?;
        Ok(armed)
    }
}

impl Drop for StepFaults {
    fn drop(&mut self) {
        // SAFETY: reinstalls the actions saved in `arm`, valid then.
        unsafe {
            libc::sigaction(libc::SIGSEGV, &self.previous_segv, std::ptr::null_mut());
            libc::sigaction(libc::SIGTRAP, &self.previous_trap, std::ptr::null_mut());
        }
        STEP_END.store(0, Ordering::Relaxed);
    }
}

type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

fn install(signal: libc::c_int, handler: Handler) -> anyhow::Result<libc::sigaction> {
    // SAFETY: an all-zero sigaction is a valid value, filled in below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as *const () as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: as above.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live sigaction values; the handlers are
    // async-signal-safe (atomics and the context only).
    if unsafe { libc::sigaction(signal, &action, &mut previous) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(previous)
}

/// Dies of `signal` as without the handler.
fn die_of(signal: libc::c_int) {
    // SAFETY: resetting to the default action and raising are
    // async-signal-safe.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

extern "C" fn step_onto_scratch(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let armed = STEP_START.load(Ordering::Relaxed)..STEP_END.load(Ordering::Relaxed);
    // SAFETY: `context` is the ucontext_t the kernel saved for this thread.
    let gregs = unsafe { &mut (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    let rdi = gregs[libc::REG_RDI as usize] as usize;
    if !armed.contains(&addr) || !armed.contains(&rdi) {
        // SAFETY: as in skip_faulting_access: the fault repeats and kills.
        unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
        return;
    }
    STEP_SAVED_RDI.store(rdi, Ordering::Relaxed);
    gregs[libc::REG_RDI as usize] =
        (STEP_SCRATCH.load(Ordering::Relaxed) + (rdi - armed.start)) as i64;
    gregs[libc::REG_EFL as usize] |= TF;
}

extern "C" fn step_back(
    signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let rdi = STEP_SAVED_RDI.swap(0, Ordering::Relaxed);
    if rdi == 0 {
        die_of(signal);
        return;
    }
    // SAFETY: `context` is the ucontext_t the kernel saved for this thread.
    let gregs = unsafe { &mut (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    gregs[libc::REG_RDI as usize] = rdi as i64;
    gregs[libc::REG_EFL as usize] &= !TF;
}
