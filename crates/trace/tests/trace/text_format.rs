//! The text format line by line: the kernel's exact output, the extensions,
//! the reader's leniency with real logs and its errors on garbage.

use crate::common::*;
use mmiotrace_trace::*;

fn line(event: &Event) -> String {
    String::from_utf8(to_text(std::slice::from_ref(event))).expect("text output is UTF-8")
}

fn access(dir: Direction, width: u8, value: u64) -> Access {
    Access {
        dir,
        time: Timestamp::from_secs_micros(12, 345),
        map_id: 1,
        phys: 0xfebf_0010,
        value: Value::from_u64(width, value).expect("kernel width"),
        pc: 0,
        pid: 0,
        ext: Ext::default(),
    }
}

fn pcidev(driver: &str) -> PciDev {
    PciDev {
        bus: 3,
        devfn: 0,
        vendor: 0x10de,
        device: 0x1c82,
        irq: 0x10,
        bar_start: [0xfd00_0000, 0xe000_000c, 0, 0xe200_000c, 0, 0xe001, 0],
        bar_size: [0x100_0000, 0x1000_0000, 0, 0x200_0000, 0, 0x80, 0x80000],
        driver: driver.to_string(),
    }
}

fn read_text(input: &str) -> Vec<Result<Item, Error>> {
    let options = ReadOptions::default().with_name("trace.txt");
    TextReader::with_options(input.as_bytes(), options).collect()
}

fn first_error(input: &str) -> String {
    read_text(input)
        .into_iter()
        .find_map(Result::err)
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("no error for {input:?}"))
}

#[test]
fn kernel_lines_are_byte_exact() {
    let cases: Vec<(Event, &str)> = vec![
        (
            Event::Version(Version {
                version: KERNEL_VERSION.into(),
            }),
            "VERSION 20070824\n",
        ),
        (
            Event::PciDev(pcidev("nouveau")),
            "PCIDEV 0300 10de1c82 10 fd000000 e000000c 0 e200000c 0 e001 0 1000000 10000000 0 2000000 0 80 80000 nouveau\n",
        ),
        (
            Event::PciDev(pcidev("")),
            "PCIDEV 0300 10de1c82 10 fd000000 e000000c 0 e200000c 0 e001 0 1000000 10000000 0 2000000 0 80 80000 \n",
        ),
        (
            Event::Map(Map {
                time: Timestamp::from_secs_micros(0, 1000),
                map_id: 1,
                phys: 0xfebf_0000,
                virt: 0x7f12_a000,
                len: 0x1000,
                pc: 0,
                pid: 0,
                ext: Ext::default(),
                path: None,
            }),
            "MAP 0.001000 1 0xfebf0000 0x7f12a000 0x1000 0x0 0\n",
        ),
        (
            Event::Unmap(Unmap {
                time: Timestamp::from_secs_micros(20, 5),
                map_id: 1,
                pc: 0,
                pid: 0,
                ext: Ext::default(),
            }),
            "UNMAP 20.000005 1 0x0 0\n",
        ),
        (
            Event::Access(access(Direction::Read, 4, 0x1234)),
            "R 4 12.000345 1 0xfebf0010 0x1234 0x0 0\n",
        ),
        (
            Event::Access(access(Direction::Write, 1, 0)),
            "W 1 12.000345 1 0xfebf0010 0x0 0x0 0\n",
        ),
        (
            Event::Access(access(Direction::Write, 8, u64::MAX)),
            "W 8 12.000345 1 0xfebf0010 0xffffffffffffffff 0x0 0\n",
        ),
        (
            Event::Unknown(Unknown {
                time: Timestamp::from_secs_micros(1, 2),
                map_id: 3,
                phys: 0xfebf_0100,
                opcode: [0x0f, 0xb1, 0x0a],
                pc: 0,
                pid: 0,
                ext: Ext::default(),
            }),
            "UNKNOWN 1.000002 3 0xfebf0100 0f,b1,0a 0x0 0\n",
        ),
        (
            Event::Mark(Mark {
                time: Timestamp::from_secs_micros(5, 0),
                text: "starting modeset".into(),
                ext: Ext::default(),
            }),
            "MARK 5.000000 starting modeset\n",
        ),
        (
            Event::Mark(Mark {
                time: Timestamp::from_secs_micros(5, 0),
                text: String::new(),
                ext: Ext::default(),
            }),
            "MARK 5.000000 \n",
        ),
        (
            Event::Lost(Lost {
                count: 17,
                ext: Ext::default(),
            }),
            "MARK 0.000000 Lost 17 events.\n",
        ),
    ];
    for (event, expected) in cases {
        assert_eq!(line(&event), expected);
        assert_eq!(
            parse(expected.as_bytes()),
            vec![event],
            "reading {expected:?}"
        );
    }
}

#[test]
fn time_truncates_to_microseconds() {
    let mut a = access(Direction::Read, 2, 7);
    a.time = Timestamp::from_nanos(3_000_999_999);
    assert_eq!(
        line(&Event::Access(a)),
        "R 2 3.000999 1 0xfebf0010 0x7 0x0 0\n"
    );
}

#[test]
fn extension_lines() {
    let mut a = access(Direction::Write, 4, 0xdead_beef);
    a.pc = 0x5555_5555_4a2b;
    a.pid = 4242;
    a.ext = Ext {
        seq: Some(17),
        process: Some(4240),
        hook: None,
    };
    assert_eq!(
        line(&Event::Access(a.clone())),
        "W 4 12.000345 1 0xfebf0010 0xdeadbeef 0x555555554a2b 4242 seq=17 proc=4240\n"
    );

    a.value = Value::from_le_bytes(&(1..=16).collect::<Vec<u8>>()).expect("width 16");
    assert_eq!(
        line(&Event::Access(a)),
        "VW 16 12.000345 1 0xfebf0010 0x100f0e0d0c0b0a090807060504030201 0x555555554a2b 4242 seq=17 proc=4240\n"
    );

    let map = Event::Map(Map {
        time: Timestamp::from_secs_micros(0, 1000),
        map_id: 1,
        phys: 0,
        virt: 0x7f12_a000,
        len: 0x1000,
        pc: 0x4011c6,
        pid: 7,
        ext: Ext {
            seq: Some(0),
            process: None,
            hook: None,
        },
        path: Some("/tmp/my bar%1\n".into()),
    });
    assert_eq!(
        line(&map),
        "MAP 0.001000 1 0x0 0x7f12a000 0x1000 0x4011c6 7 seq=0 path=/tmp/my%20bar%251%0a\n"
    );

    let lost = Event::Lost(Lost {
        count: 3,
        ext: Ext {
            seq: Some(99),
            process: Some(1),
            hook: None,
        },
    });
    assert_eq!(line(&lost), "MARK 0.000000 Lost 3 events.\tseq=99 proc=1\n");

    let mark = Event::Mark(Mark {
        time: Timestamp::from_secs_micros(1, 0),
        text: "a\tb\\c".into(),
        ext: Ext::default(),
    });
    assert_eq!(line(&mark), "MARK 1.000000 a\\x09b\\\\c\t\n");

    // A mark that would read back as the lost-events line is escaped.
    let mark = Event::Mark(Mark {
        time: Timestamp::ZERO,
        text: "Lost 3 events.".into(),
        ext: Ext::default(),
    });
    assert_eq!(line(&mark), "MARK 0.000000 \\x4cost 3 events.\t\n");
    for event in [mark, lost, map] {
        assert_eq!(parse(line(&event).as_bytes()), vec![event]);
    }
}

#[test]
fn writer_rejects_what_text_cannot_carry() {
    let mut w = TextWriter::new(Vec::new());
    let bad_version = Event::Version(Version {
        version: "2007 0824".into(),
    });
    assert_eq!(
        w.write_event(&bad_version).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::InvalidInput)
    );
    assert!(w.write_event(&Event::PciDev(pcidev("two words"))).is_err());
    assert_eq!(w.finish().expect("Vec"), b"", "nothing is half-written");
    let mut w = BinaryWriter::new(Vec::new()).expect("Vec");
    let huge = Event::Mark(Mark {
        time: Timestamp::ZERO,
        text: "x".repeat(binary::MAX_STRING_LEN + 1),
        ext: Ext::default(),
    });
    assert!(w.write_event(&huge).is_err());
    assert_eq!(w.finish().expect("Vec").len(), binary::HEADER_LEN);
}

const KERNEL_LOG: &str = "# tracer: mmiotrace\r\n\
#\r\n\
VERSION 20070824\r\n\
PCIDEV 0000 80861237 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 \r\n\
PCIDEV 0300 10de1c82 10 fd000000 e000000c 0 e200000c 0 e001 0 1000000 10000000 0 2000000 0 80 80000 nvidia\r\n\
\r\n\
MAP 0.001000 1 0xfd000000 0xffffc90000080000 0x1000000 0x0 0\r\n\
R 4 0.001011 1 0xfd000000 0x138000a1 0x0 0\r\n\
W 4 0.001020 1 0xfd000140 0x0 0x0 0\r\n\
MARK 0.000000 Lost 2 events.\r\n\
R 4 0.0010";

#[test]
fn reads_a_real_kernel_log_leniently() {
    let items = read_text(KERNEL_LOG);
    let kinds: Vec<String> = items
        .iter()
        .map(|item| match item {
            Ok(Item::Event(e)) => e.kind_name().to_string(),
            Ok(Item::Truncated(t)) => format!("truncated at {} ({} bytes)", t.position, t.bytes),
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "VERSION",
            "PCIDEV",
            "PCIDEV",
            "MAP",
            "R",
            "W",
            "LOST",
            "truncated at trace.txt:11:1 (10 bytes)"
        ]
    );
    let Ok(Item::Event(Event::PciDev(p))) = &items[1] else {
        panic!("{:?}", items[1]);
    };
    assert_eq!(p.driver, "");
    assert_eq!(p.vendor, 0x8086);
}

#[test]
fn truncation_can_be_fatal() {
    let options = ReadOptions::default()
        .with_name("trace.txt")
        .with_fatal_truncation(true);
    let last = TextReader::with_options(KERNEL_LOG.as_bytes(), options)
        .last()
        .expect("items");
    assert_eq!(
        last.expect_err("fatal").to_string(),
        "trace.txt:11:1: the trace ends in the middle of a record (10 bytes cut off)"
    );
}

#[test]
fn a_wide_value_may_have_leading_zeros_up_to_twice_its_width() {
    let line = "VR 16 12.000345 1 0xfebf0010 0x00000000000000000000000000000001 0x0 0\n";
    let items = read_text(line);
    assert_eq!(items.len(), 1);
    assert!(items[0].is_ok(), "{items:?}");
}

#[test]
fn malformed_lines_name_line_and_column() {
    let ok = "R 4 12.000345 1 0xfebf0010 0x1234 0x0 0\n";
    let cases = [
        (
            "R 4 12.000345 1 0xfebf0010 0x 0x0 0\n",
            "trace.txt:2:30: expected a hex value after \"0x\"",
        ),
        (
            "R 3 12.000345 1 0xfebf0010 0x1 0x0 0\n",
            "trace.txt:2:3: the width must be 1, 2, 4 or 8 (wider accesses use VR/VW lines)",
        ),
        (
            "R 1 12.000345 1 0xfebf0010 0x100 0x0 0\n",
            "trace.txt:2:28: the value does not fit in 1 bytes",
        ),
        (
            "R 4 12.00034 1 0xfebf0010 0x1 0x0 0\n",
            "trace.txt:2:13: expected 6 digits of microseconds in the time, found a second space",
        ),
        (
            "R 4 12.000345 1 0x1ffffffffffffffff 0x1 0x0 0\n",
            "trace.txt:2:19: the physical address does not fit in 64 bits",
        ),
        (
            "R 4 12.000345 99999999999 0x1 0x1 0x0 0\n",
            "trace.txt:2:15: the map id is too large (the maximum is 4294967295)",
        ),
        (
            "R 4 12.000345 1 0xfebf0010 0x1 0x0\n",
            "trace.txt:2:35: the line ends before the pid",
        ),
        (
            "R 4 12.000345 1 0xfebf0010 0x1 0x0 0 seq=1 seq=2\n",
            "trace.txt:2:44: duplicate seq= field",
        ),
        (
            "R 4 12.000345 1 0xfebf0010 0x1 0x0 0 path=/x\n",
            "trace.txt:2:38: unknown extension field \"path=\" on this line",
        ),
        (
            "R 4 12.000345 1 0xfebf00g0 0x1 0x0 0\n",
            "trace.txt:2:25: unexpected \"g\" in the physical address",
        ),
        (
            "X 4 12.000345\n",
            "trace.txt:2:1: unknown record type \"X\" (expected R, W, VR, VW, MAP, UNMAP, UNKNOWN, MARK, PCIDEV, VERSION or REPEAT)",
        ),
        (
            "MARK 1.000000 \\q\t\n",
            "trace.txt:2:15: expected \"\\\\\" or \"\\xHH\" in the escaped MARK text",
        ),
        (
            "REPEAT R 4 0.000111 1 0xfebf0008 0x0 0x4000 7 len=1 end=0.000900\n",
            "trace.txt:2:65: a REPEAT line needs count=, len= and end=",
        ),
        (
            "REPEAT R 4 0.000111 1 0xfebf0008 0x0 0x4000 7 count=2 len=0 end=0.000900\n",
            "trace.txt:2:59: len= must be at least 1",
        ),
        (
            "REPEAT R 4 0.000111 1 0xfebf0008 0x0 0x4000 7 count=2 len=1 end=0.000900 until=0x100000000\n",
            "trace.txt:2:80: the value does not fit in 4 bytes",
        ),
        (
            "PCIDEV 300 10de1c82 10 0 0 0 0 0 0 0 0 0 0 0 0 0 0 \n",
            "trace.txt:2:8: expected exactly 4 hex digits for the bus and devfn",
        ),
        // Issue 13: up to 2×width digits, leading zeros included.
        (
            "VR 16 12.000345 1 0xfebf0010 0x000000000000000000000000000000001 0x0 0\n",
            "trace.txt:2:32: a 16-byte value has at most 32 hex digits, this one has 33",
        ),
        (
            "MARK 0.000000 Lost 18446744073709551616 events.\n",
            "trace.txt:2:20: the lost-event count does not fit in 64 bits",
        ),
    ];
    for (bad, expected) in cases {
        assert_eq!(first_error(&format!("{ok}{bad}")), expected, "for {bad:?}");
    }
}

#[test]
fn invalid_utf8_is_an_error() {
    let input = b"MARK 1.000000 caf\xe9\n";
    let err = TextReader::new(&input[..])
        .find_map(Result::err)
        .expect("an error");
    assert_eq!(
        err.to_string(),
        "<input>:1:18: the MARK text is not valid UTF-8"
    );
}

#[test]
fn a_huge_line_is_an_error_and_reading_goes_on() {
    let mut input = vec![b'R'; 3 << 20];
    input.extend_from_slice(b"\nMARK 1.000000 after\n");
    let items: Vec<_> = TextReader::new(&input[..]).collect();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(
        items[0].as_ref().expect_err("too long").to_string(),
        "<input>:1:1: line is longer than 1048576 bytes"
    );
    assert!(matches!(&items[1], Ok(Item::Event(Event::Mark(m))) if m.text == "after"));
}

#[test]
fn reading_goes_on_after_a_bad_line() {
    let items = read_text("garbage\nMARK 1.000000 ok\n");
    assert!(items[0].is_err());
    assert!(matches!(&items[1], Ok(Item::Event(Event::Mark(_)))));
}

#[test]
fn a_tab_in_a_kernel_mark_is_plain_text() {
    assert_eq!(
        parse(b"MARK 1.000000 col1\tcol2\n"),
        vec![Event::Mark(Mark {
            time: Timestamp::from_secs_micros(1, 0),
            text: "col1\tcol2".into(),
            ext: Ext::default(),
        })]
    );
}

#[test]
fn format_detection() {
    assert_eq!(Format::detect(b""), Format::Text);
    assert_eq!(Format::detect(b"VERSION 20070824\n"), Format::Text);
    assert_eq!(Format::detect(&binary::MAGIC), Format::Binary);
    let binary = to_binary(&[]);
    let reader = TraceReader::new(&binary[..], ReadOptions::default()).expect("header");
    assert_eq!(reader.format(), Format::Binary);
    assert_eq!(reader.count(), 0);
}

#[test]
fn binary_errors_name_the_offset() {
    let mut binary = to_binary(&[Event::Lost(Lost {
        count: 1,
        ext: Ext::default(),
    })]);
    // META subkind 15.
    binary.push(0x7f);
    let err = TraceReader::new(&binary[..], ReadOptions::default().with_name("t.mtb"))
        .expect("header")
        .find_map(Result::err)
        .expect("an error");
    assert_eq!(err.to_string(), "t.mtb:@14: unknown record tag 0x7f");

    let mut future = to_binary(&[]);
    future[8] = 9;
    let err = TraceReader::new(&future[..], ReadOptions::default().with_name("t.mtb"))
        .expect_err("version 9");
    assert_eq!(
        err.to_string(),
        "t.mtb: binary trace version 9 is not supported (this build reads version 2)"
    );

    // Version 1 had no short access records; nothing has been released
    // that writes it, so it is rejected rather than read.
    let mut old = to_binary(&[]);
    old[8] = 1;
    let err = TraceReader::new(&old[..], ReadOptions::default().with_name("old.mtb"))
        .expect_err("version 1");
    assert_eq!(
        err.to_string(),
        "old.mtb: binary trace version 1 is not supported (this build reads version 2)"
    );
}

#[test]
fn a_cut_binary_trace_reports_truncation() {
    let events = vec![
        Event::Mark(Mark {
            time: Timestamp::from_nanos(5),
            text: "hello".into(),
            ext: Ext::default(),
        });
        2
    ];
    let mut binary = to_binary(&events);
    binary.truncate(binary.len() - 2);
    let items: Vec<_> = TraceReader::new(&binary[..], ReadOptions::default())
        .expect("header")
        .map(|i| i.expect("not fatal"))
        .collect();
    assert_eq!(items.len(), 2);
    assert!(matches!(&items[1], Item::Truncated(t) if t.bytes == 6));
}

#[test]
fn repeat_lines_read_and_write_back_exactly() {
    let text = "REPEAT R 4 0.000111 1 0xfebf0008 0x0 0x4000 7 count=999 len=2 end=0.002300 seq=12 proc=6 until=0x80000000\n\
                REPEAT W 16 1.000000 2 0x10 0x0000000000000000000000000000abcd 0x0 8 count=1 len=1 end=1.000000\n";
    let events = parse(text.as_bytes());
    assert_eq!(
        events[0],
        Event::Repeat(Box::new(Repeat {
            dir: Direction::Read,
            time: Timestamp::from_secs_micros(0, 111),
            end: Timestamp::from_secs_micros(0, 2300),
            map_id: 1,
            phys: 0xfebf_0008,
            value: Value::from_u64(4, 0).expect("kernel width"),
            pc: 0x4000,
            pid: 7,
            count: 999,
            len: 2,
            until: Value::from_u64(4, 0x8000_0000),
            ext: Ext {
                seq: Some(12),
                process: Some(6),
                hook: None,
            },
        }))
    );
    let Event::Repeat(wide) = &events[1] else {
        panic!("{:?}", events[1]);
    };
    assert_eq!(wide.value.width(), 16);
    assert_eq!(wide.accesses(), 1);
    assert_eq!(String::from_utf8(to_text(&events)).expect("UTF-8"), text);
    assert_eq!(parse(&to_binary(&events)), events);
    // Keys may come in any order when read.
    let reordered = "REPEAT R 4 0.000111 1 0xfebf0008 0x0 0x4000 7 end=0.002300 len=2 count=999 until=0x80000000 proc=6 seq=12\n";
    assert_eq!(parse(reordered.as_bytes())[0], events[0]);
}

#[test]
fn hooked_accesses_carry_their_rule_and_the_devices_value() {
    let mut read = access(Direction::Read, 2, 0x1234);
    read.ext.seq = Some(7);
    read.ext.hook = Some(Hooked {
        rule: 2,
        device: Some(0x1235),
    });
    let mut write = access(Direction::Write, 4, 0x1);
    write.ext.hook = Some(Hooked {
        rule: 0,
        device: None,
    });
    let text = format!(
        "{}{}",
        line(&Event::Access(read.clone())),
        line(&Event::Access(write.clone()))
    );
    assert_eq!(
        text,
        "R 2 12.000345 1 0xfebf0010 0x1234 0x0 0 seq=7 hook=2 dev=0x1235\n\
         W 4 12.000345 1 0xfebf0010 0x1 0x0 0 hook=0 dev=none\n"
    );
    let back: Vec<Event> = read_text(&text)
        .into_iter()
        .map(|item| match item.expect("reads back") {
            Item::Event(event) => event,
            other => panic!("not an event: {other:?}"),
        })
        .collect();
    assert_eq!(back, [Event::Access(read), Event::Access(write)]);
    // The kernel's fields come first, so a reader that takes the leading
    // fields (demmio's sscanf) sees the value the program saw.
    assert!(text.starts_with("R 2 12.000345 1 0xfebf0010 0x1234 0x0 0 "));
}

#[test]
fn hook_fields_are_checked() {
    let base = "R 2 0.000001 1 0x10 0x1 0x0 0";
    for (fields, message) in [
        (
            " hook=1",
            "trace.txt:1:31: a hook= field needs a dev= field (the device's value, or none)",
        ),
        (
            " dev=0x1",
            "trace.txt:1:31: a dev= field needs a hook= field",
        ),
        (
            " hook=1 dev=0x10000",
            "trace.txt:1:49: the dev= value does not fit in 2 bytes",
        ),
        (
            " hook=1 dev=nope",
            "trace.txt:1:42: expected \"0x\" and the dev= value, found \"n\"",
        ),
        (
            " hook=x dev=none",
            "trace.txt:1:36: expected a decimal hook= rule number, found \"x\"",
        ),
    ] {
        assert_eq!(
            first_error(&format!("{base}{fields}\n")),
            message,
            "{fields}"
        );
    }
    assert_eq!(
        first_error("MAP 0.000001 1 0x0 0x0 0x1000 0x0 0 hook=1 dev=none\n"),
        "trace.txt:1:37: unknown extension field \"hook=\" on this line"
    );
}
