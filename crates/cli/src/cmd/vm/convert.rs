//! QEMU's log of a guest's device accesses, turned into a trace: what
//! `mmiotrace vm` streams and `mmiotrace import qemu-log` reads from a file.
//!
//! - Each PCI BAR the guest places (`pci_update_mappings_add`) becomes a
//!   `MAP` whose path is the guest's sysfs name of that BAR
//!   (`/sys/bus/pci/devices/0000:00:04.0/resource0`), after a `PCIDEV` line
//!   for the function whenever its BARs have changed since the last one.
//!   A BAR taken out (`_del`) is an `UNMAP`.
//! - Each access inside a placed BAR of a selected device is one `R`/`W`
//!   line: guest-physical address, the device model's width and value,
//!   host time since the first event, and the vCPU index in the pid field.
//! - Bytes written to QEMU's `isa-debugcon` port, up to a newline, are a
//!   `MARK`.
//! - The plugin's lines give accesses their pc: a memory access gets the pc
//!   of the next `mmiotrace-mem` line of the same vCPU if that line covers
//!   its address (or names none); events of other regions may come between
//!   (the device raising an interrupt during the access). A port access
//!   gets the pc of the `mmiotrace-pio` line before it.
//!
//! The device's view is kept as QEMU logged it: an access narrower, wider
//! or less aligned than the model implements is in the trace as the pieces
//! the model received, each with the instruction's pc.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use globset::{Glob, GlobMatcher};
use mmiotrace_trace::qemu_log::{QemuAccess, QemuBar, QemuConfig, QemuEvent, QemuMemPc};
use mmiotrace_trace::{
    Access, Direction, Event, Ext, KERNEL_VERSION, Map, Mark, PCI_BARS, PciDev, Timestamp, Unmap,
    Value, Version,
};

use crate::cmd::record::drain::mark_text;

/// The memory region QEMU's `isa-debugcon` device logs its port writes as.
pub const DEBUGCON_REGION: &str = "isa-debugcon";

/// The pid field of an access no vCPU made (QEMU's cpu -1: DMA, a timer).
pub const NO_VCPU: u32 = u32::MAX;

/// Which PCI functions to trace: QEMU's device type (a glob, e.g. `e1000`,
/// `nvme`, `vfio-pci`) or a PCI address (`00:04.0` or `0000:00:04.0`).
#[derive(Debug, Clone)]
pub enum DeviceFilter {
    Type(GlobMatcher),
    Address { bus: u8, slot: u8, function: u8 },
}

impl DeviceFilter {
    pub fn parse(text: &str) -> Result<DeviceFilter, String> {
        let address = text.strip_prefix("0000:").unwrap_or(text);
        if let Some((bus, rest)) = address.split_once(':')
            && let Some((slot, function)) = rest.split_once('.')
            && let (Ok(bus), Ok(slot), Ok(function)) = (
                u8::from_str_radix(bus, 16),
                u8::from_str_radix(slot, 16),
                u8::from_str_radix(function, 16),
            )
        {
            return Ok(DeviceFilter::Address {
                bus,
                slot,
                function,
            });
        }
        if text.is_empty() {
            return Err("an empty device filter".to_owned());
        }
        Glob::new(text)
            .map(|glob| DeviceFilter::Type(glob.compile_matcher()))
            .map_err(|err| format!("{text:?} is neither a PCI address nor a valid glob: {err}"))
    }

    fn matches(&self, device: &str, bus: u8, slot: u8, function: u8) -> bool {
        match self {
            DeviceFilter::Type(glob) => glob.is_match(device),
            DeviceFilter::Address {
                bus: b,
                slot: s,
                function: f,
            } => (*b, *s, *f) == (bus, slot, function),
        }
    }
}

/// What a conversion contained, for the summary.
#[derive(Debug, Default)]
pub struct Counts {
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Accesses per vCPU (`NO_VCPU` for none).
    pub by_vcpu: BTreeMap<u32, u64>,
    /// Accesses written with the pc of the instruction that made them.
    pub with_pc: u64,
    /// Accesses in a selected BAR's range that the plugin's lines did not
    /// pair (pc 0): an access of no vCPU, or no plugin.
    pub without_pc: u64,
    /// Device accesses outside every selected BAR (other devices, the
    /// chipset), not written.
    pub skipped: u64,
    /// Port accesses to selected devices, not written (no `--port-io`).
    pub port_skipped: u64,
    /// Placed BARs: (device, address, BAR, start, size, port).
    pub bars: Vec<(String, String, u8, u64, u64, bool)>,
}

/// A PCI function as its configuration accesses and BAR placements show it.
#[derive(Debug, Default, Clone)]
struct Function {
    device: String,
    vendor: Option<u16>,
    device_id: Option<u16>,
    irq: u32,
    /// The BAR registers' low bits as last read or written: bit 0 set for
    /// a port BAR, the memory type bits otherwise.
    bar_flags: [Option<u8>; PCI_BARS],
    /// Last placement of each BAR: (start, size).
    placed: [Option<(u64, u64)>; PCI_BARS],
    /// The placements the last PCIDEV line showed.
    written: Option<[Option<(u64, u64)>; PCI_BARS]>,
}

/// A BAR in the guest's address space now.
#[derive(Debug, Clone)]
struct Placed {
    start: u64,
    size: u64,
    map_id: u32,
    port: bool,
    selected: bool,
}

/// An access waiting for the plugin's line that gives its pc.
#[derive(Debug)]
struct Waiting {
    access: QemuAccess,
    map_id: u32,
}

#[derive(Debug, Default)]
struct Vcpu {
    /// Memory accesses of the instruction now running, until its
    /// `mmiotrace-mem` line.
    waiting: Vec<Waiting>,
    /// The pc of the port I/O instruction now running.
    port_pc: Option<u64>,
    /// Bytes written to the debug port, up to a newline.
    mark: Vec<u8>,
}

/// Turns [`QemuEvent`]s into trace [`Event`]s.
#[derive(Debug)]
pub struct Converter {
    filters: Vec<DeviceFilter>,
    port_io: bool,
    /// Host time of the first event, in microseconds: the trace's zero.
    start_us: Option<u64>,
    last_us: u64,
    functions: BTreeMap<(u8, u8, u8), Function>,
    /// Placed BARs by (function, BAR number).
    placed: BTreeMap<((u8, u8, u8), u8), Placed>,
    vcpus: HashMap<i32, Vcpu>,
    /// Whether the log has the plugin's lines: until the first one, an
    /// access is written at once (with pc 0) instead of waiting for one.
    pairing: bool,
    /// Whether `VERSION` was written.
    started: bool,
    next_map_id: u32,
    next_seq: u64,
    pub counts: Counts,
}

impl Converter {
    /// `filters` empty: every PCI function. `port_io`: write the accesses
    /// to port BARs too. `plugin`: the log will have the plugin's lines
    /// (`mmiotrace vm` loaded it); otherwise accesses wait for their pc
    /// only once the log has shown a plugin line.
    pub fn new(filters: Vec<DeviceFilter>, port_io: bool, plugin: bool) -> Converter {
        Converter {
            filters,
            port_io,
            pairing: plugin,
            started: false,
            start_us: None,
            last_us: 0,
            functions: BTreeMap::new(),
            placed: BTreeMap::new(),
            vcpus: HashMap::new(),
            next_map_id: 1,
            next_seq: 0,
            counts: Counts::default(),
        }
    }

    /// Trace time of a host time in microseconds.
    fn time(&mut self, time_us: u64) -> Timestamp {
        let start = *self.start_us.get_or_insert(time_us);
        self.last_us = self.last_us.max(time_us);
        Timestamp::from_nanos(time_us.saturating_sub(start).saturating_mul(1000))
    }

    /// Trace time of a host wall-clock time (a mark from outside).
    pub fn time_of_wall_clock(&mut self, time_us: u64) -> Timestamp {
        self.time(time_us)
    }

    fn ext(&mut self) -> Ext {
        let seq = self.next_seq;
        self.next_seq += 1;
        Ext {
            seq: Some(seq),
            process: None,
            hook: None,
        }
    }

    fn emit(&mut self, event: Event, out: &mut impl FnMut(&Event) -> Result<()>) -> Result<()> {
        self.start(out)?;
        *self.counts.by_kind.entry(event.kind_name()).or_default() += 1;
        out(&event)
    }

    /// The trace's first line, `VERSION`, once.
    fn start(&mut self, out: &mut impl FnMut(&Event) -> Result<()>) -> Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        out(&Event::Version(Version {
            version: KERNEL_VERSION.to_owned(),
        }))
    }

    /// A MARK from outside the guest (`--mark-fifo`), at `time`.
    pub fn mark(
        &mut self,
        time: Timestamp,
        text: String,
        out: &mut impl FnMut(&Event) -> Result<()>,
    ) -> Result<()> {
        let ext = self.ext();
        self.emit(Event::Mark(Mark { time, text, ext }), out)
    }

    pub fn push(
        &mut self,
        event: QemuEvent,
        out: &mut impl FnMut(&Event) -> Result<()>,
    ) -> Result<()> {
        match event {
            QemuEvent::Config(config) => {
                self.config(&config);
                Ok(())
            }
            QemuEvent::Bar(bar) => self.bar(bar, out),
            QemuEvent::Access(access) => self.access(access, out),
            QemuEvent::MemPc(line) => {
                self.pairing = true;
                self.mem_pc(&line, out)
            }
            QemuEvent::PortPc { cpu, pc } => {
                self.pairing = true;
                let cpu = i32::try_from(cpu).unwrap_or(i32::MAX);
                self.flush(cpu, None, out)?;
                self.vcpus.entry(cpu).or_default().port_pc = Some(pc);
                Ok(())
            }
        }
    }

    /// The end of the log: accesses still waiting go out without a pc, a
    /// mark without its newline is kept.
    pub fn finish(&mut self, out: &mut impl FnMut(&Event) -> Result<()>) -> Result<()> {
        self.start(out)?;
        let mut cpus: Vec<i32> = self.vcpus.keys().copied().collect();
        cpus.sort_unstable();
        for cpu in cpus {
            self.flush(cpu, None, out)?;
            let text = std::mem::take(&mut self.vcpus.entry(cpu).or_default().mark);
            if !text.is_empty() {
                let time = Timestamp::from_nanos(
                    self.last_us
                        .saturating_sub(self.start_us.unwrap_or(self.last_us))
                        .saturating_mul(1000),
                );
                self.mark(time, mark_text(&text), out)?;
            }
        }
        Ok(())
    }

    fn config(&mut self, config: &QemuConfig) {
        let function = self
            .functions
            .entry((config.bus, config.slot, config.function))
            .or_default();
        function.device.clone_from(&config.device);
        let value = config.value;
        match config.offset {
            0 => {
                function.vendor = Some(value as u16);
                if value > 0xffff {
                    function.device_id = Some((value >> 16) as u16);
                }
            }
            2 => function.device_id = Some(value as u16),
            0x3c => function.irq = value & 0xff,
            // Reads only: the type bits are read-only, and what the guest
            // writes (an address, all ones to size the BAR) need not hold them.
            0x10..=0x27 if config.offset % 4 == 0 && config.dir == Direction::Read => {
                let bar = usize::from((config.offset - 0x10) / 4);
                // Bit 0 tells a port BAR; a memory BAR's type is bits 1-3.
                function.bar_flags[bar] = Some(if value & 1 != 0 {
                    1
                } else {
                    (value & 0xf) as u8
                });
            }
            _ => {}
        }
    }

    fn selected(&self, device: &str, bus: u8, slot: u8, function: u8) -> bool {
        self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|f| f.matches(device, bus, slot, function))
    }

    fn bar(&mut self, bar: QemuBar, out: &mut impl FnMut(&Event) -> Result<()>) -> Result<()> {
        let time = self.time(bar.time_us);
        let key = (bar.bus, bar.slot, bar.function);
        let index = usize::from(bar.bar).min(PCI_BARS - 1);
        let selected = self.selected(&bar.device, bar.bus, bar.slot, bar.function);
        if !bar.added {
            if let Some(placed) = self.placed.remove(&(key, bar.bar))
                && placed.selected
                && (self.port_io || !placed.port)
            {
                let ext = self.ext();
                let unmap = Unmap {
                    time,
                    map_id: placed.map_id,
                    pc: 0,
                    pid: 0,
                    ext,
                };
                self.emit(Event::Unmap(unmap), out)?;
            }
            return Ok(());
        }
        let function = self.functions.entry(key).or_default();
        function.device.clone_from(&bar.device);
        function.placed[index] = Some((bar.addr, bar.size));
        // A port BAR: the register's bit 0, or, if the guest was never
        // seen reading it, an address in the 64 KiB port space (no x86
        // PC places memory there).
        let port = match function.bar_flags[index] {
            Some(flags) => index < 6 && flags & 1 != 0,
            None => bar.addr.saturating_add(bar.size) <= 0x1_0000,
        };
        let map_id = self.next_map_id;
        self.next_map_id = self.next_map_id.wrapping_add(1).max(1);
        self.placed.insert(
            (key, bar.bar),
            Placed {
                start: bar.addr,
                size: bar.size,
                map_id,
                port,
                selected,
            },
        );
        self.counts.bars.push((
            bar.device.clone(),
            bar.pci_address(),
            bar.bar,
            bar.addr,
            bar.size,
            port,
        ));
        if !selected || (port && !self.port_io) {
            return Ok(());
        }
        let function = self.functions.get_mut(&key).expect("inserted above");
        if function.written != Some(function.placed) {
            function.written = Some(function.placed);
            let mut dev = PciDev {
                bus: bar.bus,
                devfn: (bar.slot << 3) | (bar.function & 7),
                vendor: function.vendor.unwrap_or(0xffff),
                device: function.device_id.unwrap_or(0xffff),
                irq: function.irq,
                bar_start: [0; PCI_BARS],
                bar_size: [0; PCI_BARS],
                driver: String::new(),
            };
            for (i, placed) in function.placed.iter().enumerate() {
                if let Some((start, size)) = placed {
                    dev.bar_start[i] = start | u64::from(function.bar_flags[i].unwrap_or(0));
                    dev.bar_size[i] = *size;
                }
            }
            self.emit(Event::PciDev(dev), out)?;
        }
        let ext = self.ext();
        let map = Map {
            time,
            map_id,
            phys: bar.addr,
            virt: 0,
            len: bar.size,
            pc: 0,
            pid: 0,
            ext,
            path: Some(format!(
                "/sys/bus/pci/devices/{}/resource{}",
                bar.pci_address(),
                bar.bar
            )),
        };
        self.emit(Event::Map(map), out)
    }

    /// The placed BAR holding `[addr, addr + size)`.
    fn bar_of(&self, addr: u64, size: u8) -> Option<&Placed> {
        let end = addr.saturating_add(u64::from(size));
        self.placed
            .values()
            .find(|p| addr >= p.start && end <= p.start.saturating_add(p.size))
    }

    fn access(
        &mut self,
        access: QemuAccess,
        out: &mut impl FnMut(&Event) -> Result<()>,
    ) -> Result<()> {
        if access.region == DEBUGCON_REGION {
            if access.dir == Direction::Write {
                let time = self.time(access.time_us);
                let vcpu = self.vcpus.entry(access.cpu).or_default();
                let byte = access.value as u8;
                if byte != b'\n' {
                    vcpu.mark.push(byte);
                    return Ok(());
                }
                let text = std::mem::take(&mut vcpu.mark);
                return self.mark(time, mark_text(&text), out);
            }
            return Ok(());
        }
        let Some(placed) = self.bar_of(access.addr, access.size).cloned() else {
            self.counts.skipped += 1;
            return Ok(());
        };
        if !placed.selected {
            self.counts.skipped += 1;
            return Ok(());
        }
        if placed.port {
            if !self.port_io {
                self.counts.port_skipped += 1;
                return Ok(());
            }
            let pc = self.vcpus.get(&access.cpu).and_then(|v| v.port_pc);
            return self.write_access(&access, placed.map_id, pc, out);
        }
        if access.cpu < 0 || !self.pairing {
            return self.write_access(&access, placed.map_id, None, out);
        }
        let map_id = placed.map_id;
        self.vcpus
            .entry(access.cpu)
            .or_default()
            .waiting
            .push(Waiting { access, map_id });
        Ok(())
    }

    fn mem_pc(
        &mut self,
        line: &QemuMemPc,
        out: &mut impl FnMut(&Event) -> Result<()>,
    ) -> Result<()> {
        let cpu = i32::try_from(line.cpu).unwrap_or(i32::MAX);
        self.flush(cpu, Some(line), out)?;
        self.vcpus.entry(cpu).or_default().port_pc = None;
        Ok(())
    }

    /// Writes the accesses waiting on `cpu`, with the pc of `line` for
    /// those it covers.
    fn flush(
        &mut self,
        cpu: i32,
        line: Option<&QemuMemPc>,
        out: &mut impl FnMut(&Event) -> Result<()>,
    ) -> Result<()> {
        let Some(vcpu) = self.vcpus.get_mut(&cpu) else {
            return Ok(());
        };
        if vcpu.waiting.is_empty() {
            return Ok(());
        }
        let waiting = std::mem::take(&mut vcpu.waiting);
        for Waiting { access, map_id } in &waiting {
            // The line's pc is this access's if the line covers it, or
            // says nothing of where its access went.
            let pc = line
                .filter(|l| {
                    l.addr.is_none_or(|addr| {
                        let end = addr.saturating_add(u64::from(l.size));
                        access.addr < end
                            && addr < access.addr.saturating_add(u64::from(access.size))
                    })
                })
                .map(|l| l.pc);
            self.write_access(access, *map_id, pc, out)?;
        }
        // Give the vector back to the vCPU, to reuse its allocation.
        let mut waiting = waiting;
        waiting.clear();
        if let Some(vcpu) = self.vcpus.get_mut(&cpu)
            && vcpu.waiting.is_empty()
        {
            vcpu.waiting = waiting;
        }
        Ok(())
    }

    fn write_access(
        &mut self,
        access: &QemuAccess,
        map_id: u32,
        pc: Option<u64>,
        out: &mut impl FnMut(&Event) -> Result<()>,
    ) -> Result<()> {
        let time = self.time(access.time_us);
        let pid = u32::try_from(access.cpu).unwrap_or(NO_VCPU);
        *self.counts.by_vcpu.entry(pid).or_default() += 1;
        if pc.is_some() {
            self.counts.with_pc += 1;
        } else {
            self.counts.without_pc += 1;
        }
        let Some(value) = Value::from_u64(access.size, access.value) else {
            // QemuLogReader only yields sizes 1, 2, 4 and 8.
            unreachable!("size {} from the QEMU log reader", access.size);
        };
        let ext = self.ext();
        let event = Event::Access(Access {
            dir: access.dir,
            time,
            map_id,
            phys: access.addr,
            value,
            pc: pc.unwrap_or(0),
            pid,
            ext,
        });
        self.emit(event, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmiotrace_trace::qemu_log::QemuLogReader;

    fn convert(log: &str, filters: &[&str], port_io: bool, plugin: bool) -> (Vec<Event>, Counts) {
        let filters = filters
            .iter()
            .map(|f| DeviceFilter::parse(f).expect("filter"))
            .collect();
        let mut converter = Converter::new(filters, port_io, plugin);
        let mut events = Vec::new();
        let mut out = |e: &Event| -> Result<()> {
            events.push(e.clone());
            Ok(())
        };
        for event in QemuLogReader::new(log.as_bytes(), "qemu.log") {
            converter
                .push(event.expect("parses"), &mut out)
                .expect("converts");
        }
        converter.finish(&mut out).expect("finishes");
        (events, converter.counts)
    }

    const LOG: &str = "\
1@100.000000:pci_cfg_read e1000 00:04.0 @0x0 -> 0x100e8086
1@100.000001:pci_cfg_read e1000 00:04.0 @0x10 -> 0x0
1@100.000002:pci_cfg_read e1000 00:04.0 @0x14 -> 0x1
1@100.000003:pci_cfg_write e1000 00:04.0 @0x3c <- 0xb
1@100.000010:pci_update_mappings_add e1000 00:04.0 0,0xfebc0000+0x20000
1@100.000011:pci_update_mappings_add e1000 00:04.0 1,0xc000+0x40
1@100.000012:pci_update_mappings_add nvme 00:05.0 0,0xfebe0000+0x4000
1@100.000020:memory_region_ops_read cpu 2 mr 0x1 addr 0xfebc0008 value 0x80080783 size 4 name 'e1000-mmio'
mmiotrace-mem cpu 2 pc 0xffffffffc0605e7c addr 0xfebc0008 size 4 r
1@100.000030:memory_region_ops_read cpu 1 mr 0x1 addr 0xfed000f0 value 0x1 size 4 name 'hpet'
mmiotrace-mem cpu 1 pc 0xffffffff8100 addr 0xfed000f0 size 4 r
mmiotrace-pio cpu 3 pc 0xffffffffc0605a49
1@100.000040:memory_region_ops_write cpu 3 mr 0x2 addr 0xc004 value 0x4140240 size 4 name 'e1000-io'
1@100.000050:memory_region_ops_read cpu 0 mr 0x1 addr 0xfebc0000 value 0x11223344 size 4 name 'e1000-mmio'
1@100.000051:memory_region_ops_read cpu 0 mr 0x1 addr 0xfebc0004 value 0x55667788 size 4 name 'e1000-mmio'
mmiotrace-mem cpu 0 pc 0xffffffffc0601000 addr 0xfebc0000 size 8 r
1@100.000060:memory_region_ops_write cpu 1 mr 0x3 addr 0xfebe0014 value 0x460001 size 4 name 'nvme'
mmiotrace-mem cpu 1 pc 0xffffffff8200 addr 0xfebe1000 size 4 w
1@100.000061:memory_region_ops_write cpu 2 mr 0x4 addr 0xe9 value 0x68 size 1 name 'isa-debugcon'
1@100.000062:memory_region_ops_write cpu 2 mr 0x4 addr 0xe9 value 0x69 size 1 name 'isa-debugcon'
1@100.000063:memory_region_ops_write cpu 2 mr 0x4 addr 0xe9 value 0xa size 1 name 'isa-debugcon'
1@100.000070:memory_region_ops_read cpu -1 mr 0x1 addr 0xfebc00c0 value 0x0 size 4 name 'e1000-mmio'
1@100.000071:memory_region_ops_write cpu 3 mr 0x1 addr 0xfebc3818 value 0x1 size 4 name 'e1000-mmio'
1@100.000072:memory_region_ops_write cpu 3 mr 0x5 addr 0xfee002b0 value 0x8014 size 4 name 'vtd-ir'
mmiotrace-mem cpu 3 pc 0xffffffffc0603c75 addr unknown size 4 w
1@100.000080:pci_update_mappings_del e1000 00:04.0 0,0xfebc0000+0x20000
";

    fn accesses(events: &[Event]) -> Vec<(u32, u64, u64, u64)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Access(a) => Some((a.pid, a.phys, a.value.low_u64(), a.pc)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn bars_become_pcidev_and_map_and_accesses_get_their_pc() {
        let (events, counts) = convert(LOG, &[], false, true);
        assert!(matches!(&events[0], Event::Version(v) if v.version == "20070824"));
        let Event::PciDev(dev) = &events[1] else {
            panic!("expected PCIDEV after VERSION: {:?}", events[1]);
        };
        assert_eq!(
            (dev.vendor, dev.device, dev.irq, dev.devfn),
            (0x8086, 0x100e, 0xb, 0x20)
        );
        assert_eq!((dev.bar_start[0], dev.bar_size[0]), (0xfebc0000, 0x20000));
        let Event::Map(map) = &events[2] else {
            panic!("expected MAP: {:?}", events[2]);
        };
        assert_eq!(
            (map.map_id, map.phys, map.len, map.path.as_deref()),
            (
                1,
                0xfebc0000,
                0x20000,
                Some("/sys/bus/pci/devices/0000:00:04.0/resource0")
            )
        );
        assert_eq!(
            accesses(&events),
            vec![
                (2, 0xfebc0008, 0x80080783, 0xffffffffc0605e7c),
                // Both pieces of one 8-byte read carry its pc.
                (0, 0xfebc0000, 0x11223344, 0xffffffffc0601000),
                (0, 0xfebc0004, 0x55667788, 0xffffffffc0601000),
                // The plugin's line is for another address: no pc.
                (1, 0xfebe0014, 0x460001, 0),
                (NO_VCPU, 0xfebc00c0, 0, 0),
                // The device's interrupt (vtd-ir) came between the access and
                // the plugin's line, which could not name the address.
                (3, 0xfebc3818, 1, 0xffffffffc0603c75),
            ]
        );
        let marks: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Mark(m) => Some(m.text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(marks, ["hi"]);
        assert!(matches!(events.last(), Some(Event::Unmap(u)) if u.map_id == 1));
        assert_eq!((counts.with_pc, counts.without_pc), (4, 2));
        assert_eq!((counts.skipped, counts.port_skipped), (2, 1));
        // Every access has a gap-free sequence number, in trace order.
        let seqs: Vec<u64> = events.iter().filter_map(|e| e.ext()?.seq).collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn without_the_plugin_accesses_keep_their_place_among_the_marks() {
        let log: String = LOG
            .lines()
            .filter(|l| !l.starts_with("mmiotrace-"))
            .map(|l| format!("{l}\n"))
            .collect();
        let (events, counts) = convert(&log, &["e1000"], false, false);
        let order: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Event::Access(a) => Some(format!("{:#x}", a.phys)),
                Event::Mark(m) => Some(m.text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            order,
            [
                "0xfebc0008",
                "0xfebc0000",
                "0xfebc0004",
                "hi",
                "0xfebc00c0",
                "0xfebc3818"
            ]
        );
        assert_eq!(counts.with_pc, 0);
    }

    #[test]
    fn port_io_and_device_filters() {
        let (events, _) = convert(LOG, &["e1000"], true, true);
        let got = accesses(&events);
        assert!(
            got.contains(&(3, 0xc004, 0x4140240, 0xffffffffc0605a49)),
            "{got:x?}"
        );
        assert!(
            !got.iter().any(|a| a.1 == 0xfebe0014),
            "nvme filtered out: {got:x?}"
        );
        let port_dev = events.iter().find_map(|e| match e {
            Event::PciDev(d) if d.bar_size[1] != 0 => Some(d.clone()),
            _ => None,
        });
        assert_eq!(port_dev.expect("a PCIDEV with BAR 1").bar_start[1], 0xc001);
        let (events, _) = convert(LOG, &["00:05.0"], false, true);
        let got = accesses(&events);
        assert_eq!(got, vec![(1, 0xfebe0014, 0x460001, 0)]);
        assert!(DeviceFilter::parse("[").is_err());
    }
}
