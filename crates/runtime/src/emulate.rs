//! Emulation of one decoded instruction over a register file and a [`Bus`].
//!
//! Nothing here knows about signals: the SIGSEGV handler fills a [`Regs`]
//! from the signal context, and a later patched-trampoline path (DESIGN §3)
//! can fill it from its own save area. The bus decides where an address
//! really lives (the alias) and performs each access exactly once.
//!
//! This module allocates nothing and never panics: it runs inside the
//! signal handler.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::alu::{self, Compare};

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
}

impl Refusal {
    /// A short reason for a one-line message.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::OutsideRange => "the access crosses the end of the traced mapping",
            Refusal::Protection => "the mapping's protection forbids this access",
            Refusal::Segment => "FS/GS segment base unavailable",
            Refusal::Unsupported => "instruction not supported",
            Refusal::RegisterConflict => {
                "the instruction also uses its address register as data, so it cannot be rebased"
            }
            Refusal::RipRelative => "RIP-relative operand cannot be rebased",
            Refusal::Undecodable => "instruction bytes cannot be decoded",
        }
    }
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

#[derive(Debug, Clone, Copy)]
enum Extend {
    None,
    Zero,
    Sign,
}

#[derive(Debug, Clone, Copy)]
enum Plan {
    Load {
        width: u8,
        dest: Register,
        extend: Extend,
    },
    Store {
        width: u8,
        source: Source,
    },
    /// `movs`, `stos`, `lods`, with or without `rep`.
    String {
        op: StringOp,
        width: u8,
        rep: bool,
    },
    /// `cmp`/`test` with a memory operand: the flags of `memory op other`
    /// or, when `memory_first` is false, of `other op memory`.
    Compare {
        op: Compare,
        width: u8,
        memory_first: bool,
        other: Source,
    },
    /// `movbe`: a load or store with the bytes reversed.
    Movbe {
        width: u8,
        reg: Register,
        load: bool,
    },
    /// `push m16/m64`.
    Push {
        width: u8,
    },
    /// `pop m16/m64`.
    Pop {
        width: u8,
    },
    /// `call`/`jmp` near, through a 64-bit pointer in memory.
    Branch {
        call: bool,
    },
    /// `movdir64b r, m512`: 64 bytes from the memory operand to `[r]`.
    Movdir64b {
        dest: Register,
    },
    /// `cmps`, `scas` (`scas` compares a register with `[rdi]`), with
    /// `repe`/`repne` or without.
    StringCompare {
        scas: Option<Register>,
        width: u8,
        repeat: Repeat,
    },
}

#[derive(Debug, Clone, Copy)]
enum StringOp {
    Movs,
    Stos(Register),
    Lods(Register),
}

/// The repeat prefix of a string compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Once,
    /// `repe`: while equal.
    WhileEqual,
    /// `repne`: while not equal.
    WhileNotEqual,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Register(Register),
    Immediate(u64),
}

fn is_immediate(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

fn access_width(insn: &Instruction) -> Option<u8> {
    match insn.memory_size().size() {
        1 => Some(1),
        2 => Some(2),
        4 => Some(4),
        8 => Some(8),
        _ => None,
    }
}

fn is_gpr(reg: Register) -> bool {
    gpr_slot(reg).is_some()
}

/// The MOV-family forms the emulator performs itself.
fn plan(insn: &Instruction) -> Option<Plan> {
    if insn.op_count() == 1 && insn.op0_kind() == OpKind::Memory {
        let width = access_width(insn)?;
        return match (insn.mnemonic(), width) {
            (Mnemonic::Push, 2 | 8) => Some(Plan::Push { width }),
            (Mnemonic::Pop, 2 | 8) => Some(Plan::Pop { width }),
            (Mnemonic::Call, 8) => Some(Plan::Branch { call: true }),
            (Mnemonic::Jmp, 8) => Some(Plan::Branch { call: false }),
            // xlat: al = [rbx + al]; iced names AL as the index register.
            (Mnemonic::Xlatb, 1) => Some(Plan::Load {
                width,
                dest: Register::AL,
                extend: Extend::None,
            }),
            _ => None,
        };
    }
    if insn.op_count() != 2 {
        return None;
    }
    let (kind0, kind1) = (insn.op0_kind(), insn.op1_kind());
    if insn.mnemonic() == Mnemonic::Movdir64b {
        return (kind0 == OpKind::Register
            && kind1 == OpKind::Memory
            && insn.op0_register().is_gpr64())
        .then_some(Plan::Movdir64b {
            dest: insn.op0_register(),
        });
    }
    let width = access_width(insn)?;
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    let string = |op| Some(Plan::String { op, width, rep });
    match insn.mnemonic() {
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq
            if kind0 == OpKind::MemoryESRDI && kind1 == OpKind::MemorySegRSI =>
        {
            string(StringOp::Movs)
        }
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq
            if kind0 == OpKind::MemoryESRDI && kind1 == OpKind::Register =>
        {
            string(StringOp::Stos(insn.op1_register()))
        }
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq
            if kind0 == OpKind::Register && kind1 == OpKind::MemorySegRSI =>
        {
            string(StringOp::Lods(insn.op0_register()))
        }
        Mnemonic::Mov | Mnemonic::Movnti => {
            if kind0 == OpKind::Memory && kind1 == OpKind::Register && is_gpr(insn.op1_register()) {
                Some(Plan::Store {
                    width,
                    source: Source::Register(insn.op1_register()),
                })
            } else if kind0 == OpKind::Memory && is_immediate(kind1) {
                Some(Plan::Store {
                    width,
                    source: Source::Immediate(insn.immediate(1)),
                })
            } else if kind0 == OpKind::Register
                && kind1 == OpKind::Memory
                && is_gpr(insn.op0_register())
            {
                Some(Plan::Load {
                    width,
                    dest: insn.op0_register(),
                    extend: Extend::None,
                })
            } else {
                None
            }
        }
        Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd | Mnemonic::Cmpsq
            if kind0 == OpKind::MemorySegRSI && kind1 == OpKind::MemoryESRDI =>
        {
            Some(Plan::StringCompare {
                scas: None,
                width,
                repeat: repeat(insn),
            })
        }
        Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq
            if kind0 == OpKind::Register && kind1 == OpKind::MemoryESRDI =>
        {
            Some(Plan::StringCompare {
                scas: Some(insn.op0_register()),
                width,
                repeat: repeat(insn),
            })
        }
        Mnemonic::Cmp | Mnemonic::Test => {
            let op = if insn.mnemonic() == Mnemonic::Cmp {
                Compare::Cmp
            } else {
                Compare::Test
            };
            let (memory_first, other_kind, other_index) = if kind0 == OpKind::Memory {
                (true, kind1, 1)
            } else if kind1 == OpKind::Memory {
                (false, kind0, 0)
            } else {
                return None;
            };
            let other = if other_kind == OpKind::Register && is_gpr(insn.op_register(other_index)) {
                Source::Register(insn.op_register(other_index))
            } else if is_immediate(other_kind) {
                Source::Immediate(insn.immediate(other_index))
            } else {
                return None;
            };
            Some(Plan::Compare {
                op,
                width,
                memory_first,
                other,
            })
        }
        Mnemonic::Movbe => {
            if kind0 == OpKind::Register && kind1 == OpKind::Memory && is_gpr(insn.op0_register()) {
                Some(Plan::Movbe {
                    width,
                    reg: insn.op0_register(),
                    load: true,
                })
            } else if kind0 == OpKind::Memory
                && kind1 == OpKind::Register
                && is_gpr(insn.op1_register())
            {
                Some(Plan::Movbe {
                    width,
                    reg: insn.op1_register(),
                    load: false,
                })
            } else {
                None
            }
        }
        Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd => {
            if kind0 == OpKind::Register && kind1 == OpKind::Memory && is_gpr(insn.op0_register()) {
                let extend = if insn.mnemonic() == Mnemonic::Movzx {
                    Extend::Zero
                } else {
                    Extend::Sign
                };
                Some(Plan::Load {
                    width,
                    dest: insn.op0_register(),
                    extend,
                })
            } else {
                None
            }
        }
        _ => None,
    }
}

fn repeat(insn: &Instruction) -> Repeat {
    if insn.has_repe_prefix() {
        Repeat::WhileEqual
    } else if insn.has_repne_prefix() {
        Repeat::WhileNotEqual
    } else {
        Repeat::Once
    }
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

/// `cmps`/`scas`, the whole `repe`/`repne` in one call, stopping early as
/// [`emulate_string`] does when an element cannot be done.
fn emulate_string_compare(
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

/// A string instruction, the whole `rep` in one call (DESIGN §4). Each
/// element is checked before any of its accesses is made; if a later
/// element cannot be done, the registers describe the elements done so far
/// and `rip` stays, so the instruction resumes from there (and faults again).
fn emulate_string(
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

/// What [`emulate`] would do with `insn`, as one [`RegisterAccess`];
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

/// A register that displaced execution adds the alias offset to, so that
/// the unmodified instruction runs on the alias (DESIGN §3).
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
    use iced_x86::{Decoder, DecoderOptions};

    /// A flat little-endian memory at `BASE` that records every access.
    struct TestBus {
        mem: Vec<u8>,
        log: Vec<Access>,
    }

    const BASE: u64 = 0x1000_0000;

    impl Bus for TestBus {
        fn check(&mut self, addr: u64, width: u8, _write: bool) -> Result<(), Refusal> {
            let start = addr.checked_sub(BASE).ok_or(Refusal::OutsideRange)? as usize;
            self.mem
                .get(start..start + width as usize)
                .map(|_| ())
                .ok_or(Refusal::OutsideRange)
        }
        fn load(&mut self, addr: u64, width: u8) -> Result<u64, Refusal> {
            let start = (addr - BASE) as usize;
            let bytes = self
                .mem
                .get(start..start + width as usize)
                .ok_or(Refusal::OutsideRange)?;
            let mut value = [0u8; 8];
            value[..width as usize].copy_from_slice(bytes);
            let value = u64::from_le_bytes(value);
            self.log.push(Access {
                direction: Direction::Read,
                addr,
                width,
                value,
            });
            Ok(value)
        }
        fn store(&mut self, addr: u64, width: u8, value: u64) -> Result<(), Refusal> {
            let start = (addr - BASE) as usize;
            let bytes = self
                .mem
                .get_mut(start..start + width as usize)
                .ok_or(Refusal::OutsideRange)?;
            bytes.copy_from_slice(&value.to_le_bytes()[..width as usize]);
            self.log.push(Access {
                direction: Direction::Write,
                addr,
                width,
                value,
            });
            Ok(())
        }
        fn segment_base(&mut self, _segment: Register) -> Option<u64> {
            None
        }
        fn check_bytes(&mut self, addr: u64, len: usize, _write: bool) -> Result<(), Refusal> {
            let start = addr.checked_sub(BASE).ok_or(Refusal::OutsideRange)? as usize;
            self.mem
                .get(start..start + len)
                .map(|_| ())
                .ok_or(Refusal::OutsideRange)
        }
        fn load_bytes(&mut self, addr: u64, out: &mut [u8]) -> Result<(), Refusal> {
            self.check_bytes(addr, out.len(), false)?;
            let start = (addr - BASE) as usize;
            out.copy_from_slice(&self.mem[start..start + out.len()]);
            let mut low = [0u8; 8];
            let n = out.len().min(8);
            low[..n].copy_from_slice(&out[..n]);
            self.log.push(Access {
                direction: Direction::Read,
                addr,
                width: out.len() as u8,
                value: u64::from_le_bytes(low),
            });
            Ok(())
        }
        fn store_bytes(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Refusal> {
            self.check_bytes(addr, bytes.len(), true)?;
            let start = (addr - BASE) as usize;
            self.mem[start..start + bytes.len()].copy_from_slice(bytes);
            let mut low = [0u8; 8];
            let n = bytes.len().min(8);
            low[..n].copy_from_slice(&bytes[..n]);
            self.log.push(Access {
                direction: Direction::Write,
                addr,
                width: bytes.len() as u8,
                value: u64::from_le_bytes(low),
            });
            Ok(())
        }
    }

    fn decode(bytes: &[u8]) -> Instruction {
        let mut decoder = Decoder::with_ip(64, bytes, 0x40_0000, DecoderOptions::NONE);
        decoder.decode()
    }

    fn bus() -> TestBus {
        TestBus {
            mem: (0..64u8).map(|i| 0x80 | i).collect(),
            log: Vec::new(),
        }
    }

    #[test]
    fn movsx_reports_the_memory_value_not_the_extended_register() {
        // movsx rax, byte [rbx]
        let insn = decode(&[0x48, 0x0f, 0xbe, 0x03]);
        let mut regs = Regs::default();
        regs.gpr[3] = BASE + 1;
        let mut bus = bus();
        emulate(&insn, &mut regs, &mut bus).expect("emulated");
        assert_eq!(bus.log[0].value, 0x81);
        assert_eq!(regs.gpr[0], 0xffff_ffff_ffff_ff81);
        assert_eq!(regs.rip, 0x40_0004);
    }

    #[test]
    fn high_byte_and_word_destinations_keep_other_bits() {
        // mov ah, [rbx] ; mov cx, [rbx] ; mov edx, [rbx]
        let mut regs = Regs {
            gpr: [0x1111_1111_1111_1111; 16],
            ..Regs::default()
        };
        regs.gpr[3] = BASE;
        let mut bus = bus();
        emulate(&decode(&[0x8a, 0x23]), &mut regs, &mut bus).expect("mov ah");
        assert_eq!(regs.gpr[0], 0x1111_1111_1111_8011);
        emulate(&decode(&[0x66, 0x8b, 0x0b]), &mut regs, &mut bus).expect("mov cx");
        assert_eq!(regs.gpr[1], 0x1111_1111_1111_8180);
        emulate(&decode(&[0x8b, 0x13]), &mut regs, &mut bus).expect("mov edx");
        assert_eq!(regs.gpr[2], 0x8382_8180);
    }

    #[test]
    fn store_immediate_sign_extends_to_64_bits() {
        // mov qword [rbx+8], -2
        let mut regs = Regs::default();
        regs.gpr[3] = BASE;
        let mut bus = bus();
        emulate(
            &decode(&[0x48, 0xc7, 0x43, 0x08, 0xfe, 0xff, 0xff, 0xff]),
            &mut regs,
            &mut bus,
        )
        .expect("emulated");
        assert_eq!(
            bus.log,
            [Access {
                direction: Direction::Write,
                addr: BASE + 8,
                width: 8,
                value: 0xffff_ffff_ffff_fffe
            }]
        );
    }

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
    fn rep_stos_backwards_does_the_whole_repeat() {
        // std; rep stosw  (DF set in rflags)
        let insn = decode(&[0xf3, 0x66, 0xab]);
        let mut regs = Regs::default();
        regs.gpr[0] = 0xaaaa_bbbb;
        regs.gpr[1] = 3;
        regs.gpr[7] = BASE + 10;
        regs.rflags = DF;
        let mut bus = bus();
        emulate(&insn, &mut regs, &mut bus).expect("emulated");
        let addrs: Vec<u64> = bus.log.iter().map(|a| a.addr - BASE).collect();
        assert_eq!(addrs, [10, 8, 6]);
        assert!(bus.log.iter().all(|a| a.value == 0xbbbb && a.width == 2));
        assert_eq!((regs.gpr[1], regs.gpr[7]), (0, BASE + 4));
        assert_eq!(regs.rip, 0x40_0003);
    }

    #[test]
    fn rep_movs_stops_before_an_element_it_cannot_do() {
        // rep movsq: the third element would leave the memory
        let insn = decode(&[0xf3, 0x48, 0xa5]);
        let mut regs = Regs {
            rip: 0x40_0000,
            ..Regs::default()
        };
        regs.gpr[1] = 5;
        regs.gpr[6] = BASE;
        regs.gpr[7] = BASE + 48;
        let mut bus = bus();
        emulate(&insn, &mut regs, &mut bus).expect("partly emulated");
        assert_eq!(bus.log.len(), 4, "two loads and two stores");
        assert_eq!(
            (regs.gpr[1], regs.gpr[6], regs.gpr[7]),
            (3, BASE + 16, BASE + 64)
        );
        assert_eq!(regs.rip, 0x40_0000, "resumes at the same instruction");
        assert_eq!(
            emulate(&insn, &mut regs, &mut bus),
            Err(Refusal::OutsideRange)
        );
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

    /// 32 registers of 64 bytes.
    struct TestVectors([[u8; 64]; 32]);

    impl Vectors for TestVectors {
        fn read(&mut self, reg: Register, out: &mut [u8]) -> Option<()> {
            let n = reg.number();
            out.copy_from_slice(self.0.get(n)?.get(..out.len())?);
            Some(())
        }
        fn write(&mut self, reg: Register, bytes: &[u8], zero_to: usize) -> Option<()> {
            let r = self.0.get_mut(reg.number())?;
            r[..bytes.len()].copy_from_slice(bytes);
            r[bytes.len()..zero_to.max(bytes.len())].fill(0);
            Some(())
        }
        fn opmask(&mut self, _k: Register) -> Option<u64> {
            None
        }
    }

    #[test]
    fn vector_loads_zero_or_keep_the_upper_bits_as_their_encoding_says() {
        let mut regs = Regs::default();
        regs.gpr[3] = BASE;
        for (bytes, kept_from) in [
            // movdqu xmm1, [rbx]: legacy SSE keeps bits 128 and up
            (&[0xf3, 0x0f, 0x6f, 0x0b][..], Some(16)),
            // vmovdqu xmm1, [rbx]: VEX zeroes them
            (&[0xc5, 0xfa, 0x6f, 0x0b][..], None),
            // movd xmm1, [rbx]: zeroes bits 32..128, keeps the rest
            (&[0x66, 0x0f, 0x6e, 0x0b][..], Some(16)),
        ] {
            let mut vectors = TestVectors([[0x77; 64]; 32]);
            let mut bus = bus();
            emulate_vector(&decode(bytes), &mut regs, &mut vectors, &mut bus).expect("emulated");
            let width = bus.log[0].width as usize;
            assert_eq!(bus.log.len(), 1);
            let r = vectors.0[1];
            assert_eq!(&r[..width], &bus.mem[..width]);
            match kept_from {
                Some(from) => {
                    assert!(r[width..from].iter().all(|&b| b == 0), "{bytes:02x?}");
                    assert!(r[from..].iter().all(|&b| b == 0x77), "{bytes:02x?}");
                }
                None => assert!(r[width..].iter().all(|&b| b == 0), "{bytes:02x?}"),
            }
        }
    }

    #[test]
    fn movhps_store_writes_the_high_half() {
        // movhps [rbx+8], xmm2
        let mut regs = Regs::default();
        regs.gpr[3] = BASE;
        let mut vectors = TestVectors([[0; 64]; 32]);
        for (i, b) in vectors.0[2].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut bus = bus();
        emulate_vector(
            &decode(&[0x0f, 0x17, 0x53, 0x08]),
            &mut regs,
            &mut vectors,
            &mut bus,
        )
        .expect("emulated");
        assert_eq!(bus.log[0].addr, BASE + 8);
        assert_eq!(&bus.mem[8..16], &[8, 9, 10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn compares_set_the_flags_of_the_real_instruction() {
        // cmp dword [rbx], 0x80838281 (equal) ; test byte [rbx+1], 0x80
        let mut regs = Regs {
            rflags: 0x202,
            ..Regs::default()
        };
        regs.gpr[3] = BASE;
        let mut bus = bus();
        emulate(
            &decode(&[0x81, 0x3b, 0x80, 0x81, 0x82, 0x83]),
            &mut regs,
            &mut bus,
        )
        .expect("cmp");
        assert_eq!(regs.rflags & 0x8d5, ZF | 0x4, "ZF and PF");
        emulate(&decode(&[0xf6, 0x43, 0x01, 0x80]), &mut regs, &mut bus).expect("test");
        assert_eq!(regs.rflags & (ZF | 0x80), 0x80, "SF, not ZF");
        assert_eq!(regs.rflags & 0x202, 0x202, "other flags kept");
    }

    #[test]
    fn movdir64b_copies_64_bytes_in_one_read_and_one_write() {
        // movdir64b rax, [rbx]
        let mut regs = Regs::default();
        regs.gpr[3] = BASE;
        regs.gpr[0] = BASE;
        let mut bus = TestBus {
            mem: (0..128u8).collect(),
            log: Vec::new(),
        };
        regs.gpr[3] = BASE + 64;
        emulate(
            &decode(&[0x66, 0x0f, 0x38, 0xf8, 0x03]),
            &mut regs,
            &mut bus,
        )
        .expect("movdir64b");
        assert_eq!(
            bus.log
                .iter()
                .map(|a| (a.direction, a.addr, a.width))
                .collect::<Vec<_>>(),
            [
                (Direction::Read, BASE + 64, 64),
                (Direction::Write, BASE, 64)
            ]
        );
        assert_eq!(bus.mem[..64], (64..128u8).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn movbe_swaps_bytes_and_pop_computes_its_address_after_rsp_moves() {
        // movbe eax, [rbx]
        let mut regs = Regs::default();
        regs.gpr[3] = BASE;
        let mut bus = bus();
        emulate(&decode(&[0x0f, 0x38, 0xf0, 0x03]), &mut regs, &mut bus).expect("movbe");
        assert_eq!(regs.gpr[0], 0x8081_8283);
        // pop qword [rsp]: reads the top, then stores at the new top
        let mut regs = Regs::default();
        regs.gpr[4] = BASE + 8;
        let mut stack = super::tests::bus();
        emulate(&decode(&[0x8f, 0x04, 0x24]), &mut regs, &mut stack).expect("pop");
        assert_eq!(regs.gpr[4], BASE + 16);
        assert_eq!(
            stack
                .log
                .iter()
                .map(|a| (a.direction, a.addr))
                .collect::<Vec<_>>(),
            [(Direction::Read, BASE + 8), (Direction::Write, BASE + 16)]
        );
    }
}
