//! What logging one record costs a producer, without anything else a
//! patched site does: the floor under the fast path's record, and what it
//! would be without the two instructions that order it.
//!
//! A producer thread writes 64-byte records into a ring of 16,384
//! records (1 MiB) and publishes each with a store of
//! its write position, as the fast path does; a consumer thread on the
//! other core reads every record's fields and gives the entries back, with
//! a 50 µs pause after each pass (as the recorder lets records pile up),
//! so that record lines move between the cores as they do under
//! `mmiotrace record`. Variants:
//!
//! - the fast path's: the sequence number from a `lock xadd` on a shared
//!   counter, the time from `rdtsc`;
//! - without the `lock`: a plain increment (what per-ring sequence numbers,
//!   with the recorder merging the rings by time, would cost);
//! - without the `lock` and without `rdtsc`;
//! - the fast path's record since the shared-memory file's version 5: a
//!   32-byte compact record (the ring then holds 32,768 of them, still
//!   1 MiB), no sequence number, the time from `rdtsc` read with the
//!   ring's stamping flag set, the flag cleared after `write_pos`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Records in the ring.
const RING: u64 = 16_384;

/// How a record gets its sequence number and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordered {
    /// `lock xadd` and `rdtsc`, as the fast path.
    LockedTsc,
    /// A plain increment and `rdtsc`.
    Tsc,
    /// A plain increment, no time.
    Neither,
    /// A compact record: 32 bytes, `rdtsc` under the stamping flag.
    Compact,
}

#[repr(C, align(64))]
#[derive(Default)]
struct Line(AtomicU64);

#[repr(C, align(64))]
struct Record([AtomicU64; 8]);

struct Ring {
    records: Box<[Record]>,
    write_pos: Line,
    read_pos: Line,
    seq: Line,
    /// The stamping flag (`Ordered::Compact`).
    stamping: Line,
    done: AtomicBool,
}

#[cfg(target_arch = "x86_64")]
fn tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn tsc() -> u64 {
    0
}

/// What [`measure`] found.
#[derive(Debug, Clone, Copy)]
pub struct Pushed {
    /// Nanoseconds per record, waits included.
    pub ns: f64,
    /// Times the producer found the ring full.
    pub waits: u64,
    /// Records the consumer read.
    pub consumed: u64,
}

/// `records` pushes with `ordered`.
pub fn measure(ordered: Ordered, records: u64) -> Pushed {
    let ring = Ring {
        records: (0..RING)
            .map(|_| Record(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect(),
        write_pos: Line::default(),
        read_pos: Line::default(),
        seq: Line::default(),
        stamping: Line::default(),
        done: AtomicBool::new(false),
    };
    // Every line touched once before the clock starts.
    for record in ring.records.iter() {
        record.0[0].store(0, Ordering::Relaxed);
    }
    let compact = ordered == Ordered::Compact;
    // Entries of the ring: 64-byte records, or 32-byte compact ones (each
    // record's line holding two).
    let entries = if compact { 2 * RING } else { RING };
    std::thread::scope(|scope| {
        let consumer = scope.spawn(|| consume(&ring, compact));
        let mut waits = 0u64;
        let mut read_seen = 0u64;
        let start = Instant::now();
        for i in 0..records {
            let pos = i;
            if pos - read_seen >= entries {
                waits += 1;
                while pos - read_seen >= entries {
                    // SYNC POINT: pairs with the consumer's Release store.
                    read_seen = ring.read_pos.0.load(Ordering::Acquire);
                    std::hint::spin_loop();
                }
            }
            if compact {
                let index = (pos % entries) as usize;
                let words = &ring.records[index / 2].0[(index % 2) * 4..][..4];
                // head (flags, width, pc), key (map id, offset), value;
                // the time under the stamping flag.
                words[0].store((0x55_0000_1000 << 16) | 0x0481, Ordering::Relaxed);
                words[2].store((1 << 48) | (i * 4), Ordering::Relaxed);
                words[3].store(i, Ordering::Relaxed);
                ring.stamping.0.store(1, Ordering::Relaxed);
                words[1].store(tsc(), Ordering::Relaxed);
                // SYNC POINT: pairs with the consumer's Acquire load; the
                // record's stores above come first.
                ring.write_pos.0.store(pos + 1, Ordering::Release);
                ring.stamping.0.store(0, Ordering::Release);
                continue;
            }
            let seq = match ordered {
                Ordered::LockedTsc => ring.seq.0.fetch_add(1, Ordering::Relaxed),
                Ordered::Tsc | Ordered::Neither | Ordered::Compact => {
                    let seq = ring.seq.0.load(Ordering::Relaxed);
                    ring.seq.0.store(seq + 1, Ordering::Relaxed);
                    seq
                }
            };
            let time = if ordered == Ordered::Neither {
                0
            } else {
                tsc()
            };
            let record = &ring.records[(pos % RING) as usize].0;
            // kind/width/map id, seq, time, tid/pid, offset, value, pc, aux:
            // the fields the fast path writes.
            record[1].store(seq, Ordering::Relaxed);
            record[2].store(time, Ordering::Relaxed);
            record[3].store(0x1234_0000_1234, Ordering::Relaxed);
            record[4].store(i * 4, Ordering::Relaxed);
            record[5].store(i, Ordering::Relaxed);
            record[6].store(0x55_0000_1000, Ordering::Relaxed);
            record[7].store(0, Ordering::Relaxed);
            record[0].store(0x0804_0102, Ordering::Relaxed);
            // SYNC POINT: pairs with the consumer's Acquire load; the
            // record's stores above come first.
            ring.write_pos.0.store(pos + 1, Ordering::Release);
        }
        let elapsed = start.elapsed();
        ring.done.store(true, Ordering::Release);
        Pushed {
            ns: elapsed.as_nanos() as f64 / records.max(1) as f64,
            waits,
            consumed: consumer.join().unwrap_or(0),
        }
    })
}

/// The consumer: every published record's fields read, the entries given
/// back, a pause after each pass; returns how many it read.
fn consume(ring: &Ring, compact: bool) -> u64 {
    let entries = if compact { 2 * RING } else { RING };
    let mut read = 0u64;
    let mut sum = 0u64;
    loop {
        // SYNC POINT: pairs with the producer's Release store of done,
        // after its last record.
        let done = ring.done.load(Ordering::Acquire);
        // SYNC POINT: pairs with the producer's Release store.
        let written = ring.write_pos.0.load(Ordering::Acquire);
        while read < written {
            let index = (read % entries) as usize;
            let (record, value) = if compact {
                (&ring.records[index / 2].0[(index % 2) * 4..], 3)
            } else {
                (&ring.records[index].0[..], 5)
            };
            sum = sum
                .wrapping_add(record[0].load(Ordering::Relaxed))
                .wrapping_add(record[1].load(Ordering::Relaxed))
                .wrapping_add(record[value].load(Ordering::Relaxed));
            read += 1;
        }
        // SYNC POINT: pairs with the producer's Acquire load.
        ring.read_pos.0.store(read, Ordering::Release);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    std::hint::black_box(sum);
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_pushes_three_rings_and_the_consumer_reads_them_all() {
        for ordered in [
            Ordered::LockedTsc,
            Ordered::Tsc,
            Ordered::Neither,
            Ordered::Compact,
        ] {
            let pushed = measure(ordered, 3 * RING);
            assert_eq!(pushed.consumed, 3 * RING, "{ordered:?}");
            assert!(pushed.ns > 0.0, "{ordered:?}");
        }
    }
}
