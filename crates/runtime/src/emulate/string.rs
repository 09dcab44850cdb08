//! String instructions, the whole `rep` in one call.

use iced_x86::{Instruction, Register};

use super::forms::{Repeat, StringOp};
use super::{Bus, DF, RCX, RDI, RSI, Refusal, Regs, StringRun, ZF, advance, gpr, width_mask};
use crate::alu::{self, Compare};

/// `cmps`/`scas`, the whole `repe`/`repne` in one call, stopping early as
/// [`emulate_string`] does when an element cannot be done.
pub(super) fn emulate_string_compare(
    insn: &Instruction,
    regs: &mut Regs,
    bus: &mut impl Bus,
    scas: Option<Register>,
    width: u8,
    repeat: Repeat,
) -> Result<(), Refusal> {
    if insn.memory_base() != Register::None && !insn.memory_base().is_gpr64() {
        return Err(Refusal::Unsupported);
    }
    let step = if regs.rflags & DF != 0 {
        0u64.wrapping_sub(u64::from(width))
    } else {
        u64::from(width)
    };
    let segment = insn.memory_segment();
    let source_base = if scas.is_none() && (segment == Register::FS || segment == Register::GS) {
        bus.segment_base(segment).ok_or(Refusal::Segment)?
    } else {
        0
    };
    let mut done = 0u64;
    loop {
        if repeat != Repeat::Once && gpr(regs, RCX) == 0 {
            break;
        }
        let source = source_base.wrapping_add(gpr(regs, RSI));
        let dest = gpr(regs, RDI);
        let checked = match scas {
            None => bus
                .check(source, width, false)
                .and_then(|()| bus.check(dest, width, false)),
            Some(_) => bus.check(dest, width, false),
        };
        if let Err(refusal) = checked {
            if done == 0 {
                return Err(refusal);
            }
            return Ok(());
        }
        let (a, b) = match scas {
            None => {
                let a = bus.load(source, width)?;
                let b = bus.load(dest, width)?;
                advance(regs, RSI, step);
                (a, b)
            }
            Some(reg) => {
                let a = regs.get(reg).ok_or(Refusal::Unsupported)?;
                (a, bus.load(dest, width)?)
            }
        };
        advance(regs, RDI, step);
        let flags = alu::flags(
            Compare::Cmp,
            width,
            a & width_mask(width),
            b & width_mask(width),
        );
        regs.rflags = alu::merge(regs.rflags, flags);
        done += 1;
        if repeat == Repeat::Once {
            break;
        }
        advance(regs, RCX, u64::MAX);
        let equal = regs.rflags & ZF != 0;
        if (repeat == Repeat::WhileEqual) != equal {
            break;
        }
    }
    regs.rip = insn.next_ip();
    Ok(())
}

/// A string instruction, the whole `rep` in one call, not one fault per
/// element. Each
/// element is checked before any of its accesses is made; if a later
/// element cannot be done, the registers describe the elements done so far
/// and `rip` stays, so the instruction resumes from there (and faults again).
pub(super) fn emulate_string(
    insn: &Instruction,
    regs: &mut Regs,
    bus: &mut impl Bus,
    op: StringOp,
    width: u8,
    rep: bool,
) -> Result<(), Refusal> {
    if insn.memory_base() != Register::None && !insn.memory_base().is_gpr64() {
        // 32-bit addressing (esi/edi).
        return Err(Refusal::Unsupported);
    }
    let step = if regs.rflags & DF != 0 {
        u64::from(width).wrapping_neg()
    } else {
        u64::from(width)
    };
    let count = if rep { gpr(regs, RCX) } else { 1 };
    let segment = insn.memory_segment();
    let source_base = if segment == Register::FS || segment == Register::GS {
        bus.segment_base(segment).ok_or(Refusal::Segment)?
    } else {
        0
    };
    let mut done = 0u64;
    while done < count {
        let source = source_base.wrapping_add(gpr(regs, RSI));
        let dest = gpr(regs, RDI);
        // As many elements as the bus can do in one go (the rest of a
        // page, logged in one batch), then one at a time where it cannot.
        let run = match op {
            StringOp::Movs => Some(StringRun::Movs { source }),
            StringOp::Stos(reg) => Some(StringRun::Stos {
                value: regs.get(reg).ok_or(Refusal::Unsupported)? & width_mask(width),
            }),
            StringOp::Lods(_) => None,
        };
        if let Some(run) = run {
            let ran = bus
                .string_run(run, dest, width, count - done, regs.rflags & DF != 0)
                .min(count - done);
            if ran > 0 {
                let span = step.wrapping_mul(ran);
                if matches!(op, StringOp::Movs) {
                    advance(regs, RSI, span);
                }
                advance(regs, RDI, span);
                if rep {
                    advance(regs, RCX, ran.wrapping_neg());
                }
                done += ran;
                continue;
            }
        }
        let checked = match op {
            StringOp::Movs => bus
                .check(source, width, false)
                .and_then(|()| bus.check(dest, width, true)),
            StringOp::Stos(_) => bus.check(dest, width, true),
            StringOp::Lods(_) => bus.check(source, width, false),
        };
        if let Err(refusal) = checked {
            if done == 0 {
                return Err(refusal);
            }
            return Ok(());
        }
        match op {
            StringOp::Movs => {
                let value = bus.load(source, width)?;
                bus.store(dest, width, value)?;
                advance(regs, RSI, step);
                advance(regs, RDI, step);
            }
            StringOp::Stos(reg) => {
                let value = regs.get(reg).ok_or(Refusal::Unsupported)?;
                bus.store(dest, width, value & width_mask(width))?;
                advance(regs, RDI, step);
            }
            StringOp::Lods(reg) => {
                let value = bus.load(source, width)?;
                regs.set(reg, value).ok_or(Refusal::Unsupported)?;
                advance(regs, RSI, step);
            }
        }
        if rep {
            advance(regs, RCX, u64::MAX);
        }
        done += 1;
    }
    regs.rip = insn.next_ip();
    Ok(())
}
