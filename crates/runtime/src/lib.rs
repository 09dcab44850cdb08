//! The preloaded mmiotrace runtime (see docs/ARCHITECTURE.md).
//!
//! Loaded into the traced program with `LD_PRELOAD`, it interposes `mmap`
//! and friends. A shared mapping of a device-like file (DESIGN §1, or a path
//! matching a glob in `MMIOTRACE_TRACE`) becomes a *traced range*: the
//! program's pages are made `PROT_NONE` for good, and a second mapping of
//! the same memory, the *alias*, is made where only the runtime knows it.
//! Every access then faults; the SIGSEGV handler decodes the instruction,
//! performs its access once on the alias, updates the registers and pushes a
//! record into the shared-memory rings that the recorder drains.
//!
//! Without `MMIOTRACE_SHM` in the environment the runtime passes every call
//! straight through.
//!
//! Module map, with the unsafe code confined to the modules that say why:
//! - [`emulate`]: decode-independent emulation over a register file (safe).
//! - [`alu`]: the flags of `cmp`/`test`, computed by the CPU (unsafe: asm).
//! - [`stub`]: rewrites an instruction's memory operand to a scratch
//!   buffer, for displaced execution (safe).
//! - `displaced`: runs the rewritten instruction on the program's
//!   registers inside the handler (unsafe: asm, executable memory).
//! - `xsave`: the vector registers in the signal frame's XSAVE area (unsafe).
//! - `access`: each device access performed with one load or store
//!   instruction of its width, up to 64 bytes (unsafe: asm).
//! - [`glob`] (from the shm crate, so that the recorder matches paths the
//!   same way), [`msg`], [`ranges`]: path globs, stack-formatted messages,
//!   the lock-free table of traced ranges (safe).
//! - `sys`: raw system calls (unsafe).
//! - `threads`: per-thread ring slots and displaced-instruction state (unsafe).
//! - `signals`: the SIGSEGV/SIGTRAP handlers (unsafe).
//! - `single_step`: the kernel's disarm/single-step/re-arm design, a
//!   comparison mode only (`MMIOTRACE_MODE=single-step`) (unsafe).
//! - `syscalls`: `read`/`write` and friends handed traced buffers, copied
//!   through the alias (unsafe).
//! - `runtime`: configuration, arming and disarming (unsafe).
//! - `vfio`: VFIO device fds: the PCI device behind each, and their region
//!   reads and writes logged as accesses (unsafe: ioctl, caller's buffers).
//! - `interpose`: the exported C symbols (unsafe).

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod alu;
pub mod emulate;
/// The path patterns of `MMIOTRACE_TRACE`, shared with the recorder.
pub use mmiotrace_shm::glob;
pub mod msg;
pub mod ranges;
pub mod stub;

#[allow(unsafe_code)]
mod access;
#[allow(unsafe_code)]
mod displaced;
#[allow(unsafe_code)]
mod interpose;
#[allow(unsafe_code)]
mod runtime;
#[allow(unsafe_code)]
mod signals;
#[allow(unsafe_code)]
mod single_step;
#[allow(unsafe_code)]
mod sys;
#[allow(unsafe_code)]
mod syscalls;
#[allow(unsafe_code)]
mod threads;
#[allow(unsafe_code)]
mod vfio;
#[allow(unsafe_code)]
mod xsave;
