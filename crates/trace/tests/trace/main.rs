//! The trace crate's integration tests: formats, round trips, the fuzz corpus.
//!
//! One test binary for the crate, a module per subject (as ripgrep's
//! tests are laid out): one link instead of one per file.

mod binary_format;
mod common;
mod fuzz_corpus;
mod roundtrip;
mod text_format;
