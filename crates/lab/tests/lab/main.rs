//! The QEMU lab's tests (docs/LAB.md), one test binary: each module boots
//! the guest once (one boot at a time, see [`common::boot`]) and checks
//! what it left in its output folder against QEMU's own log.
//!
//! - [`user_drivers`]: user-space drivers under `mmiotrace record`;
//! - [`kernel_mmiotrace`]: Linux's own mmiotrace on the kernel's e1000 driver;
//! - [`kernel_vm`]: kernel drivers on 4 vCPUs under `mmiotrace vm`.

mod common;
mod kernel_mmiotrace;
mod kernel_vm;
mod user_drivers;
