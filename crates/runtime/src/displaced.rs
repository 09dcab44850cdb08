//! Displaced execution with values, inside the SIGSEGV handler.
//!
//! For an instruction the emulator does not know, the handler
//! 1. reads the memory operand once from the alias into a per-thread
//!    scratch buffer (if the instruction reads memory), logging the value;
//! 2. writes a copy of the instruction whose memory operand is the scratch
//!    ([`crate::stub`]) into a per-thread code cell, followed by `ret`;
//! 3. calls it through a small trampoline that loads the interrupted
//!    thread's general registers and arithmetic flags (and, for
//!    instructions that use them, its x87/SSE/AVX/AVX-512 state, with
//!    `xrstor` from the signal frame), and saves them back afterwards
//!    (`xsave` into the same frame, which `sigreturn` restores);
//! 4. writes the scratch back to the alias (if the instruction writes
//!    memory), logging the value.
//!
//! The CPU computes every result and flag itself; the device sees one read
//! and/or one write. Everything happens in one exception: no single step.
//!
//! # Safety
//!
//! This module maps executable memory, writes instructions into it and
//! calls them with the program's register values, which needs `unsafe`
//! (raw memory, inline and global assembly, a function pointer to generated
//! code). The invariants:
//! - The code cells and scratch buffers are mapped once, outside any
//!   handler ([`prepare`]), and never unmapped; each thread uses only the
//!   cell and buffer of its ring slot, and marks them busy while it does.
//! - A generated copy is exactly one instruction that [`crate::stub`]
//!   verified by decoding it again: its only memory operand is the scratch
//!   buffer, it does not branch, does not touch the stack and does not use
//!   RSP (a copy that names RSP gets another register instead), followed by
//!   `ret`.
//! - The trampoline preserves the callee-saved registers and RSP, leaves
//!   DF clear, and puts the x87/SSE control state back to its initial value.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use iced_x86::{
    CpuidFeature, EncodingKind, FlowControl, Instruction, InstructionInfoFactory,
    InstructionInfoOptions, MemorySize, Mnemonic, OpAccess, OpKind, Register,
};

use crate::alu::ARITHMETIC_FLAGS;
use crate::emulate::{self, Bus, MAX_OPERAND, Refusal, Regs, Vectors};
use crate::state::MAX_SLOTS;
use crate::xsave::{self, FpFrame};
use crate::{stub, sys};

/// Bytes of code per slot: one instruction (at most 15 bytes) and `ret`.
const CELL: usize = 64;
/// Bytes of scratch per slot.
const SCRATCH: usize = 1024;
const CODE_BYTES: usize = MAX_SLOTS * CELL;
const REGION_BYTES: usize = CODE_BYTES + MAX_SLOTS * SCRATCH;

/// RFLAGS.DF, loaded for the copy along with the arithmetic flags.
const DF: u64 = 1 << 10;

/// Base of the code cells, then the scratch buffers; 0 until [`prepare`].
static REGION: AtomicUsize = AtomicUsize::new(0);
/// Per-slot tools, a leaked boxed slice of [`MAX_SLOTS`] entries; 0 until [`prepare`].
static TOOLS: AtomicUsize = AtomicUsize::new(0);

/// What one slot's displaced execution needs besides the code cell.
struct SlotTools {
    busy: AtomicBool,
    /// Only used by the slot's owner while `busy` is held.
    info: UnsafeCell<InstructionInfoFactory>,
}

// SAFETY: `info` is only touched by the thread that set `busy`.
unsafe impl Sync for SlotTools {}

/// Maps the code cells and scratch buffers and builds the per-slot
/// instruction-info tables. Called once, outside any handler, before the
/// first traced mapping is armed. Without it, nothing is displaced with
/// values (the slow path takes over).
pub fn prepare() {
    crate::access::detect();
    xsave::detect();
    if REGION.load(Ordering::Acquire) != 0 {
        return;
    }
    // SAFETY: a fresh anonymous mapping at an address the kernel picks.
    let Ok(base) = (unsafe {
        sys::mmap(
            0,
            REGION_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    }) else {
        return;
    };
    // SAFETY: the code part of the mapping just made, owned by this module.
    let executable = unsafe {
        sys::mprotect(
            base,
            CODE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        )
    };
    if executable.is_err() {
        // W^X policy: no displaced execution with values.
        // SAFETY: nothing uses the mapping yet.
        let _ = unsafe { sys::munmap(base, REGION_BYTES) };
        return;
    }
    let tools: Box<[SlotTools]> = (0..MAX_SLOTS)
        .map(|_| SlotTools {
            busy: AtomicBool::new(false),
            info: UnsafeCell::new(InstructionInfoFactory::new()),
        })
        .collect();
    TOOLS.store(Box::leak(tools).as_ptr() as usize, Ordering::Release);
    // SYNC POINT: pairs with the Acquire loads in execute(): the tools are
    // built before a handler can see the region.
    REGION.store(base, Ordering::Release);
}

/// The trampoline's view of the registers.
#[repr(C)]
#[derive(Debug, Default)]
struct StubState {
    gpr: [u64; 16],
    rflags: u64,
    code: u64,
    fp_area: u64,
    /// 0: no FP state, 1: FXSAVE format, 2: XSAVE with `fp_mask`.
    fp_mode: u64,
    fp_mask: u64,
}

/// A clean x87/SSE/AVX state (FCW 0x37f, MXCSR 0x1f80, every component in
/// its initial state), restored after each copy that loaded the program's.
#[repr(C, align(64))]
struct InitArea([u8; 1024]);

static INIT_AREA: InitArea = {
    let mut area = [0u8; 1024];
    area[0] = 0x7f;
    area[1] = 0x03;
    area[24] = 0x80;
    area[25] = 0x1f;
    InitArea(area)
};

global_asm!(
    ".text",
    ".p2align 4",
    ".globl mmiotrace_runtime_stub_run",
    ".hidden mmiotrace_runtime_stub_run",
    ".type mmiotrace_runtime_stub_run,@function",
    "mmiotrace_runtime_stub_run:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "push qword ptr [rdi + 136]",
    "mov rax, [rdi + 152]",
    "cmp rax, 1",
    "jb 2f",
    "mov rsi, [rdi + 144]",
    "je 1f",
    "mov eax, [rdi + 160]",
    "mov edx, [rdi + 164]",
    "xrstor64 [rsi]",
    "jmp 2f",
    "1:",
    "fxrstor64 [rsi]",
    "2:",
    "push qword ptr [rdi + 128]",
    "popfq",
    "mov rax, [rdi]",
    "mov rcx, [rdi + 8]",
    "mov rdx, [rdi + 16]",
    "mov rbx, [rdi + 24]",
    "mov rbp, [rdi + 40]",
    "mov rsi, [rdi + 48]",
    "mov r8, [rdi + 64]",
    "mov r9, [rdi + 72]",
    "mov r10, [rdi + 80]",
    "mov r11, [rdi + 88]",
    "mov r12, [rdi + 96]",
    "mov r13, [rdi + 104]",
    "mov r14, [rdi + 112]",
    "mov r15, [rdi + 120]",
    "mov rdi, [rdi + 56]",
    "call qword ptr [rsp]",
    "push rdi",
    "mov rdi, [rsp + 16]",
    "mov [rdi], rax",
    "mov [rdi + 8], rcx",
    "mov [rdi + 16], rdx",
    "mov [rdi + 24], rbx",
    "mov [rdi + 40], rbp",
    "mov [rdi + 48], rsi",
    "mov [rdi + 64], r8",
    "mov [rdi + 72], r9",
    "mov [rdi + 80], r10",
    "mov [rdi + 88], r11",
    "mov [rdi + 96], r12",
    "mov [rdi + 104], r13",
    "mov [rdi + 112], r14",
    "mov [rdi + 120], r15",
    "pop qword ptr [rdi + 56]",
    "pushfq",
    "pop qword ptr [rdi + 128]",
    "cld",
    "mov rax, [rdi + 152]",
    "cmp rax, 1",
    "jb 4f",
    "mov rsi, [rdi + 144]",
    "je 3f",
    "mov eax, [rdi + 160]",
    "mov edx, [rdi + 164]",
    "xsave64 [rsi]",
    "lea rsi, [rip + {init}]",
    "xrstor64 [rsi]",
    "jmp 4f",
    "3:",
    "fxsave64 [rsi]",
    "lea rsi, [rip + {init}]",
    "fxrstor64 [rsi]",
    "4:",
    "add rsp, 16",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".size mmiotrace_runtime_stub_run, . - mmiotrace_runtime_stub_run",
    init = sym INIT_AREA,
);

unsafe extern "C" {
    /// The trampoline above: runs the code at `state.code` with the
    /// registers of `state`, and stores them back.
    fn mmiotrace_runtime_stub_run(state: *mut StubState);
}

/// How the instruction uses its memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Never,
    Always,
    /// Only some elements or bytes (masked stores, `vcompress*`,
    /// `fxsave`): which ones is found by running the copy twice over
    /// different fillings. Only for pure stores (no other effect).
    Masked,
}

/// Instructions that only manage caches: nothing reaches the device.
fn is_cache_hint(mnemonic: Mnemonic) -> bool {
    matches!(
        mnemonic,
        Mnemonic::Clflush
            | Mnemonic::Clflushopt
            | Mnemonic::Clwb
            | Mnemonic::Cldemote
            | Mnemonic::Prefetch
            | Mnemonic::Prefetchw
            | Mnemonic::Prefetchnta
            | Mnemonic::Prefetcht0
            | Mnemonic::Prefetcht1
            | Mnemonic::Prefetcht2
            | Mnemonic::Prefetchwt1
    )
}

/// Instructions whose store the instruction-info tables describe as a
/// plain write although a mask register selects the elements.
fn is_vex_masked_store(mnemonic: Mnemonic) -> bool {
    matches!(
        mnemonic,
        Mnemonic::Vmaskmovps | Mnemonic::Vmaskmovpd | Mnemonic::Vpmaskmovd | Mnemonic::Vpmaskmovq
    )
}

/// Stores that may leave some bytes of their operand unwritten: the masked
/// moves whose mask is a vector register, and `fxsave` (which does not
/// write its reserved and software-available bytes, how many depending on
/// the CPU). All are pure stores, so they can run twice (see [`Write::Masked`]).
fn is_partial_store(mnemonic: Mnemonic) -> bool {
    is_vex_masked_store(mnemonic) || matches!(mnemonic, Mnemonic::Fxsave | Mnemonic::Fxsave64)
}

/// Instructions that need the x87/SSE/AVX state: everything but the
/// general-purpose instruction set (an SSE conversion into a general
/// register still reads MXCSR and sets its flags).
fn needs_fp_state(insn: &Instruction) -> bool {
    use CpuidFeature::*;
    let general = insn.cpuid_features().iter().all(|feature| {
        matches!(
            feature,
            INTEL8086
                | INTEL8086_ONLY
                | INTEL186
                | INTEL286
                | INTEL286_ONLY
                | INTEL386
                | INTEL386_ONLY
                | INTEL486
                | X64
                | CMOV
                | CX8
                | CMPXCHG16B
                | BMI1
                | BMI2
                | ADX
                | MOVBE
                | POPCNT
                | LZCNT
                | TBM
                | MOVDIRI
                | CLFSH
                | CLFLUSHOPT
                | CLWB
                | PREFETCHW
                | MULTIBYTENOP
        )
    });
    let vector_operand = (0..insn.op_count())
        .any(|op| insn.op_kind(op) == OpKind::Register && !insn.op_register(op).is_gpr());
    !general || vector_operand || insn.encoding() == EncodingKind::EVEX
}

/// Registers the copy cannot be given: segment, control, debug, bound and
/// tile registers are not part of the state the trampoline switches.
fn has_foreign_register(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|op| {
        if insn.op_kind(op) != OpKind::Register {
            return false;
        }
        let reg = insn.op_register(op);
        !(reg.is_gpr()
            || reg.is_xmm()
            || reg.is_ymm()
            || reg.is_zmm()
            || reg.is_k()
            || reg.is_mm()
            || reg.is_st())
    })
}

/// Registers an instruction uses without naming them.
fn implicit_registers(mnemonic: Mnemonic) -> &'static [usize] {
    match mnemonic {
        Mnemonic::Cmpxchg => &[0],
        Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b => &[0, 1, 2, 3],
        Mnemonic::Mul | Mnemonic::Div | Mnemonic::Idiv | Mnemonic::Imul | Mnemonic::Mulx => &[0, 2],
        _ => &[],
    }
}

/// A register number (0..=7, not RSP) the instruction does not use, to
/// stand in for RSP.
fn spare_register(insn: &Instruction, byte_register: bool) -> Option<u8> {
    let limit = if byte_register { 4 } else { 8 };
    (0u8..limit).filter(|&n| n != 4).find(|&n| {
        let n = usize::from(n);
        let named = (0..insn.op_count()).any(|op| {
            insn.op_kind(op) == OpKind::Register
                && emulate::gpr_index(insn.op_register(op)) == Some(n)
        });
        !named && !implicit_registers(insn.mnemonic()).contains(&n)
    })
}

/// Keeps the program's locked read-modify-writes of one location atomic
/// with respect to each other (not to plain accesses): a process-wide
/// striped spin lock, held only inside the handler with asynchronous
/// signals blocked, around the read, the copy and the write.
static STRIPES: [AtomicBool; 64] = [const { AtomicBool::new(false) }; 64];

struct StripeGuard(&'static AtomicBool);

impl StripeGuard {
    fn take(addr: u64) -> Option<StripeGuard> {
        let stripe = STRIPES.get(((addr >> 3) % 64) as usize)?;
        let mut spins = 0u32;
        while stripe
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 200 {
                core::hint::spin_loop();
            } else {
                sys::yield_now();
            }
        }
        Some(StripeGuard(stripe))
    }
}

impl Drop for StripeGuard {
    fn drop(&mut self) {
        // SYNC POINT: pairs with the Acquire compare_exchange in take().
        self.0.store(false, Ordering::Release);
    }
}

struct BusyGuard(&'static AtomicBool);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn slot_tools(slot: usize) -> Option<&'static SlotTools> {
    let base = TOOLS.load(Ordering::Acquire);
    if base == 0 || slot >= MAX_SLOTS {
        return None;
    }
    // SAFETY: TOOLS points at a leaked slice of MAX_SLOTS entries that is
    // never freed; slot < MAX_SLOTS.
    Some(unsafe { &*(base as *const SlotTools).add(slot) })
}

/// Runs `insn` displaced as the module documentation says. `bytes` are its
/// bytes, `fp` the frame's FP state (if the kernel saved one), `slot` the
/// calling thread's ring slot. On `Err`, nothing was read or written and
/// `regs` is unchanged, except after a failed write-back (the read is then
/// already logged): `Err(Refusal::OutsideRange)` cannot occur there, the
/// bytes were checked first.
pub fn execute(
    bytes: &[u8],
    insn: &Instruction,
    regs: &mut Regs,
    fp: Option<FpFrame>,
    slot: usize,
    bus: &mut impl Bus,
) -> Result<(), Refusal> {
    let region = REGION.load(Ordering::Acquire);
    if region == 0 {
        return Err(Refusal::Unsupported);
    }
    let memory_op = single_memory_operand(insn).ok_or(Refusal::Unsupported)?;
    if is_cache_hint(insn.mnemonic()) {
        // clflush & co. on device memory: no access the device can see.
        regs.rip = insn.next_ip();
        return Ok(());
    }
    if insn.flow_control() != FlowControl::Next
        || insn.stack_pointer_increment() != 0
        || insn.is_vsib()
        || has_foreign_register(insn)
        || matches!(
            insn.mnemonic(),
            Mnemonic::Movdir64b | Mnemonic::Enqcmd | Mnemonic::Enqcmds
        )
    {
        return Err(Refusal::Unsupported);
    }
    let size = insn.memory_size().size();
    if size == 0 || size > MAX_OPERAND {
        return Err(Refusal::Unsupported);
    }
    let tools = slot_tools(slot).ok_or(Refusal::Unsupported)?;
    if tools.busy.swap(true, Ordering::Acquire) {
        // A traced access from a handler that interrupted this thread's
        // own displaced instruction.
        return Err(Refusal::Unsupported);
    }
    let _busy = BusyGuard(&tools.busy);
    // SAFETY: `busy` is held: only this thread uses the factory.
    let info = unsafe { &mut *tools.info.get() };
    let access = info
        .info_options(
            insn,
            InstructionInfoOptions::NO_MEMORY_USAGE | InstructionInfoOptions::NO_REGISTER_USAGE,
        )
        .op_access(memory_op);
    let (reads, write) = match access {
        OpAccess::Read | OpAccess::CondRead => (true, Write::Never),
        OpAccess::Write if is_partial_store(insn.mnemonic()) => (false, Write::Masked),
        OpAccess::Write => (false, Write::Always),
        OpAccess::CondWrite => (false, Write::Masked),
        // cmpxchg, cmpxchg8b/16b: "the destination operand is written back
        // if the comparison fails" (Intel SDM): a write cycle either way.
        OpAccess::ReadWrite | OpAccess::ReadCondWrite => (true, Write::Always),
        OpAccess::NoMemAccess => {
            regs.rip = insn.next_ip();
            return Ok(());
        }
        _ => return Err(Refusal::Unsupported),
    };
    let mut stub_gpr = regs.gpr;
    let mut addr = emulate::effective_address(insn, regs, bus)?;
    let mut restore_gpr: Option<usize> = None;
    if let Some((reg, in_operand)) = bit_offset_register(insn, regs) {
        // bt* m, r: the bit offset selects the operand-sized word to access.
        let bits = 8 * size as i64;
        addr = addr.wrapping_add((in_operand.div_euclid(bits) * size as i64) as u64);
        if let Some(value) = stub_gpr.get_mut(reg) {
            *value = in_operand.rem_euclid(bits) as u64;
        }
        restore_gpr = Some(reg);
    }
    let fp = if needs_fp_state(insn) {
        Some(fp.ok_or(Refusal::Unsupported)?)
    } else {
        None
    };
    let read_mask = if reads { element_mask(insn, fp)? } else { None };
    // RSP is the handler's stack pointer while the copy runs: lend the
    // copy another register.
    let mut rename: Option<(u8, usize)> = None;
    for op in 0..insn.op_count() {
        if insn.op_kind(op) == OpKind::Register
            && emulate::gpr_index(insn.op_register(op)) == Some(4)
        {
            // Renamed in ModRM.reg; the rewrite's check refuses a stack
            // pointer anywhere else.
            let spare = spare_register(insn, insn.op_register(op).is_gpr8())
                .ok_or(Refusal::RegisterConflict)?;
            rename = Some((spare, usize::from(spare)));
        }
    }
    if let Some((_, spare)) = rename {
        if let Some(value) = stub_gpr.get_mut(spare) {
            *value = regs.gpr[4];
        }
    }
    let code = region + slot * CELL;
    let scratch_addr = region + CODE_BYTES + slot * SCRATCH;
    let rewritten = stub::rewrite(
        bytes,
        insn,
        &stub::Rewrite {
            ip: code as u64,
            target: scratch_addr as u64,
            reg_field: rename.map(|(number, _)| number),
        },
    )
    .ok_or(Refusal::Unsupported)?;

    if reads {
        bus.check_bytes(addr, size, false)?;
    }
    if write != Write::Never {
        bus.check_bytes(addr, size, true)?;
    }
    let _stripe = if insn.has_lock_prefix() || insn.mnemonic() == Mnemonic::Xchg {
        StripeGuard::take(addr)
    } else {
        None
    };

    // SAFETY: the slot's scratch buffer, SCRATCH bytes inside the region,
    // used only by this thread while `busy` is held.
    let scratch = unsafe { core::slice::from_raw_parts_mut(scratch_addr as *mut u8, SCRATCH) };
    let operand = scratch.get_mut(..size).ok_or(Refusal::Unsupported)?;
    let element = insn.memory_size().element_size().max(1);
    match read_mask {
        _ if !reads => operand.fill(0),
        None => bus.load_bytes(addr, operand)?,
        Some(mask) => {
            // A masked load reads only its selected elements, each with
            // one access of the element's width.
            operand.fill(0);
            for (index, part) in operand.chunks_mut(element).enumerate() {
                if index < 64 && mask & (1 << index) != 0 {
                    bus.load_bytes(addr.wrapping_add((index * element) as u64), part)?;
                }
            }
        }
    }
    install_code(code, &rewritten);

    let mut state = StubState {
        gpr: stub_gpr,
        rflags: regs.rflags & (ARITHMETIC_FLAGS | DF),
        code: code as u64,
        ..StubState::default()
    };
    if let Some(frame) = fp {
        state.fp_area = frame.area as u64;
        state.fp_mode = if frame.xsave_mask == 0 { 1 } else { 2 };
        state.fp_mask = frame.xsave_mask;
    }
    let input = StubState {
        gpr: state.gpr,
        rflags: state.rflags,
        code: state.code,
        fp_area: state.fp_area,
        fp_mode: state.fp_mode,
        fp_mask: state.fp_mask,
    };
    run(&mut state);
    if let Some(frame) = fp {
        xsave::fix_x87_pointers(frame, code as u64, scratch_addr as u64, regs.rip, addr);
    }

    match write {
        Write::Never => {}
        Write::Always => {
            let operand = scratch.get(..size).ok_or(Refusal::Unsupported)?;
            bus.store_bytes(addr, operand)?;
        }
        Write::Masked => {
            // Run again over a different filling: the bytes the copy wrote
            // differ from the filling in one run or the other.
            let mut first = [0u8; MAX_OPERAND];
            let first = first.get_mut(..size).ok_or(Refusal::Unsupported)?;
            first.copy_from_slice(scratch.get(..size).ok_or(Refusal::Unsupported)?);
            scratch
                .get_mut(..size)
                .ok_or(Refusal::Unsupported)?
                .fill(0xff);
            let mut again = input;
            run(&mut again);
            let second = scratch.get(..size).ok_or(Refusal::Unsupported)?;
            let written =
                |i: usize| first.get(i).copied() != Some(0) || second.get(i).copied() != Some(0xff);
            // Vector elements are stored one access each; a plain operand
            // (fxsave) one access per run of written bytes.
            let element = insn.memory_size().element_size().max(1);
            let mut start = 0;
            while start < size {
                let end = if element < size {
                    (start + element).min(size)
                } else {
                    (start..size)
                        .find(|&i| written(i) != written(start))
                        .unwrap_or(size)
                };
                if (start..end).any(written) {
                    let value = second.get(start..end).ok_or(Refusal::Unsupported)?;
                    bus.store_bytes(addr.wrapping_add(start as u64), value)?;
                }
                start = end;
            }
        }
    }

    let mut gpr = state.gpr;
    if let Some(reg) = restore_gpr {
        if let (Some(out), Some(&original)) = (gpr.get_mut(reg), regs.gpr.get(reg)) {
            *out = original;
        }
    }
    if let Some((_, spare)) = rename {
        gpr[4] = gpr.get(spare).copied().unwrap_or(regs.gpr[4]);
        if let (Some(out), Some(&original)) = (gpr.get_mut(spare), regs.gpr.get(spare)) {
            *out = original;
        }
    } else {
        gpr[4] = regs.gpr[4];
    }
    regs.gpr = gpr;
    regs.rflags = crate::alu::merge(regs.rflags, state.rflags);
    regs.rip = insn.next_ip();
    Ok(())
}

/// The operand index of the instruction's one explicit memory operand, if
/// it has exactly one and no implicit one (string instructions).
fn single_memory_operand(insn: &Instruction) -> Option<u32> {
    let mut found = None;
    for op in 0..insn.op_count() {
        match insn.op_kind(op) {
            OpKind::Memory => {
                if found.is_some() {
                    return None;
                }
                found = Some(op);
            }
            OpKind::MemorySegSI
            | OpKind::MemorySegESI
            | OpKind::MemorySegRSI
            | OpKind::MemorySegDI
            | OpKind::MemorySegEDI
            | OpKind::MemorySegRDI
            | OpKind::MemoryESDI
            | OpKind::MemoryESEDI
            | OpKind::MemoryESRDI => return None,
            _ => {}
        }
    }
    found
}

/// For a memory read that is masked element by element (EVEX `{k}` on a
/// full-vector operand, `vmaskmov`/`vpmaskmov` loads), the selected
/// elements, bit i for element i; `None` for an unmasked read.
fn element_mask(insn: &Instruction, fp: Option<FpFrame>) -> Result<Option<u64>, Refusal> {
    let evex = insn.op_mask() != Register::None && !insn.is_broadcast() && is_masked_move(insn);
    let vex = is_vex_masked_store(insn.mnemonic());
    if !evex && !vex {
        return Ok(None);
    }
    let frame = fp.ok_or(Refusal::Unsupported)?;
    let mut vectors = xsave::FrameVectors::new(frame);
    if evex {
        let mask = vectors.opmask(insn.op_mask()).ok_or(Refusal::Unsupported)?;
        return Ok(Some(mask));
    }
    // vmaskmovps/pd, vpmaskmovd/q xmm1, xmm2, m: the sign bit of each
    // element of xmm2 selects it.
    let selector = insn.op1_register();
    let element = insn.memory_size().element_size().max(1);
    let size = insn.memory_size().size().min(64);
    let mut bytes = [0u8; 64];
    vectors
        .read(selector, bytes.get_mut(..size).ok_or(Refusal::Unsupported)?)
        .ok_or(Refusal::Unsupported)?;
    let mut mask = 0u64;
    for (index, part) in bytes.get(..size).unwrap_or(&[]).chunks(element).enumerate() {
        if part.last().is_some_and(|&b| b & 0x80 != 0) {
            mask |= 1 << index;
        }
    }
    Ok(Some(mask))
}

/// Masked moves, whose memory element i is register element i: a masked
/// load of these reads only the selected elements. Other masked
/// instructions (arithmetic, shuffles, conversions) read their whole
/// memory operand here, as many of them use memory elements in other
/// register positions (docs/INSTRUCTIONS.md).
fn is_masked_move(insn: &Instruction) -> bool {
    use Mnemonic::*;
    matches!(
        insn.mnemonic(),
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

/// For `bt`/`bts`/`btr`/`btc` with a register bit offset and a memory
/// operand: the register and its value as a signed offset of the operand's
/// width.
fn bit_offset_register(insn: &Instruction, regs: &Regs) -> Option<(usize, i64)> {
    if !matches!(
        insn.mnemonic(),
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) || insn.op0_kind() != OpKind::Memory
        || insn.op1_kind() != OpKind::Register
    {
        return None;
    }
    let reg = insn.op1_register();
    let value = regs.get(reg)?;
    let offset = match insn.memory_size() {
        MemorySize::UInt16 | MemorySize::Int16 => i64::from(value as u16 as i16),
        MemorySize::UInt32 | MemorySize::Int32 => i64::from(value as u32 as i32),
        _ => value as i64,
    };
    Some((emulate::gpr_index(reg)?, offset))
}

/// Puts `rewritten` and a `ret` into the code cell at `code`, unless the
/// cell already holds exactly that (rewriting code that may still sit in
/// the pipeline costs a machine clear).
fn install_code(code: usize, rewritten: &stub::Rewritten) {
    let len = rewritten.len;
    // SAFETY: the slot's code cell, CELL bytes inside the region, written
    // only by this thread while `busy` is held.
    let cell = unsafe { core::slice::from_raw_parts_mut(code as *mut u8, CELL) };
    let (Some(insn_bytes), Some(target)) = (rewritten.bytes.get(..len), cell.get_mut(..=len))
    else {
        return;
    };
    let same = target.get(..len) == Some(insn_bytes) && target.get(len) == Some(&0xc3);
    if !same {
        if let Some(dst) = target.get_mut(..len) {
            dst.copy_from_slice(insn_bytes);
        }
        if let Some(ret) = target.get_mut(len) {
            *ret = 0xc3;
        }
    }
}

fn run(state: &mut StubState) {
    // SAFETY: the module's invariants: `state.code` is this thread's code
    // cell holding one verified instruction and `ret`; `state.fp_area`, if
    // used, is the signal frame's FP save area (64-byte aligned for XSAVE,
    // checked by the caller of FpFrame). The trampoline preserves the
    // callee-saved registers; every other register is declared clobbered
    // by the C ABI of the call.
    unsafe { mmiotrace_runtime_stub_run(state) };
}
