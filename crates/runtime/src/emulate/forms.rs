//! The forms the emulator knows, decoded from an instruction into a plan.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::gpr_slot;
use crate::alu::Compare;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Extend {
    None,
    Zero,
    Sign,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Plan {
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
pub(crate) enum StringOp {
    Movs,
    Stos(Register),
    Lods(Register),
}

/// The repeat prefix of a string compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    Once,
    /// `repe`: while equal.
    WhileEqual,
    /// `repne`: while not equal.
    WhileNotEqual,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
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
pub(crate) fn plan(insn: &Instruction) -> Option<Plan> {
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

pub(crate) fn repeat(insn: &Instruction) -> Repeat {
    if insn.has_repe_prefix() {
        Repeat::WhileEqual
    } else if insn.has_repne_prefix() {
        Repeat::WhileNotEqual
    } else {
        Repeat::Once
    }
}
