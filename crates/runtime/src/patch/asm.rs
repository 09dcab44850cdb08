//! A small x86-64 assembler for the trampolines: the few instruction
//! forms they use, encoded into a fixed buffer (no allocation: trampolines
//! are written in the SIGSEGV handler).

use super::TRAMPOLINE;

/// Machine code for one trampoline, at a known address.
pub struct Asm {
    at: u64,
    pub buf: [u8; TRAMPOLINE],
    pub len: usize,
}

impl Asm {
    pub fn new(at: u64) -> Asm {
        Asm {
            at,
            buf: [0; TRAMPOLINE],
            len: 0,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    pub fn here(&self) -> u64 {
        self.at + self.len as u64
    }

    pub fn emit(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
            }
            self.len += 1;
        }
    }

    pub fn push(&mut self, reg: u8) {
        if reg >= 8 {
            self.emit(&[0x41]);
        }
        self.emit(&[0x50 + (reg & 7)]);
    }

    pub fn pop(&mut self, reg: u8) {
        if reg >= 8 {
            self.emit(&[0x41]);
        }
        self.emit(&[0x58 + (reg & 7)]);
    }

    pub fn mov_imm64(&mut self, reg: u8, value: u64) {
        self.emit(&[0x48 | (reg >> 3), 0xb8 + (reg & 7)]);
        self.emit(&value.to_le_bytes());
    }

    /// `lea rsp, [rsp + delta]` (flags untouched).
    pub fn lea_rsp(&mut self, delta: i32) {
        self.emit(&[0x48, 0x8d, 0xa4, 0x24]);
        self.emit(&delta.to_le_bytes());
    }

    /// `jmp rel32` to `target`, `None` out of reach.
    pub fn jmp(&mut self, target: u64) -> Option<()> {
        let rel = i32::try_from(target as i64 - (self.here() as i64 + 5)).ok()?;
        self.emit(&[0xe9]);
        self.emit(&rel.to_le_bytes());
        Some(())
    }

    /// A `jcc rel32` (`cc` the low nibble of the 0F 8x opcode) whose target
    /// is filled in by [`Asm::bind`]; returns where its rel32 is.
    pub fn jcc_forward(&mut self, cc: u8) -> usize {
        self.emit(&[0x0f, 0x80 | cc, 0, 0, 0, 0]);
        self.len - 4
    }

    /// A `jmp rel32` whose target is filled in by [`Asm::bind`]; returns
    /// where its rel32 is.
    pub fn jmp_forward(&mut self) -> usize {
        self.emit(&[0xe9, 0, 0, 0, 0]);
        self.len - 4
    }

    pub fn bind(&mut self, rel_at: usize) {
        let rel = (self.len as i64 - (rel_at as i64 + 4)) as i32;
        for (i, b) in rel.to_le_bytes().iter().enumerate() {
            if let Some(slot) = self.buf.get_mut(rel_at + i) {
                *slot = *b;
            }
        }
    }

    /// `mov eax, mask_lo; mov edx, mask_hi`: the component mask of
    /// XSAVE, XSAVEC and XRSTOR.
    pub fn xsave_mask(&mut self, mask: u64) {
        self.emit(&[0xb8]);
        self.emit(&(mask as u32).to_le_bytes());
        self.emit(&[0xba]);
        self.emit(&((mask >> 32) as u32).to_le_bytes());
    }

    /// The saved registers back from the block on the stack, the flags,
    /// and the stack pointer above the red zone.
    pub fn restore(&mut self) {
        for reg in 0..16u8 {
            if reg == 4 {
                self.lea_rsp(8);
            } else {
                self.pop(reg);
            }
        }
        self.lea_rsp(8);
        self.emit(&[0x9d]);
        self.lea_rsp(128);
    }
}

/// A memory operand of the forms the trampolines use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mem {
    /// `[reg + disp32]`.
    Base(u8, i32),
    /// `fs:[disp32]`: the thread block (`tls`).
    Fs(i32),
}

/// Operand size of an instruction: `Byte` and `Word` take their prefix
/// or opcode from the caller, `Quad` sets REX.W.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Byte,
    Word,
    Dword,
    Quad,
}

impl Size {
    pub fn of_width(width: usize) -> Option<Size> {
        match width {
            1 => Some(Size::Byte),
            2 => Some(Size::Word),
            4 => Some(Size::Dword),
            8 => Some(Size::Quad),
            _ => None,
        }
    }
}

impl Asm {
    /// REX (when needed or `force`), then `opcode`: the prefix part of an
    /// instruction whose ModRM names `reg` and `rm` (register numbers
    /// 0..=15; `rm` 0 for a memory operand without a base).
    fn rex_opcode(&mut self, size: Size, force: bool, opcode: &[u8], reg: u8, rm: u8) {
        if size == Size::Word {
            self.emit(&[0x66]);
        }
        let w = u8::from(size == Size::Quad) << 3;
        let rex = 0x40 | w | ((reg >> 3) << 2) | (rm >> 3);
        if rex != 0x40 || force {
            self.emit(&[rex]);
        }
        self.emit(opcode);
    }

    /// `opcode` with ModRM `reg` and the memory operand `mem`. `force_rex`
    /// for byte registers 4..=7 (SPL..DIL rather than AH..BH).
    pub fn op_mem(&mut self, size: Size, force_rex: bool, opcode: &[u8], reg: u8, mem: Mem) {
        match mem {
            Mem::Base(base, disp) => {
                self.rex_opcode(size, force_rex, opcode, reg, base);
                self.emit(&[0x80 | ((reg & 7) << 3) | (base & 7)]);
                if base & 7 == 4 {
                    self.emit(&[0x24]);
                }
                self.emit(&disp.to_le_bytes());
            }
            Mem::Fs(disp) => {
                self.emit(&[0x64]);
                self.rex_opcode(size, force_rex, opcode, reg, 0);
                self.emit(&[0x04 | ((reg & 7) << 3), 0x25]);
                self.emit(&disp.to_le_bytes());
            }
        }
    }

    /// `opcode` with ModRM `reg` and the register `rm` (mod 11).
    pub fn op_reg(&mut self, size: Size, force_rex: bool, opcode: &[u8], reg: u8, rm: u8) {
        self.rex_opcode(size, force_rex, opcode, reg, rm);
        self.emit(&[0xc0 | ((reg & 7) << 3) | (rm & 7)]);
    }

    /// `mov reg64, [mem]`.
    pub fn load64(&mut self, reg: u8, mem: Mem) {
        self.op_mem(Size::Quad, false, &[0x8b], reg, mem);
    }

    /// `mov [mem], reg64`.
    pub fn store64(&mut self, mem: Mem, reg: u8) {
        self.op_mem(Size::Quad, false, &[0x89], reg, mem);
    }

    /// `mov byte [mem], imm8`.
    pub fn store_byte_imm(&mut self, mem: Mem, value: u8) {
        self.op_mem(Size::Dword, false, &[0xc6], 0, mem);
        self.emit(&[value]);
    }

    /// `cmp byte [mem], imm8`.
    pub fn cmp_byte_imm(&mut self, mem: Mem, value: u8) {
        self.op_mem(Size::Dword, false, &[0x80], 7, mem);
        self.emit(&[value]);
    }

    /// `cmp dword [mem], imm32`.
    pub fn cmp_dword_imm(&mut self, mem: Mem, value: u32) {
        self.op_mem(Size::Dword, false, &[0x81], 7, mem);
        self.emit(&value.to_le_bytes());
    }

    /// `test dword [mem], imm32`.
    pub fn test_dword_imm(&mut self, mem: Mem, value: u32) {
        self.op_mem(Size::Dword, false, &[0xf7], 0, mem);
        self.emit(&value.to_le_bytes());
    }

    /// `mov dst64, src64`.
    pub fn mov_reg(&mut self, dst: u8, src: u8) {
        self.op_reg(Size::Quad, false, &[0x89], src, dst);
    }

    /// `test reg64, reg64`.
    pub fn test_self(&mut self, reg: u8) {
        self.op_reg(Size::Quad, false, &[0x85], reg, reg);
    }

    /// `op reg64, [mem]` for the ALU opcodes `add` (0x03), `sub` (0x2b),
    /// `and` (0x23) and `cmp` (0x3b).
    pub fn alu_load(&mut self, opcode: u8, reg: u8, mem: Mem) {
        self.op_mem(Size::Quad, false, &[opcode], reg, mem);
    }

    /// `lea dst64, [base + disp32]`.
    pub fn lea(&mut self, dst: u8, base: u8, disp: i32) {
        self.op_mem(Size::Quad, false, &[0x8d], dst, Mem::Base(base, disp));
    }

    /// `shl reg64, imm8`.
    pub fn shl(&mut self, reg: u8, count: u8) {
        self.op_reg(Size::Quad, false, &[0xc1], 4, reg);
        self.emit(&[count]);
    }

    /// `mov qword [mem], simm32`.
    pub fn store64_imm(&mut self, mem: Mem, value: i32) {
        self.op_mem(Size::Quad, false, &[0xc7], 0, mem);
        self.emit(&value.to_le_bytes());
    }

    /// One load of `size` from `[mem]` into `reg`, zero-extended to 64 bits.
    pub fn load_zero_extended(&mut self, size: Size, reg: u8, mem: Mem) {
        match size {
            Size::Byte => self.op_mem(Size::Dword, false, &[0x0f, 0xb6], reg, mem),
            Size::Word => self.op_mem(Size::Dword, false, &[0x0f, 0xb7], reg, mem),
            Size::Dword => self.op_mem(Size::Dword, false, &[0x8b], reg, mem),
            Size::Quad => self.op_mem(Size::Quad, false, &[0x8b], reg, mem),
        }
    }

    /// One store of the low `size` of `reg` to `[mem]`.
    pub fn store_sized(&mut self, size: Size, mem: Mem, reg: u8) {
        match size {
            Size::Byte => self.op_mem(Size::Dword, true, &[0x88], reg, mem),
            Size::Word | Size::Dword | Size::Quad => self.op_mem(size, false, &[0x89], reg, mem),
        }
    }

    /// `reg` zero-extended from its low `size`.
    pub fn zero_extend(&mut self, size: Size, reg: u8) {
        match size {
            Size::Byte => self.op_reg(Size::Dword, true, &[0x0f, 0xb6], reg, reg),
            Size::Word => self.op_reg(Size::Dword, false, &[0x0f, 0xb7], reg, reg),
            Size::Dword => self.op_reg(Size::Dword, false, &[0x89], reg, reg),
            Size::Quad => {}
        }
    }
}
