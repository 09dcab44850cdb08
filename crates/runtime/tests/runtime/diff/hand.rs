//! Hand-written cases: every supported instruction form at every placement
//! (see [`super::random::PLACEMENTS`]), and cases whose semantics need a
//! particular setup: `cmpxchg` succeeding and failing, `bt*` with far
//! register offsets, string instructions in every direction and
//! placement, `push`/`pop`/`call`/`jmp` through traced memory, divisions,
//! control-state loads with valid images, RSP as data, FS/GS-free `gs:`,
//! RIP-relative operands.

use iced_x86::code_asm::*;

use super::layout::*;
use super::random::{self, Forms, PLACEMENTS};
use super::rng::Rng;
use super::xstate::Layout;
use super::{Access, Case};

type Asm = fn(&mut CodeAssembler) -> Result<(), IcedError>;

fn assemble(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).expect("64-bit");
    f(&mut a).expect("assemble");
    a.assemble(CODE).expect("assemble")
}

struct Cases {
    out: Vec<Case>,
}

impl Cases {
    fn add(&mut self, name: impl Into<String>, code: Vec<u8>, setup: impl FnOnce(&mut Case)) {
        let n = self.out.len() as u64;
        let mut case = Case {
            name: name.into(),
            code,
            gpr: [0; 16],
            rflags: 0x202,
            seed: 0x4a4e_0000 + n,
            patches: Vec::new(),
            accesses: None,
        };
        let mut rng = Rng::new(case.seed);
        for value in case.gpr.iter_mut() {
            *value = rng.next();
        }
        case.gpr[4] = STACK_TOP;
        case.rflags |= rng.next() & 0x8d5;
        setup(&mut case);
        self.out.push(case);
    }
}

const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
const RBX: usize = 3;
const RSI: usize = 6;
const RDI: usize = 7;
const CF: u64 = 1;
const DF: u64 = 1 << 10;

pub fn cases(layout: &Layout, forms: &Forms) -> Vec<Case> {
    let mut c = Cases { out: Vec::new() };

    // Every form at every placement.
    let mut rng = Rng::new(0xf0f0_1234);
    for code in forms.all() {
        for &placement in PLACEMENTS {
            for _attempt in 0..20 {
                if let Some(case) = random::build(code, placement, &mut rng, layout) {
                    c.out.push(case);
                    break;
                }
            }
        }
    }

    compare_and_exchange(&mut c);
    bit_tests(&mut c);
    strings(&mut c);
    stack_and_branches(&mut c);
    arithmetic(&mut c);
    control_state(&mut c, layout);
    addressing(&mut c);
    c.out
}

fn compare_and_exchange(c: &mut Cases) {
    let at = A_START + 0x208;
    for (width, succeed) in [
        (1, true),
        (1, false),
        (2, true),
        (4, false),
        (8, true),
        (8, false),
    ] {
        let value = 0x1122_3344_5566_7788u64;
        let code = assemble(|a| match width {
            1 => a.lock().cmpxchg(byte_ptr(rbx), cl),
            2 => a.cmpxchg(word_ptr(rbx), cx),
            4 => a.lock().cmpxchg(dword_ptr(rbx), ecx),
            _ => a.lock().cmpxchg(qword_ptr(rbx), rcx),
        });
        c.add(
            format!(
                "cmpxchg m{} ({})",
                8 * width,
                if succeed { "equal" } else { "different" }
            ),
            code,
            |case| {
                case.gpr[RBX] = at;
                case.patches
                    .push((at, value.to_le_bytes()[..width].to_vec()));
                case.gpr[RAX] = if succeed { value } else { !value };
                // Written either way (Intel SDM, CMPXCHG).
                case.accesses = Some(vec![Access::read(at, width), Access::write(at, width)]);
            },
        );
    }
    for (sixteen, succeed, at) in [
        (false, true, A_START + 0x300),
        (false, false, B_START - 4),
        (true, true, A_START + 0x310),
        (true, false, A_START + 0x320),
    ] {
        let width = if sixteen { 16 } else { 8 };
        let code = if sixteen {
            assemble(|a| a.lock().cmpxchg16b(xmmword_ptr(rsi)))
        } else {
            assemble(|a| a.cmpxchg8b(qword_ptr(rsi)))
        };
        c.add(
            format!(
                "cmpxchg{}b at {:#x} ({})",
                8 * width,
                at - WINDOW,
                if succeed { "equal" } else { "different" }
            ),
            code,
            |case| {
                let lo = 0x0102_0304_0506_0708u64;
                let hi = 0x1112_1314_1516_1718u64;
                let mut bytes = lo.to_le_bytes().to_vec();
                bytes.extend_from_slice(&hi.to_le_bytes());
                case.gpr[RSI] = at;
                case.patches.push((at, bytes[..width].to_vec()));
                if sixteen {
                    case.gpr[RAX] = lo;
                    case.gpr[RDX] = if succeed { hi } else { 0 };
                } else {
                    case.gpr[RAX] = if succeed { lo & 0xffff_ffff } else { 0 };
                    case.gpr[RDX] = lo >> 32;
                }
            },
        );
    }
}

fn bit_tests(c: &mut Cases) {
    let ops: [(&str, Asm, Asm, Asm, bool); 4] = [
        (
            "bt",
            |a| a.bt(word_ptr(rbx), dx),
            |a| a.bt(dword_ptr(rbx), edx),
            |a| a.bt(qword_ptr(rbx), rdx),
            false,
        ),
        (
            "bts",
            |a| a.bts(word_ptr(rbx), dx),
            |a| a.lock().bts(dword_ptr(rbx), edx),
            |a| a.bts(qword_ptr(rbx), rdx),
            true,
        ),
        (
            "btr",
            |a| a.lock().btr(word_ptr(rbx), dx),
            |a| a.btr(dword_ptr(rbx), edx),
            |a| a.btr(qword_ptr(rbx), rdx),
            true,
        ),
        (
            "btc",
            |a| a.btc(word_ptr(rbx), dx),
            |a| a.btc(dword_ptr(rbx), edx),
            |a| a.lock().btc(qword_ptr(rbx), rdx),
            true,
        ),
    ];
    for (name, w16, w32, w64, writes) in ops {
        for (width, f) in [(2usize, w16), (4, w32), (8, w64)] {
            for offset in [-1000i64, -65, -1, 0, 7, 63, 64, 1000, 8000] {
                let base = A_START + 0x800;
                let bits = 8 * width as i64;
                let word = (base as i64 + offset.div_euclid(bits) * width as i64) as u64;
                c.add(
                    format!("{name} m{}, reg offset {offset}", 8 * width),
                    assemble(f),
                    |case| {
                        case.gpr[RBX] = base;
                        let mask = if width == 8 {
                            u64::MAX
                        } else {
                            (1u64 << bits) - 1
                        };
                        case.gpr[RDX] = (case.gpr[RDX] & !mask) | (offset as u64 & mask);
                        let mut accesses = vec![Access::read(word, width)];
                        if writes {
                            accesses.push(Access::write(word, width));
                        }
                        case.accesses = Some(accesses);
                    },
                );
            }
        }
    }
}

fn strings(c: &mut Cases) {
    // (name, element width, code)
    let movs: [(&str, usize, Asm); 4] = [
        ("movsb", 1, |a| a.rep().movsb()),
        ("movsw", 2, |a| a.rep().movsw()),
        ("movsd", 4, |a| a.rep().movsd()),
        ("movsq", 8, |a| a.rep().movsq()),
    ];
    // (source, destination): traced to plain, plain to traced, traced to
    // traced in another mapping, crossing into a mapping.
    let places = [
        (A_START + 0x10, WINDOW + 0x800),
        (WINDOW + 0x800, A_START + 0x33),
        (A_START + 0x400, B_START + 0x100),
        (A_START - 5, B_START - 7),
    ];
    for (name, width, f) in movs {
        for (source, dest) in places {
            for backwards in [false, true] {
                let count = 5u64;
                c.add(
                    format!(
                        "rep {name} x{count} {:#x} -> {:#x}{}",
                        source - WINDOW,
                        dest - WINDOW,
                        if backwards { " (DF)" } else { "" }
                    ),
                    assemble(f),
                    |case| {
                        case.gpr[RSI] = source;
                        case.gpr[RDI] = dest;
                        case.gpr[RCX] = count;
                        if backwards {
                            case.rflags |= DF;
                        }
                        let step = |k: u64| {
                            if backwards {
                                0u64.wrapping_sub(k * width as u64)
                            } else {
                                k * width as u64
                            }
                        };
                        let mut accesses = Vec::new();
                        for k in 0..count {
                            accesses.push(Access::read(source.wrapping_add(step(k)), width));
                            accesses.push(Access::write(dest.wrapping_add(step(k)), width));
                        }
                        case.accesses = Some(accesses);
                    },
                );
            }
        }
    }
    let stos: [(&str, usize, Asm); 4] = [
        ("stosb", 1, |a| a.rep().stosb()),
        ("stosw", 2, |a| a.rep().stosw()),
        ("stosd", 4, |a| a.rep().stosd()),
        ("stosq", 8, |a| a.rep().stosq()),
    ];
    for (name, width, f) in stos {
        for dest in [A_START + 0x21, B_START - 9] {
            c.add(
                format!("rep {name} x4 at {:#x}", dest - WINDOW),
                assemble(f),
                |case| {
                    case.gpr[RDI] = dest;
                    case.gpr[RCX] = 4;
                    case.accesses = Some(
                        (0..4)
                            .map(|k| Access::write(dest + k * width as u64, width))
                            .collect(),
                    );
                },
            );
        }
    }
    let lods: [(&str, usize, Asm); 4] = [
        ("lodsb", 1, |a| a.lodsb()),
        ("lodsw", 2, |a| a.lodsw()),
        ("lodsd", 4, |a| a.lodsd()),
        ("lodsq", 8, |a| a.lodsq()),
    ];
    for (name, width, f) in lods {
        for source in [A_START + 0x45, A_START - 1] {
            c.add(
                format!("{name} at {:#x} (DF)", source - WINDOW),
                assemble(f),
                |case| {
                    case.gpr[RSI] = source;
                    case.rflags |= DF;
                    case.accesses = Some(vec![Access::read(source, width)]);
                },
            );
        }
    }
    // repe cmpsb stops at the first difference; repne scasw at the first match.
    for (source, dest) in [
        (A_START + 0x500, WINDOW + 0x900),
        (WINDOW + 0x900, B_START + 0x20),
    ] {
        c.add(
            format!("repe cmpsb {:#x} vs {:#x}", source - WINDOW, dest - WINDOW),
            assemble(|a| a.repe().cmpsb()),
            |case| {
                case.gpr[RSI] = source;
                case.gpr[RDI] = dest;
                case.gpr[RCX] = 10;
                let same = b"abcdefXhij".to_vec();
                let mut other = same.clone();
                other[6] = b'Y';
                case.patches.push((source, same));
                case.patches.push((dest, other));
                case.accesses = Some(
                    (0..7)
                        .flat_map(|k| [Access::read(source + k, 1), Access::read(dest + k, 1)])
                        .collect(),
                );
            },
        );
    }
    c.add(
        "repne scasw (finds the third word)",
        assemble(|a| a.repne().scasw()),
        |case| {
            let dest = A_START + 0x600;
            case.gpr[RDI] = dest;
            case.gpr[RCX] = 8;
            case.gpr[RAX] = 0xbeef;
            case.patches
                .push((dest, vec![1, 0, 2, 0, 0xef, 0xbe, 3, 0]));
            case.accesses = Some((0..3).map(|k| Access::read(dest + 2 * k, 2)).collect());
        },
    );
    c.add(
        "cmpsq (DF) crossing into B",
        assemble(|a| a.cmpsq()),
        |case| {
            case.gpr[RSI] = B_START - 4;
            case.gpr[RDI] = A_START + 0x10;
            case.rflags |= DF;
            case.accesses = Some(vec![
                Access::read(B_START - 4, 8),
                Access::read(A_START + 0x10, 8),
            ]);
        },
    );
    c.add(
        "rep movsb with rcx = 0",
        assemble(|a| a.rep().movsb()),
        |case| {
            case.gpr[RSI] = A_START;
            case.gpr[RDI] = A_START + 0x100;
            case.gpr[RCX] = 0;
            case.accesses = Some(Vec::new());
        },
    );
}

fn stack_and_branches(c: &mut Cases) {
    for at in [A_START + 0x80, A_START - 4, B_START - 1] {
        c.add(
            format!("push qword [{:#x}]; pop rax", at - WINDOW),
            assemble(|a| {
                a.push(qword_ptr(rbx))?;
                a.pop(rax)
            }),
            |case| {
                case.gpr[RBX] = at;
                case.accesses = Some(vec![Access::read(at, 8)]);
            },
        );
        c.add(
            format!("push word [{:#x}]; pop ax", at - WINDOW),
            assemble(|a| {
                a.push(word_ptr(rbx))?;
                a.pop(ax)
            }),
            |case| {
                case.gpr[RBX] = at;
                case.accesses = Some(vec![Access::read(at, 2)]);
            },
        );
        c.add(
            format!("push rcx; pop qword [{:#x}]", at - WINDOW),
            assemble(|a| {
                a.push(rcx)?;
                a.pop(qword_ptr(rbx))
            }),
            |case| {
                case.gpr[RBX] = at;
                case.accesses = Some(vec![Access::write(at, 8)]);
            },
        );
        c.add(
            format!("push cx; pop word [{:#x}]", at - WINDOW),
            assemble(|a| {
                a.push(cx)?;
                a.pop(word_ptr(rbx))
            }),
            |case| {
                case.gpr[RBX] = at;
                case.accesses = Some(vec![Access::write(at, 2)]);
            },
        );
    }
    // pop [rsp + 8]: the address is computed after RSP moves.
    c.add(
        "push rcx; push rdx; pop qword [rsp+8]; pop rax",
        assemble(|a| {
            a.push(rcx)?;
            a.push(rdx)?;
            a.pop(qword_ptr(rsp + 8))?;
            a.pop(rax)
        }),
        |case| {
            case.accesses = Some(Vec::new());
        },
    );
    // call/jmp through a pointer in traced memory: the pointer names an
    // instruction of the case.
    let code = assemble(|a| {
        let mut over = a.create_label();
        a.call(qword_ptr(rbx))?;
        a.jmp(over)?;
        a.add(rax, 1)?;
        a.ret()?;
        a.set_label(&mut over)?;
        a.nop()
    });
    let landing = instruction_address(&code, 2);
    c.add("call [A+0x90] (returns)", code, |case| {
        let at = A_START + 0x90;
        case.gpr[RBX] = at;
        case.patches.push((at, landing.to_le_bytes().to_vec()));
        case.accesses = Some(vec![Access::read(at, 8)]);
    });
    let code = assemble(|a| {
        a.jmp(qword_ptr(rbx + 0x10))?;
        a.add(rax, 1)?;
        a.add(rcx, 1)
    });
    let landing = instruction_address(&code, 2);
    c.add("jmp [B-4] (crossing into B)", code, |case| {
        let at = B_START - 4;
        case.gpr[RBX] = at - 0x10;
        case.patches.push((at, landing.to_le_bytes().to_vec()));
        case.accesses = Some(vec![Access::read(at, 8)]);
    });
}

/// The address of the `index`th instruction of `code` (assembled at CODE).
fn instruction_address(code: &[u8], index: usize) -> u64 {
    let mut decoder = iced_x86::Decoder::with_ip(64, code, CODE, iced_x86::DecoderOptions::NONE);
    decoder.iter().nth(index).expect("instruction").ip()
}

fn arithmetic(c: &mut Cases) {
    // Divisions with operands that do not fault.
    let at = A_START + 0x700;
    let divs: [(&str, usize, Asm); 8] = [
        ("div byte", 1, |a| a.div(byte_ptr(rbx))),
        ("div word", 2, |a| a.div(word_ptr(rbx))),
        ("div dword", 4, |a| a.div(dword_ptr(rbx))),
        ("div qword", 8, |a| a.div(qword_ptr(rbx))),
        ("idiv byte", 1, |a| a.idiv(byte_ptr(rbx))),
        ("idiv word", 2, |a| a.idiv(word_ptr(rbx))),
        ("idiv dword", 4, |a| a.idiv(dword_ptr(rbx))),
        ("idiv qword", 8, |a| a.idiv(qword_ptr(rbx))),
    ];
    for (name, width, f) in divs {
        c.add(name, assemble(f), |case| {
            case.gpr[RBX] = at;
            case.gpr[RAX] = 300;
            case.gpr[RDX] = 0;
            case.patches
                .push((at, 7u64.to_le_bytes()[..width].to_vec()));
        });
    }
    // Flags from the carry: adc/sbb/rcl with CF set and clear.
    for carry in [false, true] {
        let ops: [(&str, Asm); 4] = [
            ("adc dword [rbx], ecx", |a| a.adc(dword_ptr(rbx), ecx)),
            ("sbb byte [rbx], 0x7f", |a| a.sbb(byte_ptr(rbx), 0x7f)),
            ("rcl word [rbx], cl", |a| a.rcl(word_ptr(rbx), cl)),
            ("rcr qword [rbx], 1", |a| a.rcr(qword_ptr(rbx), 1)),
        ];
        for (name, f) in ops {
            c.add(
                format!("{name} (CF={})", carry as u8),
                assemble(f),
                |case| {
                    case.gpr[RBX] = A_START + 0x123;
                    case.rflags = (case.rflags & !CF) | carry as u64;
                },
            );
        }
    }
    // Shift counts that leave the flags alone (0) or mask to 0.
    for count in [0u64, 32, 1, 31] {
        c.add(
            format!("shl dword [rbx], cl (cl={count})"),
            assemble(|a| a.shl(dword_ptr(rbx), cl)),
            |case| {
                case.gpr[RBX] = A_START + 0x140;
                case.gpr[RCX] = count;
            },
        );
    }
    // setcc both ways, cmovcc true and false (the load happens either way).
    for flags in [0u64, 0x8d5] {
        c.add(
            format!("setz byte [A] (flags {flags:#x})"),
            assemble(|a| a.sete(byte_ptr(rbx))),
            |case| {
                case.gpr[RBX] = A_START;
                case.rflags = 0x202 | flags;
            },
        );
        c.add(
            format!("cmovnz rax, [A->B] (flags {flags:#x})"),
            assemble(|a| a.cmovne(rax, qword_ptr(rbx))),
            |case| {
                case.gpr[RBX] = B_START - 3;
                case.rflags = 0x202 | flags;
            },
        );
    }
    // RSP as data: the copy gets another register in its place.
    let rsp_forms: [(&str, Asm); 5] = [
        ("add qword [rbx], rsp", |a| a.add(qword_ptr(rbx), rsp)),
        ("cmp rsp, [rbx]", |a| a.cmp(rsp, qword_ptr(rbx))),
        ("test [rbx], esp", |a| a.test(dword_ptr(rbx), esp)),
        ("or word [rbx], sp", |a| a.or(word_ptr(rbx), sp)),
        ("xadd [rbx], rax", |a| a.xadd(qword_ptr(rbx), rax)),
    ];
    for (name, f) in rsp_forms {
        c.add(name, assemble(f), |case| {
            case.gpr[RBX] = A_START + 0x1f8;
        });
    }
    c.add(
        "and spl into memory: and [rbx], spl",
        assemble(|a| a.and(byte_ptr(rbx), spl)),
        |case| {
            case.gpr[RBX] = B_START + 7;
        },
    );
    // Two accesses in one case: a read-modify-write sequence.
    c.add(
        "mov eax, [rbx]; or eax, 0x10; mov [rbx], eax; lock inc dword [rbx+4]",
        assemble(|a| {
            a.mov(eax, dword_ptr(rbx))?;
            a.or(eax, 0x10)?;
            a.mov(dword_ptr(rbx), eax)?;
            a.lock().inc(dword_ptr(rbx + 4))
        }),
        |case| {
            case.gpr[RBX] = A_START + 0x40;
            case.accesses = Some(vec![
                Access::read(A_START + 0x40, 4),
                Access::write(A_START + 0x40, 4),
                Access::read(A_START + 0x44, 4),
                Access::write(A_START + 0x44, 4),
            ]);
        },
    );
}

fn control_state(c: &mut Cases, layout: &Layout) {
    let at = A_START + 0x900;
    c.add(
        "ldmxcsr [rbx]; stmxcsr [rbx+4]",
        assemble(|a| {
            a.ldmxcsr(dword_ptr(rbx))?;
            a.stmxcsr(dword_ptr(rbx + 4))
        }),
        |case| {
            case.gpr[RBX] = at;
            case.patches.push((at, 0x7f80u32.to_le_bytes().to_vec()));
        },
    );
    c.add(
        "fldcw [rbx]; fnstcw [rbx+2]",
        assemble(|a| {
            a.fldcw(word_ptr(rbx))?;
            a.fnstcw(word_ptr(rbx + 2))
        }),
        |case| {
            case.gpr[RBX] = at - 1;
            case.patches
                .push((at - 1, 0x0f7fu16.to_le_bytes().to_vec()));
        },
    );
    // An x87 environment (28 bytes) and state (108 bytes): all registers
    // empty, default control word.
    let mut env = vec![0u8; 28];
    env[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
    env[8..10].copy_from_slice(&0xffffu16.to_le_bytes());
    let mut state = env.clone();
    state.resize(108, 0);
    for (name, image, code, len) in [
        (
            "fldenv [rbx]",
            env.clone(),
            assemble(|a| a.fldenv(ptr(rbx))),
            28usize,
        ),
        (
            "frstor [rbx]",
            state.clone(),
            assemble(|a| a.frstor(ptr(rbx))),
            108,
        ),
    ] {
        for place in [at, B_START - 20] {
            let image = image.clone();
            c.add(
                format!("{name} at {:#x}", place - WINDOW),
                code.clone(),
                |case| {
                    case.gpr[RBX] = place;
                    case.patches.push((place, image));
                    case.accesses = Some(vec![Access::read(place, len)]);
                },
            );
        }
    }
    let mut fx = vec![0u8; 512];
    fx[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
    fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    fx[160..176].copy_from_slice(&[0x5a; 16]);
    c.add(
        "fxrstor64 [rbx]",
        assemble(|a| a.fxrstor64(ptr(rbx))),
        |case| {
            case.gpr[RBX] = A_START + 0xa00;
            case.patches.push((A_START + 0xa00, fx.clone()));
            case.accesses = Some(vec![Access::read(A_START + 0xa00, 512)]);
        },
    );
    c.add(
        "fxsave64 [rbx] across A into B",
        assemble(|a| a.fxsave64(ptr(rbx))),
        |case| {
            case.gpr[RBX] = B_START - 0x100;
        },
    );
    if !layout.avx {
        return;
    }
    c.add(
        "vldmxcsr [rbx]",
        assemble(|a| a.vldmxcsr(dword_ptr(rbx))),
        |case| {
            case.gpr[RBX] = B_START - 2;
            case.patches
                .push((B_START - 2, 0x3f80u32.to_le_bytes().to_vec()));
        },
    );
}

fn addressing(c: &mut Cases) {
    c.add(
        "mov eax, gs:[rbx] (GS base 0)",
        assemble(|a| a.mov(eax, dword_ptr(rbx).gs())),
        |case| {
            case.gpr[RBX] = A_START + 0x10;
        },
    );
    c.add(
        "add gs:[rbx+rcx*8+16], edx",
        assemble(|a| a.add(dword_ptr(rbx + rcx * 8 + 16).gs(), edx)),
        |case| {
            case.gpr[RCX] = 3;
            case.gpr[RBX] = A_START + 0x20 - 16 - 24;
        },
    );
    c.add(
        "mov al, [abs64 A+0x33] (moffs)",
        assemble(|a| a.mov(al, byte_ptr(A_START + 0x33))),
        |_| {},
    );
    c.add(
        "mov [abs64 B+8], rax (moffs)",
        assemble(|a| a.mov(qword_ptr(B_START + 8), rax)),
        |_| {},
    );
    c.add(
        "xlatb (al = [rbx + al]) crossing into B",
        assemble(|a| a.xlatb()),
        |case| {
            case.gpr[RBX] = B_START - 0x80;
            case.gpr[RAX] = (case.gpr[RAX] & !0xff) | 0x85;
        },
    );
    c.add(
        "xchg [rax], rax (base is also data)",
        assemble(|a| a.xchg(qword_ptr(rax), rax)),
        |case| {
            case.gpr[RAX] = A_START + 0x77;
        },
    );
    c.add(
        "cmpxchg [rax], rcx (base is the accumulator)",
        assemble(|a| a.cmpxchg(qword_ptr(rax), rcx)),
        |case| {
            case.gpr[RAX] = A_START + 0x88;
            case.accesses = Some(vec![
                Access::read(A_START + 0x88, 8),
                Access::write(A_START + 0x88, 8),
            ]);
        },
    );
}
