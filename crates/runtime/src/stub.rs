//! Rewriting one instruction so that its memory operand is a scratch buffer.
//!
//! Displaced execution (docs/INSTRUCTIONS.md) lets the CPU run a copy of the faulting
//! instruction whose memory operand is a per-thread scratch buffer. The
//! copy is made from the original bytes: prefixes, REX/VEX/EVEX and opcode
//! are kept, the ModRM memory form (with its SIB byte and displacement) is
//! replaced by `[rip + disp32]` pointing at the scratch, and the immediate
//! bytes follow unchanged. The REX/VEX/EVEX bits that extend a base or
//! index register are cleared, FS/GS overrides and the address-size prefix
//! are dropped (the new operand is flat and 64-bit). Optionally the
//! register in ModRM.reg is renamed (RSP cannot be lent to the copy: the
//! copy runs on the handler's stack).
//!
//! The result is checked by decoding it again: same code, same operands,
//! same immediates, the memory operand at the scratch. Anything else is
//! refused, so an encoding this module does not understand can never run.
//! No allocation, no panic: this runs inside the signal handler.

use iced_x86::{Decoder, DecoderOptions, EncodingKind, Instruction, OpKind, Register};

/// The rewritten instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub bytes: [u8; 16],
    pub len: usize,
}

/// How to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// Where the copy will be placed.
    pub ip: u64,
    /// The address its memory operand must refer to (within ±2 GiB of `ip`).
    pub target: u64,
    /// A new register number (0..=7) for the register in ModRM.reg.
    pub reg_field: Option<u8>,
}

/// Bytes being assembled, at most 15.
struct Out {
    bytes: [u8; 16],
    len: usize,
}

impl Out {
    fn push(&mut self, byte: u8) -> Option<()> {
        let slot = self.bytes.get_mut(self.len)?;
        *slot = byte;
        self.len += 1;
        Some(())
    }

    fn extend(&mut self, bytes: &[u8]) -> Option<()> {
        for &b in bytes {
            self.push(b)?;
        }
        Some(())
    }
}

/// `reg` (a general register of any size) renamed to register number `number`.
pub fn renamed(reg: Register, number: u8) -> Option<Register> {
    let first = if reg.is_gpr64() {
        Register::RAX
    } else if reg.is_gpr32() {
        Register::EAX
    } else if reg.is_gpr16() {
        Register::AX
    } else if reg.is_gpr8() && number < 4 {
        // AL..BL; numbers 4..7 would name AH..BH or SPL..DIL depending on REX.
        Register::AL
    } else {
        return None;
    };
    let index = first as u32 + u32::from(number);
    Register::values().find(|&r| r as u32 == index)
}

/// Where the rewritten memory operand points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// `[rip + disp32]` at this address, the copy placed at `ip`.
    RipRelative { ip: u64, target: u64 },
    /// `fs:[disp32]`: this offset from the thread pointer.
    Fs { offset: i32 },
    /// `[rdx]`.
    Rdx,
}

/// Rewrites `insn` (decoded from `original`) as [`Rewrite`] says; `None`
/// when the encoding is not one this module handles.
pub fn rewrite(original: &[u8], insn: &Instruction, how: &Rewrite) -> Option<Rewritten> {
    let place = Place::RipRelative {
        ip: how.ip,
        target: how.target,
    };
    encode(original, insn, how.reg_field, place)
}

/// Rewrites `insn` (decoded from `original`) with its memory operand at
/// `fs:[offset]`: the patched sites' fast path runs a load this way on a
/// per-thread copy of the value (`tls`).
pub fn rewrite_fs(original: &[u8], insn: &Instruction, offset: i32) -> Option<Rewritten> {
    encode(original, insn, None, Place::Fs { offset })
}

/// Rewrites `insn` (decoded from `original`) with its memory operand at
/// `[rdx]`: the fast path's vector moves make their device access this
/// way, with the alias address in RDX.
pub fn rewrite_rdx(original: &[u8], insn: &Instruction) -> Option<Rewritten> {
    encode(original, insn, None, Place::Rdx)
}

fn encode(
    original: &[u8],
    insn: &Instruction,
    reg_field: Option<u8>,
    place: Place,
) -> Option<Rewritten> {
    let len = insn.len();
    let bytes = original.get(..len)?;
    let mut out = Out {
        bytes: [0; 16],
        len: 0,
    };
    if let Place::Fs { .. } = place {
        out.push(0x64)?;
    }
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x66 => out.push(b)?,
            // The new operand is flat and 64-bit.
            0x64 | 0x65 | 0x67 => {}
            _ => break,
        }
        i += 1;
    }
    let at = |k: usize| bytes.get(k).copied();
    match insn.encoding() {
        EncodingKind::Legacy => {
            let mut b = at(i)?;
            if b & 0xf0 == 0x40 {
                // REX: clear X and B (index and base extensions).
                out.push(b & !0x03)?;
                i += 1;
                b = at(i)?;
            }
            out.push(b)?;
            i += 1;
            if b == 0x0f {
                let second = at(i)?;
                out.push(second)?;
                i += 1;
                if second == 0x38 || second == 0x3a {
                    out.push(at(i)?)?;
                    i += 1;
                } else if second == 0x0f {
                    // 3DNow!: the opcode is an immediate after the operand.
                    return None;
                }
            }
        }
        EncodingKind::VEX => match at(i)? {
            0xc5 => {
                out.extend(&[0xc5, at(i + 1)?, at(i + 2)?])?;
                i += 3;
            }
            0xc4 => {
                // Byte 1 holds ~R ~X ~B in bits 7..5: set ~X and ~B.
                out.extend(&[0xc4, at(i + 1)? | 0x60, at(i + 2)?, at(i + 3)?])?;
                i += 4;
            }
            _ => return None,
        },
        EncodingKind::EVEX => {
            if at(i)? != 0x62 {
                return None;
            }
            // P0 holds ~R ~X ~B ~R' in bits 7..4: set ~X and ~B. ~V' (P2
            // bit 3) extends vvvv outside VSIB forms, which are not handled.
            out.extend(&[0x62, at(i + 1)? | 0x60, at(i + 2)?, at(i + 3)?, at(i + 4)?])?;
            i += 5;
        }
        _ => return None,
    }
    let modrm = at(i)?;
    i += 1;
    let mode = modrm >> 6;
    let rm = modrm & 7;
    if mode == 3 {
        return None;
    }
    let mut displacement = match mode {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if rm == 4 {
        let sib = at(i)?;
        i += 1;
        if mode == 0 && sib & 7 == 5 {
            displacement = 4;
        }
    } else if mode == 0 && rm == 5 {
        displacement = 4;
    }
    i += displacement;
    let trailing = bytes.get(i..)?;
    let reg = match reg_field {
        Some(number) if number < 8 => number,
        Some(_) => return None,
        None => (modrm >> 3) & 7,
    };
    let disp_at = match place {
        Place::RipRelative { .. } => {
            out.push((reg << 3) | 0b101)?;
            out.len
        }
        Place::Fs { .. } => {
            // mod 00, rm 100, SIB: no index, no base: [disp32].
            out.extend(&[(reg << 3) | 0b100, 0x25])?;
            out.len
        }
        Place::Rdx => {
            // mod 00, rm 010: [rdx], no displacement.
            out.push((reg << 3) | 0b010)?;
            out.len
        }
    };
    if place != Place::Rdx {
        out.extend(&[0; 4])?;
    }
    out.extend(trailing)?;
    if out.len > 15 {
        return None;
    }
    let (disp, ip, expected) = match place {
        Place::RipRelative { ip, target } => {
            let end = ip.wrapping_add(out.len as u64);
            (
                i32::try_from(target.wrapping_sub(end) as i64).ok()?,
                ip,
                target,
            )
        }
        Place::Fs { offset } => (offset, 0, offset as i64 as u64),
        Place::Rdx => (0, 0, 0),
    };
    if place != Place::Rdx {
        out.bytes
            .get_mut(disp_at..disp_at + 4)?
            .copy_from_slice(&disp.to_le_bytes());
    }
    let rewritten = Rewritten {
        bytes: out.bytes,
        len: out.len,
    };
    let base = match place {
        Place::RipRelative { .. } => Register::RIP,
        Place::Fs { .. } => Register::None,
        Place::Rdx => Register::RDX,
    };
    let fs = matches!(place, Place::Fs { .. });
    verify(insn, &rewritten, ip, expected, base, fs, reg_field).then_some(rewritten)
}

/// Whether `rewritten` decodes as `insn` with only the memory operand
/// (and the renamed register) changed.
fn verify(
    insn: &Instruction,
    rewritten: &Rewritten,
    ip: u64,
    target: u64,
    base: Register,
    fs: bool,
    reg_field: Option<u8>,
) -> bool {
    let Some(bytes) = rewritten.bytes.get(..rewritten.len) else {
        return false;
    };
    let Ok(mut decoder) = Decoder::try_with_ip(64, bytes, ip, DecoderOptions::NONE) else {
        return false;
    };
    let mut copy = Instruction::default();
    decoder.decode_out(&mut copy);
    if copy.is_invalid()
        || copy.len() != rewritten.len
        || copy.code() != insn.code()
        || copy.op_count() != insn.op_count()
        || copy.memory_size() != insn.memory_size()
        || copy.op_mask() != insn.op_mask()
        || copy.zeroing_masking() != insn.zeroing_masking()
        || copy.is_broadcast() != insn.is_broadcast()
        || copy.has_lock_prefix() != insn.has_lock_prefix()
        || copy.has_rep_prefix() != insn.has_rep_prefix()
        || copy.has_repne_prefix() != insn.has_repne_prefix()
        || copy.memory_base() != base
        || copy.memory_index() != Register::None
        || (fs && copy.segment_prefix() != Register::FS)
        || copy.memory_displacement64() != target
    {
        return false;
    }
    (0..insn.op_count()).all(|op| {
        let kind = insn.op_kind(op);
        if copy.op_kind(op) != kind {
            return false;
        }
        match kind {
            OpKind::Register => {
                // Only a stack-pointer operand may change, into the spare
                // register; no stack-pointer operand may remain.
                let original = insn.op_register(op);
                let now = copy.op_register(op);
                let stack_pointer = |reg: Register| reg.full_register() == Register::RSP;
                match reg_field {
                    Some(number) if stack_pointer(original) => {
                        renamed(original, number) == Some(now)
                    }
                    _ => now == original && !stack_pointer(now),
                }
            }
            OpKind::Memory => true,
            OpKind::Immediate8
            | OpKind::Immediate8_2nd
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => copy.immediate(op) == insn.immediate(op),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    const IP: u64 = 0x7000_0000_1000;
    const TARGET: u64 = 0x7000_0001_2340;

    fn check(bytes: &[u8], reg_field: Option<u8>, expected: &str) {
        let insn = Decoder::with_ip(64, bytes, 0x40_0000, DecoderOptions::NONE).decode();
        assert!(!insn.is_invalid(), "{bytes:02x?}");
        let how = Rewrite {
            ip: IP,
            target: TARGET,
            reg_field,
        };
        let out = rewrite(bytes, &insn, &how).unwrap_or_else(|| panic!("rewrite {insn:?}"));
        let copy = Decoder::with_ip(64, &out.bytes[..out.len], IP, DecoderOptions::NONE).decode();
        let mut text = String::new();
        IntelFormatter::new().format(&copy, &mut text);
        assert_eq!(text, expected, "{insn:?}");
    }

    #[test]
    fn memory_operands_become_rip_relative() {
        // lock add dword [rbx+r12*4+0x10], 7
        check(
            &[0xf0, 0x42, 0x83, 0x44, 0xa3, 0x10, 0x07],
            None,
            "lock add dword ptr [700000012340h],7",
        );
        // xchg [rax], rax  (base also data: fine, the base is gone)
        check(&[0x48, 0x87, 0x00], None, "xchg [700000012340h],rax");
        // bts word [r13+0], 3 (fs:, addr32)
        check(
            &[0x64, 0x67, 0x66, 0x41, 0x0f, 0xba, 0x6d, 0x00, 0x03],
            None,
            "bts word ptr [700000012340h],3",
        );
        // vaddps ymm1, ymm2, [r9+rcx*8-8] (VEX3)
        check(
            &[0xc4, 0xc1, 0x6c, 0x58, 0x4c, 0xc9, 0xf8],
            None,
            "vaddps ymm1,ymm2,[700000012340h]",
        );
        // vmovups [r8+rdx]{k1}, zmm17 (EVEX)
        check(
            &[0x62, 0xa1, 0x7c, 0x49, 0x11, 0x0c, 0x10],
            None,
            "vmovups [700000012340h]{k1},zmm17",
        );
        // cmpxchg16b [rsi]
        check(
            &[0xf0, 0x48, 0x0f, 0xc7, 0x0e],
            None,
            "lock cmpxchg16b [700000012340h]",
        );
        // imul eax, [rbp-4], 0x12345678: the immediate follows the new displacement
        check(
            &[0x69, 0x45, 0xfc, 0x78, 0x56, 0x34, 0x12],
            None,
            "imul eax,[700000012340h],12345678h",
        );
        // fld tbyte [rdi]
        check(&[0xdb, 0x2f], None, "fld st,tbyte ptr [700000012340h]");
    }

    fn check_fs(bytes: &[u8], offset: i32, expected: &str) {
        let insn = Decoder::with_ip(64, bytes, 0x40_0000, DecoderOptions::NONE).decode();
        let out = rewrite_fs(bytes, &insn, offset).unwrap_or_else(|| panic!("rewrite {insn:?}"));
        let copy = Decoder::with_ip(64, &out.bytes[..out.len], IP, DecoderOptions::NONE).decode();
        let mut text = String::new();
        IntelFormatter::new().format(&copy, &mut text);
        assert_eq!(text, expected, "{insn:?}");
    }

    #[test]
    fn memory_operands_become_thread_relative() {
        // mov eax, [rbx+0x100]
        check_fs(
            &[0x8b, 0x83, 0, 1, 0, 0],
            -0x80,
            "mov eax,fs:[0FFFFFFFFFFFFFF80h]",
        );
        // movzx r9d, word [r12+rcx*2+8]
        check_fs(
            &[0x45, 0x0f, 0xb7, 0x4c, 0x4c, 0x08],
            0x40,
            "movzx r9d,word ptr fs:[40h]",
        );
        // cmp dword [rdi+0x10], 0x12345678: the immediate follows
        check_fs(
            &[0x81, 0x7f, 0x10, 0x78, 0x56, 0x34, 0x12],
            -0x1000,
            "cmp dword ptr fs:[0FFFFFFFFFFFFF000h],12345678h",
        );
        // A DS override (a branch hint byte; ignored in 64-bit mode) stays
        // and does not override FS.
        check_fs(&[0x3e, 0x8b, 0x03], 8, "mov eax,fs:[8]");
    }

    #[test]
    fn vector_moves_can_address_rdx() {
        // movdqu xmm9, [r12+rcx*4+0x40] -> movdqu xmm9, [rdx]
        let bytes = [0xf3, 0x45, 0x0f, 0x6f, 0x4c, 0x8c, 0x40];
        let insn = Decoder::new(64, &bytes, DecoderOptions::NONE).decode();
        let out = rewrite_rdx(&bytes, &insn).expect("rewrite");
        let copy = Decoder::new(64, &out.bytes[..out.len], DecoderOptions::NONE).decode();
        let mut text = String::new();
        IntelFormatter::new().format(&copy, &mut text);
        assert_eq!(text, "movdqu xmm9,[rdx]");
        // vmovups [r9+8], ymm3 (VEX3) -> vmovups [rdx], ymm3
        let bytes = [0xc4, 0xc1, 0x7c, 0x11, 0x59, 0x08];
        let insn = Decoder::new(64, &bytes, DecoderOptions::NONE).decode();
        let out = rewrite_rdx(&bytes, &insn).expect("rewrite");
        let copy = Decoder::new(64, &out.bytes[..out.len], DecoderOptions::NONE).decode();
        let mut text = String::new();
        IntelFormatter::new().format(&copy, &mut text);
        assert_eq!(text, "vmovups [rdx],ymm3");
    }

    #[test]
    fn the_reg_field_can_be_renamed() {
        // add [rbx], rsp -> add [scratch], rsi
        check(&[0x48, 0x01, 0x23], Some(6), "add [700000012340h],rsi");
        // cmp spl, [rbx] -> cmp cl, [scratch]
        check(&[0x40, 0x3a, 0x23], Some(1), "cmp cl,[700000012340h]");
    }

    #[test]
    fn register_forms_and_far_targets_are_refused() {
        // add eax, ecx: no memory operand
        let bytes = [0x01, 0xc8];
        let insn = Decoder::new(64, &bytes, DecoderOptions::NONE).decode();
        let how = Rewrite {
            ip: IP,
            target: TARGET,
            reg_field: None,
        };
        assert_eq!(rewrite(&bytes, &insn, &how), None);
        // A target 4 GiB away cannot be reached with disp32.
        let bytes = [0x01, 0x03];
        let insn = Decoder::new(64, &bytes, DecoderOptions::NONE).decode();
        let far = Rewrite {
            target: IP + (4 << 30),
            ..how
        };
        assert_eq!(rewrite(&bytes, &insn, &far), None);
    }
}
