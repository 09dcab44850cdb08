//! QEMU's own log of device accesses: the device's view of what a guest did.
//!
//! QEMU (7.2 and later) writes one line per trace event to its log when run
//! with `-trace 'memory_region_ops_*' -trace 'pci_update_mappings_*' -D FILE`:
//!
//! ```text
//! 16555@1796588908.248461:memory_region_ops_read cpu 3 mr 0x7f9763c9aa60 addr 0xfebc0000 value 0x140240 size 4 name 'e1000-mmio'
//! 16301@1796588861.325326:pci_update_mappings_add e1000 00:04.0 0,0xfebc0000+0x20000
//! ```
//!
//! - the prefix is QEMU's process id and the host time in seconds and
//!   microseconds;
//! - `cpu` is the vCPU index, -1 for an access no vCPU made (DMA, a timer);
//! - `addr` is the absolute guest-physical address of a memory region that
//!   sits in the system address space, or the port of an I/O region;
//! - `value` and `size` are what the device model's callback got or gave:
//!   an access narrower, wider or less aligned than the model implements
//!   reaches it as the pieces QEMU splits it into.
//!
//! With `-trace 'pci_cfg_*'` it also reads the guest's PCI configuration
//! accesses, and with `mmiotrace vm`'s TCG plugin (`-plugin … -d plugin`)
//! the plugin's lines, which carry no prefix:
//!
//! ```text
//! 13151@1796591957.598313:pci_cfg_read e1000 00:04.0 @0x0 -> 0x100e8086
//! 13151@1796591957.599415:pci_cfg_write e1000 00:04.0 @0x10 <- 0xfebc0000
//! mmiotrace-mem cpu 2 pc 0xffffffffc01a2b3c addr 0xfebc0008 size 4 r
//! mmiotrace-pio cpu 0 pc 0xffffffff81a0b2c4
//! ```
//!
//! [`QemuLogReader`] streams the events it knows and skips every other line
//! (other trace events, QEMU's warnings); a known event that does not parse
//! is an error naming the line and column.

use std::io::BufRead;
use std::sync::Arc;

use crate::error::{Error, Location, Position};
use crate::event::Direction;

/// One device access as QEMU logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuAccess {
    /// Host time of the log line, in microseconds.
    pub time_us: u64,
    /// The vCPU that made the access; -1 when none did.
    pub cpu: i32,
    pub dir: Direction,
    /// Guest-physical address (memory regions) or port (I/O regions).
    pub addr: u64,
    pub value: u64,
    /// Bytes, 1 to 8.
    pub size: u8,
    /// The memory region's name, e.g. `e1000-mmio`.
    pub region: String,
}

/// A PCI BAR placed in (`added`) or taken out of the guest's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuBar {
    pub time_us: u64,
    pub added: bool,
    /// QEMU's device type, e.g. `e1000`.
    pub device: String,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
    pub bar: u8,
    pub addr: u64,
    pub size: u64,
}

impl QemuBar {
    /// The device's address as Linux names it in sysfs: `0000:00:04.0`.
    pub fn pci_address(&self) -> String {
        format!(
            "0000:{:02x}:{:02x}.{:x}",
            self.bus, self.slot, self.function
        )
    }
}

/// A read or write of a PCI function's configuration space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    pub time_us: u64,
    pub dir: Direction,
    pub device: String,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
    /// Byte offset in configuration space.
    pub offset: u16,
    /// The value read or written; the log does not give the access's width.
    pub value: u32,
}

/// `mmiotrace-mem`: an instruction on vCPU `cpu` at `pc` just made an
/// access that reached I/O (the events it caused precede this line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuMemPc {
    pub cpu: u32,
    pub pc: u64,
    /// Guest-physical address of the access as the instruction made it;
    /// `None` when QEMU could not tell (`addr unknown`).
    pub addr: Option<u64>,
    pub size: u8,
    pub dir: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuEvent {
    Access(QemuAccess),
    Bar(QemuBar),
    Config(QemuConfig),
    /// The plugin's line after a memory access that reached I/O.
    MemPc(QemuMemPc),
    /// The plugin's line before a port I/O instruction runs on `cpu`.
    PortPc {
        cpu: u32,
        pc: u64,
    },
}

/// Streams [`QemuEvent`]s from a QEMU log.
#[derive(Debug)]
pub struct QemuLogReader<R> {
    input: R,
    name: Arc<str>,
    line: String,
    line_no: u64,
}

impl<R: BufRead> QemuLogReader<R> {
    pub fn new(input: R, name: impl Into<Arc<str>>) -> Self {
        QemuLogReader {
            input,
            name: name.into(),
            line: String::new(),
            line_no: 0,
        }
    }

    /// The next known event, or `None` at the end of the log.
    pub fn next_event(&mut self) -> Result<Option<QemuEvent>, Error> {
        loop {
            self.line.clear();
            let read = self
                .input
                .read_line(&mut self.line)
                .map_err(|source| Error::Io {
                    name: self.name.clone(),
                    source,
                })?;
            if read == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            let line = self.line.trim_end_matches(['\n', '\r']);
            if let Some(event) = parse_line(line).map_err(|(column, message)| Error::Syntax {
                position: Position {
                    name: self.name.clone(),
                    location: Location::Line {
                        line: self.line_no,
                        column: column as u64 + 1,
                    },
                },
                message,
            })? {
                return Ok(Some(event));
            }
        }
    }
}

impl<R: BufRead> Iterator for QemuLogReader<R> {
    type Item = Result<QemuEvent, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// A parse failure: the byte column where it happened and what was expected.
type ParseError = (usize, String);

/// Parses one line; `Ok(None)` for lines that are not events this reader knows.
fn parse_line(line: &str) -> Result<Option<QemuEvent>, ParseError> {
    if let Some(args) = line.strip_prefix("mmiotrace-mem ") {
        return parse_mem_pc(args, "mmiotrace-mem ".len()).map(Some);
    }
    if let Some(args) = line.strip_prefix("mmiotrace-pio ") {
        let mut fields = Fields {
            text: args,
            base: "mmiotrace-pio ".len(),
            pos: 0,
        };
        let cpu = fields.keyword_number("cpu")?;
        let pc = fields.keyword_hex("pc")?;
        fields.end()?;
        return Ok(Some(QemuEvent::PortPc { cpu, pc }));
    }
    // "PID@SECS.USECS:EVENT ARGS"
    let Some(colon) = line.find(':') else {
        return Ok(None);
    };
    let prefix = &line[..colon];
    let Some((pid, time)) = prefix.split_once('@') else {
        return Ok(None);
    };
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let rest = &line[colon + 1..];
    let (event, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let kind = match event {
        "memory_region_ops_read" => Kind::Access(Direction::Read),
        "memory_region_ops_write" => Kind::Access(Direction::Write),
        "pci_update_mappings_add" => Kind::Bar(true),
        "pci_update_mappings_del" => Kind::Bar(false),
        "pci_cfg_read" => Kind::Config(Direction::Read),
        "pci_cfg_write" => Kind::Config(Direction::Write),
        _ => return Ok(None),
    };
    let time_us = parse_time(time).ok_or_else(|| {
        (
            pid.len() + 1,
            format!("expected SECONDS.MICROSECONDS after '@', found {time:?}"),
        )
    })?;
    let mut fields = Fields {
        text: args,
        base: colon + 1 + event.len() + 1,
        pos: 0,
    };
    Ok(Some(match kind {
        Kind::Access(dir) => {
            let cpu = fields.keyword_value("cpu")?;
            let cpu = cpu
                .1
                .parse::<i32>()
                .map_err(|_| (cpu.0, format!("expected a vCPU number, found {:?}", cpu.1)))?;
            fields.keyword_value("mr")?;
            let addr = fields.keyword_hex("addr")?;
            let value = fields.keyword_hex("value")?;
            let size = fields.keyword_value("size")?;
            let size = match size.1.parse::<u8>() {
                Ok(s @ (1 | 2 | 4 | 8)) => s,
                _ => {
                    return Err((
                        size.0,
                        format!("expected a size of 1, 2, 4 or 8, found {:?}", size.1),
                    ));
                }
            };
            let region = fields.quoted_name()?;
            QemuEvent::Access(QemuAccess {
                time_us,
                cpu,
                dir,
                addr,
                value,
                size,
                region,
            })
        }
        Kind::Config(dir) => {
            // "e1000 00:04.0 @0x10 -> 0xfebc0000" (a write has "<-")
            let device = fields.word()?;
            let (bus, slot, function) = fields.bdf()?;
            let offset = fields.word()?;
            let offset = offset
                .1
                .strip_prefix('@')
                .and_then(parse_hex)
                .and_then(|o| u16::try_from(o).ok())
                .ok_or_else(|| {
                    (
                        offset.0,
                        format!("expected @0xOFFSET, found {:?}", offset.1),
                    )
                })?;
            let arrow = fields.word()?;
            let want = if dir == Direction::Read { "->" } else { "<-" };
            if arrow.1 != want {
                return Err((arrow.0, format!("expected {want:?}, found {:?}", arrow.1)));
            }
            let value = fields.word()?;
            let value = parse_hex(value.1)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    (
                        value.0,
                        format!("expected a 32-bit 0x-prefixed value, found {:?}", value.1),
                    )
                })?;
            QemuEvent::Config(QemuConfig {
                time_us,
                dir,
                device: device.1.to_owned(),
                bus,
                slot,
                function,
                offset,
                value,
            })
        }
        Kind::Bar(added) => {
            // "e1000 00:04.0 0,0xfebc0000+0x20000"
            let device = fields.word()?;
            let (bus, slot, function) = fields.bdf()?;
            let place = fields.word()?;
            let (bar, addr, size) = parse_bar_place(place.1).ok_or_else(|| {
                (
                    place.0,
                    format!("expected BAR,0xADDRESS+0xSIZE, found {:?}", place.1),
                )
            })?;
            QemuEvent::Bar(QemuBar {
                time_us,
                added,
                device: device.1.to_owned(),
                bus,
                slot,
                function,
                bar,
                addr,
                size,
            })
        }
    }))
}

enum Kind {
    Access(Direction),
    Bar(bool),
    Config(Direction),
}

/// `cpu N pc 0xPC addr 0xADDR size N r|w`, the plugin's memory line.
fn parse_mem_pc(args: &str, base: usize) -> Result<QemuEvent, ParseError> {
    let mut fields = Fields {
        text: args,
        base,
        pos: 0,
    };
    let cpu = fields.keyword_number("cpu")?;
    let pc = fields.keyword_hex("pc")?;
    let addr = match fields.keyword_value("addr")? {
        (_, "unknown") => None,
        (column, text) => Some(parse_hex(text).ok_or_else(|| {
            (
                column,
                format!("expected a 0x-prefixed hex addr or \"unknown\", found {text:?}"),
            )
        })?),
    };
    let size = fields.keyword_value("size")?;
    let size = match size.1.parse::<u8>() {
        Ok(s) if s.is_power_of_two() && s <= 64 => s,
        _ => {
            return Err((
                size.0,
                format!("expected a size of 1 to 64 bytes, found {:?}", size.1),
            ));
        }
    };
    let dir = match fields.word()? {
        (_, "r") => Direction::Read,
        (_, "w") => Direction::Write,
        (column, other) => return Err((column, format!("expected r or w, found {other:?}"))),
    };
    fields.end()?;
    Ok(QemuEvent::MemPc(QemuMemPc {
        cpu,
        pc,
        addr,
        size,
        dir,
    }))
}

fn parse_time(text: &str) -> Option<u64> {
    let (secs, micros) = text.split_once('.')?;
    let secs: u64 = secs.parse().ok()?;
    if micros.len() != 6 {
        return None;
    }
    let micros: u64 = micros.parse().ok()?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

fn parse_hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

fn parse_bdf(text: &str) -> Option<(u8, u8, u8)> {
    let (bus, rest) = text.split_once(':')?;
    let (slot, function) = rest.split_once('.')?;
    Some((
        u8::from_str_radix(bus, 16).ok()?,
        u8::from_str_radix(slot, 16).ok()?,
        u8::from_str_radix(function, 16).ok()?,
    ))
}

fn parse_bar_place(text: &str) -> Option<(u8, u64, u64)> {
    let (bar, rest) = text.split_once(',')?;
    let (addr, size) = rest.split_once('+')?;
    Some((bar.parse().ok()?, parse_hex(addr)?, parse_hex(size)?))
}

/// Space-separated fields of an event's arguments, with their columns.
struct Fields<'a> {
    text: &'a str,
    /// Column of `text` in the line.
    base: usize,
    pos: usize,
}

impl<'a> Fields<'a> {
    /// The next space-separated word and its column.
    fn word(&mut self) -> Result<(usize, &'a str), ParseError> {
        let rest = &self.text[self.pos..];
        let skipped = rest.len() - rest.trim_start_matches(' ').len();
        let start = self.pos + skipped;
        let rest = &self.text[start..];
        let len = rest.find(' ').unwrap_or(rest.len());
        if len == 0 {
            return Err((self.base + start, "the line ends early".to_owned()));
        }
        self.pos = start + len;
        Ok((self.base + start, &rest[..len]))
    }

    /// `KEYWORD VALUE`: the value and its column.
    fn keyword_value(&mut self, keyword: &str) -> Result<(usize, &'a str), ParseError> {
        let found = self.word()?;
        if found.1 != keyword {
            return Err((
                found.0,
                format!("expected {keyword:?}, found {:?}", found.1),
            ));
        }
        self.word()
    }

    /// `BUS:SLOT.FN`.
    fn bdf(&mut self) -> Result<(u8, u8, u8), ParseError> {
        let bdf = self.word()?;
        parse_bdf(bdf.1).ok_or_else(|| (bdf.0, format!("expected BUS:SLOT.FN, found {:?}", bdf.1)))
    }

    /// `KEYWORD N`, a decimal number that fits a u32.
    fn keyword_number(&mut self, keyword: &str) -> Result<u32, ParseError> {
        let (column, text) = self.keyword_value(keyword)?;
        text.parse().map_err(|_| {
            (
                column,
                format!("expected a number after {keyword:?}, found {text:?}"),
            )
        })
    }

    /// Nothing but spaces left.
    fn end(&self) -> Result<(), ParseError> {
        let rest = &self.text[self.pos..];
        let trimmed = rest.trim_start_matches(' ');
        if trimmed.is_empty() {
            Ok(())
        } else {
            Err((
                self.base + self.text.len() - trimmed.len(),
                format!("unexpected {trimmed:?} at the end of the line"),
            ))
        }
    }

    fn keyword_hex(&mut self, keyword: &str) -> Result<u64, ParseError> {
        let (column, text) = self.keyword_value(keyword)?;
        parse_hex(text).ok_or_else(|| {
            (
                column,
                format!("expected a 0x-prefixed hex {keyword}, found {text:?}"),
            )
        })
    }

    /// `name 'REGION'`, the last field; region names may hold spaces.
    fn quoted_name(&mut self) -> Result<String, ParseError> {
        let found = self.word()?;
        if found.1 != "name" {
            return Err((found.0, format!("expected \"name\", found {:?}", found.1)));
        }
        let rest = self.text[self.pos..].trim_start_matches(' ');
        let column = self.base + self.text.len() - rest.len();
        rest.strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .map(str::to_owned)
            .ok_or_else(|| (column, "expected a region name in single quotes".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Result<Vec<QemuEvent>, Error> {
        QemuLogReader::new(text.as_bytes(), "qemu.log").collect()
    }

    #[test]
    fn reads_accesses_and_bars_and_skips_the_rest() {
        let log = "\
2026-12-06T20:27:41.279684Z qemu-system-x86_64: warning: hub 0 is not connected to host network
16301@1796588861.294285:memory_region_ops_write cpu 0 mr 0x55a43f2dbfc0 addr 0x70 value 0x8f size 1 name 'rtc-index'
16301@1796588861.325326:pci_update_mappings_add e1000 00:04.0 0,0xfebc0000+0x20000
16299@1796588861.289787:memory_region_ops_write cpu -1 mr 0x55a43f697db0 addr 0xfee00000 value 0x0 size 4 name 'vtd-ir'
16301@1796588861.325000:some_other_event x 1
16555@1796588908.248461:memory_region_ops_read cpu 3 mr 0x7f9763c9aa60 addr 0xfebc0000 value 0x140240 size 4 name 'e1000 mmio'
";
        let events = events(log).expect("parses");
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0],
            QemuEvent::Access(QemuAccess {
                time_us: 1796588861294285,
                cpu: 0,
                dir: Direction::Write,
                addr: 0x70,
                value: 0x8f,
                size: 1,
                region: "rtc-index".into(),
            })
        );
        let QemuEvent::Bar(bar) = &events[1] else {
            panic!("expected a BAR: {:?}", events[1]);
        };
        assert!(bar.added);
        assert_eq!(
            (bar.device.as_str(), bar.bar, bar.addr, bar.size),
            ("e1000", 0, 0xfebc0000, 0x20000)
        );
        assert_eq!(bar.pci_address(), "0000:00:04.0");
        let QemuEvent::Access(dma) = &events[2] else {
            panic!("expected an access");
        };
        assert_eq!(dma.cpu, -1);
        let QemuEvent::Access(read) = &events[3] else {
            panic!("expected an access");
        };
        assert_eq!(
            (read.dir, read.value, read.region.as_str()),
            (Direction::Read, 0x140240, "e1000 mmio")
        );
    }

    #[test]
    fn reads_config_accesses_and_the_plugin_lines() {
        let log = "\
13151@1796591957.598313:pci_cfg_read e1000 00:04.0 @0x0 -> 0x100e8086
13151@1796591957.599415:pci_cfg_write e1000 00:04.0 @0x10 <- 0xfebc0000
mmiotrace-mem cpu 2 pc 0xffffffffc01a2b3c addr 0xfebc0008 size 4 r
mmiotrace-pio cpu 0 pc 0xffffffff81a0b2c4
";
        let parsed = events(log).expect("parses");
        assert_eq!(
            parsed[0],
            QemuEvent::Config(QemuConfig {
                time_us: 1796591957598313,
                dir: Direction::Read,
                device: "e1000".into(),
                bus: 0,
                slot: 4,
                function: 0,
                offset: 0,
                value: 0x100e8086,
            })
        );
        let QemuEvent::Config(write) = &parsed[1] else {
            panic!("expected a config write: {:?}", parsed[1]);
        };
        assert_eq!(
            (write.dir, write.offset, write.value),
            (Direction::Write, 0x10, 0xfebc0000)
        );
        assert_eq!(
            parsed[2],
            QemuEvent::MemPc(QemuMemPc {
                cpu: 2,
                pc: 0xffffffffc01a2b3c,
                addr: Some(0xfebc0008),
                size: 4,
                dir: Direction::Read,
            })
        );
        assert_eq!(
            parsed[3],
            QemuEvent::PortPc {
                cpu: 0,
                pc: 0xffffffff81a0b2c4
            }
        );
        let unknown = events("mmiotrace-mem cpu 3 pc 0x5 addr unknown size 4 w\n").expect("parses");
        assert!(matches!(&unknown[0], QemuEvent::MemPc(m) if m.addr.is_none() && m.pc == 5));
        let err = events("mmiotrace-mem cpu 2 pc 0x1 addr 0x2 size 4 x\n").expect_err("r or w");
        assert_eq!(
            err.to_string(),
            "qemu.log:1:44: expected r or w, found \"x\""
        );
        let err = events("mmiotrace-pio cpu 0 pc 0x1 extra\n").expect_err("trailing text");
        assert!(err.to_string().contains("unexpected \"extra\""), "{err}");
        let err = events("1@1.000001:pci_cfg_write e1000 00:04.0 @0x10 -> 0x1\n")
            .expect_err("a write's arrow");
        assert!(err.to_string().contains("expected \"<-\""), "{err}");
    }

    #[test]
    fn a_broken_known_event_names_line_and_column() {
        let log = "\
16301@1796588861.294285:memory_region_ops_write cpu 0 mr 0x1 addr 0x70 value 0x8f size 1 name 'rtc'
16301@1796588861.294285:memory_region_ops_read cpu 0 mr 0x1 addr 70 value 0x8f size 1 name 'rtc'
";
        let err = events(log).expect_err("the second line is broken");
        assert_eq!(
            err.to_string(),
            "qemu.log:2:66: expected a 0x-prefixed hex addr, found \"70\""
        );
        let err = events(
            "1@1.000001:memory_region_ops_read cpu 0 mr 0x1 addr 0x0 value 0x0 size 3 name 'x'\n",
        )
        .expect_err("size 3");
        assert!(err.to_string().contains("size of 1, 2, 4 or 8"), "{err}");
        let err = events("1@1.000001:pci_update_mappings_del e1000 00:04 0,0x1+0x2\n")
            .expect_err("bad BDF");
        assert!(
            err.to_string()
                .starts_with("qemu.log:1:42: expected BUS:SLOT.FN, found \"00:04\""),
            "{err}"
        );
        let err = events("1@1.1:memory_region_ops_read cpu 0\n").expect_err("bad time");
        assert!(err.to_string().contains("SECONDS.MICROSECONDS"), "{err}");
    }
}
