//! `mmiotrace stats` (placeholder until the trace formats land).

use clap::Args;

#[derive(Debug, Args)]
pub struct Cmd {}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        anyhow::bail!("not implemented yet")
    }
}
