//! Perfetto's native trace format: a protobuf `Trace`, written one
//! `TracePacket` at a time as the trace is read.
//!
//! The layout, chosen for size (46 bytes an event on the benchmark trace,
//! docs/BENCHMARKS.md) and for what ui.perfetto.dev shows:
//!
//! - Sequence 1 holds the track descriptors (a track per process, per
//!   thread, per `--counter` register, and one for marks), the marks, the
//!   counter values and lost-event notes, with absolute timestamps.
//! - Each thread writes its events on a sequence of its own. Its first
//!   packet sets the sequence's defaults: the thread's track, and a clock of
//!   the sequence's own (id 64) whose timestamps are increments, so an
//!   access's timestamp is its time since the thread's previous event,
//!   usually one or two bytes. A `ClockSnapshot` ties that clock to
//!   BOOTTIME, the trace clock, at the thread's first event. An event
//!   earlier than the thread's previous one (traces are not required to be
//!   ordered) is written with an absolute BOOTTIME timestamp instead.
//! - On a thread's sequence, event names (`R STATUS@0x8`), argument names
//!   and instruction addresses are interned: sent once, then referred to by
//!   number. Interned strings are capped (see [`INTERN_LIMIT`]); past it
//!   every thread's sequence starts afresh, so memory stays bounded.
//!
//! Timestamps are the trace's, in nanoseconds, as BOOTTIME: a trace's
//! times start near 0, and so does the timeline.

mod protos;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

use anyhow::Context as _;
use mmiotrace_trace::{Access, Direction, Event, Repeat, Timestamp, Value};

use super::Counter;
use super::Exporter;
use super::counters::CounterSelection;
use super::table::hex;
use crate::cmd::common::register_label;
use protos::{
    CLOCK_BOOTTIME, CLOCK_FIRST_SEQUENCE_SCOPED, Clock, ClockSnapshot, CounterDescriptor,
    DebugAnnotation, DebugAnnotationName, EventName, EventType, InternedData, InternedString,
    PACKET_TAG, ProcessDescriptor, SEQ_INCREMENTAL_STATE_CLEARED, ThreadDescriptor, TracePacket,
    TracePacketDefaults, TrackDescriptor, TrackEvent, TrackEventDefaults,
};

/// The sequence of the descriptors, marks and counters.
const GLOBAL_SEQUENCE: u32 = 1;

/// The clock of a thread's sequence: increments since its previous event.
const THREAD_CLOCK: u32 = CLOCK_FIRST_SEQUENCE_SCOPED;

/// Most interned strings (event names and instruction addresses, all
/// threads together) held at once.
const INTERN_LIMIT: usize = 1 << 16;

/// The argument names, interned on every thread's sequence as iid 1, 2, …
const ARGUMENTS: [&str; 8] = [
    "value", "pc", "width", "map", "seq", "count", "len", "until",
];
const ARG_VALUE: u64 = 1;
const ARG_PC: u64 = 2;
const ARG_WIDTH: u64 = 3;
const ARG_MAP: u64 = 4;
const ARG_SEQ: u64 = 5;
const ARG_COUNT: u64 = 6;
const ARG_LEN: u64 = 7;
const ARG_UNTIL: u64 = 8;

/// A thread's track and sequence, and what its sequence has interned.
#[derive(Debug)]
struct Thread {
    track: u64,
    sequence: u32,
    /// The exporter's [`PerfettoExporter::generation`] when this sequence
    /// last sent its state; another value means the state must be resent.
    generation: u64,
    /// The sequence clock's value: the time of the previous event.
    clock: u64,
    names: HashMap<Box<str>, u64>,
    pcs: HashMap<u64, u64>,
    next_name_iid: u64,
    next_pc_iid: u64,
}

/// Encodes packets into the file.
struct Sink {
    out: Box<dyn Write>,
    name: String,
    buf: Vec<u8>,
}

impl Sink {
    fn packet(&mut self, packet: &TracePacket) -> anyhow::Result<()> {
        use prost::Message as _;
        self.buf.clear();
        self.buf.push(PACKET_TAG);
        packet
            .encode_length_delimited(&mut self.buf)
            .expect("a Vec grows to fit any packet");
        self.out
            .write_all(&self.buf)
            .with_context(|| format!("cannot write to {}", self.name))
    }
}

pub struct PerfettoExporter {
    sink: Sink,
    counters: CounterSelection,
    next_uuid: u64,
    next_sequence: u32,
    /// Process id → its track.
    processes: HashMap<u32, u64>,
    /// (process, thread) → the thread's track and sequence.
    threads: HashMap<(u32, u32), Thread>,
    /// Counter track name → its track.
    counter_tracks: HashMap<String, u64>,
    marks_track: Option<u64>,
    /// Strings interned on all sequences now.
    interned: usize,
    /// Bumped when every sequence's interned strings are dropped.
    generation: u64,
    /// Time of the latest timed event, for LOST records, which have none.
    last_time: Timestamp,
    /// Scratch space for names.
    text: String,
}

fn uint(name_iid: u64, value: u64) -> DebugAnnotation {
    DebugAnnotation {
        name_iid: Some(name_iid),
        uint_value: Some(value),
        ..DebugAnnotation::default()
    }
}

fn string(name_iid: u64, value: String) -> DebugAnnotation {
    DebugAnnotation {
        name_iid: Some(name_iid),
        string_value: Some(value),
        ..DebugAnnotation::default()
    }
}

/// A register value: an exact integer up to 8 bytes, hex text above.
fn value_annotation(name_iid: u64, value: &Value) -> DebugAnnotation {
    if value.is_wide() {
        string(name_iid, hex(value))
    } else {
        uint(name_iid, value.low_u64())
    }
}

fn dir_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Read => "R",
        Direction::Write => "W",
    }
}

impl PerfettoExporter {
    pub fn new(
        out: Box<dyn Write>,
        name: String,
        counters: &[Counter],
    ) -> anyhow::Result<PerfettoExporter> {
        let mut exporter = PerfettoExporter {
            sink: Sink {
                out,
                name,
                buf: Vec::new(),
            },
            counters: CounterSelection::new(counters)?,
            next_uuid: 1,
            next_sequence: GLOBAL_SEQUENCE + 1,
            processes: HashMap::new(),
            threads: HashMap::new(),
            counter_tracks: HashMap::new(),
            marks_track: None,
            interned: 0,
            generation: 0,
            last_time: Timestamp::ZERO,
            text: String::new(),
        };
        exporter.sink.packet(&TracePacket {
            trusted_packet_sequence_id: Some(GLOBAL_SEQUENCE),
            sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
            ..TracePacket::default()
        })?;
        Ok(exporter)
    }

    fn new_uuid(&mut self) -> u64 {
        let uuid = self.next_uuid;
        self.next_uuid += 1;
        uuid
    }

    fn descriptor(&mut self, descriptor: TrackDescriptor) -> anyhow::Result<()> {
        self.sink.packet(&TracePacket {
            trusted_packet_sequence_id: Some(GLOBAL_SEQUENCE),
            track_descriptor: Some(descriptor),
            ..TracePacket::default()
        })
    }

    /// An event on sequence 1, at `time`.
    fn global_event(&mut self, time: Timestamp, event: TrackEvent) -> anyhow::Result<()> {
        self.sink.packet(&TracePacket {
            timestamp: Some(time.nanos),
            trusted_packet_sequence_id: Some(GLOBAL_SEQUENCE),
            track_event: Some(event),
            ..TracePacket::default()
        })
    }

    fn process_track(&mut self, process: u32) -> anyhow::Result<u64> {
        if let Some(&track) = self.processes.get(&process) {
            return Ok(track);
        }
        let track = self.new_uuid();
        self.processes.insert(process, track);
        self.descriptor(TrackDescriptor {
            uuid: Some(track),
            process: Some(ProcessDescriptor {
                pid: Some(process as i32),
                process_name: Some(format!("process {process}")),
            }),
            ..TrackDescriptor::default()
        })?;
        Ok(track)
    }

    /// The thread's state, its track described and its sequence's state
    /// (re)sent where needed, with its clock ready for an event at `time`.
    fn thread(&mut self, process: u32, tid: u32, time: u64) -> anyhow::Result<&mut Thread> {
        if !self.threads.contains_key(&(process, tid)) {
            let process_track = self.process_track(process)?;
            let track = self.new_uuid();
            self.descriptor(TrackDescriptor {
                uuid: Some(track),
                parent_uuid: Some(process_track),
                thread: Some(ThreadDescriptor {
                    pid: Some(process as i32),
                    tid: Some(i64::from(tid)),
                    thread_name: Some(format!("thread {tid}")),
                }),
                ..TrackDescriptor::default()
            })?;
            let sequence = self.next_sequence;
            self.next_sequence = self.next_sequence.checked_add(1).with_context(|| {
                format!(
                    "{}: more threads than Perfetto has sequences",
                    self.sink.name
                )
            })?;
            self.threads.insert(
                (process, tid),
                Thread {
                    track,
                    sequence,
                    generation: self.generation.wrapping_sub(1),
                    clock: time,
                    names: HashMap::new(),
                    pcs: HashMap::new(),
                    next_name_iid: 1,
                    next_pc_iid: 1,
                },
            );
        }
        let generation = self.generation;
        let thread = self
            .threads
            .get_mut(&(process, tid))
            .expect("inserted above");
        if thread.generation != generation {
            thread.generation = generation;
            let names = ARGUMENTS
                .iter()
                .zip(1..)
                .map(|(name, iid)| DebugAnnotationName {
                    iid: Some(iid),
                    name: Some((*name).to_string()),
                })
                .collect();
            self.sink.packet(&TracePacket {
                trusted_packet_sequence_id: Some(thread.sequence),
                sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
                trace_packet_defaults: Some(TracePacketDefaults {
                    timestamp_clock_id: Some(THREAD_CLOCK),
                    track_event_defaults: Some(TrackEventDefaults {
                        track_uuid: Some(thread.track),
                    }),
                }),
                interned_data: Some(InternedData {
                    debug_annotation_names: names,
                    ..InternedData::default()
                }),
                ..TracePacket::default()
            })?;
            let clock = |clock_id, is_incremental| Clock {
                clock_id: Some(clock_id),
                timestamp: Some(thread.clock),
                is_incremental,
            };
            self.sink.packet(&TracePacket {
                trusted_packet_sequence_id: Some(thread.sequence),
                clock_snapshot: Some(ClockSnapshot {
                    clocks: vec![clock(THREAD_CLOCK, Some(true)), clock(CLOCK_BOOTTIME, None)],
                }),
                ..TracePacket::default()
            })?;
        }
        Ok(thread)
    }

    /// Makes room for `more` interned strings: past the limit, every
    /// sequence drops its strings and will start afresh.
    fn reserve_interned(&mut self, more: usize) {
        if self.interned + more <= INTERN_LIMIT {
            self.interned += more;
            return;
        }
        for thread in self.threads.values_mut() {
            thread.names.clear();
            thread.pcs.clear();
            thread.next_name_iid = 1;
            thread.next_pc_iid = 1;
        }
        self.generation = self.generation.wrapping_add(1);
        self.interned = more;
    }

    /// Writes `event` on the thread's sequence at `time`; `name` (in
    /// `self.text`) is interned when `intern_name`, `pc` always.
    fn thread_event(
        &mut self,
        (process, tid): (u32, u32),
        time: Timestamp,
        intern_name: bool,
        pc: Option<u64>,
        mut event: TrackEvent,
    ) -> anyhow::Result<()> {
        // Whether this event adds interned strings, to make room first.
        let known = self.threads.get(&(process, tid)).is_some_and(|t| {
            (!intern_name || t.names.contains_key(self.text.as_str()))
                && pc.is_none_or(|pc| t.pcs.contains_key(&pc))
        });
        if !known {
            self.reserve_interned(2);
        }
        let name = std::mem::take(&mut self.text);
        let thread = self.thread(process, tid, time.nanos)?;
        let mut interned = InternedData::default();
        if intern_name {
            let iid = match thread.names.get(name.as_str()) {
                Some(&iid) => iid,
                None => {
                    let iid = thread.next_name_iid;
                    thread.next_name_iid += 1;
                    thread.names.insert(name.as_str().into(), iid);
                    interned.event_names.push(EventName {
                        iid: Some(iid),
                        name: Some(name.clone()),
                    });
                    iid
                }
            };
            event.name_iid = Some(iid);
        } else if !name.is_empty() {
            event.name = Some(name.clone());
        }
        if let Some(pc) = pc {
            let iid = *thread.pcs.entry(pc).or_insert_with(|| {
                let iid = thread.next_pc_iid;
                thread.next_pc_iid += 1;
                interned
                    .debug_annotation_string_values
                    .push(InternedString {
                        iid: Some(iid),
                        str: Some(format!("{pc:#x}").into_bytes()),
                    });
                iid
            });
            event.debug_annotations.push(DebugAnnotation {
                name_iid: Some(ARG_PC),
                string_value_iid: Some(iid),
                ..DebugAnnotation::default()
            });
        }
        let (timestamp, clock_id) = if time.nanos >= thread.clock {
            let delta = time.nanos - thread.clock;
            thread.clock = time.nanos;
            (delta, None)
        } else {
            (time.nanos, Some(CLOCK_BOOTTIME))
        };
        let has_interned =
            !interned.event_names.is_empty() || !interned.debug_annotation_string_values.is_empty();
        let packet = TracePacket {
            timestamp: Some(timestamp),
            timestamp_clock_id: clock_id,
            trusted_packet_sequence_id: Some(thread.sequence),
            track_event: Some(event),
            interned_data: has_interned.then_some(interned),
            ..TracePacket::default()
        };
        self.text = name;
        self.sink.packet(&packet)
    }

    fn counter_track(&mut self, label: &str) -> anyhow::Result<u64> {
        if let Some(&track) = self.counter_tracks.get(label) {
            return Ok(track);
        }
        let track = self.new_uuid();
        self.counter_tracks.insert(label.to_string(), track);
        self.descriptor(TrackDescriptor {
            uuid: Some(track),
            name: Some(label.to_string()),
            counter: Some(CounterDescriptor {}),
            ..TrackDescriptor::default()
        })?;
        Ok(track)
    }

    fn marks_track(&mut self) -> anyhow::Result<u64> {
        if let Some(track) = self.marks_track {
            return Ok(track);
        }
        let track = self.new_uuid();
        self.marks_track = Some(track);
        self.descriptor(TrackDescriptor {
            uuid: Some(track),
            name: Some("marks".to_string()),
            ..TrackDescriptor::default()
        })?;
        Ok(track)
    }

    fn access(&mut self, a: &Access, reg: Option<&str>) -> anyhow::Result<()> {
        let process = a.ext.process.unwrap_or(a.pid);
        self.text.clear();
        let _ = write!(
            self.text,
            "{} {}",
            dir_name(a.dir),
            register_label(a.phys, reg)
        );
        let mut annotations = vec![
            value_annotation(ARG_VALUE, &a.value),
            uint(ARG_WIDTH, a.width().into()),
            uint(ARG_MAP, a.map_id.into()),
        ];
        if let Some(seq) = a.ext.seq {
            annotations.push(uint(ARG_SEQ, seq));
        }
        let event = TrackEvent {
            r#type: Some(EventType::Instant as i32),
            debug_annotations: annotations,
            ..TrackEvent::default()
        };
        self.thread_event((process, a.pid), a.time, true, Some(a.pc), event)?;
        if self.counters.contains(a.phys, reg) {
            let track = self.counter_track(&register_label(a.phys, reg))?;
            // Counter tracks hold signed 64-bit integers: values from 2^63
            // up show as negative there (the access's "value" is exact).
            let counter_value = a.value.low_u64() as i64;
            self.global_event(
                a.time,
                TrackEvent {
                    r#type: Some(EventType::Counter as i32),
                    track_uuid: Some(track),
                    counter_value: Some(counter_value),
                    ..TrackEvent::default()
                },
            )?;
        }
        Ok(())
    }

    /// A folded polling loop: a slice from its first access to its last.
    fn repeat(&mut self, r: &Repeat, reg: Option<&str>) -> anyhow::Result<()> {
        let process = r.ext.process.unwrap_or(r.pid);
        self.text.clear();
        let _ = write!(
            self.text,
            "poll {} {} x{}",
            dir_name(r.dir),
            register_label(r.phys, reg),
            r.count
        );
        let mut annotations = vec![
            value_annotation(ARG_VALUE, &r.value),
            uint(ARG_WIDTH, r.value.width().into()),
            uint(ARG_MAP, r.map_id.into()),
            uint(ARG_COUNT, r.count),
            uint(ARG_LEN, r.len.into()),
        ];
        if let Some(until) = &r.until {
            annotations.push(value_annotation(ARG_UNTIL, until));
        }
        if let Some(seq) = r.ext.seq {
            annotations.push(uint(ARG_SEQ, seq));
        }
        let begin = TrackEvent {
            r#type: Some(EventType::SliceBegin as i32),
            debug_annotations: annotations,
            ..TrackEvent::default()
        };
        self.thread_event((process, r.pid), r.time, false, Some(r.pc), begin)?;
        let end = TrackEvent {
            r#type: Some(EventType::SliceEnd as i32),
            ..TrackEvent::default()
        };
        self.text.clear();
        self.thread_event((process, r.pid), r.end.max(r.time), false, None, end)?;
        Ok(())
    }

    /// An instant on the thread's track (`on_process`: its process's),
    /// named `self.text`.
    fn instant(
        &mut self,
        (process, tid): (u32, u32),
        time: Timestamp,
        on_process: bool,
        annotations: Vec<DebugAnnotation>,
        pc: u64,
    ) -> anyhow::Result<()> {
        let track_uuid = if on_process {
            Some(self.process_track(process)?)
        } else {
            None
        };
        let event = TrackEvent {
            r#type: Some(EventType::Instant as i32),
            track_uuid,
            debug_annotations: annotations,
            ..TrackEvent::default()
        };
        self.thread_event((process, tid), time, false, Some(pc), event)
    }

    /// An instant on the marks track.
    fn mark(&mut self, time: Timestamp, name: String) -> anyhow::Result<()> {
        let track = self.marks_track()?;
        self.global_event(
            time,
            TrackEvent {
                r#type: Some(EventType::Instant as i32),
                track_uuid: Some(track),
                name: Some(name),
                ..TrackEvent::default()
            },
        )
    }

    fn build(&mut self, event: &Event, reg: Option<&str>) -> anyhow::Result<()> {
        if let Some(t) = event.time() {
            self.last_time = self.last_time.max(t);
        }
        let named = |name: &str, value: String| DebugAnnotation {
            name: Some(name.to_string()),
            string_value: Some(value),
            ..DebugAnnotation::default()
        };
        match event {
            Event::Access(a) => self.access(a, reg),
            Event::Repeat(r) => self.repeat(r, reg),
            Event::Mark(m) => self.mark(m.time, m.text.clone()),
            Event::Map(m) => {
                let process = m.ext.process.unwrap_or(m.pid);
                self.text.clear();
                let _ = write!(self.text, "MAP {} {:#x}", m.map_id, m.phys);
                let annotations = vec![
                    uint(ARG_MAP, m.map_id.into()),
                    named("phys", format!("{:#x}", m.phys)),
                    named("len", format!("{:#x}", m.len)),
                    named("path", m.path.clone().unwrap_or_default()),
                ];
                self.instant((process, m.pid), m.time, true, annotations, m.pc)
            }
            Event::Unmap(u) => {
                let process = u.ext.process.unwrap_or(u.pid);
                self.text.clear();
                let _ = write!(self.text, "UNMAP {}", u.map_id);
                let annotations = vec![uint(ARG_MAP, u.map_id.into())];
                self.instant((process, u.pid), u.time, true, annotations, u.pc)
            }
            Event::Unknown(u) => {
                let process = u.ext.process.unwrap_or(u.pid);
                self.text.clear();
                let _ = write!(self.text, "UNKNOWN {}", register_label(u.phys, reg));
                let [b0, b1, b2] = u.opcode;
                let annotations = vec![
                    uint(ARG_MAP, u.map_id.into()),
                    named("opcode", format!("{b0:02x},{b1:02x},{b2:02x}")),
                ];
                self.instant((process, u.pid), u.time, false, annotations, u.pc)
            }
            Event::Lost(l) => self.mark(self.last_time, format!("lost {} events", l.count)),
            Event::Version(_) | Event::PciDev(_) => Ok(()),
        }
    }
}

impl Exporter for PerfettoExporter {
    fn event(&mut self, event: &Event, reg: Option<&str>) -> anyhow::Result<()> {
        self.build(event, reg)
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.sink
            .out
            .flush()
            .with_context(|| format!("cannot write to {}", self.sink.name))
    }
}
