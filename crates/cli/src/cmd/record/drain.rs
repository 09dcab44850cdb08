//! Turns ring records into trace events, in global sequence order.
//!
//! Every record carries a global sequence number taken when it was logged.
//! Each ring is in order by itself; across rings, a record whose number was
//! taken but is not yet published (its thread was preempted between the two)
//! leaves a hole. The drainer holds back everything after a hole until the
//! hole fills, or until the program is gone, or until it has stayed open for
//! [`HOLE_TIMEOUT`] (a thread stopped mid-log); a record that arrives after its
//! hole was given up is still written, late, never dropped.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mmiotrace_shm::{
    MAX_MARK_LEN, Popped, RECORD_FLAG_HOOKED, RECORD_FLAG_NO_DEVICE, Record, Shm, clip_mark, kind,
    payload_text,
};
use mmiotrace_trace::{
    Access, Direction, Event, Ext, Hooked, Lost, Map, Mark, Timestamp, Unknown, Unmap, Value,
};

use super::devices::{self, Backing};

/// How long the drainer waits for a missing sequence number while the program runs.
const HOLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most records taken from one ring per poll, so one busy thread cannot starve the rest.
const POLL_BATCH: usize = 8192;

/// MARK text as the trace holds it: valid UTF-8 (each invalid byte a
/// U+FFFD) and at most [`MAX_MARK_LEN`] bytes (see [`clip_mark`]).
pub fn mark_text(bytes: &[u8]) -> String {
    mark_text_of(&String::from_utf8_lossy(bytes), 0)
}

/// [`mark_text`] of a text whose first part is `head` (valid UTF-8) and
/// which goes on for `more` bytes that were not kept.
pub fn mark_text_of(head: &str, more: u64) -> String {
    if more == 0 && head.len() <= MAX_MARK_LEN {
        return head.to_owned();
    }
    let mut clipped = [0u8; MAX_MARK_LEN];
    let len = clip_mark(head.as_bytes(), head.len() as u64 + more, &mut clipped);
    String::from_utf8_lossy(&clipped[..len]).into_owned()
}

#[derive(Debug)]
enum Item {
    Ring(Popped),
    Made(Event),
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    item: Item,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.seq.cmp(&other.seq)
    }
}

/// One traced mapping, as the summary shows it.
#[derive(Debug, Clone)]
pub struct MapInfo {
    pub path: String,
    pub phys: u64,
    pub len: u64,
    pub unmapped: bool,
}

/// What the recording contained; printed when the program ends.
#[derive(Debug, Default)]
pub struct Summary {
    pub maps: BTreeMap<u32, MapInfo>,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub threads: BTreeSet<u32>,
    pub processes: BTreeSet<u32>,
    pub lost: u64,
    pub ring_full_waits: u64,
    /// Sequence numbers that never arrived (a thread killed between taking
    /// a number and publishing its record).
    pub seq_gaps: u64,
    /// Records written after their hole had been given up.
    pub late: u64,
    /// Accesses to a map id with no MAP record.
    pub orphans: u64,
    /// Threads that had to wait for a free ring slot (`--rings`).
    pub slot_waits: u64,
    /// Accesses a hook changed or marked.
    pub hooked: u64,
}

#[derive(Debug)]
pub struct Drainer {
    shm: Shm,
    heap: BinaryHeap<Reverse<Pending>>,
    next_seq: u64,
    hole_since: Option<Instant>,
    backings: BTreeMap<u32, Backing>,
    pci_written: HashSet<PathBuf>,
    lost_seen: u64,
    pub summary: Summary,
}

impl Drainer {
    pub fn new(shm: Shm) -> Drainer {
        Drainer {
            shm,
            heap: BinaryHeap::new(),
            next_seq: 0,
            hole_since: None,
            backings: BTreeMap::new(),
            pci_written: HashSet::new(),
            lost_seen: 0,
            summary: Summary::default(),
        }
    }

    /// Moves published records from the rings into the reorder heap. Returns
    /// how many it took.
    pub fn poll(&mut self) -> usize {
        let mut taken = 0;
        for slot in 0..self.shm.slots_used() {
            for _ in 0..POLL_BATCH {
                let Some(popped) = self.shm.pop(slot) else {
                    break;
                };
                self.heap.push(Reverse(Pending {
                    seq: popped.record.seq,
                    item: Item::Ring(popped),
                }));
                taken += 1;
            }
        }
        let lost = self.shm.lost();
        if lost > self.lost_seen {
            let count = lost - self.lost_seen;
            self.lost_seen = lost;
            self.summary.lost += count;
            let seq = self.shm.take_seq();
            self.heap.push(Reverse(Pending {
                seq,
                item: Item::Made(Event::Lost(Lost {
                    count,
                    ext: Ext {
                        seq: Some(seq),
                        process: None,
                        hook: None,
                    },
                })),
            }));
        }
        self.summary.ring_full_waits = self.shm.full_waits();
        taken
    }

    /// Adds a marker that came from outside the program (the mark FIFO).
    pub fn add_mark(&mut self, text: String) {
        let text = if text.len() > MAX_MARK_LEN {
            mark_text(text.as_bytes())
        } else {
            text
        };
        let seq = self.shm.take_seq();
        let time = Timestamp::from_nanos(
            mmiotrace_shm::now_ns().saturating_sub(self.shm.header().clock_base_ns),
        );
        self.heap.push(Reverse(Pending {
            seq,
            item: Item::Made(Event::Mark(Mark {
                time,
                text,
                ext: Ext {
                    seq: Some(seq),
                    process: None,
                    hook: None,
                },
            })),
        }));
    }

    /// Passes every event that is due to `write`, in sequence order. With
    /// `finished`, the program is gone and holes will never fill.
    pub fn emit(
        &mut self,
        finished: bool,
        mut write: impl FnMut(&Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        while let Some(Reverse(top)) = self.heap.peek() {
            let seq = top.seq;
            if seq > self.next_seq {
                let since = *self.hole_since.get_or_insert_with(Instant::now);
                if !finished && since.elapsed() < HOLE_TIMEOUT {
                    break;
                }
                self.summary.seq_gaps += seq - self.next_seq;
                self.next_seq = seq;
            }
            self.hole_since = None;
            let Some(Reverse(pending)) = self.heap.pop() else {
                break;
            };
            if seq < self.next_seq {
                self.summary.late += 1;
            } else {
                self.next_seq = seq + 1;
            }
            match pending.item {
                Item::Made(event) => {
                    *self.summary.by_kind.entry(event.kind_name()).or_default() += 1;
                    write(&event)?;
                }
                Item::Ring(popped) => self.convert(popped, &mut write)?,
            }
        }
        Ok(())
    }

    fn phys(&mut self, record: &Record) -> u64 {
        match self.summary.maps.get(&record.map_id) {
            Some(map) => map.phys.wrapping_add(record.offset),
            None => {
                self.summary.orphans += 1;
                record.offset
            }
        }
    }

    fn convert(
        &mut self,
        popped: Popped,
        write: &mut impl FnMut(&Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let record = popped.record;
        let time = Timestamp::from_nanos(record.time_ns);
        let ext = Ext {
            seq: Some(record.seq),
            process: Some(record.pid),
            hook: None,
        };
        self.summary.threads.insert(record.tid);
        self.summary.processes.insert(record.pid);
        let event = match record.kind {
            kind::READ | kind::WRITE => {
                let value = if record.width as usize <= 8 {
                    Value::from_u64(record.width, record.value)
                } else {
                    popped
                        .payload
                        .get(..record.width as usize)
                        .and_then(Value::from_le_bytes)
                };
                let Some(value) = value else {
                    anyhow::bail!(
                        "runtime sent an access of impossible width {} (seq {})",
                        record.width,
                        record.seq
                    );
                };
                let mut ext = ext;
                if record.flags & RECORD_FLAG_HOOKED != 0 {
                    let mut rule = [0u8; 4];
                    if let Some(bytes) = popped.payload.get(..4) {
                        rule.copy_from_slice(bytes);
                    }
                    ext.hook = Some(Hooked {
                        rule: u32::from_le_bytes(rule),
                        device: (record.flags & RECORD_FLAG_NO_DEVICE == 0).then_some(record.aux),
                    });
                    self.summary.hooked += 1;
                }
                Event::Access(Access {
                    dir: if record.kind == kind::READ {
                        Direction::Read
                    } else {
                        Direction::Write
                    },
                    time,
                    map_id: record.map_id,
                    phys: self.phys(&record),
                    value,
                    pc: record.pc,
                    pid: record.tid,
                    ext,
                })
            }
            kind::UNKNOWN => {
                let bytes = record.aux.to_le_bytes();
                Event::Unknown(Unknown {
                    time,
                    map_id: record.map_id,
                    phys: self.phys(&record),
                    opcode: [bytes[0], bytes[1], bytes[2]],
                    pc: record.pc,
                    pid: record.tid,
                    ext,
                })
            }
            kind::MAP => {
                let path = String::from_utf8_lossy(payload_text(&popped.payload)).into_owned();
                let backing = devices::classify(&path);
                if let Some(device_dir) = backing.pci_device_dir()
                    && let Ok(device_dir) = std::fs::canonicalize(&device_dir)
                    && self.pci_written.insert(device_dir.clone())
                    && let Some(dev) = devices::pci_device(&device_dir)
                {
                    *self.summary.by_kind.entry("PCIDEV").or_default() += 1;
                    write(&Event::PciDev(dev))?;
                }
                let phys = devices::phys_address(&backing, record.offset);
                self.backings.insert(record.map_id, backing);
                self.summary.maps.insert(
                    record.map_id,
                    MapInfo {
                        path: path.clone(),
                        phys,
                        len: record.value,
                        unmapped: false,
                    },
                );
                Event::Map(Map {
                    time,
                    map_id: record.map_id,
                    phys,
                    virt: record.aux,
                    len: record.value,
                    pc: record.pc,
                    pid: record.tid,
                    ext,
                    path: Some(path),
                })
            }
            kind::REMAP => {
                // The same mapping, described again: same id, phys and path.
                // Other pieces of it may have stayed where they were: the
                // length only grows, so that it covers them too.
                let (phys, len, path) = match self.summary.maps.get_mut(&record.map_id) {
                    Some(map) => {
                        map.len = map.len.max(record.value);
                        (map.phys, map.len, Some(map.path.clone()))
                    }
                    None => {
                        self.summary.orphans += 1;
                        (0, record.value, None)
                    }
                };
                Event::Map(Map {
                    time,
                    map_id: record.map_id,
                    phys,
                    virt: record.aux,
                    len,
                    pc: record.pc,
                    pid: record.tid,
                    ext,
                    path,
                })
            }
            kind::UNMAP => {
                if let Some(map) = self.summary.maps.get_mut(&record.map_id) {
                    map.unmapped = true;
                }
                Event::Unmap(Unmap {
                    time,
                    map_id: record.map_id,
                    pc: record.pc,
                    pid: record.tid,
                    ext,
                })
            }
            kind::MARK => Event::Mark(Mark {
                time,
                text: mark_text(payload_text(&popped.payload)),
                ext,
            }),
            other => anyhow::bail!(
                "runtime sent a record of unknown kind {other} (seq {}); are the runtime and recorder from the same build?",
                record.seq
            ),
        };
        *self.summary.by_kind.entry(event.kind_name()).or_default() += 1;
        write(&event)
    }
}
