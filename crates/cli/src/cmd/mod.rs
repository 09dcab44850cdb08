//! One module per subcommand, each a clap `Cmd` with `run()`.

pub mod collapse;
pub mod common;
pub mod completions;
pub mod convert;
pub mod decode;
pub mod diff;
pub mod export;
pub mod filter;
pub mod import;
pub mod man_pages;
pub mod polling;
pub mod progress;
pub mod record;
pub mod regs;
pub mod stats;
pub mod symbols;
pub mod vm;
