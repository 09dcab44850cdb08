//! The traced side: runs every case on plain memory, then on the traced
//! mappings, compares, and prints what the trace must hold.
//!
//! Output lines (read by tests/runtime/differential.rs):
//! - `C <case> <name>`
//! - `E <case> <R|W> <A|B> <width> <offset> <value>`: an expected event
//! - `FAIL <case> <what>`: registers, flags, vector state or memory
//!   differ, or (patched) a site is patched that must not be, or not
//!   patched that must be
//! - `P <case> <sites>`: (patched) how many of its sites are patched
//! - `DONE <cases>`
//!
//! Patched (`MMIOTRACE_DIFF_RUNS` set, the runtime with `MMIOTRACE_PATCH=on`):
//! only the cases with a patchable instruction; the code page is made
//! read-execute once a case is written to it, and the traced side runs `runs` times from the same start (the runtime patches a
//! site at its 4th fault, so runs 5 and on take its trampoline), each run
//! compared with the plain one and each logging the case's events again.

use std::ffi::{CString, c_char};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use iced_x86::{Decoder, DecoderOptions, Instruction, InstructionInfoFactory};

use super::expect;
use super::layout::*;
use super::machine::{self, CpuState};
use super::rng::Rng;
use super::xstate::Layout;
use super::{Case, ENV_FILE_A, ENV_FILE_B, ENV_ONLY, ENV_RUNS};

/// Cases per batch: the traced files are mapped once per batch.
const BATCH: usize = 256;
const STACK_FILL_LO: u64 = STACK_TOP - 4096;
const STACK_FILL_LEN: usize = 8192;
/// RFLAGS bits compared: the arithmetic flags and DF.
const FLAGS: u64 = 0x8d5 | 0x400;

/// What the plain run of a case left.
struct Reference {
    gpr: [u64; 16],
    rflags: u64,
    dump: Vec<u8>,
    /// Window bytes that differ from the initial contents.
    changed: Vec<(u32, u8)>,
    stack: Vec<u8>,
}

fn initial_window(case: &Case) -> Vec<u8> {
    let mut window = vec![0u8; WINDOW_LEN];
    Rng::new(case.seed).fill(&mut window);
    for (addr, bytes) in &case.patches {
        if (WINDOW..WINDOW + WINDOW_LEN as u64).contains(addr) {
            let at = (addr - WINDOW) as usize;
            window[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }
    window
}

fn initial_stack(case: &Case) -> Vec<u8> {
    let mut stack = vec![0u8; STACK_FILL_LEN];
    Rng::new(case.seed ^ 0x5157_a5a5).fill(&mut stack);
    for (addr, bytes) in &case.patches {
        if (STACK_FILL_LO..STACK_FILL_LO + STACK_FILL_LEN as u64).contains(addr) {
            let at = (addr - STACK_FILL_LO) as usize;
            stack[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }
    stack
}

pub fn initial_state(case: &Case, layout: &Layout) -> Box<CpuState> {
    let mut state = CpuState::new(layout.mask);
    state.gpr = case.gpr;
    state.rflags = case.rflags;
    layout.random_area(&mut Rng::new(case.seed ^ 0x7ec7_0125), &mut state.area);
    state
}

fn write_memory(addr: u64, bytes: &[u8]) {
    // SAFETY: addr..addr+len lies in the harness's own fixed mappings.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
}

fn read_memory(addr: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    // SAFETY: as in write_memory, readable.
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), len) };
    out
}

fn load_case(case: &Case, patched: bool) {
    let mut code = case.code.clone();
    code.extend_from_slice(&machine::epilogue());
    if patched {
        protect_code(libc::PROT_READ | libc::PROT_WRITE);
    }
    machine::load_code(&code);
    // The runtime patches only code that is read-execute, not writable
    // (it takes writable code for a JIT's).
    if patched {
        protect_code(libc::PROT_READ | libc::PROT_EXEC);
    }
}

fn protect_code(prot: i32) {
    // SAFETY: the harness's own code mapping (layout::CODE), which no case
    // is running while it changes.
    let done = unsafe { libc::mprotect(CODE as *mut libc::c_void, CODE_LEN, prot) };
    assert_eq!(done, 0, "mprotect: {}", std::io::Error::last_os_error());
}

/// Whether the trampolines get their fast path here: a TSC at a constant
/// rate (/proc/cpuinfo) and LAHF in 64-bit mode (docs/ARCHITECTURE.md).
fn fast_path() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .unwrap_or_default();
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    has("constant_tsc") && has("nonstop_tsc") && has("lahf_lm")
}

/// Whether the runtime must, and whether it may, patch `insn` when its
/// access faults often enough (docs/ARCHITECTURE.md, "Patched sites",
/// written out once more): `mov`, `movzx`, `movsx`, `movsxd`, `cmp` or
/// `test` (with the fast path, also the read-modify-writes `add`, `sub`,
/// `and`, `or`, `xor`, `adc`, `sbb` to memory, `inc`, `dec`, `neg`,
/// `not`, and those and two-operand `imul` from memory to a register, and
/// plain 16-, 32- and 64-byte vector moves with XMM0-15 or YMM0-15, or
/// with EVEX any XMM, YMM or ZMM register, with or without an opmask),
/// with one memory operand of 1, 2, 4 or 8 bytes addressed by
/// 64-bit registers (not RSP) and a 32-bit displacement, no prefix that
/// changes it, the other operand a general register (not AH..DH or RSP)
/// or an immediate: it must when the instruction has 5 bytes or more, it
/// may when it has 2 to 4 (`may_patch`).
fn patch_rule(insn: &Instruction) -> (bool, bool) {
    use iced_x86::{Mnemonic, OpKind, Register};
    let read_modify_write = insn.op0_kind() == OpKind::Memory
        && match insn.mnemonic() {
            Mnemonic::Add
            | Mnemonic::Sub
            | Mnemonic::And
            | Mnemonic::Or
            | Mnemonic::Xor
            | Mnemonic::Adc
            | Mnemonic::Sbb => insn.op_count() == 2,
            Mnemonic::Inc | Mnemonic::Dec | Mnemonic::Neg | Mnemonic::Not => insn.op_count() == 1,
            _ => false,
        };
    let alu_load = matches!(
        insn.mnemonic(),
        Mnemonic::Add
            | Mnemonic::Sub
            | Mnemonic::And
            | Mnemonic::Or
            | Mnemonic::Xor
            | Mnemonic::Adc
            | Mnemonic::Sbb
            | Mnemonic::Imul
    ) && insn.op_count() == 2
        && insn.op0_kind() == OpKind::Register
        && insn.op1_kind() == OpKind::Memory;
    let evex = insn.encoding() == iced_x86::EncodingKind::EVEX;
    let vector_move = (matches!(
        insn.mnemonic(),
        Mnemonic::Movups
            | Mnemonic::Movupd
            | Mnemonic::Movaps
            | Mnemonic::Movapd
            | Mnemonic::Movdqu
            | Mnemonic::Movdqa
            | Mnemonic::Vmovups
            | Mnemonic::Vmovupd
            | Mnemonic::Vmovaps
            | Mnemonic::Vmovapd
            | Mnemonic::Vmovdqu
            | Mnemonic::Vmovdqa
    ) || (evex
        && matches!(
            insn.mnemonic(),
            Mnemonic::Vmovdqu8
                | Mnemonic::Vmovdqu16
                | Mnemonic::Vmovdqu32
                | Mnemonic::Vmovdqu64
                | Mnemonic::Vmovdqa32
                | Mnemonic::Vmovdqa64
        )))
        && insn.op_count() == 2
        // Under an opmask only with EVEX: one access per selected element.
        && (insn.op_mask() == Register::None
            || (evex && matches!(insn.memory_size().element_size(), 1 | 2 | 4 | 8)))
        && (!insn.zeroing_masking() || insn.op_mask() != Register::None)
        && !insn.is_broadcast()
        && (0..2).any(|i| {
            insn.op_kind(i) == OpKind::Register && {
                let reg = insn.op_register(i);
                (reg.is_xmm()
                    || (reg.is_ymm() && std::arch::is_x86_feature_detected!("avx"))
                    || (evex && reg.is_zmm()))
                    && reg.number() < if evex { 32 } else { 16 }
            }
        })
        && match insn.memory_size().size() {
            16 | 32 => true,
            64 => std::arch::is_x86_feature_detected!("avx512f"),
            _ => false,
        };
    if vector_move && fast_path() {
        // The vector register is the other operand.
        let one_memory = (0..2)
            .filter(|&i| insn.op_kind(i) == OpKind::Memory)
            .count()
            == 1;
        let gpr64 = |reg: Register| reg == Register::None || reg.is_gpr64();
        let addressing = gpr64(insn.memory_base())
            && gpr64(insn.memory_index())
            && insn.memory_base() != Register::RSP
            && insn.segment_prefix() == Register::None
            && !insn.is_ip_rel_memory_operand()
            && i32::try_from(insn.memory_displacement64() as i64).is_ok()
            && !insn.has_lock_prefix()
            && !insn.has_rep_prefix()
            && !insn.has_repne_prefix();
        let may = one_memory && addressing && insn.len() >= 2;
        return (may && insn.len() >= 5, may);
    }
    let form = (matches!(
        insn.mnemonic(),
        Mnemonic::Mov
            | Mnemonic::Movzx
            | Mnemonic::Movsx
            | Mnemonic::Movsxd
            | Mnemonic::Cmp
            | Mnemonic::Test
    ) || ((read_modify_write || alu_load) && fast_path()))
        && !insn.has_lock_prefix()
        && !insn.has_rep_prefix()
        && !insn.has_repne_prefix();
    let operands: Vec<OpKind> = (0..insn.op_count()).map(|i| insn.op_kind(i)).collect();
    let one_memory = operands.iter().filter(|&&k| k == OpKind::Memory).count() == 1;
    let others = (0..insn.op_count()).all(|i| match insn.op_kind(i) {
        OpKind::Memory => true,
        OpKind::Register => {
            let reg = insn.op_register(i);
            reg.is_gpr()
                && reg.full_register() != Register::RSP
                && !matches!(
                    reg,
                    Register::AH | Register::BH | Register::CH | Register::DH
                )
        }
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => true,
        _ => false,
    });
    let gpr64 = |reg: Register| reg == Register::None || reg.is_gpr64();
    let addressing = gpr64(insn.memory_base())
        && gpr64(insn.memory_index())
        && insn.memory_base() != Register::RSP
        && insn.segment_prefix() == Register::None
        && !insn.is_ip_rel_memory_operand()
        && i32::try_from(insn.memory_displacement64() as i64).is_ok();
    let may = may_patch(insn, form && one_memory && others && addressing);
    (may && insn.len() >= 5, may)
}

/// Whether the runtime may patch `insn`: one of the forms `patch_rule`
/// names (`form`), of 2 bytes or more. Shorter than 5 bytes, it is patched
/// by punning only when a trampoline can be mapped where its jump lands.
fn may_patch(insn: &Instruction, form: bool) -> bool {
    form && insn.len() >= 2 && matches!(insn.memory_size().size(), 1 | 2 | 4 | 8)
}

/// (sites the runtime must have patched, sites it did patch): after the
/// last run, a patched site starts with the `jmp rel32` (0xe9) that no
/// case's own code holds. A site must be patched when it is patchable
/// and its access touches a traced mapping (it faulted on every run).
fn patched_sites(case: &Case, layout: &Layout, state: &CpuState) -> Vec<(u64, bool, bool, bool)> {
    let mut info = InstructionInfoFactory::new();
    let decoder = Decoder::with_ip(64, &case.code, CODE, DecoderOptions::NONE);
    decoder
        .into_iter()
        .map(|insn| {
            let traced = expect::derive(&insn, &case.gpr, layout, &state.area, &mut info)
                .iter()
                .any(|a| {
                    (a.addr..a.addr + a.len as u64).any(|byte| place(byte) != Place::Untraced)
                });
            let now = read_memory(insn.ip(), 1)[0];
            let (must, may) = patch_rule(&insn);
            (insn.ip(), must && traced, may && traced, now == 0xe9)
        })
        .collect()
}

fn changes(initial: &[u8], last: &[u8]) -> Vec<(u32, u8)> {
    initial
        .iter()
        .zip(last)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (_, b))| (i as u32, *b))
        .collect()
}

/// The accesses a case makes: given, or derived from its instructions.
pub fn accesses(case: &Case, layout: &Layout, state: &CpuState) -> Vec<super::Access> {
    if let Some(given) = &case.accesses {
        return given.clone();
    }
    let mut info = InstructionInfoFactory::new();
    let mut decoder = Decoder::with_ip(64, &case.code, CODE, DecoderOptions::NONE);
    let mut out = Vec::new();
    for insn in &mut decoder {
        out.extend(expect::derive(
            &insn,
            &case.gpr,
            layout,
            &state.area,
            &mut info,
        ));
    }
    out
}

pub fn main(cases: Vec<Case>, layout: &Layout) {
    let only: Option<usize> = std::env::var(ENV_ONLY).ok().and_then(|v| v.parse().ok());
    let runs: usize = std::env::var(ENV_RUNS)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let patched = runs > 1;
    let path_a = std::env::var(ENV_FILE_A).expect("file A");
    let path_b = std::env::var(ENV_FILE_B).expect("file B");
    let file_a = File::options()
        .read(true)
        .write(true)
        .open(&path_a)
        .expect("open A");
    let file_b = File::options()
        .read(true)
        .write(true)
        .open(&path_b)
        .expect("open B");
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    map_anonymous(CODE, CODE_LEN, rwx);
    map_anonymous(STACK, STACK_LEN, rw);
    map_anonymous(WINDOW, WINDOW_LEN, rw);
    // SAFETY: looks up a symbol by a NUL-terminated name.
    let mark = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mmiotrace_runtime_mark".as_ptr()) };
    assert!(!mark.is_null(), "the runtime is not preloaded");
    // SAFETY: the runtime exports it with this signature.
    let mark: extern "C" fn(*const c_char) = unsafe { std::mem::transmute(mark) };
    let max_chunk = if layout.avx512 {
        64
    } else if layout.avx {
        32
    } else {
        16
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // Patched, only the cases with an instruction the runtime patches:
    // the others run as they do unpatched.
    let selected: Vec<usize> = (0..cases.len())
        .filter(|&i| only.is_none_or(|o| o == i))
        .filter(|&i| {
            !patched
                || Decoder::with_ip(64, &cases[i].code, CODE, DecoderOptions::NONE)
                    .into_iter()
                    .any(|insn| patch_rule(&insn).1)
        })
        .collect();
    // libtest has written "test traced_child ... " without a newline.
    writeln!(out).expect("stdout");
    for &i in &selected {
        writeln!(out, "C {i} {}", cases[i].name).expect("stdout");
    }
    let mut failures = 0usize;
    // Progress on stderr (unbuffered), to find the case a crash comes from.
    let verbose = std::env::var_os("MMIOTRACE_DIFF_VERBOSE").is_some();
    for batch in selected.chunks(BATCH) {
        map_anonymous(A_START, A_LEN + B_LEN, rw);
        let mut references = Vec::with_capacity(batch.len());
        for &i in batch {
            let case = &cases[i];
            let window = initial_window(case);
            let stack = initial_stack(case);
            let mut state = initial_state(case, layout);
            let planned = accesses(case, layout, &state);
            write_memory(WINDOW, &window);
            write_memory(STACK_FILL_LO, &stack);
            load_case(case, patched);
            if verbose {
                eprintln!("plain {i} {}", case.name);
            }
            machine::run(&mut state);
            let last = read_memory(WINDOW, WINDOW_LEN);
            let mut events = Vec::new();
            for access in &planned {
                let source = if access.write { &last } else { &window };
                events.extend(expect::events(access, max_chunk, |addr, len| {
                    let at = (addr - WINDOW) as usize;
                    source[at..at + len].to_vec()
                }));
            }
            for _ in 0..runs {
                for event in &events {
                    writeln!(out, "E {i} {event}").expect("stdout");
                }
            }
            references.push(Reference {
                gpr: state.gpr,
                rflags: state.rflags,
                dump: layout.dump(&state.area),
                changed: changes(&window, &last),
                stack: read_memory(STACK_CHECK_LO, (STACK_CHECK_HI - STACK_CHECK_LO) as usize),
            });
        }

        map_fixed(A_START, A_LEN, rw, libc::MAP_SHARED, file_a.as_raw_fd());
        map_fixed(B_START, B_LEN, rw, libc::MAP_SHARED, file_b.as_raw_fd());
        for (&i, reference) in batch.iter().zip(&references) {
            let case = &cases[i];
            load_case(case, patched);
            let text = CString::new(format!("case {i}")).expect("no NUL");
            mark(text.as_ptr());
            for run in 0..runs {
                let window = initial_window(case);
                let stack = initial_stack(case);
                let mut state = initial_state(case, layout);
                write_memory(WINDOW, &window[..PAGE as usize]);
                file_a
                    .write_all_at(&window[PAGE as usize..PAGE as usize + A_LEN], 0)
                    .expect("write A");
                file_b
                    .write_all_at(&window[PAGE as usize + A_LEN..], 0)
                    .expect("write B");
                write_memory(STACK_FILL_LO, &stack);
                if verbose {
                    eprintln!("traced {i} run {run} {}", case.name);
                }
                machine::run(&mut state);
                let mut last = read_memory(WINDOW, PAGE as usize);
                last.resize(WINDOW_LEN, 0);
                file_a
                    .read_exact_at(&mut last[PAGE as usize..PAGE as usize + A_LEN], 0)
                    .expect("read A");
                file_b
                    .read_exact_at(&mut last[PAGE as usize + A_LEN..], 0)
                    .expect("read B");
                let mut fail = |what: String| {
                    failures += 1;
                    writeln!(out, "FAIL {i} run {run}: {what}").expect("stdout");
                };
                for r in 0..16 {
                    if state.gpr[r] != reference.gpr[r] {
                        fail(format!(
                            "gpr {r}: plain {:#x} traced {:#x}",
                            reference.gpr[r], state.gpr[r]
                        ));
                    }
                }
                if state.rflags & FLAGS != reference.rflags & FLAGS {
                    fail(format!(
                        "rflags: plain {:#x} traced {:#x}",
                        reference.rflags & FLAGS,
                        state.rflags & FLAGS
                    ));
                }
                let dump = layout.dump(&state.area);
                if let Some(at) = (0..dump.len()).find(|&k| dump[k] != reference.dump[k]) {
                    fail(format!(
                        "{}: plain {:02x} traced {:02x}",
                        layout.describe(at),
                        reference.dump[at],
                        dump[at]
                    ));
                }
                let changed = changes(&window, &last);
                if changed != reference.changed {
                    let first = changed
                        .iter()
                        .zip(&reference.changed)
                        .find(|(a, b)| a != b)
                        .map(|(a, b)| format!("traced {a:x?} plain {b:x?}"))
                        .unwrap_or_else(|| {
                            format!(
                                "{} bytes changed traced, {} plain",
                                changed.len(),
                                reference.changed.len()
                            )
                        });
                    fail(format!("memory (window offset, byte): {first}"));
                }
                let stack_now =
                    read_memory(STACK_CHECK_LO, (STACK_CHECK_HI - STACK_CHECK_LO) as usize);
                if stack_now != reference.stack {
                    fail("stack memory".to_owned());
                }
            }
            if patched {
                let state = initial_state(case, layout);
                let sites = patched_sites(case, layout, &state);
                for &(pc, must, may, done) in &sites {
                    if must != done && !(may && done) {
                        failures += 1;
                        writeln!(
                            out,
                            "FAIL {i} site {pc:#x}: must be patched {must}, patched {done}"
                        )
                        .expect("stdout");
                    }
                }
                let done = sites.iter().filter(|s| s.3).count();
                writeln!(out, "P {i} {done}").expect("stdout");
            }
        }
    }
    writeln!(out, "DONE {} {failures}", selected.len()).expect("stdout");
    out.flush().expect("stdout");
}
