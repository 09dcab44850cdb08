//! Vector moves to or from memory, on the registers in [`Vectors`].

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::{Bus, Refusal, Regs, Vectors, effective_address};

/// A vector move to or from memory: which register bytes it covers.
#[derive(Debug, Clone, Copy)]
struct VectorMove {
    reg: Register,
    load: bool,
    width: usize,
    /// First register byte the memory bytes go to or come from.
    at: usize,
    /// A load zeroes the register bytes from `at + width` up to this.
    zero_to: usize,
}

fn vector_move(insn: &Instruction) -> Option<VectorMove> {
    if insn.op_count() != 2 || insn.op_mask() != Register::None || insn.is_broadcast() {
        return None;
    }
    let (load, reg) = match (insn.op0_kind(), insn.op1_kind()) {
        (OpKind::Register, OpKind::Memory) => (true, insn.op0_register()),
        (OpKind::Memory, OpKind::Register) => (false, insn.op1_register()),
        _ => return None,
    };
    if !(reg.is_xmm() || reg.is_ymm() || reg.is_zmm()) {
        return None;
    }
    let width = insn.memory_size().size();
    // Legacy SSE loads keep the bits above 128; VEX and EVEX loads zero
    // everything above what they write (up to the widest register).
    let legacy = insn.encoding() == iced_x86::EncodingKind::Legacy;
    let full = if legacy { 16 } else { 64 };
    use Mnemonic::*;
    let (at, zero_to) = match insn.mnemonic() {
        Movdqa | Movdqu | Movaps | Movups | Movapd | Movupd | Lddqu | Movntdqa | Movntdq
        | Movntps | Movntpd | Vmovdqa | Vmovdqu | Vmovaps | Vmovups | Vmovapd | Vmovupd
        | Vlddqu | Vmovntdqa | Vmovntdq | Vmovntps | Vmovntpd | Vmovdqa32 | Vmovdqa64
        | Vmovdqu8 | Vmovdqu16 | Vmovdqu32 | Vmovdqu64 => (0, full),
        // Scalar loads zero the rest of the XMM register too.
        Movss | Movsd | Movd | Movq | Vmovss | Vmovsd | Vmovd | Vmovq => (0, full),
        // Loads into one half, keeping the other (only the legacy forms
        // have two operands; VEX loads merge from a third).
        Movlps | Movlpd | Vmovlps | Vmovlpd => (0, if load && legacy { 8 } else { full }),
        Movhps | Movhpd | Vmovhps | Vmovhpd => (8, if load && legacy { 16 } else { full }),
        _ => return None,
    };
    if load && !legacy && matches!(at, 8) {
        return None;
    }
    if !matches!(width, 4 | 8 | 16 | 32 | 64) || at + width > 64 {
        return None;
    }
    Some(VectorMove {
        reg,
        load,
        width,
        at,
        zero_to: zero_to.max(at + width),
    })
}

/// Emulates a vector move to or from memory (the SSE/AVX/AVX-512 MOV
/// family, `movd`/`movq` with an XMM register), unmasked: performs the one
/// access through `bus` and updates the register in `vectors`. On `Err`,
/// neither the registers nor memory were touched.
pub fn emulate_vector(
    insn: &Instruction,
    regs: &mut Regs,
    vectors: &mut impl Vectors,
    bus: &mut impl Bus,
) -> Result<(), Refusal> {
    let plan = vector_move(insn).ok_or(Refusal::Unsupported)?;
    let addr = effective_address(insn, regs, bus)?;
    let mut register = [0u8; 64];
    let end = plan.at + plan.width;
    // Reading every byte the move may write proves that the register can
    // be written, before the device is read.
    let covered = if plan.load { plan.zero_to } else { end };
    vectors
        .read(
            plan.reg,
            register.get_mut(..covered).ok_or(Refusal::Unsupported)?,
        )
        .ok_or(Refusal::Unsupported)?;
    let bytes = register.get_mut(plan.at..end).ok_or(Refusal::Unsupported)?;
    if plan.load {
        bus.check_bytes(addr, plan.width, false)?;
        bus.load_bytes(addr, bytes)?;
        let value = register.get(..end).ok_or(Refusal::Unsupported)?;
        vectors
            .write(plan.reg, value, plan.zero_to)
            .ok_or(Refusal::Unsupported)?;
    } else {
        bus.store_bytes(addr, bytes)?;
    }
    regs.rip = insn.next_ip();
    Ok(())
}
