//! One module per subcommand, each a clap `Cmd` with `run()`.

pub mod convert;
pub mod record;
pub mod stats;
