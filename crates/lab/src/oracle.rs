//! QEMU's log as the oracle for a trace.
//!
//! - [`DeviceLog::read`] keeps the accesses to chosen memory regions and cuts
//!   them into named parts at the lab's markers: lines written to the
//!   isa-debugcon port, `begin NAME` and `end NAME`.
//! - [`compare`] checks a trace's accesses against one part, in order: the
//!   same direction, address, width and value, nothing missing and nothing
//!   doubled.
//!
//! An access that the device model implements in other sizes reaches it as
//! QEMU splits it: a narrower one as one access of the model's size at the
//! same address (the program gets the low bytes), a wider one as several at
//! consecutive addresses. [`compare`] joins them back the same way.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result, bail};
use mmiotrace_trace::qemu_log::{QemuAccess, QemuBar, QemuEvent, QemuLogReader};
use mmiotrace_trace::{Access, Direction, Event, Map, PciDev, ReadOptions, TraceReader};

/// The lab's marker port's region name in QEMU's log.
pub const DEBUGCON_REGION: &str = "isa-debugcon";

/// The parts of a QEMU log that the lab's markers delimit.
#[derive(Debug, Default)]
pub struct DeviceLog {
    /// Every BAR placement QEMU logged, in order.
    pub bars: Vec<QemuBar>,
    /// Accesses to the chosen regions between `begin NAME` and `end NAME`.
    pub parts: BTreeMap<String, Vec<QemuAccess>>,
    /// Every marker line, in order.
    pub markers: Vec<String>,
}

impl DeviceLog {
    /// Reads `path`, keeping accesses whose region is one of `regions`.
    pub fn read(path: &Path, regions: &[&str]) -> Result<DeviceLog> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut reader = QemuLogReader::new(
            BufReader::with_capacity(1 << 20, file),
            path.display().to_string(),
        );
        let mut log = DeviceLog::default();
        let mut line = Vec::new();
        let mut open: Option<String> = None;
        while let Some(event) = reader.next_event()? {
            match event {
                QemuEvent::Bar(bar) => log.bars.push(bar),
                QemuEvent::Access(access)
                    if access.region == DEBUGCON_REGION && access.dir == Direction::Write =>
                {
                    if access.value as u8 != b'\n' {
                        line.push(access.value as u8);
                        continue;
                    }
                    let marker = String::from_utf8_lossy(&line).into_owned();
                    line.clear();
                    if let Some(name) = marker.strip_prefix("begin ") {
                        if let Some(previous) = &open {
                            bail!("marker {marker:?} while {previous:?} is still open");
                        }
                        if log.parts.insert(name.to_owned(), Vec::new()).is_some() {
                            bail!("part {name:?} begins twice");
                        }
                        open = Some(name.to_owned());
                    } else if let Some(name) = marker.strip_prefix("end ") {
                        if open.as_deref() != Some(name) {
                            bail!("marker {marker:?} ends a part that is not open ({open:?})");
                        }
                        open = None;
                    }
                    log.markers.push(marker);
                }
                QemuEvent::Access(access) => {
                    if let Some(name) = &open
                        && regions.contains(&access.region.as_str())
                    {
                        log.parts.get_mut(name).expect("opened above").push(access);
                    }
                }
                QemuEvent::Config(_) | QemuEvent::MemPc(_) | QemuEvent::PortPc { .. } => {}
            }
        }
        if let Some(name) = open {
            bail!("part {name:?} never ends (the guest stopped inside it?)");
        }
        Ok(log)
    }

    /// The accesses of part `name`.
    pub fn part(&self, name: &str) -> Result<&[QemuAccess]> {
        self.parts.get(name).map(Vec::as_slice).with_context(|| {
            format!(
                "QEMU's log has no part {name:?} (markers: {:?})",
                self.markers
            )
        })
    }

    /// Where BAR `bar` of `device` (`0000:00:04.0`) was last placed.
    pub fn bar(&self, device: &str, bar: u8) -> Result<&QemuBar> {
        self.bars
            .iter()
            .rev()
            .find(|b| b.added && b.bar == bar && b.pci_address() == device)
            .with_context(|| format!("QEMU never placed BAR {bar} of {device}"))
    }
}

/// What a trace holds, in file order.
#[derive(Debug, Default)]
pub struct Trace {
    pub accesses: Vec<Access>,
    pub maps: Vec<Map>,
    pub pcidevs: Vec<PciDev>,
    pub marks: Vec<String>,
    /// Accesses between the MARKs `begin NAME` and `end NAME`, by NAME.
    pub parts: BTreeMap<String, Vec<Access>>,
    /// Events of kinds a complete trace of these programs never has
    /// (UNKNOWN, LOST), as text.
    pub anomalies: Vec<String>,
}

impl Trace {
    pub fn read(path: &Path) -> Result<Trace> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let options = ReadOptions::default()
            .with_name(path.display().to_string())
            .with_fatal_truncation(true);
        let mut reader = TraceReader::new(BufReader::new(file), options)?;
        let mut trace = Trace::default();
        let mut open: Option<String> = None;
        while let Some(event) = reader.read_ref()? {
            match event {
                Event::Access(access) => {
                    if let Some(name) = &open {
                        trace
                            .parts
                            .entry(name.clone())
                            .or_default()
                            .push(access.clone());
                    }
                    trace.accesses.push(access.clone());
                }
                Event::Mark(mark) if mark.text.starts_with("begin ") => {
                    open = Some(mark.text["begin ".len()..].to_owned());
                    trace.marks.push(mark.text.clone());
                }
                Event::Mark(mark) if mark.text.starts_with("end ") => {
                    open = None;
                    trace.marks.push(mark.text.clone());
                }
                Event::Map(map) => trace.maps.push(map.clone()),
                Event::PciDev(dev) => trace.pcidevs.push(dev.clone()),
                Event::Mark(mark) => trace.marks.push(mark.text.clone()),
                Event::Unknown(_) | Event::Lost(_) | Event::Repeat(_) => {
                    trace.anomalies.push(format!("{event:?}"))
                }
                Event::Version(_) | Event::Unmap(_) => {}
            }
        }
        Ok(trace)
    }

    /// The accesses that fall in `start..start+len`.
    pub fn accesses_in(&self, start: u64, len: u64) -> Vec<Access> {
        self.accesses
            .iter()
            .filter(|a| a.phys >= start && a.phys < start + len)
            .cloned()
            .collect()
    }
}

/// Checks that `trace` (in order) is exactly what the device saw (`device`,
/// in order). Returns how many accesses matched, or a report of the first
/// difference with the accesses around it.
pub fn compare(trace: &[Access], device: &[QemuAccess]) -> Result<usize, String> {
    let mut next = 0;
    for (index, access) in trace.iter().enumerate() {
        let width = usize::from(access.width());
        let mut seen = [0u8; 64];
        let mut covered = 0;
        let first = next;
        while covered < width {
            let Some(entry) = device.get(next) else {
                return Err(report(
                    trace,
                    device,
                    index,
                    first,
                    "the device's log ends before this traced access",
                ));
            };
            let want_addr = access.phys + covered as u64;
            if entry.dir != access.dir || entry.addr != want_addr {
                return Err(report(
                    trace,
                    device,
                    index,
                    first,
                    &format!(
                        "the device saw {} {} at {:#x} where the trace has {} {} at {:#x}",
                        dir_name(entry.dir),
                        entry.size,
                        entry.addr,
                        dir_name(access.dir),
                        width,
                        want_addr
                    ),
                ));
            }
            let size = usize::from(entry.size);
            let take = size.min(width - covered);
            seen[covered..covered + take].copy_from_slice(&entry.value.to_le_bytes()[..take]);
            covered += size;
            next += 1;
        }
        if seen[..width] != *access.value.as_le_bytes() {
            return Err(report(trace, device, index, first, "the values differ"));
        }
    }
    if next < device.len() {
        return Err(report(
            trace,
            device,
            trace.len(),
            next,
            &format!(
                "the device saw {} accesses more than the trace has",
                device.len() - next
            ),
        ));
    }
    Ok(trace.len())
}

/// The device's view of two runs compared: same accesses in the same order
/// (direction, address, size, value), whichever vCPU made them.
pub fn same_device_view(a: &[QemuAccess], b: &[QemuAccess]) -> Result<(), String> {
    let key = |x: &QemuAccess| (x.dir, x.addr, x.size, x.value);
    for (index, (x, y)) in a.iter().zip(b).enumerate() {
        if key(x) != key(y) {
            return Err(format!(
                "access #{index} differs: {} vs {}",
                qemu_line(x),
                qemu_line(y)
            ));
        }
    }
    if a.len() != b.len() {
        return Err(format!("{} accesses against {}", a.len(), b.len()));
    }
    Ok(())
}

/// Splits a device's accesses by the vCPU that made them.
pub fn by_cpu(device: &[QemuAccess]) -> BTreeMap<i32, Vec<QemuAccess>> {
    let mut out: BTreeMap<i32, Vec<QemuAccess>> = BTreeMap::new();
    for access in device {
        out.entry(access.cpu).or_default().push(access.clone());
    }
    out
}

/// Splits a trace's accesses by thread (the pid field), in trace order.
pub fn by_thread(trace: &[Access]) -> BTreeMap<u32, Vec<Access>> {
    let mut out: BTreeMap<u32, Vec<Access>> = BTreeMap::new();
    for access in trace {
        out.entry(access.pid).or_default().push(access.clone());
    }
    out
}

fn dir_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Read => "R",
        Direction::Write => "W",
    }
}

fn trace_line(access: &Access) -> String {
    let mut value = String::from("0x");
    for byte in access.value.as_le_bytes().iter().rev() {
        let _ = write!(value, "{byte:02x}");
    }
    format!(
        "{} {} {:#x} {} (seq {:?}, thread {})",
        dir_name(access.dir),
        access.width(),
        access.phys,
        value,
        access.ext.seq,
        access.pid
    )
}

fn qemu_line(access: &QemuAccess) -> String {
    format!(
        "{} {} {:#x} {:#x} (cpu {}, {})",
        dir_name(access.dir),
        access.size,
        access.addr,
        access.value,
        access.cpu,
        access.region
    )
}

fn report(trace: &[Access], device: &[QemuAccess], index: usize, at: usize, what: &str) -> String {
    let mut out = format!(
        "trace access #{index} of {} against device access #{at} of {}: {what}\n  trace:\n",
        trace.len(),
        device.len()
    );
    let from = index.saturating_sub(3);
    for (i, access) in trace.iter().enumerate().skip(from).take(index + 3 - from) {
        let _ = writeln!(
            out,
            "  {} #{i} {}",
            if i == index { ">" } else { " " },
            trace_line(access)
        );
    }
    out.push_str("  device (QEMU's log):\n");
    let from = at.saturating_sub(3);
    for (i, access) in device.iter().enumerate().skip(from).take(at + 3 - from) {
        let _ = writeln!(
            out,
            "  {} #{i} {}",
            if i == at { ">" } else { " " },
            qemu_line(access)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmiotrace_trace::{Ext, Timestamp, Value};

    fn traced(dir: Direction, width: u8, phys: u64, value: u64) -> Access {
        Access {
            dir,
            time: Timestamp::ZERO,
            map_id: 1,
            phys,
            value: Value::from_u64(width, value).expect("valid width"),
            pc: 0,
            pid: 7,
            ext: Ext::default(),
        }
    }

    fn logged(dir: Direction, size: u8, addr: u64, value: u64) -> QemuAccess {
        QemuAccess {
            time_us: 0,
            cpu: 0,
            dir,
            addr,
            value,
            size,
            region: "e1000-mmio".into(),
        }
    }

    use Direction::{Read as R, Write as W};

    #[test]
    fn equal_runs_match_and_split_accesses_are_joined() {
        let trace = [
            traced(W, 4, 0x1000, 0x1),
            traced(R, 2, 0x1016, 0x0010),
            traced(R, 8, 0x1008, 0x1122_3344_5566_7788),
        ];
        let device = [
            logged(W, 4, 0x1000, 0x1),
            logged(R, 4, 0x1016, 0x5452_0010),
            logged(R, 4, 0x1008, 0x5566_7788),
            logged(R, 4, 0x100c, 0x1122_3344),
        ];
        assert_eq!(compare(&trace, &device), Ok(3));
    }

    #[test]
    fn a_doubled_read_a_missing_access_and_a_wrong_value_are_caught() {
        let trace = [traced(R, 4, 0x10c0, 0x4)];
        let doubled = [logged(R, 4, 0x10c0, 0x4), logged(R, 4, 0x10c0, 0x0)];
        let err = compare(&trace, &doubled).expect_err("the device saw a second read");
        assert!(err.contains("1 accesses more than the trace"), "{err}");

        let err = compare(&trace, &[]).expect_err("the device saw nothing");
        assert!(err.contains("log ends before"), "{err}");

        let err = compare(&trace, &[logged(R, 4, 0x10c0, 0x0)]).expect_err("values differ");
        assert!(err.contains("values differ"), "{err}");

        let err = compare(&trace, &[logged(W, 4, 0x10c0, 0x4)]).expect_err("direction");
        assert!(err.contains("the device saw W 4 at 0x10c0"), "{err}");
    }
}
