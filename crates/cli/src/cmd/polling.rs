//! Finds polling loops in a stream of events and folds each into one
//! `REPEAT` record (docs/FORMAT.md, "Folded polling loops").
//!
//! Shared by `collapse` (which writes the result), `stats` (which lists the
//! longest loops) and `diff` (which compares traces with their loops folded,
//! so that a loop that spun 37 times in one run and 52 in the other lines up).
//!
//! A loop is a thread repeating the same `k` accesses (same map, address,
//! direction, width, value and pc), `k` at most `max_period`, at least
//! `min_repeats` times in a row in that thread's own order; other threads'
//! events may come in between. The first repetition is kept, the rest are
//! folded. Any other kind of event (a MARK, a MAP, ...) ends every loop, so
//! that no loop spans a marker.
//!
//! Memory is bounded: accesses whose fate is still open (they may be part of
//! a repetition) wait in a queue with every event after them, so that the
//! output keeps the input's order; when the queue holds `window` events, the
//! oldest open decision is closed (the loop so far is summarised, or the
//! waiting accesses are let through).

use std::collections::{HashMap, VecDeque};

use mmiotrace_trace::{Access, Direction, Event, Ext, Repeat, Timestamp, Value};

/// Settings of the loop finder.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Longest repeated sequence of accesses looked for.
    pub max_period: usize,
    /// Fewest occurrences of the sequence (the kept one included) to fold.
    pub min_repeats: u64,
    /// Most events held back while a decision is open.
    pub window: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_period: 4,
            min_repeats: 3,
            window: 16_384,
        }
    }
}

/// Threads tracked at once; accesses of further threads are not folded.
const MAX_THREADS: usize = 4096;

/// An access with its time and sequence number left out: what must be equal
/// for two accesses to be repetitions of each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Op {
    dir: Direction,
    map_id: u32,
    phys: u64,
    value: Value,
    pc: u64,
}

impl Op {
    fn of(a: &Access) -> Op {
        Op {
            dir: a.dir,
            map_id: a.map_id,
            phys: a.phys,
            value: a.value,
            pc: a.pc,
        }
    }

    /// The same access except for the value it read or wrote.
    fn same_but_value(&self, other: &Op) -> bool {
        self.dir == other.dir
            && self.map_id == other.map_id
            && self.phys == other.phys
            && self.pc == other.pc
            && self.value.width() == other.value.width()
            && self.value != other.value
    }
}

/// Process id (when the trace has one) and thread id.
type ThreadKey = (Option<u32>, u32);

#[derive(Debug)]
enum Slot {
    /// To be written as it is.
    Ready(Event),
    /// Undecided: the access may be part of a repetition, or it is the place
    /// where a loop's summary will go.
    Held(Event, ThreadKey),
    /// Folded into a summary.
    Dropped,
}

/// A loop being folded.
#[derive(Debug)]
struct Run {
    /// One repetition.
    pattern: Vec<Op>,
    /// Index into `pattern` of the polled access (see [`Repeat`]).
    polled: usize,
    /// Queue indices of the accesses of the repetition under way.
    partial: Vec<u64>,
    /// Queue index of the last folded access, where the summary goes.
    summary_at: u64,
    count: u64,
    first_time: Timestamp,
    first_seq: Option<u64>,
    last_time: Timestamp,
}

#[derive(Debug, Default)]
struct ThreadState {
    /// The thread's last `max_period` accesses.
    history: VecDeque<Op>,
    /// `matched[k - 1]`: how many of the thread's latest accesses each equal
    /// the access `k` before it.
    matched: Vec<u64>,
    /// Queue indices of the latest accesses that may still start a loop.
    held: VecDeque<u64>,
    run: Option<Run>,
}

impl ThreadState {
    fn is_idle(&self) -> bool {
        self.run.is_none() && self.held.is_empty()
    }
}

/// The loop finder. Feed it every event with [`push`](Self::push), then call
/// [`finish`](Self::finish); it hands out the events to keep, summaries
/// included, in order.
#[derive(Debug)]
pub struct Folder {
    options: Options,
    queue: VecDeque<Slot>,
    /// Queue index of `queue[0]`.
    base: u64,
    threads: HashMap<ThreadKey, ThreadState>,
    /// Threads that hold queue entries.
    busy: usize,
}

impl Folder {
    pub fn new(options: Options) -> Folder {
        Folder {
            options: Options {
                max_period: options.max_period.max(1),
                min_repeats: options.min_repeats.max(2),
                window: options.window.max(1),
            },
            queue: VecDeque::new(),
            base: 0,
            threads: HashMap::new(),
            busy: 0,
        }
    }

    /// Takes one event; passes any events now decided to `out`.
    pub fn push<E>(
        &mut self,
        event: &Event,
        out: &mut impl FnMut(Event) -> Result<(), E>,
    ) -> Result<(), E> {
        match event {
            Event::Access(a) => self.access(a),
            _ => {
                self.close_all();
                self.queue.push_back(Slot::Ready(event.clone()));
            }
        }
        self.flush(out)?;
        // Over the limit: close the decision that holds up the queue.
        while self.queue.len() > self.options.window {
            let Some(Slot::Held(_, owner)) = self.queue.front() else {
                break;
            };
            let owner = *owner;
            match self.threads.remove(&owner) {
                Some(mut state) => {
                    let was_idle = state.is_idle();
                    self.close(owner, &mut state);
                    self.put_back(owner, state, was_idle);
                }
                None => self.release(self.base),
            }
            self.flush(out)?;
        }
        Ok(())
    }

    /// Closes every open loop and hands out the rest.
    pub fn finish<E>(&mut self, out: &mut impl FnMut(Event) -> Result<(), E>) -> Result<(), E> {
        self.close_all();
        self.flush(out)
    }

    fn next_index(&self) -> u64 {
        self.base + self.queue.len() as u64
    }

    fn slot(&mut self, index: u64) -> &mut Slot {
        let at = (index - self.base) as usize;
        &mut self.queue[at]
    }

    /// The event of a held entry.
    fn held_event(&self, index: u64) -> Option<&Event> {
        match &self.queue[(index - self.base) as usize] {
            Slot::Held(event, _) => Some(event),
            _ => None,
        }
    }

    fn release(&mut self, index: u64) {
        let slot = self.slot(index);
        if let Slot::Held(event, _) = std::mem::replace(slot, Slot::Dropped) {
            *slot = Slot::Ready(event);
        }
    }

    fn access(&mut self, a: &Access) {
        let key = (a.ext.process, a.pid);
        let index = self.next_index();
        if !self.threads.contains_key(&key) && !self.make_room_for_thread() {
            self.queue.push_back(Slot::Ready(Event::Access(a.clone())));
            return;
        }
        self.queue
            .push_back(Slot::Held(Event::Access(a.clone()), key));
        let op = Op::of(a);
        let mut state = self.threads.remove(&key).unwrap_or_default();
        let was_idle = state.is_idle();
        if let Some(run) = &mut state.run {
            if run.pattern[run.partial.len()] == op {
                run.partial.push(index);
                if run.partial.len() == run.pattern.len() {
                    let old = run.summary_at;
                    run.summary_at = index;
                    run.count += 1;
                    run.last_time = a.time;
                    let folded = std::mem::take(&mut run.partial);
                    *self.slot(old) = Slot::Dropped;
                    for i in &folded[..folded.len() - 1] {
                        *self.slot(*i) = Slot::Dropped;
                    }
                }
                push_history(&mut state.history, op, self.options.max_period);
                self.put_back(key, state, was_idle);
                return;
            }
            let expected = run.pattern[run.partial.len()];
            let until = (run.partial.len() == run.polled && expected.same_but_value(&op))
                .then_some(a.value);
            // The access that ended the loop is not part of it: it may
            // start the next one.
            self.end_run(key, &mut state, until);
        }
        self.detect(&mut state, op, index);
        self.put_back(key, state, was_idle);
    }

    /// Looks for the start of a loop at the thread's newest access.
    fn detect(&mut self, state: &mut ThreadState, op: Op, index: u64) {
        let max_period = self.options.max_period;
        state.matched.resize(max_period, 0);
        let len = state.history.len();
        for k in 1..=max_period {
            let repeats = len >= k && state.history[len - k] == op;
            state.matched[k - 1] = if repeats { state.matched[k - 1] + 1 } else { 0 };
        }
        push_history(&mut state.history, op, max_period);
        state.held.push_back(index);

        let folds = self.options.min_repeats - 1;
        let found = (1..=max_period).find(|&k| state.matched[k - 1] >= k as u64 * folds);
        if let Some(k) = found {
            let folded = k * folds as usize;
            while state.held.len() > folded {
                let i = state.held.pop_front().expect("held is longer than folded");
                self.release(i);
            }
            let folded: Vec<u64> = state.held.drain(..).collect();
            let first = self
                .held_event(folded[0])
                .and_then(|e| e.time().zip(e.ext().map(|x| x.seq)));
            let (first_time, first_seq) = first.expect("a held access has a time");
            let summary_at = *folded.last().expect("at least one folded access");
            for i in &folded[..folded.len() - 1] {
                *self.slot(*i) = Slot::Dropped;
            }
            let pattern: Vec<Op> = state
                .history
                .iter()
                .skip(state.history.len() - k)
                .copied()
                .collect();
            let polled = pattern
                .iter()
                .rposition(|o| o.dir == Direction::Read)
                .unwrap_or(k - 1);
            let last_time = match self.held_event(summary_at) {
                Some(Event::Access(last)) => last.time,
                _ => first_time,
            };
            state.run = Some(Run {
                pattern,
                polled,
                partial: Vec::new(),
                summary_at,
                count: folds,
                first_time,
                first_seq,
                last_time,
            });
            state.matched.iter_mut().for_each(|m| *m = 0);
            return;
        }
        let longest = state.matched.iter().copied().max().unwrap_or(0) as usize;
        while state.held.len() > longest {
            let i = state.held.pop_front().expect("held is longer than longest");
            self.release(i);
        }
    }

    /// Ends the thread's loop: its summary takes the place of the last
    /// folded access, and the repetition under way is let through.
    fn end_run(&mut self, key: ThreadKey, state: &mut ThreadState, until: Option<Value>) {
        let Some(run) = state.run.take() else {
            return;
        };
        let polled = run.pattern[run.polled];
        let summary = Repeat {
            dir: polled.dir,
            time: run.first_time,
            end: run.last_time,
            map_id: polled.map_id,
            phys: polled.phys,
            value: polled.value,
            pc: polled.pc,
            pid: key.1,
            count: run.count,
            len: run.pattern.len() as u32,
            until,
            ext: Ext {
                seq: run.first_seq,
                process: key.0,
                hook: None,
            },
        };
        *self.slot(run.summary_at) = Slot::Ready(Event::Repeat(Box::new(summary)));
        for i in run.partial {
            self.release(i);
        }
        state.matched.iter_mut().for_each(|m| *m = 0);
    }

    /// Closes whatever the thread has open.
    fn close(&mut self, key: ThreadKey, state: &mut ThreadState) {
        self.end_run(key, state, None);
        for i in std::mem::take(&mut state.held) {
            self.release(i);
        }
        state.matched.iter_mut().for_each(|m| *m = 0);
        state.history.clear();
    }

    fn close_all(&mut self) {
        if self.busy == 0 {
            for state in self.threads.values_mut() {
                state.history.clear();
                state.matched.iter_mut().for_each(|m| *m = 0);
            }
            return;
        }
        let keys: Vec<ThreadKey> = self.threads.keys().copied().collect();
        for key in keys {
            if let Some(mut state) = self.threads.remove(&key) {
                let was_idle = state.is_idle();
                self.close(key, &mut state);
                self.put_back(key, state, was_idle);
            }
        }
    }

    fn put_back(&mut self, key: ThreadKey, state: ThreadState, was_idle: bool) {
        match (was_idle, state.is_idle()) {
            (true, false) => self.busy += 1,
            (false, true) => self.busy -= 1,
            _ => {}
        }
        self.threads.insert(key, state);
    }

    /// Makes room for one more thread if the table is full, by forgetting
    /// an idle one. False if every tracked thread has something open.
    fn make_room_for_thread(&mut self) -> bool {
        if self.threads.len() < MAX_THREADS {
            return true;
        }
        let idle = self
            .threads
            .iter()
            .find(|(_, s)| s.is_idle())
            .map(|(k, _)| *k);
        match idle {
            Some(key) => {
                self.threads.remove(&key);
                true
            }
            None => false,
        }
    }

    /// Hands out the decided events at the front of the queue.
    fn flush<E>(&mut self, out: &mut impl FnMut(Event) -> Result<(), E>) -> Result<(), E> {
        while let Some(front) = self.queue.front() {
            if matches!(front, Slot::Held(..)) {
                break;
            }
            let front = self.queue.pop_front().expect("the queue has a front");
            self.base += 1;
            if let Slot::Ready(event) = front {
                out(event)?;
            }
        }
        Ok(())
    }
}

fn push_history(history: &mut VecDeque<Op>, op: Op, max_period: usize) {
    if history.len() == max_period {
        history.pop_front();
    }
    history.push_back(op);
}
