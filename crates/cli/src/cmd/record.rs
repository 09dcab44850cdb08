//! `mmiotrace record` (placeholder until the runtime lands).

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct Cmd {}

impl Cmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        anyhow::bail!("not implemented yet")
    }
}
