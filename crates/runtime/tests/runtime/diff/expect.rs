//! What the trace must hold for a case.
//!
//! Accesses are derived from the instruction where that is mechanical
//! (iced's operand access and memory size), with the rules the runtime
//! documents in docs/INSTRUCTIONS.md written out here once more:
//! `cmpxchg*` always writes, masked loads and stores access exactly their
//! selected elements, `bt*` with a register offset accesses the word the
//! offset selects, cache hints access nothing. Then each access is split
//! where it crosses mappings and into power-of-two pieces.

use iced_x86::{Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register};

use super::Access;
use super::layout::{self, Place};
use super::xstate::Layout;

fn gpr_value(gpr: &[u64; 16], reg: Register) -> u64 {
    let full = reg.full_register();
    let index = full as usize - Register::RAX as usize;
    let value = gpr[index];
    if matches!(
        reg,
        Register::AH | Register::CH | Register::DH | Register::BH
    ) {
        (value >> 8) & 0xff
    } else if reg.is_gpr8() {
        value & 0xff
    } else if reg.is_gpr32() {
        value & 0xffff_ffff
    } else if reg.is_gpr16() {
        value & 0xffff
    } else {
        value
    }
}

/// The effective address of the explicit memory operand (FS/GS bases are
/// taken as 0: the harness never sets them).
pub fn effective_address(insn: &Instruction, gpr: &[u64; 16]) -> u64 {
    let mut addr = insn.memory_displacement64();
    let base = insn.memory_base();
    if base != Register::None && base != Register::RIP {
        addr = addr.wrapping_add(gpr_value(gpr, base));
    }
    let index = insn.memory_index();
    if index != Register::None {
        addr = addr
            .wrapping_add(gpr_value(gpr, index).wrapping_mul(u64::from(insn.memory_index_scale())));
    }
    addr
}

fn vector_number(reg: Register) -> usize {
    let first = if reg.is_xmm() {
        Register::XMM0
    } else if reg.is_ymm() {
        Register::YMM0
    } else {
        Register::ZMM0
    };
    reg as usize - first as usize
}

fn elements(addr: u64, size: usize, element: usize, selected: u64, write: bool) -> Vec<Access> {
    (0..size / element)
        .filter(|&i| i < 64 && selected & (1 << i) != 0)
        .map(|i| Access {
            write,
            addr: addr + (i * element) as u64,
            len: element,
        })
        .collect()
}

/// The accesses of one instruction with an explicit memory operand, the
/// registers as `gpr` and the vector state as `area` say.
pub fn derive(
    insn: &Instruction,
    gpr: &[u64; 16],
    layout: &Layout,
    area: &[u8],
    info: &mut InstructionInfoFactory,
) -> Vec<Access> {
    let Some(memory_op) = (0..insn.op_count()).find(|&i| insn.op_kind(i) == OpKind::Memory) else {
        return Vec::new();
    };
    use Mnemonic::*;
    if matches!(
        insn.mnemonic(),
        Clflush
            | Clflushopt
            | Clwb
            | Cldemote
            | Prefetch
            | Prefetchw
            | Prefetchnta
            | Prefetcht0
            | Prefetcht1
            | Prefetcht2
            | Prefetchwt1
            | Lea
            | Nop
    ) {
        return Vec::new();
    }
    let addr = effective_address(insn, gpr);
    let size = insn.memory_size().size();
    let element = insn.memory_size().element_size().max(1);
    if matches!(insn.mnemonic(), Bt | Bts | Btr | Btc) && insn.op1_kind() == OpKind::Register {
        let bits = 8 * size as i64;
        let raw = gpr_value(gpr, insn.op1_register());
        let offset = match size {
            2 => i64::from(raw as u16 as i16),
            4 => i64::from(raw as u32 as i32),
            _ => raw as i64,
        };
        let word = addr.wrapping_add((offset.div_euclid(bits) * size as i64) as u64);
        let mut out = vec![Access::read(word, size)];
        if insn.mnemonic() != Bt {
            out.push(Access::write(word, size));
        }
        return out;
    }
    let vex_masked = matches!(
        insn.mnemonic(),
        Vmaskmovps | Vmaskmovpd | Vpmaskmovd | Vpmaskmovq
    );
    let selector_mask = || {
        let bytes = layout.vector(area, vector_number(insn.op1_register()));
        let mut mask = 0u64;
        for i in 0..size / element {
            if bytes[(i + 1) * element - 1] & 0x80 != 0 {
                mask |= 1 << i;
            }
        }
        mask
    };
    let k = if insn.op_mask() == Register::None {
        None
    } else {
        Some(layout.opmask(area, insn.op_mask() as usize - Register::K0 as usize))
    };
    let access = info.info(insn).op_access(memory_op);
    match access {
        OpAccess::Read | OpAccess::CondRead => {
            if vex_masked {
                elements(addr, size, element, selector_mask(), false)
            } else if let (Some(k), false, true) =
                (k, insn.is_broadcast(), masked_move(insn.mnemonic()))
            {
                elements(addr, size, element, k, false)
            } else {
                vec![Access::read(addr, size)]
            }
        }
        OpAccess::Write if matches!(insn.mnemonic(), Fxsave | Fxsave64) => {
            let (from, to) = fxsave_written();
            vec![Access::write(addr + from as u64, to - from)]
        }
        OpAccess::Write => {
            if vex_masked {
                elements(addr, size, element, selector_mask(), true)
            } else {
                vec![Access::write(addr, size)]
            }
        }
        OpAccess::CondWrite => {
            let k = k.expect("a conditional write is a masked one");
            if matches!(
                insn.mnemonic(),
                Vcompressps | Vcompresspd | Vpcompressd | Vpcompressq | Vpcompressb | Vpcompressw
            ) {
                let low = |n: usize| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
                let count = (k & low(size / element)).count_ones() as usize;
                let mask = low(count);
                elements(addr, size, element, mask, true)
            } else {
                elements(addr, size, element, k, true)
            }
        }
        OpAccess::ReadWrite | OpAccess::ReadCondWrite => {
            vec![Access::read(addr, size), Access::write(addr, size)]
        }
        OpAccess::NoMemAccess => Vec::new(),
        other => panic!("{insn:?}: memory access {other:?}"),
    }
}

/// The bytes `fxsave64` writes on this CPU (it leaves the reserved and
/// software-available bytes alone; how many of them depends on the CPU),
/// measured on two differently filled buffers.
pub fn fxsave_written() -> (usize, usize) {
    #[repr(C, align(64))]
    struct Area([u8; 512]);
    let mut a = Area([0x00; 512]);
    let mut b = Area([0xff; 512]);
    for area in [&mut a, &mut b] {
        // SAFETY: fxsave64 writes at most 512 bytes into a 64-aligned buffer.
        unsafe { std::arch::asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack)) };
    }
    let written: Vec<usize> = (0..512)
        .filter(|&i| a.0[i] != 0x00 || b.0[i] != 0xff)
        .collect();
    let (from, to) = (written[0], written[written.len() - 1] + 1);
    assert_eq!(written.len(), to - from, "fxsave64 writes one run of bytes");
    (from, to)
}

/// The masked loads that read only their selected elements.
pub fn masked_move(mnemonic: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        mnemonic,
        Vmovups
            | Vmovaps
            | Vmovupd
            | Vmovapd
            | Vmovdqu8
            | Vmovdqu16
            | Vmovdqu32
            | Vmovdqu64
            | Vmovdqa32
            | Vmovdqa64
            | Vmovss
            | Vmovsd
    )
}

/// One trace event as the test prints and compares it: `R A 4 1f0 deadbeef`.
pub fn event(write: bool, place: Place, bytes: &[u8]) -> String {
    let (map, offset) = match place {
        Place::A(offset) => ("A", offset),
        Place::B(offset) => ("B", offset),
        Place::Untraced => unreachable!("untraced parts are not logged"),
    };
    format!(
        "{} {map} {} {offset:x} {}",
        if write { "W" } else { "R" },
        bytes.len(),
        hex(bytes)
    )
}

/// Bytes in memory order as one hex number (most significant byte first).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().rev().map(|b| format!("{b:02x}")).collect()
}

/// The events one access produces: one per piece of a traced part, the
/// pieces being the largest powers of two up to `max_chunk`, in address
/// order. `value(addr, len)` gives the bytes.
pub fn events(
    access: &Access,
    max_chunk: usize,
    value: impl Fn(u64, usize) -> Vec<u8>,
) -> Vec<String> {
    let mut out = Vec::new();
    let end = access.addr + access.len as u64;
    let mut at = access.addr;
    while at < end {
        // Parts end at page boundaries (mappings are whole pages).
        let part_end = ((at / layout::PAGE + 1) * layout::PAGE).min(end);
        let place = layout::place(at);
        // Merge following pages of the same mapping.
        let mut stop = part_end;
        while stop < end && same_mapping(layout::place(stop), place) {
            stop = ((stop / layout::PAGE + 1) * layout::PAGE).min(end);
        }
        if place != Place::Untraced {
            let mut piece = at;
            while piece < stop {
                let left = (stop - piece) as usize;
                let width = 1usize << (usize::BITS - 1 - left.min(max_chunk).leading_zeros());
                out.push(event(
                    access.write,
                    layout::place(piece),
                    &value(piece, width),
                ));
                piece += width as u64;
            }
        }
        at = stop;
    }
    out
}

fn same_mapping(a: Place, b: Place) -> bool {
    matches!(
        (a, b),
        (Place::A(_), Place::A(_))
            | (Place::B(_), Place::B(_))
            | (Place::Untraced, Place::Untraced)
    )
}
