//! The mmiotrace command's integration tests, each running the real binary.
//!
//! One test binary for the crate, a module per subject (as ripgrep's
//! tests are laid out): one link instead of one per file.

mod collapse;
mod common;
mod conventions;
mod convert_stats;
mod decode;
mod diff;
mod export;
mod failures;
mod filter;
mod hooks;
mod outputs;
mod record;
mod regs;
mod stats;
mod third_party;
mod vm;
mod world;
