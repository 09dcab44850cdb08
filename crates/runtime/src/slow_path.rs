//! The slow path: what neither the emulator nor displaced execution with
//! values can do (a gather, a segment load, `maskmov*`) runs unmodified,
//! single-stepped, on the alias.
//!
//! [`begin`] (in the SIGSEGV handler) adds the distance to the alias to the
//! instruction's address registers, sets TF, blocks the asynchronous
//! signals for the step and logs the access as `UNKNOWN`; the CPU runs the
//! instruction on the alias and traps; [`finish`] (in the SIGTRAP handler)
//! moves the registers back and restores TF and the mask. Other threads
//! keep faulting into the handler meanwhile, so nothing slips through.
//! docs/INSTRUCTIONS.md says what takes this path.
//!
//! # Safety
//!
//! None needed: the registers and the mask are changed in the `ucontext_t`
//! that the handlers receive, through `context`.

use iced_x86::Register;
use mmiotrace_shm::{RECORD_FLAG_SLOW_PATH, Record, Shm, kind};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::context::{self, Fetched, TF};
use crate::emulate::{self, Bus, Refusal, Regs};
use crate::msg::Msg;
use crate::threads::{self, Rebased};
use crate::{log, ranges, state, sys};

/// A bus that refuses every access: address computation only.
struct NoBus;

impl Bus for NoBus {
    fn check(&mut self, _addr: u64, _width: u8, _write: bool) -> Result<(), Refusal> {
        Err(Refusal::Unsupported)
    }
    fn load(&mut self, _addr: u64, _width: u8) -> Result<u64, Refusal> {
        Err(Refusal::Unsupported)
    }
    fn store(&mut self, _addr: u64, _width: u8, _value: u64) -> Result<(), Refusal> {
        Err(Refusal::Unsupported)
    }
    fn segment_base(&mut self, segment: Register) -> Option<u64> {
        sys::segment_base(segment == Register::GS)
    }
}

/// Moves the instruction's address registers onto the alias and sets TF,
/// so that the CPU single-steps the unmodified instruction there;
/// [`finish`] moves them back. Returns whether the fault was handled.
pub fn begin(
    shm: &Shm,
    fetched: &Fetched,
    regs: &mut Regs,
    uc: &mut libc::ucontext_t,
    fault_addr: u64,
) -> bool {
    let pc = regs.rip;
    let me = threads::me(shm);
    if threads::pending_active(me.slot) {
        // A traced access inside a signal handler that interrupted another
        // slow-path instruction of this thread.
        context::refuse(Refusal::RegisterConflict, pc, fault_addr);
        return false;
    }
    let targets = match emulate::rebase_targets(&fetched.insn, regs, &mut NoBus, ranges::is_traced)
    {
        Ok(targets) => targets,
        Err(refusal) => {
            context::refuse(refusal, pc, fault_addr);
            return false;
        }
    };
    let mut rebased: [Option<Rebased>; 2] = [None, None];
    let mut records = [Record::default(); 2];
    for (i, target) in targets.iter().enumerate() {
        let Some(target) = target else { continue };
        let Some(held) = ranges::lookup(target.addr) else {
            release(&rebased);
            return false;
        };
        if target.size > 0 && !held.range.contains(target.addr, target.size) {
            release(&rebased);
            context::refuse(Refusal::OutsideRange, pc, fault_addr);
            return false;
        }
        let delta = held.range.alias.wrapping_sub(held.range.start);
        let added = if target.divisor > 1 {
            (delta as i64 / target.divisor as i64) as u64
        } else {
            delta
        };
        let (aux, width) = fetched.head();
        if let Some(record) = records.get_mut(i) {
            *record = Record {
                kind: kind::UNKNOWN,
                width,
                flags: RECORD_FLAG_SLOW_PATH,
                map_id: held.range.map_id,
                offset: held.range.offset_of(target.addr),
                aux,
                pc,
                tid: me.tid,
                pid: me.pid,
                ..Record::default()
            };
        }
        if let (Some(value), Some(slot)) = (regs.gpr.get_mut(target.gpr), rebased.get_mut(i)) {
            *value = value.wrapping_add(added);
            *slot = Some(Rebased {
                gpr: target.gpr,
                added,
                hold: held.into_index(),
            });
        }
    }
    let program_tf = regs.rflags & TF != 0;
    regs.rflags |= TF;
    threads::set_pending(me.slot, &rebased, program_tf);
    threads::block_signals_for_step(me.slot, context::kernel_mask(uc));
    context::write_regs(uc, regs);
    for (record, item) in records.iter().zip(rebased.iter()) {
        if item.is_some() && !state::muted() {
            log::push(shm, me.slot, *record, &[]);
        }
    }
    warn_once(pc, fetched);
    true
}

fn release(rebased: &[Option<Rebased>; 2]) {
    for r in rebased.iter().flatten() {
        ranges::release_index(r.hold);
    }
}

/// Moves the rebased registers back after the single step; returns whether
/// the program had TF set itself, or `None` if no slow-path instruction of
/// this thread was pending.
pub fn finish(uc: &mut libc::ucontext_t) -> Option<bool> {
    let shm = state::shm()?;
    let slot = threads::my_slot(&shm)?;
    let (rebased, program_tf) = threads::take_pending(slot)?;
    threads::restore_step_mask(slot, context::kernel_mask(uc));
    let mut regs = context::read_regs(uc);
    for r in rebased.iter().flatten() {
        if let Some(value) = regs.gpr.get_mut(r.gpr) {
            *value = value.wrapping_sub(r.added);
        }
        ranges::release_index(r.hold);
    }
    if !program_tf {
        regs.rflags &= !TF;
    }
    context::write_regs(uc, &regs);
    Some(program_tf)
}

static WARNED_PCS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// A warning per instruction address that takes the slow path.
fn warn_once(pc: u64, fetched: &Fetched) {
    for slot in WARNED_PCS.iter() {
        match slot.compare_exchange(0, pc, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break,
            Err(seen) if seen == pc => return,
            Err(_) => continue,
        }
    }
    let mut msg = Msg::new();
    msg.text("the instruction at ").hex(pc).text(" (bytes");
    for &byte in fetched.bytes.iter().take(fetched.insn.len()) {
        msg.text(" ").hex(u64::from(byte));
    }
    // The wording predates the name "slow path"; tests/displaced.rs looks
    // for "runs displaced", so it stays until a change of output is wanted.
    msg.text(") is not emulated: it runs displaced on the alias and is logged as UNKNOWN")
        .emit();
}
