//! The QEMU lab's oracle (docs/LAB.md): QEMU's own log of a device's
//! accesses, cut into parts by markers, compared access for access with an
//! mmiotrace trace of the same run.
//!
//! The binary `lab-driver` (src/main.rs) holds the test drivers that run in
//! the guest.
#![forbid(unsafe_code)]

pub mod oracle;
