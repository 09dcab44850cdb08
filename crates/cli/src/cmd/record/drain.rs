//! Turns ring records into trace events, in time order.
//!
//! Each ring has one producer and is in order by itself; every record
//! carries the time its producer stamped when it published it, all on one
//! clock (the TSC, or `CLOCK_MONOTONIC` where the TSC is not usable:
//! `mmiotrace_shm::FLAG_TSC_TIME`). The drainer merges the rings by that
//! time and numbers the events in the order it writes them: producers
//! share no counter (a `lock`ed one cost a patched access a third of its
//! time, and made threads contend for one cache line).
//!
//! A record is written only once no other ring can still publish an
//! earlier one. Before it looks at the rings the drainer reads the clock
//! (`now`); then, for each ring, whether its producer is stamping
//! ([`Shm::publication`]). A producer that is not will stamp its next
//! record later than `now` less [`MERGE_SLACK`] (the time its store of
//! the flag may take to be seen); one that is will stamp its record no
//! earlier than the records it published before. So a record is due when
//! its time is at most `now - MERGE_SLACK` and at most the floor of every
//! other ring that is stamping. A ring that stays stamping without
//! publishing for [`STAMPING_TIMEOUT`] (a process killed mid-log) is no
//! longer waited for; a record that then arrives earlier than what was
//! written is still written, late, never dropped.
//!
//! The merge is per ring, not per record: the source whose first record is
//! the earliest writes every record up to the first time of the other
//! sources in one run. With one thread logging, a whole batch is one run:
//! no per-event heap operation.
//!
//! A record stamped with the raw TSC (`RECORD_FLAG_TSC`) gets its time in
//! nanoseconds here, before it becomes an event: the drainer keeps pairs of
//! (TSC, `CLOCK_MONOTONIC`) readings, one taken when it is made (before the
//! program starts) and one per drain pass at most every
//! [`CALIBRATION_INTERVAL`], and interpolates between them ([`TscClock`]).
//! Events carry no record flags, so no trace holds that one.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use mmiotrace_shm::{
    MAX_MARK_LEN, MERGE_SLACK, Popped, RECORD_FLAG_HOOKED, RECORD_FLAG_NO_DEVICE, RECORD_FLAG_TSC,
    Record, Shm, TscClock, clip_mark, kind, payload_text,
};
use mmiotrace_trace::{
    Access, Direction, Event, Ext, Hooked, Lost, Map, Mark, Timestamp, Unknown, Unmap, Value,
};

use super::devices::{self, Backing};

/// How long the drainer waits for a ring whose producer is stamping and
/// publishes nothing (it died mid-log) while the program runs.
const STAMPING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a ring may be stamping, holding back other rings' records,
/// before those are taken out of their rings into queues (so that their
/// producers do not wait on a full ring meanwhile).
const STAMPING_PATIENCE: Duration = Duration::from_millis(1);

/// Most bytes of ring entries set aside in spool files (`record --spool`),
/// not yet written as events, while the recorder is behind its program
/// (see [`Drainer::spool`]): some 33 M accesses of patched sites, half a
/// second at their pace. Once the spools hold that much, the program logs
/// faster than the recorder writes for longer than a burst: nothing more
/// goes to them until they are all written and the program has paused,
/// and meanwhile it waits on a full ring, as it does without a spool
/// (setting records aside and reading them back costs more in all than
/// writing them from the ring: a spool is for bursts).
pub const SPOOL_LIMIT: u64 = 1 << 30;

/// Most records taken from one ring per poll without a spool, so one busy
/// thread cannot starve the rest.
const POLL_BATCH: usize = 1024;

/// Bytes read back from a spool file at a time.
const SPOOL_READ: usize = 64 << 10;

/// Most events one round of [`Drainer::pump`] writes before it looks at
/// the rings again, with a spool: at the recorder's pace, about 0.2 ms.
/// (Without one, a pump is one round: shorter rounds cost a fifth of the
/// recorder's rate in `recorder-binary`.)
const PUMP_ROUND: usize = 8192;

/// Most events one [`Drainer::pump`] writes, so that the recorder's loop
/// still looks at the program, signals and markers while a fast program
/// logs (65,536 events take a few milliseconds).
const PUMP_LIMIT: usize = 1 << 16;

/// Least time between two calibration pairs of the TSC clock: at 1 ms,
/// extrapolating past the newest pair by a drain pass or two stays within
/// a few nanoseconds of interpolating, and the bounded history
/// ([`mmiotrace_shm::TSC_CLOCK_HISTORY`] pairs) covers seconds, more than
/// a record waits behind a stamping ring ([`STAMPING_TIMEOUT`]).
const CALIBRATION_INTERVAL: Duration = Duration::from_millis(1);

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

/// Records taken from one ring and not yet written, in the ring's order
/// (one producer per ring, which stamps and publishes each record before
/// its next), and what the merge knows of the ring's records to come.
#[derive(Debug, Default)]
struct RingQueue {
    records: Vec<Popped>,
    /// Records before this index are written.
    head: usize,
    /// No record of this ring that is not yet published will be earlier.
    floor: u64,
    /// The time of the last record taken from the ring.
    last: u64,
    /// Since when the producer has been seen stamping, and its `write_pos`
    /// then.
    stamping: Option<(Instant, u64)>,
    /// It has stayed stamping for the timeout: no longer waited for (and
    /// counted once) until it publishes.
    given_up: bool,
    /// The ring's entries set aside while the recorder was behind.
    spool: Spool,
}

/// A ring's entries as they were in the ring (`Shm::take_entries`), set
/// aside in a file while the recorder is behind its program, and read back
/// later a chunk at a time, each record decoded where it lies in the chunk
/// as it is written (as the ring's are in place): an unlinked file in the
/// temporary directory, written at its end and read from its start, and
/// reused from offset 0 once all is read.
#[derive(Debug, Default)]
struct Spool {
    file: Option<std::fs::File>,
    /// Bytes written, and read back so far.
    written: u64,
    read: u64,
    /// Bytes read back; those before `at` are written as events.
    chunk: Vec<u8>,
    at: usize,
    /// The ring position of the entry at `chunk[at]`.
    pos: u64,
    /// The ids that the ring's compact records take at `chunk[at]`.
    ids: u64,
    /// Entries were taken from the ring since its consumer's ids were last
    /// set: the spool, not the ring, knows the ids until all is written.
    active: bool,
}

impl Spool {
    /// Bytes in the file not yet read back.
    fn pending(&self) -> u64 {
        self.written - self.read
    }

    fn rest(&self) -> &[u8] {
        self.chunk.get(self.at..).unwrap_or(&[])
    }
}

impl RingQueue {
    fn first_time(&self) -> Option<u64> {
        match self.records.get(self.head) {
            Some(popped) => Some(popped.record.time_ns),
            None => mmiotrace_shm::entry_time(self.spool.rest()),
        }
    }

    fn take_first(&mut self) -> Option<Popped> {
        let popped = self.records.get_mut(self.head)?;
        let taken = Popped {
            record: popped.record,
            payload: std::mem::take(&mut popped.payload),
        };
        self.head += 1;
        if self.head == self.records.len() {
            self.records.clear();
            self.head = 0;
        }
        Some(taken)
    }

    /// Room for another batch without moving what is written.
    fn compact(&mut self) {
        if self.head > 0 && self.head * 2 >= self.records.len() {
            self.records.drain(..self.head);
            self.head = 0;
        }
    }
}

/// How far each source may write now (see the module's comment).
#[derive(Debug, Default)]
struct Bounds {
    /// `now - MERGE_SLACK`: what a ring that is not stamping allows.
    general: u64,
    /// The rings whose producers are stamping, waited for.
    stamping: Vec<usize>,
}

impl Bounds {
    /// How far `source` may write, and whether a stamping ring sets that.
    /// A stamping ring's floor rises with every record taken from it: its
    /// record in flight is no earlier than those.
    fn of(&self, source: Source, rings: &[RingQueue]) -> (u64, bool) {
        let mut bound = (self.general, false);
        for &slot in &self.stamping {
            if matches!(source, Source::Ring(own) if own == slot) {
                continue;
            }
            if let Some(queue) = rings.get(slot) {
                let floor = queue.floor.max(queue.last);
                if floor < bound.0 {
                    bound = (floor, true);
                }
            }
        }
        bound
    }
}

/// Where the next run of events comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Ring(usize),
    Made,
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
    /// Rings no longer waited for: stamping, and publishing nothing, for
    /// [`STAMPING_TIMEOUT`] (a process killed while it logged).
    pub stalled: u64,
    /// Records written after a later one of another ring (one that
    /// arrived after its ring was no longer waited for).
    pub late: u64,
    /// Accesses to a map id with no MAP record.
    pub orphans: u64,
    /// Threads that had to wait for a free ring slot (`--rings`).
    pub slot_waits: u64,
    /// Accesses a hook changed or marked.
    pub hooked: u64,
    /// Bytes of ring entries set aside while the recorder was behind the
    /// program ([`SPOOL_LIMIT`]): in all, and the most at once.
    pub spooled: u64,
    pub spooled_peak: u64,
    /// Why the recorder stopped setting entries aside, if it did.
    pub spool_error: Option<String>,
    /// The runtime's per-site reports of patched sites (`--patch`).
    pub patch_sites: Vec<super::patch_sites::PatchSite>,
}

#[derive(Debug)]
pub struct Drainer {
    shm: Shm,
    /// One per ring slot.
    rings: Vec<RingQueue>,
    /// Events the recorder made itself (markers, lost-event counts), with
    /// their times on the records' clock, in the order made.
    made: VecDeque<(u64, Event)>,
    /// The sequence number of the next event written.
    next_seq: u64,
    /// The time of the last event written.
    last_written: u64,
    /// The general bound of the last merge: the floor of a ring that
    /// appears later ([`Bounds`]).
    last_general: u64,
    /// [`STAMPING_TIMEOUT`]; shorter in tests.
    stamping_timeout: Duration,
    /// The stamping rings of the last merge ([`Bounds`]), kept for its
    /// allocation.
    stamping: Vec<usize>,
    /// Where spool files go (the temporary directory), and how many bytes
    /// they may hold at once.
    spool_dir: PathBuf,
    spool_limit: u64,
    /// Bytes read back from a spool file at a time ([`SPOOL_READ`]).
    spool_read: usize,
    /// Bytes in the spool files not yet read back.
    spooled: u64,
    /// The recorder is behind: entries go to the spools, none are written
    /// as events until the program slows down ([`Drainer::pump`]).
    spooling: bool,
    /// The spools were full: the program logs faster than the recorder
    /// writes for longer than a burst. None is used again until all are
    /// read back and the program has paused (its rings found empty).
    spools_full: bool,
    backings: BTreeMap<u32, Backing>,
    pci_written: HashSet<PathBuf>,
    lost_seen: u64,
    /// Events written, by kind, until [`Drainer::summary`] adds them up:
    /// a few kinds, so a short list beats a map lookup per event.
    kinds: Vec<(&'static str, u64)>,
    /// Plain reads and writes written (the most events by far), until
    /// [`Drainer::summary`] adds them to `R` and `W`.
    plain: [u64; 2],
    /// The thread and process of the last record, already in the summary.
    last_thread: Option<(u32, u32)>,
    /// The last map id looked up, and its physical address.
    last_map: Option<(u32, u64)>,
    /// The payload of the record being read in place, reused.
    payload: Vec<u8>,
    /// The event of a plain access, reused (see [`Drainer::convert`]).
    access: Event,
    /// Converts the times of records stamped with the TSC.
    clock: TscClock,
    summary: Summary,
}

/// What one [`Drainer::pump`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pumped {
    /// Records it took from the rings.
    pub taken: usize,
    /// Records are published that are not due yet (the newest ones, until
    /// the clock has passed them by [`MERGE_SLACK`]).
    pub held: bool,
}

/// What one [`Drainer::merge`] did.
#[derive(Debug, Default)]
struct Merged {
    /// Records read in place from the rings.
    from_rings: usize,
    /// It stopped at a record that is not due yet.
    held: bool,
    /// ... because a ring's producer is stamping.
    held_by_stamping: bool,
    /// Events written.
    written: usize,
    /// Writing failed.
    failed: Option<anyhow::Error>,
}

impl Drainer {
    /// A drainer of `shm`'s rings. Make it before the program starts: it
    /// takes the first calibration pair of the TSC clock.
    pub fn new(shm: Shm) -> Drainer {
        let mut clock = TscClock::new(shm.header().clock_base_ns);
        clock.calibrate(0);
        Drainer {
            shm,
            rings: Vec::new(),
            made: VecDeque::new(),
            next_seq: 0,
            last_written: 0,
            last_general: 0,
            stamping_timeout: STAMPING_TIMEOUT,
            stamping: Vec::new(),
            spool_dir: std::env::temp_dir(),
            spool_limit: 0,
            spool_read: SPOOL_READ,
            spooled: 0,
            spooling: false,
            spools_full: false,
            backings: BTreeMap::new(),
            pci_written: HashSet::new(),
            lost_seen: 0,
            kinds: Vec::new(),
            plain: [0; 2],
            last_thread: None,
            last_map: None,
            payload: Vec::new(),
            access: Event::Access(Access {
                dir: Direction::Read,
                time: Timestamp::from_nanos(0),
                map_id: 0,
                phys: 0,
                value: Value::from_u64(8, 0).expect("8 bytes is a valid width"),
                pc: 0,
                pid: 0,
                ext: Ext::default(),
            }),
            clock,
            summary: Summary::default(),
        }
    }

    /// Takes a calibration pair of the TSC clock if the last one is
    /// [`CALIBRATION_INTERVAL`] old.
    fn calibrate(&mut self) {
        self.clock.calibrate(CALIBRATION_INTERVAL.as_nanos() as u64);
    }

    /// The time of `record` in nanoseconds since the clock base: its
    /// `time_ns`, converted if it holds a TSC reading.
    #[inline]
    fn time_of(&mut self, record: &Record) -> Timestamp {
        Timestamp::from_nanos(if record.flags & RECORD_FLAG_TSC != 0 {
            if !self.clock.can_convert() {
                // A TSC stamp within the first interval (the program
                // takes longer than that to start, as a rule): a second
                // pair now, however close to the first.
                self.clock.calibrate(0);
            }
            self.clock.to_ns(record.time_ns)
        } else {
            record.time_ns
        })
    }

    /// Lets the recorder set records aside, up to `limit` bytes, while it
    /// is behind the program ([`Drainer::spool`]; `record --spool`).
    pub fn set_spool_limit(&mut self, limit: u64) {
        self.spool_limit = limit;
    }

    /// What was recorded so far.
    pub fn summary(&mut self) -> &mut Summary {
        for (kind, count) in self.kinds.iter_mut() {
            *self.summary.by_kind.entry(*kind).or_default() += std::mem::take(count);
        }
        for (kind, count) in ["R", "W"].into_iter().zip(&mut self.plain) {
            if *count > 0 {
                *self.summary.by_kind.entry(kind).or_default() += std::mem::take(count);
            }
        }
        &mut self.summary
    }

    fn count_kind(&mut self, kind: &'static str) {
        // The names are literals: the same pointer, nearly always.
        match self
            .kinds
            .iter_mut()
            .find(|(known, _)| std::ptr::eq(*known, kind) || *known == kind)
        {
            Some((_, count)) => *count += 1,
            None => self.kinds.push((kind, 1)),
        }
    }

    /// Takes published records out of the rings: all of them into their
    /// spools (as far as their limit allows), or without a spool, up to
    /// [`POLL_BATCH`] of each ring into its queue. Returns how many it
    /// took (entries, or records).
    pub fn poll(&mut self) -> usize {
        let taken = if self.spool_limit > 0 {
            self.spool(0)
        } else {
            self.grow_rings();
            let mut taken = 0;
            for (slot, queue) in self.rings.iter_mut().enumerate() {
                queue.compact();
                taken += self.shm.pop_batch(slot, POLL_BATCH, &mut queue.records);
                if let Some(popped) = queue.records.last() {
                    queue.last = queue.last.max(popped.record.time_ns);
                }
            }
            taken
        };
        self.note_lost();
        taken
    }

    /// Moves the published entries of every ring that holds more than
    /// `over` of them into the ring's spool, as they are: a copy into a
    /// file (the page cache), where writing them as events takes some
    /// 20 ns each, and where doing so while the program runs slows it too.
    /// Returns the entries moved. Once a spool cannot be written, none
    /// are (the summary says why), and the rings are drained as events.
    fn spool(&mut self, over: u64) -> usize {
        self.grow_rings();
        let mut taken = 0;
        for (slot, queue) in self.rings.iter_mut().enumerate() {
            if self.summary.spool_error.is_some() {
                break;
            }
            let pending = self.shm.pending(slot);
            if pending == 0 || pending <= over {
                continue;
            }
            let room = self.spool_limit.saturating_sub(self.spooled);
            if self.spools_full || room < pending * mmiotrace_shm::ENTRY_SIZE as u64 {
                self.spools_full = true;
                break;
            }
            if queue.spool.file.is_none() {
                match spool_file(&self.spool_dir) {
                    Ok(file) => queue.spool.file = Some(file),
                    Err(err) => {
                        self.summary.spool_error = Some(format!(
                            "cannot create a file in {}: {err}",
                            self.spool_dir.display()
                        ));
                        break;
                    }
                }
            }
            let spool = &mut queue.spool;
            let Some(file) = &spool.file else {
                break;
            };
            let fresh = !spool.active;
            if fresh {
                // Nothing of the ring is out of it: its compact records
                // take the ids the ring's consumer has now.
                spool.ids = self.shm.consumer_ids(slot);
            }
            let mut at = spool.written;
            let result =
                self.shm
                    .take_entries(slot, room / mmiotrace_shm::ENTRY_SIZE as u64, |bytes| {
                        std::os::unix::fs::FileExt::write_all_at(file, bytes, at)?;
                        at += bytes.len() as u64;
                        Ok::<(), std::io::Error>(())
                    });
            match result {
                Ok((start, entries)) => {
                    if fresh && entries > 0 {
                        spool.pos = start;
                        spool.active = true;
                    }
                    self.spooled += at - spool.written;
                    self.summary.spooled += at - spool.written;
                    spool.written = at;
                    taken += entries as usize;
                }
                Err(err) => {
                    self.summary.spool_error = Some(format!(
                        "cannot write to a file in {}: {err}",
                        self.spool_dir.display()
                    ));
                }
            }
        }
        self.summary.spooled_peak = self.summary.spooled_peak.max(self.spooled);
        taken
    }

    /// Reads the next chunk of `slot`'s spool back, once what is left of
    /// the last one holds no whole record (the start of a record cut at the
    /// chunk's end is kept). Once all is written, the ring is read in place
    /// again, its compact records taking the spool's ids.
    fn refill(&mut self, slot: usize) -> anyhow::Result<()> {
        let Some(queue) = self.rings.get_mut(slot) else {
            return Ok(());
        };
        let spool = &mut queue.spool;
        if !spool.active {
            return Ok(());
        }
        let rest = spool.rest();
        if mmiotrace_shm::record_len(rest).is_some_and(|len| len <= rest.len()) {
            return Ok(());
        }
        if spool.pending() == 0 {
            anyhow::ensure!(
                rest.is_empty(),
                "the records set aside in {} end in a cut record",
                self.spool_dir.display()
            );
            spool.chunk.clear();
            spool.at = 0;
            spool.active = false;
            self.shm.set_consumer_ids(slot, spool.ids);
            return Ok(());
        }
        let Some(file) = &spool.file else {
            return Ok(());
        };
        spool.chunk.drain(..spool.at);
        spool.at = 0;
        let kept = spool.chunk.len();
        let len = (spool.pending() as usize).min(self.spool_read);
        spool.chunk.resize(kept + len, 0);
        std::os::unix::fs::FileExt::read_exact_at(file, &mut spool.chunk[kept..], spool.read)
            .with_context(|| {
                format!(
                    "cannot read back the records set aside in {}",
                    self.spool_dir.display()
                )
            })?;
        spool.read += len as u64;
        self.spooled -= len as u64;
        if spool.pending() == 0 {
            // All read: the file is reused from its start.
            spool.read = 0;
            spool.written = 0;
        }
        Ok(())
    }

    /// Writes the records of `slot`'s spool, decoded where they lie in its
    /// chunk, up to time `until` and at most `max` of them; returns how
    /// many it wrote.
    fn write_spooled(
        &mut self,
        slot: usize,
        until: u64,
        max: usize,
        write: &mut impl FnMut(&Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<usize> {
        let mut written = 0;
        loop {
            // A whole record in the chunk, or all written and the ring's
            // ids given back.
            self.refill(slot)?;
            let queue = &mut self.rings[slot];
            if !queue.spool.active {
                return Ok(written);
            }
            let spool = &mut queue.spool;
            let chunk = std::mem::take(&mut spool.chunk);
            let (mut at, mut pos, mut ids, mut last) = (spool.at, spool.pos, spool.ids, queue.last);
            // Whether to stop here (due, or enough), not for more bytes.
            let mut done = false;
            let mut result = Ok(());
            while let Some(rest) = chunk.get(at..)
                && let Some(time) = mmiotrace_shm::entry_time(rest)
            {
                if time > until || written >= max {
                    done = true;
                    break;
                }
                let Some((record, payload, len)) = mmiotrace_shm::decode_entry(rest, pos, &mut ids)
                else {
                    // Cut at the chunk's end: refill reads the rest.
                    break;
                };
                at += len;
                pos += (len / mmiotrace_shm::ENTRY_SIZE) as u64;
                last = last.max(time);
                written += 1;
                if let Err(err) = self.convert(&record, payload, write) {
                    result = Err(err);
                    break;
                }
            }
            let queue = &mut self.rings[slot];
            queue.spool.chunk = chunk;
            (queue.spool.at, queue.spool.pos, queue.spool.ids, queue.last) = (at, pos, ids, last);
            result?;
            if done {
                return Ok(written);
            }
        }
    }

    /// Turns events dropped since the last call (`--drop`) into a lost-event
    /// record, and takes the count of waits on a full ring.
    fn note_lost(&mut self) {
        let lost = self.shm.lost();
        if lost > self.lost_seen {
            let count = lost - self.lost_seen;
            self.lost_seen = lost;
            self.summary.lost += count;
            self.made.push_back((
                self.shm.now_stamp(),
                Event::Lost(Lost {
                    count,
                    ext: Ext::default(),
                }),
            ));
        }
        self.summary.ring_full_waits = self.shm.full_waits();
    }

    /// Adds a marker that came from outside the program (the mark FIFO).
    pub fn add_mark(&mut self, text: String) {
        let text = if text.len() > MAX_MARK_LEN {
            mark_text(text.as_bytes())
        } else {
            text
        };
        let stamp = self.shm.now_stamp();
        let time = Timestamp::from_nanos(
            mmiotrace_shm::now_ns().saturating_sub(self.shm.header().clock_base_ns),
        );
        self.made.push_back((
            stamp,
            Event::Mark(Mark {
                time,
                text,
                ext: Ext::default(),
            }),
        ));
    }

    /// What the recorder's loop calls while the program runs: writes the
    /// events that are due (at most [`PUMP_LIMIT`]), reading records in
    /// place in the rings. Records held back by a ring whose producer is
    /// stamping are taken out of the rings into their queues, so that no
    /// producer waits meanwhile.
    pub fn pump(
        &mut self,
        mut write: impl FnMut(&Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<Pumped> {
        self.calibrate();
        self.note_lost();
        let mut pumped = Pumped::default();
        let ring = self.shm.ring_entries() as u64;
        if self.spooling {
            // Behind: everything goes to the spools until the program
            // logs less than a 64th of a ring between two pumps (some
            // 20 M events/s: the recorder's loop pumps every 50 µs or so
            // meanwhile).
            pumped.taken = self.spool(0);
            pumped.held = true;
            if (pumped.taken as u64) < ring / 64
                || self.spools_full
                || self.summary.spool_error.is_some()
            {
                self.spooling = false;
            }
            return Ok(pumped);
        }
        if self.spools_full
            && self.spooled == 0
            && (0..self.rings.len()).all(|slot| self.shm.pending(slot) == 0)
        {
            self.spools_full = false;
        }
        let mut written = 0;
        loop {
            // A ring that filled an eighth since the last look: the program
            // logs faster than the recorder writes.
            let spooled = self.spool(ring / 8);
            if spooled > 0 {
                pumped.taken += spooled;
                pumped.held = true;
                self.spooling = true;
                break;
            }
            let round = if self.spool_limit > 0 {
                PUMP_ROUND
            } else {
                PUMP_LIMIT
            };
            let merged = self.merge(false, round, &mut write)?;
            pumped.taken += merged.from_rings;
            pumped.held = merged.held;
            written += merged.written;
            // A producer is stamping for nanoseconds, as a rule: only one
            // that stays at it (preempted there) is worth taking records
            // out of the rings for.
            if merged.held_by_stamping
                && self.rings.iter().any(|queue| {
                    queue
                        .stamping
                        .is_some_and(|(since, _)| since.elapsed() >= STAMPING_PATIENCE)
                })
            {
                pumped.taken += self.poll();
            }
            if merged.written < round || written >= PUMP_LIMIT {
                break;
            }
        }
        Ok(pumped)
    }

    /// Passes every event that is due to `write`, in time order. With
    /// `finished`, the program is gone: everything published is due.
    pub fn emit(
        &mut self,
        finished: bool,
        mut write: impl FnMut(&Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.calibrate();
        self.merge(finished, usize::MAX, &mut write)?;
        if finished {
            // Nothing the recorder took from the rings may stay unwritten:
            // say so rather than end a trace short without a word.
            let queued: usize = self
                .rings
                .iter()
                .map(|queue| queue.records.len() - queue.head)
                .sum();
            let spooled = self.rings.iter().filter(|queue| queue.spool.active).count();
            anyhow::ensure!(
                queued == 0 && spooled == 0,
                "internal error: {queued} records taken from the rings, and the records set aside for {spooled} rings, were not written; the trace is incomplete"
            );
        }
        Ok(())
    }

    /// How far each source may write now: the clock read first, then
    /// every ring's publication (see the module's comment).
    fn bounds(&mut self) -> Bounds {
        let now = self.shm.now_stamp();
        self.grow_rings();
        let general = now.saturating_sub(MERGE_SLACK);
        self.last_general = general;
        let mut bounds = Bounds {
            general,
            stamping: std::mem::take(&mut self.stamping),
        };
        bounds.stamping.clear();
        for (slot, queue) in self.rings.iter_mut().enumerate() {
            let (stamping, write_pos) = self.shm.publication(slot);
            let waited_for = stamping
                && match queue.stamping {
                    Some((since, at)) if at == write_pos => {
                        let waiting = since.elapsed() < self.stamping_timeout;
                        if !waiting && !queue.given_up {
                            queue.given_up = true;
                            self.summary.stalled += 1;
                        }
                        waiting
                    }
                    _ => {
                        queue.stamping = Some((Instant::now(), write_pos));
                        queue.given_up = false;
                        true
                    }
                };
            if !stamping {
                queue.stamping = None;
                queue.given_up = false;
            }
            if waited_for {
                queue.floor = queue.floor.max(queue.last);
                bounds.stamping.push(slot);
            } else {
                queue.floor = general;
            }
        }
        bounds
    }

    /// A queue for every ring a producer has used so far. A ring that
    /// appears now was not there at the last merge's reading of the clock:
    /// its producer stamps no record earlier than that reading allowed.
    fn grow_rings(&mut self) {
        let slots = self.shm.slots_used();
        if self.rings.len() < slots {
            let floor = self.last_general;
            self.rings.resize_with(slots, || RingQueue {
                floor,
                ..RingQueue::default()
            });
        }
    }

    /// Counts an event about to be written at `time`, and gives it its
    /// sequence number.
    fn number(&mut self, time: u64) -> u64 {
        if time < self.last_written {
            self.summary.late += 1;
        } else {
            self.last_written = time;
        }
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Writes due events, at most `limit`, from the queues, the rings
    /// (read in place) and the recorder's own events, in time order.
    fn merge(
        &mut self,
        finished: bool,
        limit: usize,
        write: &mut impl FnMut(&Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<Merged> {
        let shm = self.shm;
        let bounds = if finished {
            // Everything published is due, and no ring is waited for: the
            // rings found stamping at the last look (which, while the
            // recorder was behind and only spooled, may be long past) must
            // not hold anything back now. They did: the spooled soak lost
            // every record after such a ring's last one, written nowhere
            // and counted nowhere.
            self.grow_rings();
            let mut stamping = std::mem::take(&mut self.stamping);
            stamping.clear();
            Bounds {
                general: u64::MAX,
                stamping,
            }
        } else {
            self.bounds()
        };
        let mut merged = Merged::default();
        let mut written = 0;
        let mut payload = std::mem::take(&mut self.payload);
        let result = 'merge: loop {
            if written >= limit {
                break Ok(());
            }
            for slot in 0..self.rings.len() {
                if let Err(err) = self.refill(slot) {
                    break 'merge Err(err);
                }
            }
            // The source with the earliest first record, and the earliest
            // first record of all the others: the source writes up to that,
            // and up to its bound.
            let mut lowest: Option<(u64, Source)> = None;
            let mut others = u64::MAX;
            let firsts = self
                .rings
                .iter()
                .enumerate()
                .filter_map(|(slot, queue)| {
                    let first = queue
                        .first_time()
                        .or_else(|| shm.peek(slot).map(|record| record.time_ns))?;
                    Some((first, Source::Ring(slot)))
                })
                .chain(self.made.front().map(|(time, _)| (*time, Source::Made)));
            for (time, source) in firsts {
                match lowest {
                    Some((low, _)) if low <= time => others = others.min(time),
                    _ => {
                        if let Some((low, _)) = lowest {
                            others = others.min(low);
                        }
                        lowest = Some((time, source));
                    }
                }
            }
            let Some((first, source)) = lowest else {
                break Ok(());
            };
            let (bound, by_stamping) = bounds.of(source, &self.rings);
            if first > bound {
                merged.held = true;
                merged.held_by_stamping = by_stamping;
                break Ok(());
            }
            let until = others.min(bound);
            match source {
                Source::Made => {
                    while let Some(&(time, _)) = self.made.front()
                        && time <= until
                        && written < limit
                    {
                        let Some((_, mut event)) = self.made.pop_front() else {
                            break;
                        };
                        let seq = self.number(time);
                        if let Some(ext) = event.ext_mut() {
                            ext.seq = Some(seq);
                        }
                        self.count_kind(event.kind_name());
                        written += 1;
                        if let Err(err) = write(&event) {
                            merged.failed = Some(err);
                            break;
                        }
                    }
                }
                Source::Ring(slot)
                    if self.rings[slot].head == self.rings[slot].records.len()
                        && self.rings[slot].spool.active =>
                {
                    match self.write_spooled(slot, until, limit - written, write) {
                        Ok(count) => written += count,
                        Err(err) => merged.failed = Some(err),
                    }
                }
                Source::Ring(slot) if self.rings[slot].first_time().is_some() => {
                    while let Some(time) = self.rings[slot].first_time()
                        && time <= until
                        && written < limit
                    {
                        let Some(popped) = self.rings[slot].take_first() else {
                            break;
                        };
                        written += 1;
                        if let Err(err) = self.convert(&popped.record, &popped.payload, write) {
                            merged.failed = Some(err);
                            break;
                        }
                        if let Err(err) = self.refill(slot) {
                            merged.failed = Some(err);
                            break;
                        }
                    }
                }
                Source::Ring(slot) => {
                    let mut last = self.rings[slot].last;
                    let taken =
                        shm.consume(slot, limit - written, &mut payload, |record, payload| {
                            if record.time_ns > until {
                                return false;
                            }
                            last = record.time_ns;
                            if let Err(err) = self.convert(record, payload, write) {
                                // Nothing is drained after a failure.
                                merged.failed = Some(err);
                                return false;
                            }
                            true
                        });
                    self.rings[slot].last = last;
                    written += taken;
                    merged.from_rings += taken;
                }
            }
            if merged.failed.is_some() {
                break Ok(());
            }
        };
        self.payload = payload;
        self.stamping = bounds.stamping;
        merged.written = written;
        if let Some(err) = merged.failed.take() {
            return Err(err);
        }
        result.map(|()| merged)
    }

    fn phys(&mut self, record: &Record) -> u64 {
        if let Some((map_id, phys)) = self.last_map
            && map_id == record.map_id
        {
            return phys.wrapping_add(record.offset);
        }
        match self.summary.maps.get(&record.map_id) {
            Some(map) => {
                self.last_map = Some((record.map_id, map.phys));
                map.phys.wrapping_add(record.offset)
            }
            None => {
                self.summary.orphans += 1;
                record.offset
            }
        }
    }

    /// Writes the event of `record`: most records are plain accesses,
    /// written from the reused event, its fields set in place (an `Event`
    /// is some 150 bytes, and building one, or a 65-byte value, and moving
    /// it per access showed up: a store-forwarding stall on the value's
    /// copy); the rest go to [`Drainer::convert_other`], out of line, so
    /// that this stays small enough to be inlined into the ring's loop.
    #[inline]
    fn convert(
        &mut self,
        record: &Record,
        payload: &[u8],
        write: &mut impl FnMut(&Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if !matches!(record.kind, kind::READ | kind::WRITE)
            || record.flags & RECORD_FLAG_HOOKED != 0
        {
            return self.convert_other(record, payload, write);
        }
        // A TSC reading becomes nanoseconds here; the flag stays behind
        // with the record (an event has no record flags).
        let time = self.time_of(record);
        let phys = self.phys(record);
        let Event::Access(access) = &mut self.access else {
            return self.convert_other(record, payload, write);
        };
        let set = if record.width <= 8 {
            access.value.set_u64(record.width, record.value)
        } else {
            // A vector access: its value whole in the payload.
            payload
                .get(..usize::from(record.width))
                .is_some_and(|bytes| access.value.set_le_bytes(bytes))
        };
        if !set {
            return self.convert_other(record, payload, write);
        }
        let write_access = record.kind == kind::WRITE;
        access.dir = if write_access {
            Direction::Write
        } else {
            Direction::Read
        };
        access.time = time;
        access.map_id = record.map_id;
        access.phys = phys;
        access.pc = record.pc;
        access.pid = record.tid;
        access.ext = Ext {
            seq: Some(self.next_seq),
            process: Some(record.pid),
            hook: None,
        };
        self.plain[usize::from(write_access)] += 1;
        if self.last_thread != Some((record.tid, record.pid)) {
            self.note_thread(record);
        }
        self.number(record.time_ns);
        write(&self.access)
    }

    #[cold]
    fn note_thread(&mut self, record: &Record) {
        self.summary.threads.insert(record.tid);
        self.summary.processes.insert(record.pid);
        self.last_thread = Some((record.tid, record.pid));
    }

    /// [`Drainer::convert`] of every record but a plain access.
    #[inline(never)]
    fn convert_other(
        &mut self,
        record: &Record,
        payload: &[u8],
        write: &mut impl FnMut(&Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let time = self.time_of(record);
        let ext = Ext {
            seq: Some(self.next_seq),
            process: Some(record.pid),
            hook: None,
        };
        if self.last_thread != Some((record.tid, record.pid)) {
            self.note_thread(record);
        }
        let event = match record.kind {
            kind::READ | kind::WRITE => {
                let value = if record.width as usize <= 8 {
                    Value::from_u64(record.width, record.value)
                } else {
                    payload
                        .get(..record.width as usize)
                        .and_then(Value::from_le_bytes)
                };
                let Some(value) = value else {
                    anyhow::bail!(
                        "runtime sent an access of impossible width {} (ring position {})",
                        record.width,
                        record.seq
                    );
                };
                let mut ext = ext;
                if record.flags & RECORD_FLAG_HOOKED != 0 {
                    let mut rule = [0u8; 4];
                    if let Some(bytes) = payload.get(..4) {
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
                    phys: self.phys(record),
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
                    phys: self.phys(record),
                    opcode: [bytes[0], bytes[1], bytes[2]],
                    pc: record.pc,
                    pid: record.tid,
                    ext,
                })
            }
            kind::MAP => {
                let path = String::from_utf8_lossy(payload_text(payload)).into_owned();
                let backing = devices::classify(&path);
                if let Some(device_dir) = backing.pci_device_dir()
                    && let Ok(device_dir) = std::fs::canonicalize(&device_dir)
                    && self.pci_written.insert(device_dir.clone())
                    && let Some(dev) = devices::pci_device(&device_dir)
                {
                    self.count_kind("PCIDEV");
                    write(&Event::PciDev(dev))?;
                }
                let phys = devices::phys_address(&backing, record.offset);
                self.backings.insert(record.map_id, backing);
                self.last_map = None;
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
            kind::MARK => {
                let text = mark_text(payload_text(payload));
                // A patched site's report is for the summary: it says
                // nothing about the device, and would differ between two
                // traces of the same run (patching on or off).
                if let Some(site) = super::patch_sites::parse(record.pid, &text) {
                    self.summary.patch_sites.push(site);
                    return Ok(());
                }
                Event::Mark(Mark { time, text, ext })
            }
            other => anyhow::bail!(
                "runtime sent a record of unknown kind {other} (ring position {}); are the runtime and recorder from the same build?",
                record.seq
            ),
        };
        self.count_kind(event.kind_name());
        self.number(record.time_ns);
        write(&event)
    }
}

/// A new spool file in `dir`, unlinked: nothing is left behind however
/// the recorder ends.
fn spool_file(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).mode(0o600);
    match options
        .clone()
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
    {
        Ok(file) => Ok(file),
        // A file system without O_TMPFILE: a new name, removed at once.
        Err(err) if matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
            let path = dir.join(format!(
                "mmiotrace-spool-{}-{}",
                std::process::id(),
                mmiotrace_shm::now_ns()
            ));
            let file = options.create_new(true).open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(file)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmiotrace_shm::Config;

    /// A fresh shared-memory layout in anonymous memory, leaked: the
    /// `Shm` must stay mapped for the rest of the test process.
    fn shm(slots: u32) -> Shm {
        let config = Config {
            slot_count: slots,
            ring_entries: 512,
            drop_when_full: false,
        };
        let len = config.total_size();
        let mut mapping = memmap2::MmapMut::map_anon(len).expect("anonymous mapping");
        let base = mapping.as_mut_ptr();
        std::mem::forget(mapping);
        // SAFETY: `base` maps `len` zeroed, page-aligned bytes that are
        // never unmapped (forgotten above) and nothing else uses.
        unsafe { Shm::init(base, len, &config, b"") }.expect("init")
    }

    fn write(value: u64) -> Record {
        Record {
            kind: kind::WRITE,
            width: 4,
            value,
            ..Record::default()
        }
    }

    /// The values of the accesses written, with their sequence numbers.
    fn drained(drainer: &mut Drainer, finished: bool) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut collect = |event: &Event| {
            if let Event::Access(access) = event {
                out.push((access.ext.seq.expect("seq"), access.value.low_u64()));
            }
            Ok(())
        };
        drainer.pump(&mut collect).expect("pump");
        drainer.emit(finished, &mut collect).expect("emit");
        out
    }

    /// Waits until every record pushed so far is due (older than the
    /// merge's slack on the records' clock).
    pub(super) fn let_due(shm: &Shm) {
        let pushed = shm.now_stamp();
        while shm.now_stamp() < pushed + MERGE_SLACK + 1 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Sets or clears `slot`'s stamping flag, as a producer does around
    /// its reading of the time.
    fn set_stamping(shm: &Shm, slot: usize, on: bool) {
        let layout = shm.raw_layout(slot);
        let flag = (layout.slot_header + mmiotrace_shm::RawLayout::STAMPING as u64)
            as *const std::sync::atomic::AtomicU64;
        // SAFETY: the flag is an aligned AtomicU64 in the slot header,
        // mapped for the rest of the test process (`shm`).
        unsafe { &*flag }.store(u64::from(on), std::sync::atomic::Ordering::Release);
    }

    #[test]
    fn interleaved_rings_are_merged_in_time_order() {
        let shm = shm(4);
        let slots: Vec<usize> = (1..=3)
            .map(|tid| shm.claim_slot(tid).expect("slot"))
            .collect();
        // Runs of different lengths from each ring, so that the merge
        // switches rings after one record and after several.
        let mut value = 0;
        for round in 0..40 {
            for (i, &slot) in slots.iter().enumerate() {
                for _ in 0..(round + i) % 4 {
                    shm.push(slot, write(value), &[]);
                    value += 1;
                }
            }
        }
        let mut drainer = Drainer::new(shm);
        let_due(&shm);
        let events = drained(&mut drainer, false);
        assert_eq!(events.len() as u64, value);
        for (i, (seq, value)) in events.iter().enumerate() {
            assert_eq!((*seq, *value), (i as u64, i as u64));
        }
        let summary = drainer.summary();
        assert_eq!(summary.by_kind.get("W"), Some(&value));
        assert_eq!(summary.threads.len(), 1, "every record says tid 0");
        assert_eq!((summary.stalled, summary.late), (0, 0));
    }

    #[test]
    fn the_newest_records_wait_until_the_clock_has_passed_them() {
        let shm = shm(1);
        let slot = shm.claim_slot(1).expect("slot");
        let mut drainer = Drainer::new(shm);
        shm.push(slot, write(0), &[]);
        let mut first = None;
        let mut pumped = drainer
            .pump(|event| {
                first = Some(event.kind_name());
                Ok(())
            })
            .expect("pump");
        // On a machine that stalls the test for the slack, it is due.
        if first.is_none() {
            assert_eq!((pumped.taken, pumped.held), (0, true));
            let_due(&shm);
            pumped = drainer.pump(|_| Ok(())).expect("pump");
        }
        assert_eq!((pumped.taken, pumped.held), (1, false));
    }

    #[test]
    fn a_stamping_ring_holds_back_later_records_without_leaving_them_in_the_ring() {
        let shm = shm(2);
        let (a, b) = (
            shm.claim_slot(1).expect("slot"),
            shm.claim_slot(2).expect("slot"),
        );
        shm.push(a, write(0), &[]);
        // Ring a's producer reads the time for its next record and has
        // not published it yet.
        set_stamping(&shm, a, true);
        let stamped = Record {
            time_ns: shm.now_stamp(),
            flags: if shm.tsc_time() { RECORD_FLAG_TSC } else { 0 },
            ..write(1)
        };
        for value in 2..200 {
            shm.push(b, write(value), &[]);
        }
        let mut drainer = Drainer::new(shm);
        let_due(&shm);
        assert_eq!(drained(&mut drainer, false), [(0, 0)]);
        // Once the producer has been stamping for a while, what it holds
        // back leaves the rings: their producers can go on.
        std::thread::sleep(STAMPING_PATIENCE);
        assert!(drained(&mut drainer, false).is_empty(), "held back");
        assert_eq!(shm.pending(b), 0);
        for value in 200..210 {
            shm.push(b, write(value), &[]);
        }
        let_due(&shm);
        assert!(drained(&mut drainer, false).is_empty(), "still held back");
        // Published: it goes first, everything else follows in order.
        shm.push(a, stamped, &[]);
        set_stamping(&shm, a, false);
        let_due(&shm);
        let rest = drained(&mut drainer, false);
        let expected: Vec<(u64, u64)> = (1..210).map(|v| (v, v)).collect();
        assert_eq!(rest, expected);
        let summary = drainer.summary();
        assert_eq!((summary.stalled, summary.late), (0, 0));
    }

    #[test]
    fn a_ring_that_stays_stamping_is_given_up_and_its_record_written_late() {
        let shm = shm(2);
        let (a, b) = (
            shm.claim_slot(1).expect("slot"),
            shm.claim_slot(2).expect("slot"),
        );
        set_stamping(&shm, a, true);
        let stamped = Record {
            time_ns: shm.now_stamp(),
            flags: if shm.tsc_time() { RECORD_FLAG_TSC } else { 0 },
            ..write(0)
        };
        shm.push(b, write(1), &[]);
        let mut drainer = Drainer::new(shm);
        drainer.stamping_timeout = Duration::from_millis(20);
        let_due(&shm);
        assert!(drained(&mut drainer, false).is_empty(), "held back");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(drained(&mut drainer, false), [(0, 1)]);
        // The producer was only slow: its record still comes, late.
        shm.push(a, stamped, &[]);
        set_stamping(&shm, a, false);
        let_due(&shm);
        assert_eq!(drained(&mut drainer, false), [(1, 0)]);
        let summary = drainer.summary();
        assert_eq!((summary.stalled, summary.late), (1, 1));
    }

    #[test]
    fn a_ring_the_recorder_is_behind_is_spooled_and_written_in_order_after() {
        let shm = shm(1);
        if !shm.tsc_time() {
            eprintln!("skipped: compact records need a usable TSC");
            return;
        }
        let slot = shm.claim_slot(1).expect("slot");
        let owner = Record {
            tid: 77,
            pid: 70,
            ..write(0)
        };
        let compact = |value: u64| {
            let head = mmiotrace_shm::compact::head(true, 4, 0, 0x40_1000);
            let key = mmiotrace_shm::compact::key(1, 4 * value).expect("fits");
            assert_eq!(
                shm.push_compact(slot, head, key, &(value as u32).to_le_bytes()),
                mmiotrace_shm::PushResult::Pushed
            );
        };
        shm.push(slot, owner, &[]);
        // 300 entries: more than an eighth of the 512-entry ring.
        for value in 1..=300 {
            compact(value);
        }
        let mut drainer = Drainer::new(shm);
        drainer.set_spool_limit(SPOOL_LIMIT);
        let_due(&shm);
        let mut ids = Vec::new();
        let mut values = Vec::new();
        let mut collect = |event: &Event| {
            if let Event::Access(access) = event {
                values.push((access.ext.seq.expect("seq"), access.value.low_u64()));
                ids.push((access.pid, access.ext.process));
            }
            Ok(())
        };
        let pumped = drainer.pump(&mut collect).expect("pump");
        assert_eq!((pumped.taken, pumped.held), (302, true));
        assert_eq!(shm.pending(slot), 0, "the ring was emptied");
        assert_eq!(drainer.summary().spooled, 302 * 32);
        // Still behind while the program logs: into the spool.
        for value in 301..=320 {
            compact(value);
        }
        drainer.pump(&mut collect).expect("pump");
        assert_eq!(shm.pending(slot), 0);
        assert_eq!(drainer.next_seq, 0, "nothing written while spooling");
        // The program slowed down: the spool is written, and the ring is
        // read in place again, its compact records still taking the
        // owner's ids.
        drainer.pump(&mut collect).expect("pump");
        for value in 321..=330 {
            compact(value);
        }
        let_due(&shm);
        drainer.pump(&mut collect).expect("pump");
        drainer.emit(true, &mut collect).expect("emit");
        let expected: Vec<(u64, u64)> = (0..=330).map(|v| (v, v)).collect();
        assert_eq!(values, expected);
        assert!(ids.iter().all(|&id| id == (77, Some(70))), "{ids:?}");
        assert_eq!(drainer.spooled, 0);
        assert_eq!(drainer.summary().spool_error, None);
    }

    /// The end of a recording whose recorder was behind until the program
    /// ended: a ring found stamping at the last merge (long before, while
    /// the recorder only spooled) holds nothing back, and every record set
    /// aside is written. Before, the finished merge kept that stale
    /// stamping ring's floor and silently wrote nothing after it.
    #[test]
    fn a_ring_seen_stamping_before_the_spooling_holds_nothing_back_at_the_end() {
        let shm = shm(2);
        let (a, b) = (
            shm.claim_slot(1).expect("slot"),
            shm.claim_slot(2).expect("slot"),
        );
        let mut drainer = Drainer::new(shm);
        drainer.set_spool_limit(SPOOL_LIMIT);
        shm.push(a, write(1), &[]);
        shm.push(b, write(2), &[]);
        let_due(&shm);
        set_stamping(&shm, a, true);
        let mut values = Vec::new();
        let mut collect = |event: &Event| {
            if let Event::Access(access) = event {
                values.push(access.value.low_u64());
            }
            Ok(())
        };
        // Ring a is stamping: b's record, later than a's, waits for it.
        drainer.pump(&mut collect).expect("pump");
        set_stamping(&shm, a, false);
        // Ring b fills faster than the recorder looks: spooled, and the
        // recorder only spools (no merge, no new look at the stamping).
        for value in 3..200 {
            shm.push(b, write(value), &[]);
        }
        let pumped = drainer.pump(&mut collect).expect("pump");
        assert!(pumped.held && drainer.spooling, "spooling");
        assert_eq!(shm.pending(b), 0);
        // The program ended.
        while drainer.poll() > 0 {}
        drainer.emit(true, &mut collect).expect("emit");
        let expected: Vec<u64> = (1..200).collect();
        assert_eq!(values, expected);
    }

    /// Records read back from a spool a few entries at a time: full
    /// records and marks cut at a chunk's end are completed from the next,
    /// and compact records take the ids of the full record before them.
    #[test]
    fn spooled_records_cut_at_a_chunks_end_are_read_whole() {
        let shm = shm(1);
        if !shm.tsc_time() {
            eprintln!("skipped: compact records need a usable TSC");
            return;
        }
        let slot = shm.claim_slot(1).expect("slot");
        let compact = |value: u64| {
            let head = mmiotrace_shm::compact::head(true, 4, 0, 0x40_1000);
            let key = mmiotrace_shm::compact::key(1, 4 * value).expect("fits");
            shm.push_compact(slot, head, key, &(value as u32).to_le_bytes());
        };
        // Per round: a full record (2 entries) of a thread, 3 compact
        // records, and every 4th round a mark (2 entries and a payload of
        // 2): with 3-entry chunks, records start at every offset in one.
        let mut expected = Vec::new();
        for round in 0..40u64 {
            let tid = 100 + round as u32 % 3;
            shm.push(
                slot,
                Record {
                    tid,
                    pid: 7,
                    ..write(round * 10)
                },
                &[],
            );
            expected.push((round * 10, tid));
            for i in 1..=3 {
                compact(round * 10 + i);
                expected.push((round * 10 + i, tid));
            }
            if round % 4 == 0 {
                let text = [b'm'; 40];
                shm.push(
                    slot,
                    Record {
                        kind: kind::MARK,
                        tid,
                        pid: 7,
                        ..Record::default()
                    },
                    &text,
                );
            }
        }
        let mut drainer = Drainer::new(shm);
        drainer.set_spool_limit(SPOOL_LIMIT);
        drainer.spool_read = 3 * mmiotrace_shm::ENTRY_SIZE;
        let_due(&shm);
        assert!(drainer.poll() > 0, "spooled");
        assert_eq!(shm.pending(slot), 0);
        let mut got = Vec::new();
        let mut marks = 0;
        drainer
            .emit(true, |event| {
                match event {
                    Event::Access(access) => got.push((access.value.low_u64(), access.pid)),
                    Event::Mark(mark) => {
                        assert_eq!(mark.text, "m".repeat(40));
                        marks += 1;
                    }
                    _ => {}
                }
                Ok(())
            })
            .expect("emit");
        assert_eq!(got, expected);
        assert_eq!(marks, 10);
        assert_eq!(drainer.spooled, 0);
        // All written: the ring is read in place again, with the ids of
        // its last full record.
        compact(1000);
        let mut after = Vec::new();
        drainer
            .emit(true, |event| {
                if let Event::Access(access) = event {
                    after.push((access.value.low_u64(), access.pid));
                }
                Ok(())
            })
            .expect("emit");
        let last_tid = expected.last().map(|&(_, tid)| tid);
        assert_eq!(after.first().map(|&(_, tid)| tid), last_tid);
        assert_eq!(after.len(), 1);
    }

    #[test]
    fn recorder_marks_take_their_place_among_the_rings_records() {
        let shm = shm(1);
        let slot = shm.claim_slot(1).expect("slot");
        let mut drainer = Drainer::new(shm);
        shm.push(slot, write(0), &[]);
        drainer.add_mark("between".to_owned());
        shm.push(slot, write(2), &[]);
        let_due(&shm);
        let mut kinds = Vec::new();
        drainer
            .pump(|event| {
                kinds.push((event.kind_name(), event_seq(event)));
                Ok(())
            })
            .expect("pump");
        assert_eq!(kinds, [("W", Some(0)), ("MARK", Some(1)), ("W", Some(2))]);
    }

    /// A record the runtime's fast path stamped with the raw TSC ends up
    /// in the trace in nanoseconds, like the plain record pushed right
    /// after it; one pushed after a pause is that much later.
    #[test]
    fn tsc_stamps_become_nanoseconds_in_the_trace() {
        use mmiotrace_shm::{RECORD_FLAG_TSC, read_tsc, tsc_is_usable};
        use mmiotrace_trace::{BinaryWriter, ReadOptions, TraceReader};

        if !tsc_is_usable() {
            eprintln!("skipped: this machine's TSC is not usable");
            return;
        }
        let shm = shm(1);
        let slot = shm.claim_slot(1).expect("slot");
        let mut drainer = Drainer::new(shm);
        let tsc_stamped = |value| Record {
            flags: RECORD_FLAG_TSC,
            time_ns: read_tsc(),
            ..write(value)
        };
        shm.push(slot, tsc_stamped(0), &[]);
        shm.push(slot, write(1), &[]);
        let pause = Duration::from_millis(20);
        std::thread::sleep(pause);
        shm.push(slot, tsc_stamped(2), &[]);
        shm.push(slot, write(3), &[]);
        let mut writer = BinaryWriter::new(Vec::new()).expect("a Vec");
        let mut write_event = |event: &Event| Ok(writer.write_event(event)?);
        drainer.pump(&mut write_event).expect("pump");
        drainer.emit(true, &mut write_event).expect("emit");
        let trace = writer.finish().expect("a Vec");

        let mut reader = TraceReader::new(&trace[..], ReadOptions::default()).expect("a trace");
        let mut times = Vec::new();
        while let Some(event) = reader.read_ref().expect("a valid trace") {
            if let Event::Access(access) = event {
                assert_eq!(access.ext.hook, None, "{access:?}");
                times.push(access.time.nanos);
            }
        }
        let [stamped, plain, stamped_later, plain_later] = times[..] else {
            panic!("four accesses expected: {times:?}");
        };
        let close = 2_000_000;
        assert!(stamped <= plain && plain - stamped < close, "{times:?}");
        assert!(
            stamped_later <= plain_later && plain_later - stamped_later < close,
            "{times:?}"
        );
        let apart = stamped_later - stamped;
        assert!(
            apart >= pause.as_nanos() as u64 && apart < pause.as_nanos() as u64 + close,
            "{times:?}"
        );
    }

    fn event_seq(event: &Event) -> Option<u64> {
        match event {
            Event::Access(access) => access.ext.seq,
            Event::Mark(mark) => mark.ext.seq,
            _ => None,
        }
    }
}

#[cfg(test)]
mod throughput {
    //! `cargo test --release -p mmiotrace --bin mmiotrace throughput --
    //! --ignored --nocapture`: the drain's own CPU per event on one core,
    //! its ring in the cache (no producer on another core), into a sink:
    //! records as the fault path logs them, and compact ones as patched
    //! sites do, and those set aside in a spool first (`record --spool`:
    //! the copy into the spool file and the writing after, together).
    use super::tests::let_due;
    use super::*;
    use mmiotrace_shm::Config;
    use mmiotrace_trace::{BinaryWriter, EventWrite, TextWriter};

    fn run(binary: bool, compact: bool, spooled: bool) -> f64 {
        let config = Config {
            slot_count: 1,
            ring_entries: 1 << 14,
            drop_when_full: false,
        };
        let len = config.total_size();
        let mut mapping = memmap2::MmapMut::map_anon(len).expect("anonymous mapping");
        let base = mapping.as_mut_ptr();
        std::mem::forget(mapping);
        // SAFETY: as in tests::shm.
        let shm = unsafe { Shm::init(base, len, &config, b"") }.expect("init");
        let slot = shm.claim_slot(1).expect("slot");
        let mut drainer = Drainer::new(shm);
        if spooled {
            drainer.set_spool_limit(SPOOL_LIMIT);
        }
        let mut writer: Box<dyn EventWrite> = if binary {
            Box::new(BinaryWriter::new(std::io::sink()).expect("sink"))
        } else {
            Box::new(TextWriter::new(std::io::sink()))
        };
        let per_round = 1 << 13;
        let mut draining = Duration::ZERO;
        let mut events = 0u64;
        let record = |round: u64, i: u64| Record {
            kind: kind::WRITE,
            width: 4,
            map_id: 1,
            tid: 4321,
            pid: 4321,
            offset: (i % 1024) * 4,
            value: (round * per_round + i) & 0xffff_ffff,
            pc: 0x40_1000 + (i % 4) * 2,
            ..Record::default()
        };
        if compact {
            // The thread's first record, whose ids its compact ones take.
            shm.push(slot, record(0, 0), &[]);
            let_due(&shm);
            drainer.pump(|_| Ok(())).expect("pump");
        }
        for round in 0..1000u64 {
            for i in 0..per_round {
                let record = record(round, i);
                if compact {
                    let head = mmiotrace_shm::compact::head(true, 4, 0, record.pc);
                    let key = mmiotrace_shm::compact::key(1, record.offset).expect("fits");
                    let value = (record.value as u32).to_le_bytes();
                    shm.push_compact(slot, head, key, &value);
                } else {
                    shm.push(slot, record, &[]);
                }
            }
            // Every record due (older than the merge's slack).
            let pushed = shm.now_stamp();
            while shm.now_stamp() <= pushed + MERGE_SLACK {
                std::hint::spin_loop();
            }
            let start = Instant::now();
            let mut written = 0;
            let mut taken = 0;
            if spooled {
                // Behind: everything into the spool, then written.
                taken += drainer.poll();
            }
            taken += drainer
                .pump(|event| {
                    written += 1;
                    Ok(writer.write_event(event)?)
                })
                .expect("pump")
                .taken;
            draining += start.elapsed();
            // Spooled: entries into the spool (a full record takes two).
            let entries = if spooled && !compact { 2 } else { 1 };
            assert_eq!((taken, written), (entries * per_round as usize, per_round));
            events += per_round;
        }
        draining.as_secs_f64() * 1e9 / events as f64
    }

    #[test]
    #[ignore = "a measurement, not a check"]
    fn throughput() {
        // THROUGHPUT=binary or text: that format only; spooled: the
        // spooled run only.
        let only = std::env::var("THROUGHPUT").unwrap_or_default();
        for (binary, compact, spooled) in [
            (true, false, false),
            (true, false, true),
            (true, true, false),
            (true, true, true),
            (false, false, false),
            (false, true, false),
        ] {
            let format = if binary { "binary" } else { "text" };
            if !only.is_empty() && only != format && (only != "spooled" || !spooled) {
                continue;
            }
            if compact && !mmiotrace_shm::tsc_is_usable() {
                continue;
            }
            let best = (0..3)
                .map(|_| run(binary, compact, spooled))
                .fold(f64::MAX, f64::min);
            eprintln!(
                "{} {}{}: {best:.1} ns/event",
                if binary { "binary" } else { "text" },
                if compact {
                    "compact records (patched sites)"
                } else {
                    "records"
                },
                if spooled { ", spooled" } else { "" },
            );
        }
    }
}
