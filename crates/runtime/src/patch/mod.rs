//! Patched access sites: after [`PATCH_AFTER`] faults at one instruction,
//! the instruction is replaced by a `jmp rel32` to a per-site trampoline
//! that performs the access on the alias and logs it with no exception
//! (docs/ARCHITECTURE.md, "Patched sites").
//!
//! # Safety
//!
//! This module writes machine code: it generates trampolines in pages it
//! maps, and rewrites the program's own code with the cross-modifying-code
//! protocol of the kernel's `text_poke_bp` (int3 on the first byte, every
//! thread serialised with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`,
//! the tail written, serialised, the head written, serialised). The
//! trampolines call [`mmiotrace_patched_access`] with a pointer to the
//! registers they saved on the program's stack.
//!
//! Which sites are patched: a `mov`, `movzx`, `movsx`, `movsxd`, `cmp` or
//! `test` with one explicit memory operand of 1 to 8 bytes, addressed by
//! 64-bit general registers and a displacement (no RIP-relative, stack or
//! segment-relative operand), of 5 bytes or more, in a code page mapped
//! read-execute and not writable. Everything else stays on the fault path,
//! counted per site in the summary with the reason.

use core::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, compiler_fence,
};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use mmiotrace_shm::Shm;

mod asm;
mod fast;
mod pun;

use asm::Asm;

use crate::alias_bus::AliasBus;
use crate::emulate::{self, Regs};
use crate::msg::Msg;
use crate::{config, hooks, log, ranges, single_step, state, sys, threads, tls, xsave};

/// Faults at one site before it is patched: a site that runs a handful of
/// times is not worth the five system calls of patching it (about 20 µs),
/// one that runs in a loop pays them back after a few dozen accesses.
pub const PATCH_AFTER: u32 = 4;

/// Faults a short site waits, past [`PATCH_AFTER`], for the hot site right
/// after it to be patched first (see `patch`).
const DEFER_FAULTS: u32 = 32;

/// Sites the runtime keeps count of.
const SITES: usize = 4096;
/// Bytes of one trampoline: its code, then its [`Record`] at
/// [`RECORD_AT`].
const TRAMPOLINE: usize = 2048;
/// Where a trampoline's record starts in it (16-byte aligned).
const RECORD_AT: usize = (TRAMPOLINE - core::mem::size_of::<Record>()) & !15;
/// Bytes of one trampoline chunk (a mapping shared by many trampolines).
const CHUNK: usize = 1 << 20;
/// Chunks: the shared ones, and one per punned site (the `pun` module).
const CHUNKS: usize = 512;

const NEW: u8 = 0;
const PATCHING: u8 = 1;
const PATCHED: u8 = 2;
/// The site stays on the fault path; `Site::why` says why.
const REFUSED: u8 = 3;

/// Why a site stays on the fault path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Why {
    TooShort = 1,
    Form = 2,
    Operand = 3,
    CodePage = 4,
    NoTrampoline = 5,
    Protect = 6,
    NoStack = 7,
    Locked = 8,
    /// Not patched yet: see [`DEFER_FAULTS`] (the site stays new).
    Deferred = 9,
}

impl Why {
    fn describe(code: u8) -> &'static [u8] {
        match code {
            1 => b"not patchable (too short: under 5 bytes, and no trampoline where its jump can reach)",
            2 => b"not patchable (instruction not patched yet)",
            3 => b"not patchable (RIP-, stack- or segment-relative operand)",
            4 => b"not patchable (code page not read-execute only)",
            5 => b"not patchable (no trampoline space within 2 GiB)",
            6 => b"not patchable (mprotect of the code page failed)",
            7 => b"not patchable (no stack to patch on)",
            8 => b"not patchable (its bytes are part of another patched site's jump)",
            _ => b"fault path",
        }
    }
}

struct Site {
    pc: AtomicU64,
    state: AtomicU8,
    why: AtomicU8,
    len: AtomicU8,
    faults: AtomicU32,
    /// The trampoline's copy of the original instruction.
    orig: AtomicU64,
    /// The address of the range table entry the site's access used last:
    /// the fast path tries it first (`ranges::entry_address`; 0: none).
    range: AtomicU64,
}

/// What a trampoline's entry needs to know about its site, written with
/// the trampoline's code into its chunk and never changed after: a
/// trampoline keeps working, for a thread that is inside it, after its
/// site has been forgotten ([`forget_code`]) and patched again with
/// another trampoline.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct Record {
    /// The site's address.
    pc: u64,
    /// The address of the trampoline's copy of the original instruction.
    orig: u64,
    /// The address of the site's cached range entry (`Site::range`).
    cache: u64,
    insn: Instruction,
}

impl Site {
    const fn new() -> Site {
        Site {
            pc: AtomicU64::new(0),
            state: AtomicU8::new(NEW),
            why: AtomicU8::new(0),
            len: AtomicU8::new(0),
            faults: AtomicU32::new(0),
            orig: AtomicU64::new(0),
            range: AtomicU64::new(0),
        }
    }
}

static TABLE: [Site; SITES] = [const { Site::new() }; SITES];
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Trampolines get a fast path (the `fast` module): the thread block is
/// reachable through `fs:`, the CPU has LAHF/SAHF in 64-bit mode and a
/// TSC that ticks at a constant rate on every CPU, which the records of
/// the shared-memory file are stamped with (`FLAG_TSC_TIME`, decided by
/// the recorder).
static FAST: AtomicBool = AtomicBool::new(false);
static PATCH_LOCK: AtomicBool = AtomicBool::new(false);
/// Trampoline chunks (mappings of [`CHUNK`] bytes): base addresses, and
/// bytes used in each.
static CHUNK_BASE: [AtomicUsize; CHUNKS] = [const { AtomicUsize::new(0) }; CHUNKS];
static CHUNK_USED: [AtomicUsize; CHUNKS] = [const { AtomicUsize::new(0) }; CHUNKS];

/// Turns patching on, unless `--no-patch`, `--mode single-step` or a
/// kernel without `membarrier`'s core serialisation say otherwise. Called
/// once, when the configuration loads.
pub fn init(shm: &Shm) {
    // With hooks every access asks them, on the fault path: a trampoline
    // would only add its cost to each.
    if !config::patch_enabled() || config::single_step_mode() || hooks::active() {
        return;
    }
    if !sys::register_membarrier_sync_core() {
        Msg::new()
            .text("patching is off: membarrier(SYNC_CORE) is not available")
            .emit();
        return;
    }
    if !map_patch_stack() {
        Msg::new()
            .text("patching is off: no memory for its stack")
            .emit();
        return;
    }
    ENABLED.store(true, Ordering::Release);
    let fast = config::patch_fast_enabled()
        && tls::offset().is_some()
        && lahf_in_long_mode()
        && shm.tsc_time();
    FAST.store(fast, Ordering::Release);
}

/// CPUID.80000001H:ECX.LAHF-SAHF.
fn lahf_in_long_mode() -> bool {
    let extended = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    extended >= 0x8000_0001 && core::arch::x86_64::__cpuid(0x8000_0001).ecx & 1 != 0
}

/// The fork child handler: the lock may have been held by another thread
/// of the parent. A site that thread was patching keeps its int3 in the
/// child, which sends it to the fault path for good ([`on_int3`]).
pub fn after_fork_in_child() {
    PATCH_LOCK.store(false, Ordering::Release);
    if ENABLED.load(Ordering::Acquire) && !sys::register_membarrier_sync_core() {
        ENABLED.store(false, Ordering::Release);
    }
}

fn find(pc: u64, insert: bool) -> Option<&'static Site> {
    let start = (pc.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize;
    for probe in 0..64 {
        let site = TABLE.get((start + probe) % SITES)?;
        let key = site.pc.load(Ordering::Acquire);
        if key == pc {
            return Some(site);
        }
        if key == 0 {
            if !insert {
                return None;
            }
            match site
                .pc
                .compare_exchange(0, pc, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(site),
                Err(other) if other == pc => return Some(site),
                Err(_) => continue,
            }
        }
    }
    None
}

/// The site whose trampoline copy of the original instruction starts at
/// `rip`, if any: faults there are the site's.
pub fn site_of_copy(rip: u64) -> Option<u64> {
    record_of_copy(rip).map(|record| record.pc)
}

/// The record of the trampoline whose copy of the original instruction
/// starts at `rip`.
fn record_of_copy(rip: u64) -> Option<&'static Record> {
    CHUNK_BASE.iter().zip(&CHUNK_USED).find_map(|(base, used)| {
        let base = base.load(Ordering::Acquire) as u64;
        let offset = rip.wrapping_sub(base);
        if base == 0 || offset >= CHUNK as u64 {
            return None;
        }
        let slot = offset - offset % TRAMPOLINE as u64;
        // SYNC POINT: pairs with the Release fetch_add in patch(), after
        // the trampoline and its record were written.
        if slot + TRAMPOLINE as u64 > used.load(Ordering::Acquire) as u64 {
            return None;
        }
        // SAFETY: a written trampoline slot of a chunk this module mapped
        // (readable, never unmapped, its record never changed).
        let record = unsafe { &*((base + slot) as usize as *const Record).byte_add(RECORD_AT) };
        (record.orig == rip).then_some(record)
    })
}

/// Where the instruction of `pc` is to be read from: a site being patched
/// or patched has other bytes at `pc` now (a thread that faulted on it
/// before the int3 went in reads them in its handler), and its original
/// instruction in its trampoline. The state is read before the bytes: a
/// thread that sees a site unpatched reads the original bytes (the patcher
/// publishes the state before it writes the int3, and x86 does not reorder
/// two loads, nor two stores).
pub fn code_of(pc: u64) -> u64 {
    let Some(site) = find(pc, false) else {
        return pc;
    };
    // SYNC POINT: pairs with the Release store of PATCHING in patch().
    match site.state.load(Ordering::Acquire) {
        PATCHING | PATCHED => site.orig.load(Ordering::Relaxed),
        _ => pc,
    }
}

/// The instruction that faulted at `pc`: its bytes there, unless `pc` is
/// a site that is being patched or is patched, whose original instruction
/// is the trampoline's copy ([`code_of`]).
///
/// The bytes are read first and the site's state after: the patcher
/// publishes PATCHING before it writes the `int3`, and x86 keeps both
/// the patcher's stores and this thread's loads in order, so bytes that
/// already hold the `int3` (or the `jmp`) come with a state that says so.
/// Read the other way round, a thread whose instruction faulted just
/// before the site's patch began could see the old state and then the
/// new bytes, and decode the `int3`: "instruction not supported", and the
/// program killed (seen once in the patched soak, under load).
pub fn fetch_at(pc: u64) -> Option<crate::context::Fetched> {
    let here = crate::context::fetch(pc);
    compiler_fence(Ordering::SeqCst);
    let code = code_of(pc);
    if code == pc {
        here
    } else {
        crate::context::fetch(code)
    }
}

/// The SIGTRAP of a thread that ran into a site's int3 while it was being
/// patched (or, in a forked child, for good): it goes on at the
/// trampoline's copy of the original instruction, whose access faults
/// into the fault path. `true` if the trap was such a one.
pub fn on_int3(uc: &mut libc::ucontext_t) -> bool {
    let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
    let Some(site) = find(rip.wrapping_sub(1), false) else {
        return false;
    };
    let state = site.state.load(Ordering::Acquire);
    if state != PATCHING && state != PATCHED {
        return false;
    }
    uc.uc_mcontext.gregs[libc::REG_RIP as usize] = site.orig.load(Ordering::Relaxed) as i64;
    true
}

/// Counts a fault at `pc` that the fault path handled (`copy`: at a
/// trampoline's copy of the site's instruction) and patches the site once
/// it has faulted [`PATCH_AFTER`] times. Called by the SIGSEGV handler.
///
/// A thread that faults at a site being patched by another thread (or
/// waiting to be: the lock is taken by the patch of another site, or by
/// [`forget_code`]) waits for the lock before it returns: had it gone
/// back to the program, it would fault at the site again and again
/// until the patcher, perhaps not even running on a 2-core machine, was
/// done. So each thread faults at a site at most once after its
/// [`PATCH_AFTER`]th fault (docs/ARCHITECTURE.md, "Patched sites").
pub fn note_fault(pc: u64, insn: &Instruction, bytes: &[u8]) {
    let Some(site) = find(pc, true) else {
        return;
    };
    let faults = site.faults.fetch_add(1, Ordering::Relaxed) + 1;
    let state = site.state.load(Ordering::Acquire);
    if faults < PATCH_AFTER
        || !ENABLED.load(Ordering::Acquire)
        || !matches!(state, NEW | PATCHING)
        || single_step::enabled()
    {
        return;
    }
    if state == NEW {
        if let Err(why) = patchable(insn) {
            site.why.store(why as u8, Ordering::Relaxed);
            site.state.store(REFUSED, Ordering::Release);
            return;
        }
    }
    patch_under_lock(site, pc, insn, bytes);
}

/// The patching part of [`note_fault`], out of line: it needs several KiB
/// of stack, and the SIGSEGV handler runs on whatever stack the program
/// gave it (a Rust thread's small alternate signal stack, say), where every
/// fault's frame must stay small. Inlined, its frame was set up on every
/// fault, patching on or off, and overflowed such a stack in the lab guest.
#[cold]
#[inline(never)]
fn patch_under_lock(site: &Site, pc: u64, insn: &Instruction, bytes: &[u8]) {
    // PATCHING: the patcher holds the lock until the site is patched
    // (in a forked child, where no thread will finish it, the lock is
    // free and the site stays on the fault path).
    lock();
    if site.state.load(Ordering::Acquire) == NEW {
        let mut job = PatchJob {
            site,
            pc,
            insn,
            bytes,
            result: Err(Why::NoStack),
        };
        run_on_patch_stack(&mut job);
        match job.result {
            Ok(()) | Err(Why::Deferred) => {}
            Err(why) => {
                site.why.store(why as u8, Ordering::Relaxed);
                site.state.store(REFUSED, Ordering::Release);
            }
        }
    }
    unlock();
}

/// Bytes of the stack [`patch`] runs on.
const PATCH_STACK: usize = 64 << 10;
/// The stack's lowest address (a guard page below it), 0 until [`init`].
static PATCH_STACK_BASE: AtomicUsize = AtomicUsize::new(0);

/// One call of [`patch`], and its result.
struct PatchJob<'a> {
    site: &'a Site,
    pc: u64,
    insn: &'a Instruction,
    bytes: &'a [u8],
    result: Result<(), Why>,
}

/// Maps the stack [`patch`] runs on: the SIGSEGV handler that patches
/// may run on whatever stack the program gave it, a small alternate
/// signal stack included, and patching needs several KiB. One stack does
/// for every thread: only the holder of [`PATCH_LOCK`] uses it.
fn map_patch_stack() -> bool {
    if PATCH_STACK_BASE.load(Ordering::Acquire) != 0 {
        return true;
    }
    // SAFETY: a fresh private mapping, never unmapped.
    let mapped = unsafe {
        sys::mmap(
            0,
            PATCH_STACK + 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    let Ok(base) = mapped else {
        return false;
    };
    // SAFETY: the lowest page of the mapping just made: the guard.
    if unsafe { sys::mprotect(base, 4096, libc::PROT_NONE) }.is_err() {
        return false;
    }
    PATCH_STACK_BASE.store(base + 4096, Ordering::Release);
    true
}

/// Runs `job` on the patch stack. Caller holds [`PATCH_LOCK`].
fn run_on_patch_stack(job: &mut PatchJob<'_>) {
    extern "C" fn entry(job: *mut PatchJob<'_>) {
        // SAFETY: the caller's job, alive until run_on_patch_stack returns.
        let job = unsafe { &mut *job };
        job.result = patch(job.site, job.pc, job.insn, job.bytes);
    }
    let base = PATCH_STACK_BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let top = base + PATCH_STACK;
    // SAFETY: `top` is the 16-byte aligned end of the patch stack, which
    // only the holder of PATCH_LOCK uses; the old stack pointer is kept on
    // the new stack (pushed twice, which keeps the call 16-byte aligned)
    // and reloaded after the call; `entry` follows the C ABI, whose
    // clobbers are declared.
    unsafe {
        core::arch::asm!(
            "mov rax, rsp",
            "mov rsp, rsi",
            "push rax",
            "push rax",
            "call rdx",
            "pop rsp",
            in("rsi") top,
            in("rdx") entry as extern "C" fn(*mut PatchJob<'_>),
            in("rdi") job as *mut PatchJob<'_>,
            clobber_abi("C"),
        );
    }
}

/// Takes [`PATCH_LOCK`], yielding while another thread holds it. Its
/// holders (a patcher in the SIGSEGV handler, [`forget_code`]) run with
/// every asynchronous signal blocked, wait on nothing and make no traced
/// access, so the holder is never the waiting thread itself, nor waits
/// for it.
fn lock() {
    while PATCH_LOCK.swap(true, Ordering::Acquire) {
        sys::yield_now();
    }
}

fn unlock() {
    // SYNC POINT: pairs with the Acquire swap in lock().
    PATCH_LOCK.store(false, Ordering::Release);
}

/// Forgets the sites in `lo..hi`, whose code the program is about to
/// change: made writable, unmapped, mapped over or moved (the `mprotect`,
/// `munmap`, `mmap` and `mremap` interposers call this first). Each goes
/// back to new, with no faults counted: whatever instruction is there next
/// is counted, and patched, afresh. A trampoline of a forgotten site stays
/// as it was, with its record, for a thread that still runs it (its
/// site's `jmp` stays too unless the program writes over it).
pub fn forget_code(lo: u64, hi: u64) {
    if !ENABLED.load(Ordering::Acquire) {
        return;
    }
    // Not called in a signal handler of the runtime. The asynchronous
    // signals stay blocked while the lock is held: a handler of the
    // program that made a traced access here would wait in note_fault()
    // for the lock this thread holds.
    let _blocked = sys::SignalsBlocked::new();
    lock();
    // An instruction that starts up to 14 bytes below `lo` reaches into it.
    let from = lo.saturating_sub(14);
    pun::unlock(from, hi);
    for site in TABLE.iter() {
        let pc = site.pc.load(Ordering::Acquire);
        if pc == 0 || pc < from || pc >= hi {
            continue;
        }
        site.orig.store(0, Ordering::Relaxed);
        site.range.store(0, Ordering::Relaxed);
        site.why.store(0, Ordering::Relaxed);
        site.faults.store(0, Ordering::Relaxed);
        // SYNC POINT: pairs with the Acquire loads of `state` in code_of()
        // and note_fault().
        site.state.store(NEW, Ordering::Release);
    }
    unlock();
}

/// Whether `insn` is an ALU read-modify-write of its memory operand
/// (`add`, `sub`, `and`, `or`, `xor`, `adc`, `sbb` to memory, `inc`,
/// `dec`, `neg`, `not` of memory).
fn read_modify_write(insn: &Instruction) -> bool {
    let two = matches!(
        insn.mnemonic(),
        Mnemonic::Add
            | Mnemonic::Sub
            | Mnemonic::And
            | Mnemonic::Or
            | Mnemonic::Xor
            | Mnemonic::Adc
            | Mnemonic::Sbb
    );
    let one = matches!(
        insn.mnemonic(),
        Mnemonic::Inc | Mnemonic::Dec | Mnemonic::Neg | Mnemonic::Not
    );
    insn.op0_kind() == OpKind::Memory
        && ((two && insn.op_count() == 2) || (one && insn.op_count() == 1))
}

/// Whether `insn` is an ALU operation on a register and its memory operand
/// (`add`, `sub`, `and`, `or`, `xor`, `adc`, `sbb`, two-operand `imul`,
/// the register the destination): a load, for the fast path.
fn alu_load(insn: &Instruction) -> bool {
    matches!(
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
        && insn.op1_kind() == OpKind::Memory
}

/// The element size of `insn` if it is an AVX-512 vector move between
/// memory and a vector register under an opmask (`vmovdqu8 [mem]{k1},
/// zmm0`, `vmovups ymm1{k2}{z}, [mem]`, as glibc's `memcpy` makes for its
/// tails): each selected element is one access of the element's width, as
/// the fault path makes them, and the fast path logs one record each.
fn masked_vector_move(insn: &Instruction) -> Option<usize> {
    let mnemonic = matches!(
        insn.mnemonic(),
        Mnemonic::Vmovups
            | Mnemonic::Vmovupd
            | Mnemonic::Vmovaps
            | Mnemonic::Vmovapd
            | Mnemonic::Vmovdqu8
            | Mnemonic::Vmovdqu16
            | Mnemonic::Vmovdqu32
            | Mnemonic::Vmovdqu64
            | Mnemonic::Vmovdqa32
            | Mnemonic::Vmovdqa64
    );
    let register = (0..insn.op_count())
        .find(|&i| insn.op_kind(i) == OpKind::Register)
        .map(|i| insn.op_register(i))?;
    let vector =
        (register.is_xmm() || register.is_ymm() || register.is_zmm()) && register.number() < 32;
    let width = insn.memory_size().size();
    let element = insn.memory_size().element_size();
    let ok = mnemonic
        && insn.encoding() == iced_x86::EncodingKind::EVEX
        && vector
        && insn.op_count() == 2
        && insn.op_mask() != Register::None
        && !insn.is_broadcast()
        && matches!(width, 16 | 32 | 64)
        && matches!(element, 1 | 2 | 4 | 8)
        && width <= crate::access::max_chunk();
    ok.then_some(element)
}

/// Whether `insn` is a plain vector move of 16 or 32 bytes between memory
/// and XMM0-15 or YMM0-15 (`movups`, `movaps`, `movdqu`, `movdqa`, their
/// `pd` forms and VEX forms; no mask, no AVX-512 register), and the CPU
/// makes such an access in one instruction (`access::max_chunk`).
fn vector_move(insn: &Instruction) -> bool {
    let evex = insn.encoding() == iced_x86::EncodingKind::EVEX;
    let mnemonic = matches!(
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
        ));
    let register = (0..insn.op_count())
        .find(|&i| insn.op_kind(i) == OpKind::Register)
        .map(|i| insn.op_register(i));
    // XMM0-15 and YMM0-15 in any encoding; with EVEX (AVX-512) also
    // XMM16-31, YMM16-31 and ZMM0-31.
    let plain = register.is_some_and(|reg| {
        (reg.is_xmm() || reg.is_ymm() || (evex && reg.is_zmm()))
            && reg.number() < if evex { 32 } else { 16 }
    });
    let width = insn.memory_size().size();
    mnemonic
        && plain
        && insn.op_count() == 2
        && insn.op_mask() == Register::None
        && !insn.zeroing_masking()
        && !insn.is_broadcast()
        && matches!(width, 16 | 32 | 64)
        && width <= crate::access::max_chunk()
}

/// Whether new trampolines get a fast path: it logs with no hook to ask.
fn fast_path_wanted() -> bool {
    FAST.load(Ordering::Acquire) && !hooks::active()
}

/// Whether the trampoline can perform `insn`: one access it knows, made
/// with an address it can compute.
fn patchable(insn: &Instruction) -> Result<(), Why> {
    if insn.len() < 2 {
        return Err(Why::TooShort);
    }
    let form = matches!(
        insn.mnemonic(),
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd
    ) || matches!(insn.mnemonic(), Mnemonic::Cmp | Mnemonic::Test)
        // Only the fast path performs these; the general path would send
        // each one to the fault path.
        || ((read_modify_write(insn) || alu_load(insn)) && fast_path_wanted());
    let vector = (vector_move(insn) || masked_vector_move(insn).is_some()) && fast_path_wanted();
    if !(form || vector)
        || insn.has_lock_prefix()
        || insn.has_rep_prefix()
        || insn.has_repne_prefix()
    {
        return Err(Why::Form);
    }
    let memory = (0..insn.op_count())
        .filter(|&i| insn.op_kind(i) == OpKind::Memory)
        .count();
    let width = insn.memory_size().size();
    if memory != 1 || !(matches!(width, 1 | 2 | 4 | 8) || vector) {
        return Err(Why::Form);
    }
    // The other operand: a general register (not AH..DH, whose encoding
    // the trampoline's register block does not change) or an immediate; a
    // vector move's, its vector register (checked by vector_move).
    for i in (0..insn.op_count()).filter(|_| !vector) {
        match insn.op_kind(i) {
            OpKind::Memory => {}
            OpKind::Register => {
                let reg = insn.op_register(i);
                if emulate::gpr_index(reg.full_register()).is_none()
                    || matches!(
                        reg,
                        Register::AH | Register::BH | Register::CH | Register::DH
                    )
                    || reg.full_register() == Register::RSP
                {
                    return Err(Why::Form);
                }
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => {}
            _ => return Err(Why::Form),
        }
    }
    let base = insn.memory_base();
    let index = insn.memory_index();
    let gpr64 = |reg: Register| reg == Register::None || reg.is_gpr64();
    if !gpr64(base)
        || !gpr64(index)
        || base == Register::RSP
        || insn.segment_prefix() != Register::None
        || insn.is_ip_rel_memory_operand()
        || i32::try_from(insn.memory_displacement64() as i64).is_err()
    {
        return Err(Why::Operand);
    }
    Ok(())
}

/// Writes the trampoline and patches the site. Caller holds PATCH_LOCK.
#[inline(never)]
fn patch(site: &Site, pc: u64, insn: &Instruction, bytes: &[u8]) -> Result<(), Why> {
    let len = insn.len();
    let original = bytes.get(..len).ok_or(Why::Form)?;
    let end = pc + len as u64;
    // A short site whose jump would borrow the first byte of a hot site
    // right after it, not patched yet, waits for that one (a while): the
    // borrowed byte could never become that site's jump. Patched first,
    // the other site's jump leaves a byte this one can borrow.
    if len < 5
        && site.faults.load(Ordering::Relaxed) < PATCH_AFTER + DEFER_FAULTS
        && find(end, false).is_some_and(|next| {
            next.state.load(Ordering::Acquire) == NEW && next.faults.load(Ordering::Relaxed) > 0
        })
    {
        return Err(Why::Deferred);
    }
    // The `jmp rel32` reads 5 bytes: a shorter site's jump ends in the
    // instructions after it, whose bytes stay as they are (punning).
    let jump_end = end.max(pc + 5);
    let code_pages = (pc & !4095, ((end - 1) | 4095) + 1);
    if !code_is_read_execute_only(pc & !4095, ((jump_end - 1) | 4095) + 1) {
        return Err(Why::CodePage);
    }
    if pun::locked(pc, end) {
        return Err(Why::Locked);
    }
    // A short site's jump lands on an entry stub in its window, which
    // jumps on to its trampoline (`pun`).
    let stub = if len < 5 {
        Some(pun::stub(pc, len).ok_or(Why::TooShort)?)
    } else {
        None
    };
    let (chunk, at) =
        trampoline_space(pc, end, stub.as_ref().map(pun::Stub::at)).ok_or(Why::NoTrampoline)?;
    let mut code = Asm::new(at as u64);
    let record_at = (at + RECORD_AT) as u64;
    let cache = &site.range as *const AtomicU64 as u64;
    site.range.store(0, Ordering::Relaxed);
    let fast = fast_path_wanted().then(|| {
        let mut copy = [0u8; 16];
        if let Some(dst) = copy.get_mut(..len) {
            dst.copy_from_slice(original);
        }
        fast::SiteInfo {
            pc,
            original: copy,
            cache,
            thread_block: tls::offset().unwrap_or(0),
        }
    });
    let orig = emit_trampoline(&mut code, insn, fast.as_ref(), record_at, original, end)
        .ok_or(Why::Form)?;
    let record = Record {
        pc,
        orig,
        cache,
        insn: *insn,
    };
    site.len.store(len as u8, Ordering::Relaxed);
    site.orig.store(orig, Ordering::Relaxed);
    write_trampoline(chunk, at, code.bytes(), &record).ok_or(Why::NoTrampoline)?;
    // SYNC POINT: pairs with the Acquire load in record_of_copy().
    CHUNK_USED[chunk].fetch_add(TRAMPOLINE, Ordering::Release);
    let entry = match &stub {
        Some(stub) => {
            pun::write_stub(stub.at(), at as u64).ok_or(Why::NoTrampoline)?;
            stub.at()
        }
        None => at as u64,
    };
    site.state.store(PATCHING, Ordering::Release);

    // The site: int3, sync, tail, sync, head, sync (text_poke_bp).
    let rel = (entry as i64) - (pc as i64 + 5);
    let mut new = [0xccu8; 16];
    new[0] = 0xe9;
    new[1..5].copy_from_slice(&(rel as i32).to_le_bytes());
    // A punned jump's displacement must end in the bytes already there.
    for (i, byte) in new.iter().enumerate().take(5).skip(len) {
        // SAFETY: pc..pc+5 lies in read-execute code (checked above).
        let there = unsafe { core::ptr::read_volatile((pc + i as u64) as *const u8) };
        if there != *byte {
            return Err(Why::TooShort);
        }
    }
    let span = (code_pages.1 - code_pages.0) as usize;
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    // SAFETY: the site's pages are mapped (it was just executed) and
    // read-execute only (checked above); making them writable too keeps
    // every other thread running.
    if unsafe { sys::mprotect(code_pages.0 as usize, span, rwx) }.is_err() {
        return Err(Why::Protect);
    }
    let site_ptr = pc as *mut u8;
    // SAFETY: pc..end is the site's instruction, writable now; no thread
    // executes its tail bytes once the int3 is in place and seen.
    unsafe {
        core::ptr::write_volatile(site_ptr, 0xcc);
        sys::membarrier_sync_core();
        for (i, byte) in new.iter().enumerate().take(len).skip(1) {
            core::ptr::write_volatile(site_ptr.add(i), *byte);
        }
        sys::membarrier_sync_core();
        core::ptr::write_volatile(site_ptr, 0xe9);
        sys::membarrier_sync_core();
    }
    // SAFETY: as above; the pages get back the protection they had.
    let restored = unsafe {
        sys::mprotect(
            code_pages.0 as usize,
            span,
            libc::PROT_READ | libc::PROT_EXEC,
        )
    };
    if restored.is_err() {
        Msg::new()
            .text("a patched code page stays writable: mprotect failed")
            .emit();
    }
    if len < 5 {
        pun::lock(end, pc + 5);
    }
    if let Some(stub) = stub {
        stub.keep();
    }
    site.state.store(PATCHED, Ordering::Release);
    Ok(())
}

/// Whether `lo..hi` lies in mappings that are readable, executable, not
/// writable and private, from /proc/self/maps (read with a stack buffer:
/// this runs in the signal handler).
fn code_is_read_execute_only(lo: u64, hi: u64) -> bool {
    let Ok(fd) = sys::open(b"/proc/self/maps\0", libc::O_RDONLY | libc::O_CLOEXEC) else {
        return false;
    };
    let mut buf = [0u8; 4096];
    let mut parser = MapsParser::default();
    let mut covered = lo;
    loop {
        // SAFETY: `buf` is a valid writable buffer of its length (a raw
        // read: the runtime's own `read` interposer is not wanted here).
        let n = unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            break;
        }
        for &byte in buf.iter().take(n as usize) {
            if let Some((start, end, perms)) = parser.feed(byte) {
                if start <= covered && covered < end {
                    if perms != *b"r-xp" {
                        sys::close(fd);
                        return false;
                    }
                    covered = end;
                    if covered >= hi {
                        break;
                    }
                }
            }
        }
        if covered >= hi {
            break;
        }
    }
    sys::close(fd);
    covered >= hi
}

/// A byte-at-a-time reader of /proc/self/maps lines: start, end, perms.
#[derive(Default)]
struct MapsParser {
    field: u8,
    start: u64,
    end: u64,
    perms: [u8; 4],
    perm_len: usize,
}

impl MapsParser {
    fn feed(&mut self, byte: u8) -> Option<(u64, u64, [u8; 4])> {
        if byte == b'\n' {
            let line = (self.start, self.end, self.perms);
            let complete = self.field >= 2 && self.perm_len == 4;
            *self = MapsParser::default();
            return complete.then_some(line);
        }
        let hex = (byte as char).to_digit(16).map(u64::from);
        match (self.field, byte) {
            (0, b'-') => self.field = 1,
            (0, _) => self.start = (self.start << 4) | hex.unwrap_or(0),
            (1, b' ') => self.field = 2,
            (1, _) => self.end = (self.end << 4) | hex.unwrap_or(0),
            (2, b' ') => self.field = 3,
            (2, _) => {
                if let Some(slot) = self.perms.get_mut(self.perm_len) {
                    *slot = byte;
                    self.perm_len += 1;
                }
            }
            _ => {}
        }
        None
    }
}

/// A free trampoline slot within reach (±2 GiB) of the whole site, and of
/// its entry stub if it has one: (chunk index, address).
fn trampoline_space(pc: u64, end: u64, stub: Option<u64>) -> Option<(usize, usize)> {
    let reach = |base: u64| {
        let far = base + CHUNK as u64;
        let limit = (1u64 << 31) - 2 * CHUNK as u64;
        let near = |at: u64| at.abs_diff(base) < limit && at.abs_diff(far) < limit;
        near(pc) && near(end) && stub.is_none_or(near)
    };
    for (i, base) in CHUNK_BASE.iter().enumerate() {
        let base = base.load(Ordering::Acquire);
        if base == 0 {
            continue;
        }
        let used = CHUNK_USED[i].load(Ordering::Relaxed);
        if reach(base as u64) && used + TRAMPOLINE <= CHUNK {
            return Some((i, base + used));
        }
    }
    let free = free_chunk()?;
    // Hints below and above the site, nearest first.
    for step in 1..16u64 {
        for hint in [
            (pc & !0xffff).wrapping_sub(step * (64 << 20)),
            (pc & !0xffff).wrapping_add(step * (64 << 20)),
        ] {
            // SAFETY: a fresh private mapping; the hint is only a hint.
            let got = unsafe {
                sys::mmap(
                    hint as usize,
                    CHUNK,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            let Ok(base) = got else {
                continue;
            };
            if reach(base as u64) {
                publish_chunk(free, base);
                return Some((free, base));
            }
            // SAFETY: the mapping just made, not used.
            let _ = unsafe { sys::munmap(base, CHUNK) };
        }
    }
    None
}

/// Makes chunk `index`, mapped at `base`, known.
fn publish_chunk(index: usize, base: usize) {
    CHUNK_USED[index].store(0, Ordering::Relaxed);
    // SYNC POINT: pairs with the Acquire loads of the base in
    // record_of_copy() and trampoline_space(): the count above first.
    CHUNK_BASE[index].store(base, Ordering::Release);
}

/// A chunk index never used yet.
fn free_chunk() -> Option<usize> {
    CHUNK_BASE
        .iter()
        .position(|base| base.load(Ordering::Acquire) == 0)
}

/// Copies a trampoline into its chunk (made writable meanwhile; other
/// trampolines in it keep running).
fn write_trampoline(chunk: usize, at: usize, code: &[u8], record: &Record) -> Option<()> {
    if code.len() > RECORD_AT {
        return None;
    }
    let map = CHUNK_BASE[chunk].load(Ordering::Acquire);
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    // SAFETY: map..map+CHUNK is a chunk's mapping, made by this module;
    // at..at+len lies in its unused part, which no thread executes.
    unsafe {
        sys::mprotect(map, CHUNK, rwx).ok()?;
        core::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len());
        core::ptr::write((at + RECORD_AT) as *mut Record, *record);
        sys::mprotect(map, CHUNK, libc::PROT_READ | libc::PROT_EXEC).ok()?;
    }
    Some(())
}

/// `lea dst, [the instruction's memory operand]` (`dst` a register number).
fn emit_lea(code: &mut Asm, insn: &Instruction, dst: u8) -> Option<()> {
    let number = |reg: Register| emulate::gpr_index(reg).map(|n| n as u8);
    let base = insn.memory_base();
    let index = insn.memory_index();
    let scale = match insn.memory_index_scale() {
        1 => 0u8,
        2 => 1,
        4 => 2,
        8 => 3,
        _ => return None,
    };
    let index_bits = if index == Register::None {
        4
    } else {
        number(index)?
    };
    let disp = i32::try_from(insn.memory_displacement64() as i64).ok()?;
    let (modrm, base_bits) = if base == Register::None {
        (0x04, 5)
    } else {
        (0x84, number(base)?)
    };
    let rex = 0x48 | ((dst >> 3) << 2) | ((index_bits >> 3) << 1) | (base_bits >> 3);
    let sib = (scale << 6) | ((index_bits & 7) << 3) | (base_bits & 7);
    code.emit(&[rex, 0x8d, modrm | ((dst & 7) << 3), sib]);
    code.emit(&disp.to_le_bytes());
    Some(())
}

/// The trampoline of one site (returns the address of its copy of the
/// original instruction):
///
/// 1. step over the red zone, save RFLAGS, an empty RIP slot and the 16
///    general registers: an `emulate::Regs` on the stack;
/// 2. the operand's address in RAX; outside the bounds of every traced
///    range: go to 5;
/// 3. call [`mmiotrace_patched_access`] on a 16-byte aligned stack with
///    XMM0-15 saved (the only vector state the Rust code may use);
/// 4. performed: restore everything but what the access changed, jump
///    back after the site;
/// 5. not performed (untraced, or the fault path's business): restore
///    everything, run the copy of the original instruction (which faults
///    into the fault path when its address is traced), jump back.
fn emit_trampoline(
    code: &mut Asm,
    insn: &Instruction,
    fast: Option<&fast::SiteInfo>,
    record: u64,
    original: &[u8],
    back: u64,
) -> Option<u64> {
    let mut to_original = None;
    if let Some(site) = fast {
        match fast::emit(code, insn, site, back) {
            Some(exits) => {
                to_original = Some(fast::emit_exits(code, &exits, site.thread_block));
                tls::fast_paths_exist();
            }
            // A form the fast path does not handle: the general path only.
            None => code.len = 0,
        }
    }
    if to_original.is_none() {
        // No fast path: the general path starts with the same check for
        // an untraced address, so that a site shared with plain memory
        // does not pay for saving every register there.
        let untraced = fast::emit_untraced_check(code, insn)?;
        fast::emit_untraced_undo(code);
        let skip = code.jmp_forward();
        to_original = Some(fast::emit_untraced_exit(code, untraced));
        code.bind(skip);
    }
    code.lea_rsp(-128);
    code.emit(&[0x9c]);
    code.lea_rsp(-8);
    for reg in (0..16u8).rev() {
        code.push(reg);
    }
    emit_lea(code, insn, 0)?;
    code.mov_imm64(1, ranges::bounds_address() as u64);
    // cmp rax, [rcx]; jb untraced
    code.emit(&[0x48, 0x3b, 0x01]);
    let below = code.jcc_forward(0x2);
    // cmp rax, [rcx+8]; jae untraced
    code.emit(&[0x48, 0x3b, 0x41, 0x08]);
    let above = code.jcc_forward(0x3);
    // rbx keeps the block, r12 the address (both saved in it).
    code.emit(&[0x48, 0x89, 0xe3]);
    code.emit(&[0x49, 0x89, 0xc4]);
    // The vector state, saved with XSAVE(C) in a 64-byte aligned area
    // whose header is zeroed first (XRSTOR faults on stale header bytes).
    let (mask, area, compacted) = xsave::scratch_area()?;
    code.emit(&[0x48, 0x83, 0xe4, 0xc0]);
    code.lea_rsp(-i32::try_from(area).ok()?);
    for qword in 0..8i32 {
        code.emit(&[0x48, 0xc7, 0x84, 0x24]);
        code.emit(&(512 + 8 * qword).to_le_bytes());
        code.emit(&0i32.to_le_bytes());
    }
    code.xsave_mask(mask);
    if compacted {
        code.emit(&[0x48, 0x0f, 0xc7, 0x24, 0x24]);
    } else {
        code.emit(&[0x48, 0x0f, 0xae, 0x24, 0x24]);
    }
    // rdi = &Regs, rsi = &Record, rdx = address.
    code.emit(&[0x48, 0x89, 0xdf]);
    code.mov_imm64(6, record);
    code.emit(&[0x4c, 0x89, 0xe2]);
    code.mov_imm64(0, mmiotrace_patched_access as *const () as u64);
    code.emit(&[0xff, 0xd0]);
    // r12 = the entry's answer; the vector state back (xrstor64 [rsp]).
    code.emit(&[0x49, 0x89, 0xc4]);
    code.xsave_mask(mask);
    code.emit(&[0x48, 0x0f, 0xae, 0x2c, 0x24]);
    code.emit(&[0x48, 0x89, 0xdc]);
    // test r12, r12; jnz untraced
    code.emit(&[0x4d, 0x85, 0xe4]);
    let fallback = code.jcc_forward(0x5);
    code.restore();
    code.jmp(back)?;
    code.bind(below);
    code.bind(above);
    code.bind(fallback);
    code.restore();
    if let Some(at) = to_original {
        code.bind(at);
    }
    let orig = code.here();
    code.emit(original);
    code.jmp(back)?;
    (code.len <= RECORD_AT).then_some(orig)
}

/// The trampolines' entry: performs the site's access on the alias and
/// logs it. Returns 0 when done, 1 when the trampoline is to run the
/// original instruction instead: the address is not traced (it runs
/// natively), or this is the fault path's business (it faults into it):
/// a thread without a ring slot yet, hooks, a protection that forbids the
/// access, an access that leaves its range, or tracing stopped.
///
/// # Safety
///
/// Called only by the trampolines, with `regs` pointing at the register
/// block they saved and `record` at their own record.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmiotrace_patched_access(
    regs: *mut Regs,
    record: *const Record,
    addr: u64,
) -> u64 {
    const DONE: u64 = 0;
    const FALLBACK: u64 = 1;
    // SAFETY: the trampoline's record, written before its code could run
    // and never changed.
    let record = unsafe { &*record };
    let Some(shm) = state::shm() else {
        return FALLBACK;
    };
    if hooks::active() {
        return FALLBACK;
    }
    let Some(me) = threads::me_if_claimed(&shm) else {
        return FALLBACK;
    };
    // The fast path of this thread, and of this site, for next time.
    if FAST.load(Ordering::Relaxed) && !tls::set_up() && !state::muted() && tls::logged(me.slot) {
        tls::set_up_for(&shm, me.slot);
    }
    let Some(held) = ranges::lookup(addr) else {
        return FALLBACK;
    };
    // SAFETY: `cache` is the address of the `range` field of a site in
    // TABLE, a static.
    let cache = unsafe { &*(record.cache as *const AtomicU64) };
    cache.store(ranges::entry_address(held.index()), Ordering::Relaxed);
    let insn = &record.insn;
    let width = insn.memory_size().size() as u64;
    let write = insn.mnemonic() == Mnemonic::Mov && insn.op0_kind() == OpKind::Memory;
    let allowed = if write {
        libc::PROT_WRITE as u32
    } else {
        libc::PROT_READ as u32
    };
    if !held.range.contains(addr, width) || held.range.prot & allowed == 0 {
        return FALLBACK;
    }
    // SAFETY: the trampoline's block, live until it returns.
    let block = unsafe { &mut *regs };
    let mut copy = *block;
    copy.gpr[4] = regs as u64 + core::mem::size_of::<Regs>() as u64 + 128;
    let pc = record.pc;
    copy.rip = pc;
    let mut bus = AliasBus::new(held.range, &shm, me, pc);
    if emulate::emulate(insn, &mut copy, &mut bus).is_err() {
        return FALLBACK;
    }
    copy.gpr[4] = block.gpr[4];
    copy.rip = block.rip;
    *block = copy;
    DONE
}

/// One MARK per site the fault path met often enough to be considered,
/// at exit: patched, or why not, with its faults.
pub extern "C" fn report_at_exit() {
    if state::shm().is_none() || !ENABLED.load(Ordering::Acquire) {
        return;
    }
    for site in TABLE.iter() {
        let pc = site.pc.load(Ordering::Acquire);
        let faults = site.faults.load(Ordering::Relaxed);
        if pc == 0 || faults < PATCH_AFTER {
            continue;
        }
        let state = site.state.load(Ordering::Acquire);
        let what: &[u8] = match state {
            PATCHED => b"patched",
            PATCHING => b"patching (int3: fault path)",
            REFUSED => Why::describe(site.why.load(Ordering::Relaxed)),
            _ => b"fault path",
        };
        let mut text = Msg::new();
        text.text("patch: site ")
            .hex(pc)
            .text(": ")
            .bytes(what)
            .text(", ")
            .dec(u64::from(faults))
            .text(" faults");
        log::mark(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_are_parsed_across_any_split() {
        let text =
            b"55d0c0a00000-55d0c0a02000 r-xp 00000000 08:01 42 /bin/x\n7f00-7f10 rw-p 0 0 0\n";
        let mut parser = MapsParser::default();
        let lines: Vec<_> = text.iter().filter_map(|&b| parser.feed(b)).collect();
        assert_eq!(
            lines,
            vec![
                (0x55d0c0a00000, 0x55d0c0a02000, *b"r-xp"),
                (0x7f00, 0x7f10, *b"rw-p")
            ]
        );
    }
}

#[cfg(test)]
mod maps_tests {
    #[test]
    fn this_code_is_read_execute_only_and_the_stack_is_not() {
        let pc = this_code_is_read_execute_only_and_the_stack_is_not as *const () as u64;
        assert!(super::code_is_read_execute_only(
            pc & !4095,
            (pc & !4095) + 4096
        ));
        let local = 0u64;
        let sp = &local as *const u64 as u64;
        assert!(!super::code_is_read_execute_only(
            sp & !4095,
            (sp & !4095) + 4096
        ));
    }
}
