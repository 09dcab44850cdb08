//! Proptest strategies over every event kind, shared by the test files.

use mmiotrace_trace::*;
use proptest::prelude::*;

/// Whole microseconds: what the text format can carry.
pub fn micros_time() -> BoxedStrategy<Timestamp> {
    prop_oneof![
        Just(Timestamp::ZERO),
        (0u64..u64::MAX / 1000).prop_map(|m| Timestamp::from_nanos(m * 1000)),
        (0u64..100_000_000).prop_map(|m| Timestamp::from_nanos(m * 1000)),
    ]
    .boxed()
}

pub fn any_time() -> BoxedStrategy<Timestamp> {
    prop_oneof![
        Just(Timestamp::ZERO),
        any::<u64>().prop_map(Timestamp::from_nanos)
    ]
    .boxed()
}

pub fn ext() -> impl Strategy<Value = Ext> {
    (
        proptest::option::of(prop_oneof![any::<u64>(), 0u64..1000]),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(seq, process)| Ext {
            seq,
            process,
            hook: None,
        })
}

pub fn value() -> impl Strategy<Value = Value> {
    (
        0u32..7,
        proptest::collection::vec(any::<u8>(), 64),
        any::<bool>(),
    )
        .prop_map(|(log2, bytes, zero_top)| {
            let width = 1usize << log2;
            let mut bytes = bytes[..width].to_vec();
            if zero_top {
                // Leading zero digits in the hex form.
                bytes[width - 1] = 0;
            }
            Value::from_le_bytes(&bytes).expect("a power-of-two width up to 64")
        })
}

pub fn address() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        any::<u64>(),
        0xfe00_0000u64..0xff00_0000
    ]
}

pub fn mark_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("Lost 5 events.".to_string()),
        Just("Lost 18446744073709551615 events.".to_string()),
        Just("Lost 007 events.".to_string()),
        Just("tab\tin text\tseq=1".to_string()),
        Just("ends with tab\t".to_string()),
        Just("back\\slash \\x41".to_string()),
        Just(" leading and trailing spaces ".to_string()),
        Just("line\nbreak\r".to_string()),
        "[ -~]{0,40}",
        ".{0,40}",
    ]
}

pub fn token() -> impl Strategy<Value = String> {
    "[0-9A-Za-z._-]{1,16}"
}

pub fn event(time: BoxedStrategy<Timestamp>) -> impl Strategy<Value = Event> {
    prop_oneof![
        token().prop_map(|version| Event::Version(Version { version })),
        (
            any::<(u8, u8, u16, u16, u32)>(),
            proptest::array::uniform7(address()),
            proptest::array::uniform7(address()),
            prop_oneof![Just(String::new()), "[a-z0-9_-]{1,12}"],
        )
            .prop_map(
                |((bus, devfn, vendor, device, irq), bar_start, bar_size, driver)| {
                    Event::PciDev(PciDev {
                        bus,
                        devfn,
                        vendor,
                        device,
                        irq,
                        bar_start,
                        bar_size,
                        driver,
                    })
                }
            ),
        (
            time.clone(),
            any::<u32>(),
            address(),
            address(),
            address(),
            address(),
            any::<u32>(),
            ext(),
            proptest::option::of(prop_oneof![
                Just(String::new()),
                Just("/sys/bus/pci/devices/0000:01:00.0/resource0".to_string()),
                ".{0,30}",
            ]),
        )
            .prop_map(|(time, map_id, phys, virt, len, pc, pid, ext, path)| {
                Event::Map(Map {
                    time,
                    map_id,
                    phys,
                    virt,
                    len,
                    pc,
                    pid,
                    ext,
                    path,
                })
            }),
        (time.clone(), any::<u32>(), address(), any::<u32>(), ext()).prop_map(
            |(time, map_id, pc, pid, ext)| Event::Unmap(Unmap {
                time,
                map_id,
                pc,
                pid,
                ext
            })
        ),
        (
            any::<bool>(),
            time.clone(),
            any::<u32>(),
            address(),
            value(),
            address(),
            any::<u32>(),
            ext(),
            proptest::option::of((0u32..70, proptest::option::of(any::<u64>()))),
        )
            .prop_map(
                |(read, time, map_id, phys, value, pc, pid, mut ext, hook)| {
                    // A hook's device value has the access's width, and only
                    // accesses of up to 8 bytes are hooked.
                    ext.hook = hook
                        .filter(|_| !value.is_wide())
                        .map(|(rule, device)| Hooked {
                            rule,
                            device: device.map(|d| {
                                if value.width() == 8 {
                                    d
                                } else {
                                    d & ((1u64 << (8 * u32::from(value.width()))) - 1)
                                }
                            }),
                        });
                    Event::Access(Access {
                        dir: if read {
                            Direction::Read
                        } else {
                            Direction::Write
                        },
                        time,
                        map_id,
                        phys,
                        value,
                        pc,
                        pid,
                        ext,
                    })
                }
            ),
        (
            time.clone(),
            any::<u32>(),
            address(),
            any::<[u8; 3]>(),
            address(),
            any::<u32>(),
            ext()
        )
            .prop_map(|(time, map_id, phys, opcode, pc, pid, ext)| {
                Event::Unknown(Unknown {
                    time,
                    map_id,
                    phys,
                    opcode,
                    pc,
                    pid,
                    ext,
                })
            }),
        (time.clone(), mark_text(), ext()).prop_map(|(time, text, ext)| Event::Mark(Mark {
            time,
            text,
            ext
        })),
        (any::<u64>(), ext()).prop_map(|(count, ext)| Event::Lost(Lost { count, ext })),
        repeat(time),
    ]
}

/// A `REPEAT` whose `end` the format can carry at the same precision as `time`.
fn repeat(time: BoxedStrategy<Timestamp>) -> impl Strategy<Value = Event> {
    (
        (any::<bool>(), time.clone(), time, any::<u32>(), address()),
        (value(), address(), any::<u32>(), any::<u64>(), 1u32..),
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 64),
            ext(),
        ),
    )
        .prop_map(
            |(
                (read, time, end, map_id, phys),
                (value, pc, pid, count, len),
                (has_until, until_bytes, ext),
            )| {
                let until = has_until.then(|| {
                    Value::from_le_bytes(&until_bytes[..usize::from(value.width())])
                        .expect("the width of a valid value")
                });
                Event::Repeat(Box::new(Repeat {
                    dir: if read {
                        Direction::Read
                    } else {
                        Direction::Write
                    },
                    time,
                    end,
                    map_id,
                    phys,
                    value,
                    pc,
                    pid,
                    count,
                    len,
                    until,
                    ext,
                }))
            },
        )
}

/// Every item of a reader, which must all be events.
pub fn read_all<R: std::io::Read>(reader: TraceReader<R>) -> Vec<Event> {
    reader
        .map(|item| match item.expect("a valid trace") {
            Item::Event(event) => event,
            Item::Truncated(t) => panic!("unexpected truncation: {t}"),
        })
        .collect()
}

pub fn to_text(events: &[Event]) -> Vec<u8> {
    let mut w = TextWriter::new(Vec::new());
    for e in events {
        w.write_event(e).expect("a writable event");
    }
    w.finish().expect("writing to a Vec")
}

pub fn to_binary(events: &[Event]) -> Vec<u8> {
    let mut w = BinaryWriter::new(Vec::new()).expect("writing to a Vec");
    for e in events {
        w.write_event(e).expect("a writable event");
    }
    w.finish().expect("writing to a Vec")
}

pub fn parse(bytes: &[u8]) -> Vec<Event> {
    read_all(TraceReader::new(bytes, ReadOptions::default()).expect("a detectable trace"))
}
