//! Errors of the trace readers.

use std::fmt;
use std::sync::Arc;

/// Where in an input a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A text trace: 1-based line and column (the column counts bytes).
    Line { line: u64, column: u64 },
    /// A binary trace: byte offset from the start of the input.
    Offset(u64),
}

/// An input's name (a path, or `<stdin>`) and a place in it.
///
/// Displays as `trace.txt:1042:17` for text and `trace.mtb:@4096` for binary input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub name: Arc<str>,
    pub location: Location,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Location::Line { line, column } => write!(f, "{}:{line}:{column}", self.name),
            Location::Offset(offset) => write!(f, "{}:@{offset}", self.name),
        }
    }
}

/// Everything that can go wrong while reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `{position}: {message}`: the input does not follow the format.
    #[error("{position}: {message}")]
    Syntax { position: Position, message: String },

    /// `{position}: the trace ends in the middle of a record`: reported instead of
    /// [`Item::Truncated`](crate::Item::Truncated) when truncation is made fatal.
    #[error("{position}: the trace ends in the middle of a record ({bytes} bytes cut off)")]
    Truncated { position: Position, bytes: u64 },

    /// `{name}: binary trace version {version} is not supported (this build reads version {supported})`.
    #[error(
        "{name}: binary trace version {version} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        name: Arc<str>,
        version: u16,
        supported: u16,
    },

    /// `{name}: read error`: the underlying reader failed.
    #[error("{name}: read error")]
    Io {
        name: Arc<str>,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The position of a syntax error or truncation, if the error has one.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Error::Syntax { position, .. } | Error::Truncated { position, .. } => Some(position),
            Error::UnsupportedVersion { .. } | Error::Io { .. } => None,
        }
    }
}
