//! Runs one instruction sequence with a given register file: all 16
//! general registers, the arithmetic flags and DF, and the whole
//! x87/SSE/AVX/AVX-512 state (loaded with `xrstor`, saved with `xsave`).
//!
//! The sequence is copied to a fixed executable address and ends with an
//! absolute jump back into the runner. It runs on its own stack at a fixed
//! address, so that both runs of a case (plain memory, traced memory) see
//! exactly the same register values.

use std::arch::global_asm;
use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::{CODE, CODE_LEN};

/// Offsets into [`CpuState`] used by the assembly below.
pub const AREA_OFFSET: usize = 192;
pub const AREA_LEN: usize = 4096;

/// The register file of a case.
#[repr(C, align(64))]
#[derive(Clone)]
pub struct CpuState {
    pub gpr: [u64; 16],
    pub rflags: u64,
    /// `xrstor`/`xsave` component mask (EDX:EAX).
    pub mask: u64,
    pad: [u64; 6],
    /// XSAVE area, standard format.
    pub area: [u8; AREA_LEN],
}

const _: () = assert!(std::mem::offset_of!(CpuState, area) == AREA_OFFSET);

impl CpuState {
    pub fn new(mask: u64) -> Box<CpuState> {
        Box::new(CpuState {
            gpr: [0; 16],
            rflags: 0x202,
            mask,
            pad: [0; 6],
            area: [0; AREA_LEN],
        })
    }
}

static HOST_RSP: AtomicU64 = AtomicU64::new(0);
static STATE: AtomicU64 = AtomicU64::new(0);
static SAVED_RDI: AtomicU64 = AtomicU64::new(0);
static CODE_PTR: AtomicU64 = AtomicU64::new(CODE);

#[repr(C, align(64))]
struct InitArea([u8; 1024]);

/// Clean x87/SSE state put back after each case: FCW 0x37f, MXCSR 0x1f80,
/// XSTATE_BV 0 (everything else in its initial state).
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
    ".globl mmiotrace_diff_run_case",
    "mmiotrace_diff_run_case:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + {host_rsp}], rsp",
    "mov [rip + {state}], rdi",
    "mov eax, [rdi + 136]",
    "mov edx, [rdi + 140]",
    "xrstor64 [rdi + 192]",
    "mov rsp, [rdi + 32]",
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
    "jmp qword ptr [rip + {code}]",
    ".globl mmiotrace_diff_case_return",
    "mmiotrace_diff_case_return:",
    "mov [rip + {saved_rdi}], rdi",
    "mov rdi, [rip + {state}]",
    "mov [rdi], rax",
    "mov [rdi + 8], rcx",
    "mov [rdi + 16], rdx",
    "mov [rdi + 24], rbx",
    "mov [rdi + 32], rsp",
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
    "mov rax, [rip + {saved_rdi}]",
    "mov [rdi + 56], rax",
    "pushfq",
    "pop qword ptr [rdi + 128]",
    "mov eax, [rdi + 136]",
    "mov edx, [rdi + 140]",
    "xsave64 [rdi + 192]",
    "mov rsp, [rip + {host_rsp}]",
    "cld",
    "lea rsi, [rip + {init}]",
    "xrstor64 [rsi]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    host_rsp = sym HOST_RSP,
    state = sym STATE,
    saved_rdi = sym SAVED_RDI,
    code = sym CODE_PTR,
    init = sym INIT_AREA,
);

unsafe extern "C" {
    fn mmiotrace_diff_run_case(state: *mut CpuState);
    fn mmiotrace_diff_case_return();
}

/// The bytes that end every case: `jmp qword ptr [rip]` and the address.
pub fn epilogue() -> [u8; 14] {
    let mut bytes = [0u8; 14];
    bytes[..6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
    let target = mmiotrace_diff_case_return as *const () as u64;
    bytes[6..].copy_from_slice(&target.to_le_bytes());
    bytes
}

/// Copies `code` (which must end with [`epilogue`]) to the code page.
pub fn load_code(code: &[u8]) {
    assert!(code.len() <= CODE_LEN);
    // SAFETY: CODE..CODE+CODE_LEN is the RWX mapping made by layout::map_fixed.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), CODE as *mut u8, code.len()) };
    CODE_PTR.store(CODE, Ordering::Relaxed);
}

/// Runs the loaded code with `state`, which it updates.
pub fn run(state: &mut CpuState) {
    // SAFETY: the runner saves and restores the callee-saved registers and
    // its own stack pointer; the code page holds a case ending in the
    // epilogue; the case's stack and memory are mapped by the layout.
    unsafe { mmiotrace_diff_run_case(state) };
}
