//! `mmiotrace completions SHELL`: a shell completion script.

use clap::Args;
use clap_complete::Shell;

/// Print a completion script for SHELL on standard output: every command,
/// option and value that mmiotrace takes.
///
/// Install it where the shell looks, for example:
///   bash:  mmiotrace completions bash > ~/.local/share/bash-completion/completions/mmiotrace
///   zsh:   mmiotrace completions zsh > ~/.zfunc/_mmiotrace   (with ~/.zfunc in $fpath)
///   fish:  mmiotrace completions fish > ~/.config/fish/completions/mmiotrace.fish
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        let mut command = crate::cli_command();
        let mut out = std::io::stdout().lock();
        clap_complete::generate(self.shell, &mut command, "mmiotrace", &mut out);
        std::io::Write::flush(&mut out)?;
        Ok(())
    }
}
