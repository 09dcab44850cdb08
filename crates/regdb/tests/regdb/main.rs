//! The register-database crate's integration tests: rules-ng-ng, SVD, TOML maps, errors.
//!
//! One test binary for the crate, a module per subject (as ripgrep's
//! tests are laid out): one link instead of one per file.

mod common;
mod errors;
mod no_panic;
mod rnndb;
mod svd;
mod toml_map;
