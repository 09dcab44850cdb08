//! mmiotrace's own register map format: TOML that a person writes by hand
//! for their FPGA or NIC. docs/REGISTERS.md describes it with an example.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::model::*;
use crate::xml::{Lines, parse_int};

/// Loads a TOML register map.
pub fn load(path: &Path) -> Result<Database> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let display: Arc<str> = Arc::from(path.display().to_string());
    let default_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| display.to_string());
    parse(display, &default_name, &text)
}

/// Parses the text of a TOML register map; `file` names it in errors.
pub fn parse(file: Arc<str>, default_name: &str, text: &str) -> Result<Database> {
    let lines = Lines::new(file.clone(), text);
    let map: MapFile = toml::from_str(text).map_err(|err| {
        let at = lines.pos(err.span().map_or(0, |s| s.start));
        Error::invalid(at, err.message().trim_end().to_string())
    })?;
    Builder {
        lines: &lines,
        db: Database {
            path: file,
            name: map
                .name
                .clone()
                .unwrap_or_else(|| default_name.into())
                .into(),
            format: DbFormat::Toml,
            spaces: Vec::new(),
            default_space: 0,
            regs: Vec::new(),
            enums: Vec::new(),
            bitsets: Vec::new(),
            matches: Vec::new(),
            warnings: Vec::new(),
        },
        enum_ids: BTreeMap::new(),
    }
    .build(map)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    name: Option<String>,
    /// Default register width in bits.
    width: Option<Spanned<u64>>,
    #[serde(rename = "match")]
    matching: Option<MatchTable>,
    #[serde(default)]
    enums: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<Number>>>,
    #[serde(default)]
    registers: BTreeMap<Spanned<String>, Spanned<RegDef>>,
    #[serde(default)]
    blocks: BTreeMap<Spanned<String>, Spanned<BlockDef>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchTable {
    #[serde(default)]
    pci: Vec<Spanned<String>>,
    #[serde(default)]
    bar: u8,
    #[serde(default)]
    path: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockDef {
    offset: Spanned<Number>,
    #[serde(default)]
    count: Option<Spanned<Number>>,
    #[serde(default)]
    stride: Option<Spanned<Number>>,
    /// Free text for the reader of the file; the decoder ignores it.
    #[serde(default, rename = "doc")]
    _doc: Option<de::IgnoredAny>,
    #[serde(default)]
    registers: BTreeMap<Spanned<String>, Spanned<RegDef>>,
    #[serde(default)]
    blocks: BTreeMap<Spanned<String>, Spanned<BlockDef>>,
}

/// A register: an offset alone, or a table.
#[derive(Debug)]
enum RegDef {
    Offset(Number),
    Table(Box<RegTable>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegTable {
    offset: Spanned<Number>,
    width: Option<Spanned<u64>>,
    access: Option<Spanned<String>>,
    count: Option<Spanned<Number>>,
    stride: Option<Spanned<Number>>,
    #[serde(rename = "type")]
    ty: Option<Spanned<String>>,
    #[serde(rename = "enum")]
    enumeration: Option<Spanned<EnumRef>>,
    /// Free text for the reader of the file; the decoder ignores it.
    #[serde(default, rename = "doc")]
    _doc: Option<de::IgnoredAny>,
    #[serde(default)]
    fields: BTreeMap<Spanned<String>, Spanned<FieldDef>>,
}

/// A field: a bit number, a `"high:low"` range, or a table.
#[derive(Debug)]
enum FieldDef {
    Bit(u64),
    Bits(String),
    Table(FieldTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldTable {
    bit: Option<u64>,
    bits: Option<String>,
    #[serde(rename = "type")]
    ty: Option<Spanned<String>>,
    #[serde(rename = "enum")]
    enumeration: Option<Spanned<EnumRef>>,
    access: Option<Spanned<String>>,
    /// Free text for the reader of the file; the decoder ignores it.
    #[serde(default, rename = "doc")]
    _doc: Option<de::IgnoredAny>,
}

/// An enumeration: the name of one under `[enums]`, or inline `{ A = 0, B = 1 }`.
#[derive(Debug)]
enum EnumRef {
    Name(String),
    Inline(BTreeMap<Spanned<String>, Spanned<Number>>),
}

/// A number: TOML integers, or strings such as `"0x1f"` (TOML integers
/// stop at i64, and some people prefer strings for addresses).
#[derive(Debug, Clone, Copy)]
struct Number(u64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer, or a string such as \"0x1f\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Number, E> {
                u64::try_from(v)
                    .map(Number)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Number, E> {
                Ok(Number(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Number, E> {
                parse_int(v)
                    .map(Number)
                    .ok_or_else(|| E::custom(format!("{v:?} is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RegDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RegDef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an offset, or a table with an offset")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<RegDef, E> {
                Number::visit(v).map(RegDef::Offset)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RegDef, E> {
                parse_int(v)
                    .map(|n| RegDef::Offset(Number(n)))
                    .ok_or_else(|| E::custom(format!("{v:?} is not an offset")))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<RegDef, A::Error> {
                RegTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|table| RegDef::Table(Box::new(table)))
            }
        }
        d.deserialize_any(V)
    }
}

impl Number {
    fn visit<E: de::Error>(v: i64) -> std::result::Result<Number, E> {
        u64::try_from(v)
            .map(Number)
            .map_err(|_| E::custom(format!("{v} is negative")))
    }
}

impl<'de> Deserialize<'de> for FieldDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldDef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bit number, a \"high:low\" range, or a table")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<FieldDef, E> {
                Number::visit(v).map(|n| FieldDef::Bit(n.0))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<FieldDef, E> {
                Ok(FieldDef::Bits(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<FieldDef, A::Error> {
                FieldTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(FieldDef::Table)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for EnumRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnumRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the name of an enum under [enums], or a table of NAME = value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<EnumRef, E> {
                Ok(EnumRef::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<EnumRef, A::Error> {
                BTreeMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(EnumRef::Inline)
            }
        }
        d.deserialize_any(V)
    }
}

struct Builder<'a> {
    lines: &'a Lines,
    db: Database,
    enum_ids: BTreeMap<String, EnumId>,
}

impl Builder<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        Error::invalid(self.lines.pos(span.start), message)
    }

    fn build(mut self, map: MapFile) -> Result<Database> {
        let width = match &map.width {
            Some(w) => self.width(w)?,
            None => 4,
        };
        for (name, values) in &map.enums {
            let id = self.enum_def(name.get_ref(), values, None)?;
            self.enum_ids.insert(name.get_ref().clone(), id);
        }
        let mut nodes = Vec::new();
        for (name, reg) in &map.registers {
            nodes.push(self.register(name, reg, width)?);
        }
        for (name, block) in &map.blocks {
            nodes.push(self.block(name, block, width)?);
        }
        self.check_overlaps(&nodes)?;
        if let Some(matching) = &map.matching {
            for pci in &matching.pci {
                let (vendor, device) = parse_pci_ids(pci.get_ref()).ok_or_else(|| {
                    self.err(
                        pci.span(),
                        format!(
                            "pci = {:?}: expected \"vendor:device\" in hex, e.g. \"8086:100e\"",
                            pci.get_ref()
                        ),
                    )
                })?;
                self.db.matches.push((
                    0,
                    MatchRule::Pci {
                        vendor,
                        device,
                        bar: matching.bar,
                    },
                ));
            }
            for path in &matching.path {
                self.db.matches.push((0, MatchRule::Path(path.clone())));
            }
        }
        self.db.spaces.push(Space {
            name: self.db.name.clone(),
            unit: 1,
            absolute: false,
            varset: None,
            nodes,
            probes: Vec::new(),
        });
        Ok(self.db)
    }

    fn width(&self, width: &Spanned<u64>) -> Result<u8> {
        match *width.get_ref() {
            8 => Ok(1),
            16 => Ok(2),
            32 => Ok(4),
            64 => Ok(8),
            other => Err(self.err(
                width.span(),
                format!("width = {other}: a register is 8, 16, 32 or 64 bits wide"),
            )),
        }
    }

    fn check_overlaps(&self, nodes: &[Node]) -> Result<()> {
        match crate::model::check_overlaps(&self.db, nodes, 1)
            .into_iter()
            .next()
        {
            Some(d) => Err(Error::Invalid {
                at: d.at,
                message: d.message,
            }),
            None => Ok(()),
        }
    }

    fn enum_def(
        &mut self,
        name: &str,
        values: &BTreeMap<Spanned<String>, Spanned<Number>>,
        bits: Option<u32>,
    ) -> Result<EnumId> {
        let mut out: Vec<EnumValue> = Vec::with_capacity(values.len());
        for (value_name, value) in values {
            let v = value.get_ref().0;
            if let Some(bits) = bits
                && bits < 64
                && v >> bits != 0
            {
                return Err(self.err(
                    value.span(),
                    format!(
                        "{} = {v:#x} does not fit in the {bits}-bit field",
                        value_name.get_ref()
                    ),
                ));
            }
            if let Some(other) = out.iter().find(|e| e.value == Some(v)) {
                return Err(self.err(
                    value.span(),
                    format!(
                        "{} and {} both have the value {v:#x}",
                        other.name,
                        value_name.get_ref()
                    ),
                ));
            }
            out.push(EnumValue {
                name: value_name.get_ref().as_str().into(),
                value: Some(v),
                variants: VariantSet::all(),
                access: Access::RW,
            });
        }
        let id = self.db.enums.len() as EnumId;
        self.db.enums.push(EnumDef {
            name: name.into(),
            values: out,
        });
        Ok(id)
    }

    fn enum_ref(&mut self, owner: &str, e: &Spanned<EnumRef>, bits: u32) -> Result<EnumId> {
        match e.get_ref() {
            EnumRef::Name(name) => {
                let id = *self
                    .enum_ids
                    .get(name)
                    .ok_or_else(|| self.err(e.span(), format!("no enum {name:?} under [enums]")))?;
                if bits < 64
                    && let Some(v) = self.db.enums[id as usize]
                        .values
                        .iter()
                        .find(|v| v.value.is_some_and(|v| v >> bits != 0))
                {
                    return Err(self.err(
                        e.span(),
                        format!(
                            "enum {name}: {} does not fit in the {bits}-bit field {owner}",
                            v.name
                        ),
                    ));
                }
                Ok(id)
            }
            EnumRef::Inline(values) => self.enum_def(owner, values, Some(bits)),
        }
    }

    fn access(&self, access: Option<&Spanned<String>>) -> Result<Access> {
        match access {
            None => Ok(Access::RW),
            Some(a) => match a.get_ref().as_str() {
                "rw" => Ok(Access::RW),
                "r" | "ro" => Ok(Access::R),
                "w" | "wo" => Ok(Access::W),
                other => Err(self.err(
                    a.span(),
                    format!("access = {other:?}: expected \"r\", \"w\" or \"rw\""),
                )),
            },
        }
    }

    fn type_named(&self, ty: &Spanned<String>) -> Result<Type> {
        Ok(match ty.get_ref().as_str() {
            "hex" => Type::Hex,
            "uint" => Type::Uint,
            "int" => Type::Int,
            "bool" => Type::Bool,
            "float" => Type::Float,
            "enum" => {
                return Err(self.err(ty.span(), "type = \"enum\" needs enum = … as well"));
            }
            other => {
                return Err(self.err(
                    ty.span(),
                    format!("type = {other:?}: expected hex, uint, int, bool or float"),
                ));
            }
        })
    }

    fn repeat(
        &self,
        what: &str,
        count: Option<&Spanned<Number>>,
        stride: Option<&Spanned<Number>>,
        at: Range<usize>,
    ) -> Result<(u64, u64)> {
        let count = count.map_or(1, |c| c.get_ref().0);
        if count == 0 {
            return Err(self.err(at, format!("{what}: count = 0")));
        }
        let stride = match stride {
            Some(s) => s.get_ref().0,
            None if count == 1 => 0,
            None => return Err(self.err(at, format!("{what}: count = {count} needs a stride"))),
        };
        Ok((count, stride))
    }

    fn register(
        &mut self,
        name: &Spanned<String>,
        def: &Spanned<RegDef>,
        default_width: u8,
    ) -> Result<Node> {
        let reg_name = name.get_ref().as_str();
        check_name(self, name)?;
        let at = self.lines.pos(name.span().start);
        let (offset, width, access, ty, fields, (length, stride)) = match def.get_ref() {
            RegDef::Offset(offset) => (
                offset.0,
                default_width,
                Access::RW,
                Type::Hex,
                Vec::new(),
                (1, 0),
            ),
            RegDef::Table(table) => {
                let width = match &table.width {
                    Some(w) => self.width(w)?,
                    None => default_width,
                };
                let bits = 8 * u32::from(width);
                let ty = match (&table.enumeration, &table.ty) {
                    (Some(e), _) => Type::Enum(self.enum_ref(reg_name, e, bits)?),
                    (None, Some(ty)) => self.type_named(ty)?,
                    (None, None) => Type::Hex,
                };
                let mut fields = Vec::with_capacity(table.fields.len());
                for (field_name, field) in &table.fields {
                    fields.push(self.field(reg_name, bits, field_name, field)?);
                }
                fields.sort_by_key(|f| f.low);
                for pair in fields.windows(2) {
                    if pair[0].mask() & pair[1].mask() != 0 {
                        let span = table
                            .fields
                            .iter()
                            .find(|(n, _)| n.get_ref().as_str() == &*pair[1].name)
                            .map_or(def.span(), |(n, _)| n.span());
                        return Err(self.err(
                            span,
                            format!(
                                "field {} (bits {}:{}) overlaps field {} (bits {}:{}) of {reg_name}",
                                pair[1].name, pair[1].high, pair[1].low, pair[0].name, pair[0].high, pair[0].low
                            ),
                        ));
                    }
                }
                let repeat = self.repeat(
                    reg_name,
                    table.count.as_ref(),
                    table.stride.as_ref(),
                    def.span(),
                )?;
                (
                    table.offset.get_ref().0,
                    width,
                    self.access(table.access.as_ref())?,
                    ty,
                    fields,
                    repeat,
                )
            }
        };
        if length > 1 && stride < u64::from(width) {
            return Err(self.err(
                def.span(),
                format!("{reg_name}: stride {stride:#x} is less than the register's {width} bytes"),
            ));
        }
        let id = self.db.regs.len() as RegId;
        self.db.regs.push(Register {
            name: reg_name.into(),
            width,
            access,
            fields,
            ty,
            shr: 0,
            at,
        });
        Ok(Node {
            name: None,
            offset,
            stride: if length == 1 {
                u64::from(width)
            } else {
                stride
            },
            length,
            variants: VariantSet::all(),
            kind: NodeKind::Reg(id),
        })
    }

    fn field(
        &mut self,
        reg: &str,
        reg_bits: u32,
        name: &Spanned<String>,
        def: &Spanned<FieldDef>,
    ) -> Result<Field> {
        check_name(self, name)?;
        let field_name = name.get_ref().as_str();
        let (range, table) = match def.get_ref() {
            FieldDef::Bit(bit) => (Some((*bit, *bit)), None),
            FieldDef::Bits(text) => (Some(self.bit_range(text, def.span())?), None),
            FieldDef::Table(table) => {
                let range = match (&table.bit, &table.bits) {
                    (Some(bit), None) => (*bit, *bit),
                    (None, Some(text)) => self.bit_range(text, def.span())?,
                    _ => {
                        return Err(self.err(
                            def.span(),
                            format!(
                                "field {field_name}: give either bit = N or bits = \"high:low\""
                            ),
                        ));
                    }
                };
                (Some(range), Some(table))
            }
        };
        let (high, low) = range.expect("every form has a range");
        if u32::try_from(high).map_or(true, |h| h >= reg_bits) {
            return Err(self.err(
                def.span(),
                format!("field {field_name} (bits {high}:{low}) does not fit the {reg_bits}-bit register {reg}"),
            ));
        }
        let bits = (high - low + 1) as u32;
        let mut access = Access::RW;
        let ty = match table {
            None if bits == 1 => Type::Bool,
            None => Type::Hex,
            Some(t) => {
                access = self.access(t.access.as_ref())?;
                match (&t.enumeration, &t.ty) {
                    (Some(e), _) => Type::Enum(self.enum_ref(field_name, e, bits)?),
                    (None, Some(ty)) => self.type_named(ty)?,
                    (None, None) if bits == 1 => Type::Bool,
                    (None, None) => Type::Hex,
                }
            }
        };
        Ok(Field {
            name: field_name.into(),
            low: low as u8,
            high: high as u8,
            ty,
            variants: VariantSet::all(),
            access,
            shr: 0,
            add: 0,
        })
    }

    /// `"9:8"` (high:low, as data sheets write it) or `"7"`; returns (high, low).
    fn bit_range(&self, text: &str, span: Range<usize>) -> Result<(u64, u64)> {
        let bad = || {
            self.err(
                span.clone(),
                format!(
                    "bits = {text:?}: expected \"high:low\" such as \"9:8\", or one bit number"
                ),
            )
        };
        let (high, low) = match text.split_once(':') {
            Some((h, l)) => (
                h.trim().parse::<u64>().map_err(|_| bad())?,
                l.trim().parse::<u64>().map_err(|_| bad())?,
            ),
            None => {
                let bit = text.trim().parse::<u64>().map_err(|_| bad())?;
                (bit, bit)
            }
        };
        if high < low {
            return Err(self.err(
                span,
                format!("bits = {text:?}: the high bit comes first (\"{low}:{high}\")"),
            ));
        }
        Ok((high, low))
    }

    fn block(
        &mut self,
        name: &Spanned<String>,
        def: &Spanned<BlockDef>,
        width: u8,
    ) -> Result<Node> {
        check_name(self, name)?;
        let block = def.get_ref();
        let (length, stride) = self.repeat(
            name.get_ref(),
            block.count.as_ref(),
            block.stride.as_ref(),
            def.span(),
        )?;
        let mut children = Vec::new();
        for (reg_name, reg) in &block.registers {
            children.push(self.register(reg_name, reg, width)?);
        }
        for (block_name, inner) in &block.blocks {
            children.push(self.block(block_name, inner, width)?);
        }
        self.check_overlaps(&children)?;
        Ok(Node {
            name: Some(name.get_ref().as_str().into()),
            offset: block.offset.get_ref().0,
            stride,
            length,
            variants: VariantSet::all(),
            kind: NodeKind::Block {
                children,
                interleaved: false,
            },
        })
    }
}

fn check_name(builder: &Builder<'_>, name: &Spanned<String>) -> Result<()> {
    let text = name.get_ref();
    if text.is_empty()
        || text.contains(|c: char| c.is_whitespace() || c == '.' || c == '[' || c == ']')
    {
        return Err(builder.err(
            name.span(),
            format!("{text:?} cannot be a name: no spaces, dots or brackets"),
        ));
    }
    Ok(())
}

/// `"10de:1c82"` as (vendor, device).
pub(crate) fn parse_pci_ids(text: &str) -> Option<(u16, u16)> {
    let (vendor, device) = text.split_once(':')?;
    if vendor.len() != 4 || device.len() != 4 {
        return None;
    }
    Some((
        u16::from_str_radix(vendor, 16).ok()?,
        u16::from_str_radix(device, 16).ok()?,
    ))
}
