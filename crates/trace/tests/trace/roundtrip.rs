//! Lossless conversion: every event kind, through every format and back.

use crate::common::*;
use mmiotrace_trace::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn text_round_trip(events in proptest::collection::vec(event(micros_time()), 0..40)) {
        let text = to_text(&events);
        prop_assert_eq!(parse(&text), events, "text:\n{}", String::from_utf8_lossy(&text));
    }

    #[test]
    fn binary_round_trip(events in proptest::collection::vec(event(any_time()), 0..40)) {
        let binary = to_binary(&events);
        prop_assert_eq!(parse(&binary), events);
    }

    #[test]
    fn text_to_binary_to_text_is_byte_identical(
        events in proptest::collection::vec(event(micros_time()), 0..40)
    ) {
        let text = to_text(&events);
        let binary = to_binary(&parse(&text));
        let again = to_text(&parse(&binary));
        prop_assert_eq!(String::from_utf8_lossy(&again), String::from_utf8_lossy(&text));
    }

    #[test]
    fn json_lines_are_valid_json(events in proptest::collection::vec(event(any_time()), 0..20)) {
        let mut w = JsonLinesWriter::new(Vec::new());
        for e in &events {
            w.write_event(e).expect("writing to a Vec");
        }
        let out = w.finish().expect("writing to a Vec");
        let text = String::from_utf8(out).expect("JSON is UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        prop_assert_eq!(lines.len(), events.len());
        for (line, e) in lines.iter().zip(&events) {
            let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
            prop_assert_eq!(v["kind"].as_str(), Some(e.kind_name()));
            if let Event::Mark(m) = e {
                prop_assert_eq!(v["text"].as_str(), Some(m.text.as_str()));
            }
        }
    }

    /// A reader handed any bytes returns items or errors, never panics, and
    /// stops (each call consumes input).
    #[test]
    fn readers_survive_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        for input in [bytes.clone(), [&binary::MAGIC[..], &binary::FORMAT_VERSION.to_le_bytes(), &[0, 0], &bytes[..]].concat()] {
            if let Ok(reader) = TraceReader::new(&input[..], ReadOptions::default()) {
                let mut n = 0;
                for _ in reader {
                    n += 1;
                    prop_assert!(n <= input.len() + 2);
                }
            }
        }
    }

    /// Mutating a valid binary trace gives an error or other events, never a panic.
    #[test]
    fn binary_reader_survives_corruption(
        events in proptest::collection::vec(event(any_time()), 1..10),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut binary = to_binary(&events);
        for (at, byte) in flips {
            let i = at.index(binary.len());
            if i >= binary::HEADER_LEN {
                binary[i] = byte;
            }
        }
        binary.truncate(cut.index(binary.len() + 1).max(binary::HEADER_LEN));
        let reader = TraceReader::new(&binary[..], ReadOptions::default()).expect("header intact");
        for _ in reader {}
    }
}

#[test]
fn every_width_round_trips_in_both_formats() {
    for width in [1usize, 2, 4, 8, 16, 32, 64] {
        let bytes: Vec<u8> = (0..width).map(|i| 0xf0 ^ i as u8).collect();
        let event = Event::Access(Access {
            dir: Direction::Write,
            time: Timestamp::from_secs_micros(3, 7),
            map_id: 2,
            phys: 0xffff_ffff_ffff_fff0,
            value: Value::from_le_bytes(&bytes).expect("valid width"),
            pc: 0x5555_5555_1234,
            pid: 4242,
            ext: Ext {
                seq: Some(9),
                process: Some(4240),
                hook: None,
            },
        });
        let events = vec![event];
        assert_eq!(parse(&to_text(&events)), events, "width {width}");
        assert_eq!(parse(&to_binary(&events)), events, "width {width}");
    }
}

#[test]
fn binary_trace_is_smaller_than_text() {
    let events: Vec<Event> = (0..1000u64)
        .map(|i| {
            Event::Access(Access {
                dir: if i % 3 == 0 {
                    Direction::Write
                } else {
                    Direction::Read
                },
                time: Timestamp::from_nanos(1_000_000 + i * 1700),
                map_id: 1,
                phys: 0xfebf_0000 + (i % 16) * 4,
                value: Value::from_u64(4, i * 0x1234_5678).expect("width 4"),
                pc: 0x55d4_a2c0_1000 + (i % 5) * 8,
                pid: 3121,
                ext: Ext {
                    seq: Some(i),
                    process: Some(3120),
                    hook: None,
                },
            })
        })
        .collect();
    let text = to_text(&events);
    let binary = to_binary(&events);
    assert!(
        binary.len() * 3 < text.len(),
        "binary {} bytes, text {} bytes",
        binary.len(),
        text.len()
    );
}

proptest! {
    /// The lending reader, which reuses one event in place, yields exactly
    /// what the owning reader does, for mixed kinds and widths in any order.
    #[test]
    fn read_ref_matches_read_item(
        events in proptest::collection::vec(event(micros_time()), 0..40),
        cut in 0usize..8,
    ) {
        for bytes in [to_text(&events), to_binary(&events)] {
            let bytes = &bytes[..bytes.len().saturating_sub(cut).max(binary::HEADER_LEN.min(bytes.len()))];
            let mut owned = TraceReader::new(bytes, ReadOptions::default()).expect("detectable");
            let mut lent = TraceReader::new(bytes, ReadOptions::default()).expect("detectable");
            let mut owned_truncation = None;
            loop {
                let expected = owned.read_item();
                let got = lent.read_ref();
                match (expected, got) {
                    (Ok(Some(Item::Event(e))), Ok(Some(g))) => prop_assert_eq!(&e, g),
                    (Ok(Some(Item::Truncated(t))), Ok(None)) => {
                        owned_truncation = Some(t);
                        prop_assert!(owned.read_item().expect("end").is_none());
                        break;
                    }
                    (Ok(None), Ok(None)) => break,
                    (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => prop_assert!(false, "read_item {:?} but read_ref {:?}", a, b),
                }
            }
            prop_assert_eq!(owned_truncation.as_ref(), lent.truncation());
        }
    }
}

/// A value set in place equals the one built new, whatever width it had
/// before; a width that is none changes nothing.
#[test]
fn a_value_set_in_place_equals_one_built_new() {
    use mmiotrace_trace::Value;
    let wide: Vec<u8> = (1..=64).collect();
    let mut value = Value::from_le_bytes(&wide).expect("64 bytes");
    assert!(value.set_u64(2, 0xbeef));
    assert_eq!(value, Value::from_u64(2, 0xbeef).expect("2 bytes"));
    assert!(value.set_le_bytes(&wide[..32]));
    assert_eq!(value, Value::from_le_bytes(&wide[..32]).expect("32 bytes"));
    assert!(value.set_le_bytes(&wide[..16]));
    assert_eq!(value, Value::from_le_bytes(&wide[..16]).expect("16 bytes"));
    let before = value;
    assert!(!value.set_le_bytes(&wide[..3]), "3 bytes is no width");
    assert!(!value.set_u64(2, 0x1_0000), "too big for 2 bytes");
    assert!(!value.set_u64(3, 1), "3 is no width");
    assert_eq!(value, before);
}
