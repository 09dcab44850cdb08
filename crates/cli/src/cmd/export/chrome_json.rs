//! Chrome trace-event JSON (the "JSON Array/Object Format" that
//! ui.perfetto.dev and chrome://tracing open), written as the trace is read.

use std::collections::HashSet;
use std::io::Write;

use anyhow::Context as _;
use mmiotrace_trace::{Direction, Event, Timestamp};

use super::Counter;
use super::Exporter;
use super::counters::CounterSelection;
use super::table::hex;
use crate::cmd::common::register_label;

pub struct ChromeJsonExporter {
    out: Box<dyn Write>,
    name: String,
    counters: CounterSelection,
    /// Threads and processes already named.
    threads: HashSet<(u32, u32)>,
    processes: HashSet<u32>,
    /// Time of the latest timed event, for LOST records, which have none.
    last_time: Timestamp,
    first: bool,
    line: String,
}

/// Trace-event time: microseconds, with the nanoseconds as decimals.
fn ts(t: Timestamp) -> String {
    format!("{}.{:03}", t.nanos / 1000, t.nanos % 1000)
}

/// A JSON string literal.
fn json(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

impl ChromeJsonExporter {
    pub fn new(
        mut out: Box<dyn Write>,
        name: String,
        counters: &[Counter],
    ) -> anyhow::Result<ChromeJsonExporter> {
        out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")
            .with_context(|| format!("cannot write to {name}"))?;
        Ok(ChromeJsonExporter {
            out,
            name,
            counters: CounterSelection::new(counters)?,
            threads: HashSet::new(),
            processes: HashSet::new(),
            last_time: Timestamp::ZERO,
            first: true,
            line: String::new(),
        })
    }

    /// Appends one trace event (a JSON object without braces' separator).
    fn push(&mut self, object: String) {
        if !self.first {
            self.line.push_str(",\n");
        }
        self.first = false;
        self.line.push_str(&object);
    }

    /// Names the process and thread the first time they appear.
    fn name_thread(&mut self, process: u32, thread: u32) {
        if self.processes.insert(process) {
            self.push(format!(
                r#"{{"ph":"M","name":"process_name","pid":{process},"tid":{process},"args":{{"name":"process {process}"}}}}"#
            ));
        }
        if self.threads.insert((process, thread)) {
            self.push(format!(
                r#"{{"ph":"M","name":"thread_name","pid":{process},"tid":{thread},"args":{{"name":"thread {thread}"}}}}"#
            ));
        }
    }

    /// `reg`: the name of the event's register, if a database has one.
    fn build(&mut self, event: &Event, reg: Option<&str>) {
        if let Some(t) = event.time() {
            self.last_time = self.last_time.max(t);
        }
        let process_of = |process: Option<u32>, pid: u32| process.unwrap_or(pid);
        match event {
            Event::Access(a) => {
                let process = process_of(a.ext.process, a.pid);
                self.name_thread(process, a.pid);
                let dir = dir_name(a.dir);
                let seq = a
                    .ext
                    .seq
                    .map_or(String::new(), |s| format!(r#","seq":{s}"#));
                let reg_arg = reg.map_or(String::new(), |r| format!(r#","reg":{}"#, json(r)));
                self.push(format!(
                    r#"{{"ph":"i","s":"t","cat":"mmio","name":{},"ts":{},"pid":{process},"tid":{},"args":{{"value":"{}","width":{},"pc":"{:#x}","map":{}{seq}{reg_arg}}}}}"#,
                    json(&format!("{dir} {}", register_label(a.phys, reg))),
                    ts(a.time),
                    a.pid,
                    hex(&a.value),
                    a.width(),
                    a.pc,
                    a.map_id
                ));
                if self.counters.contains(a.phys, reg) {
                    self.push(format!(
                        r#"{{"ph":"C","name":{},"ts":{},"pid":{process},"args":{{"value":{}}}}}"#,
                        json(&register_label(a.phys, reg)),
                        ts(a.time),
                        a.value.low_u64()
                    ));
                }
            }
            Event::Repeat(r) => {
                let process = process_of(r.ext.process, r.pid);
                self.name_thread(process, r.pid);
                let until = r
                    .until
                    .as_ref()
                    .map_or(String::new(), |u| format!(r#","until":"{}""#, hex(u)));
                self.push(format!(
                    r#"{{"ph":"X","cat":"poll","name":{},"ts":{},"dur":{},"pid":{process},"tid":{},"args":{{"value":"{}","len":{},"count":{}{until}}}}}"#,
                    json(&format!(
                        "poll {} {} x{}",
                        dir_name(r.dir),
                        register_label(r.phys, reg),
                        r.count
                    )),
                    ts(r.time),
                    ts(Timestamp::from_nanos(r.end.nanos.saturating_sub(r.time.nanos))),
                    r.pid,
                    hex(&r.value),
                    r.len,
                    r.count
                ));
            }
            Event::Mark(m) => {
                self.push(format!(
                    r#"{{"ph":"i","s":"g","cat":"mark","name":{},"ts":{},"pid":0,"tid":0}}"#,
                    json(&m.text),
                    ts(m.time)
                ));
            }
            Event::Map(m) => {
                let process = process_of(m.ext.process, m.pid);
                self.name_thread(process, m.pid);
                let path = m.path.as_deref().unwrap_or("");
                self.push(format!(
                    r#"{{"ph":"i","s":"p","cat":"map","name":{},"ts":{},"pid":{process},"tid":{},"args":{{"phys":"{:#x}","len":"{:#x}","path":{}}}}}"#,
                    json(&format!("MAP {} {:#x}", m.map_id, m.phys)),
                    ts(m.time),
                    m.pid,
                    m.phys,
                    m.len,
                    json(path)
                ));
            }
            Event::Unmap(u) => {
                let process = process_of(u.ext.process, u.pid);
                self.name_thread(process, u.pid);
                self.push(format!(
                    r#"{{"ph":"i","s":"p","cat":"map","name":"UNMAP {}","ts":{},"pid":{process},"tid":{}}}"#,
                    u.map_id,
                    ts(u.time),
                    u.pid
                ));
            }
            Event::Unknown(u) => {
                let process = process_of(u.ext.process, u.pid);
                self.name_thread(process, u.pid);
                let [b0, b1, b2] = u.opcode;
                self.push(format!(
                    r#"{{"ph":"i","s":"t","cat":"mmio","name":{},"ts":{},"pid":{process},"tid":{},"args":{{"opcode":"{b0:02x},{b1:02x},{b2:02x}"}}}}"#,
                    json(&format!("UNKNOWN {}", register_label(u.phys, reg))),
                    ts(u.time),
                    u.pid
                ));
            }
            Event::Lost(l) => {
                self.push(format!(
                    r#"{{"ph":"i","s":"g","cat":"lost","name":"lost {} events","ts":{},"pid":0,"tid":0}}"#,
                    l.count,
                    ts(self.last_time)
                ));
            }
            Event::Version(_) | Event::PciDev(_) => {}
        }
    }
}

fn dir_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Read => "R",
        Direction::Write => "W",
    }
}

impl Exporter for ChromeJsonExporter {
    fn event(&mut self, event: &Event, reg: Option<&str>) -> anyhow::Result<()> {
        self.line.clear();
        self.build(event, reg);
        self.out
            .write_all(self.line.as_bytes())
            .with_context(|| format!("cannot write to {}", self.name))
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.out
            .write_all(b"\n]}\n")
            .and_then(|()| self.out.flush())
            .with_context(|| format!("cannot write to {}", self.name))
    }
}
