//! The SIGSEGV and SIGTRAP handlers: the path of one traced access.
//!
//! # Safety
//!
//! Signal handlers receive raw `siginfo_t` and `ucontext_t` pointers from the
//! kernel, read the faulting instruction's bytes from raw code addresses,
//! access the alias through raw addresses, and call the program's previous
//! handlers through function pointers. All of that needs `unsafe`; it is
//! confined here and in the modules the handlers call.
//!
//! Between the fault and the return: [`on_sigsegv`] checks the alternate
//! stack, [`handle_access_fault`] finds the range and decodes the
//! instruction (`context`), then emulates it (`emulate`, on an
//! `alias_bus::AliasBus` that performs and logs each access), runs it
//! displaced with values (`displaced`), or starts the slow path
//! (`slow_path`), whose trap [`on_sigtrap`] finishes. A fault that is not
//! the runtime's goes to the program's handler ([`chain`]). Nothing on that
//! path allocates or takes a lock; it formats only the one-line messages of
//! a fault it cannot handle (`msg`, on the stack), and it does not panic.

use core::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::alias_bus::AliasBus;
use crate::context::{self, kernel_set, kernel_set_mut};
use crate::emulate::{self, Refusal};
use crate::{displaced, patch, ranges, single_step, slow_path, state, sys, threads, xsave};

unsafe extern "C" {
    /// glibc's public alias of the real `sigaction`; the runtime exports
    /// `sigaction` itself, so calling that name would call the interposer.
    fn __sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int;
}

/// How many threads are inside the runtime's handlers right now. Exported
/// so that tests can read it from a malloc hook, to prove that the handlers
/// never allocate.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static mmiotrace_runtime_in_handler: AtomicU32 = AtomicU32::new(0);
use mmiotrace_runtime_in_handler as IN_HANDLER;

/// `si_code` of the SIGTRAP of an `int3`.
const SI_KERNEL: c_int = 0x80;

/// `si_code` of a SIGSEGV on a mapped page whose protection forbids the access.
const SEGV_ACCERR: c_int = 2;

/// The program's own disposition for a signal the runtime took over.
#[derive(Debug)]
struct Previous {
    handler: AtomicUsize,
    flags: AtomicU64,
    mask: AtomicU64,
}

impl Previous {
    const fn new() -> Previous {
        Previous {
            handler: AtomicUsize::new(libc::SIG_DFL),
            flags: AtomicU64::new(0),
            mask: AtomicU64::new(0),
        }
    }

    fn store(&self, act: &libc::sigaction) {
        let mask = kernel_set(&act.sa_mask);
        self.flags.store(act.sa_flags as u64, Ordering::Relaxed);
        self.mask.store(mask, Ordering::Relaxed);
        // SYNC POINT: pairs with the Acquire load in chain().
        self.handler.store(act.sa_sigaction, Ordering::Release);
    }

    fn load(&self, act: &mut libc::sigaction) {
        // SAFETY: zeroed is a valid sigaction.
        *act = unsafe { core::mem::zeroed() };
        act.sa_sigaction = self.handler.load(Ordering::Acquire);
        act.sa_flags = self.flags.load(Ordering::Relaxed) as c_int;
        *kernel_set_mut(&mut act.sa_mask) = self.mask.load(Ordering::Relaxed);
    }
}

static PREV_SEGV: Previous = Previous::new();
static PREV_TRAP: Previous = Previous::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn previous(sig: c_int) -> Option<&'static Previous> {
    match sig {
        libc::SIGSEGV => Some(&PREV_SEGV),
        libc::SIGTRAP => Some(&PREV_TRAP),
        _ => None,
    }
}

/// Installs the handlers, once, remembering the program's (at the first
/// traced mmap rather than at load, so that a handler the program or its
/// runtime set up before, such as Rust std's stack-overflow handler, is
/// chained to rather than hidden).
pub fn install() {
    if INSTALLED.load(Ordering::Acquire) {
        return;
    }
    type Handler = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);
    let handlers: [(c_int, Handler, &Previous); 2] = [
        (libc::SIGSEGV, on_sigsegv, &PREV_SEGV),
        (libc::SIGTRAP, on_sigtrap, &PREV_TRAP),
    ];
    for (sig, handler, prev) in handlers {
        // SAFETY: zeroed is a valid sigaction; the sigset functions get
        // valid pointers; __sigaction gets valid act/old pointers.
        unsafe {
            let mut act: libc::sigaction = core::mem::zeroed();
            act.sa_sigaction = handler as usize;
            // ONSTACK: a stack overflow must be handled on the alternate
            // stack. NODEFER: a traced access made inside a chained handler
            // (or a program SIGSEGV handler) must still fault into us.
            act.sa_flags =
                libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER | libc::SA_RESTART;
            // Block every asynchronous signal while the handler runs, so that
            // no other handler on this thread can push to the same ring.
            libc::sigfillset(&mut act.sa_mask);
            for sync in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
                libc::SIGTRAP,
            ] {
                libc::sigdelset(&mut act.sa_mask, sync);
            }
            let mut old: libc::sigaction = core::mem::zeroed();
            __sigaction(sig, &act, &mut old);
            prev.store(&old);
            // The program's own sa_mask, as it set it (the runtime kept
            // SIGSEGV/SIGTRAP out of the installed one).
            prev.mask.fetch_or(sa_mask_view(sig), Ordering::Relaxed);
        }
    }
    INSTALLED.store(true, Ordering::Release);
}

/// The program's `sigaction` for SIGSEGV/SIGTRAP once the runtime owns
/// them: reads and replaces the remembered disposition instead of the
/// installed one. `None` when the call is not the runtime's business.
pub fn program_sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> Option<c_int> {
    if !INSTALLED.load(Ordering::Acquire) {
        return None;
    }
    let prev = previous(sig)?;
    if !old.is_null() {
        // SAFETY: the caller passed a writable sigaction.
        prev.load(unsafe { &mut *old });
    }
    if !act.is_null() {
        // SAFETY: the caller passed a readable sigaction.
        prev.store(unsafe { &*act });
    }
    Some(0)
}

/// Per signal, which of SIGSEGV/SIGTRAP the program put in its handler's
/// `sa_mask` (the runtime removes them; `sigaction` reports them back).
static SA_MASK_VIEW: [AtomicU64; 65] = [const { AtomicU64::new(0) }; 65];

/// What the program asked to block in `sig`'s handler, of SIGSEGV/SIGTRAP.
pub fn sa_mask_view(sig: c_int) -> u64 {
    SA_MASK_VIEW
        .get(sig as usize)
        .map_or(0, |v| v.load(Ordering::Relaxed))
}

/// Replaces [`sa_mask_view`] of `sig` (a signal number out of range has none).
pub fn set_sa_mask_view(sig: c_int, view: u64) {
    if let Some(slot) = SA_MASK_VIEW.get(sig as usize) {
        slot.store(view, Ordering::Relaxed);
    }
}

/// The real `sigaction`.
pub fn real_sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    // SAFETY: the pointers come from the program's own sigaction call.
    unsafe { __sigaction(sig, act, old) }
}

/// The SIGSEGV handler's entry: a small frame that checks there is room
/// for the handler before [`handle_sigsegv`] takes its (larger) frame.
extern "C" fn on_sigsegv(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext for SA_SIGINFO.
    if unsafe { altstack_too_small(&*info, &*(ctx as *const libc::ucontext_t)) } {
        stop_on_small_altstack();
        return;
    }
    handle_sigsegv(sig, info, ctx);
}

#[inline(never)]
fn handle_sigsegv(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let saved_errno = sys::get_errno();
    IN_HANDLER.fetch_add(1, Ordering::Relaxed);
    let mut bus_error = None;
    // SAFETY: the kernel passes a valid siginfo and ucontext for SA_SIGINFO.
    let handled = unsafe {
        handle_access_fault(&*info, &mut *(ctx as *mut libc::ucontext_t), &mut bus_error)
    };
    IN_HANDLER.fetch_sub(1, Ordering::Relaxed);
    // A hook's SIGBUS, sent once nothing is held, so that a handler of
    // the program that never returns (siglongjmp) leaves nothing behind.
    if let Some(addr) = bus_error {
        sys::raise_bus_error(addr);
    }
    if !handled {
        // A genuine fault of a patched site's instruction, run by its
        // trampoline: the program sees it at the site, as unpatched.
        // SAFETY: the kernel passes a valid ucontext for SA_SIGINFO.
        let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
        let rip = &mut uc.uc_mcontext.gregs[libc::REG_RIP as usize];
        if let Some(site) = patch::site_of_copy(*rip as u64) {
            *rip = site as i64;
        }
        // SAFETY: forwards the kernel's own arguments.
        unsafe { chain(&PREV_SEGV, sig, info, ctx) };
    }
    sys::set_errno(saved_errno);
}

/// Stack the handler may use below its entry to perform one access
/// (measured at about 3.2 KiB; see docs/ARCHITECTURE.md).
const HANDLER_STACK: u64 = 4096;

/// Whether this is a traced access made on an alternate signal stack with
/// less than [`HANDLER_STACK`] left: performing it would overflow that
/// stack into whatever lies below it.
#[inline(always)]
fn altstack_too_small(info: &libc::siginfo_t, uc: &libc::ucontext_t) -> bool {
    let stack = &uc.uc_stack;
    if stack.ss_size == 0 || stack.ss_flags & libc::SS_DISABLE != 0 || info.si_code != SEGV_ACCERR {
        return false;
    }
    let here: u64;
    // SAFETY: reads the stack pointer; no memory is touched.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) here, options(nomem, nostack, preserves_flags))
    };
    let low = stack.ss_sp as u64;
    let on_it = here >= low && here - low < stack.ss_size as u64;
    // SAFETY: si_addr is valid for SIGSEGV.
    on_it && here - low < HANDLER_STACK && ranges::is_traced(unsafe { info.si_addr() } as u64)
}

/// Ends the program as a fault the runtime cannot handle, with a message
/// that needs no stack for formatting.
#[inline(never)]
fn stop_on_small_altstack() {
    sys::write_stderr(
        b"mmiotrace: a traced access was made on an alternate signal stack too small for the runtime's handler (it needs about 4 KiB more than untraced, 16 KiB in all is enough): stopping with SIGSEGV rather than overflowing it\n",
    );
    reset_to_default(libc::SIGSEGV);
}

/// Emulates a fault on a traced range, runs it displaced with values, or
/// starts its slow path; `false` if it is not ours.
fn handle_access_fault(
    info: &libc::siginfo_t,
    uc: &mut libc::ucontext_t,
    bus_error: &mut Option<u64>,
) -> bool {
    if info.si_code != SEGV_ACCERR {
        return false;
    }
    // SAFETY: si_addr is valid for SIGSEGV.
    let fault_addr = unsafe { info.si_addr() } as u64;
    let Some(held) = ranges::lookup(fault_addr) else {
        return false;
    };
    let Some(shm) = state::shm() else {
        return false;
    };
    if single_step::enabled() {
        return single_step::on_fault(fault_addr, held, &shm, uc);
    }
    let mut regs = context::read_regs(uc);
    // A patched site's instruction, run by its trampoline (the address
    // was traced after all): logged and counted at the site.
    let pc = patch::site_of_copy(regs.rip).unwrap_or(regs.rip);
    let Some(fetched) = patch::fetch_at(regs.rip) else {
        context::refuse(Refusal::Undecodable, pc, fault_addr);
        return false;
    };
    let mut bus = AliasBus::new(held.range, &shm, threads::me(&shm), pc);
    // The MOV family and compares are emulated; vector moves are emulated
    // on the frame's XSAVE area; the rest runs displaced with values
    // (docs/INSTRUCTIONS.md); what even that cannot do takes the slow path.
    let mut outcome = emulate::emulate(&fetched.insn, &mut regs, &mut bus);
    let frame = if outcome == Err(Refusal::Unsupported) {
        xsave::frame(uc)
    } else {
        None
    };
    if outcome == Err(Refusal::Unsupported) {
        if let Some(frame) = frame {
            let mut vectors = xsave::FrameVectors::new(frame);
            outcome = emulate::emulate_vector(&fetched.insn, &mut regs, &mut vectors, &mut bus);
        }
    }
    if outcome == Err(Refusal::Unsupported) {
        let bytes = fetched.bytes.get(..fetched.insn.len()).unwrap_or(&[]);
        let slot = bus.slot();
        outcome = displaced::execute(bytes, &fetched.insn, &mut regs, frame, slot, &mut bus);
    }
    match outcome {
        Ok(()) => {
            context::write_regs(uc, &regs);
            drop(held);
            let bytes = fetched.bytes.get(..fetched.insn.len()).unwrap_or(&[]);
            patch::note_fault(pc, &fetched.insn, bytes);
            true
        }
        Err(Refusal::Unsupported) => {
            drop(held);
            slow_path::begin(&shm, &fetched, &mut regs, uc, fault_addr)
        }
        Err(Refusal::Protection) => false,
        Err(Refusal::BusError) => {
            *bus_error = Some(fault_addr);
            true
        }
        Err(refusal) => {
            context::refuse(refusal, pc, fault_addr);
            false
        }
    }
}

extern "C" fn on_sigtrap(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let saved_errno = sys::get_errno();
    IN_HANDLER.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the kernel passes a valid ucontext for SA_SIGINFO.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    // SAFETY: the kernel's siginfo.
    let from_int3 = unsafe { (*info).si_code } == SI_KERNEL;
    if from_int3 && patch::on_int3(uc) {
        IN_HANDLER.fetch_sub(1, Ordering::Relaxed);
        sys::set_errno(saved_errno);
        return;
    }
    let finished = single_step::on_trap(uc).or_else(|| slow_path::finish(uc));
    IN_HANDLER.fetch_sub(1, Ordering::Relaxed);
    // Not ours, or the program was single-stepping itself: its handler
    // expects this trap too.
    if finished != Some(false) {
        // SAFETY: forwards the kernel's own arguments.
        unsafe { chain(&PREV_TRAP, sig, info, ctx) };
    }
    sys::set_errno(saved_errno);
}

/// Hands a signal that is not the runtime's to the program's disposition,
/// dying exactly as the program would have when that is the default.
///
/// # Safety
///
/// `info` and `ctx` are the kernel's arguments to the current handler.
unsafe fn chain(prev: &Previous, sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let handler = prev.handler.load(Ordering::Acquire);
    let flags = prev.flags.load(Ordering::Relaxed) as c_int;
    // SAFETY: the kernel's siginfo.
    let from_kernel = unsafe { (*info).si_code } > 0;
    let bit = 1u64 << (sig - 1);
    let mut view = threads::mask_view();
    if view.blocked & bit != 0 {
        // The program blocked this signal (as far as it knows: the runtime
        // keeps it deliverable).
        if from_kernel {
            // The kernel kills a thread whose fault it cannot deliver,
            // handler or not.
            reset_to_default(sig);
            if sig != libc::SIGSEGV {
                sys::raise_in_thread(sig);
            }
        } else {
            // Sent by kill(): it waits until the program unblocks it.
            view.pending |= bit;
            threads::set_mask_view(view);
        }
        return;
    }
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // A fault or trap raised by an instruction cannot be ignored: the
        // kernel would force the default action.
        if handler == libc::SIG_IGN && !from_kernel {
            return;
        }
        reset_to_default(sig);
        if sig == libc::SIGSEGV && from_kernel {
            // Returning re-executes the faulting instruction, which now
            // kills the process with a real SIGSEGV (and core dump).
            return;
        }
        sys::raise_in_thread(sig);
        return;
    }
    let mut block = prev.mask.load(Ordering::Relaxed);
    if flags & libc::SA_NODEFER == 0 {
        block |= bit;
    }
    // Blocked, a traced access made by the program's handler would kill it.
    block &= !threads::VIEW_SIGNALS;
    let old_mask = sys::sigprocmask(libc::SIG_BLOCK, block);
    if flags & libc::SA_RESETHAND != 0 {
        prev.handler.store(libc::SIG_DFL, Ordering::Release);
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the program installed this as an SA_SIGINFO handler.
        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { core::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the program installed this as a plain handler.
        let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(handler) };
        f(sig);
    }
    sys::sigprocmask(libc::SIG_SETMASK, old_mask);
}

fn reset_to_default(sig: c_int) {
    // SAFETY: a zeroed sigaction with SIG_DFL (0) is valid.
    let act: libc::sigaction = unsafe { core::mem::zeroed() };
    real_sigaction(sig, &act, core::ptr::null_mut());
}
