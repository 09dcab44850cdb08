//! The kernel's design, for comparison only: `mmiotrace record --mode
//! single-step` (`MMIOTRACE_MODE=single-step`).
//!
//! This reproduces Linux kmmio (arch/x86/mm/kmmio.c and mmio-mod.c; see
//! docs/ARCHITECTURE.md, "Comparison mode") in user space, so that the benchmark can measure it next to
//! mmiotrace's own alias design on the same machine:
//!
//! 1. A fault on an armed page ([`on_fault`], the kernel's
//!    `kmmio_handler`): decode the instruction to know its width, direction
//!    and register; for a store, take the value from the source register
//!    now. Save this thread's context, set TF, and *disarm the page*: make
//!    it accessible again with `mprotect`.
//! 2. The instruction runs again, on the program's own mapping, and
//!    succeeds; the CPU traps after it ([`on_trap`], `post_kmmio_handler`):
//!    for a load, take the value from the destination register; log the
//!    access; *re-arm the page* (`PROT_NONE` again); clear TF.
//!
//! Armed or disarmed is a property of the page, shared by every thread (it
//! is the page's protection), while the context is per thread. So, exactly
//! as in the kernel on SMP, another thread's access to a page while it is
//! disarmed is not trapped and is lost, and a thread whose page another
//! thread re-armed before its instruction ran faults again with its
//! context still active: the kernel's "recursive probe hit" (the 2008 bug
//! report "mmiotrace bug: recursive probe hit" on linux-kernel, March
//! 2008). The kernel then printed a warning, disarmed the
//! page again and fell through to its page-fault handler, which oopsed.
//! Here the hit is counted, the page disarmed again and the instruction
//! retried, so that a comparison run completes; the count is written to
//! stderr and into the trace as a MARK when the process exits. An
//! instruction the decoder does not describe as one register move (an
//! RMW, `movs`, ...) is logged as UNKNOWN, as the kernel does.
//!
//! This mode exists to show what the kernel design loses. It is not for
//! real use.
//!
//! # Safety
//!
//! The handlers change the protection of the program's traced pages
//! (`mprotect` on memory the program owns, from inside a signal handler)
//! and the saved flags of the interrupted thread. The pages changed are
//! always whole pages of a traced range that the handler holds in the
//! range table, so the range cannot be unmapped and reused underneath.

use core::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use mmiotrace_shm::{Record, Shm, kind};

use crate::context::{self, Fetched, TF};
use iced_x86::{Instruction, Register};

use crate::emulate::{Direction, Plan, Source, StringOp, plan};
use crate::msg::Msg;
use crate::ranges::{self, Held};
use crate::state::{self, MAX_SLOTS};
use crate::{config, log, sys, threads};

const PAGE: u64 = 4096;

/// Consecutive recursive hits after which one access is given up as a
/// genuine fault (an access the page's protection forbids faults again
/// after every disarm; contention alone never gets near this).
const MAX_RECURSIVE_HITS: u32 = 10_000;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Recursive probe hits in this process.
static RECURSIVE_HITS: AtomicU64 = AtomicU64::new(0);
/// Accesses single-stepped and logged.
static STEPS: AtomicU64 = AtomicU64::new(0);

/// One thread's in-flight step (the kernel's per-CPU `kmmio_context`).
/// Only the thread owning the ring slot touches its entry (from its own
/// signal handlers), so Relaxed ordering suffices throughout.
#[derive(Debug)]
struct Context {
    active: AtomicBool,
    /// The disarmed page (program address).
    page: AtomicU64,
    /// A second page disarmed by a recursive hit on another page
    /// (an access crossing a page boundary), 0 for none.
    extra_page: AtomicU64,
    /// Range table index + 1 of the held range, 0 for none.
    hold: AtomicU32,
    map_id: AtomicU32,
    offset: AtomicU64,
    pc: AtomicU64,
    /// The stored value, taken before the step.
    store_value: AtomicU64,
    program_tf: AtomicBool,
    recursive_hits: AtomicU32,
}

impl Context {
    const fn new() -> Context {
        Context {
            active: AtomicBool::new(false),
            page: AtomicU64::new(0),
            extra_page: AtomicU64::new(0),
            hold: AtomicU32::new(0),
            map_id: AtomicU32::new(0),
            offset: AtomicU64::new(0),
            pc: AtomicU64::new(0),
            store_value: AtomicU64::new(0),
            program_tf: AtomicBool::new(false),
            recursive_hits: AtomicU32::new(0),
        }
    }
}

static CONTEXTS: [Context; MAX_SLOTS] = [const { Context::new() }; MAX_SLOTS];

/// Turns the mode on if `MMIOTRACE_MODE` asks for it. Called once, at
/// initialisation (outside any handler).
pub fn init() {
    if !config::single_step_mode() {
        return;
    }
    ENABLED.store(true, Ordering::Release);
    // SAFETY: a handler with the C signature, valid for the life of the
    // process (the runtime is preloaded and never unloaded).
    unsafe { libc::atexit(report_at_exit) };
}

/// Whether the runtime runs in the single-step comparison mode.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// Registered after the thread-slot release handler, so it runs before it
/// (atexit runs handlers in reverse order) while this thread has its ring.
extern "C" fn report_at_exit() {
    let mut msg = Msg::new();
    msg.text("single-step mode (comparison only): ")
        .dec(STEPS.load(Ordering::Relaxed))
        .text(" accesses single-stepped, ")
        .dec(RECURSIVE_HITS.load(Ordering::Relaxed))
        .text(" recursive probe hits");
    log::mark(msg.as_bytes());
    if RECURSIVE_HITS.load(Ordering::Relaxed) > 0 {
        msg.emit();
    }
}

fn needed_protection(access: Option<RegisterAccess>) -> c_int {
    match access.map(|a| a.direction) {
        Some(Direction::Write) => libc::PROT_WRITE,
        // Loads, and the instructions logged as UNKNOWN: those read at least.
        _ => libc::PROT_READ,
    }
}

fn set_protection(page: u64, prot: c_int) {
    // SAFETY: a whole page of a traced range that the caller holds (see
    // the module's Safety section); no Rust reference points into it.
    let _ = unsafe { sys::mprotect(page as usize, PAGE as usize, prot) };
}

fn width_mask(width: u8) -> u64 {
    match width {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// The kernel's `kmmio_handler`: a fault on a traced page. Returns whether
/// it was handled (`false`: the fault is the program's own).
pub fn on_fault(fault_addr: u64, held: Held, shm: &Shm, uc: &mut libc::ucontext_t) -> bool {
    let me = threads::me(shm);
    let Some(context) = CONTEXTS.get(me.slot) else {
        return false;
    };
    let page = fault_addr & !(PAGE - 1);
    let prot = held.range.prot as c_int;
    if context.active.load(Ordering::Relaxed) {
        // Recursive probe hit: another thread re-armed the page before this
        // thread's instruction ran (or the instruction crosses into a second
        // armed page). The kernel disarmed again and gave up; here the
        // instruction is retried.
        RECURSIVE_HITS.fetch_add(1, Ordering::Relaxed);
        let hits = context.recursive_hits.fetch_add(1, Ordering::Relaxed) + 1;
        if hits > MAX_RECURSIVE_HITS {
            abandon(context, uc);
            return false;
        }
        if page != context.page.load(Ordering::Relaxed) {
            context.extra_page.store(page, Ordering::Relaxed);
        }
        set_protection(page, prot);
        return true;
    }
    let mut regs = context::read_regs(uc);
    let Some(fetched) = context::fetch(regs.rip) else {
        return false;
    };
    let access = register_access(&fetched.insn);
    if prot & needed_protection(access) == 0 {
        return false;
    }
    let store_value = match access {
        Some(RegisterAccess {
            direction: Direction::Write,
            width,
            register,
            immediate,
        }) => {
            register
                .map_or(Some(immediate), |reg| regs.get(reg))
                .unwrap_or(0)
                & width_mask(width)
        }
        _ => 0,
    };
    context.page.store(page, Ordering::Relaxed);
    context.extra_page.store(0, Ordering::Relaxed);
    context.map_id.store(held.range.map_id, Ordering::Relaxed);
    context
        .offset
        .store(held.range.offset_of(fault_addr), Ordering::Relaxed);
    context.pc.store(regs.rip, Ordering::Relaxed);
    context.store_value.store(store_value, Ordering::Relaxed);
    context
        .program_tf
        .store(regs.rflags & TF != 0, Ordering::Relaxed);
    context.recursive_hits.store(0, Ordering::Relaxed);
    // Held until the trap: the range cannot be unmapped while its page is
    // disarmed (the kernel's kmmio_lock against release_kmmio_fault_page).
    context
        .hold
        .store(held.into_index() as u32 + 1, Ordering::Relaxed);
    context.active.store(true, Ordering::Relaxed);
    regs.rflags |= TF;
    context::write_regs(uc, &regs);
    set_protection(page, prot);
    true
}

/// Gives up on the current step: the fault is treated as the program's own.
fn abandon(context: &Context, uc: &mut libc::ucontext_t) {
    let mut regs = context::read_regs(uc);
    if !context.program_tf.load(Ordering::Relaxed) {
        regs.rflags &= !TF;
    }
    context::write_regs(uc, &regs);
    finish(context);
    Msg::new()
        .text("single-step mode: giving up on the access at ")
        .hex(regs.rip)
        .text(" after ")
        .dec(u64::from(MAX_RECURSIVE_HITS))
        .text(" recursive probe hits")
        .emit();
}

/// Re-arms the context's pages and ends the step.
fn finish(context: &Context) {
    set_protection(context.page.load(Ordering::Relaxed), libc::PROT_NONE);
    let extra = context.extra_page.swap(0, Ordering::Relaxed);
    if extra != 0 {
        set_protection(extra, libc::PROT_NONE);
    }
    let hold = context.hold.swap(0, Ordering::Relaxed);
    if hold != 0 {
        ranges::release_index(hold as usize - 1);
    }
    context.active.store(false, Ordering::Relaxed);
}

/// The kernel's `post_kmmio_handler`: the trap after the stepped
/// instruction. Returns whether the program had TF set itself (its handler
/// expects the trap too), or `None` if no step of this thread was active.
pub fn on_trap(uc: &mut libc::ucontext_t) -> Option<bool> {
    if !enabled() {
        return None;
    }
    let shm = state::shm()?;
    let slot = threads::my_slot(&shm)?;
    let context = CONTEXTS.get(slot)?;
    if !context.active.load(Ordering::Relaxed) {
        return None;
    }
    let mut regs = context::read_regs(uc);
    let pc = context.pc.load(Ordering::Relaxed);
    // Decoded again, as mmio-mod's post() does, for the destination register.
    let fetched = context::fetch(pc);
    let access = fetched.as_ref().and_then(|f| register_access(&f.insn));
    let me = threads::me(&shm);
    let mut record = Record {
        map_id: context.map_id.load(Ordering::Relaxed),
        offset: context.offset.load(Ordering::Relaxed),
        pc,
        tid: me.tid,
        pid: me.pid,
        ..Record::default()
    };
    match access {
        Some(RegisterAccess {
            direction: Direction::Read,
            width,
            register,
            ..
        }) => {
            record.kind = kind::READ;
            record.width = width;
            record.value = register.and_then(|reg| regs.get(reg)).unwrap_or(0) & width_mask(width);
        }
        Some(RegisterAccess {
            direction: Direction::Write,
            width,
            ..
        }) => {
            record.kind = kind::WRITE;
            record.width = width;
            record.value = context.store_value.load(Ordering::Relaxed);
        }
        None => {
            record.kind = kind::UNKNOWN;
            (record.aux, record.width) = fetched.as_ref().map_or((0, 0), Fetched::head);
        }
    }
    log::push(&shm, me.slot, record, &[]);
    STEPS.fetch_add(1, Ordering::Relaxed);
    let program_tf = context.program_tf.load(Ordering::Relaxed);
    finish(context);
    if !program_tf {
        regs.rflags &= !TF;
        context::write_regs(uc, &regs);
    }
    Some(program_tf)
}

/// The one access of a MOV-family instruction (or `stos`), described the
/// way the kernel's mmiotrace describes it (arch/x86/mm/pf_in.c): width,
/// direction, and the register the value is loaded into or stored from.
/// For a tracer that lets the CPU perform the access itself and then
/// reads the value from that register: the single-step comparison mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterAccess {
    pub direction: Direction,
    pub width: u8,
    /// `None` for a store of an immediate.
    pub register: Option<Register>,
    /// The stored immediate, masked to `width` (0 when `register` is set).
    pub immediate: u64,
}

/// What [`crate::emulate::emulate`] would do with `insn`, as one [`RegisterAccess`];
/// `None` for the forms that are not one register-to-memory move (`movs`,
/// `lods`, and everything the emulator does not know: the kernel's
/// "OTHERS", logged as UNKNOWN).
pub fn register_access(insn: &Instruction) -> Option<RegisterAccess> {
    let access = |direction, width, register, immediate| RegisterAccess {
        direction,
        width,
        register,
        immediate,
    };
    match plan(insn)? {
        Plan::Load { width, dest, .. } => Some(access(Direction::Read, width, Some(dest), 0)),
        Plan::Store {
            width,
            source: Source::Register(reg),
        } => Some(access(Direction::Write, width, Some(reg), 0)),
        Plan::Store {
            width,
            source: Source::Immediate(value),
        } => Some(access(
            Direction::Write,
            width,
            None,
            value & width_mask(width),
        )),
        Plan::String {
            op: StringOp::Stos(reg),
            width,
            ..
        } => Some(access(Direction::Write, width, Some(reg), 0)),
        // movs, lods and the forms with no single register operand.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulate::tests::decode;

    #[test]
    fn register_access_names_the_register_the_kernel_reads_the_value_from() {
        let cases: [(&[u8], Option<RegisterAccess>); 5] = [
            // movzx ecx, word [rbx]
            (
                &[0x0f, 0xb7, 0x0b],
                Some(RegisterAccess {
                    direction: Direction::Read,
                    width: 2,
                    register: Some(Register::ECX),
                    immediate: 0,
                }),
            ),
            // mov [rbx], ah
            (
                &[0x88, 0x23],
                Some(RegisterAccess {
                    direction: Direction::Write,
                    width: 1,
                    register: Some(Register::AH),
                    immediate: 0,
                }),
            ),
            // mov dword [rbx], 0x12345678
            (
                &[0xc7, 0x03, 0x78, 0x56, 0x34, 0x12],
                Some(RegisterAccess {
                    direction: Direction::Write,
                    width: 4,
                    register: None,
                    immediate: 0x1234_5678,
                }),
            ),
            // stosd
            (
                &[0xab],
                Some(RegisterAccess {
                    direction: Direction::Write,
                    width: 4,
                    register: Some(Register::EAX),
                    immediate: 0,
                }),
            ),
            // add dword [rdi], esi: the kernel's OTHERS
            (&[0x01, 0x37], None),
        ];
        for (bytes, expected) in cases {
            assert_eq!(register_access(&decode(bytes)), expected, "{bytes:02x?}");
        }
    }
}
