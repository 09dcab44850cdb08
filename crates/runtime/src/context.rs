//! The interrupted thread as the kernel hands it to a signal handler: its
//! general registers in the `ucontext_t`, the instruction at its RIP, and
//! the signal mask that `sigreturn` will restore.
//!
//! # Safety
//!
//! The instruction's bytes are read from the raw code address the CPU was
//! executing, and glibc's `sigset_t` is read as the kernel's 64-bit set
//! through a pointer cast ([`kernel_set`], the one place that does).

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};

use crate::emulate::{Refusal, Regs};
use crate::msg::Msg;
use crate::sys::{self, KernelSigset};

/// RFLAGS.TF: the CPU traps after the next instruction.
pub const TF: u64 = 1 << 8;

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

/// The general registers, RIP and RFLAGS of the interrupted thread.
pub fn read_regs(uc: &libc::ucontext_t) -> Regs {
    let gregs = &uc.uc_mcontext.gregs;
    let mut regs = Regs::default();
    for (value, &greg) in regs.gpr.iter_mut().zip(GREG_OF_GPR.iter()) {
        *value = gregs.get(greg).copied().unwrap_or(0) as u64;
    }
    regs.rip = gregs.get(libc::REG_RIP as usize).copied().unwrap_or(0) as u64;
    regs.rflags = gregs.get(libc::REG_EFL as usize).copied().unwrap_or(0) as u64;
    regs
}

/// Writes `regs` back, for `sigreturn` to restore.
pub fn write_regs(uc: &mut libc::ucontext_t, regs: &Regs) {
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

/// The kernel's 64 signals: the first word of glibc's 1024-bit `sigset_t`.
pub fn kernel_set(set: &libc::sigset_t) -> KernelSigset {
    *kernel_set_ref(set)
}

fn kernel_set_ref(set: &libc::sigset_t) -> &KernelSigset {
    // SAFETY: glibc's sigset_t (128 bytes, 8-aligned) starts with the
    // kernel's 64-bit set; the reference borrows `set`.
    unsafe { &*(set as *const libc::sigset_t as *const KernelSigset) }
}

/// [`kernel_set`], to change it.
pub fn kernel_set_mut(set: &mut libc::sigset_t) -> &mut KernelSigset {
    // SAFETY: as in kernel_set_ref; the reference borrows `set`.
    unsafe { &mut *(set as *mut libc::sigset_t as *mut KernelSigset) }
}

/// The kernel's part of the mask that `sigreturn` will restore.
pub fn kernel_mask(uc: &mut libc::ucontext_t) -> &mut KernelSigset {
    kernel_set_mut(&mut uc.uc_sigmask)
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

/// Builds the decoder's lazily created tables (about 7,700 allocations)
/// outside any signal handler, so that [`fetch`] never allocates.
pub fn warm_up_decoder() {
    // mov eax, [rbx]
    let code = [0x8bu8, 0x03];
    let mut decoder = Decoder::new(64, &code, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    decoder.decode_out(&mut insn);
}

/// One line on stderr when the runtime has to let a traced access crash.
pub fn refuse(refusal: Refusal, pc: u64, fault_addr: u64) {
    Msg::new()
        .text("cannot handle the access to traced address ")
        .hex(fault_addr)
        .text(" by the instruction at ")
        .hex(pc)
        .text(": ")
        .text(refusal.describe())
        .emit();
}
