//! Register databases, and the decoder behind `mmiotrace decode`.
//!
//! - [`model`]: what a database holds: address spaces of registers, arrays
//!   and stripes, bit fields, enumerations, variants (chipsets).
//! - Three loaders: [`rnn`] (rules-ng-ng XML, envytools' rnndb), [`svd`]
//!   (CMSIS-SVD), [`toml_map`] (mmiotrace's own TOML, docs/REGISTERS.md).
//!   [`load`] picks one by the file's extension and content.
//! - [`decode`]: binds a trace's mappings to databases and names each access.
//! - [`namer`]: just the register names, for commands that label accesses.
//! - [`format`](mod@format): the decoded trace as text or JSON lines.
#![forbid(unsafe_code)]

pub mod decode;
pub mod error;
pub mod format;
pub mod model;
pub mod namer;
pub mod rnn;
pub mod svd;
pub mod toml_map;
mod xml;

use std::path::Path;

pub use decode::{DecodeOptions, DecodeSink, DecodedAccess, Decoder, DeviceSpec};
pub use error::{Error, Result, SourcePos};
pub use model::*;
pub use namer::Namer;

/// Loads a database, choosing the format by extension (`.toml`, `.svd`)
/// and, for `.xml` and anything else, by the root element: `<database>` is
/// rules-ng-ng, `<device>` is SVD.
pub fn load(path: &Path) -> Result<Database> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => return toml_map::load(path),
        Some("svd") => return svd::load(path),
        _ => {}
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match root_element(&text) {
        Some("device") => svd::parse(std::sync::Arc::from(path.display().to_string()), &text),
        Some("database") => rnn::load(path),
        Some(other) => Err(Error::File {
            file: path.display().to_string().into(),
            message: format!("<{other}> is neither a rules-ng-ng <database> nor an SVD <device>"),
        }),
        None if text.trim_start().starts_with('<') => rnn::load(path),
        None => toml_map::load(path),
    }
}

/// The name of the first element of an XML text, without parsing it all.
fn root_element(text: &str) -> Option<&str> {
    let mut rest = text;
    loop {
        let start = rest.find('<')?;
        rest = &rest[start + 1..];
        if let Some(comment) = rest.strip_prefix("!--") {
            rest = &comment[comment.find("-->")? + 3..];
            continue;
        }
        if rest.starts_with('?') || rest.starts_with('!') {
            continue;
        }
        let end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
        let name = &rest[..end];
        return Some(name.rsplit(':').next().unwrap_or(name));
    }
}
