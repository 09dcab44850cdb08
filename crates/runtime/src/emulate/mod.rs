//! Emulation of one decoded instruction over a register file and a [`Bus`].
//!
//! Nothing here knows about signals: the SIGSEGV handler fills a [`Regs`]
//! from the signal context, and a later patched-trampoline path can fill it
//! from its own save area. The bus decides where an address really lives
//! (the alias) and performs each access exactly once.
//!
//! - `forms`: which forms the emulator knows, decoded into a plan;
//! - `scalar`: [`emulate`], the MOV family, compares, `movbe`,
//!   `push`/`pop`/`call`/`jmp` through memory and `movdir64b`;
//! - `string`: `movs`/`stos`/`lods`/`cmps`/`scas`, the whole `rep` at once;
//! - `vector`: [`emulate_vector`], the SSE/AVX/AVX-512 moves.
//!
//! This module allocates nothing and never panics: it runs inside the
//! signal handler.

use iced_x86::{Instruction, Register};

mod forms;
mod scalar;
mod string;
mod vector;

pub(crate) use forms::{Plan, Source, StringOp, plan};
pub use scalar::emulate;
pub use vector::emulate_vector;

/// The general registers, indexed in x86 encoding order
/// (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15), plus rip and rflags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
}

/// Which bits of a full register a register name covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Low8,
    High8,
    Word,
    Dword,
    Qword,
}

/// The encoding-order index of a general register of any size and the part it names.
fn gpr_slot(reg: Register) -> Option<(usize, Part)> {
    let part = match reg {
        Register::AH | Register::CH | Register::DH | Register::BH => Part::High8,
        r if r.is_gpr8() => Part::Low8,
        r if r.is_gpr16() => Part::Word,
        r if r.is_gpr32() => Part::Dword,
        r if r.is_gpr64() => Part::Qword,
        _ => return None,
    };
    let index = (reg.full_register() as usize).checked_sub(Register::RAX as usize)?;
    (index < 16).then_some((index, part))
}

/// The encoding-order index (0..16) of a 64-bit general register.
pub fn gpr_index(reg: Register) -> Option<usize> {
    gpr_slot(reg).map(|(index, _)| index)
}

impl Regs {
    /// The value of a general register of any size, zero-extended.
    pub fn get(&self, reg: Register) -> Option<u64> {
        let (index, part) = gpr_slot(reg)?;
        let full = *self.gpr.get(index)?;
        Some(match part {
            Part::Low8 => full & 0xff,
            Part::High8 => (full >> 8) & 0xff,
            Part::Word => full & 0xffff,
            Part::Dword => full & 0xffff_ffff,
            Part::Qword => full,
        })
    }

    /// Writes `value` (its low bits) to a register with the CPU's rules: a
    /// 32-bit destination zero-extends into 64 bits, 8- and 16-bit
    /// destinations keep the other bits, AH/BH/CH/DH are bits 8..16.
    pub fn set(&mut self, reg: Register, value: u64) -> Option<()> {
        let (index, part) = gpr_slot(reg)?;
        let full = self.gpr.get_mut(index)?;
        *full = match part {
            Part::Low8 => (*full & !0xff) | (value & 0xff),
            Part::High8 => (*full & !0xff00) | ((value & 0xff) << 8),
            Part::Word => (*full & !0xffff) | (value & 0xffff),
            Part::Dword => value & 0xffff_ffff,
            Part::Qword => value,
        };
        Some(())
    }
}

/// Why an instruction that touched traced memory was not emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The access leaves the traced range it started in.
    OutsideRange,
    /// The mapping's protection does not allow this access.
    Protection,
    /// FS/GS-relative and the segment base was unavailable.
    Segment,
    /// The instruction is not one the emulator knows (caller may displace it).
    Unsupported,
    /// The instruction uses a register in a way displaced execution cannot handle.
    RegisterConflict,
    /// RIP-relative operand: cannot be rebased.
    RipRelative,
    /// The instruction bytes could not be decoded.
    Undecodable,
    /// A hook (`sigbus` rule) answers the access with SIGBUS: nothing is
    /// performed and the instruction does not complete.
    BusError,
}

impl Refusal {
    /// A short reason for a one-line message.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::OutsideRange => "the access crosses the end of the traced mapping",
            Refusal::Protection => "the mapping's protection forbids this access",
            Refusal::Segment => "FS/GS segment base unavailable",
            Refusal::BusError => "a hook answered the access with SIGBUS",
            Refusal::Unsupported => "instruction not supported",
            Refusal::RegisterConflict => {
                "the instruction also uses its address register as data, so it cannot be rebased"
            }
            Refusal::RipRelative => "RIP-relative operand cannot be rebased",
            Refusal::Undecodable => "instruction bytes cannot be decoded",
        }
    }
}

/// The elements of a string instruction that [`Bus::string_run`] performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringRun {
    /// `movs`: each element loaded at the source (the first at `source`)
    /// and stored at the destination.
    Movs { source: u64 },
    /// `stos`: `value` (cut to the width) stored at each element.
    Stos { value: u64 },
}

/// Where the emulator's loads and stores go. The implementation translates a
/// program address to the alias (or leaves untraced memory as it is),
/// performs each access exactly once with exactly `width` (1, 2, 4 or 8)
/// bytes, and logs the accesses to traced memory as it performs them.
pub trait Bus {
    /// Whether an access could be performed, without performing it.
    fn check(&mut self, addr: u64, width: u8, write: bool) -> Result<(), Refusal>;
    fn load(&mut self, addr: u64, width: u8) -> Result<u64, Refusal>;
    fn store(&mut self, addr: u64, width: u8, value: u64) -> Result<(), Refusal>;
    /// The base of segment FS or GS.
    fn segment_base(&mut self, segment: Register) -> Option<u64>;

    /// Performs up to `count` elements of a string instruction in one go
    /// (each element exactly as [`Bus::load`] and [`Bus::store`] would,
    /// and logged in one batch), where it can: the first element's
    /// destination at `dest`, each `width` bytes, the addresses going down
    /// with `backwards`. Returns how many it did; 0 (the default) leaves
    /// every element to the caller, one at a time.
    fn string_run(
        &mut self,
        _run: StringRun,
        _dest: u64,
        _width: u8,
        _count: u64,
        _backwards: bool,
    ) -> u64 {
        0
    }

    /// Whether `len` bytes at `addr` could be accessed. Unlike [`Bus::check`],
    /// any length up to [`MAX_OPERAND`] is allowed, and so is an access that
    /// crosses from one mapping into another (it is then made in pieces).
    fn check_bytes(&mut self, addr: u64, len: usize, write: bool) -> Result<(), Refusal> {
        match len {
            1 | 2 | 4 | 8 => self.check(addr, len as u8, write),
            _ => Err(Refusal::Unsupported),
        }
    }

    /// Loads `out.len()` bytes (at most [`MAX_OPERAND`]) at `addr`: one
    /// access when the length is a power of two up to 64 and the bytes lie
    /// in one mapping, otherwise one access per piece (see
    /// docs/INSTRUCTIONS.md, "Widths and pieces").
    fn load_bytes(&mut self, addr: u64, out: &mut [u8]) -> Result<(), Refusal> {
        let width = out.len();
        if !matches!(width, 1 | 2 | 4 | 8) {
            return Err(Refusal::Unsupported);
        }
        let value = self.load(addr, width as u8)?.to_le_bytes();
        out.copy_from_slice(value.get(..width).ok_or(Refusal::Unsupported)?);
        Ok(())
    }

    /// Stores `bytes` (at most [`MAX_OPERAND`]) at `addr`, in pieces as
    /// [`Bus::load_bytes`].
    fn store_bytes(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Refusal> {
        let width = bytes.len();
        if !matches!(width, 1 | 2 | 4 | 8) {
            return Err(Refusal::Unsupported);
        }
        let mut value = [0u8; 8];
        value
            .get_mut(..width)
            .ok_or(Refusal::Unsupported)?
            .copy_from_slice(bytes);
        self.store(addr, width as u8, u64::from_le_bytes(value))
    }
}

/// The largest memory operand the emulator and displaced execution handle
/// (`fxsave`'s 512 bytes; `xsave` areas are larger and variable).
pub const MAX_OPERAND: usize = 512;

/// The vector registers (XMM, YMM, ZMM by number; the opmask registers),
/// wherever they are kept: the signal frame's XSAVE area in the handler.
pub trait Vectors {
    /// The low `out.len()` bytes (at most 64) of register `reg`; its name
    /// (XMM, YMM or ZMM) only gives the number.
    fn read(&mut self, reg: Register, out: &mut [u8]) -> Option<()>;
    /// Writes `bytes` to the low bytes of register `reg` and zeroes the
    /// bytes from there up to `zero_to` (64: the whole register). On
    /// `None`, nothing was written.
    fn write(&mut self, reg: Register, bytes: &[u8], zero_to: usize) -> Option<()>;
    /// Opmask register `k` (K0..K7).
    fn opmask(&mut self, k: Register) -> Option<u64>;
}

/// Direction of one emulated access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// One access the emulator performed: the memory value with the access's
/// width, zero-extended (never the register after sign extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub direction: Direction,
    pub addr: u64,
    pub width: u8,
    pub value: u64,
}

fn width_mask(width: u8) -> u64 {
    match width {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

fn sign_extend(value: u64, width: u8) -> u64 {
    let shift = 64u32.wrapping_sub(u32::from(width).wrapping_mul(8)) & 63;
    (((value << shift) as i64) >> shift) as u64
}

/// The effective address of the instruction's explicit memory operand
/// (`OpKind::Memory`), with the segment base for FS/GS.
pub fn effective_address(
    insn: &Instruction,
    regs: &Regs,
    bus: &mut impl Bus,
) -> Result<u64, Refusal> {
    let base = insn.memory_base();
    let index = insn.memory_index();
    // iced already resolves RIP-relative operands to an absolute displacement.
    let mut addr = insn.memory_displacement64();
    let mut address_32 = false;
    if base != Register::None && base != Register::RIP && base != Register::EIP {
        addr = addr.wrapping_add(regs.get(base).ok_or(Refusal::Unsupported)?);
        address_32 |= base.is_gpr32();
    }
    address_32 |= base == Register::EIP;
    if index != Register::None {
        let value = regs.get(index).ok_or(Refusal::Unsupported)?;
        addr = addr.wrapping_add(value.wrapping_mul(u64::from(insn.memory_index_scale())));
        address_32 |= index.is_gpr32();
    }
    if address_32 {
        addr &= 0xffff_ffff;
    }
    let segment = insn.memory_segment();
    if segment == Register::FS || segment == Register::GS {
        let segment_base = bus.segment_base(segment).ok_or(Refusal::Segment)?;
        addr = addr.wrapping_add(segment_base);
    }
    Ok(addr)
}

const RCX: usize = 1;
const RSP: usize = 4;
const RSI: usize = 6;
const RDI: usize = 7;
/// RFLAGS.DF: string instructions walk downwards.
const DF: u64 = 1 << 10;
/// RFLAGS.ZF.
const ZF: u64 = 1 << 6;

fn gpr(regs: &Regs, index: usize) -> u64 {
    regs.gpr.get(index).copied().unwrap_or(0)
}

fn advance(regs: &mut Regs, index: usize, step: u64) {
    if let Some(value) = regs.gpr.get_mut(index) {
        *value = value.wrapping_add(step);
    }
}

#[cfg(test)]
pub(crate) mod tests;
