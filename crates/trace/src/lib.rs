//! Trace model and formats for mmiotrace.
//!
//! - [`event`]: one type per record kind.
//! - Text, the kernel's mmiotrace log: [`TextWriter`], [`TextReader`].
//! - Binary, compact and fast: [`BinaryWriter`], [`BinaryReader`].
//! - JSON lines, write-only: [`JsonLinesWriter`].
//! - [`TraceReader`] detects text or binary from the first bytes.
//! - QEMU's log of device accesses, read-only: [`qemu_log::QemuLogReader`].
//! - Kernel symbol lists, to name a pc: [`symbols::Symbols`].
//!
//! The byte-level definitions of all three are in docs/FORMAT.md.
#![forbid(unsafe_code)]

pub mod binary;
mod blocks;
pub mod error;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
mod input;
pub mod jsonl;
mod num;
pub mod qemu_log;
pub mod rwmmio;
pub mod symbols;
pub mod text_reader;
pub mod text_writer;

use std::io::{self, Read};
use std::sync::Arc;

pub use binary::{BinaryReader, BinaryWriter};
pub use error::{Error, Location, Position};
pub use event::*;
pub use jsonl::JsonLinesWriter;
pub use text_reader::TextReader;
pub use text_writer::{KERNEL_VERSION, TextWriter};

use input::InputBuf;

/// What a reader yields: an event, or notice that the input was cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    /// The input ended in the middle of a line or record (a trace copied while
    /// it was being written, or a recorder that was killed). Always the last item.
    Truncated(Truncation),
}

/// What a reader found, before it is handed out as an [`Item`] or [`ItemRef`].
pub(crate) enum Step {
    /// The reader's slot holds the next event.
    Event,
    Truncated(Truncation),
    End,
}

/// Moves the event out of a reader's slot. An access is copied instead, so
/// that the slot keeps its kind and the next access is decoded in place.
#[inline]
pub(crate) fn take_event(slot: &mut Event) -> Event {
    match slot {
        Event::Access(a) => Event::Access(a.clone()),
        _ => std::mem::replace(slot, Event::Access(Access::EMPTY)),
    }
}

/// Where the cut-off part starts and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub position: Position,
    pub bytes: u64,
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the trace ends in the middle of a record; its last {} bytes were ignored",
            self.position, self.bytes
        )
    }
}

/// Settings shared by the readers.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The input's name in error messages: a path, or `<stdin>`.
    pub name: Arc<str>,
    /// Report a cut-off end as [`Error::Truncated`] instead of [`Item::Truncated`].
    pub fatal_truncation: bool,
    /// Text lines longer than this are an error (the line is skipped).
    pub max_line_len: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            name: Arc::from("<input>"),
            fatal_truncation: false,
            max_line_len: 1 << 20,
        }
    }
}

impl ReadOptions {
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    pub fn with_fatal_truncation(mut self, fatal: bool) -> Self {
        self.fatal_truncation = fatal;
        self
    }
}

/// The trace formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Text,
    Binary,
    /// Output only.
    JsonLines,
}

impl Format {
    /// The format of a trace that starts with `prefix`: binary if it starts
    /// with [`binary::MAGIC`] (or, when shorter, a prefix of it beginning
    /// with its non-ASCII first byte), text otherwise.
    pub fn detect(prefix: &[u8]) -> Format {
        let n = prefix.len().min(binary::MAGIC.len());
        if n > 0 && prefix[..n] == binary::MAGIC[..n] {
            Format::Binary
        } else {
            Format::Text
        }
    }
}

/// Anything events can be written to.
pub trait EventWrite {
    fn write_event(&mut self, event: &Event) -> io::Result<()>;
    /// Writes out everything buffered.
    fn flush(&mut self) -> io::Result<()>;
}

/// A reader for either format, chosen from the first bytes of the input.
#[derive(Debug)]
pub enum TraceReader<R> {
    Text(TextReader<R>),
    Binary(BinaryReader<R>),
}

impl<R: Read> TraceReader<R> {
    /// Reads the first bytes of `inner` to detect its format.
    pub fn new(inner: R, options: ReadOptions) -> Result<Self, Error> {
        let mut input = InputBuf::new(inner);
        input
            .fill_at_least(binary::MAGIC.len())
            .map_err(|source| Error::Io {
                name: options.name.clone(),
                source,
            })?;
        Ok(match Format::detect(input.available()) {
            Format::Binary => TraceReader::Binary(BinaryReader::from_input(input, options)?),
            _ => TraceReader::Text(TextReader::from_input(input, options)),
        })
    }

    pub fn format(&self) -> Format {
        match self {
            TraceReader::Text(_) => Format::Text,
            TraceReader::Binary(_) => Format::Binary,
        }
    }

    pub fn read_item(&mut self) -> Result<Option<Item>, Error> {
        match self {
            TraceReader::Text(r) => r.read_item(),
            TraceReader::Binary(r) => r.read_item(),
        }
    }

    /// Like [`read_item`](Self::read_item), but lends the event, which the
    /// reader reuses for the next one: faster when the caller only looks.
    /// After `None`, [`truncation`](Self::truncation) says whether the
    /// input was cut off.
    #[inline]
    pub fn read_ref(&mut self) -> Result<Option<&Event>, Error> {
        match self {
            TraceReader::Text(r) => r.read_ref(),
            TraceReader::Binary(r) => r.read_ref(),
        }
    }

    /// After [`read_ref`](Self::read_ref) returned `None`: where the input
    /// was cut off, if it was.
    pub fn truncation(&self) -> Option<&Truncation> {
        match self {
            TraceReader::Text(r) => r.truncation(),
            TraceReader::Binary(r) => r.truncation(),
        }
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Item, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.read_item().transpose()
    }
}
