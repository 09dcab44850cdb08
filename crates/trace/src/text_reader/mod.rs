//! Reads the kernel's mmiotrace text log and mmiotrace's extensions of it.
//!
//! Lenient where real logs vary (comment headers, blank lines, CRLF, a cut-off
//! last line, a PCIDEV line without a driver), strict everywhere else: any
//! other deviation is an error naming the line and column.

mod fields;
mod records;

use std::borrow::Cow;
use std::io::Read;

use fields::Cursor;

use crate::error::{Error, Location, Position};
use crate::event::*;
use crate::input::InputBuf;
use crate::{Item, ReadOptions, Step, Truncation, take_event};

/// Reads a text trace one event at a time, in constant memory.
///
/// ```
/// use mmiotrace_trace::{Item, TextReader};
/// let log = b"# tracer: mmiotrace\nR 4 12.000345 1 0xfebf0010 0x1234 0x0 0\n";
/// let mut reader = TextReader::new(&log[..]);
/// match reader.read_item().unwrap() {
///     Some(Item::Event(event)) => assert_eq!(event.kind_name(), "R"),
///     other => panic!("{other:?}"),
/// }
/// assert!(reader.read_item().unwrap().is_none());
/// ```
#[derive(Debug)]
pub struct TextReader<R> {
    input: InputBuf<R>,
    options: ReadOptions,
    /// Number of the last line consumed.
    line_no: u64,
    /// Discarding the rest of a line that was too long.
    skipping_long_line: bool,
    /// The event last parsed, overwritten in place by the next.
    slot: Event,
    /// A cut-off end seen by `read_ref`.
    truncation: Option<Truncation>,
    done: bool,
}

impl<R: Read> TextReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_options(inner, ReadOptions::default())
    }

    pub fn with_options(inner: R, options: ReadOptions) -> Self {
        Self::from_input(InputBuf::new(inner), options)
    }

    pub(crate) fn from_input(input: InputBuf<R>, options: ReadOptions) -> Self {
        TextReader {
            input,
            options,
            line_no: 0,
            skipping_long_line: false,
            slot: Event::Access(Access::EMPTY),
            truncation: None,
            done: false,
        }
    }

    /// The number of the line last read (1-based; 0 before the first).
    pub fn line_number(&self) -> u64 {
        self.line_no
    }

    fn position_at(&self, line: u64, column: u64) -> Position {
        Position {
            name: self.options.name.clone(),
            location: Location::Line { line, column },
        }
    }

    fn io_error(&self, source: std::io::Error) -> Error {
        Error::Io {
            name: self.options.name.clone(),
            source,
        }
    }

    /// The next event, a [`Item::Truncated`] for a cut-off last line, or
    /// `None` at the end. After an error, reading goes on with the next line.
    pub fn read_item(&mut self) -> Result<Option<Item>, Error> {
        Ok(match self.advance()? {
            Step::Event => Some(Item::Event(take_event(&mut self.slot))),
            Step::Truncated(t) => Some(Item::Truncated(t)),
            Step::End => None,
        })
    }

    /// Like [`read_item`](Self::read_item), but lends the event instead of
    /// moving it out: the reader decodes each line into the same event,
    /// which saves a copy per event and, for marks and maps, an allocation.
    ///
    /// A cut-off end is not an item here: `None` ends the stream, and
    /// [`truncation`](Self::truncation) then says whether it was cut off
    /// (unless truncation is fatal, when it is an error as usual).
    #[inline(always)]
    pub fn read_ref(&mut self) -> Result<Option<&Event>, Error> {
        Ok(match self.advance()? {
            Step::Event => Some(&self.slot),
            Step::Truncated(t) => {
                self.truncation = Some(t);
                None
            }
            Step::End => None,
        })
    }

    /// After [`read_ref`](Self::read_ref) returned `None`: where the input
    /// was cut off, if it was.
    pub fn truncation(&self) -> Option<&Truncation> {
        self.truncation.as_ref()
    }

    #[inline]
    fn advance(&mut self) -> Result<Step, Error> {
        loop {
            if self.done {
                return Ok(Step::End);
            }
            let available = self.input.available();
            if let Some(newline) = memchr::memchr(b'\n', available) {
                if self.skipping_long_line {
                    self.skipping_long_line = false;
                    self.input.consume(newline + 1);
                    continue;
                }
                self.line_no += 1;
                let parsed = parse_line(&available[..newline], &mut self.slot);
                self.input.consume(newline + 1);
                match parsed {
                    Ok(true) => return Ok(Step::Event),
                    Ok(false) => continue,
                    Err(err) => {
                        return Err(Error::Syntax {
                            position: self.position_at(self.line_no, err.column as u64 + 1),
                            message: err.message.into_owned(),
                        });
                    }
                }
            }
            if self.skipping_long_line {
                let n = available.len();
                self.input.consume(n);
            }
            if self.input.is_eof() {
                return self.finish_at_eof();
            }
            let max_line = self.options.max_line_len;
            let read = self.input.refill(max_line).map_err(|e| self.io_error(e))?;
            if read == 0 && !self.input.is_eof() {
                // The buffer holds `max_line` bytes and no line end.
                self.line_no += 1;
                self.skipping_long_line = true;
                let n = self.input.available().len();
                self.input.consume(n);
                return Err(Error::Syntax {
                    position: self.position_at(self.line_no, 1),
                    message: format!("line is longer than {max_line} bytes"),
                });
            }
        }
    }

    /// The input ended: whatever is left is a last line without its line end.
    fn finish_at_eof(&mut self) -> Result<Step, Error> {
        self.done = true;
        let rest = self.input.available();
        let bytes = rest.len() as u64;
        let blank = rest.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r'));
        self.input.consume(rest.len());
        if self.skipping_long_line || blank {
            return Ok(Step::End);
        }
        self.line_no += 1;
        let position = self.position_at(self.line_no, 1);
        if self.options.fatal_truncation {
            return Err(Error::Truncated { position, bytes });
        }
        Ok(Step::Truncated(Truncation { position, bytes }))
    }
}

impl<R: Read> Iterator for TextReader<R> {
    type Item = Result<Item, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.read_item().transpose()
    }
}

/// A syntax error inside one line, boxed so that a `LineResult<u64>` fits
/// in two registers on the hot path.
pub(crate) type LineError = Box<LineErrorAt>;

#[derive(Debug)]
pub(crate) struct LineErrorAt {
    /// 0-based byte index in the line.
    pub(crate) column: usize,
    pub(crate) message: Cow<'static, str>,
}

type LineResult<T> = Result<T, LineError>;

/// Parses one line (without its `\n`) into `slot`, reusing it when it holds
/// an event of the same kind. `Ok(false)` for blank and comment lines.
/// `slot` may be clobbered on failure.
#[inline]
pub(crate) fn parse_line(line: &[u8], slot: &mut Event) -> LineResult<bool> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut c = Cursor { s: line, i: 0 };
    // The hot path: an access line, parsed straight into the slot.
    let access = match line {
        [b'R', b' ', ..] => Some((Direction::Read, false, 1)),
        [b'W', b' ', ..] => Some((Direction::Write, false, 1)),
        [b'V', b'R', b' ', ..] => Some((Direction::Read, true, 2)),
        [b'V', b'W', b' ', ..] => Some((Direction::Write, true, 2)),
        _ => None,
    };
    if let Some((dir, wide, keyword_len)) = access {
        c.i = keyword_len;
        match slot {
            Event::Access(a) => c.access(dir, wide, a)?,
            other => {
                let mut a = Access::EMPTY;
                c.access(dir, wide, &mut a)?;
                *other = Event::Access(a);
            }
        }
        return Ok(true);
    }
    match line.first() {
        None | Some(b'#') => return Ok(false),
        Some(b' ' | b'\t') if c.rest_is_blank() => return Ok(false),
        _ => {}
    }
    let keyword_end = memchr::memchr(b' ', line).unwrap_or(line.len());
    let keyword = &line[..keyword_end];
    c.i = keyword_end;
    let event = match keyword {
        b"MAP" => c.map()?,
        b"UNMAP" => c.unmap()?,
        b"UNKNOWN" => c.unknown()?,
        b"MARK" => c.mark()?,
        b"PCIDEV" => c.pcidev()?,
        b"VERSION" => c.version()?,
        b"REPEAT" => c.repeat()?,
        _ => {
            let shown = String::from_utf8_lossy(&keyword[..keyword.len().min(24)]);
            return Err(Box::new(LineErrorAt {
                column: 0,
                message: format!(
                    "unknown record type \"{}\" (expected R, W, VR, VW, MAP, UNMAP, UNKNOWN, MARK, PCIDEV, VERSION or REPEAT)",
                    shown.escape_debug()
                )
                .into(),
            }));
        }
    };
    *slot = event;
    Ok(true)
}
