//! What can go wrong loading a database or reading a `--device` spec.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A place in a database file: its path as given, a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePos {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

impl SourcePos {
    pub fn new(file: &Arc<str>, line: u32, column: u32) -> Self {
        SourcePos {
            file: file.clone(),
            line,
            column,
        }
    }
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Errors from loading databases and binding them to devices.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A database file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Something wrong at a known place in a database file: malformed XML
    /// or TOML, a bad number, a bad bit range, overlapping registers.
    #[error("{at}: {message}")]
    Invalid { at: SourcePos, message: String },
    /// Something wrong with a database file as a whole.
    #[error("{file}: {message}")]
    File { file: Arc<str>, message: String },
    /// A `--device` or `--chipset` argument that does not parse or names
    /// something no database has.
    #[error("--device {spec:?}: {message}")]
    Spec { spec: String, message: String },
}

impl Error {
    pub(crate) fn invalid(at: SourcePos, message: impl Into<String>) -> Self {
        Error::Invalid {
            at,
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
