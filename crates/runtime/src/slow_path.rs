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

use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use mmiotrace_shm::{RECORD_FLAG_SLOW_PATH, Record, Shm, kind};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::context::{self, Fetched, TF};
use crate::emulate::{Bus, Refusal, Regs, effective_address, gpr_index};
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
    let targets = match rebase_targets(&fetched.insn, regs, &mut NoBus, ranges::is_traced) {
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
    msg.text(") is not emulated: it runs on the slow path (single-stepped on the alias) and is logged as UNKNOWN")
        .emit();
}

/// A register that the slow path adds the alias offset to, so that the
/// unmodified instruction runs on the alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebaseTarget {
    /// Encoding-order index of the 64-bit register.
    pub gpr: usize,
    /// The address the operand refers to now (before rebasing).
    pub addr: u64,
    /// The register moves by `delta / divisor` (the index scale when the
    /// register is an index).
    pub divisor: u64,
    /// Bytes the operand covers (0 when unknown).
    pub size: u64,
}

/// Registers an instruction reads or writes without naming them as operands,
/// as data (not as an address), for the instructions that can take a memory
/// operand. Rebasing one of them would change the data.
fn implicit_data_registers(insn: &Instruction) -> &'static [Register] {
    use Register::*;
    match insn.mnemonic() {
        Mnemonic::Cmpxchg => &[RAX],
        Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b => &[RAX, RDX, RBX, RCX],
        Mnemonic::Mul | Mnemonic::Div | Mnemonic::Idiv => &[RAX, RDX],
        Mnemonic::Imul if insn.op_count() == 1 => &[RAX, RDX],
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => &[RAX],
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => &[RAX],
        Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq => &[RAX],
        Mnemonic::Xlatb => &[RAX, RBX],
        Mnemonic::Xsave
        | Mnemonic::Xsave64
        | Mnemonic::Xsaveopt
        | Mnemonic::Xsaveopt64
        | Mnemonic::Xsavec
        | Mnemonic::Xsavec64
        | Mnemonic::Xsaves
        | Mnemonic::Xsaves64
        | Mnemonic::Xrstor
        | Mnemonic::Xrstor64
        | Mnemonic::Xrstors
        | Mnemonic::Xrstors64 => &[RAX, RDX],
        Mnemonic::Enter | Mnemonic::Leave => &[RBP],
        _ => &[],
    }
}

fn conflicts(insn: &Instruction, gpr: usize) -> bool {
    // The stack pointer is also used by signal delivery: never move it.
    if gpr == 4 {
        return true;
    }
    if insn.has_rep_prefix() || insn.has_repne_prefix() {
        // rcx counts the repetitions.
        if gpr == 1 {
            return true;
        }
    }
    for operand in 0..insn.op_count() {
        if insn.op_kind(operand) == OpKind::Register
            && gpr_index(insn.op_register(operand)) == Some(gpr)
        {
            return true;
        }
    }
    implicit_data_registers(insn)
        .iter()
        .any(|&reg| gpr_index(reg) == Some(gpr))
}

/// The registers to rebase so that every memory operand of `insn` that
/// lies in traced memory refers to the alias instead. `traced` says whether
/// an address lies in traced memory. At most two operands (`movs`, `cmps`).
pub fn rebase_targets(
    insn: &Instruction,
    regs: &Regs,
    bus: &mut impl Bus,
    traced: impl Fn(u64) -> bool,
) -> Result<[Option<RebaseTarget>; 2], Refusal> {
    let mut targets = [None, None];
    let mut count = 0usize;
    let size = insn.memory_size().size() as u64;
    for operand in 0..insn.op_count() {
        let target = match insn.op_kind(operand) {
            OpKind::Memory if insn.is_vsib() => {
                // The element addresses come from a vector register: only
                // the base can move, and every element must lie in the
                // base's range.
                let base = insn.memory_base();
                if !base.is_gpr64() {
                    return Err(Refusal::RegisterConflict);
                }
                let value = regs.get(base).ok_or(Refusal::Unsupported)?;
                RebaseTarget {
                    gpr: gpr_index(base).ok_or(Refusal::RegisterConflict)?,
                    addr: value.wrapping_add(insn.memory_displacement64()),
                    divisor: 1,
                    size: 0,
                }
            }
            OpKind::Memory => {
                let addr = effective_address(insn, regs, bus)?;
                if !traced(addr) {
                    continue;
                }
                if insn.is_ip_rel_memory_operand() {
                    return Err(Refusal::RipRelative);
                }
                let base = insn.memory_base();
                let index = insn.memory_index();
                if base != Register::None {
                    if !base.is_gpr64() || base.full_register() == index.full_register() {
                        return Err(Refusal::RegisterConflict);
                    }
                    RebaseTarget {
                        gpr: gpr_index(base).ok_or(Refusal::RegisterConflict)?,
                        addr,
                        divisor: 1,
                        size,
                    }
                } else if index.is_gpr64() {
                    RebaseTarget {
                        gpr: gpr_index(index).ok_or(Refusal::RegisterConflict)?,
                        addr,
                        divisor: u64::from(insn.memory_index_scale()).max(1),
                        size,
                    }
                } else {
                    // An absolute address: nothing to rebase.
                    return Err(Refusal::RegisterConflict);
                }
            }
            kind @ (OpKind::MemorySegRSI | OpKind::MemorySegRDI | OpKind::MemoryESRDI) => {
                let reg = if kind == OpKind::MemorySegRSI {
                    Register::RSI
                } else {
                    Register::RDI
                };
                let addr = regs.get(reg).ok_or(Refusal::Unsupported)?;
                let segment = insn.memory_segment();
                if kind != OpKind::MemoryESRDI && matches!(segment, Register::FS | Register::GS) {
                    return Err(Refusal::Segment);
                }
                if !traced(addr) {
                    continue;
                }
                RebaseTarget {
                    gpr: gpr_index(reg).ok_or(Refusal::Unsupported)?,
                    addr,
                    divisor: 1,
                    size,
                }
            }
            OpKind::MemorySegESI | OpKind::MemorySegEDI | OpKind::MemoryESEDI => {
                return Err(Refusal::Unsupported);
            }
            _ => continue,
        };
        if conflicts(insn, target.gpr) {
            return Err(Refusal::RegisterConflict);
        }
        if let Some(slot) = targets.get_mut(count) {
            *slot = Some(target);
            count += 1;
        }
    }
    if count == 0 {
        return Err(Refusal::Unsupported);
    }
    if let [Some(a), Some(b)] = targets {
        if a.gpr == b.gpr {
            return Err(Refusal::RegisterConflict);
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulate::emulate;
    use crate::emulate::tests::{BASE, bus, decode};

    #[test]
    fn rmw_is_not_emulated_but_can_be_rebased_through_its_base() {
        // add dword [rbx+rcx*4+4], 1
        let insn = decode(&[0x83, 0x44, 0x8b, 0x04, 0x01]);
        let mut regs = Regs::default();
        regs.gpr[3] = BASE;
        regs.gpr[1] = 2;
        let mut bus = bus();
        assert_eq!(
            emulate(&insn, &mut regs, &mut bus),
            Err(Refusal::Unsupported)
        );
        assert!(bus.log.is_empty());
        let targets = rebase_targets(&insn, &regs, &mut bus, |a| a >= BASE).expect("rebasable");
        assert_eq!(
            targets[0],
            Some(RebaseTarget {
                gpr: 3,
                addr: BASE + 12,
                divisor: 1,
                size: 4
            })
        );
        assert_eq!(targets[1], None);
    }

    #[test]
    fn base_register_used_as_data_is_refused() {
        // xchg [rax], rax ; cmpxchg [rax], rcx
        let mut regs = Regs::default();
        regs.gpr[0] = BASE;
        let mut bus = bus();
        for bytes in [&[0x48, 0x87, 0x00][..], &[0x48, 0x0f, 0xb1, 0x08][..]] {
            let insn = decode(bytes);
            assert_eq!(
                rebase_targets(&insn, &regs, &mut bus, |a| a >= BASE),
                Err(Refusal::RegisterConflict),
                "{insn:?}"
            );
        }
    }

    #[test]
    fn movs_rebases_both_string_registers() {
        // rep movsb
        let insn = decode(&[0xf3, 0xa4]);
        let mut regs = Regs::default();
        regs.gpr[6] = BASE;
        regs.gpr[7] = BASE + 32;
        let mut bus = bus();
        let targets = rebase_targets(&insn, &regs, &mut bus, |a| a >= BASE).expect("rebasable");
        assert_eq!(targets.map(|t| t.map(|t| t.gpr)), [Some(7), Some(6)]);
    }
}
