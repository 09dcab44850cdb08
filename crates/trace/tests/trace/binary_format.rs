//! The binary format's short access records (docs/FORMAT.md, "Binary
//! format"): their exact bytes, the limits of each packed field, and
//! lossless reading of traces that mix them with general records, whole
//! or in pieces.

use std::io::Read;

use crate::common::*;
use mmiotrace_trace::*;
use proptest::prelude::*;

fn access(dir: Direction, nanos: u64, map_id: u32, phys: u64, value: Value) -> Access {
    Access {
        dir,
        time: Timestamp::from_nanos(nanos),
        map_id,
        phys,
        value,
        pc: 0x55d0_c0a0_1300,
        pid: 3121,
        ext: Ext {
            seq: Some(7),
            process: Some(3120),
            hook: None,
        },
    }
}

fn value(width: u8, v: u64) -> Value {
    Value::from_u64(width, v).expect("a kernel width")
}

/// The example of docs/FORMAT.md, "Short access".
#[test]
fn a_short_access_has_the_documented_bytes() {
    let first = access(
        Direction::Read,
        1_000_000,
        1,
        0xfebf_0000,
        value(4, 0xffff_ffff),
    );
    let mut second = access(
        Direction::Write,
        1_001_500,
        1,
        0xfebf_0004,
        value(2, 0xbeef),
    );
    second.pc += 0x10;
    second.pid -= 1;
    second.ext.seq = Some(8);
    let binary = to_binary(&[Event::Access(first), Event::Access(second)]);
    let header = [
        0x89, b'M', b'M', b'T', b'\r', b'\n', 0x1a, b'\n', 2, 0, 0, 0,
    ];
    assert_eq!(binary[..12], header);
    // The first access is a general record: its phys is far from slot 1's 0.
    let general_len = binary.len() - 12 - 11;
    assert_eq!(binary[12], 0x0c, "kind R, seq and proc present");
    assert_eq!(binary[13], 2, "log2 of the width");
    // tag: short, write, log2 width 1, slot 1
    // word: time +1500, phys +4, pc +0x10, pid -1, seq + 1, same proc
    let word: u64 = 1500 | 4 << 22 | 0x10 << 38 | 0xff << 54 | 1 << 62 | 1 << 63;
    let mut short = vec![0xd1];
    short.extend_from_slice(&word.to_le_bytes());
    short.extend_from_slice(&[0xef, 0xbe]);
    assert_eq!(binary[12 + general_len..], short[..]);
}

/// Moves a field of an access to the edge of what a short record holds,
/// or (when told to) one past it.
type Change = fn(&mut Access, bool);

/// Each packed field at the edge of its range, and one past it: the
/// writer falls back to a general record, and both read back exactly.
#[test]
fn short_field_limits() {
    let base = access(Direction::Read, 5_000, 3, 0xfebf_8000, value(4, 1));
    let cases: Vec<(&str, Change)> = vec![
        ("time", |a, over| {
            a.time.nanos += (1 << 22) - 1 + u64::from(over)
        }),
        ("time backwards", |a, over| {
            if over {
                a.time.nanos -= 1;
            }
        }),
        ("phys up", |a, over| a.phys += 32767 + u64::from(over)),
        ("phys down", |a, over| a.phys -= 32768 + u64::from(over)),
        ("pc up", |a, over| a.pc += 32767 + u64::from(over)),
        ("pc down", |a, over| a.pc -= 32768 + u64::from(over)),
        ("pid up", |a, over| a.pid += 127 + u32::from(over)),
        ("pid down", |a, over| a.pid -= 128 + u32::from(over)),
        ("seq", |a, over| a.ext.seq = Some(8 + u64::from(over))),
        ("proc", |a, over| {
            a.ext.process = Some(3120 + u32::from(over))
        }),
        ("map id in the same slot", |a, over| {
            a.map_id += if over { 16 } else { 0 }
        }),
        ("width", |a, over| {
            if over {
                a.value = Value::from_le_bytes(&[0xa5; 16]).expect("16 bytes");
            }
        }),
    ];
    for (field, change) in cases {
        for over in [false, true] {
            let mut next = base.clone();
            next.ext.seq = Some(8);
            change(&mut next, over);
            let events = vec![Event::Access(base.clone()), Event::Access(next.clone())];
            let binary = to_binary(&events);
            let first_len = to_binary(&events[..1]).len();
            let short_len = 9 + usize::from(next.width());
            let is_short = binary[first_len] & 0x80 != 0;
            assert_eq!(is_short, !over, "{field}, over the limit: {over}");
            if is_short {
                assert_eq!(binary.len() - first_len, short_len, "{field}");
            }
            assert_eq!(parse(&binary), events, "{field}, over the limit: {over}");
        }
    }
}

#[test]
fn nearby_accesses_are_short_records_after_the_first_of_each_map() {
    let mut events = Vec::new();
    for i in 0..1000u64 {
        let width = [1u8, 2, 4, 8][(i % 4) as usize];
        let map = i % 5;
        let mut a = access(
            if i % 3 == 0 {
                Direction::Write
            } else {
                Direction::Read
            },
            1_000_000 + i * 1700,
            map as u32 + 1,
            0xfebf_0000 + map * 0x10_0000 + (i % 64) * 4,
            value(
                width,
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - 8 * width),
            ),
        );
        a.ext.seq = Some(i);
        events.push(Event::Access(a));
    }
    let binary = to_binary(&events);
    assert_eq!(parse(&binary), events);
    // The first access of each map is a general record (its slot's phys
    // starts at 0); every later one is a short record.
    let short: usize = events[5..]
        .iter()
        .map(|e| match e {
            Event::Access(a) => 9 + usize::from(a.width()),
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(binary.len(), to_binary(&events[..5]).len() + short);
}

/// A reader that hands out its input in pieces of the given sizes, so that
/// records straddle every possible buffer boundary.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Trace-like events: each access close to the one before, with the
/// deltas now and then at or past the edge of what a short record holds,
/// map ids that share slots, and other kinds in between.
fn trace_like(micros: bool) -> impl Strategy<Value = Vec<Event>> {
    let time_unit = if micros { 1000 } else { 1 };
    let time = if micros { micros_time() } else { any_time() };
    let step = prop_oneof![
        9 => (
            (
                prop_oneof![0u64..5000, Just(4194), Just(4195), Just((1 << 22) - 1), Just(1 << 22), any::<u64>()],
                prop_oneof![Just(0u32), Just(1), Just(2), Just(15), Just(16), Just(17), Just(u32::MAX)],
                prop_oneof![-64i64..64, Just(32767), Just(32768), Just(-32768), Just(-32769), any::<i64>()],
                prop_oneof![-300i64..300, Just(32767), Just(32768), Just(-32768), Just(-32769), any::<i64>()],
                prop_oneof![-3i32..3, Just(127), Just(128), Just(-128), Just(-129), any::<i32>()],
            ),
            (
                prop_oneof![4 => Just(1u64), 1 => Just(0), 1 => Just(2), 1 => any::<u64>()],
                any::<bool>(),
                prop_oneof![4 => Just(0u32), 1 => Just(1), 1 => any::<u32>()],
                any::<bool>(),
                crate::common::value(),
                any::<bool>(),
            ),
        )
            .prop_map(Some),
        1 => Just(None),
    ];
    (
        proptest::collection::vec(step, 0..60),
        proptest::collection::vec(event(time), 10),
    )
        .prop_map(move |(steps, others)| {
            let mut events = Vec::new();
            let (mut nanos, mut pc, mut pid, mut seq, mut process) = (0u64, 0u64, 0u32, 0u64, 0u32);
            let mut phys_of = std::collections::HashMap::new();
            for (i, step) in steps.into_iter().enumerate() {
                let Some((
                    (dt, map_id, dphys, dpc, dpid),
                    (dseq, has_seq, dproc, has_process, value, write),
                )) = step
                else {
                    events.push(others[i % others.len()].clone());
                    continue;
                };
                nanos = nanos.wrapping_add(dt.wrapping_mul(time_unit));
                if micros {
                    nanos = nanos / 1000 * 1000;
                }
                let phys = phys_of.entry(map_id).or_insert(0xfebf_0000u64);
                *phys = phys.wrapping_add(dphys as u64);
                pc = pc.wrapping_add(dpc as u64);
                pid = pid.wrapping_add(dpid as u32);
                seq = seq.wrapping_add(dseq);
                process = process.wrapping_add(dproc);
                events.push(Event::Access(Access {
                    dir: if write {
                        Direction::Write
                    } else {
                        Direction::Read
                    },
                    time: Timestamp::from_nanos(nanos),
                    map_id,
                    phys: *phys,
                    value,
                    pc,
                    pid,
                    ext: Ext {
                        seq: has_seq.then_some(seq),
                        process: has_process.then_some(process),
                        hook: None,
                    },
                }));
            }
            events
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn trace_like_binary_round_trip(events in trace_like(false)) {
        prop_assert_eq!(parse(&to_binary(&events)), events);
    }

    #[test]
    fn trace_like_text_to_binary_to_text_is_byte_identical(events in trace_like(true)) {
        let text = to_text(&events);
        let binary = to_binary(&parse(&text));
        let again = to_text(&parse(&binary));
        prop_assert_eq!(String::from_utf8_lossy(&again), String::from_utf8_lossy(&text));
    }

    /// Records cut at every buffer boundary read the same as a whole
    /// input, with both the owning and the lending reader.
    #[test]
    fn trace_like_reads_the_same_in_pieces(
        events in trace_like(false),
        sizes in proptest::collection::vec(1usize..40, 1..8),
        cut in 0usize..20,
    ) {
        let binary = to_binary(&events);
        let binary = &binary[..binary.len().saturating_sub(cut).max(binary::HEADER_LEN)];
        let whole: Vec<Item> = BinaryReader::new(binary)
            .expect("header")
            .map(|item| item.expect("valid"))
            .collect();
        let pieces = Pieces { data: binary, sizes: sizes.clone(), next: 0 };
        let pieces: Vec<Item> = BinaryReader::new(pieces)
            .expect("header")
            .map(|item| item.expect("valid"))
            .collect();
        prop_assert_eq!(&pieces, &whole);

        let mut lent = BinaryReader::new(Pieces { data: binary, sizes, next: 0 }).expect("header");
        let mut lent_events = Vec::new();
        while let Some(event) = lent.read_ref().expect("valid") {
            lent_events.push(event.clone());
        }
        let whole_events: Vec<&Event> = whole
            .iter()
            .filter_map(|item| match item {
                Item::Event(event) => Some(event),
                Item::Truncated(_) => None,
            })
            .collect();
        prop_assert_eq!(lent_events.iter().collect::<Vec<_>>(), whole_events);
        let truncation = whole.iter().find_map(|item| match item {
            Item::Truncated(t) => Some(t),
            Item::Event(_) => None,
        });
        prop_assert_eq!(lent.truncation(), truncation);
    }

    /// Mixing `read_item` and `read_ref` on one reader (the lending one
    /// keeps decoder state in the event it lends) changes nothing.
    #[test]
    fn trace_like_mixed_read_calls(events in trace_like(false), pattern in any::<u64>()) {
        let binary = to_binary(&events);
        let mut reader = BinaryReader::new(&binary[..]).expect("header");
        let mut read = Vec::new();
        for i in 0.. {
            let event = if pattern >> (i % 64) & 1 == 0 {
                match reader.read_item().expect("valid") {
                    Some(Item::Event(event)) => event,
                    Some(Item::Truncated(t)) => panic!("{t}"),
                    None => break,
                }
            } else {
                match reader.read_ref().expect("valid") {
                    Some(event) => event.clone(),
                    None => break,
                }
            };
            read.push(event);
        }
        prop_assert_eq!(read, events);
    }

    /// Flipped bytes in a trace of mostly short records give an error or
    /// other events, never a panic.
    #[test]
    fn trace_like_corruption(
        events in trace_like(false),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut binary = to_binary(&events);
        for (at, byte) in flips {
            let i = at.index(binary.len());
            if i >= binary::HEADER_LEN {
                binary[i] = byte;
            }
        }
        let mut reader = BinaryReader::new(&binary[..]).expect("header intact");
        let mut calls = 0;
        while let Ok(Some(_)) = reader.read_ref() {
            calls += 1;
            prop_assert!(calls <= binary.len());
        }
    }
}
