//! JSON lines: one object per event, for scripts (docs/FORMAT.md, "JSON lines").
//!
//! Addresses and values are hex strings (`"0xfebf0010"`), since JSON numbers
//! above 2^53 lose precision in most JSON libraries; times are integer
//! nanoseconds. Write-only: convert JSON back by way of a script, not this crate.

use std::io::{self, Write};

use crate::EventWrite;
use crate::event::*;
use crate::num::{push_dec, push_hex, push_hex_byte};

/// Writes events as JSON lines, one `write_all` per event: wrap a `File` in
/// a `BufWriter`. Call [`finish`](Self::finish) at the end.
#[derive(Debug)]
pub struct JsonLinesWriter<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write> JsonLinesWriter<W> {
    pub fn new(out: W) -> Self {
        JsonLinesWriter {
            out,
            line: Vec::with_capacity(256),
        }
    }

    pub fn write_event(&mut self, event: &Event) -> io::Result<()> {
        self.line.clear();
        format_json(event, &mut self.line);
        self.out.write_all(&self.line)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    /// The underlying writer, not flushed.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> EventWrite for JsonLinesWriter<W> {
    fn write_event(&mut self, event: &Event) -> io::Result<()> {
        JsonLinesWriter::write_event(self, event)
    }
    fn flush(&mut self) -> io::Result<()> {
        JsonLinesWriter::flush(self)
    }
}

/// A JSON object under construction: `{"kind":"R"` then `,"key":value` pairs.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>, kind: &str) -> Self {
        out.extend_from_slice(b"{\"kind\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'"');
        Obj { out }
    }
    fn key(&mut self, key: &str) {
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
    fn num(&mut self, key: &str, v: u64) {
        self.key(key);
        push_dec(self.out, v);
    }
    fn hex(&mut self, key: &str, v: u64) {
        self.key(key);
        self.out.extend_from_slice(b"\"0x");
        push_hex(self.out, v);
        self.out.push(b'"');
    }
    fn str(&mut self, key: &str, s: &str) {
        self.key(key);
        // serde_json's escaping is correct for every string; writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self.out, s);
    }
    /// `"0x…"`: no leading zeros up to 8 bytes, all 2×width digits above.
    fn value(&mut self, key: &str, value: &Value) {
        self.key(key);
        self.out.extend_from_slice(b"\"0x");
        if value.is_wide() {
            for &b in value.as_le_bytes().iter().rev() {
                push_hex_byte(self.out, b);
            }
        } else {
            push_hex(self.out, value.low_u64());
        }
        self.out.push(b'"');
    }
    fn time(&mut self, t: Timestamp) {
        self.num("time_ns", t.nanos);
    }
    fn ext(&mut self, ext: &Ext) {
        if let Some(seq) = ext.seq {
            self.num("seq", seq);
        }
        if let Some(process) = ext.process {
            self.num("process", process.into());
        }
        if let Some(hook) = ext.hook {
            self.num("hook", hook.rule.into());
            match hook.device {
                Some(value) => self.hex("device", value),
                None => {
                    self.key("device");
                    self.out.extend_from_slice(b"null");
                }
            }
        }
    }
    fn end(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

/// Appends the JSON line of `event` (newline included) to `out`.
pub fn format_json(event: &Event, out: &mut Vec<u8>) {
    let mut o = Obj::new(out, event.kind_name());
    match event {
        Event::Version(v) => o.str("version", &v.version),
        Event::PciDev(p) => {
            o.num("bus", p.bus.into());
            o.num("devfn", p.devfn.into());
            o.hex("vendor", p.vendor.into());
            o.hex("device", p.device.into());
            o.num("irq", p.irq.into());
            for (key, values) in [("bar_start", &p.bar_start), ("bar_size", &p.bar_size)] {
                o.key(key);
                o.out.push(b'[');
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        o.out.push(b',');
                    }
                    o.out.extend_from_slice(b"\"0x");
                    push_hex(o.out, *v);
                    o.out.push(b'"');
                }
                o.out.push(b']');
            }
            o.str("driver", &p.driver);
        }
        Event::Map(m) => {
            o.time(m.time);
            o.num("map_id", m.map_id.into());
            o.hex("phys", m.phys);
            o.hex("virt", m.virt);
            o.hex("len", m.len);
            o.hex("pc", m.pc);
            o.num("pid", m.pid.into());
            o.ext(&m.ext);
            if let Some(path) = &m.path {
                o.str("path", path);
            }
        }
        Event::Unmap(u) => {
            o.time(u.time);
            o.num("map_id", u.map_id.into());
            o.hex("pc", u.pc);
            o.num("pid", u.pid.into());
            o.ext(&u.ext);
        }
        Event::Access(a) => {
            o.time(a.time);
            o.num("map_id", a.map_id.into());
            o.hex("phys", a.phys);
            o.num("width", a.width().into());
            o.value("value", &a.value);
            o.hex("pc", a.pc);
            o.num("pid", a.pid.into());
            o.ext(&a.ext);
        }
        Event::Unknown(u) => {
            o.time(u.time);
            o.num("map_id", u.map_id.into());
            o.hex("phys", u.phys);
            o.key("opcode");
            o.out.push(b'"');
            for b in u.opcode {
                push_hex_byte(o.out, b);
            }
            o.out.push(b'"');
            o.hex("pc", u.pc);
            o.num("pid", u.pid.into());
            o.ext(&u.ext);
        }
        Event::Mark(m) => {
            o.time(m.time);
            o.str("text", &m.text);
            o.ext(&m.ext);
        }
        Event::Lost(l) => {
            o.num("count", l.count);
            o.ext(&l.ext);
        }
        Event::Repeat(r) => {
            o.time(r.time);
            o.num("end_ns", r.end.nanos);
            o.str(
                "dir",
                match r.dir {
                    Direction::Read => "R",
                    Direction::Write => "W",
                },
            );
            o.num("map_id", r.map_id.into());
            o.hex("phys", r.phys);
            o.num("width", r.value.width().into());
            o.value("value", &r.value);
            o.hex("pc", r.pc);
            o.num("pid", r.pid.into());
            o.num("count", r.count);
            o.num("len", r.len.into());
            if let Some(until) = &r.until {
                o.value("until", until);
            }
            o.ext(&r.ext);
        }
    }
    o.end();
}
