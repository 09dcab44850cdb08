//! The runtime's integration tests: traced programs, the differential harness, the layers.
//!
//! One test binary for the crate, a module per subject (as ripgrep's
//! tests are laid out): one link instead of one per file.

mod common;
mod crashes;
mod diff;
mod differential;
mod displaced;
mod layers;
mod locked;
mod mapping_ops;
mod mark;
mod mov_family;
mod no_alloc;
mod patched;
mod processes;
mod single_step;
mod strings;
mod threads;
