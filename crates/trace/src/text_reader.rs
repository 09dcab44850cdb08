//! Reads the kernel's mmiotrace text log and mmiotrace's extensions of it.
//!
//! Lenient where real logs vary (comment headers, blank lines, CRLF, a cut-off
//! last line, a PCIDEV line without a driver), strict everywhere else: any
//! other deviation is an error naming the line and column.

use std::borrow::Cow;
use std::io::Read;

use crate::error::{Error, Location, Position};
use crate::event::*;
use crate::input::InputBuf;
use crate::num::hex_digit_value;
use crate::text_writer::parse_lost_text;
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

/// Hex digit values by byte; 0xff for bytes that are not hex digits.
static HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'f' => d - b'a' + 10,
            d @ b'A'..=b'F' => d - b'A' + 10,
            _ => 0xff,
        };
        b += 1;
    }
    table
};

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    #[cold]
    fn err_at(&self, column: usize, message: impl Into<Cow<'static, str>>) -> LineError {
        Box::new(LineErrorAt {
            column,
            message: message.into(),
        })
    }

    fn err(&self, message: impl Into<Cow<'static, str>>) -> LineError {
        self.err_at(self.i, message)
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn rest_is_blank(&self) -> bool {
        self.s[self.i.min(self.s.len())..]
            .iter()
            .all(|&b| b == b' ' || b == b'\t')
    }

    /// Describes the byte at the cursor for an error message.
    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the line".to_string(),
            Some(b) if b.is_ascii_graphic() => format!("\"{}\"", b as char),
            Some(b' ') => "a second space".to_string(),
            Some(b) => format!("byte {b:#04x}"),
        }
    }

    /// The single space that separates two fields.
    #[inline(always)]
    fn space_before(&mut self, what: &'static str) -> LineResult<()> {
        if self.peek() == Some(b' ') {
            self.i += 1;
            Ok(())
        } else if self.peek().is_none() {
            Err(self.err(format!("the line ends before the {what}")))
        } else {
            Err(self.err(format!(
                "expected a space before the {what}, found {}",
                self.found()
            )))
        }
    }

    /// After a number: the field must end here.
    #[inline(always)]
    fn end_of_field(&self, what: &'static str) -> LineResult<()> {
        match self.peek() {
            None | Some(b' ' | b'\t') => Ok(()),
            Some(_) => Err(self.err(format!("unexpected {} in the {what}", self.found()))),
        }
    }

    #[inline(always)]
    fn dec_u64(&mut self, what: &'static str) -> LineResult<u64> {
        let start = self.i;
        let digits = self.s.get(start..).unwrap_or_default();
        let mut value: u64 = 0;
        let mut n = 0;
        // Up to 19 digits cannot overflow; longer runs take the checked path.
        while let Some(&d) = digits.get(n) {
            let d = d.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            value = value.wrapping_mul(10).wrapping_add(u64::from(d));
            n += 1;
        }
        if n == 0 || n > 19 {
            return self.dec_u64_slow(what);
        }
        self.i = start + n;
        self.end_of_field(what)?;
        Ok(value)
    }

    #[cold]
    fn dec_u64_slow(&mut self, what: &'static str) -> LineResult<u64> {
        let start = self.i;
        let mut value: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| self.err_at(start, format!("the {what} is too large")))?;
            self.i += 1;
        }
        if self.i == start {
            return Err(self.err(format!("expected a decimal {what}, found {}", self.found())));
        }
        self.end_of_field(what)?;
        Ok(value)
    }

    #[inline(always)]
    fn dec_u32(&mut self, what: &'static str) -> LineResult<u32> {
        let start = self.i;
        let value = self.dec_u64(what)?;
        u32::try_from(value).map_err(|_| {
            self.err_at(
                start,
                format!("the {what} is too large (the maximum is 4294967295)"),
            )
        })
    }

    /// ` <decimal>`.
    #[inline(always)]
    fn field_dec_u32(&mut self, what: &'static str) -> LineResult<u32> {
        self.space_before(what)?;
        self.dec_u32(what)
    }

    /// Hex digits (no prefix) into a u64.
    #[inline(always)]
    fn hex_digits(&mut self, what: &'static str, after_0x: bool) -> LineResult<u64> {
        let start = self.i;
        let digits = self.s.get(start..).unwrap_or_default();
        let mut value: u64 = 0;
        let mut n = 0;
        while let Some(&d) = digits.get(n) {
            let d = HEX_VALUE[usize::from(d)];
            if d > 15 {
                break;
            }
            value = (value << 4) | u64::from(d);
            n += 1;
        }
        if n == 0 || n > 16 {
            return self.hex_digits_slow(what, after_0x);
        }
        self.i = start + n;
        self.end_of_field(what)?;
        Ok(value)
    }

    /// No digits, or more than 16 of them (leading zeros, or an overflow).
    #[cold]
    fn hex_digits_slow(&mut self, what: &'static str, after_0x: bool) -> LineResult<u64> {
        let start = self.i;
        let mut value: u64 = 0;
        while let Some(d) = self.peek().and_then(hex_digit_value) {
            if value >> 60 != 0 {
                return Err(self.err_at(start, format!("the {what} does not fit in 64 bits")));
            }
            value = (value << 4) | u64::from(d);
            self.i += 1;
        }
        if self.i == start {
            return Err(if after_0x {
                self.err("expected a hex value after \"0x\"")
            } else {
                self.err(format!("expected a hex {what}, found {}", self.found()))
            });
        }
        self.end_of_field(what)?;
        Ok(value)
    }

    #[inline(always)]
    fn expect_0x(&mut self, what: &'static str) -> LineResult<()> {
        if self.s[self.i.min(self.s.len())..].starts_with(b"0x") {
            self.i += 2;
            Ok(())
        } else {
            Err(self.err(format!(
                "expected \"0x\" and the {what}, found {}",
                self.found()
            )))
        }
    }

    /// ` 0x<hex>`.
    #[inline(always)]
    fn field_0x(&mut self, what: &'static str) -> LineResult<u64> {
        self.space_before(what)?;
        self.expect_0x(what)?;
        self.hex_digits(what, true)
    }

    /// ` <hex>` without a prefix, as in PCIDEV lines.
    fn field_hex(&mut self, what: &'static str) -> LineResult<u64> {
        self.space_before(what)?;
        self.hex_digits(what, false)
    }

    /// ` <hex>` of exactly `digits` digits (PCIDEV's `%02x%02x`, `%04x%04x`).
    fn field_hex_fixed(&mut self, what: &'static str, digits: usize) -> LineResult<u64> {
        self.space_before(what)?;
        let start = self.i;
        let value = self.hex_digits(what, false)?;
        if self.i - start != digits {
            return Err(self.err_at(
                start,
                format!("expected exactly {digits} hex digits for the {what}"),
            ));
        }
        Ok(value)
    }

    /// ` %u.%06lu`.
    #[inline(always)]
    fn field_time(&mut self) -> LineResult<Timestamp> {
        self.space_before("time")?;
        self.time()
    }

    /// `%u.%06lu` at the cursor.
    #[inline(always)]
    fn time(&mut self) -> LineResult<Timestamp> {
        let start = self.i;
        let mut secs: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            secs = secs
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| self.err_at(start, "the time is too large"))?;
            self.i += 1;
        }
        if self.i == start {
            return Err(self.err(format!(
                "expected a time (seconds.microseconds), found {}",
                self.found()
            )));
        }
        if self.peek() != Some(b'.') {
            return Err(self.err(format!(
                "expected \".\" and 6 digits of microseconds in the time, found {}",
                self.found()
            )));
        }
        self.i += 1;
        let mut micros: u64 = 0;
        for _ in 0..6 {
            match self.peek() {
                Some(d @ b'0'..=b'9') => {
                    micros = micros * 10 + u64::from(d - b'0');
                    self.i += 1;
                }
                _ => {
                    return Err(self.err(format!(
                        "expected 6 digits of microseconds in the time, found {}",
                        self.found()
                    )));
                }
            }
        }
        self.end_of_field("time")?;
        let nanos = secs
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(micros * 1000))
            .ok_or_else(|| self.err_at(start, "the time is too large (over 584 years)"))?;
        Ok(Timestamp::from_nanos(nanos))
    }

    /// A wide value: `0x` and up to 2×`width` hex digits, most significant first.
    fn field_wide_value(&mut self, width: u8) -> LineResult<Value> {
        self.space_before("value")?;
        self.wide_value(width)
    }

    /// A value of `width` bytes at the cursor: `0x` and hex digits (the
    /// wide form above 8 bytes).
    fn value(&mut self, width: u8) -> LineResult<Value> {
        if width > 8 {
            return self.wide_value(width);
        }
        let value_at = self.i;
        self.expect_0x("value")?;
        let raw = self.hex_digits("value", true)?;
        let mut value = Value::ZERO;
        if !value.set_u64(width, raw) {
            return Err(self.err_at(value_at, format!("the value does not fit in {width} bytes")));
        }
        Ok(value)
    }

    /// The wide form of a value at the cursor.
    fn wide_value(&mut self, width: u8) -> LineResult<Value> {
        self.expect_0x("value")?;
        let start = self.i;
        while self.peek().and_then(hex_digit_value).is_some() {
            self.i += 1;
        }
        let digits = &self.s[start..self.i];
        if digits.is_empty() {
            return Err(self.err("expected a hex value after \"0x\""));
        }
        self.end_of_field("value")?;
        let significant = digits
            .iter()
            .position(|&d| d != b'0')
            .map_or(&digits[..0], |first| &digits[first..]);
        if significant.len() > 2 * usize::from(width) {
            return Err(self.err_at(start, format!("the value does not fit in {width} bytes")));
        }
        // docs/FORMAT.md: up to 2×width digits, leading zeros included.
        if digits.len() > 2 * usize::from(width) {
            return Err(self.err_at(
                start,
                format!(
                    "a {width}-byte value has at most {} hex digits, this one has {}",
                    2 * usize::from(width),
                    digits.len()
                ),
            ));
        }
        let mut le = [0u8; Value::MAX_WIDTH];
        // Walk from the least significant digit, two digits per byte.
        for (k, &d) in significant.iter().rev().enumerate() {
            let nibble = hex_digit_value(d).unwrap_or(0);
            le[k / 2] |= nibble << (4 * (k % 2));
        }
        Value::from_le_bytes(&le[..usize::from(width)])
            .ok_or_else(|| self.err_at(start, "invalid value width"))
    }

    /// `R|W width time id 0xphys 0xvalue 0xpc pid [ext]`, or the VR/VW form,
    /// into `a` field by field.
    #[inline]
    fn access(&mut self, dir: Direction, wide: bool, a: &mut Access) -> LineResult<()> {
        self.space_before("width")?;
        let width_at = self.i;
        let width = self.dec_u64("width")?;
        let width = match (wide, width) {
            (false, 1 | 2 | 4 | 8) | (true, 16 | 32 | 64) => width as u8,
            (false, _) => {
                return Err(self.err_at(
                    width_at,
                    "the width must be 1, 2, 4 or 8 (wider accesses use VR/VW lines)",
                ));
            }
            (true, _) => {
                return Err(self.err_at(width_at, "the width of a VR/VW line must be 16, 32 or 64"));
            }
        };
        a.dir = dir;
        a.time = self.field_time()?;
        a.map_id = self.field_dec_u32("map id")?;
        a.phys = self.field_0x("physical address")?;
        if wide {
            a.value = self.field_wide_value(width)?;
        } else {
            let value_at = self.i + 1;
            let raw = self.field_0x("value")?;
            if !a.value.set_u64(width, raw) {
                return Err(
                    self.err_at(value_at, format!("the value does not fit in {width} bytes"))
                );
            }
        }
        a.pc = self.field_0x("pc")?;
        a.pid = self.field_dec_u32("pid")?;
        (a.ext, _) = self.ext_tokens(false)?;
        if let Some(device) = a.ext.hook.and_then(|hook| hook.device) {
            let width = a.value.width();
            if width < 8 && device >> (8 * u32::from(width)) != 0 {
                return Err(self.err(format!("the dev= value does not fit in {width} bytes")));
            }
        }
        Ok(())
    }

    /// `REPEAT R|W width time id 0xphys 0xvalue 0xpc pid count=N len=K
    /// end=TIME [seq=N] [proc=N] [until=0xV]`, the keys in any order.
    fn repeat(&mut self) -> LineResult<Event> {
        self.space_before("direction")?;
        let dir = match self.peek() {
            Some(b'R') => Direction::Read,
            Some(b'W') => Direction::Write,
            _ => {
                return Err(self.err(format!(
                    "expected R or W after REPEAT, found {}",
                    self.found()
                )));
            }
        };
        self.i += 1;
        self.end_of_field("direction")?;
        self.space_before("width")?;
        let width_at = self.i;
        let width = self.dec_u64("width")?;
        if !Value::is_valid_width(width as usize) || width == 0 {
            return Err(self.err_at(width_at, "the width must be 1, 2, 4, 8, 16, 32 or 64"));
        }
        let width = width as u8;
        let time = self.field_time()?;
        let map_id = self.field_dec_u32("map id")?;
        let phys = self.field_0x("physical address")?;
        self.space_before("value")?;
        let value = self.value(width)?;
        let pc = self.field_0x("pc")?;
        let pid = self.field_dec_u32("pid")?;
        let (mut count, mut len, mut end, mut until) = (None, None, None, None);
        let mut ext = Ext::default();
        while !(self.i >= self.s.len() || self.rest_is_blank()) {
            self.space_before("key=value field")?;
            let key_start = self.i;
            while self.peek().is_some_and(|b| b.is_ascii_lowercase()) {
                self.i += 1;
            }
            let key = &self.s[key_start..self.i];
            if self.peek() != Some(b'=') || key.is_empty() {
                return Err(self.err_at(
                    key_start,
                    "expected a key=value field (count=, len=, end=, seq=, proc= or until=)",
                ));
            }
            self.i += 1;
            let duplicate = match key {
                b"count" => count.replace(self.dec_u64("count= value")?).is_some(),
                b"len" => {
                    let at = self.i;
                    let n = self.dec_u32("len= value")?;
                    if n == 0 {
                        return Err(self.err_at(at, "len= must be at least 1"));
                    }
                    len.replace(n).is_some()
                }
                b"end" => end.replace(self.time()?).is_some(),
                b"seq" => ext.seq.replace(self.dec_u64("seq= value")?).is_some(),
                b"proc" => ext.process.replace(self.dec_u32("proc= value")?).is_some(),
                b"until" => until.replace(self.value(width)?).is_some(),
                _ => {
                    return Err(self.err_at(
                        key_start,
                        format!(
                            "unknown field \"{}=\" on a REPEAT line",
                            String::from_utf8_lossy(key)
                        ),
                    ));
                }
            };
            if duplicate {
                return Err(self.err_at(
                    key_start,
                    format!("duplicate {}= field", String::from_utf8_lossy(key)),
                ));
            }
        }
        let (Some(count), Some(len), Some(end)) = (count, len, end) else {
            return Err(self.err("a REPEAT line needs count=, len= and end="));
        };
        Ok(Event::Repeat(Box::new(Repeat {
            dir,
            time,
            end,
            map_id,
            phys,
            value,
            pc,
            pid,
            count,
            len,
            until,
            ext,
        })))
    }

    /// `MAP time id 0xphys 0xvirt 0xlen 0xpc pid [ext] [path=]`.
    fn map(&mut self) -> LineResult<Event> {
        let time = self.field_time()?;
        let map_id = self.field_dec_u32("map id")?;
        let phys = self.field_0x("physical address")?;
        let virt = self.field_0x("virtual address")?;
        let len = self.field_0x("length")?;
        let pc = self.field_0x("pc")?;
        let pid = self.field_dec_u32("pid")?;
        let (ext, path) = self.ext_tokens(true)?;
        Ok(Event::Map(Map {
            time,
            map_id,
            phys,
            virt,
            len,
            pc,
            pid,
            ext,
            path,
        }))
    }

    /// `UNMAP time id 0xpc pid [ext]`.
    fn unmap(&mut self) -> LineResult<Event> {
        let time = self.field_time()?;
        let map_id = self.field_dec_u32("map id")?;
        let pc = self.field_0x("pc")?;
        let pid = self.field_dec_u32("pid")?;
        let (ext, _) = self.ext_tokens(false)?;
        Ok(Event::Unmap(Unmap {
            time,
            map_id,
            pc,
            pid,
            ext,
        }))
    }

    /// `UNKNOWN time id 0xphys b0,b1,b2 0xpc pid [ext]`.
    fn unknown(&mut self) -> LineResult<Event> {
        let time = self.field_time()?;
        let map_id = self.field_dec_u32("map id")?;
        let phys = self.field_0x("physical address")?;
        self.space_before("opcode bytes")?;
        let mut opcode = [0u8; 3];
        for (k, byte) in opcode.iter_mut().enumerate() {
            if k > 0 {
                if self.peek() != Some(b',') {
                    return Err(self.err(format!(
                        "expected \",\" between opcode bytes, found {}",
                        self.found()
                    )));
                }
                self.i += 1;
            }
            let start = self.i;
            let mut value: u64 = 0;
            while let Some(d) = self.peek().and_then(hex_digit_value) {
                value = (value << 4) | u64::from(d);
                self.i += 1;
                if self.i - start > 2 {
                    break;
                }
            }
            if self.i - start != 2 {
                return Err(self.err_at(start, "expected an opcode byte as 2 hex digits"));
            }
            *byte = value as u8;
        }
        self.end_of_field("opcode bytes")?;
        let pc = self.field_0x("pc")?;
        let pid = self.field_dec_u32("pid")?;
        let (ext, _) = self.ext_tokens(false)?;
        Ok(Event::Unknown(Unknown {
            time,
            map_id,
            phys,
            opcode,
            pc,
            pid,
            ext,
        }))
    }

    /// A lost-events line whose count does not fit in 64 bits.
    fn lost_overflow(&self, text_start: usize) -> LineError {
        self.err_at(
            text_start + "Lost ".len(),
            "the lost-event count does not fit in 64 bits",
        )
    }

    /// `MARK time text`, the lost-events line, and their extended forms.
    fn mark(&mut self) -> LineResult<Event> {
        let time = self.field_time()?;
        // The text runs to the end of the line; a missing separator means an empty text.
        if self.peek().is_some_and(|b| b != b' ') {
            return Err(self.err(format!(
                "expected a space before the MARK text, found {}",
                self.found()
            )));
        }
        let text_start = (self.i + 1).min(self.s.len());
        let text = &self.s[text_start..];
        if let Some(tab) = memchr::memrchr(b'\t', text)
            && let Ok(ext) = parse_mark_ext(&text[tab + 1..])
        {
            let escaped = &text[..tab];
            if time.nanos == 0
                && let Some(count) = parse_lost_text(escaped)
            {
                let count = count.ok_or_else(|| self.lost_overflow(text_start))?;
                return Ok(Event::Lost(Lost { count, ext }));
            }
            let text =
                unescape_mark(escaped).map_err(|(k, msg)| self.err_at(text_start + k, msg))?;
            let text = String::from_utf8(text).map_err(|e| {
                self.err_at(
                    text_start + e.utf8_error().valid_up_to(),
                    "the MARK text is not valid UTF-8",
                )
            })?;
            return Ok(Event::Mark(Mark { time, text, ext }));
        }
        if time.nanos == 0
            && let Some(count) = parse_lost_text(text)
        {
            let count = count.ok_or_else(|| self.lost_overflow(text_start))?;
            return Ok(Event::Lost(Lost {
                count,
                ext: Ext::default(),
            }));
        }
        let text = std::str::from_utf8(text).map_err(|e| {
            self.err_at(
                text_start + e.valid_up_to(),
                "the MARK text is not valid UTF-8",
            )
        })?;
        Ok(Event::Mark(Mark {
            time,
            text: text.to_owned(),
            ext: Ext::default(),
        }))
    }

    /// `PCIDEV bbdd vvvvdddd irq` + 7 BAR starts + 7 sizes + ` driver`.
    fn pcidev(&mut self) -> LineResult<Event> {
        let busdevfn = self.field_hex_fixed("bus and devfn", 4)?;
        let ids = self.field_hex_fixed("vendor and device id", 8)?;
        let irq_at = self.i + 1;
        let irq = self.field_hex("irq")?;
        let irq = u32::try_from(irq)
            .map_err(|_| self.err_at(irq_at, "the irq does not fit in 32 bits"))?;
        let mut bar_start = [0u64; PCI_BARS];
        for v in &mut bar_start {
            *v = self.field_hex("BAR start")?;
        }
        let mut bar_size = [0u64; PCI_BARS];
        for v in &mut bar_size {
            *v = self.field_hex("BAR size")?;
        }
        // " driver"; the kernel leaves just the space when no driver is bound,
        // and a log whose trailing spaces were stripped has not even that.
        let mut driver = String::new();
        if self.peek() == Some(b' ') {
            self.i += 1;
            let start = self.i;
            while self.peek().is_some_and(|b| b != b' ' && b != b'\t') {
                self.i += 1;
            }
            driver = std::str::from_utf8(&self.s[start..self.i])
                .map_err(|e| {
                    self.err_at(
                        start + e.valid_up_to(),
                        "the driver name is not valid UTF-8",
                    )
                })?
                .to_owned();
            if driver.bytes().any(crate::text_writer::is_control) {
                return Err(self.err_at(start, "the driver name contains control characters"));
            }
        }
        if !self.rest_is_blank() {
            return Err(self.err(format!(
                "expected the end of the line after the driver name, found {}",
                self.found()
            )));
        }
        Ok(Event::PciDev(PciDev {
            bus: (busdevfn >> 8) as u8,
            devfn: busdevfn as u8,
            vendor: (ids >> 16) as u16,
            device: ids as u16,
            irq,
            bar_start,
            bar_size,
            driver,
        }))
    }

    /// `VERSION <token>`.
    fn version(&mut self) -> LineResult<Event> {
        self.space_before("version")?;
        let start = self.i;
        while self.peek().is_some_and(|b| b != b' ' && b != b'\t') {
            self.i += 1;
        }
        if self.i == start {
            return Err(self.err("expected a version string"));
        }
        let version = std::str::from_utf8(&self.s[start..self.i])
            .map_err(|e| self.err_at(start + e.valid_up_to(), "the version is not valid UTF-8"))?;
        if version.bytes().any(crate::text_writer::is_control) {
            return Err(self.err_at(start, "the version contains control characters"));
        }
        if !self.rest_is_blank() {
            return Err(self.err(format!(
                "expected the end of the line after the version, found {}",
                self.found()
            )));
        }
        Ok(Event::Version(Version {
            version: version.to_owned(),
        }))
    }

    /// ` key=value` tokens after the kernel fields, then optional trailing blanks.
    #[inline]
    fn ext_tokens(&mut self, allow_path: bool) -> LineResult<(Ext, Option<String>)> {
        let mut ext = Ext::default();
        let mut path = None;
        // `dev=`: `Some(None)` for `dev=none`; and where the keys were.
        let mut device: Option<Option<u64>> = None;
        let mut hook_key_at = (0, 0);
        loop {
            if self.i >= self.s.len() || self.rest_is_blank() {
                return self
                    .hook_fields(ext, device, hook_key_at)
                    .map(|ext| (ext, path));
            }
            if self.peek() != Some(b' ') {
                return Err(self.err(format!(
                    "expected a space and a key=value field, found {}",
                    self.found()
                )));
            }
            self.i += 1;
            let key_start = self.i;
            while self.peek().is_some_and(|b| b.is_ascii_lowercase()) {
                self.i += 1;
            }
            let key = &self.s[key_start..self.i];
            if self.peek() != Some(b'=') || key.is_empty() {
                return Err(self.err_at(
                    key_start,
                    "expected a key=value field (seq=, proc= or path=)",
                ));
            }
            self.i += 1;
            let duplicate = match key {
                b"seq" => ext.seq.is_some(),
                b"proc" => ext.process.is_some(),
                b"path" if allow_path => path.is_some(),
                b"hook" if !allow_path => ext.hook.is_some(),
                b"dev" if !allow_path => device.is_some(),
                _ => {
                    return Err(self.err_at(
                        key_start,
                        format!(
                            "unknown extension field \"{}=\" on this line",
                            String::from_utf8_lossy(key)
                        ),
                    ));
                }
            };
            if duplicate {
                return Err(self.err_at(
                    key_start,
                    format!("duplicate {}= field", String::from_utf8_lossy(key)),
                ));
            }
            match key {
                b"seq" => ext.seq = Some(self.dec_u64("seq= value")?),
                b"proc" => ext.process = Some(self.dec_u32("proc= value")?),
                b"hook" => {
                    hook_key_at.0 = key_start;
                    let rule = self.dec_u32("hook= rule number")?;
                    ext.hook = Some(crate::Hooked { rule, device: None });
                }
                b"dev" => {
                    hook_key_at.1 = key_start;
                    device = Some(self.device_value()?);
                }
                _ => {
                    let start = self.i;
                    while self.peek().is_some_and(|b| b != b' ' && b != b'\t') {
                        self.i += 1;
                    }
                    let decoded = percent_decode(&self.s[start..self.i]).map_err(|k| {
                        self.err_at(start + k, "expected two hex digits after \"%\" in the path")
                    })?;
                    let decoded = String::from_utf8(decoded).map_err(|e| {
                        self.err_at(
                            start,
                            format!(
                                "the path is not valid UTF-8 (at byte {})",
                                e.utf8_error().valid_up_to()
                            ),
                        )
                    })?;
                    path = Some(decoded);
                }
            }
        }
    }
}

impl Cursor<'_> {
    /// `dev=`'s value: `0xHEX` or `none`.
    fn device_value(&mut self) -> LineResult<Option<u64>> {
        if self.s.get(self.i..self.i + 4) == Some(b"none") {
            self.i += 4;
            self.end_of_field("dev= value")?;
            return Ok(None);
        }
        self.expect_0x("dev= value")?;
        self.hex_digits("dev= value", true).map(Some)
    }

    /// `hook=` and `dev=` come together.
    fn hook_fields(
        &self,
        mut ext: Ext,
        device: Option<Option<u64>>,
        (hook_at, dev_at): (usize, usize),
    ) -> LineResult<Ext> {
        match (&mut ext.hook, device) {
            (Some(hook), Some(device)) => hook.device = device,
            (None, None) => {}
            (Some(_), None) => {
                return Err(self.err_at(
                    hook_at,
                    "a hook= field needs a dev= field (the device's value, or none)",
                ));
            }
            (None, Some(_)) => return Err(self.err_at(dev_at, "a dev= field needs a hook= field")),
        }
        Ok(ext)
    }
}

/// The token list after the tab of an extended MARK line: `seq=N proc=N`,
/// space-separated, possibly empty. `Err` if it is anything else.
fn parse_mark_ext(tokens: &[u8]) -> Result<Ext, ()> {
    let mut ext = Ext::default();
    if tokens.is_empty() {
        return Ok(ext);
    }
    for token in tokens.split(|&b| b == b' ') {
        let (key, value) = match memchr::memchr(b'=', token) {
            Some(eq) => (&token[..eq], &token[eq + 1..]),
            None => return Err(()),
        };
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let number = value.iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        match (key, number) {
            (b"seq", Some(n)) if ext.seq.is_none() => ext.seq = Some(n),
            (b"proc", Some(n)) if ext.process.is_none() => {
                ext.process = Some(u32::try_from(n).map_err(|_| ())?)
            }
            _ => return Err(()),
        }
    }
    Ok(ext)
}

/// Undoes the MARK escapes `\\` and `\xHH`. `Err((index, why))` otherwise.
fn unescape_mark(escaped: &[u8]) -> Result<Vec<u8>, (usize, &'static str)> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut k = 0;
    while k < escaped.len() {
        let b = escaped[k];
        if b != b'\\' {
            out.push(b);
            k += 1;
            continue;
        }
        match escaped.get(k + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                k += 2;
            }
            Some(b'x') => {
                let hi = escaped.get(k + 2).copied().and_then(hex_digit_value);
                let lo = escaped.get(k + 3).copied().and_then(hex_digit_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err((k, "expected two hex digits after \"\\x\" in the MARK text")),
                }
                k += 4;
            }
            _ => return Err((k, "expected \"\\\\\" or \"\\xHH\" in the escaped MARK text")),
        }
    }
    Ok(out)
}

/// Undoes `%HH`. `Err(index)` for a malformed escape.
fn percent_decode(escaped: &[u8]) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut k = 0;
    while k < escaped.len() {
        if escaped[k] == b'%' {
            let hi = escaped.get(k + 1).copied().and_then(hex_digit_value);
            let lo = escaped.get(k + 2).copied().and_then(hex_digit_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(k),
            }
            k += 3;
        } else {
            out.push(escaped[k]);
            k += 1;
        }
    }
    Ok(out)
}
