//! The register database model that all three loaders produce, and the two
//! questions the decoder asks of it: which register is at this address, and
//! what do the bits of this value mean.

use std::sync::Arc;

use crate::error::SourcePos;

mod overlaps;
mod plan;

pub(crate) use overlaps::check_overlaps;
pub use plan::{DecodePlan, FieldSink, FieldValue};
use plan::{MAX_NESTING, Show, Step};

/// Index of a register in [`Database::regs`].
pub type RegId = u32;
/// Index of an enumeration in [`Database::enums`].
pub type EnumId = u32;
/// Index of a named bit set in [`Database::bitsets`].
pub type BitsetId = u32;

/// Which format a database was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFormat {
    /// rules-ng-ng XML (envytools rnndb, Mesa freedreno/etnaviv).
    RulesNg,
    /// CMSIS-SVD.
    Svd,
    /// mmiotrace's own TOML register map (docs/REGISTERS.md).
    Toml,
}

impl DbFormat {
    pub fn name(self) -> &'static str {
        match self {
            DbFormat::RulesNg => "rules-ng-ng",
            DbFormat::Svd => "SVD",
            DbFormat::Toml => "TOML",
        }
    }
}

/// The directions an access can take, or a register allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
}

impl Access {
    pub const RW: Access = Access {
        read: true,
        write: true,
    };
    pub const R: Access = Access {
        read: true,
        write: false,
    };
    pub const W: Access = Access {
        read: false,
        write: true,
    };

    pub fn allows(self, write: bool) -> bool {
        if write { self.write } else { self.read }
    }
}

/// Of each variant set (an enumeration such as `chipset`), the values an
/// element exists for. An empty list means: in every variant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VariantSet {
    terms: Vec<VariantTerm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct VariantTerm {
    varset: EnumId,
    /// Bit i: the varset's value i is allowed.
    allowed: Box<[u64]>,
}

impl VariantSet {
    /// No restriction.
    pub fn all() -> Self {
        VariantSet::default()
    }

    pub fn is_unrestricted(&self) -> bool {
        self.terms.is_empty()
    }

    /// Restricts the set to the values of `varset` (which has `count`
    /// values) for which `allowed(i)` holds.
    pub fn restrict(&mut self, varset: EnumId, count: usize, allowed: impl Fn(usize) -> bool) {
        let words = count.div_ceil(64).max(1);
        let term = match self.terms.iter_mut().position(|t| t.varset == varset) {
            Some(i) => &mut self.terms[i],
            None => {
                let mut bits = vec![0u64; words].into_boxed_slice();
                for i in 0..count {
                    bits[i / 64] |= 1 << (i % 64);
                }
                self.terms.push(VariantTerm {
                    varset,
                    allowed: bits,
                });
                self.terms.last_mut().expect("just pushed")
            }
        };
        for i in 0..count.min(term.allowed.len() * 64) {
            if !allowed(i) {
                term.allowed[i / 64] &= !(1 << (i % 64));
            }
        }
    }

    /// Adds the restrictions of `parent`: an element exists only where its
    /// container does.
    pub fn inherit(&mut self, parent: &VariantSet) {
        for term in &parent.terms {
            match self.terms.iter_mut().find(|t| t.varset == term.varset) {
                Some(mine) => {
                    for (a, b) in mine.allowed.iter_mut().zip(term.allowed.iter()) {
                        *a &= *b;
                    }
                }
                None => self.terms.push(term.clone()),
            }
        }
    }

    /// True when the element exists in no variant at all.
    pub fn is_empty(&self) -> bool {
        self.terms
            .iter()
            .any(|t| t.allowed.iter().all(|word| *word == 0))
    }

    /// True when the element exists in the chosen variants. A varset with no
    /// chosen value does not restrict: the first matching definition wins.
    #[inline]
    pub fn matches(&self, chosen: &Chosen) -> bool {
        self.terms.iter().all(|t| match chosen.get(t.varset) {
            Some(i) => {
                let i = i as usize;
                t.allowed
                    .get(i / 64)
                    .is_some_and(|word| word & (1 << (i % 64)) != 0)
            }
            None => true,
        })
    }

    /// True when some combination of variants has both elements.
    pub fn intersects(&self, other: &VariantSet) -> bool {
        self.terms.iter().all(
            |t| match other.terms.iter().find(|o| o.varset == t.varset) {
                Some(o) => t
                    .allowed
                    .iter()
                    .zip(o.allowed.iter())
                    .any(|(a, b)| a & b != 0),
                None => true,
            },
        )
    }
}

/// The chosen value of each variant set: `chipset = GP107`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chosen {
    pairs: Vec<(EnumId, u32)>,
}

impl Chosen {
    pub fn get(&self, varset: EnumId) -> Option<u32> {
        self.pairs
            .iter()
            .find(|(v, _)| *v == varset)
            .map(|(_, index)| *index)
    }

    pub fn set(&mut self, varset: EnumId, index: u32) {
        match self.pairs.iter_mut().find(|(v, _)| *v == varset) {
            Some(pair) => pair.1 = index,
            None => self.pairs.push((varset, index)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// How the bits of a register or field are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    Hex,
    Uint,
    Int,
    Bool,
    Float,
    /// Fixed point with `radix` fraction bits.
    Fixed {
        radix: u8,
        signed: bool,
    },
    Enum(EnumId),
    /// A named set of bit fields.
    Bitset(BitsetId),
}

/// A bit field of a register.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: Box<str>,
    pub low: u8,
    pub high: u8,
    pub ty: Type,
    pub variants: VariantSet,
    pub access: Access,
    /// The value is shown shifted left by this many bits (an address field
    /// that holds bits 8 and up of an address).
    pub shr: u8,
    /// Added to the value before it is shown (a divider stored minus two).
    pub add: u64,
}

impl Field {
    pub fn mask(&self) -> u64 {
        bit_mask(self.low, self.high)
    }
}

/// Bits `low..=high` set.
pub fn bit_mask(low: u8, high: u8) -> u64 {
    let width = u32::from(high - low) + 1;
    let ones = if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    ones << low
}

/// A register: one address (or, with [`Node::length`], a row of them).
#[derive(Debug, Clone)]
pub struct Register {
    pub name: Box<str>,
    /// Width in bytes: 1, 2, 4 or 8.
    pub width: u8,
    pub access: Access,
    /// Bit fields; when empty, `ty` describes the whole value.
    pub fields: Vec<Field>,
    pub ty: Type,
    pub shr: u8,
    pub at: SourcePos,
}

/// One value of an enumeration.
#[derive(Debug, Clone)]
pub struct EnumValue {
    pub name: Box<str>,
    /// `None` for values that only name a variant (`<value name="NV1"/>`).
    pub value: Option<u64>,
    pub variants: VariantSet,
    /// SVD enumerations can differ between reads and writes.
    pub access: Access,
}

#[derive(Debug, Clone)]
pub struct EnumDef {
    pub name: Box<str>,
    pub values: Vec<EnumValue>,
}

impl EnumDef {
    /// The name of `value` in the chosen variants, for an access in this direction.
    pub fn name_of(&self, value: u64, write: bool, chosen: &Chosen) -> Option<&str> {
        self.values
            .iter()
            .find(|v| {
                v.value == Some(value) && v.access.allows(write) && v.variants.matches(chosen)
            })
            .map(|v| &*v.name)
    }

    /// The index of the value called `name`, if any.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.values.iter().position(|v| &*v.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct Bitset {
    pub name: Box<str>,
    pub fields: Vec<Field>,
}

/// An element of an address space: a register (or row of registers), or a
/// block of elements (an array or a stripe), repeated `length` times every
/// `stride` address units.
#[derive(Debug, Clone)]
pub struct Node {
    /// `None` for a stripe whose elements belong to its container's namespace.
    pub name: Option<Box<str>>,
    pub offset: u64,
    pub stride: u64,
    /// Number of repetitions; 0 for no limit.
    pub length: u64,
    pub variants: VariantSet,
    pub kind: NodeKind,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Reg(RegId),
    Block {
        children: Vec<Node>,
        /// Try every repetition, not only the one whose stride contains the
        /// address: a stripe's elements may reach past its stride.
        interleaved: bool,
    },
}

/// A register that the decoder reads to learn the variant: the chipset from
/// NVIDIA's `PMC.ID`, in general any field typed with a variant set.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Byte offset in the space.
    pub offset: u64,
    pub width: u8,
    pub low: u8,
    pub high: u8,
    pub varset: EnumId,
    pub register: Box<str>,
}

/// An address space: an rnndb domain, an SVD device, a TOML map.
#[derive(Debug, Clone)]
pub struct Space {
    pub name: Box<str>,
    /// Bytes per address unit (rnndb domains may count in 32- or 64-bit words).
    pub unit: u64,
    /// Offsets are physical addresses (SVD), not offsets into a BAR or mapping.
    pub absolute: bool,
    /// The variant set that names this space's variants (`chipset`), if any.
    pub varset: Option<EnumId>,
    pub nodes: Vec<Node>,
    pub probes: Vec<Probe>,
}

/// A register found at an address.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Full name with indices, e.g. `PGRAPH.GPC[2].TPC[0].CONFIG`, and
    /// `+0x2` where the access starts inside the register.
    pub name: Arc<str>,
    pub reg: RegId,
    /// Bytes from the register's start to the access.
    pub within: u64,
    /// How to decode its value for this access's direction and variants.
    pub plan: Arc<DecodePlan>,
}

/// What a database says about mappings it decodes without a `--device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchRule {
    /// A PCI device's BAR: `vendor:device`, BAR number.
    Pci { vendor: u16, device: u16, bar: u8 },
    /// Any device of a PCI vendor, BAR number (NVIDIA's BAR0 for NV_MMIO).
    PciVendor { vendor: u16, bar: u8 },
    /// A path glob for the mapped file.
    Path(String),
    /// Mappings of physical memory that overlap `start..end` (SVD
    /// peripherals, which sit at absolute addresses).
    Phys { start: u64, end: u64 },
}

/// A register database loaded from one file (and the files it imports).
#[derive(Debug, Clone)]
pub struct Database {
    /// The path the database was loaded from, as given.
    pub path: Arc<str>,
    /// A short name for messages: the TOML `name`, the SVD device name, or
    /// the file name.
    pub name: Box<str>,
    pub format: DbFormat,
    pub spaces: Vec<Space>,
    /// The space used when a `--device` spec names none.
    pub default_space: usize,
    pub regs: Vec<Register>,
    pub enums: Vec<EnumDef>,
    pub bitsets: Vec<Bitset>,
    /// Per space: which mappings it decodes unasked.
    pub matches: Vec<(usize, MatchRule)>,
    /// Problems that do not stop decoding (rules-ng-ng registers that
    /// overlap: the first definition wins).
    pub warnings: Vec<Diagnostic>,
}

/// A problem at a place in a database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub at: SourcePos,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl Database {
    pub fn space_index(&self, name: &str) -> Option<usize> {
        self.spaces.iter().position(|s| &*s.name == name)
    }

    /// The enumeration named `name`.
    pub fn enum_index(&self, name: &str) -> Option<EnumId> {
        self.enums
            .iter()
            .position(|e| &*e.name == name)
            .map(|i| i as EnumId)
    }

    /// The register at byte offset `offset` of `space`, in the chosen
    /// variants. Where two registers share an address, one that allows the
    /// access's direction wins, then the one defined first.
    pub fn resolve(
        &self,
        space: usize,
        offset: u64,
        write: bool,
        chosen: &Chosen,
    ) -> Option<Resolved> {
        let space = &self.spaces[space];
        let unit = space.unit.max(1);
        let mut name = String::new();
        let mut lookup = Lookup {
            db: self,
            unit,
            write,
            chosen,
            strict_access: true,
        };
        let found = lookup.find(&space.nodes, offset / unit, &mut name, &[]);
        let found = found.or_else(|| {
            name.clear();
            lookup.strict_access = false;
            lookup.find(&space.nodes, offset / unit, &mut name, &[])
        });
        let (reg, within_units) = found?;
        let within = within_units * unit + offset % unit;
        if within > 0 {
            name.push_str(&format!("+{within:#x}"));
        }
        Some(Resolved {
            name: Arc::from(name),
            reg,
            within,
            plan: Arc::new(self.plan(reg, write, chosen)),
        })
    }

    /// Calls `sink` with each field of `reg` in `value`, for a read or a write.
    pub fn decode(
        &self,
        reg: RegId,
        value: u64,
        write: bool,
        chosen: &Chosen,
        sink: &mut dyn FieldSink,
    ) {
        self.plan(reg, write, chosen).run(value, sink);
    }

    /// How to decode `reg` for accesses in one direction in the chosen
    /// variants: the fields that exist there and each enumeration's names,
    /// worked out once so that decoding a value is a walk down a list.
    pub fn plan(&self, reg: RegId, write: bool, chosen: &Chosen) -> DecodePlan {
        let reg = &self.regs[reg as usize];
        let width_mask = if reg.width >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * u32::from(reg.width))) - 1
        };
        let mut steps = Vec::new();
        if !reg.fields.is_empty() {
            self.plan_fields(&reg.fields, width_mask, write, chosen, &mut steps, 0);
        } else {
            match &reg.ty {
                Type::Hex if reg.shr > 0 => steps.push(Step::Whole(Show::Hex {
                    shr: reg.shr,
                    add: 0,
                })),
                Type::Hex => {}
                Type::Bitset(id) => {
                    let fields = &self.bitsets[*id as usize].fields;
                    self.plan_fields(fields, width_mask, write, chosen, &mut steps, 0);
                }
                ty => steps.push(Step::Whole(self.show(
                    ty,
                    8 * reg.width,
                    0,
                    0,
                    write,
                    chosen,
                ))),
            }
        }
        DecodePlan { width_mask, steps }
    }

    fn plan_fields(
        &self,
        fields: &[Field],
        scope: u64,
        write: bool,
        chosen: &Chosen,
        steps: &mut Vec<Step>,
        depth: usize,
    ) {
        let mut covered = 0u64;
        for field in fields {
            if !field.variants.matches(chosen) {
                continue;
            }
            let mask = field.mask();
            covered |= mask;
            if !field.access.allows(write) {
                continue;
            }
            let bits = field.high - field.low + 1;
            match &field.ty {
                Type::Bitset(id) if depth < MAX_NESTING => {
                    steps.push(Step::Begin {
                        name: field.name.clone(),
                        low: field.low,
                        mask,
                    });
                    let inner = &self.bitsets[*id as usize].fields;
                    self.plan_fields(inner, mask >> field.low, write, chosen, steps, depth + 1);
                    steps.push(Step::End);
                }
                ty => steps.push(Step::Field {
                    name: field.name.clone(),
                    low: field.low,
                    mask,
                    show: self.show(ty, bits, field.shr, field.add, write, chosen),
                }),
            }
        }
        if scope & !covered != 0 {
            steps.push(Step::Unknown {
                bits: scope & !covered,
            });
        }
    }

    fn show(&self, ty: &Type, bits: u8, shr: u8, add: u64, write: bool, chosen: &Chosen) -> Show {
        match ty {
            Type::Hex | Type::Bitset(_) => Show::Hex { shr, add },
            Type::Uint => Show::Uint { add },
            Type::Int => Show::Int { bits },
            Type::Bool => Show::Bool,
            Type::Float => Show::Float { bits },
            Type::Fixed { radix, signed } => Show::Fixed {
                radix: *radix,
                signed: *signed,
                bits,
            },
            Type::Enum(id) => {
                // First definition of a value wins, as in a lookup.
                let mut names: Vec<(u64, Box<str>)> = Vec::new();
                for v in &self.enums[*id as usize].values {
                    if let Some(value) = v.value
                        && v.access.allows(write)
                        && v.variants.matches(chosen)
                        && !names.iter().any(|(n, _)| *n == value)
                    {
                        names.push((value, v.name.clone()));
                    }
                }
                names.sort_by_key(|(value, _)| *value);
                Show::Enum(names.into_boxed_slice())
            }
        }
    }
}

struct Lookup<'a> {
    db: &'a Database,
    unit: u64,
    write: bool,
    chosen: &'a Chosen,
    /// Skip registers that do not allow the access's direction.
    strict_access: bool,
}

impl Lookup<'_> {
    /// Finds the register at `addr` (in units) among `nodes`, appending its
    /// name to `name`. `pending` holds the indices of unnamed stripes above,
    /// which go onto the next name.
    fn find(
        &mut self,
        nodes: &[Node],
        addr: u64,
        name: &mut String,
        pending: &[u64],
    ) -> Option<(RegId, u64)> {
        for node in nodes {
            if addr < node.offset || !node.variants.matches(self.chosen) {
                continue;
            }
            let rel = addr - node.offset;
            match &node.kind {
                NodeKind::Reg(id) => {
                    let reg = &self.db.regs[*id as usize];
                    if self.strict_access && !reg.access.allows(self.write) {
                        continue;
                    }
                    let (index, within) = match node.stride {
                        0 => (0, rel),
                        stride => (rel / stride, rel % stride),
                    };
                    let span = u64::from(reg.width).div_ceil(self.unit).max(1);
                    if within >= span || (node.length != 0 && index >= node.length) {
                        continue;
                    }
                    name.push_str(&reg.name);
                    push_indices(name, pending);
                    if node.length != 1 {
                        push_indices(name, &[index]);
                    }
                    return Some((*id, within));
                }
                NodeKind::Block {
                    children,
                    interleaved,
                } => {
                    let reach = match node.stride {
                        0 => 0,
                        stride => rel / stride,
                    };
                    let (first, last) = if *interleaved && node.length != 0 {
                        (0, reach.min(node.length - 1))
                    } else {
                        if node.length != 0 && reach >= node.length {
                            continue;
                        }
                        (reach, reach)
                    };
                    for index in first..=last {
                        let inner = rel - index * node.stride;
                        let mark = name.len();
                        let found = match &node.name {
                            Some(block_name) => {
                                name.push_str(block_name);
                                push_indices(name, pending);
                                if node.length != 1 {
                                    push_indices(name, &[index]);
                                }
                                name.push('.');
                                self.find(children, inner, name, &[])
                            }
                            None if node.length != 1 => {
                                let mut more = pending.to_vec();
                                more.push(index);
                                self.find(children, inner, name, &more)
                            }
                            None => self.find(children, inner, name, pending),
                        };
                        if found.is_some() {
                            return found;
                        }
                        name.truncate(mark);
                    }
                }
            }
        }
        None
    }
}

fn push_indices(name: &mut String, indices: &[u64]) {
    use std::fmt::Write as _;
    for index in indices {
        // Writing to a String cannot fail.
        let _ = write!(name, "[{index}]");
    }
}
