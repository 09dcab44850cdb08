//! The Linux kernel's MMIO access trace events, as ftrace prints them
//! (`CONFIG_TRACE_MMIO_ACCESS`, `events/rwmmio/` in tracefs):
//!
//! ```text
//!  kworker/0:1-12      [000] d..1.  1234.567890: rwmmio_write: gen8_write32+0x2c/0x90 -> intel_uncore_write+0x10/0x20 width=32 val=0x1 addr=0xffffc90001234040
//!  kworker/0:1-12      [000] d..1.  1234.567893: rwmmio_read: gen8_read32+0x1c/0x60 -> i915_reg_read+0x8/0x10 width=32 addr=0xffffc90001234044
//!  kworker/0:1-12      [000] d..1.  1234.567894: rwmmio_post_read: gen8_read32+0x1c/0x60 -> i915_reg_read+0x8/0x10 width=32 val=0x8000 addr=0xffffc90001234044
//! ```
//!
//! Older kernels print no `-> caller` part; both are read. Each line
//! becomes an [`Access`] (or an [`Unknown`]) with map id 0, the address as
//! `phys` (it is the kernel's ioremapped virtual address: decoders match it
//! by address range), `pc` 0 (the caller is a symbol, not a number), the
//! task's pid as thread, and the width converted from bits to bytes.
//!
//! A read is two events: `rwmmio_read` before it (no value) and
//! `rwmmio_post_read` after (with the value). The reader pairs them per
//! CPU: a post-read yields the read, timed at its pre-read; a pre-read
//! that no post-read follows (only `rwmmio_read` was enabled) yields an
//! [`Unknown`]. A write is likewise `rwmmio_write` and `rwmmio_post_write`,
//! both with the value; the post-write of a write already seen is dropped.
//! Lines of other trace events, and `#` comments, are skipped.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Read};

use crate::error::{Error, Location, Position};
use crate::event::*;
use crate::{Item, ReadOptions};

/// True when `prefix`, the start of an input, looks like ftrace output
/// with rwmmio events rather than an mmiotrace log.
pub fn looks_like_rwmmio(prefix: &[u8]) -> bool {
    let text = String::from_utf8_lossy(prefix);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first_record = lines.clone().find(|l| !l.starts_with('#'));
    let mmiotrace_keyword = first_record.is_some_and(|l| {
        let word = l.split_whitespace().next().unwrap_or("");
        matches!(
            word,
            "VERSION"
                | "PCIDEV"
                | "MAP"
                | "UNMAP"
                | "R"
                | "W"
                | "VR"
                | "VW"
                | "UNKNOWN"
                | "MARK"
                | "REPEAT"
        )
    });
    !mmiotrace_keyword && lines.any(|l| find_event(l).is_some())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    PostRead,
    Write,
    PostWrite,
}

/// The event name's position and kind in a line, and where its arguments start.
fn find_event(line: &str) -> Option<(usize, Kind, usize)> {
    let mut from = 0;
    while let Some(i) = line[from..].find("rwmmio_") {
        let at = from + i;
        let rest = &line[at + "rwmmio_".len()..];
        for (name, kind) in [
            ("read:", Kind::Read),
            ("post_read:", Kind::PostRead),
            ("write:", Kind::Write),
            ("post_write:", Kind::PostWrite),
        ] {
            if rest.starts_with(name) {
                return Some((at, kind, at + "rwmmio_".len() + name.len()));
            }
        }
        from = at + 1;
    }
    None
}

/// A pre-read waiting for its post-read.
#[derive(Debug, Clone)]
struct PendingRead {
    time: Timestamp,
    pid: u32,
    addr: u64,
    width: u8,
}

#[derive(Debug, Default)]
struct CpuState {
    pending: Option<PendingRead>,
    /// The last write seen on this CPU, to drop its post-write.
    last_write: Option<(u64, u64, u8)>,
}

/// Most CPUs tracked; ftrace numbers them, so more means a corrupt input.
const MAX_CPUS: usize = 1 << 16;

/// Reads rwmmio ftrace text one event at a time, in constant memory.
#[derive(Debug)]
pub struct RwmmioReader<R> {
    input: std::io::BufReader<R>,
    options: ReadOptions,
    line: Vec<u8>,
    line_no: u64,
    cpus: HashMap<u32, CpuState>,
    ready: VecDeque<Event>,
    done: bool,
}

struct Parsed {
    kind: Kind,
    cpu: u32,
    pid: u32,
    time: Timestamp,
    width: u8,
    value: Option<u64>,
    addr: u64,
}

impl<R: Read> RwmmioReader<R> {
    pub fn new(inner: R, options: ReadOptions) -> Self {
        RwmmioReader {
            input: std::io::BufReader::with_capacity(64 * 1024, inner),
            options,
            line: Vec::with_capacity(256),
            line_no: 0,
            cpus: HashMap::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    fn syntax(&self, column: usize, message: impl Into<String>) -> Error {
        Error::Syntax {
            position: Position {
                name: self.options.name.clone(),
                location: Location::Line {
                    line: self.line_no,
                    column: column as u64 + 1,
                },
            },
            message: message.into(),
        }
    }

    /// The next event, or `None` at the end. After an error, reading goes
    /// on with the next line.
    pub fn read_item(&mut self) -> Result<Option<Item>, Error> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(Item::Event(event)));
            }
            if self.done {
                return Ok(None);
            }
            self.line.clear();
            let limit = self.options.max_line_len as u64 + 1;
            let read = (&mut self.input)
                .take(limit)
                .read_until(b'\n', &mut self.line)
                .map_err(|source| Error::Io {
                    name: self.options.name.clone(),
                    source,
                })?;
            if read == 0 {
                self.done = true;
                self.flush_all();
                continue;
            }
            self.line_no += 1;
            if self.line.len() as u64 >= limit && self.line.last() != Some(&b'\n') {
                // Skip the rest of the over-long line.
                let mut rest = Vec::new();
                loop {
                    rest.clear();
                    let n = (&mut self.input)
                        .take(64 * 1024)
                        .read_until(b'\n', &mut rest)
                        .map_err(|source| Error::Io {
                            name: self.options.name.clone(),
                            source,
                        })?;
                    if n == 0 || rest.last() == Some(&b'\n') {
                        break;
                    }
                }
                return Err(self.syntax(
                    0,
                    format!("line is longer than {} bytes", self.options.max_line_len),
                ));
            }
            let line = std::mem::take(&mut self.line);
            let result = self.line_events(&line);
            self.line = line;
            result?;
        }
    }

    fn line_events(&mut self, raw: &[u8]) -> Result<(), Error> {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches(['\n', '\r']);
        if line.trim_start().starts_with('#') {
            return Ok(());
        }
        let Some(parsed) = self.parse(line)? else {
            return Ok(());
        };
        if self.cpus.len() >= MAX_CPUS && !self.cpus.contains_key(&parsed.cpu) {
            return Err(self.syntax(0, format!("more than {MAX_CPUS} CPUs")));
        }
        let state = self.cpus.entry(parsed.cpu).or_default();
        let mut out: [Option<Event>; 2] = [None, None];
        match parsed.kind {
            Kind::Read => {
                out[0] = state.pending.take().map(unknown);
                state.pending = Some(PendingRead {
                    time: parsed.time,
                    pid: parsed.pid,
                    addr: parsed.addr,
                    width: parsed.width,
                });
            }
            Kind::PostRead => {
                let mut time = parsed.time;
                match state.pending.take() {
                    Some(p) if p.addr == parsed.addr && p.width == parsed.width => time = p.time,
                    Some(p) => out[0] = Some(unknown(p)),
                    None => {}
                }
                out[1] = Some(access(Direction::Read, time, &parsed));
            }
            Kind::Write | Kind::PostWrite => {
                out[0] = state.pending.take().map(unknown);
                let key = (parsed.addr, parsed.value.unwrap_or(0), parsed.width);
                let seen = parsed.kind == Kind::PostWrite && state.last_write == Some(key);
                state.last_write = if parsed.kind == Kind::Write {
                    Some(key)
                } else {
                    None
                };
                if !seen {
                    out[1] = Some(access(Direction::Write, parsed.time, &parsed));
                }
            }
        }
        if parsed.kind != Kind::Write && parsed.kind != Kind::PostWrite {
            state.last_write = None;
        }
        self.ready.extend(out.into_iter().flatten());
        Ok(())
    }

    fn flush_all(&mut self) {
        let mut pending: Vec<PendingRead> = self
            .cpus
            .values_mut()
            .filter_map(|s| s.pending.take())
            .collect();
        pending.sort_by_key(|p| p.time);
        self.ready.extend(pending.into_iter().map(unknown));
    }

    fn parse(&self, line: &str) -> Result<Option<Parsed>, Error> {
        let Some((event_at, kind, args_at)) = find_event(line) else {
            return Ok(None);
        };
        let header = &line[..event_at];
        let mut tokens: Vec<&str> = header.split_whitespace().collect();
        let time_token = tokens
            .pop()
            .ok_or_else(|| self.syntax(event_at, "no timestamp before the event name"))?;
        let time = parse_time(time_token.trim_end_matches(':')).ok_or_else(|| {
            self.syntax(
                column_of(line, time_token),
                format!("{time_token:?} is not a timestamp"),
            )
        })?;
        let cpu_index = tokens
            .iter()
            .position(|t| t.starts_with('[') && t.ends_with(']'))
            .ok_or_else(|| self.syntax(0, "no [CPU] field before the timestamp"))?;
        let cpu_token = tokens[cpu_index];
        let cpu = cpu_token[1..cpu_token.len() - 1]
            .parse::<u32>()
            .map_err(|_| {
                self.syntax(
                    column_of(line, cpu_token),
                    format!("{cpu_token:?} is not a CPU number"),
                )
            })?;
        let pid = tokens[..cpu_index]
            .iter()
            .find_map(|t| {
                t.rsplit_once('-')
                    .and_then(|(_, pid)| pid.parse::<u32>().ok())
            })
            .unwrap_or(0);
        let args = &line[args_at..];
        let mut width = None;
        let mut value = None;
        let mut addr = None;
        for token in args.split_whitespace().rev() {
            let Some((key, v)) = token.split_once('=') else {
                break;
            };
            let bad = |what: &str| {
                self.syntax(
                    column_of(line, token),
                    format!("{token:?}: expected {what}"),
                )
            };
            match key {
                "width" => width = Some(v.parse::<u32>().map_err(|_| bad("a width in bits"))?),
                "val" => value = Some(parse_hex(v).ok_or_else(|| bad("a hex value"))?),
                "addr" => addr = Some(parse_hex(v).ok_or_else(|| bad("a hex address"))?),
                _ => {}
            }
        }
        let missing = |what: &str| self.syntax(args_at, format!("the event has no {what}="));
        let width = width.ok_or_else(|| missing("width"))?;
        let width = match width {
            8 | 16 | 32 | 64 => (width / 8) as u8,
            other => {
                return Err(self.syntax(
                    args_at,
                    format!("width={other} is not 8, 16, 32 or 64 bits"),
                ));
            }
        };
        let addr = addr.ok_or_else(|| missing("addr"))?;
        if matches!(kind, Kind::PostRead | Kind::Write | Kind::PostWrite) && value.is_none() {
            return Err(missing("val"));
        }
        Ok(Some(Parsed {
            kind,
            cpu,
            pid,
            time,
            width,
            value,
            addr,
        }))
    }
}

impl<R: Read> Iterator for RwmmioReader<R> {
    type Item = Result<Item, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.read_item().transpose()
    }
}

/// Byte column of `token` (a slice of `line`) in `line`.
fn column_of(line: &str, token: &str) -> usize {
    (token.as_ptr() as usize).saturating_sub(line.as_ptr() as usize)
}

fn parse_hex(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16).ok()
}

/// `1234.567890` (or more fraction digits) as a timestamp.
fn parse_time(text: &str) -> Option<Timestamp> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs = secs.parse::<u64>().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos = 0u64;
    for b in frac.bytes().chain(std::iter::repeat(b'0')).take(9) {
        nanos = nanos * 10 + u64::from(b - b'0');
    }
    Some(Timestamp::from_nanos(
        secs.saturating_mul(1_000_000_000).saturating_add(nanos),
    ))
}

fn access(dir: Direction, time: Timestamp, p: &Parsed) -> Event {
    let value = Value::from_u64(p.width, p.value.unwrap_or(0)).unwrap_or(Value::ZERO);
    Event::Access(Access {
        dir,
        time,
        map_id: 0,
        phys: p.addr,
        value,
        pc: 0,
        pid: p.pid,
        ext: Ext::default(),
    })
}

fn unknown(p: PendingRead) -> Event {
    Event::Unknown(Unknown {
        time: p.time,
        map_id: 0,
        phys: p.addr,
        opcode: [0; 3],
        pc: 0,
        pid: p.pid,
        ext: Ext::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> Vec<Event> {
        RwmmioReader::new(text.as_bytes(), ReadOptions::default())
            .map(|item| match item.expect("parses") {
                Item::Event(e) => e,
                Item::Truncated(t) => panic!("truncated: {t}"),
            })
            .collect()
    }

    const TRACE: &str = "\
# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
     kworker/0:1-12      [000] d..1.  1234.567890: rwmmio_write: gen8_write32+0x2c/0x90 -> intel_uncore_write+0x10/0x20 width=32 val=0x1 addr=0xffffc90001234040
     kworker/0:1-12      [000] d..1.  1234.567891: rwmmio_post_write: gen8_write32+0x2c/0x90 -> intel_uncore_write+0x10/0x20 width=32 val=0x1 addr=0xffffc90001234040
     kworker/0:1-12      [000] d..1.  1234.567893: rwmmio_read: gen8_read32+0x1c/0x60 -> i915_reg_read+0x8/0x10 width=32 addr=0xffffc90001234044
     kworker/0:1-12      [000] d..1.  1234.567894: rwmmio_post_read: gen8_read32+0x1c/0x60 -> i915_reg_read+0x8/0x10 width=32 val=0x8000 addr=0xffffc90001234044
          <idle>-0       [001] d.h1.  1234.567900: irq_handler_entry: irq=16 name=i915
 systemd-udevd-301     [001] .....  1234.600000: rwmmio_read: readb_relaxed+0x4/0x8 [some_mod] width=8 addr=0xffffc90000010003
 systemd-udevd-301     [001] .....  1234.600010: rwmmio_write: writew+0x4/0x8 [some_mod] width=16 val=0 addr=0xffffc90000010004
";

    #[test]
    fn pairs_pre_and_post_events() {
        let events = read_all(TRACE);
        assert_eq!(events.len(), 4, "{events:#?}");
        let Event::Access(w) = &events[0] else {
            panic!("{:?}", events[0])
        };
        assert_eq!(
            (w.dir, w.width(), w.value.low_u64(), w.phys, w.pid),
            (Direction::Write, 4, 1, 0xffffc90001234040, 12)
        );
        assert_eq!(w.time, Timestamp::from_nanos(1_234_567_890_000));
        let Event::Access(r) = &events[1] else {
            panic!("{:?}", events[1])
        };
        assert_eq!(
            (r.dir, r.value.low_u64(), r.phys),
            (Direction::Read, 0x8000, 0xffffc90001234044)
        );
        assert_eq!(
            r.time,
            Timestamp::from_nanos(1_234_567_893_000),
            "timed at the pre-read"
        );
        let Event::Unknown(u) = &events[2] else {
            panic!("{:?}", events[2])
        };
        assert_eq!((u.phys, u.pid), (0xffffc90000010003, 301));
        let Event::Access(w) = &events[3] else {
            panic!("{:?}", events[3])
        };
        assert_eq!(
            (w.dir, w.width(), w.value.low_u64()),
            (Direction::Write, 2, 0)
        );
    }

    #[test]
    fn old_format_without_caller_arrow() {
        let line = "  insmod-77  [002] ....  10.000001: rwmmio_post_read: foo_probe+0x10/0x40 width=64 val=0xdeadbeefcafe addr=0xffff800010001000\n";
        let events = read_all(line);
        let Event::Access(r) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (r.width(), r.value.low_u64(), r.pid),
            (8, 0xdeadbeefcafe, 77)
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let text = "  a-1  [000] ....  1.0: rwmmio_write: f+0x0/0x4 width=12 val=0x1 addr=0x10\n";
        let err = RwmmioReader::new(text.as_bytes(), ReadOptions::default().with_name("k.txt"))
            .read_item()
            .expect_err("bad width");
        assert!(err.to_string().starts_with("k.txt:1:"), "{err}");
        assert!(err.to_string().contains("width=12"), "{err}");
    }

    #[test]
    fn detection() {
        assert!(looks_like_rwmmio(TRACE.as_bytes()));
        assert!(!looks_like_rwmmio(
            b"VERSION 20070824\nR 4 0.1 1 0x0 0x0 0x0 0\n"
        ));
        assert!(!looks_like_rwmmio(
            b"# tracer: mmiotrace\nMAP 0.0 1 0x0 0x0 0x1000 0x0 0\n"
        ));
        assert!(!looks_like_rwmmio(b""));
    }
}
