//! Cases built from iced's instruction tables: every instruction form
//! (`Code`) with a ModRM memory operand that this CPU supports and that
//! the runtime must handle exactly, with operands filled in at random:
//! registers, immediates, masks, broadcast, `lock`, the memory operand's
//! base, index, scale, displacement, segment and RIP-relative forms, and
//! its address (aligned, unaligned, crossing from untraced memory into a
//! traced mapping, from one traced mapping into another).

use std::collections::HashSet;

use iced_x86::{
    Code, CpuidFeature, Decoder, DecoderOptions, Encoder, EncodingKind, FlowControl, Instruction,
    Mnemonic, OpCodeOperandKind as K, OpKind, Register,
};

use super::Case;
use super::layout::*;
use super::rng::Rng;
use super::xstate::Layout;

/// The CPU features /proc/cpuinfo lists.
fn cpu_flags() -> HashSet<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().skip(2).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn feature_supported(feature: CpuidFeature, flags: &HashSet<String>, layout: &Layout) -> bool {
    use CpuidFeature::*;
    let flag = |name: &str| flags.contains(name);
    match feature {
        INTEL8086 | INTEL186 | INTEL286 | INTEL386 | INTEL486 | X64 | FPU | FPU287 | FPU387
        | CMOV | CX8 | MULTIBYTENOP | PAUSE | CLFSH => true,
        MMX => flag("mmx"),
        FXSR => flag("fxsr"),
        SSE => flag("sse"),
        SSE2 => flag("sse2"),
        SSE3 => flag("pni"),
        SSSE3 => flag("ssse3"),
        SSE4_1 => flag("sse4_1"),
        SSE4_2 => flag("sse4_2"),
        SSE4A => flag("sse4a"),
        POPCNT => flag("popcnt"),
        LZCNT => flag("abm"),
        BMI1 => flag("bmi1"),
        BMI2 => flag("bmi2"),
        ADX => flag("adx"),
        MOVBE => flag("movbe"),
        CMPXCHG16B => flag("cx16"),
        AES => flag("aes"),
        PCLMULQDQ => flag("pclmulqdq"),
        SHA => flag("sha_ni"),
        CLFLUSHOPT => flag("clflushopt"),
        CLWB => flag("clwb"),
        AVX => layout.avx && flag("avx"),
        AVX2 => layout.avx && flag("avx2"),
        FMA => layout.avx && flag("fma"),
        F16C => layout.avx && flag("f16c"),
        VAES => layout.avx && flag("vaes"),
        VPCLMULQDQ => layout.avx && flag("vpclmulqdq"),
        GFNI => flag("gfni"),
        AVX512F => layout.avx512 && flag("avx512f"),
        AVX512BW => layout.avx512 && flag("avx512bw"),
        AVX512DQ => layout.avx512 && flag("avx512dq"),
        AVX512VL => layout.avx512 && flag("avx512vl"),
        AVX512CD => layout.avx512 && flag("avx512cd"),
        AVX512_VBMI => layout.avx512 && flag("avx512vbmi"),
        AVX512_VBMI2 => layout.avx512 && flag("avx512_vbmi2"),
        AVX512_IFMA => layout.avx512 && flag("avx512ifma"),
        AVX512_VNNI => layout.avx512 && flag("avx512_vnni"),
        AVX512_BITALG => layout.avx512 && flag("avx512_bitalg"),
        AVX512_VPOPCNTDQ => layout.avx512 && flag("avx512_vpopcntdq"),
        AVX512_BF16 => layout.avx512 && flag("avx512_bf16"),
        _ => false,
    }
}

const MEMORY_KINDS: &[K] = &[
    K::mem,
    K::r8_or_mem,
    K::r16_or_mem,
    K::r32_or_mem,
    K::r64_or_mem,
    K::mm_or_mem,
    K::xmm_or_mem,
    K::ymm_or_mem,
    K::zmm_or_mem,
    K::k_or_mem,
];

/// Instructions left out of generated cases, and why.
fn excluded(mnemonic: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        mnemonic,
        // #DE on random operands: hand-written cases cover them.
        Div | Idiv
        // Load control state from memory: random images fault or unmask
        // exceptions; hand-written cases give them valid images.
        | Ldmxcsr | Vldmxcsr | Fldcw | Fldenv | Frstor | Fxrstor | Fxrstor64
        // Far pointers, segment and descriptor-table state.
        | Lss | Lfs | Lgs | Lar | Lsl | Verr | Verw | Sldt | Str | Smsw | Sgdt | Sidt
        // Variable-size state, larger than any operand the runtime copies.
        | Xsave | Xsave64 | Xsaveopt | Xsaveopt64 | Xsavec | Xsavec64 | Xsaves | Xsaves64
        | Xrstor | Xrstor64 | Xrstors | Xrstors64
        // A register holds the destination address (not a ModRM operand).
        | Movdir64b | Enqcmd | Enqcmds
    )
}

/// Alignment the CPU requires of the memory operand (#GP otherwise).
fn alignment(insn: &Instruction) -> u64 {
    use Mnemonic::*;
    let size = insn.memory_size().size() as u64;
    match insn.mnemonic() {
        Cmpxchg16b => 16,
        Fxsave | Fxsave64 => 16,
        Movups | Movupd | Movdqu | Lddqu => 1,
        Vmovaps | Vmovapd | Vmovdqa | Vmovdqa32 | Vmovdqa64 | Vmovntdq | Vmovntps | Vmovntpd
        | Vmovntdqa => size,
        _ if insn.encoding() == EncodingKind::Legacy && size == 16 => 16,
        _ => 1,
    }
}

/// Where a generated access goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Aligned to its size (or 16) inside mapping A.
    Aligned,
    /// At an odd offset inside A.
    Unaligned,
    /// Crossing from the untraced page into A.
    UntracedIntoA,
    /// Crossing the page boundary inside A.
    AcrossPagesOfA,
    /// Crossing from A into B.
    AIntoB,
    /// At the end of B.
    EndOfB,
    /// Anywhere in the window.
    Random,
}

pub const PLACEMENTS: &[Placement] = &[
    Placement::Aligned,
    Placement::Unaligned,
    Placement::UntracedIntoA,
    Placement::AcrossPagesOfA,
    Placement::AIntoB,
    Placement::EndOfB,
];

fn target(rng: &mut Rng, placement: Placement, size: u64, align: u64) -> u64 {
    let align = align.max(1);
    let down = |addr: u64| addr / align * align;
    let crossing = |rng: &mut Rng, boundary: u64| {
        if size <= 1 || align >= size {
            // Cannot cross: end right at the boundary or start there.
            if rng.chance(50) {
                boundary - down(size.max(align))
            } else {
                boundary
            }
        } else {
            let back = 1 + rng.below(size - 1);
            let addr = down(boundary - back);
            if addr + size <= boundary {
                boundary - size
            } else {
                addr
            }
        }
    };
    match placement {
        Placement::Aligned => down(A_START + 0x40 + 64 * rng.below(32)),
        Placement::Unaligned => {
            down(A_START + 0x101 + rng.below(0x700)) | if align == 1 { 1 } else { 0 }
        }
        Placement::UntracedIntoA => crossing(rng, A_START),
        Placement::AcrossPagesOfA => crossing(rng, A_START + PAGE),
        Placement::AIntoB => crossing(rng, B_START),
        Placement::EndOfB => down(B_START + PAGE - size),
        Placement::Random => {
            let pick = rng.below(100);
            if pick < 60 {
                down(A_START + rng.below(A_LEN as u64 + B_LEN as u64 - size))
            } else if pick < 95 {
                let boundaries = [A_START, A_START + PAGE, B_START];
                let boundary = *rng.pick(&boundaries);
                crossing(rng, boundary)
            } else {
                down(WINDOW + rng.below(WINDOW_LEN as u64 - size))
            }
        }
    }
}

/// The supported instruction forms, by class (integer, legacy vector and
/// x87, VEX, EVEX), so that random picks are not dominated by the
/// thousands of EVEX forms.
pub struct Forms {
    pub classes: [Vec<Code>; 4],
}

impl Forms {
    pub fn all(&self) -> impl Iterator<Item = Code> + '_ {
        self.classes.iter().flatten().copied()
    }
}

pub fn forms(layout: &Layout) -> Forms {
    let flags = cpu_flags();
    let mut classes: [Vec<Code>; 4] = Default::default();
    for code in Code::values() {
        let op = code.op_code();
        if !op.is_instruction()
            || !op.mode64()
            || !op.cpl3()
            || op.is_privileged()
            || op.is_stack_instruction()
            || op.is_input_output()
            || op.is_save_restore()
            || op.is_nop()
            || op.is_reserved_nop()
            || excluded(code.mnemonic())
            // `movsxd r16, m16`: AMD CPUs read 32 bits (iced, like Intel's
            // manual, says 16); compilers never emit it.
            || code == Code::Movsxd_r16_rm16
            || !matches!(code.encoding(), EncodingKind::Legacy | EncodingKind::VEX | EncodingKind::EVEX)
        {
            continue;
        }
        let kinds = op.op_kinds();
        let memory = kinds.iter().filter(|k| MEMORY_KINDS.contains(k)).count();
        if memory != 1 || !kinds.iter().all(|&k| operand_supported(k)) {
            continue;
        }
        let mut probe = Instruction::default();
        probe.set_code(code);
        if !probe
            .cpuid_features()
            .iter()
            .all(|&f| feature_supported(f, &flags, layout))
        {
            continue;
        }
        if matches!(probe.flow_control(), FlowControl::Next) {
            let class = match code.encoding() {
                EncodingKind::Legacy => {
                    let vector = kinds.iter().any(|k| {
                        matches!(
                            k,
                            K::mm_or_mem
                                | K::xmm_or_mem
                                | K::xmm_reg
                                | K::xmm_rm
                                | K::mm_reg
                                | K::mm_rm
                                | K::st0
                                | K::sti_opcode
                        )
                    });
                    let x87 = probe.cpuid_features().iter().any(|f| {
                        matches!(
                            f,
                            CpuidFeature::FPU | CpuidFeature::FPU287 | CpuidFeature::FPU387
                        )
                    });
                    if vector || x87 { 1 } else { 0 }
                }
                EncodingKind::VEX => 2,
                _ => 3,
            };
            classes[class].push(code);
        }
    }
    Forms { classes }
}

fn operand_supported(kind: K) -> bool {
    MEMORY_KINDS.contains(&kind)
        || matches!(
            kind,
            K::r8_reg
                | K::r8_opcode
                | K::r16_reg
                | K::r16_rm
                | K::r16_opcode
                | K::r16_reg_mem
                | K::r32_reg
                | K::r32_rm
                | K::r32_opcode
                | K::r32_vvvv
                | K::r32_reg_mem
                | K::r64_reg
                | K::r64_rm
                | K::r64_opcode
                | K::r64_vvvv
                | K::r64_reg_mem
                | K::k_reg
                | K::k_rm
                | K::k_vvvv
                | K::mm_reg
                | K::mm_rm
                | K::xmm_reg
                | K::xmm_rm
                | K::xmm_vvvv
                | K::xmm_is4
                | K::xmm_is5
                | K::ymm_reg
                | K::ymm_rm
                | K::ymm_vvvv
                | K::ymm_is4
                | K::ymm_is5
                | K::zmm_reg
                | K::zmm_rm
                | K::zmm_vvvv
                | K::al
                | K::cl
                | K::ax
                | K::eax
                | K::rax
                | K::st0
                | K::sti_opcode
                | K::imm8
                | K::imm8_const_1
                | K::imm8sex16
                | K::imm8sex32
                | K::imm8sex64
                | K::imm16
                | K::imm32
                | K::imm32sex64
                | K::imm64
        )
}

fn reg_from(first: Register, n: u64) -> Register {
    let index = first as u32 + n as u32;
    Register::values()
        .find(|&r| r as u32 == index)
        .expect("register")
}

/// A general register number other than RSP.
fn gpr_number(rng: &mut Rng) -> u64 {
    let n = rng.below(15);
    if n >= 4 { n + 1 } else { n }
}

fn gpr_index(reg: Register) -> usize {
    reg.full_register() as usize - Register::RAX as usize
}

fn random_register(rng: &mut Rng, kind: K, evex: bool) -> Option<Register> {
    let vectors = if evex { 32 } else { 16 };
    Some(match kind {
        K::r8_reg | K::r8_opcode => {
            // AL..BH (no REX), or SPL..R15L minus SPL.
            let n = rng.below(20);
            if n < 8 {
                reg_from(Register::AL, n)
            } else {
                reg_from(Register::BPL, n - 8)
            }
        }
        K::r16_reg | K::r16_rm | K::r16_opcode | K::r16_reg_mem => {
            reg_from(Register::AX, gpr_number(rng))
        }
        K::r32_reg | K::r32_rm | K::r32_opcode | K::r32_vvvv | K::r32_reg_mem => {
            reg_from(Register::EAX, gpr_number(rng))
        }
        K::r64_reg | K::r64_rm | K::r64_opcode | K::r64_vvvv | K::r64_reg_mem => {
            reg_from(Register::RAX, gpr_number(rng))
        }
        K::k_reg | K::k_rm | K::k_vvvv => reg_from(Register::K0, rng.below(8)),
        K::mm_reg | K::mm_rm => reg_from(Register::MM0, rng.below(8)),
        K::xmm_reg | K::xmm_rm | K::xmm_vvvv => reg_from(Register::XMM0, rng.below(vectors)),
        K::xmm_is4 | K::xmm_is5 => reg_from(Register::XMM0, rng.below(16)),
        K::ymm_reg | K::ymm_rm | K::ymm_vvvv => reg_from(Register::YMM0, rng.below(vectors)),
        K::ymm_is4 | K::ymm_is5 => reg_from(Register::YMM0, rng.below(16)),
        K::zmm_reg | K::zmm_rm | K::zmm_vvvv => reg_from(Register::ZMM0, rng.below(32)),
        K::al => Register::AL,
        K::cl => Register::CL,
        K::ax => Register::AX,
        K::eax => Register::EAX,
        K::rax => Register::RAX,
        K::st0 => Register::ST0,
        K::sti_opcode => reg_from(Register::ST0, rng.below(8)),
        _ => return None,
    })
}

/// Builds one case of `code` at `placement`; `None` if this random choice
/// of operands cannot be encoded (the caller tries again).
pub fn build(code: Code, placement: Placement, rng: &mut Rng, _layout: &Layout) -> Option<Case> {
    let op = code.op_code();
    let evex = code.encoding() == EncodingKind::EVEX;
    let mut insn = Instruction::default();
    insn.set_code(code);
    let mut memory_op = None;
    let mut had_imm8 = false;
    for i in 0..op.op_count() {
        let kind = op.op_kind(i);
        if MEMORY_KINDS.contains(&kind) {
            insn.set_op_kind(i, OpKind::Memory);
            memory_op = Some(i);
            continue;
        }
        let imm = |insn: &mut Instruction, kind: OpKind| insn.set_op_kind(i, kind);
        match kind {
            K::imm8 => {
                if had_imm8 {
                    imm(&mut insn, OpKind::Immediate8_2nd);
                    insn.set_immediate8_2nd(rng.next() as u8);
                } else {
                    imm(&mut insn, OpKind::Immediate8);
                    insn.set_immediate8(rng.next() as u8);
                    had_imm8 = true;
                }
            }
            K::imm8_const_1 => {
                imm(&mut insn, OpKind::Immediate8);
                insn.set_immediate8(1);
            }
            K::imm8sex16 => {
                imm(&mut insn, OpKind::Immediate8to16);
                insn.set_immediate8to16(rng.next() as i8 as i16);
            }
            K::imm8sex32 => {
                imm(&mut insn, OpKind::Immediate8to32);
                insn.set_immediate8to32(rng.next() as i8 as i32);
            }
            K::imm8sex64 => {
                imm(&mut insn, OpKind::Immediate8to64);
                insn.set_immediate8to64(rng.next() as i8 as i64);
            }
            K::imm16 => {
                imm(&mut insn, OpKind::Immediate16);
                insn.set_immediate16(rng.next() as u16);
            }
            K::imm32 => {
                imm(&mut insn, OpKind::Immediate32);
                insn.set_immediate32(rng.next() as u32);
            }
            K::imm32sex64 => {
                imm(&mut insn, OpKind::Immediate32to64);
                insn.set_immediate32to64(rng.next() as i32 as i64);
            }
            K::imm64 => {
                imm(&mut insn, OpKind::Immediate64);
                insn.set_immediate64(rng.next());
            }
            _ => {
                let reg = random_register(rng, kind, evex)?;
                insn.set_op_kind(i, OpKind::Register);
                insn.set_op_register(i, reg);
            }
        }
    }
    let memory_op = memory_op?;
    // A masked load reads only its selected elements for the masked moves;
    // other masked instructions with a memory source read it whole in the
    // runtime, while the CPU suppresses faults (and reads) of masked-off
    // elements for many of them: only masked moves are generated.
    let masked_source_ok = memory_op == 0 || super::expect::masked_move(code.mnemonic());
    if op.can_use_op_mask_register()
        && (op.require_op_mask_register() || (masked_source_ok && rng.chance(40)))
    {
        insn.set_op_mask(reg_from(Register::K1, rng.below(7)));
        if op.can_use_zeroing_masking() && memory_op != 0 && rng.chance(30) {
            insn.set_zeroing_masking(true);
        }
    }
    if op.can_broadcast() && rng.chance(25) {
        insn.set_is_broadcast(true);
    }
    if op.can_use_lock_prefix() && memory_op == 0 && rng.chance(40) {
        insn.set_has_lock_prefix(true);
    }

    let mut gpr = [0u64; 16];
    for value in gpr.iter_mut() {
        *value = rng.next();
    }
    gpr[4] = STACK_TOP;
    let size = insn.memory_size().size() as u64;
    if size == 0 || size > 512 {
        return None;
    }
    let mut addr = target(rng, placement, size, alignment(&insn));
    let bit_test = matches!(
        code.mnemonic(),
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) && insn.op1_kind() == OpKind::Register;
    let mut bit_offset = None;
    if bit_test {
        // The register offset selects the word: the operand's address
        // lies up to 16 words away.
        let words = rng.below(33) as i64 - 16;
        let bit = rng.below(8 * size) as i64;
        bit_offset = Some(words * 8 * size as i64 + bit);
        addr = addr.wrapping_sub((words * size as i64) as u64);
    }
    // The memory operand.
    if rng.chance(8) {
        insn.set_memory_base(Register::RIP);
        insn.set_memory_index(Register::None);
        insn.set_memory_displacement64(addr);
        insn.set_memory_displ_size(8);
    } else {
        let base = gpr_number(rng) as usize;
        let index = if rng.chance(35) {
            None
        } else {
            Some(gpr_number(rng) as usize)
        };
        let index = index.filter(|&i| i != base);
        let scale = *rng.pick(&[1u32, 2, 4, 8]);
        let disp: i64 = match rng.below(3) {
            0 => 0,
            1 => rng.next() as i8 as i64,
            _ => rng.next() as i32 as i64,
        };
        let mut base_value = addr.wrapping_sub(disp as u64);
        if let Some(i) = index {
            base_value = base_value.wrapping_sub(gpr[i].wrapping_mul(u64::from(scale)));
            insn.set_memory_index(reg_from(Register::RAX, i as u64));
            insn.set_memory_index_scale(scale);
        }
        gpr[base] = base_value;
        insn.set_memory_base(reg_from(Register::RAX, base as u64));
        insn.set_memory_displacement64(disp as u64);
        insn.set_memory_displ_size(if disp == 0 {
            0
        } else if i8::try_from(disp).is_ok() {
            1
        } else {
            4
        });
        if rng.chance(5) {
            insn.set_segment_prefix(Register::GS);
        }
    }
    // Register values the semantics want.
    let (name_seed, seed) = (rng.next(), rng.next());
    let window = {
        let mut w = vec![0u8; WINDOW_LEN];
        Rng::new(seed).fill(&mut w);
        w
    };
    let memory_value = |at: u64, len: usize| {
        let start = at.wrapping_sub(WINDOW) as usize;
        let mut v = [0u8; 16];
        if let Some(bytes) = window.get(start..start + len) {
            v[..len].copy_from_slice(bytes);
        }
        v
    };
    if let Some(offset) = bit_offset {
        let reg = insn.op1_register();
        let mask = match size {
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        };
        let i = gpr_index(reg);
        if Some(i)
            == insn
                .memory_base()
                .is_gpr()
                .then(|| gpr_index(insn.memory_base()))
            || Some(i)
                == insn
                    .memory_index()
                    .is_gpr()
                    .then(|| gpr_index(insn.memory_index()))
        {
            return None;
        }
        gpr[i] = (gpr[i] & !mask) | (offset as u64 & mask);
    }
    let uses = |insn: &Instruction, n: usize| {
        [insn.memory_base(), insn.memory_index()]
            .iter()
            .any(|r| r.is_gpr() && gpr_index(*r) == n)
    };
    match code.mnemonic() {
        Mnemonic::Cmpxchg if rng.chance(50) && !uses(&insn, 0) => {
            let v = memory_value(addr, size as usize);
            let current = u64::from_le_bytes(v[..8].try_into().expect("8"));
            let mask = if size == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * size)) - 1
            };
            gpr[0] = (gpr[0] & !mask) | (current & mask);
        }
        Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b
            if rng.chance(50) && !uses(&insn, 0) && !uses(&insn, 2) =>
        {
            let v = memory_value(addr, size as usize);
            let half = size as usize / 2;
            let mut lo = [0u8; 8];
            let mut hi = [0u8; 8];
            lo[..half].copy_from_slice(&v[..half]);
            hi[..half].copy_from_slice(&v[half..size as usize]);
            gpr[0] = u64::from_le_bytes(lo);
            gpr[2] = u64::from_le_bytes(hi);
        }
        _ => {}
    }
    let mut encoder = Encoder::new(64);
    encoder.encode(&insn, CODE).ok()?;
    let bytes = encoder.take_buffer();
    let decoded = Decoder::with_ip(64, &bytes, CODE, DecoderOptions::NONE).decode();
    if decoded.code() != code || decoded.is_invalid() || decoded.flow_control() != FlowControl::Next
    {
        return None;
    }
    let _ = name_seed;
    let mut text = String::new();
    iced_x86::Formatter::format(&mut iced_x86::IntelFormatter::new(), &decoded, &mut text);
    Some(Case {
        name: format!("{text} @{:#x} ({placement:?})", addr.wrapping_sub(WINDOW)),
        code: bytes,
        gpr,
        rflags: 0x202 | (rng.next() & 0x8d5),
        seed,
        patches: Vec::new(),
        accesses: None,
    })
}

/// `count` random cases from `seed`.
pub fn cases(layout: &Layout, forms: &Forms, count: usize, seed: u64) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        if rng.chance(8) {
            out.push(string_or_stack_case(&mut rng));
            continue;
        }
        let class = match rng.below(100) {
            0..40 => 0,
            40..65 => 1,
            65..85 => 2,
            _ => 3,
        };
        let codes = &forms.classes[class];
        if codes.is_empty() {
            continue;
        }
        let code = *rng.pick(codes);
        if let Some(case) = build(code, Placement::Random, &mut rng, layout) {
            out.push(case);
        }
    }
    out
}

/// A random string instruction (`movs`, `stos`, `lods`, `cmps`, `scas`,
/// every width, with and without a repeat prefix, DF either way) on random
/// source and destination ranges that do not overlap, or a random
/// `push`/`pop` with a memory operand; the accesses are worked out here
/// (for `cmps`/`scas` by comparing the initial memory as the CPU will).
pub fn string_or_stack_case(rng: &mut Rng) -> Case {
    use iced_x86::code_asm::*;
    let seed = rng.next();
    let mut window = vec![0u8; WINDOW_LEN];
    Rng::new(seed).fill(&mut window);
    let mut gpr = [0u64; 16];
    for value in gpr.iter_mut() {
        *value = rng.next();
    }
    gpr[4] = STACK_TOP;
    let mut rflags = 0x202 | (rng.next() & 0x8d5);
    let width = *rng.pick(&[1usize, 2, 4, 8]);
    let w = width as u64;

    if rng.chance(20) {
        // push/pop with a memory operand (m16 or m64), base + index.
        let addr = target(rng, Placement::Random, if width >= 4 { 8 } else { 2 }, 1);
        let size = if width >= 4 { 8 } else { 2 };
        let push = rng.chance(50);
        gpr[3] = addr.wrapping_sub(gpr[1].wrapping_mul(2)).wrapping_sub(0x10);
        let mut a = CodeAssembler::new(64).expect("64-bit");
        let operand = rbx + rcx * 2 + 0x10;
        let result = match (push, size) {
            (true, 8) => a.push(qword_ptr(operand)).and_then(|()| a.pop(rax)),
            (true, _) => a.push(word_ptr(operand)).and_then(|()| a.pop(ax)),
            (false, 8) => a.push(rdx).and_then(|()| a.pop(qword_ptr(operand))),
            (false, _) => a.push(dx).and_then(|()| a.pop(word_ptr(operand))),
        };
        result.expect("assemble");
        let code = a.assemble(CODE).expect("assemble");
        return Case {
            name: format!(
                "{} m{} at {:#x}",
                if push { "push" } else { "pop" },
                8 * size,
                addr - WINDOW
            ),
            code,
            gpr,
            rflags,
            seed,
            patches: Vec::new(),
            accesses: Some(vec![if push {
                super::Access::read(addr, size)
            } else {
                super::Access::write(addr, size)
            }]),
        };
    }

    let op = rng.below(5);
    let repeat = rng.below(3); // 0: none, 1: rep/repe, 2: repne (cmps/scas)
    let count = if repeat == 0 { 1 } else { rng.below(7) };
    let backwards = rng.chance(40);
    if backwards {
        rflags |= 1 << 10;
    }
    // A range of `count` elements ending or starting at a random place.
    let span = w * count.max(1);
    let place = |rng: &mut Rng| {
        let start = target(rng, Placement::Random, span, 1);
        if backwards { start + span - w } else { start }
    };
    let source = place(rng);
    let mut dest = place(rng);
    let range = |first: u64| {
        if backwards {
            (first + w - span, first + w)
        } else {
            (first, first + span)
        }
    };
    for _ in 0..20 {
        let (s0, s1) = range(source);
        let (d0, d1) = range(dest);
        if s1 <= d0 || d1 <= s0 {
            break;
        }
        dest = place(rng);
    }
    let (s0, s1) = range(source);
    let (d0, d1) = range(dest);
    if !(s1 <= d0 || d1 <= s0) {
        // Give up on overlap: one element only.
        return string_or_stack_case(rng);
    }
    gpr[6] = source;
    gpr[7] = dest;
    gpr[1] = if repeat == 0 { gpr[1] } else { count };
    let element = |first: u64, k: u64| {
        if backwards {
            first - k * w
        } else {
            first + k * w
        }
    };
    let read = |at: u64| {
        let i = (at - WINDOW) as usize;
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(&window[i..i + width]);
        u64::from_le_bytes(v)
    };
    let mut a = CodeAssembler::new(64).expect("64-bit");
    // The prefix applies to the next instruction the assembler adds.
    match (repeat, op >= 3) {
        (1, true) => drop(a.repe()),
        (2, true) => drop(a.repne()),
        (1 | 2, false) => drop(a.rep()),
        _ => {}
    }
    let name = ["movs", "stos", "lods", "cmps", "scas"][op as usize];
    let result = match (op, width) {
        (0, 1) => a.movsb(),
        (0, 2) => a.movsw(),
        (0, 4) => a.movsd(),
        (0, _) => a.movsq(),
        (1, 1) => a.stosb(),
        (1, 2) => a.stosw(),
        (1, 4) => a.stosd(),
        (1, _) => a.stosq(),
        (2, 1) => a.lodsb(),
        (2, 2) => a.lodsw(),
        (2, 4) => a.lodsd(),
        (2, _) => a.lodsq(),
        (3, 1) => a.cmpsb(),
        (3, 2) => a.cmpsw(),
        (3, 4) => a.cmpsd(),
        (3, _) => a.cmpsq(),
        (_, 1) => a.scasb(),
        (_, 2) => a.scasw(),
        (_, 4) => a.scasd(),
        (_, _) => a.scasq(),
    };
    result.expect("assemble");
    let code = a.assemble(CODE).expect("assemble");
    let mask = if width == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    };
    let mut accesses = Vec::new();
    let iterations = if repeat == 0 { 1 } else { count };
    for k in 0..iterations {
        let (s, d) = (element(source, k), element(dest, k));
        match op {
            0 => {
                accesses.push(super::Access::read(s, width));
                accesses.push(super::Access::write(d, width));
            }
            1 => accesses.push(super::Access::write(d, width)),
            2 => accesses.push(super::Access::read(s, width)),
            _ => {
                let (left, right) = if op == 3 {
                    accesses.push(super::Access::read(s, width));
                    (read(s), read(d))
                } else {
                    (gpr[0] & mask, read(d))
                };
                accesses.push(super::Access::read(d, width));
                let equal = left == right;
                if (repeat == 1 && !equal) || (repeat == 2 && equal) {
                    break;
                }
            }
        }
    }
    let prefix = ["", "rep ", "repne "][repeat as usize];
    Case {
        name: format!(
            "{prefix}{name} w{width} x{count}{} {:#x} -> {:#x}",
            if backwards { " (DF)" } else { "" },
            source.wrapping_sub(WINDOW),
            dest.wrapping_sub(WINDOW)
        ),
        code,
        gpr,
        rflags,
        seed,
        patches: Vec::new(),
        accesses: Some(accesses),
    }
}
