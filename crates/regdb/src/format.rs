//! The decoded trace as text for people, or JSON lines for programs.
//!
//! Text, one line per access:
//!
//! ```text
//! 0.000140 3122 R 4 10de:1c82/bar0 0x000000 0x137000a1 PMC.ID => STEPPING=0xa1 DEVICE_ID=0 CHIPSET=GP107 FOUNDRY=TSMC
//! 0.000150 3122 W 4 10de:1c82/bar0 0x000140 0x00000001 PMC.INTR_EN_HOST <= HARDWARE
//! 0.000160 3122 R 4 10de:1c82/bar0 0x00f123 0xdeadbeef ?
//! ```
//!
//! time, thread, R or W (`?` for an UNKNOWN record), width in bytes, device
//! (PCI `vendor:device/barN`, else `mapN`, an address range or the SVD
//! device), offset from the BAR or mapping start (the physical address for
//! SVD and unbound mappings), value, register name or `?`, then `=>` for
//! reads or `<=` for writes and the fields: `NAME=value`, a set boolean as
//! its bare name (clear ones are left out), a bit set as `NAME={…}`, and
//! `unknown=0x…` for set bits that no field describes. Other records print as
//! `time MAP …`, `time UNMAP id`, `time MARK text`, `LOST n events`,
//! `PCIDEV bus:dev.fn vendor:device driver`, and `time VARIANT …` when the
//! decoder learns the chipset from the trace.
//!
//! With a symbol list ([`TextWriter::with_symbols`]), each access line ends
//! with `@ FUNCTION+0xOFFSET [MODULE]` (or `@ 0xPC` where the list does not
//! describe the pc; nothing where the pc is 0, not known), and the JSON
//! objects get `pc` and `function`.

use std::io::{self, Write};
use std::sync::Arc;

use mmiotrace_trace::symbols::Symbols;
use mmiotrace_trace::{Direction, Event, Map, Timestamp};

use crate::decode::{Binding, DecodeSink, DecodedAccess, FastMap};
use crate::model::{Database, DecodePlan, FieldSink, FieldValue};

/// The rendered end of recent lines (register name and fields), by
/// register and value: a trace repeats itself (polling loops, the same
/// initialisation writes), and rendering two dozen fields costs more than
/// parsing the line did. Bounded; emptied when full.
#[derive(Debug, Default)]
struct TailCache {
    /// (plan address, value, access width) to a range of `text`.
    index: FastMap<(usize, u64, u8), (u32, u32)>,
    text: Vec<u8>,
    /// The plans whose addresses are keys, held so that no other plan can
    /// take an address while it is in the index.
    plans: Vec<Arc<DecodePlan>>,
}

const TAIL_ENTRIES: usize = 1 << 15;
const TAIL_BYTES: usize = 8 << 20;

impl TailCache {
    /// Appends the tail for (`plan`, `value`) to `line`, rendering it with
    /// `render` (which appends to the vector it is given) if it is not cached.
    #[inline]
    fn append(
        &mut self,
        line: &mut Vec<u8>,
        plan: &Arc<DecodePlan>,
        value: u64,
        width: u8,
        render: impl FnOnce(&mut Vec<u8>),
    ) {
        let key = (Arc::as_ptr(plan) as usize, value, width);
        if let Some(&(start, len)) = self.index.get(&key) {
            line.extend_from_slice(&self.text[start as usize..(start + len) as usize]);
            return;
        }
        let from = line.len();
        render(line);
        let rendered = &line[from..];
        if self.index.len() >= TAIL_ENTRIES || self.text.len() + rendered.len() > TAIL_BYTES {
            self.index.clear();
            self.text.clear();
            self.plans.clear();
        }
        if !self.plans.last().is_some_and(|p| Arc::ptr_eq(p, plan)) {
            self.plans.push(plan.clone());
        }
        let start = self.text.len() as u32;
        self.text.extend_from_slice(rendered);
        self.index.insert(key, (start, rendered.len() as u32));
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes`: short ones byte by byte, which beats a call to memcpy
/// for the names and separators that make up most of a line.
#[inline]
fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() <= 24 {
        out.reserve(24);
        for &b in bytes {
            out.push(b);
        }
    } else {
        out.extend_from_slice(bytes);
    }
}

#[inline]
fn push_dec(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_hex_digits(out: &mut Vec<u8>, v: u64, digits: usize) {
    let mut buf = [b'0'; 16];
    let digits = digits.clamp(1, 16);
    for (i, slot) in buf[..digits].iter_mut().enumerate() {
        *slot = HEX[((v >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    out.extend_from_slice(&buf[..digits]);
}

/// `0x` and `v` in at least `min_digits` hex digits.
fn push_hex(out: &mut Vec<u8>, v: u64, min_digits: usize) {
    let needed = if v == 0 {
        1
    } else {
        (64 - v.leading_zeros()).div_ceil(4) as usize
    };
    out.extend_from_slice(b"0x");
    push_hex_digits(out, v, needed.max(min_digits));
}

fn push_time(out: &mut Vec<u8>, t: Timestamp) {
    push_dec(out, t.secs());
    out.push(b'.');
    let micros = t.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut v = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits);
}

fn push_value_hex(out: &mut Vec<u8>, value: &mmiotrace_trace::Value) {
    out.extend_from_slice(b"0x");
    for b in value.as_le_bytes().iter().rev() {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 0xf) as usize]);
    }
}

fn push_float(out: &mut Vec<u8>, v: f64) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{v}");
}

/// Lines are gathered into batches of about this many bytes: one write per
/// batch, instead of a copy of each line into a `BufWriter`.
const BATCH: usize = 64 * 1024;

/// Writes out `batch` once it holds [`BATCH`] bytes.
#[inline]
fn write_if_full(out: &mut impl Write, batch: &mut Vec<u8>) -> io::Result<()> {
    if batch.len() >= BATCH {
        out.write_all(batch)?;
        batch.clear();
    }
    Ok(())
}

/// Writes the text form. Output is batched: call [`flush`](Self::flush)
/// or [`finish`](Self::finish) at the end.
#[derive(Debug)]
pub struct TextWriter<W: Write> {
    out: W,
    line: Vec<u8>,
    tails: TailCache,
    symbols: Option<Arc<Symbols>>,
}

impl<W: Write> TextWriter<W> {
    pub fn new(out: W) -> Self {
        TextWriter {
            out,
            line: Vec::with_capacity(BATCH + 4096),
            tails: TailCache::default(),
            symbols: None,
        }
    }

    /// Names each access's pc with `symbols`.
    pub fn with_symbols(mut self, symbols: Arc<Symbols>) -> Self {
        self.symbols = Some(symbols);
        self
    }

    /// Writes out what is buffered and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }

    /// Writes out what is buffered, and flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.line)?;
        self.line.clear();
        self.out.flush()
    }

    fn finish_line(&mut self) -> io::Result<()> {
        self.line.push(b'\n');
        write_if_full(&mut self.out, &mut self.line)
    }
}

struct TextFields<'a> {
    out: &'a mut Vec<u8>,
    /// No space before the next item (just after `{`).
    tight: bool,
}

impl TextFields<'_> {
    #[inline]
    fn sep(&mut self) {
        if !self.tight {
            self.out.push(b' ');
        }
        self.tight = false;
    }

    #[inline]
    fn value(&mut self, value: FieldValue<'_>) {
        match value {
            FieldValue::Bool(b) => self.out.push(if b { b'1' } else { b'0' }),
            FieldValue::Enum(name) => push_bytes(self.out, name.as_bytes()),
            FieldValue::UnknownEnum(v) => {
                self.out.push(b'?');
                push_hex(self.out, v, 1);
            }
            FieldValue::Hex(v) => {
                if v < 10 {
                    push_dec(self.out, v);
                } else {
                    push_hex(self.out, v, 1);
                }
            }
            FieldValue::Uint(v) => push_dec(self.out, v),
            FieldValue::Int(v) => {
                if v < 0 {
                    self.out.push(b'-');
                }
                push_dec(self.out, v.unsigned_abs());
            }
            FieldValue::Float(v) => push_float(self.out, v),
        }
    }
}

impl FieldSink for TextFields<'_> {
    #[inline]
    fn field(&mut self, name: &str, value: FieldValue<'_>) {
        match value {
            FieldValue::Bool(false) => {}
            FieldValue::Bool(true) => {
                self.sep();
                push_bytes(self.out, name.as_bytes());
            }
            value => {
                self.sep();
                push_bytes(self.out, name.as_bytes());
                self.out.push(b'=');
                self.value(value);
            }
        }
    }

    fn whole(&mut self, value: FieldValue<'_>) {
        self.sep();
        self.value(value);
    }

    fn begin(&mut self, name: &str) {
        self.sep();
        push_bytes(self.out, name.as_bytes());
        self.out.extend_from_slice(b"={");
        self.tight = true;
    }

    fn end(&mut self) {
        self.out.push(b'}');
        self.tight = false;
    }

    fn unknown_bits(&mut self, bits: u64) {
        self.sep();
        self.out.extend_from_slice(b"unknown=");
        push_hex(self.out, bits, 1);
    }
}

impl<W: Write> DecodeSink for TextWriter<W> {
    fn access(&mut self, a: &DecodedAccess<'_>) -> io::Result<()> {
        let line = &mut self.line;
        push_time(line, a.time);
        line.push(b' ');
        push_dec(line, a.thread.into());
        // Everything after the thread follows from the register (its
        // resolution fixes device, offset and direction), the value and the
        // width: the part that the tail cache keeps.
        let render = |line: &mut Vec<u8>| {
            line.extend_from_slice(match a.dir {
                Some(Direction::Read) => b" R ",
                Some(Direction::Write) => b" W ",
                None => b" ? ",
            });
            if a.value.is_some() {
                push_dec(line, a.width.into());
            } else {
                line.push(b'?');
            }
            line.push(b' ');
            match a.binding {
                Some(b) => push_bytes(line, b.label.as_bytes()),
                None => {
                    line.extend_from_slice(b"map");
                    push_dec(line, a.map_id.into());
                }
            }
            line.push(b' ');
            push_hex(line, a.offset, 6);
            line.push(b' ');
            match a.value {
                Some(v) => push_value_hex(line, v),
                None => line.push(b'?'),
            }
            line.push(b' ');
            match a.register {
                Some(reg) => {
                    push_bytes(line, reg.name.as_bytes());
                    let mark = line.len();
                    line.extend_from_slice(if a.is_write() { b" <=" } else { b" =>" });
                    let before = line.len();
                    let mut fields = TextFields {
                        out: line,
                        tight: false,
                    };
                    if !a.decode_fields(&mut fields) || line.len() == before {
                        line.truncate(mark);
                    }
                }
                None => line.push(b'?'),
            }
        };
        match (a.register, a.value) {
            (Some(reg), Some(value)) if !value.is_wide() && !reg.plan.is_empty() => {
                self.tails
                    .append(line, &reg.plan, value.low_u64(), a.width, render);
            }
            _ => render(line),
        }
        if let Some(r) = a.repeat {
            line.extend_from_slice(b" (repeated ");
            push_dec(line, r.count);
            line.extend_from_slice(b" more times");
            if r.len > 1 {
                line.extend_from_slice(b", ");
                push_dec(line, r.len.into());
                line.extend_from_slice(b" accesses each");
            }
            line.extend_from_slice(b", until ");
            push_time(line, r.end);
            if let Some(until) = &r.until {
                line.extend_from_slice(b" read ");
                push_value_hex(line, until);
            }
            line.push(b')');
        }
        if let Some(symbols) = &self.symbols
            && a.pc != 0
        {
            line.extend_from_slice(b" @ ");
            match symbols.lookup(a.pc) {
                Some(at) => {
                    use std::io::Write as _;
                    let _ = write!(line, "{at}");
                }
                None => push_hex(line, a.pc, 1),
            }
        }
        self.finish_line()
    }

    fn map(&mut self, map: &Map, binding: Option<(&Binding, &Database)>) -> io::Result<()> {
        let line = &mut self.line;
        push_time(line, map.time);
        line.extend_from_slice(b" MAP ");
        push_dec(line, map.map_id.into());
        line.push(b' ');
        push_hex(line, map.phys, 1);
        line.push(b'+');
        push_hex(line, map.len, 1);
        if let Some(path) = &map.path {
            line.push(b' ');
            line.extend_from_slice(path.as_bytes());
        }
        match binding {
            Some((b, db)) => {
                line.extend_from_slice(b" -> ");
                line.extend_from_slice(b.label.as_bytes());
                line.push(b' ');
                line.extend_from_slice(db.name.as_bytes());
                line.push(b'#');
                line.extend_from_slice(db.spaces[b.space].name.as_bytes());
                if let Some(varset) = db.spaces[b.space].varset
                    && let Some(index) = b.chosen.get(varset)
                {
                    line.push(b'@');
                    let e = &db.enums[varset as usize];
                    line.extend_from_slice(e.values[index as usize].name.as_bytes());
                }
                if b.base != map.phys && !db.spaces[b.space].absolute {
                    line.extend_from_slice(b" base=");
                    push_hex(line, b.base, 1);
                }
            }
            None => line.extend_from_slice(b" -> no database"),
        }
        self.finish_line()
    }

    fn variant(
        &mut self,
        time: Timestamp,
        binding: &Binding,
        varset: &str,
        value: &str,
        register: &str,
    ) -> io::Result<()> {
        let line = &mut self.line;
        push_time(line, time);
        line.extend_from_slice(b" VARIANT ");
        line.extend_from_slice(binding.label.as_bytes());
        line.push(b' ');
        line.extend_from_slice(varset.as_bytes());
        line.push(b'=');
        line.extend_from_slice(value.as_bytes());
        line.extend_from_slice(b" (from ");
        line.extend_from_slice(register.as_bytes());
        line.push(b')');
        self.finish_line()
    }

    fn other(&mut self, event: &Event) -> io::Result<()> {
        let line = &mut self.line;
        match event {
            Event::Mark(m) => {
                push_time(line, m.time);
                line.extend_from_slice(b" MARK ");
                line.extend_from_slice(m.text.as_bytes());
            }
            Event::Unmap(u) => {
                push_time(line, u.time);
                line.extend_from_slice(b" UNMAP ");
                push_dec(line, u.map_id.into());
            }
            Event::Lost(l) => {
                line.extend_from_slice(b"LOST ");
                push_dec(line, l.count);
                line.extend_from_slice(b" events");
            }
            Event::PciDev(p) => {
                // Writing to a Vec cannot fail.
                let _ = write!(
                    line,
                    "PCIDEV {:02x}:{:02x}.{} {:04x}:{:04x} {}",
                    p.bus,
                    p.devfn >> 3,
                    p.devfn & 7,
                    p.vendor,
                    p.device,
                    p.driver
                );
            }
            Event::Version(_)
            | Event::Access(_)
            | Event::Unknown(_)
            | Event::Map(_)
            | Event::Repeat(_) => return Ok(()),
        }
        self.finish_line()
    }
}

/// Writes one JSON object per line (batched like [`TextWriter`]): accesses as `{"kind":"R", …,
/// "register":"PMC.ID","fields":{…}}`, MAP records with what they were
/// bound to, VARIANT notices, and every other record as the trace's own
/// JSON lines writer writes it.
#[derive(Debug)]
pub struct JsonWriter<W: Write> {
    out: W,
    line: Vec<u8>,
    tails: TailCache,
    symbols: Option<Arc<Symbols>>,
}

impl<W: Write> JsonWriter<W> {
    pub fn new(out: W) -> Self {
        JsonWriter {
            out,
            line: Vec::with_capacity(BATCH + 4096),
            tails: TailCache::default(),
            symbols: None,
        }
    }

    /// Adds each access's `pc` and `function` from `symbols`.
    pub fn with_symbols(mut self, symbols: Arc<Symbols>) -> Self {
        self.symbols = Some(symbols);
        self
    }

    /// Writes out what is buffered and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }

    /// Writes out what is buffered, and flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.line)?;
        self.line.clear();
        self.out.flush()
    }
}

#[inline]
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        push_bytes(out, s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b',');
    push_json_str(out, key);
    out.push(b':');
}

fn push_hex_str(out: &mut Vec<u8>, v: u64) {
    out.push(b'"');
    push_hex(out, v, 1);
    out.push(b'"');
}

struct JsonFields<'a> {
    out: &'a mut Vec<u8>,
    /// `"fields":{` written.
    opened: bool,
    /// Objects open inside `fields`.
    depth: u32,
    /// Bit n: the object at depth n has a member already.
    nonempty: u64,
}

impl JsonFields<'_> {
    #[inline]
    fn key(&mut self, name: &str) {
        if !self.opened {
            self.out.extend_from_slice(b",\"fields\":{");
            self.opened = true;
        }
        let bit = 1u64 << self.depth.min(63);
        if self.nonempty & bit != 0 {
            self.out.push(b',');
        }
        self.nonempty |= bit;
        push_json_str(self.out, name);
        self.out.push(b':');
    }

    fn value(&mut self, value: FieldValue<'_>) {
        match value {
            FieldValue::Bool(b) => self
                .out
                .extend_from_slice(if b { b"true" } else { b"false" }),
            FieldValue::Enum(name) => push_json_str(self.out, name),
            FieldValue::UnknownEnum(v) | FieldValue::Hex(v) | FieldValue::Uint(v) => {
                push_dec(self.out, v)
            }
            FieldValue::Int(v) => {
                if v < 0 {
                    self.out.push(b'-');
                }
                push_dec(self.out, v.unsigned_abs());
            }
            FieldValue::Float(v) if v.is_finite() => push_float(self.out, v),
            FieldValue::Float(_) => self.out.extend_from_slice(b"null"),
        }
    }

    fn close(&mut self) {
        if self.opened {
            self.out.push(b'}');
        }
    }
}

impl FieldSink for JsonFields<'_> {
    fn field(&mut self, name: &str, value: FieldValue<'_>) {
        self.key(name);
        self.value(value);
    }

    fn whole(&mut self, value: FieldValue<'_>) {
        self.out.extend_from_slice(b",\"decoded\":");
        self.value(value);
    }

    fn begin(&mut self, name: &str) {
        self.key(name);
        self.out.push(b'{');
        self.depth += 1;
        self.nonempty &= !(1u64 << self.depth.min(63));
    }

    fn end(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.out.push(b'}');
    }

    fn unknown_bits(&mut self, bits: u64) {
        self.key("unknown_bits");
        push_dec(self.out, bits);
    }
}

impl<W: Write> DecodeSink for JsonWriter<W> {
    fn access(&mut self, a: &DecodedAccess<'_>) -> io::Result<()> {
        let line = &mut self.line;
        line.extend_from_slice(match (a.dir, a.repeat) {
            (_, Some(_)) => b"{\"kind\":\"REPEAT\"",
            (Some(Direction::Read), None) => b"{\"kind\":\"R\"",
            (Some(Direction::Write), None) => b"{\"kind\":\"W\"",
            (None, None) => b"{\"kind\":\"UNKNOWN\"",
        });
        if let Some(r) = a.repeat {
            push_key(line, "dir");
            line.extend_from_slice(if a.is_write() { b"\"W\"" } else { b"\"R\"" });
            push_key(line, "count");
            push_dec(line, r.count);
            push_key(line, "len");
            push_dec(line, r.len.into());
            push_key(line, "end_ns");
            push_dec(line, r.end.nanos);
            if let Some(until) = &r.until {
                push_key(line, "until");
                line.push(b'"');
                push_value_hex(line, until);
                line.push(b'"');
            }
        }
        push_key(line, "time_ns");
        push_dec(line, a.time.nanos);
        push_key(line, "pid");
        push_dec(line, a.thread.into());
        push_key(line, "map_id");
        push_dec(line, a.map_id.into());
        push_key(line, "phys");
        push_hex_str(line, a.phys);
        if let Some(symbols) = &self.symbols {
            push_key(line, "pc");
            push_hex_str(line, a.pc);
            push_key(line, "function");
            match symbols.lookup(a.pc).filter(|_| a.pc != 0) {
                Some(at) => push_json_str(line, &at.to_string()),
                None => line.extend_from_slice(b"null"),
            }
        }
        // From here on, everything follows from the register, the value and
        // the width: the part that the tail cache keeps.
        let render = |line: &mut Vec<u8>| {
            if a.value.is_some() {
                push_key(line, "width");
                push_dec(line, a.width.into());
            }
            push_key(line, "device");
            match a.binding {
                Some(b) => push_json_str(line, &b.label),
                None => line.extend_from_slice(b"null"),
            }
            push_key(line, "offset");
            push_hex_str(line, a.offset);
            if let Some(v) = a.value {
                // As the trace's JSON lines have it: no leading zeros, except
                // that a wide value has all its digits.
                push_key(line, "value");
                line.push(b'"');
                if v.is_wide() {
                    push_value_hex(line, v);
                } else {
                    push_hex(line, v.low_u64(), 1);
                }
                line.push(b'"');
            }
            push_key(line, "register");
            match a.register {
                Some(reg) => push_json_str(line, &reg.name),
                None => line.extend_from_slice(b"null"),
            }
            let mut fields = JsonFields {
                out: line,
                opened: false,
                depth: 0,
                nonempty: 0,
            };
            a.decode_fields(&mut fields);
            fields.close();
        };
        match (a.register, a.value) {
            (Some(reg), Some(value)) if !value.is_wide() && !reg.plan.is_empty() => {
                self.tails
                    .append(line, &reg.plan, value.low_u64(), a.width, render);
            }
            _ => render(line),
        }
        line.extend_from_slice(b"}\n");
        write_if_full(&mut self.out, line)
    }

    fn map(&mut self, map: &Map, binding: Option<(&Binding, &Database)>) -> io::Result<()> {
        let line = &mut self.line;
        line.extend_from_slice(b"{\"kind\":\"MAP\"");
        push_key(line, "time_ns");
        push_dec(line, map.time.nanos);
        push_key(line, "map_id");
        push_dec(line, map.map_id.into());
        push_key(line, "phys");
        push_hex_str(line, map.phys);
        push_key(line, "len");
        push_hex_str(line, map.len);
        if let Some(path) = &map.path {
            push_key(line, "path");
            push_json_str(line, path);
        }
        push_key(line, "device");
        match binding {
            Some((b, db)) => {
                push_json_str(line, &b.label);
                push_key(line, "database");
                push_json_str(line, &db.path);
                push_key(line, "space");
                push_json_str(line, &db.spaces[b.space].name);
                push_key(line, "base");
                push_hex_str(line, b.base);
            }
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(b"}\n");
        write_if_full(&mut self.out, line)
    }

    fn variant(
        &mut self,
        time: Timestamp,
        binding: &Binding,
        varset: &str,
        value: &str,
        register: &str,
    ) -> io::Result<()> {
        let line = &mut self.line;
        line.extend_from_slice(b"{\"kind\":\"VARIANT\"");
        push_key(line, "time_ns");
        push_dec(line, time.nanos);
        push_key(line, "device");
        push_json_str(line, &binding.label);
        push_key(line, "varset");
        push_json_str(line, varset);
        push_key(line, "value");
        push_json_str(line, value);
        push_key(line, "register");
        push_json_str(line, register);
        line.extend_from_slice(b"}\n");
        write_if_full(&mut self.out, line)
    }

    fn other(&mut self, event: &Event) -> io::Result<()> {
        mmiotrace_trace::jsonl::format_json(event, &mut self.line);
        write_if_full(&mut self.out, &mut self.line)
    }
}
