//! The MOV family and the other one-access forms: loads and stores,
//! compares, `movbe`, `push`/`pop`/`call`/`jmp` through memory,
//! `movdir64b`.

use iced_x86::Instruction;

use super::forms::{Extend, Plan, Source, plan};
use super::string::{emulate_string, emulate_string_compare};
use super::{
    Bus, RSP, Refusal, Regs, advance, effective_address, gpr, gpr_slot, sign_extend, width_mask,
};
use crate::alu;

/// Emulates `insn` if it is one of the forms the emulator knows (the MOV
/// family and the `movs`/`stos`/`lods` string instructions): performs its
/// memory accesses through `bus`, updates the registers and advances `rip`.
/// On `Err`, neither `regs` nor memory were touched.
pub fn emulate(insn: &Instruction, regs: &mut Regs, bus: &mut impl Bus) -> Result<(), Refusal> {
    let plan = plan(insn).ok_or(Refusal::Unsupported)?;
    match plan {
        Plan::Store { width, source } => {
            let addr = effective_address(insn, regs, bus)?;
            let value = match source {
                Source::Register(reg) => regs.get(reg).ok_or(Refusal::Unsupported)?,
                Source::Immediate(value) => value,
            } & width_mask(width);
            bus.store(addr, width, value)?;
        }
        Plan::Load {
            width,
            dest,
            extend,
        } => {
            let addr = effective_address(insn, regs, bus)?;
            // Checked before the load: a refused instruction must not have
            // touched the device.
            gpr_slot(dest).ok_or(Refusal::Unsupported)?;
            let value = bus.load(addr, width)? & width_mask(width);
            let extended = match extend {
                Extend::None | Extend::Zero => value,
                Extend::Sign => sign_extend(value, width),
            };
            regs.set(dest, extended).ok_or(Refusal::Unsupported)?;
        }
        Plan::String { op, width, rep } => return emulate_string(insn, regs, bus, op, width, rep),
        Plan::Compare {
            op,
            width,
            memory_first,
            other,
        } => {
            let addr = effective_address(insn, regs, bus)?;
            let other = match other {
                Source::Register(reg) => regs.get(reg).ok_or(Refusal::Unsupported)?,
                Source::Immediate(value) => value,
            } & width_mask(width);
            let memory = bus.load(addr, width)? & width_mask(width);
            let (a, b) = if memory_first {
                (memory, other)
            } else {
                (other, memory)
            };
            regs.rflags = alu::merge(regs.rflags, alu::flags(op, width, a, b));
        }
        Plan::Movbe { width, reg, load } => {
            let addr = effective_address(insn, regs, bus)?;
            let shift = 64 - 8 * u32::from(width);
            if load {
                let value = bus.load(addr, width)?;
                regs.set(reg, value.swap_bytes() >> shift)
                    .ok_or(Refusal::Unsupported)?;
            } else {
                let value = regs.get(reg).ok_or(Refusal::Unsupported)?;
                bus.store(addr, width, value.swap_bytes() >> shift)?;
            }
        }
        Plan::Push { width } => {
            // The address is computed before RSP moves (Intel SDM, PUSH).
            let addr = effective_address(insn, regs, bus)?;
            let slot = gpr(regs, RSP).wrapping_sub(u64::from(width));
            bus.check(slot, width, true)?;
            let value = bus.load(addr, width)?;
            bus.store(slot, width, value)?;
            advance(regs, RSP, 0u64.wrapping_sub(u64::from(width)));
        }
        Plan::Pop { width } => {
            let top = gpr(regs, RSP);
            // The address is computed after RSP moves (Intel SDM, POP).
            let mut moved = *regs;
            advance(&mut moved, RSP, u64::from(width));
            let addr = effective_address(insn, &moved, bus)?;
            bus.check(top, width, false)?;
            bus.check(addr, width, true)?;
            let value = bus.load(top, width)?;
            bus.store(addr, width, value)?;
            *regs = moved;
        }
        Plan::Branch { call } => {
            let addr = effective_address(insn, regs, bus)?;
            if call {
                let slot = gpr(regs, RSP).wrapping_sub(8);
                bus.check(slot, 8, true)?;
                let target = bus.load(addr, 8)?;
                bus.store(slot, 8, insn.next_ip())?;
                advance(regs, RSP, 0u64.wrapping_sub(8));
                regs.rip = target;
            } else {
                regs.rip = bus.load(addr, 8)?;
            }
            return Ok(());
        }
        Plan::StringCompare {
            scas,
            width,
            repeat,
        } => return emulate_string_compare(insn, regs, bus, scas, width, repeat),
        Plan::Movdir64b { dest } => {
            // One 64-byte read of the source, one 64-byte write of the
            // destination (the CPU writes it as one direct store).
            let source = effective_address(insn, regs, bus)?;
            let dest = regs.get(dest).ok_or(Refusal::Unsupported)?;
            bus.check_bytes(source, 64, false)?;
            bus.check_bytes(dest, 64, true)?;
            let mut bytes = [0u8; 64];
            bus.load_bytes(source, &mut bytes)?;
            bus.store_bytes(dest, &bytes)?;
        }
    }
    regs.rip = insn.next_ip();
    Ok(())
}
