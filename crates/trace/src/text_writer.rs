//! The kernel's mmiotrace text log, written byte-exactly, plus mmiotrace's
//! extensions (docs/FORMAT.md, "Text format").

use std::io::{self, Write};

use crate::EventWrite;
use crate::blocks::Blocks;
use crate::event::*;
use crate::num::{push_dec, push_dec6, push_hex, push_hex_byte, push_hex_padded};

/// The version line the kernel writes first, and so do we.
pub const KERNEL_VERSION: &str = "20070824";

/// Writes events as text lines, one per event.
///
/// Lines are formatted into a buffer of the writer's own, which goes to
/// the underlying writer in blocks of 64 KiB: a `File` needs no
/// `BufWriter`. Call [`finish`](Self::finish) (or [`flush`](Self::flush))
/// at the end; dropping the writer writes what is pending too, ignoring
/// errors.
///
/// ```
/// use mmiotrace_trace::{Event, TextWriter, Version};
/// let mut w = TextWriter::new(Vec::new());
/// w.write_event(&Event::Version(Version { version: "20070824".into() })).unwrap();
/// assert_eq!(w.finish().unwrap(), b"VERSION 20070824\n");
/// ```
#[derive(Debug)]
pub struct TextWriter<W: Write> {
    out: Blocks<W>,
    /// The numbers of the last access line, kept formatted.
    recent: Recent,
}

impl<W: Write> TextWriter<W> {
    pub fn new(out: W) -> Self {
        TextWriter {
            out: Blocks::new(out),
            recent: Recent::default(),
        }
    }

    /// Writes one event. Fails with `InvalidInput`, writing nothing, for an
    /// event that has no text form (a version string that is empty or
    /// contains whitespace, a driver name that contains whitespace).
    #[inline]
    pub fn write_event(&mut self, event: &Event) -> io::Result<()> {
        let pending = self.out.pending();
        if let Event::Access(a) = event {
            // Most lines, and they cannot fail.
            format_access(a, pending, &mut self.recent);
            pending.push(b'\n');
            return self.out.done();
        }
        let start = pending.len();
        if let Err(why) = format_event(event, pending) {
            pending.truncate(start);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        self.out.done()
    }

    /// Writes what is pending and flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> io::Result<W> {
        self.out.finish()
    }

    /// The underlying writer, with what is pending written to it but not
    /// flushed.
    pub fn into_inner(self) -> io::Result<W> {
        self.out.into_inner()
    }

    /// The underlying writer. The last lines may still be pending in this
    /// writer: [`flush`](Self::flush) first.
    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }

    /// The underlying writer (see [`get_ref`](Self::get_ref)).
    pub fn get_mut(&mut self) -> &mut W {
        self.out.get_mut()
    }
}

impl<W: Write> EventWrite for TextWriter<W> {
    fn write_event(&mut self, event: &Event) -> io::Result<()> {
        TextWriter::write_event(self, event)
    }
    fn flush(&mut self) -> io::Result<()> {
        TextWriter::flush(self)
    }
}

/// Appends the text line of `event`, newline included, to `out`.
/// On error `out` may hold part of the line.
pub fn format_event(event: &Event, out: &mut Vec<u8>) -> Result<(), &'static str> {
    match event {
        Event::Access(a) => format_access(a, out, &mut Plain),
        Event::Version(v) => {
            if let Some((_, why)) = bad_version(v.version.as_bytes()) {
                return Err(why);
            }
            out.extend_from_slice(b"VERSION ");
            out.extend_from_slice(v.version.as_bytes());
        }
        Event::PciDev(p) => {
            if let Some((_, why)) = bad_driver(p.driver.as_bytes()) {
                return Err(why);
            }
            out.extend_from_slice(b"PCIDEV ");
            push_hex_padded(out, p.bus.into(), 2);
            push_hex_padded(out, p.devfn.into(), 2);
            out.push(b' ');
            push_hex_padded(out, p.vendor.into(), 4);
            push_hex_padded(out, p.device.into(), 4);
            out.push(b' ');
            push_hex(out, p.irq.into());
            for v in p.bar_start.iter().chain(p.bar_size.iter()) {
                out.push(b' ');
                push_hex(out, *v);
            }
            // The kernel writes " %s" even for an empty driver name.
            out.push(b' ');
            out.extend_from_slice(p.driver.as_bytes());
        }
        Event::Map(m) => {
            out.extend_from_slice(b"MAP ");
            push_time(out, m.time);
            out.push(b' ');
            push_dec(out, m.map_id.into());
            push_0x(out, m.phys);
            push_0x(out, m.virt);
            push_0x(out, m.len);
            push_0x(out, m.pc);
            out.push(b' ');
            push_dec(out, m.pid.into());
            push_ext(out, &m.ext);
            if let Some(path) = &m.path {
                out.extend_from_slice(b" path=");
                push_percent_escaped(out, path.as_bytes());
            }
        }
        Event::Unmap(u) => {
            out.extend_from_slice(b"UNMAP ");
            push_time(out, u.time);
            out.push(b' ');
            push_dec(out, u.map_id.into());
            push_0x(out, u.pc);
            out.push(b' ');
            push_dec(out, u.pid.into());
            push_ext(out, &u.ext);
        }
        Event::Unknown(u) => {
            out.extend_from_slice(b"UNKNOWN ");
            push_time(out, u.time);
            out.push(b' ');
            push_dec(out, u.map_id.into());
            push_0x(out, u.phys);
            out.push(b' ');
            push_hex_byte(out, u.opcode[0]);
            out.push(b',');
            push_hex_byte(out, u.opcode[1]);
            out.push(b',');
            push_hex_byte(out, u.opcode[2]);
            push_0x(out, u.pc);
            out.push(b' ');
            push_dec(out, u.pid.into());
            push_ext(out, &u.ext);
        }
        Event::Mark(m) => {
            out.extend_from_slice(b"MARK ");
            push_time(out, m.time);
            out.push(b' ');
            let text = m.text.as_bytes();
            // A mark that would read back as the kernel's lost-events line
            // is written escaped so that it reads back as a mark.
            let looks_lost = m.time.nanos < 1000 && parse_lost_text(text).is_some();
            if m.ext.is_empty() && !looks_lost && !text.iter().any(|&b| is_control(b)) {
                out.extend_from_slice(text);
            } else {
                push_mark_escaped(out, text, looks_lost);
                out.push(b'\t');
                push_mark_ext(out, &m.ext);
            }
        }
        Event::Repeat(r) => format_repeat(r, out)?,
        Event::Lost(l) => {
            out.extend_from_slice(b"MARK 0.000000 Lost ");
            push_dec(out, l.count);
            out.extend_from_slice(b" events.");
            if !l.ext.is_empty() {
                out.push(b'\t');
                push_mark_ext(out, &l.ext);
            }
        }
    }
    out.push(b'\n');
    Ok(())
}

/// How the numbers that repeat from line to line are written: afresh
/// ([`Plain`]), or from the last line's ([`Recent`]). Both write the same.
trait Numbers {
    /// `%u.%06lu`: seconds, a dot, microseconds (nanoseconds are truncated).
    fn time(&mut self, out: &mut Vec<u8>, t: Timestamp);
    /// The thread id of an access.
    fn pid(&mut self, out: &mut Vec<u8>, v: u32);
    fn seq(&mut self, out: &mut Vec<u8>, v: u64);
    fn process(&mut self, out: &mut Vec<u8>, v: u32);
}

/// Every number formatted afresh.
struct Plain;

impl Numbers for Plain {
    #[inline]
    fn time(&mut self, out: &mut Vec<u8>, t: Timestamp) {
        push_time(out, t);
    }
    #[inline]
    fn pid(&mut self, out: &mut Vec<u8>, v: u32) {
        push_dec(out, v.into());
    }
    #[inline]
    fn seq(&mut self, out: &mut Vec<u8>, v: u64) {
        push_dec(out, v);
    }
    #[inline]
    fn process(&mut self, out: &mut Vec<u8>, v: u32) {
        push_dec(out, v.into());
    }
}

/// The time, thread, sequence number and process of the last access
/// line, as written. In a trace the thread and process are those of the
/// line before more often than not, the sequence number is one more, and
/// at tens of millions of accesses per second dozens share a microsecond:
/// a copy, or one more in the last digit, instead of a division per digit
/// (half the cost of a line, before).
#[derive(Debug, Default)]
struct Recent {
    /// Microseconds since the start, and `secs.micros`.
    time: Formatted,
    pid: Formatted,
    seq: Formatted,
    process: Formatted,
}

impl Numbers for Recent {
    #[inline]
    fn time(&mut self, out: &mut Vec<u8>, t: Timestamp) {
        let micros = t.nanos / 1000;
        self.time.push(out, micros, |text| push_time(text, t));
    }
    #[inline]
    fn pid(&mut self, out: &mut Vec<u8>, v: u32) {
        self.pid
            .push(out, v.into(), |text| push_dec(text, v.into()));
    }
    #[inline]
    fn seq(&mut self, out: &mut Vec<u8>, v: u64) {
        self.seq.push(out, v, |text| push_dec(text, v));
    }
    #[inline]
    fn process(&mut self, out: &mut Vec<u8>, v: u32) {
        self.process
            .push(out, v.into(), |text| push_dec(text, v.into()));
    }
}

/// A number and its text: decimal digits, with at most one `.` among them
/// (a time).
#[derive(Debug, Default)]
struct Formatted {
    value: Option<u64>,
    text: [u8; FORMATTED_MAX],
    len: usize,
}

/// Longest text a [`Formatted`] holds: 20 digits of a `u64` and a dot.
const FORMATTED_MAX: usize = 24;

impl Formatted {
    /// Appends the text of `value`: the kept one if `value` is the same, it
    /// plus one if `value` is one more, else what `format` appends (and
    /// keeps that).
    #[inline]
    fn push(&mut self, out: &mut Vec<u8>, value: u64, format: impl FnOnce(&mut Vec<u8>)) {
        match self.value {
            Some(last) if last == value => {}
            Some(last)
                if last.wrapping_add(1) == value && increment(&mut self.text[..self.len]) =>
            {
                self.value = Some(value);
            }
            _ => return self.format(out, value, format),
        }
        // A copy of fixed size and a truncate, not a memcpy call (see num.rs).
        let start = out.len();
        out.extend_from_slice(&self.text);
        out.truncate(start + self.len);
    }

    #[cold]
    fn format(&mut self, out: &mut Vec<u8>, value: u64, format: impl FnOnce(&mut Vec<u8>)) {
        let start = out.len();
        format(out);
        let text = &out[start..];
        self.value = (text.len() <= FORMATTED_MAX).then_some(value);
        self.len = text.len().min(FORMATTED_MAX);
        self.text[..self.len].copy_from_slice(&text[..self.len]);
    }
}

/// Adds one to the decimal number in `digits` (a `.` in it is skipped, so
/// `1.999999` becomes `2.000000`). False, changing nothing that matters,
/// if it would need one more digit.
#[inline]
fn increment(digits: &mut [u8]) -> bool {
    for digit in digits.iter_mut().rev() {
        match *digit {
            b'.' => {}
            b'9' => *digit = b'0',
            _ => {
                *digit += 1;
                return true;
            }
        }
    }
    false
}

#[inline]
fn format_access(a: &Access, out: &mut Vec<u8>, numbers: &mut impl Numbers) {
    let wide = a.value.is_wide();
    out.extend_from_slice(match (a.dir, wide) {
        (Direction::Read, false) => b"R ",
        (Direction::Write, false) => b"W ",
        (Direction::Read, true) => b"VR ",
        (Direction::Write, true) => b"VW ",
    });
    push_dec(out, a.value.width().into());
    out.push(b' ');
    numbers.time(out, a.time);
    out.push(b' ');
    push_dec(out, a.map_id.into());
    push_0x(out, a.phys);
    push_value(out, &a.value);
    push_0x(out, a.pc);
    out.push(b' ');
    numbers.pid(out, a.pid);
    push_ext_with(out, &a.ext, numbers);
}

/// ` 0x<value>`: `%lx` up to 8 bytes, all 2×width digits above.
#[inline]
fn push_value(out: &mut Vec<u8>, value: &Value) {
    if value.is_wide() {
        out.extend_from_slice(b" 0x");
        for &b in value.as_le_bytes().iter().rev() {
            push_hex_byte(out, b);
        }
    } else {
        push_0x(out, value.low_u64());
    }
}

/// `REPEAT R|W width time id 0xphys 0xvalue 0xpc pid count=N len=K end=TIME
/// [seq=N] [proc=N] [until=0xV]`.
fn format_repeat(r: &Repeat, out: &mut Vec<u8>) -> Result<(), &'static str> {
    check_repeat(r)?;
    out.extend_from_slice(match r.dir {
        Direction::Read => b"REPEAT R ",
        Direction::Write => b"REPEAT W ",
    });
    push_dec(out, r.value.width().into());
    out.push(b' ');
    push_time(out, r.time);
    out.push(b' ');
    push_dec(out, r.map_id.into());
    push_0x(out, r.phys);
    push_value(out, &r.value);
    push_0x(out, r.pc);
    out.push(b' ');
    push_dec(out, r.pid.into());
    out.extend_from_slice(b" count=");
    push_dec(out, r.count);
    out.extend_from_slice(b" len=");
    push_dec(out, r.len.into());
    out.extend_from_slice(b" end=");
    push_time(out, r.end);
    push_ext(out, &r.ext);
    if let Some(until) = &r.until {
        out.extend_from_slice(b" until=");
        // push_value writes " 0x…"; the key already has its separator.
        let start = out.len();
        push_value(out, until);
        out.remove(start);
    }
    Ok(())
}

/// Where (the byte index) and why a VERSION string cannot be written as
/// text, if it cannot: both formats require the same, and the binary
/// reader checks it.
pub(crate) fn bad_version(version: &[u8]) -> Option<(usize, &'static str)> {
    const WHY: &str = "a VERSION string must be non-empty and contain no whitespace";
    if version.is_empty() {
        return Some((0, WHY));
    }
    version
        .iter()
        .position(|&b| is_space_or_control(b))
        .map(|at| (at, WHY))
}

/// Where and why a PCIDEV driver name cannot be written as text, if it cannot.
pub(crate) fn bad_driver(driver: &[u8]) -> Option<(usize, &'static str)> {
    driver
        .iter()
        .position(|&b| is_space_or_control(b))
        .map(|at| (at, "a PCIDEV driver name must contain no whitespace"))
}

/// What both formats require of a `REPEAT` beyond its fields' types.
pub(crate) fn check_repeat(r: &Repeat) -> Result<(), &'static str> {
    if r.len == 0 {
        return Err("a REPEAT must repeat at least one access (len=0)");
    }
    if r.until.is_some_and(|u| u.width() != r.value.width()) {
        return Err("a REPEAT's until= value must have the width of its value");
    }
    Ok(())
}

/// `%u.%06lu`: seconds, a dot, microseconds (nanoseconds are truncated).
#[inline]
fn push_time(out: &mut Vec<u8>, t: Timestamp) {
    push_dec(out, t.secs());
    out.push(b'.');
    push_dec6(out, t.subsec_micros());
}

/// ` 0x%lx`.
#[inline]
fn push_0x(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(b" 0x");
    push_hex(out, v);
}

/// ` seq=N proc=N`, each only when present.
#[inline]
fn push_ext(out: &mut Vec<u8>, ext: &Ext) {
    push_ext_with(out, ext, &mut Plain);
}

#[inline]
fn push_ext_with(out: &mut Vec<u8>, ext: &Ext, numbers: &mut impl Numbers) {
    if let Some(seq) = ext.seq {
        out.extend_from_slice(b" seq=");
        numbers.seq(out, seq);
    }
    if let Some(process) = ext.process {
        out.extend_from_slice(b" proc=");
        numbers.process(out, process);
    }
    if let Some(hook) = ext.hook {
        out.extend_from_slice(b" hook=");
        push_dec(out, hook.rule.into());
        match hook.device {
            Some(value) => {
                out.extend_from_slice(b" dev=0x");
                push_hex(out, value);
            }
            None => out.extend_from_slice(b" dev=none"),
        }
    }
}

/// The token list after the tab of an extended MARK line: `seq=N proc=N`.
fn push_mark_ext(out: &mut Vec<u8>, ext: &Ext) {
    let start = out.len();
    push_ext(out, ext);
    if out.len() > start {
        // push_ext starts each token with a space; the first needs none.
        out.remove(start);
    }
}

/// MARK text in the escaped form: control bytes and `\` as `\xHH` / `\\`.
fn push_mark_escaped(out: &mut Vec<u8>, text: &[u8], escape_first: bool) {
    for (i, &b) in text.iter().enumerate() {
        if b == b'\\' {
            out.extend_from_slice(b"\\\\");
        } else if is_control(b) || (i == 0 && escape_first) {
            out.extend_from_slice(b"\\x");
            push_hex_byte(out, b);
        } else {
            out.push(b);
        }
    }
}

/// A map path with `%`, space and control bytes as `%HH`.
fn push_percent_escaped(out: &mut Vec<u8>, path: &[u8]) {
    for &b in path {
        if b == b'%' || b == b' ' || is_control(b) {
            out.push(b'%');
            push_hex_byte(out, b);
        } else {
            out.push(b);
        }
    }
}

#[inline]
pub(crate) fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

#[inline]
fn is_space_or_control(b: u8) -> bool {
    b == b' ' || is_control(b)
}

/// `Lost N events.` (the text of the kernel's lost-events MARK line): `N`,
/// or `Some(None)` when N has only digits but does not fit in 64 bits;
/// `None` for any other text.
pub(crate) fn parse_lost_text(text: &[u8]) -> Option<Option<u64>> {
    let digits = text.strip_prefix(b"Lost ")?.strip_suffix(b" events.")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer, which keeps the numbers of the last access line, writes
    /// what `format_event` writes afresh, through equal numbers, numbers
    /// one more (with carries, into a new digit, across the time's dot)
    /// and jumps.
    #[test]
    fn recent_numbers_are_written_as_afresh() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let (mut nanos, mut seq, mut pid) = (999_998_000u64, 97u64, 9u32);
        let mut writer = TextWriter::new(Vec::new());
        let mut expected = Vec::new();
        for i in 0..20_000u64 {
            match next(8) {
                0 => nanos += next(3) * 1000,
                1 => nanos += next(5_000_000_000),
                2 => nanos = nanos / 1000 * 1000 + 999,
                _ => nanos += next(700),
            }
            seq = match next(10) {
                0 => next(1 << 40),
                1 => 999_999,
                2 => seq,
                _ => seq + 1,
            };
            if next(50) == 0 {
                pid = if next(2) == 0 { pid + 1 } else { 99_999 };
            }
            let access = Access {
                dir: if i % 3 == 0 {
                    Direction::Read
                } else {
                    Direction::Write
                },
                time: Timestamp { nanos },
                map_id: (i % 3) as u32,
                phys: 0xfebf_0000 + next(4096),
                value: Value::from_u64(4, next(1 << 32)).expect("4 bytes"),
                pc: 0x40_1000 + next(64),
                pid,
                ext: Ext {
                    seq: (next(20) != 0).then_some(seq),
                    process: (next(20) != 0).then_some(pid + 1),
                    hook: None,
                },
            };
            let event = Event::Access(access);
            writer.write_event(&event).expect("write");
            format_event(&event, &mut expected).expect("format");
            if i % 1000 == 0 {
                // Other lines between accesses change nothing.
                let mark = Event::Mark(Mark {
                    time: Timestamp { nanos: nanos + 1 },
                    text: "between".into(),
                    ext: Ext::default(),
                });
                writer.write_event(&mark).expect("write");
                format_event(&mark, &mut expected).expect("format");
            }
        }
        let written = writer.finish().expect("a Vec");
        assert_eq!(
            String::from_utf8(written).expect("ASCII"),
            String::from_utf8(expected).expect("ASCII")
        );
    }

    #[test]
    fn increment_carries_across_the_dot_and_says_when_it_needs_a_digit() {
        let mut text = *b"1.999999";
        assert!(increment(&mut text));
        assert_eq!(&text, b"2.000000");
        let mut text = *b"199";
        assert!(increment(&mut text));
        assert_eq!(&text, b"200");
        let mut text = *b"9.999999";
        assert!(!increment(&mut text));
    }
}
