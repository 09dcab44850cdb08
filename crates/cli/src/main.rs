//! `mmiotrace`: record, convert and summarise traces of memory-mapped I/O.

mod cmd;

use std::io::ErrorKind;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// The version and the commit built (`--version`, and the metadata of
/// exported files).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MMIOTRACE_GIT_COMMIT"),
    ")"
);

/// Record every access a program makes to memory-mapped device registers,
/// and read, convert and summarise the traces.
#[derive(Debug, Parser)]
#[command(name = "mmiotrace", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Record(cmd::record::Cmd),
    Convert(cmd::convert::Cmd),
    Decode(cmd::decode::Cmd),
    Stats(cmd::stats::Cmd),
    Collapse(cmd::collapse::Cmd),
    Filter(cmd::filter::Cmd),
    Diff(cmd::diff::Cmd),
    Export(cmd::export::Cmd),
    Vm(cmd::vm::Cmd),
    Import(cmd::import::Cmd),
    Completions(cmd::completions::Cmd),
    ManPages(cmd::man_pages::Cmd),
}

/// The whole command line, for the completion scripts and manual pages.
pub fn cli_command() -> clap::Command {
    Cli::command()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // A closed pipe is an error for record: the trace is incomplete.
        Command::Record(cmd) => {
            return cmd.run().unwrap_or_else(|err| {
                eprintln!("mmiotrace: error: {err:#}");
                ExitCode::FAILURE
            });
        }
        Command::Vm(cmd) => {
            return cmd.run().unwrap_or_else(|err| {
                eprintln!("mmiotrace: error: {err:#}");
                ExitCode::FAILURE
            });
        }
        Command::Import(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Convert(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Decode(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Stats(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Collapse(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Filter(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        // Like diff(1): 0 same, 1 different, 2 trouble.
        Command::Diff(cmd) => return cmd::diff::exit_code(cmd.run()),
        Command::Export(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::Completions(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
        Command::ManPages(cmd) => cmd.run().map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mmiotrace: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A closed stdout (`mmiotrace stats big.trace | head`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    })
}
