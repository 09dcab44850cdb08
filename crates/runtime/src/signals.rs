//! The SIGSEGV and SIGTRAP handlers: the path of one traced access.
//!
//! # Safety
//!
//! Signal handlers receive raw `siginfo_t` and `ucontext_t` pointers from the
//! kernel, read the faulting instruction's bytes from raw code addresses,
//! access the alias through raw addresses, and call the program's previous
//! handlers through function pointers. All of that needs `unsafe`; it is
//! confined here. Everything between the fault and the return is in
//! [`on_sigsegv`] and [`on_sigtrap`] and the functions they call in this
//! file: no allocation, no locks, no formatting, no panics (DESIGN §4).

use core::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction, Register};
use mmiotrace_shm::{RECORD_FLAG_SLOW_PATH, Record, Shm, kind};

use crate::emulate::{self, Bus, Refusal, Regs};
use crate::msg::Msg;
use crate::ranges::{self, Range};
use crate::threads::{self, Rebased};
use crate::{access, displaced, runtime, single_step, sys, xsave};

unsafe extern "C" {
    /// glibc's public alias of the real `sigaction`; the runtime exports
    /// `sigaction` itself, so calling that name would call the interposer.
    fn __sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int;
}

/// How many threads are inside the runtime's handlers right now. Exported
/// so that tests can read it from a malloc hook, to prove that the handlers
/// never allocate.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static mmiotrace_runtime_in_handler: AtomicU32 = AtomicU32::new(0);
use mmiotrace_runtime_in_handler as IN_HANDLER;

/// Faults the runtime handled (emulated or displaced).
pub static HANDLED: AtomicU64 = AtomicU64::new(0);

const TF: u64 = 1 << 8;
/// `si_code` of a SIGSEGV on a mapped page whose protection forbids the access.
const SEGV_ACCERR: c_int = 2;

/// The program's own disposition for a signal the runtime took over.
#[derive(Debug)]
struct Previous {
    handler: AtomicUsize,
    flags: AtomicU64,
    mask: AtomicU64,
}

impl Previous {
    const fn new() -> Previous {
        Previous {
            handler: AtomicUsize::new(libc::SIG_DFL),
            flags: AtomicU64::new(0),
            mask: AtomicU64::new(0),
        }
    }

    fn store(&self, act: &libc::sigaction) {
        // SAFETY: the first 8 bytes of glibc's sigset_t are the kernel's
        // 64-signal set; sigset_t is 128 bytes, so the read is in bounds.
        let mask = unsafe { *(&act.sa_mask as *const libc::sigset_t as *const u64) };
        self.flags.store(act.sa_flags as u64, Ordering::Relaxed);
        self.mask.store(mask, Ordering::Relaxed);
        // SYNC POINT: pairs with the Acquire load in chain().
        self.handler.store(act.sa_sigaction, Ordering::Release);
    }

    fn load(&self, act: &mut libc::sigaction) {
        // SAFETY: zeroed is a valid sigaction.
        *act = unsafe { core::mem::zeroed() };
        act.sa_sigaction = self.handler.load(Ordering::Acquire);
        act.sa_flags = self.flags.load(Ordering::Relaxed) as c_int;
        // SAFETY: as in store().
        unsafe {
            *(&mut act.sa_mask as *mut libc::sigset_t as *mut u64) =
                self.mask.load(Ordering::Relaxed)
        };
    }
}

static PREV_SEGV: Previous = Previous::new();
static PREV_TRAP: Previous = Previous::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn previous(sig: c_int) -> Option<&'static Previous> {
    match sig {
        libc::SIGSEGV => Some(&PREV_SEGV),
        libc::SIGTRAP => Some(&PREV_TRAP),
        _ => None,
    }
}

/// Installs the handlers, once, remembering the program's (DESIGN §4: at
/// the first traced mmap, so that Rust std's stack-overflow handler, set up
/// before, is chained to rather than hidden).
pub fn install() {
    if INSTALLED.load(Ordering::Acquire) {
        return;
    }
    type Handler = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);
    let handlers: [(c_int, Handler, &Previous); 2] = [
        (libc::SIGSEGV, on_sigsegv, &PREV_SEGV),
        (libc::SIGTRAP, on_sigtrap, &PREV_TRAP),
    ];
    for (sig, handler, prev) in handlers {
        // SAFETY: zeroed is a valid sigaction; the sigset functions get
        // valid pointers; __sigaction gets valid act/old pointers.
        unsafe {
            let mut act: libc::sigaction = core::mem::zeroed();
            act.sa_sigaction = handler as usize;
            // ONSTACK: a stack overflow must be handled on the alternate
            // stack. NODEFER: a traced access made inside a chained handler
            // (or a program SIGSEGV handler) must still fault into us.
            act.sa_flags =
                libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER | libc::SA_RESTART;
            // Block every asynchronous signal while the handler runs, so that
            // no other handler on this thread can push to the same ring.
            libc::sigfillset(&mut act.sa_mask);
            for sync in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
                libc::SIGTRAP,
            ] {
                libc::sigdelset(&mut act.sa_mask, sync);
            }
            let mut old: libc::sigaction = core::mem::zeroed();
            __sigaction(sig, &act, &mut old);
            prev.store(&old);
            // The program's own sa_mask, as it set it (the runtime kept
            // SIGSEGV/SIGTRAP out of the installed one).
            prev.mask
                .fetch_or(crate::interpose::sa_mask_view(sig), Ordering::Relaxed);
        }
    }
    INSTALLED.store(true, Ordering::Release);
}

/// The program's `sigaction` for SIGSEGV/SIGTRAP once the runtime owns
/// them: reads and replaces the remembered disposition instead of the
/// installed one. `None` when the call is not the runtime's business.
pub fn program_sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> Option<c_int> {
    if !INSTALLED.load(Ordering::Acquire) {
        return None;
    }
    let prev = previous(sig)?;
    if !old.is_null() {
        // SAFETY: the caller passed a writable sigaction.
        prev.load(unsafe { &mut *old });
    }
    if !act.is_null() {
        // SAFETY: the caller passed a readable sigaction.
        prev.store(unsafe { &*act });
    }
    Some(0)
}

/// The real `sigaction`.
pub fn real_sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    // SAFETY: the pointers come from the program's own sigaction call.
    unsafe { __sigaction(sig, act, old) }
}

// x86-64 gregs indices of the general registers in encoding order.
const GREG_OF_GPR: [usize; 16] = [
    libc::REG_RAX as usize,
    libc::REG_RCX as usize,
    libc::REG_RDX as usize,
    libc::REG_RBX as usize,
    libc::REG_RSP as usize,
    libc::REG_RBP as usize,
    libc::REG_RSI as usize,
    libc::REG_RDI as usize,
    libc::REG_R8 as usize,
    libc::REG_R9 as usize,
    libc::REG_R10 as usize,
    libc::REG_R11 as usize,
    libc::REG_R12 as usize,
    libc::REG_R13 as usize,
    libc::REG_R14 as usize,
    libc::REG_R15 as usize,
];

pub(crate) fn read_regs(uc: &libc::ucontext_t) -> Regs {
    let gregs = &uc.uc_mcontext.gregs;
    let mut regs = Regs::default();
    for (value, &greg) in regs.gpr.iter_mut().zip(GREG_OF_GPR.iter()) {
        *value = gregs.get(greg).copied().unwrap_or(0) as u64;
    }
    regs.rip = gregs.get(libc::REG_RIP as usize).copied().unwrap_or(0) as u64;
    regs.rflags = gregs.get(libc::REG_EFL as usize).copied().unwrap_or(0) as u64;
    regs
}

pub(crate) fn write_regs(uc: &mut libc::ucontext_t, regs: &Regs) {
    let gregs = &mut uc.uc_mcontext.gregs;
    for (value, &greg) in regs.gpr.iter().zip(GREG_OF_GPR.iter()) {
        if let Some(slot) = gregs.get_mut(greg) {
            *slot = *value as i64;
        }
    }
    if let Some(slot) = gregs.get_mut(libc::REG_RIP as usize) {
        *slot = regs.rip as i64;
    }
    if let Some(slot) = gregs.get_mut(libc::REG_EFL as usize) {
        *slot = regs.rflags as i64;
    }
}

/// The faulting instruction and its bytes.
#[derive(Debug)]
pub struct Fetched {
    pub insn: Instruction,
    pub bytes: [u8; 16],
}

impl Fetched {
    /// The first up-to-8 instruction bytes packed little-endian, and how many.
    pub fn head(&self) -> (u64, u8) {
        let n = self.insn.len().min(8);
        let mut packed = [0u8; 8];
        if let (Some(dst), Some(src)) = (packed.get_mut(..n), self.bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        (u64::from_le_bytes(packed), n as u8)
    }
}

/// Decodes the instruction at `rip`, reading only up to the end of its
/// page first (the next page may be unmapped), then 15 bytes if needed.
pub fn fetch(rip: u64) -> Option<Fetched> {
    let page_left = 4096 - (rip & 4095) as usize;
    let mut bytes = [0u8; 16];
    for want in [page_left.min(15), 15] {
        let window = bytes.get_mut(..want)?;
        // SAFETY: rip is the address the CPU was executing, so its page is
        // mapped and readable; on the second pass the instruction continues
        // on the next page, which the CPU therefore fetched too.
        unsafe { sys::copy_from(rip as usize, window) };
        let mut decoder =
            Decoder::try_with_ip(64, bytes.get(..want)?, rip, DecoderOptions::NONE).ok()?;
        let mut insn = Instruction::default();
        decoder.decode_out(&mut insn);
        if decoder.last_error() == DecoderError::NoMoreBytes && want < 15 {
            continue;
        }
        if insn.is_invalid() {
            return None;
        }
        return Some(Fetched { insn, bytes });
    }
    None
}

/// Builds the decoder's lazily created tables (about 7,700 allocations,
/// DESIGN §4) outside any signal handler.
pub fn warm_up_decoder() {
    // mov eax, [rbx]
    let code = [0x8bu8, 0x03];
    let mut decoder = Decoder::new(64, &code, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    decoder.decode_out(&mut insn);
    displaced::prepare();
}

/// Performs the emulator's accesses: on the alias for traced memory
/// (logging each one), directly for untraced memory (the other side of a
/// `movs`).
struct AliasBus<'a> {
    /// The range that faulted, held by the handler.
    fault_range: Range,
    shm: &'a Shm,
    me: threads::Me,
    pc: u64,
}

#[derive(Debug, Clone, Copy)]
enum Place {
    Traced(Range),
    Untraced,
}

/// One part of an access that lies in one mapping.
struct Piece {
    addr: u64,
    len: usize,
    place: Place,
    /// Keeps a traced range other than the faulting one mapped meanwhile.
    _held: Option<ranges::Held>,
}

/// The parts of an access: at most two, as an operand is at most
/// [`emulate::MAX_OPERAND`] bytes and ranges are whole pages.
struct Pieces {
    items: [Option<Piece>; 2],
}

impl AliasBus<'_> {
    /// Splits `addr..addr+len` where it crosses from one mapping (traced
    /// range, or untraced memory) into another.
    fn pieces(&self, addr: u64, len: usize) -> Result<Pieces, Refusal> {
        let mut pieces = Pieces {
            items: [None, None],
        };
        if len == 0 || len > emulate::MAX_OPERAND {
            return Err(Refusal::Unsupported);
        }
        if self.fault_range.contains(addr, len as u64) {
            pieces.items[0] = Some(Piece {
                addr,
                len,
                place: Place::Traced(self.fault_range),
                _held: None,
            });
            return Ok(pieces);
        }
        let end = addr.checked_add(len as u64).ok_or(Refusal::OutsideRange)?;
        let mut at = addr;
        let mut count = 0usize;
        while at < end {
            let piece_end = ((at | 4095) + 1).min(end);
            let (place, held) = if self.fault_range.contains(at, 1) {
                (Place::Traced(self.fault_range), None)
            } else if let Some(held) = ranges::lookup(at) {
                (Place::Traced(held.range), Some(held))
            } else {
                (Place::Untraced, None)
            };
            let same = |piece: &Piece| match (piece.place, place) {
                (Place::Traced(a), Place::Traced(b)) => a.start == b.start,
                (Place::Untraced, Place::Untraced) => true,
                _ => false,
            };
            let previous = count
                .checked_sub(1)
                .and_then(|i| pieces.items.get_mut(i))
                .and_then(|p| p.as_mut());
            match previous {
                Some(piece) if same(piece) => piece.len += (piece_end - at) as usize,
                _ => {
                    let slot = pieces.items.get_mut(count).ok_or(Refusal::OutsideRange)?;
                    *slot = Some(Piece {
                        addr: at,
                        len: (piece_end - at) as usize,
                        place,
                        _held: held,
                    });
                    count += 1;
                }
            }
            at = piece_end;
        }
        Ok(pieces)
    }

    fn log(&self, kind: u8, range: &Range, addr: u64, bytes: &[u8]) {
        if runtime::muted() {
            return;
        }
        let mut low = [0u8; 8];
        let n = bytes.len().min(8);
        if let (Some(dst), Some(src)) = (low.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        let record = Record {
            kind,
            width: bytes.len() as u8,
            map_id: range.map_id,
            offset: range.offset_of(addr),
            value: u64::from_le_bytes(low),
            pc: self.pc,
            tid: self.me.tid,
            pid: self.me.pid,
            ..Record::default()
        };
        // Values wider than 8 bytes travel whole as payload.
        let payload = if bytes.len() > 8 { bytes } else { &[] };
        runtime::push(self.shm, self.me.slot, record, payload);
    }

    /// Performs one access of `buf.len()` bytes at `addr`: each piece in
    /// one mapping with one instruction per power-of-two part, traced
    /// parts on the alias and logged.
    fn access(&mut self, addr: u64, buf: &mut [u8], write: bool) -> Result<(), Refusal> {
        let pieces = self.pieces(addr, buf.len())?;
        for piece in pieces.items.iter().flatten() {
            if let Place::Traced(range) = piece.place {
                permits(&range, write)?;
            }
        }
        let mut done = 0usize;
        for piece in pieces.items.iter().flatten() {
            let mut offset = 0usize;
            while offset < piece.len {
                let width = access::chunk(piece.len - offset);
                let at = piece.addr.wrapping_add(offset as u64);
                let part = buf
                    .get_mut(done..done + width)
                    .ok_or(Refusal::Unsupported)?;
                let (ptr, traced) = match piece.place {
                    Place::Traced(range) => (range.alias_of(at) as usize, Some(range)),
                    Place::Untraced => (at as usize, None),
                };
                // SAFETY: a traced part lies inside the alias of a range
                // held for the access (pieces() split at its end), whose
                // protection permits() checked; an untraced part is the
                // program's own memory, which its instruction accesses anyway.
                let ok = unsafe {
                    if write {
                        access::store(ptr, part)
                    } else {
                        access::load(ptr, part)
                    }
                };
                if !ok {
                    return Err(Refusal::Unsupported);
                }
                if let Some(range) = traced {
                    let kind = if write { kind::WRITE } else { kind::READ };
                    self.log(kind, &range, at, part);
                }
                offset += width;
                done += width;
            }
        }
        Ok(())
    }
}

fn permits(range: &Range, write: bool) -> Result<(), Refusal> {
    let needed = if write {
        libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    if range.prot as c_int & needed == 0 {
        return Err(Refusal::Protection);
    }
    Ok(())
}

impl Bus for AliasBus<'_> {
    fn check(&mut self, addr: u64, width: u8, write: bool) -> Result<(), Refusal> {
        self.check_bytes(addr, usize::from(width), write)
    }

    fn load(&mut self, addr: u64, width: u8) -> Result<u64, Refusal> {
        let mut value = [0u8; 8];
        let bytes = value
            .get_mut(..usize::from(width))
            .ok_or(Refusal::Unsupported)?;
        self.access(addr, bytes, false)?;
        Ok(u64::from_le_bytes(value))
    }

    fn store(&mut self, addr: u64, width: u8, value: u64) -> Result<(), Refusal> {
        let mut bytes = value.to_le_bytes();
        let bytes = bytes
            .get_mut(..usize::from(width))
            .ok_or(Refusal::Unsupported)?;
        self.access(addr, bytes, true)
    }

    fn segment_base(&mut self, segment: Register) -> Option<u64> {
        sys::segment_base(segment == Register::GS)
    }

    fn check_bytes(&mut self, addr: u64, len: usize, write: bool) -> Result<(), Refusal> {
        let pieces = self.pieces(addr, len)?;
        for piece in pieces.items.iter().flatten() {
            if let Place::Traced(range) = piece.place {
                permits(&range, write)?;
            }
        }
        Ok(())
    }

    fn load_bytes(&mut self, addr: u64, out: &mut [u8]) -> Result<(), Refusal> {
        self.access(addr, out, false)
    }

    fn store_bytes(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Refusal> {
        let mut copy = [0u8; emulate::MAX_OPERAND];
        let copy = copy.get_mut(..bytes.len()).ok_or(Refusal::Unsupported)?;
        copy.copy_from_slice(bytes);
        self.access(addr, copy, true)
    }
}

/// A bus that refuses every access: address computation only.
struct NoBus;

impl Bus for NoBus {
    fn check(&mut self, _addr: u64, _width: u8, _write: bool) -> Result<(), Refusal> {
        Err(Refusal::Unsupported)
    }
    fn load(&mut self, _addr: u64, _width: u8) -> Result<u64, Refusal> {
        Err(Refusal::Unsupported)
    }
    fn store(&mut self, _addr: u64, _width: u8, _value: u64) -> Result<(), Refusal> {
        Err(Refusal::Unsupported)
    }
    fn segment_base(&mut self, segment: Register) -> Option<u64> {
        sys::segment_base(segment == Register::GS)
    }
}

/// The SIGSEGV handler's entry: a small frame that checks there is room
/// for the handler before [`handle_sigsegv`] takes its (larger) frame.
extern "C" fn on_sigsegv(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext for SA_SIGINFO.
    if unsafe { altstack_too_small(&*info, &*(ctx as *const libc::ucontext_t)) } {
        stop_on_small_altstack();
        return;
    }
    handle_sigsegv(sig, info, ctx);
}

#[inline(never)]
fn handle_sigsegv(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let saved_errno = sys::get_errno();
    IN_HANDLER.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the kernel passes a valid siginfo and ucontext for SA_SIGINFO.
    let handled = unsafe { handle_access_fault(&*info, &mut *(ctx as *mut libc::ucontext_t)) };
    IN_HANDLER.fetch_sub(1, Ordering::Relaxed);
    if !handled {
        // SAFETY: forwards the kernel's own arguments.
        unsafe { chain(&PREV_SEGV, sig, info, ctx) };
    }
    sys::set_errno(saved_errno);
}

/// Stack the handler may use below its entry to perform one access
/// (measured at about 3.2 KiB; see docs/ARCHITECTURE.md).
const HANDLER_STACK: u64 = 4096;

/// Whether this is a traced access made on an alternate signal stack with
/// less than [`HANDLER_STACK`] left: performing it would overflow that
/// stack into whatever lies below it.
#[inline(always)]
fn altstack_too_small(info: &libc::siginfo_t, uc: &libc::ucontext_t) -> bool {
    let stack = &uc.uc_stack;
    if stack.ss_size == 0 || stack.ss_flags & libc::SS_DISABLE != 0 || info.si_code != SEGV_ACCERR {
        return false;
    }
    let here: u64;
    // SAFETY: reads the stack pointer; no memory is touched.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) here, options(nomem, nostack, preserves_flags))
    };
    let low = stack.ss_sp as u64;
    let on_it = here >= low && here - low < stack.ss_size as u64;
    // SAFETY: si_addr is valid for SIGSEGV.
    on_it && here - low < HANDLER_STACK && ranges::is_traced(unsafe { info.si_addr() } as u64)
}

/// Ends the program as a fault the runtime cannot handle, with a message
/// that needs no stack for formatting.
#[inline(never)]
fn stop_on_small_altstack() {
    sys::write_stderr(
        b"mmiotrace: a traced access was made on an alternate signal stack too small for the runtime's handler (it needs about 4 KiB more than untraced, 16 KiB in all is enough): stopping with SIGSEGV rather than overflowing it\n",
    );
    reset_to_default(libc::SIGSEGV);
}

/// Emulates or displaces a fault on a traced range; `false` if it is not ours.
fn handle_access_fault(info: &libc::siginfo_t, uc: &mut libc::ucontext_t) -> bool {
    if info.si_code != SEGV_ACCERR {
        return false;
    }
    // SAFETY: si_addr is valid for SIGSEGV.
    let fault_addr = unsafe { info.si_addr() } as u64;
    let Some(held) = ranges::lookup(fault_addr) else {
        return false;
    };
    let Some(shm) = runtime::shm() else {
        return false;
    };
    if single_step::enabled() {
        return single_step::on_fault(fault_addr, held, &shm, uc);
    }
    let mut regs = read_regs(uc);
    let pc = regs.rip;
    let Some(fetched) = fetch(pc) else {
        refuse(Refusal::Undecodable, pc, fault_addr);
        return false;
    };
    let mut bus = AliasBus {
        fault_range: held.range,
        shm: &shm,
        me: threads::me(&shm),
        pc,
    };
    // The MOV family and compares are emulated; vector moves are emulated
    // on the frame's XSAVE area; the rest runs displaced with values
    // (docs/INSTRUCTIONS.md); what even that cannot do takes the slow path.
    let mut outcome = emulate::emulate(&fetched.insn, &mut regs, &mut bus);
    let frame = if outcome == Err(Refusal::Unsupported) {
        xsave::frame(uc)
    } else {
        None
    };
    if outcome == Err(Refusal::Unsupported) {
        if let Some(frame) = frame {
            let mut vectors = xsave::FrameVectors::new(frame);
            outcome = emulate::emulate_vector(&fetched.insn, &mut regs, &mut vectors, &mut bus);
        }
    }
    if outcome == Err(Refusal::Unsupported) {
        let bytes = fetched.bytes.get(..fetched.insn.len()).unwrap_or(&[]);
        let slot = bus.me.slot;
        outcome = displaced::execute(bytes, &fetched.insn, &mut regs, frame, slot, &mut bus);
    }
    match outcome {
        Ok(()) => {
            write_regs(uc, &regs);
            HANDLED.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(Refusal::Unsupported) => {
            drop(held);
            displace(&shm, &fetched, &mut regs, uc, fault_addr)
        }
        Err(Refusal::Protection) => false,
        Err(refusal) => {
            refuse(refusal, pc, fault_addr);
            false
        }
    }
}

/// Displaced execution (DESIGN §3): the instruction's address registers
/// are moved onto the alias and the CPU single-steps the unmodified
/// instruction there; [`on_sigtrap`] moves them back.
fn displace(
    shm: &Shm,
    fetched: &Fetched,
    regs: &mut Regs,
    uc: &mut libc::ucontext_t,
    fault_addr: u64,
) -> bool {
    let pc = regs.rip;
    let me = threads::me(shm);
    if threads::pending_active(me.slot) {
        // A traced access inside a signal handler that interrupted another
        // displaced instruction of this thread.
        refuse(Refusal::RegisterConflict, pc, fault_addr);
        return false;
    }
    let targets = match emulate::rebase_targets(&fetched.insn, regs, &mut NoBus, ranges::is_traced)
    {
        Ok(targets) => targets,
        Err(refusal) => {
            refuse(refusal, pc, fault_addr);
            return false;
        }
    };
    let mut rebased: [Option<Rebased>; 2] = [None, None];
    let mut records = [Record::default(); 2];
    for (i, target) in targets.iter().enumerate() {
        let Some(target) = target else { continue };
        let Some(held) = ranges::lookup(target.addr) else {
            release(&rebased);
            return false;
        };
        if target.size > 0 && !held.range.contains(target.addr, target.size) {
            release(&rebased);
            refuse(Refusal::OutsideRange, pc, fault_addr);
            return false;
        }
        let delta = held.range.alias.wrapping_sub(held.range.start);
        let added = if target.divisor > 1 {
            (delta as i64 / target.divisor as i64) as u64
        } else {
            delta
        };
        let (aux, width) = fetched.head();
        if let Some(record) = records.get_mut(i) {
            *record = Record {
                kind: kind::UNKNOWN,
                width,
                flags: RECORD_FLAG_SLOW_PATH,
                map_id: held.range.map_id,
                offset: held.range.offset_of(target.addr),
                aux,
                pc,
                tid: me.tid,
                pid: me.pid,
                ..Record::default()
            };
        }
        if let (Some(value), Some(slot)) = (regs.gpr.get_mut(target.gpr), rebased.get_mut(i)) {
            *value = value.wrapping_add(added);
            *slot = Some(Rebased {
                gpr: target.gpr,
                added,
                hold: held.into_index(),
            });
        }
    }
    let program_tf = regs.rflags & TF != 0;
    regs.rflags |= TF;
    threads::set_pending(me.slot, &rebased, program_tf);
    threads::block_signals_for_step(me.slot, kernel_mask(uc));
    write_regs(uc, regs);
    for (record, item) in records.iter().zip(rebased.iter()) {
        if item.is_some() && !runtime::muted() {
            runtime::push(shm, me.slot, *record, &[]);
        }
    }
    HANDLED.fetch_add(1, Ordering::Relaxed);
    warn_once(pc, fetched);
    true
}

fn release(rebased: &[Option<Rebased>; 2]) {
    for r in rebased.iter().flatten() {
        ranges::release_index(r.hold);
    }
}

extern "C" fn on_sigtrap(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let saved_errno = sys::get_errno();
    IN_HANDLER.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the kernel passes a valid ucontext for SA_SIGINFO.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    let finished = single_step::on_trap(uc).or_else(|| finish_displaced(uc));
    IN_HANDLER.fetch_sub(1, Ordering::Relaxed);
    // Not ours, or the program was single-stepping itself: its handler
    // expects this trap too.
    if finished != Some(false) {
        // SAFETY: forwards the kernel's own arguments.
        unsafe { chain(&PREV_TRAP, sig, info, ctx) };
    }
    sys::set_errno(saved_errno);
}

/// Moves the rebased registers back after the single step; returns whether
/// the program had TF set itself, or `None` if no displacement was pending.
fn finish_displaced(uc: &mut libc::ucontext_t) -> Option<bool> {
    let shm = runtime::shm()?;
    let slot = threads::my_slot(&shm)?;
    let (rebased, program_tf) = threads::take_pending(slot)?;
    threads::restore_step_mask(slot, kernel_mask(uc));
    let mut regs = read_regs(uc);
    for r in rebased.iter().flatten() {
        if let Some(value) = regs.gpr.get_mut(r.gpr) {
            *value = value.wrapping_sub(r.added);
        }
        ranges::release_index(r.hold);
    }
    if !program_tf {
        regs.rflags &= !TF;
    }
    write_regs(uc, &regs);
    Some(program_tf)
}

/// The kernel's 64-signal part of the mask that sigreturn will restore.
fn kernel_mask(uc: &mut libc::ucontext_t) -> &mut u64 {
    // SAFETY: glibc's sigset_t (128 bytes, 8-aligned) starts with the
    // kernel's 64-bit set; the reference borrows `uc`.
    unsafe { &mut *(&mut uc.uc_sigmask as *mut libc::sigset_t as *mut u64) }
}

/// Hands a signal that is not the runtime's to the program's disposition,
/// dying exactly as the program would have when that is the default.
///
/// # Safety
///
/// `info` and `ctx` are the kernel's arguments to the current handler.
unsafe fn chain(prev: &Previous, sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let handler = prev.handler.load(Ordering::Acquire);
    let flags = prev.flags.load(Ordering::Relaxed) as c_int;
    // SAFETY: the kernel's siginfo.
    let from_kernel = unsafe { (*info).si_code } > 0;
    let bit = 1u64 << (sig - 1);
    let mut view = threads::mask_view();
    if view.blocked & bit != 0 {
        // The program blocked this signal (as far as it knows: the runtime
        // keeps it deliverable).
        if from_kernel {
            // The kernel kills a thread whose fault it cannot deliver,
            // handler or not.
            reset_to_default(sig);
            if sig != libc::SIGSEGV {
                sys::raise_in_thread(sig);
            }
        } else {
            // Sent by kill(): it waits until the program unblocks it.
            view.pending |= bit;
            threads::set_mask_view(view);
        }
        return;
    }
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // A fault or trap raised by an instruction cannot be ignored: the
        // kernel would force the default action.
        if handler == libc::SIG_IGN && !from_kernel {
            return;
        }
        reset_to_default(sig);
        if sig == libc::SIGSEGV && from_kernel {
            // Returning re-executes the faulting instruction, which now
            // kills the process with a real SIGSEGV (and core dump).
            return;
        }
        sys::raise_in_thread(sig);
        return;
    }
    let mut block = prev.mask.load(Ordering::Relaxed);
    if flags & libc::SA_NODEFER == 0 {
        block |= bit;
    }
    // Blocked, a traced access made by the program's handler would kill it.
    block &= !threads::VIEW_SIGNALS;
    let old_mask = sys::sigprocmask(libc::SIG_BLOCK, block);
    if flags & libc::SA_RESETHAND != 0 {
        prev.handler.store(libc::SIG_DFL, Ordering::Release);
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the program installed this as an SA_SIGINFO handler.
        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { core::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the program installed this as a plain handler.
        let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(handler) };
        f(sig);
    }
    sys::sigprocmask(libc::SIG_SETMASK, old_mask);
}

fn reset_to_default(sig: c_int) {
    // SAFETY: a zeroed sigaction with SIG_DFL (0) is valid.
    let act: libc::sigaction = unsafe { core::mem::zeroed() };
    real_sigaction(sig, &act, core::ptr::null_mut());
}

/// One line on stderr when the runtime has to let a traced access crash.
fn refuse(refusal: Refusal, pc: u64, fault_addr: u64) {
    Msg::new()
        .text("cannot handle the access to traced address ")
        .hex(fault_addr)
        .text(" by the instruction at ")
        .hex(pc)
        .text(": ")
        .text(refusal.describe())
        .emit();
}

static WARNED_PCS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// A warning per instruction address that runs displaced (slow path).
fn warn_once(pc: u64, fetched: &Fetched) {
    for slot in WARNED_PCS.iter() {
        match slot.compare_exchange(0, pc, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break,
            Err(seen) if seen == pc => return,
            Err(_) => continue,
        }
    }
    let mut msg = Msg::new();
    msg.text("the instruction at ").hex(pc).text(" (bytes");
    for &byte in fetched.bytes.iter().take(fetched.insn.len()) {
        msg.text(" ").hex(u64::from(byte));
    }
    msg.text(") is not emulated: it runs displaced on the alias and is logged as UNKNOWN")
        .emit();
}
