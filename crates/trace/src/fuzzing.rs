//! Oracles for the fuzz targets in fuzz/ and for the test that replays their
//! corpus: read any bytes, then check that every event read survives a
//! round trip through both formats.
//!
//! These functions panic when a reader or writer misbehaves; that is their
//! job. They are not for use outside fuzzing and tests.

use crate::binary::{FORMAT_VERSION, MAGIC};
use crate::{BinaryReader, BinaryWriter, Event, Item, ReadOptions, TextReader, TextWriter};

/// Reads `data` as a text trace, then round-trips what it read.
pub fn check_text(data: &[u8]) {
    let mut events = Vec::new();
    let mut reader = TextReader::new(data);
    let mut calls = 0usize;
    loop {
        calls += 1;
        assert!(calls <= data.len() + 2, "the text reader does not advance");
        match reader.read_item() {
            Ok(Some(Item::Event(event))) => events.push(event),
            Ok(Some(Item::Truncated(_))) | Err(_) => {}
            Ok(None) => break,
        }
    }
    round_trip(&events, true);
}

/// Reads `data` as a binary trace (behind a valid header unless it has
/// one), then round-trips what it read.
pub fn check_binary(data: &[u8]) {
    let input = if data.starts_with(&MAGIC) {
        data.to_vec()
    } else {
        let mut input = MAGIC.to_vec();
        input.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        input.extend_from_slice(&[0, 0]);
        input.extend_from_slice(data);
        input
    };
    let Ok(reader) = BinaryReader::new(&input[..]) else {
        return;
    };
    let mut events = Vec::new();
    for item in reader.take(input.len() + 2) {
        match item {
            Ok(Item::Event(event)) => events.push(event),
            Ok(Item::Truncated(_)) | Err(_) => break,
        }
    }
    // The text format keeps microseconds and cannot carry some strings, so
    // only the binary round trip applies to every event.
    round_trip(&events, false);
}

fn round_trip(events: &[Event], through_text: bool) {
    let mut binary = BinaryWriter::new(Vec::new()).expect("writing to a Vec");
    for event in events {
        binary
            .write_event(event)
            .expect("an event read can be written");
    }
    let binary = binary.finish().expect("writing to a Vec");
    let back: Vec<Event> = BinaryReader::new(&binary[..])
        .expect("a header just written")
        .map(|item| match item.expect("a trace just written") {
            Item::Event(event) => event,
            Item::Truncated(t) => panic!("a trace just written is cut off: {t}"),
        })
        .collect();
    assert_eq!(back, events, "binary round trip");

    if through_text {
        let mut text = TextWriter::new(Vec::new());
        for event in events {
            text.write_event(event)
                .expect("an event read from text can be written as text");
        }
        let text = text.finish().expect("writing to a Vec");
        let options = ReadOptions::default().with_fatal_truncation(true);
        let back: Vec<Event> = TextReader::with_options(&text[..], options)
            .map(|item| match item {
                Ok(Item::Event(event)) => event,
                Ok(Item::Truncated(t)) => panic!("text just written is cut off: {t}"),
                Err(e) => panic!(
                    "text just written does not parse: {e}\n{}",
                    String::from_utf8_lossy(&text)
                ),
            })
            .collect();
        assert_eq!(back, events, "text round trip");
    }
}
