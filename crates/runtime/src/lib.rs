//! The preloaded mmiotrace runtime (see docs/ARCHITECTURE.md).
//!
//! Loaded into the traced program with `LD_PRELOAD`, it interposes `mmap`
//! and friends. A shared mapping of a device-like file (a path matching
//! [`glob::DEFAULT_PATTERNS`], or a glob in `MMIOTRACE_TRACE`) becomes a
//! *traced range*: the program's pages are made `PROT_NONE` for good, and a
//! second mapping of the same memory, the *alias*, is made where only the
//! runtime knows it. Every access then faults; the SIGSEGV handler decodes
//! the instruction, performs its access once on the alias, updates the
//! registers and pushes a record into the shared-memory rings that the
//! recorder drains.
//!
//! Without `MMIOTRACE_SHM` in the environment the runtime passes every call
//! straight through.
//!
//! # Layers
//!
//! From the bottom up. A module uses only modules of its own layer or of
//! the layers below, and the uses form no cycle (`tests/runtime/layers.rs` checks
//! both from the `use crate::` paths):
//!
//! 1. `sys`, `msg`, `ranges`, `glob`, `real`, `config`, `state`, `tls`: the ground.
//! 2. `threads`, `log`, `access`, `alu`, `emulate`, `xsave`, `stub`, `displaced`, `hooks`: threads, logging, performing one instruction, and what hooks make of an access.
//! 3. `context`, `alias_bus`, `slow_path`, `single_step`: what the signal handlers do.
//! 4. `patch`: patched access sites, their trampolines and the code patching protocol.
//! 5. `signals`: the signal handlers.
//! 6. `init`, `vfio`, `arming`, `copy`: loading the configuration, arming mappings, copying for system calls.
//! 7. `interpose`, `io`: the exported C symbols.
//!
//! `init` sits below `arming` because the first traced `mmap` is what
//! loads the configuration. The patcher sits between what the handlers do
//! and the handlers: the SIGSEGV handler counts faults per site and patches
//! hot ones, and the trampolines reuse the emulator and the alias bus.
//!
//! # Modules
//!
//! Unsafe code is confined to the modules that say why (each opens with a
//! `# Safety` section); the others deny it.
//!
//! - `sys`: raw system calls, so that the runtime never calls its own
//!   interposers.
//! - [`msg`]: one-line messages to stderr, formatted on the stack.
//! - [`ranges`]: the fixed, lock-free table of traced ranges.
//! - [`glob`] (from the shm crate, so that the recorder matches paths the
//!   same way): the `MMIOTRACE_TRACE` path patterns.
//! - `real`: the libc functions the runtime shadows, found with `dlsym`.
//! - `config`: the recorder's environment variables, copied at load.
//! - `tls`: the per-thread block (initial-exec TLS) and per-slot blocks
//!   that the patched sites' fast path reads from machine code.
//! - `state`: whether tracing is on, the shared-memory file, the muted and
//!   no-follow flags, the lock that serialises range changes.
//! - `threads`: per-thread ring slots, the signal-mask view, and the
//!   per-thread state of an instruction on the slow path.
//! - `log`: every push into the rings.
//! - `access`: each device access performed with one load or store
//!   instruction of its width, up to 64 bytes.
//! - [`alu`]: the flags of `cmp`/`test`, computed by the CPU.
//! - [`emulate`]: decode-independent emulation over a register file.
//! - `xsave`: the vector registers in the signal frame's XSAVE area.
//! - [`stub`]: rewrites an instruction's memory operand to a scratch
//!   buffer, for displaced execution.
//! - `displaced`: displaced execution with values: the rewritten
//!   instruction run on the program's registers inside the handler.
//! - `hooks`: the rules of `record --hook` and the plugin of `--hook-lib`
//!   and `--model`: what they make of one access (docs/HOOKS.md).
//! - `context`: the interrupted thread's registers, instruction and
//!   signal mask in the handler's `ucontext_t`.
//! - `alias_bus`: the emulator's accesses performed on the alias and
//!   logged.
//! - `slow_path`: what nothing else can do, single-stepped on the alias
//!   (the SIGSEGV handler starts it, the SIGTRAP handler finishes it).
//! - `single_step`: the kernel's disarm/single-step/re-arm design, a
//!   comparison mode only (`MMIOTRACE_MODE=single-step`).
//! - `patch`: hot access sites rewritten to jump to trampolines that
//!   perform and log the access with no exception.
//! - `signals`: the SIGSEGV/SIGTRAP handlers and the program's own
//!   dispositions for those signals.
//! - `init`: the constructor, the configuration loaded at the first traced
//!   mapping, the fork and exit handlers.
//! - `vfio`: VFIO device fds: the PCI device behind each, and their region
//!   reads and writes logged as accesses.
//! - `arming`: the logic of `mmap`, `munmap`, `mprotect` and `mremap` for
//!   traced ranges.
//! - `copy`: the bounce-buffer copy engine for system calls handed traced
//!   buffers.
//! - `interpose`: the exported memory, signal, thread and mark functions.
//! - `io`: the exported `read`/`write` family, sockets and `ioctl`.

#![deny(unsafe_code)]

// Layer 1.
pub mod msg;
pub mod ranges;
#[allow(unsafe_code)]
mod sys;
/// The path patterns of `MMIOTRACE_TRACE`, shared with the recorder.
pub use mmiotrace_shm::glob;
#[allow(unsafe_code)]
mod config;
#[allow(unsafe_code)]
mod real;
mod state;
#[allow(unsafe_code)]
mod tls;

// Layer 2.
#[allow(unsafe_code)]
mod access;
#[allow(unsafe_code)]
pub mod alu;
#[allow(unsafe_code)]
mod displaced;
pub mod emulate;
#[allow(unsafe_code)]
mod hooks;
mod log;
pub mod stub;
#[allow(unsafe_code)]
mod threads;
#[allow(unsafe_code)]
mod xsave;

// Layer 3.
#[allow(unsafe_code)]
mod alias_bus;
#[allow(unsafe_code)]
mod context;
#[allow(unsafe_code)]
mod single_step;
mod slow_path;

// Layer 4.
#[allow(unsafe_code)]
mod patch;

// Layer 5.
#[allow(unsafe_code)]
mod signals;

// Layer 6.
#[allow(unsafe_code)]
mod arming;
#[allow(unsafe_code)]
mod copy;
#[allow(unsafe_code)]
mod init;
#[allow(unsafe_code)]
mod vfio;

// Layer 7.
#[allow(unsafe_code)]
mod interpose;
#[allow(unsafe_code)]
mod io;
