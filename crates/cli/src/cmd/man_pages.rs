//! `mmiotrace man-pages DIR`: the manual pages, one per command.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

/// Write the manual pages into DIR (created if needed): mmiotrace.1, and
/// mmiotrace-COMMAND.1 for each command, made from the same text as
/// --help.
///
/// Install them where man looks, for example:
///   mmiotrace man-pages ~/.local/share/man/man1
///   sudo mmiotrace man-pages /usr/local/share/man/man1
/// then `man mmiotrace-export`.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The directory to write the pages to.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .title(name)
        .source(format!("mmiotrace {}", crate::VERSION))
        .manual("mmiotrace manual")
        .render(&mut page)
        .with_context(|| format!("cannot render {}", path.display()))?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let command = crate::cli_command();
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let name = format!("mmiotrace-{}", sub.get_name());
            // The page's synopsis names the command as it is typed.
            let sub = sub
                .clone()
                .display_name(name.clone())
                .bin_name(format!("mmiotrace {}", sub.get_name()));
            write_page(&self.dir, &name, sub)?;
        }
        write_page(&self.dir, "mmiotrace", command)
    }
}
