//! One row per event, the same columns for CSV and Parquet.

use std::borrow::Cow;
use std::io::Write;

use anyhow::Context as _;
use mmiotrace_trace::{Direction, Event, Value};

use super::Exporter;

/// The columns, in order.
pub const COLUMNS: [&str; 18] = [
    "kind",
    "time_ns",
    "end_ns",
    "seq",
    "process",
    "pid",
    "map_id",
    "phys",
    "reg",
    "width",
    "value",
    "value_hex",
    "pc",
    "count",
    "len",
    "size",
    "until",
    "text",
];

/// One event as a row; `None` is an empty cell (a null).
#[derive(Debug, Default)]
pub struct Row<'a> {
    pub kind: &'static str,
    pub time_ns: Option<u64>,
    pub end_ns: Option<u64>,
    pub seq: Option<u64>,
    pub process: Option<u32>,
    pub pid: Option<u32>,
    pub map_id: Option<u32>,
    pub phys: Option<u64>,
    /// The register's name, from the register databases.
    pub reg: Option<&'a str>,
    pub width: Option<u8>,
    pub value: Option<Value>,
    pub pc: Option<u64>,
    pub count: Option<u64>,
    pub len: Option<u32>,
    pub size: Option<u64>,
    pub until: Option<Value>,
    pub text: Option<Cow<'a, str>>,
}

/// `0x…`: no leading zeros up to 8 bytes, every digit above.
pub fn hex(value: &Value) -> String {
    if value.is_wide() {
        let digits: String = value
            .as_le_bytes()
            .iter()
            .rev()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("0x{digits}")
    } else {
        format!("{:#x}", value.low_u64())
    }
}

/// The integer value, for values of up to 8 bytes.
pub fn narrow(value: &Value) -> Option<u64> {
    (!value.is_wide()).then(|| value.low_u64())
}

impl<'a> Row<'a> {
    /// `reg`: the name of the event's register, if a database has one.
    pub fn of(event: &'a Event, reg: Option<&'a str>) -> Row<'a> {
        let mut row = Row {
            kind: event.kind_name(),
            reg,
            time_ns: event.time().map(|t| t.nanos),
            seq: event.ext().and_then(|x| x.seq),
            process: event.ext().and_then(|x| x.process),
            pid: event.pid(),
            ..Row::default()
        };
        match event {
            Event::Version(v) => row.text = Some(Cow::Borrowed(&v.version)),
            Event::PciDev(p) => {
                row.text = Some(Cow::Owned(format!(
                    "{:02x}:{:02x}.{} {:04x}:{:04x} {}",
                    p.bus,
                    p.devfn >> 3,
                    p.devfn & 7,
                    p.vendor,
                    p.device,
                    p.driver
                )));
            }
            Event::Map(m) => {
                row.map_id = Some(m.map_id);
                row.phys = Some(m.phys);
                row.pc = Some(m.pc);
                row.size = Some(m.len);
                row.text = m.path.as_deref().map(Cow::Borrowed);
            }
            Event::Unmap(u) => {
                row.map_id = Some(u.map_id);
                row.pc = Some(u.pc);
            }
            Event::Access(a) => {
                row.map_id = Some(a.map_id);
                row.phys = Some(a.phys);
                row.width = Some(a.width());
                row.value = Some(a.value);
                row.pc = Some(a.pc);
            }
            Event::Unknown(u) => {
                row.map_id = Some(u.map_id);
                row.phys = Some(u.phys);
                row.pc = Some(u.pc);
                let [b0, b1, b2] = u.opcode;
                row.text = Some(Cow::Owned(format!("{b0:02x},{b1:02x},{b2:02x}")));
            }
            Event::Mark(m) => row.text = Some(Cow::Borrowed(&m.text)),
            Event::Lost(l) => row.count = Some(l.count),
            Event::Repeat(r) => {
                row.kind = match r.dir {
                    Direction::Read => "REPEAT R",
                    Direction::Write => "REPEAT W",
                };
                row.end_ns = Some(r.end.nanos);
                row.map_id = Some(r.map_id);
                row.phys = Some(r.phys);
                row.width = Some(r.value.width());
                row.value = Some(r.value);
                row.pc = Some(r.pc);
                row.count = Some(r.count);
                row.len = Some(r.len);
                row.until = r.until;
            }
        }
        row
    }
}

/// Writes rows as CSV (RFC 4180: fields with a comma, quote or line break
/// are quoted, quotes doubled).
pub struct CsvExporter {
    out: Box<dyn Write>,
    name: String,
    line: String,
}

impl CsvExporter {
    pub fn new(mut out: Box<dyn Write>, name: String) -> anyhow::Result<CsvExporter> {
        writeln!(out, "{}", COLUMNS.join(","))
            .with_context(|| format!("cannot write to {name}"))?;
        Ok(CsvExporter {
            out,
            name,
            line: String::new(),
        })
    }
}

fn cell(line: &mut String, value: Option<impl std::fmt::Display>) {
    use std::fmt::Write as _;
    if let Some(v) = value {
        // Writing to a String cannot fail.
        let _ = write!(line, "{v}");
    }
    line.push(',');
}

fn hex_cell(line: &mut String, value: Option<u64>) {
    cell(line, value.map(|v| format!("{v:#x}")));
}

impl Exporter for CsvExporter {
    fn event(&mut self, event: &Event, reg: Option<&str>) -> anyhow::Result<()> {
        let row = Row::of(event, reg);
        let line = &mut self.line;
        line.clear();
        cell(line, Some(row.kind));
        cell(line, row.time_ns);
        cell(line, row.end_ns);
        cell(line, row.seq);
        cell(line, row.process);
        cell(line, row.pid);
        cell(line, row.map_id);
        hex_cell(line, row.phys);
        // Register names are identifiers, indices and `+0x…`: nothing to quote.
        cell(line, row.reg);
        cell(line, row.width);
        cell(line, row.value.as_ref().and_then(narrow));
        cell(line, row.value.as_ref().map(hex));
        hex_cell(line, row.pc);
        cell(line, row.count);
        cell(line, row.len);
        hex_cell(line, row.size);
        cell(line, row.until.as_ref().map(hex));
        if let Some(text) = &row.text {
            if text.contains([',', '"', '\n', '\r']) {
                line.push('"');
                line.push_str(&text.replace('"', "\"\""));
                line.push('"');
            } else {
                line.push_str(text);
            }
        }
        line.push('\n');
        self.out
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot write to {}", self.name))
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write to {}", self.name))
    }
}
