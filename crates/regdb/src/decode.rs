//! The streaming decoder: follows a trace's `PCIDEV` and `MAP` records to
//! decide which database decodes which mapping, names each access's
//! register, and hands the result to a [`DecodeSink`].
//!
//! Memory stays bounded however long the trace: the decoder keeps one entry
//! per live mapping and per device it bound, and a cache of resolved
//! addresses that it empties when it fills.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::path::Path;
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use mmiotrace_trace::{
    Access as TraceAccess, Direction, Event, Map, PciDev, Repeat, Timestamp, Value,
};

use crate::error::{Error, Result};
use crate::model::*;
use crate::toml_map::parse_pci_ids;

/// Which mappings a `--device` spec applies to.
#[derive(Debug, Clone)]
pub enum Selector {
    /// `vendor:device`, optionally `/N` for BAR N (default 0).
    Pci { vendor: u16, device: u16, bar: u8 },
    /// A map id of the trace.
    MapId(u32),
    /// A glob on the mapped file's path.
    Path(GlobMatcher),
    /// Addresses `start..end`: for traces without MAP records (the kernel's
    /// rwmmio events) or to pick part of a mapping. Offsets count from `start`.
    Range { start: u64, end: u64 },
}

/// A parsed `--device SELECTOR=DATABASE[#SPACE][@VARIANT]`.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub text: String,
    pub selector: Selector,
    pub db: usize,
    pub space: usize,
    /// The variant set and value index chosen with `@`.
    pub variant: Option<(EnumId, u32)>,
}

impl DeviceSpec {
    /// Parses `text`; DATABASE names one of `dbs` (by path, file name or
    /// database name) or a file, which is then loaded and added to `dbs`.
    pub fn parse(text: &str, dbs: &mut Vec<Database>) -> Result<DeviceSpec> {
        let err = |message: String| Error::Spec {
            spec: text.to_string(),
            message,
        };
        let (selector, target) = text.split_once('=').ok_or_else(|| {
            err("expected SELECTOR=DATABASE, e.g. 10de:1c82=nv_mmio.xml@GP107".into())
        })?;
        let selector = parse_selector(selector).map_err(err)?;
        let (target, variant) = match target.rsplit_once('@') {
            Some((t, v)) => (t, Some(v)),
            None => (target, None),
        };
        let (target, space) = match target.rsplit_once('#') {
            Some((t, s)) => (t, Some(s)),
            None => (target, None),
        };
        let db = match find_database(dbs, target) {
            Some(i) => i,
            None if Path::new(target).is_file() => {
                dbs.push(crate::load(Path::new(target))?);
                dbs.len() - 1
            }
            None => {
                let known: Vec<&str> = dbs.iter().map(|d| &*d.name).collect();
                return Err(err(format!(
                    "no database {target:?} was loaded with --regs (loaded: {}), and no such file",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        };
        let database = &dbs[db];
        let space = match space {
            None => database.default_space,
            Some(name) => database.space_index(name).ok_or_else(|| {
                let names: Vec<&str> = database.spaces.iter().map(|s| &*s.name).take(20).collect();
                err(format!(
                    "{} has no domain {name:?} (some it has: {})",
                    database.name,
                    names.join(", ")
                ))
            })?,
        };
        let variant = match variant {
            None => None,
            Some(name) => Some(find_variant(database, space, name).map_err(err)?),
        };
        Ok(DeviceSpec {
            text: text.to_string(),
            selector,
            db,
            space,
            variant,
        })
    }
}

fn parse_selector(text: &str) -> std::result::Result<Selector, String> {
    let (ids, bar) = match text.split_once('/') {
        Some((ids, bar)) if parse_pci_ids(ids).is_some() => {
            let n = bar.trim_start_matches("bar").trim_start_matches("BAR");
            let bar = n
                .parse::<u8>()
                .ok()
                .filter(|b| usize::from(*b) < mmiotrace_trace::PCI_BARS)
                .ok_or_else(|| format!("{bar:?} is not a BAR number (0-6)"))?;
            (ids, bar)
        }
        _ => (text, 0),
    };
    if let Some((vendor, device)) = parse_pci_ids(ids) {
        return Ok(Selector::Pci {
            vendor,
            device,
            bar,
        });
    }
    if let Some(id) = text
        .strip_prefix("map:")
        .or(Some(text))
        .and_then(|t| t.parse::<u32>().ok())
    {
        return Ok(Selector::MapId(id));
    }
    if text.starts_with("0x") {
        let (start, end) = match text.split_once(['+', '-']) {
            Some((start, rest)) => {
                let start = crate::xml::parse_int(start)
                    .ok_or_else(|| format!("{start:?} is not an address"))?;
                let n = crate::xml::parse_int(rest)
                    .ok_or_else(|| format!("{rest:?} is not a number"))?;
                let end = if text.contains('+') {
                    start.saturating_add(n)
                } else {
                    n
                };
                (start, end)
            }
            None => {
                let start = crate::xml::parse_int(text)
                    .ok_or_else(|| format!("{text:?} is not an address"))?;
                (start, u64::MAX)
            }
        };
        if end <= start {
            return Err(format!("the range {text:?} is empty"));
        }
        return Ok(Selector::Range { start, end });
    }
    let glob = Glob::new(text).map_err(|e| format!("bad path glob: {e}"))?;
    Ok(Selector::Path(glob.compile_matcher()))
}

fn find_database(dbs: &[Database], target: &str) -> Option<usize> {
    dbs.iter()
        .position(|d| &*d.path == target)
        .or_else(|| {
            dbs.iter()
                .position(|d| Path::new(&*d.path).file_name().is_some_and(|n| n == target))
        })
        .or_else(|| dbs.iter().position(|d| &*d.name == target))
}

/// The variant called `name` in the variant set of `space` (or, when the
/// space names none, any variant set of the database that has it).
pub fn find_variant(
    db: &Database,
    space: usize,
    name: &str,
) -> std::result::Result<(EnumId, u32), String> {
    let candidates: Vec<EnumId> = match db.spaces[space].varset {
        Some(v) => vec![v],
        None => (0..db.enums.len() as EnumId).collect(),
    };
    for varset in &candidates {
        if let Some(i) = db.enums[*varset as usize].index_of(name) {
            return Ok((*varset, i as u32));
        }
    }
    match db.spaces[space].varset {
        Some(v) => {
            let e = &db.enums[v as usize];
            let some: Vec<&str> = e.values.iter().rev().take(8).map(|v| &*v.name).collect();
            Err(format!(
                "{name:?} is not a {} of {} (some that are: {})",
                e.name,
                db.name,
                some.join(", ")
            ))
        }
        None => Err(format!("{} has no variant {name:?}", db.name)),
    }
}

/// A mapping or address range bound to a database space.
#[derive(Debug, Clone)]
pub struct Binding {
    /// How the output names the device: `10de:1c82/bar0`, `map3`, `0xfe000000`.
    pub label: Arc<str>,
    pub db: usize,
    pub space: usize,
    /// Offsets count from here (0 for absolute spaces).
    pub base: u64,
    /// The variants in force (the chipset).
    pub chosen: Chosen,
    /// A variant set still to learn from the trace (by a probe register).
    pub detect: Option<EnumId>,
}

/// The decoder's view of one access, passed to a [`DecodeSink`].
#[derive(Debug)]
pub struct DecodedAccess<'a> {
    pub time: Timestamp,
    pub thread: u32,
    /// `None` for an UNKNOWN record (the tracer could not tell).
    pub dir: Option<Direction>,
    /// `None` when the value is not known.
    pub value: Option<&'a Value>,
    pub width: u8,
    pub map_id: u32,
    pub phys: u64,
    /// The instruction's address (0: not known).
    pub pc: u64,
    pub binding: Option<&'a Binding>,
    pub db: Option<&'a Database>,
    /// From the binding's base, or the physical address when unbound.
    pub offset: u64,
    pub register: Option<&'a Resolved>,
    /// Set for a REPEAT record: the polling loop this access stands for.
    pub repeat: Option<&'a Repeat>,
}

impl DecodedAccess<'_> {
    pub fn is_write(&self) -> bool {
        self.dir == Some(Direction::Write)
    }

    /// Decodes the value into `sink`; returns false (calling nothing) when
    /// there is nothing to decode: no register, no value, or an access that
    /// reaches past the register. An access to part of a register decodes
    /// the fields inside that part.
    #[inline]
    pub fn decode_fields<S: FieldSink + ?Sized>(&self, sink: &mut S) -> bool {
        let (Some(reg), Some(db), Some(value)) = (self.register, self.db, self.value) else {
            return false;
        };
        let reg_width = u64::from(db.regs[reg.reg as usize].width);
        if value.is_wide() || reg.within + u64::from(self.width) > reg_width {
            return false;
        }
        if reg.within == 0 && u64::from(self.width) == reg_width {
            reg.plan.run(value.low_u64(), sink);
        } else {
            let shift = 8 * reg.within as u32;
            let seen = bit_mask(shift as u8, (shift + 8 * u32::from(self.width) - 1) as u8);
            reg.plan.run_part(value.low_u64() << shift, seen, sink);
        }
        true
    }
}

/// What the decoder produces, event by event.
pub trait DecodeSink {
    fn access(&mut self, access: &DecodedAccess<'_>) -> io::Result<()>;
    /// A MAP record, and what it was bound to.
    fn map(&mut self, map: &Map, binding: Option<(&Binding, &Database)>) -> io::Result<()>;
    /// The decoder learnt a variant from a register it read.
    fn variant(
        &mut self,
        time: Timestamp,
        binding: &Binding,
        varset: &str,
        value: &str,
        register: &str,
    ) -> io::Result<()>;
    /// Every other record (VERSION, PCIDEV, UNMAP, MARK, lost events).
    fn other(&mut self, event: &Event) -> io::Result<()>;
}

/// Settings beyond the databases and specs.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// `--chipset`: the variant for every rules-ng-ng space whose variant
    /// set has a value of this name, unless a spec says otherwise.
    pub variant: Option<String>,
}

/// Most cached address resolutions before the cache starts over.
const CACHE_LIMIT: usize = 1 << 16;
/// Most PCI devices remembered.
const PCI_LIMIT: usize = 4096;
/// Most live mappings remembered; a trace with more loses the names of the
/// oldest ones' accesses (they print as unbound).
const MAP_LIMIT: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey {
    binding: u32,
    write: bool,
    offset: u64,
}

/// A multiply-rotate hash: the keys are small integers that SipHash
/// spends most of a lookup on.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Decodes a trace event by event; see the module documentation.
#[derive(Debug)]
pub struct Decoder<'a> {
    dbs: &'a [Database],
    specs: &'a [DeviceSpec],
    /// Per database: the `--chipset` variant, where its space knows it.
    global_variant: Vec<Option<(EnumId, u32)>>,
    pcidevs: Vec<PciDev>,
    bindings: Vec<Binding>,
    /// Live map id → binding index (None: bound to nothing).
    maps: FastMap<u32, Option<u32>>,
    /// Address ranges that accesses without a MAP record are looked up in.
    ranges: Vec<(u64, u64, u32)>,
    cache: FastMap<CacheKey, Option<Resolved>>,
    /// The single database that decodes whatever no rule claims.
    fallback: Option<usize>,
    /// The last map id looked up and its binding: accesses come in runs.
    last_map: Option<(u32, Option<u32>)>,
}

impl<'a> Decoder<'a> {
    pub fn new(
        dbs: &'a [Database],
        specs: &'a [DeviceSpec],
        options: &DecodeOptions,
    ) -> Result<Self> {
        let mut global_variant = vec![None; dbs.len()];
        if let Some(name) = &options.variant {
            for (i, db) in dbs.iter().enumerate() {
                if db.spaces[db.default_space].varset.is_some() {
                    global_variant[i] = find_variant(db, db.default_space, name).ok();
                }
            }
            if global_variant.iter().all(Option::is_none) {
                return Err(Error::Spec {
                    spec: format!("--chipset {name}"),
                    message: "no database loaded with --regs has a variant of this name".into(),
                });
            }
        }
        let fallback =
            (dbs.len() == 1 && specs.is_empty() && !dbs[0].spaces[dbs[0].default_space].absolute)
                .then_some(0);
        let mut decoder = Decoder {
            dbs,
            specs,
            global_variant,
            pcidevs: Vec::new(),
            bindings: Vec::new(),
            maps: FastMap::default(),
            ranges: Vec::new(),
            cache: FastMap::default(),
            fallback,
            last_map: None,
        };
        for spec in specs {
            if let Selector::Range { start, end } = spec.selector {
                let label = format!("{start:#x}");
                let b = decoder.bind(spec.db, spec.space, start, label, spec.variant);
                decoder.ranges.push((start, end, b));
            }
        }
        for (i, db) in dbs.iter().enumerate() {
            for (space, rule) in &db.matches {
                if let MatchRule::Phys { start, end } = rule {
                    let b = decoder.bind(i, *space, 0, db.name.to_string(), None);
                    decoder.ranges.push((*start, *end, b));
                }
            }
        }
        decoder.ranges.sort_by_key(|r| r.0);
        Ok(decoder)
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The binding for `(db, space, base)`, made if new.
    fn bind(
        &mut self,
        db: usize,
        space: usize,
        base: u64,
        label: String,
        variant: Option<(EnumId, u32)>,
    ) -> u32 {
        if let Some(i) = self
            .bindings
            .iter()
            .position(|b| b.db == db && b.space == space && b.base == base)
        {
            return i as u32;
        }
        let database = &self.dbs[db];
        let s = &database.spaces[space];
        let mut chosen = Chosen::default();
        let variant = variant.or(self.global_variant[db].filter(|(v, _)| Some(*v) == s.varset));
        if let Some((varset, index)) = variant {
            chosen.set(varset, index);
        }
        let detect = match (variant, s.varset) {
            (None, Some(v)) if s.probes.iter().any(|p| p.varset == v) => Some(v),
            _ => None,
        };
        self.bindings.push(Binding {
            label: label.into(),
            db,
            space,
            base,
            chosen,
            detect,
        });
        (self.bindings.len() - 1) as u32
    }

    /// The PCI device and BAR whose range holds `phys`.
    fn bar_of(&self, phys: u64) -> Option<(&PciDev, usize, u64)> {
        self.pcidevs.iter().find_map(|dev| {
            (0..mmiotrace_trace::PCI_BARS).find_map(|bar| {
                let start = dev.bar_start[bar] & !0xf;
                let size = dev.bar_size[bar];
                (size > 0 && phys >= start && phys - start < size).then_some((dev, bar, start))
            })
        })
    }

    /// Decides what `map` is decoded with.
    fn bind_map(&mut self, map: &Map) -> Option<u32> {
        let bar = self
            .bar_of(map.phys)
            .map(|(dev, bar, start)| (dev.vendor, dev.device, bar, start));
        let base_for = |absolute: bool| -> u64 {
            if absolute {
                0
            } else {
                bar.map_or(map.phys, |(_, _, _, start)| start)
            }
        };
        let pci_label =
            |vendor: u16, device: u16, bar: usize| format!("{vendor:04x}:{device:04x}/bar{bar}");
        let map_label = format!("map{}", map.map_id);
        let label_for = |absolute: bool, db: &Database| -> String {
            if absolute {
                db.name.to_string()
            } else {
                match bar {
                    Some((vendor, device, n, _)) => pci_label(vendor, device, n),
                    None => map_label.clone(),
                }
            }
        };
        let map_end = map.phys.saturating_add(map.len.max(1));
        for spec in self.specs {
            let absolute = self.dbs[spec.db].spaces[spec.space].absolute;
            let hit = match &spec.selector {
                Selector::MapId(id) => *id == map.map_id,
                Selector::Path(glob) => map.path.as_deref().is_some_and(|p| glob.is_match(p)),
                Selector::Pci {
                    vendor,
                    device,
                    bar: want,
                } => bar.is_some_and(|(v, d, n, _)| {
                    v == *vendor && d == *device && n == usize::from(*want)
                }),
                Selector::Range { start, end } => {
                    if map.phys >= *start && map.phys < *end {
                        let label = format!("{start:#x}");
                        return Some(self.bind(spec.db, spec.space, *start, label, spec.variant));
                    }
                    false
                }
            };
            if hit {
                let label = label_for(absolute, &self.dbs[spec.db]);
                return Some(self.bind(
                    spec.db,
                    spec.space,
                    base_for(absolute),
                    label,
                    spec.variant,
                ));
            }
        }
        for (i, db) in self.dbs.iter().enumerate() {
            for (space, rule) in &db.matches {
                let absolute = db.spaces[*space].absolute;
                let hit = match rule {
                    MatchRule::Pci {
                        vendor,
                        device,
                        bar: want,
                    } => bar.is_some_and(|(v, d, n, _)| {
                        v == *vendor && d == *device && n == usize::from(*want)
                    }),
                    MatchRule::PciVendor { vendor, bar: want } => {
                        bar.is_some_and(|(v, _, n, _)| v == *vendor && n == usize::from(*want))
                    }
                    MatchRule::Path(glob) => map.path.as_deref().is_some_and(|p| {
                        Glob::new(glob).is_ok_and(|g| g.compile_matcher().is_match(p))
                    }),
                    MatchRule::Phys { start, end } => map.phys < *end && *start < map_end,
                };
                if hit {
                    let label = label_for(absolute, db);
                    return Some(self.bind(i, *space, base_for(absolute), label, None));
                }
            }
        }
        let fallback = self.fallback?;
        if bar.is_some() && !self.dbs[fallback].matches.is_empty() {
            return None;
        }
        let db = &self.dbs[fallback];
        let label = label_for(false, db);
        Some(self.bind(fallback, db.default_space, base_for(false), label, None))
    }

    /// Feeds one event; calls `sink` with what it decoded.
    pub fn feed(&mut self, event: &Event, sink: &mut dyn DecodeSink) -> io::Result<()> {
        match event {
            Event::Access(access) => self.access(access, sink),
            Event::Unknown(u) => {
                let binding = self.binding_for(u.map_id, u.phys);
                let what = Emit {
                    time: u.time,
                    thread: u.pid,
                    dir: None,
                    value: None,
                    width: 0,
                    map_id: u.map_id,
                    phys: u.phys,
                    pc: u.pc,
                    repeat: None,
                };
                self.emit(sink, binding, what)
            }
            Event::Repeat(r) => {
                let binding = self.binding_for(r.map_id, r.phys);
                let what = Emit {
                    time: r.time,
                    thread: r.pid,
                    dir: Some(r.dir),
                    value: Some(&r.value),
                    width: r.value.width(),
                    map_id: r.map_id,
                    phys: r.phys,
                    pc: r.pc,
                    repeat: Some(r),
                };
                self.emit(sink, binding, what)
            }
            Event::Map(map) => {
                self.last_map = None;
                let binding = self.bind_map(map);
                if self.maps.len() >= MAP_LIMIT && !self.maps.contains_key(&map.map_id) {
                    self.maps.clear();
                }
                self.maps.insert(map.map_id, binding);
                let bound = binding.map(|b| {
                    let b = &self.bindings[b as usize];
                    (b, &self.dbs[b.db])
                });
                sink.map(map, bound)
            }
            Event::Unmap(unmap) => {
                self.last_map = None;
                self.maps.remove(&unmap.map_id);
                sink.other(event)
            }
            Event::PciDev(dev) => {
                if self.pcidevs.len() < PCI_LIMIT {
                    self.pcidevs.push(dev.clone());
                }
                sink.other(event)
            }
            Event::Version(_) | Event::Mark(_) | Event::Lost(_) => sink.other(event),
        }
    }

    #[inline]
    fn binding_for(&mut self, map_id: u32, phys: u64) -> Option<u32> {
        if let Some((id, bound)) = self.last_map
            && id == map_id
        {
            return bound;
        }
        if let Some(bound) = self.maps.get(&map_id) {
            self.last_map = Some((map_id, *bound));
            return *bound;
        }
        // No MAP record for this id: by address.
        let i = self.ranges.partition_point(|r| r.0 <= phys);
        self.ranges[..i]
            .iter()
            .rev()
            .find(|r| phys < r.1)
            .map(|r| r.2)
    }

    fn access(&mut self, a: &TraceAccess, sink: &mut dyn DecodeSink) -> io::Result<()> {
        let binding = self.binding_for(a.map_id, a.phys);
        if let Some(b) = binding
            && a.dir == Direction::Read
            && self.bindings[b as usize].detect.is_some()
        {
            self.probe(b, a, sink)?;
        }
        let what = Emit {
            time: a.time,
            thread: a.pid,
            dir: Some(a.dir),
            value: Some(&a.value),
            width: a.width(),
            map_id: a.map_id,
            phys: a.phys,
            pc: a.pc,
            repeat: None,
        };
        self.emit(sink, binding, what)
    }

    /// Learns the variant from a read of a probe register (NVIDIA's PMC.ID).
    fn probe(&mut self, b: u32, a: &TraceAccess, sink: &mut dyn DecodeSink) -> io::Result<()> {
        let binding = &self.bindings[b as usize];
        let db = &self.dbs[binding.db];
        let offset = a.phys.wrapping_sub(binding.base);
        let found = db.spaces[binding.space].probes.iter().find_map(|p| {
            if p.offset != offset || p.width != a.width() || Some(p.varset) != binding.detect {
                return None;
            }
            let raw = (a.value.low_u64() & bit_mask(p.low, p.high)) >> p.low;
            let values = &db.enums[p.varset as usize].values;
            let index = values.iter().position(|v| v.value == Some(raw))?;
            Some((p.varset, index, p.register.clone()))
        });
        let Some((varset, index, register)) = found else {
            return Ok(());
        };
        let binding = &mut self.bindings[b as usize];
        binding.chosen.set(varset, index as u32);
        binding.detect = None;
        self.cache.retain(|key, _| key.binding != b);
        let binding = &self.bindings[b as usize];
        let e = &db.enums[varset as usize];
        sink.variant(a.time, binding, &e.name, &e.values[index].name, &register)
    }

    fn emit(
        &mut self,
        sink: &mut dyn DecodeSink,
        binding: Option<u32>,
        what: Emit<'_>,
    ) -> io::Result<()> {
        let Emit {
            time,
            thread,
            dir,
            value,
            width,
            map_id,
            phys,
            pc,
            repeat,
        } = what;
        let write = dir == Some(Direction::Write);
        let (offset, register) = match binding {
            Some(b) => {
                let bound = &self.bindings[b as usize];
                let offset = phys.wrapping_sub(bound.base);
                let key = CacheKey {
                    binding: b,
                    write,
                    offset,
                };
                if self.cache.len() >= CACHE_LIMIT && !self.cache.contains_key(&key) {
                    self.cache.clear();
                }
                let dbs = self.dbs;
                let resolved = self.cache.entry(key).or_insert_with(|| {
                    dbs[bound.db].resolve(bound.space, offset, write, &bound.chosen)
                });
                (offset, resolved.as_ref())
            }
            None => (phys, None),
        };
        let binding = binding.map(|b| &self.bindings[b as usize]);
        sink.access(&DecodedAccess {
            time,
            thread,
            dir,
            value,
            width,
            map_id,
            phys,
            pc,
            binding,
            db: binding.map(|b| &self.dbs[b.db]),
            offset,
            register,
            repeat,
        })
    }
}

/// What [`Decoder::emit`] needs of an access-like record.
struct Emit<'e> {
    time: Timestamp,
    thread: u32,
    dir: Option<Direction>,
    value: Option<&'e Value>,
    width: u8,
    map_id: u32,
    phys: u64,
    pc: u64,
    repeat: Option<&'e Repeat>,
}
