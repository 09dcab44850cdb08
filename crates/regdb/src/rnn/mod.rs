//! rules-ng-ng XML, the format of envytools' rnndb and of Mesa's freedreno
//! and etnaviv register files.
//!
//! What is read:
//! - `<import file=…>`: searched for in the importing file's directory and
//!   each directory above it, then in the directories of `RNN_PATH`
//!   (colon-separated). Each file is read once.
//! - `<domain>` (same-named domains are merged, as rules-ng-ng does), with
//!   `width` (bits per address unit, default 8), `prefix` and `varset`.
//! - `<reg8>`, `<reg16>`, `<reg32>`, `<reg64>` with `offset`, `length`,
//!   `stride`, `access`, `type`, `shr`; `<bitfield>` (`low`/`high` or `pos`,
//!   `type`, `shr`, `add`, `radix`) and `<value>` inside.
//! - `<array>` and `<stripe>` (`offset`, `stride`, `length`; a stripe without
//!   a name adds nothing to the names below it), `<group>` and `<use-group>`.
//! - `<enum>`, `<bitset>` (`inline="yes"` ones are copied into each user, so
//!   they take the user's variants), `<spectype>`.
//! - `variants` on any element: space-separated ranges over the values of
//!   the active variant set (`varset`, else `prefix`, else the container's):
//!   `A` alone, `A:B` from A up to but not including B, `A-B` from A to B,
//!   `A-` from A on, `:B` up to B. An element exists where all of its
//!   containers exist too.
//!
//! Documentation elements (`<doc>`, `<brief>`, `<copyright>`, …) and elements
//! this decoder has no use for are skipped.
//!
//! `parser` reads the files into raw elements; `builder` resolves imports,
//! groups, variants and types into a [`Database`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::model::Database;

mod builder;
mod parser;

use builder::Builder;
use parser::Parser;

/// Loads the rules-ng-ng database rooted at `path` and everything it imports.
pub fn load(path: &Path) -> Result<Database> {
    let mut parser = Parser {
        search: rnn_path(),
        ..Parser::default()
    };
    let display: Arc<str> = Arc::from(path.display().to_string());
    parser.parse_file(path, display.clone(), None)?;
    Builder::new(parser, display, path)?.build()
}

fn rnn_path() -> Vec<PathBuf> {
    std::env::var_os("RNN_PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default()
}
