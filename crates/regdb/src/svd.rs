//! CMSIS-SVD, read with the `svd-parser` crate.
//!
//! Peripherals sit at their absolute base addresses, so an SVD database
//! decodes by physical address: any mapping of physical memory that covers
//! a peripheral (`/dev/mem`, a UIO map) matches it. Register and cluster
//! arrays (`NAME[%s]`) stay arrays and print as `NAME[3]`; lists
//! (`NAME%s` with `dimIndex`) become one register per index.
//! `derivedFrom` is followed for peripherals, registers, fields and
//! enumerated values. Enumerated values with `usage` read or write apply to
//! accesses in that direction only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use svd_parser::svd;

use crate::error::{Error, Result, SourcePos};
use crate::model::*;
use crate::xml::{Lines, parse_document};

/// Loads an SVD file.
pub fn load(path: &Path) -> Result<Database> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(Arc::from(path.display().to_string()), &text)
}

/// Parses the text of an SVD file; `file` names it in errors.
pub fn parse(file: Arc<str>, text: &str) -> Result<Database> {
    let lines = Lines::new(file.clone(), text);
    // Parsed once more here for positions: svd-parser keeps none, and
    // reports malformed XML without the file's name.
    let doc = parse_document(&file, text)?;
    let positions = Positions::collect(&doc, &lines);
    let device = svd_parser::parse_with_config(text, &svd_parser::Config::default())
        .map_err(|err| svd_error(&file, &*err))?;
    let mut builder = Builder {
        positions,
        db: Database {
            path: file,
            name: device.name.as_str().into(),
            format: DbFormat::Svd,
            spaces: Vec::new(),
            default_space: 0,
            regs: Vec::new(),
            enums: Vec::new(),
            bitsets: Vec::new(),
            matches: Vec::new(),
            warnings: Vec::new(),
        },
        enum_index: HashMap::new(),
    };
    builder.build(&device)?;
    Ok(builder.db)
}

/// svd-parser's errors carry the position as text (`at 12:5`) in the
/// context chain; this puts it where ours go.
fn svd_error(file: &Arc<str>, err: &(dyn std::error::Error + 'static)) -> Error {
    let mut position = None;
    let mut parts = Vec::new();
    let mut next = Some(err);
    while let Some(cause) = next {
        next = cause.source();
        let text = cause.to_string();
        let mut cleaned = text.clone();
        if let Some(at) = text.rfind(" at ") {
            let tail = &text[at + 4..];
            if let Some((row, col)) = tail.split_once(':')
                && let (Ok(row), Ok(col)) = (row.parse::<u32>(), col.parse::<u32>())
            {
                position.get_or_insert((row, col));
                cleaned.truncate(at);
            }
        }
        parts.push(cleaned);
    }
    // The chain runs from the outermost context ("In device `D`") to the
    // root cause; the cause reads best first, then where it is.
    let cause = parts.pop().unwrap_or_default();
    let places: Vec<String> = parts
        .iter()
        .rev()
        .map(|p| {
            let p = p.replace('`', "");
            let p = p
                .strip_prefix("Parsing ")
                .or_else(|| p.strip_prefix("In "))
                .unwrap_or(&p)
                .to_string();
            format!("in {p}")
        })
        .collect();
    let message = if places.is_empty() {
        cause
    } else {
        format!("{cause} ({})", places.join(", "))
    };
    match position {
        Some((row, col)) => Error::invalid(SourcePos::new(file, row, col), message),
        None => Error::File {
            file: file.clone(),
            message,
        },
    }
}

/// Positions of peripherals, registers and fields by their dotted path,
/// for errors that svd-parser does not catch.
struct Positions {
    by_path: HashMap<String, SourcePos>,
    file: SourcePos,
}

impl Positions {
    fn collect(doc: &roxmltree::Document<'_>, lines: &Lines) -> Self {
        let mut by_path = HashMap::new();
        let root = doc.root_element();
        walk(root, "", lines, &mut by_path);
        Positions {
            by_path,
            file: SourcePos::new(lines.file(), 1, 1),
        }
    }

    fn get(&self, path: &str) -> SourcePos {
        self.by_path
            .get(path)
            .cloned()
            .unwrap_or_else(|| self.file.clone())
    }
}

fn walk(
    node: roxmltree::Node<'_, '_>,
    prefix: &str,
    lines: &Lines,
    out: &mut HashMap<String, SourcePos>,
) {
    for child in node.children().filter(|n| n.is_element()) {
        let tag = child.tag_name().name();
        match tag {
            "peripheral" | "register" | "cluster" | "field" => {
                let name = child
                    .children()
                    .find(|n| n.has_tag_name("name"))
                    .and_then(|n| n.text())
                    .unwrap_or("")
                    .trim();
                let path = format!("{prefix}{name}");
                out.entry(path.clone()).or_insert_with(|| lines.node(child));
                walk(child, &format!("{path}."), lines, out);
            }
            _ => walk(child, prefix, lines, out),
        }
    }
}

struct Builder {
    positions: Positions,
    db: Database,
    /// Enumerated values by name, for `derivedFrom`.
    enum_index: HashMap<String, EnumId>,
}

/// Register properties inherited from the device down to the register.
#[derive(Clone, Copy)]
struct Props {
    size: u32,
    access: Access,
}

impl Props {
    fn with(self, p: &svd::RegisterProperties) -> Props {
        Props {
            size: p.size.unwrap_or(self.size),
            access: p.access.map_or(self.access, access),
        }
    }
}

fn access(a: svd::Access) -> Access {
    match a {
        svd::Access::ReadOnly => Access::R,
        svd::Access::WriteOnly | svd::Access::WriteOnce => Access::W,
        svd::Access::ReadWrite | svd::Access::ReadWriteOnce => Access::RW,
    }
}

/// One name per index of an array or list: `NAME[%s]` gives `NAME` and
/// numeric indices; `NAME%s` gives one name per `dimIndex` entry.
enum Repeat {
    Single(String),
    Array {
        name: String,
        count: u64,
        stride: u64,
    },
    List(Vec<(String, u64)>),
}

fn repeat(name: &str, dim: Option<&svd::DimElement>) -> Repeat {
    let Some(dim) = dim else {
        return Repeat::Single(name.replace("%s", ""));
    };
    if let Some(base) = name.strip_suffix("[%s]") {
        return Repeat::Array {
            name: base.to_string(),
            count: u64::from(dim.dim),
            stride: u64::from(dim.dim_increment),
        };
    }
    Repeat::List(
        dim.indexes()
            .enumerate()
            .map(|(i, index)| {
                (
                    name.replace("%s", &index),
                    i as u64 * u64::from(dim.dim_increment),
                )
            })
            .collect(),
    )
}

fn dim_of<T>(item: &svd::MaybeArray<T>) -> Option<&svd::DimElement> {
    match item {
        svd::MaybeArray::Single(_) => None,
        svd::MaybeArray::Array(_, dim) => Some(dim),
    }
}

impl Builder {
    fn build(&mut self, device: &svd::Device) -> Result<()> {
        let props = Props {
            size: 32,
            access: Access::RW,
        }
        .with(&device.default_register_properties);
        let by_name: HashMap<&str, &svd::Peripheral> = device
            .peripherals
            .iter()
            .map(|p| (p.name.as_str(), p))
            .collect();
        let unit = u64::from(device.address_unit_bits.max(8) / 8);
        let mut nodes = Vec::new();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        // Each peripheral is also a space of its own, with offsets from its
        // base: for traces whose addresses are not physical (`#UART0`).
        let mut own_spaces = Vec::new();
        let own_space = |name: &str, node: Node| Space {
            name: name.into(),
            unit,
            absolute: false,
            varset: None,
            nodes: vec![node],
            probes: Vec::new(),
        };
        for peripheral in &device.peripherals {
            // A derived peripheral without registers of its own has its base's.
            let mut source = peripheral;
            let mut hops = 0;
            while source.registers.is_none()
                && let Some(base) = source.derived_from.as_deref()
                && let Some(next) = by_name.get(base)
                && hops < 16
            {
                source = next;
                hops += 1;
            }
            let props = props
                .with(&source.default_register_properties)
                .with(&peripheral.default_register_properties);
            let children = match &source.registers {
                Some(registers) => self.registers(registers, props, &peripheral.name)?,
                None => Vec::new(),
            };
            if peripheral.alternate_peripheral.is_none() {
                let check = crate::model::check_overlaps(&self.db, &children, 1);
                if let Some(d) = check.into_iter().next() {
                    return Err(Error::Invalid {
                        at: d.at,
                        message: format!("in peripheral {}: {}", peripheral.name, d.message),
                    });
                }
            }
            let extent = extent(&self.db, &children).max(
                peripheral
                    .address_block
                    .iter()
                    .flatten()
                    .map(|b| u64::from(b.offset) + u64::from(b.size))
                    .max()
                    .unwrap_or(0),
            );
            let block = |name: String, offset: u64, length: u64, stride: u64| Node {
                name: Some(name.into()),
                offset,
                stride,
                length,
                variants: VariantSet::all(),
                kind: NodeKind::Block {
                    children: children.clone(),
                    interleaved: false,
                },
            };
            match repeat(&peripheral.name, dim_of(peripheral)) {
                Repeat::Single(name) => {
                    ranges.push((peripheral.base_address, extent));
                    own_spaces.push(own_space(&name, block(name.clone(), 0, 1, 0)));
                    nodes.push(block(name, peripheral.base_address, 1, 0));
                }
                Repeat::Array {
                    name,
                    count,
                    stride,
                } => {
                    for i in 0..count {
                        ranges.push((
                            peripheral
                                .base_address
                                .saturating_add(i.saturating_mul(stride)),
                            extent,
                        ));
                    }
                    own_spaces.push(own_space(&name, block(name.clone(), 0, count, stride)));
                    nodes.push(block(name, peripheral.base_address, count, stride));
                }
                Repeat::List(items) => {
                    for (name, delta) in items {
                        ranges.push((peripheral.base_address.saturating_add(delta), extent));
                        own_spaces.push(own_space(&name, block(name.clone(), 0, 1, 0)));
                        nodes.push(block(
                            name,
                            peripheral.base_address.saturating_add(delta),
                            1,
                            0,
                        ));
                    }
                }
            }
        }
        for (start, len) in ranges {
            if len > 0 {
                self.db.matches.push((
                    0,
                    MatchRule::Phys {
                        start,
                        end: start.saturating_add(len),
                    },
                ));
            }
        }
        self.db.spaces.push(Space {
            name: self.db.name.clone(),
            unit,
            absolute: true,
            varset: None,
            nodes,
            probes: Vec::new(),
        });
        self.db.spaces.extend(own_spaces);
        Ok(())
    }

    fn registers(
        &mut self,
        items: &[svd::RegisterCluster],
        props: Props,
        path: &str,
    ) -> Result<Vec<Node>> {
        let by_name: HashMap<&str, &svd::Register> = items
            .iter()
            .filter_map(|rc| match rc {
                svd::RegisterCluster::Register(r) => Some((r.name.as_str(), r)),
                svd::RegisterCluster::Cluster(_) => None,
            })
            .collect();
        let mut nodes = Vec::new();
        for item in items {
            match item {
                svd::RegisterCluster::Register(reg) => {
                    let reg_path = format!("{path}.{}", reg.name);
                    let mut fields_from = reg;
                    let mut hops = 0;
                    while fields_from.fields.is_none()
                        && let Some(base) = fields_from.derived_from.as_deref()
                        && let Some(next) = by_name.get(base.rsplit('.').next().unwrap_or(base))
                        && hops < 16
                    {
                        fields_from = next;
                        hops += 1;
                    }
                    let props = props.with(&fields_from.properties).with(&reg.properties);
                    let width = match props.size {
                        8 => 1,
                        16 => 2,
                        32 => 4,
                        64 => 8,
                        other => {
                            return Err(Error::invalid(
                                self.positions.get(&reg_path),
                                format!(
                                    "register {} has size {other}: 8, 16, 32 or 64 bits are supported",
                                    reg.name
                                ),
                            ));
                        }
                    };
                    let fields = match &fields_from.fields {
                        Some(fields) => self.fields(fields, width, &reg_path)?,
                        None => Vec::new(),
                    };
                    let at = self.positions.get(&reg_path);
                    let add =
                        |db: &mut Database, name: String, offset: u64, length: u64, stride: u64| {
                            let id = db.regs.len() as RegId;
                            db.regs.push(Register {
                                name: name.into(),
                                width,
                                access: props.access,
                                fields: fields.clone(),
                                ty: Type::Hex,
                                shr: 0,
                                at: at.clone(),
                            });
                            let alternate =
                                reg.alternate_register.is_some() || reg.alternate_group.is_some();
                            Node {
                                name: None,
                                offset,
                                stride: if length == 1 {
                                    u64::from(width)
                                } else {
                                    stride
                                },
                                length,
                                variants: VariantSet::all(),
                                // An alternate register shares its address with
                                // another on purpose. In a block of its own, the
                                // overlap check (which compares the registers of
                                // one container) leaves it alone; the register
                                // defined first wins the lookup.
                                kind: if alternate {
                                    NodeKind::Block {
                                        children: vec![Node {
                                            name: None,
                                            offset: 0,
                                            stride: u64::from(width),
                                            length: 1,
                                            variants: VariantSet::all(),
                                            kind: NodeKind::Reg(id),
                                        }],
                                        interleaved: false,
                                    }
                                } else {
                                    NodeKind::Reg(id)
                                },
                            }
                        };
                    let offset = u64::from(reg.address_offset);
                    match repeat(&reg.name, dim_of(reg)) {
                        Repeat::Single(name) => nodes.push(add(&mut self.db, name, offset, 1, 0)),
                        Repeat::Array {
                            name,
                            count,
                            stride,
                        } => nodes.push(add(&mut self.db, name, offset, count, stride)),
                        Repeat::List(items) => {
                            for (name, delta) in items {
                                nodes.push(add(
                                    &mut self.db,
                                    name,
                                    offset.saturating_add(delta),
                                    1,
                                    0,
                                ));
                            }
                        }
                    }
                }
                svd::RegisterCluster::Cluster(cluster) => {
                    let cluster_path = format!("{path}.{}", cluster.name);
                    let props = props.with(&cluster.default_register_properties);
                    let children = self.registers(&cluster.children, props, &cluster_path)?;
                    let check = crate::model::check_overlaps(&self.db, &children, 1);
                    if let Some(d) = check.into_iter().next() {
                        return Err(Error::Invalid {
                            at: d.at,
                            message: format!("in cluster {}: {}", cluster.name, d.message),
                        });
                    }
                    let offset = u64::from(cluster.address_offset);
                    let block = |name: String, offset: u64, length: u64, stride: u64| Node {
                        name: Some(name.into()),
                        offset,
                        stride,
                        length,
                        variants: VariantSet::all(),
                        kind: NodeKind::Block {
                            children: children.clone(),
                            interleaved: false,
                        },
                    };
                    match repeat(&cluster.name, dim_of(cluster)) {
                        Repeat::Single(name) => nodes.push(block(name, offset, 1, 0)),
                        Repeat::Array {
                            name,
                            count,
                            stride,
                        } => nodes.push(block(name, offset, count, stride)),
                        Repeat::List(items) => {
                            for (name, delta) in items {
                                nodes.push(block(name, offset.saturating_add(delta), 1, 0));
                            }
                        }
                    }
                }
            }
        }
        Ok(nodes)
    }

    fn fields(&mut self, items: &[svd::Field], width: u8, reg_path: &str) -> Result<Vec<Field>> {
        let by_name: HashMap<&str, &svd::Field> =
            items.iter().map(|f| (f.name.as_str(), f)).collect();
        let mut fields = Vec::new();
        for item in items {
            let field_path = format!("{reg_path}.{}", item.name);
            let mut values_from = item;
            let mut hops = 0;
            while values_from.enumerated_values.is_empty()
                && let Some(base) = values_from.derived_from.as_deref()
                && let Some(next) = by_name.get(base.rsplit('.').next().unwrap_or(base))
                && hops < 16
            {
                values_from = next;
                hops += 1;
            }
            let ty = self.enumeration(&values_from.enumerated_values, &item.name, &field_path)?;
            let field_access = item.access.map_or(Access::RW, access);
            let bits = item.bit_range.width;
            let reg_bits = 8 * u32::from(width);
            let place = |offset: u32| -> Result<(u8, u8)> {
                let high = offset.saturating_add(bits.max(1) - 1);
                if bits == 0 || high >= reg_bits {
                    return Err(Error::invalid(
                        self.positions.get(&field_path),
                        format!(
                            "field {} (bits {high}:{offset}) does not fit the {reg_bits}-bit register {}",
                            item.name,
                            reg_path.rsplit('.').next().unwrap_or(reg_path)
                        ),
                    ));
                }
                Ok((offset as u8, high as u8))
            };
            let ty = match ty {
                Some(ty) => ty,
                None if bits == 1 => Type::Bool,
                None => Type::Hex,
            };
            let mut push = |name: String, offset: u32| -> Result<()> {
                let (low, high) = place(offset)?;
                fields.push(Field {
                    name: name.into(),
                    low,
                    high,
                    ty: ty.clone(),
                    variants: VariantSet::all(),
                    access: field_access,
                    shr: 0,
                    add: 0,
                });
                Ok(())
            };
            match repeat(&item.name, dim_of(item)) {
                Repeat::Single(name) => push(name, item.bit_range.offset)?,
                Repeat::Array {
                    name,
                    count,
                    stride,
                } => {
                    for i in 0..count {
                        push(
                            format!("{name}[{i}]"),
                            item.bit_range.offset.saturating_add(
                                i.saturating_mul(stride).min(u64::from(u32::MAX)) as u32,
                            ),
                        )?;
                    }
                }
                Repeat::List(items) => {
                    for (name, delta) in items {
                        push(
                            name,
                            item.bit_range
                                .offset
                                .saturating_add(delta.min(u64::from(u32::MAX)) as u32),
                        )?;
                    }
                }
            }
        }
        fields.sort_by_key(|f| f.low);
        for pair in fields.windows(2) {
            if pair[0].mask() & pair[1].mask() != 0 {
                return Err(Error::invalid(
                    self.positions.get(&format!("{reg_path}.{}", pair[1].name)),
                    format!(
                        "field {} (bits {}:{}) overlaps field {} (bits {}:{})",
                        pair[1].name,
                        pair[1].high,
                        pair[1].low,
                        pair[0].name,
                        pair[0].high,
                        pair[0].low
                    ),
                ));
            }
        }
        Ok(fields)
    }

    /// One enumeration from a field's `<enumeratedValues>` blocks (one per
    /// direction at most).
    fn enumeration(
        &mut self,
        blocks: &[svd::EnumeratedValues],
        field: &str,
        path: &str,
    ) -> Result<Option<Type>> {
        if blocks.is_empty() {
            return Ok(None);
        }
        let mut values = Vec::new();
        for block in blocks {
            let direction = match block.usage {
                Some(svd::Usage::Read) => Access::R,
                Some(svd::Usage::Write) => Access::W,
                _ => Access::RW,
            };
            if block.values.is_empty()
                && let Some(base) = block.derived_from.as_deref()
            {
                let key = base.rsplit('.').next().unwrap_or(base);
                let id = *self.enum_index.get(key).ok_or_else(|| {
                    Error::invalid(
                        self.positions.get(path),
                        format!("field {field}: enumeratedValues derivedFrom {base:?}, which is not defined before it"),
                    )
                })?;
                let inherited = self.db.enums[id as usize].values.clone();
                values.extend(inherited.into_iter().map(|mut v| {
                    v.access = direction;
                    v
                }));
                continue;
            }
            for v in &block.values {
                values.push(EnumValue {
                    name: v.name.as_str().into(),
                    value: v.value,
                    variants: VariantSet::all(),
                    access: direction,
                });
            }
        }
        let id = self.db.enums.len() as EnumId;
        let name = blocks
            .iter()
            .find_map(|b| b.name.clone())
            .unwrap_or_else(|| field.to_string());
        for block in blocks {
            if let Some(n) = &block.name {
                self.enum_index.insert(n.clone(), id);
            }
        }
        self.db.enums.push(EnumDef {
            name: name.into(),
            values,
        });
        Ok(Some(Type::Enum(id)))
    }
}

/// Bytes from a peripheral's base to the end of its last register.
fn extent(db: &Database, nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .map(|node| {
            let reps = node.length.max(1) - 1;
            let inner = match &node.kind {
                NodeKind::Reg(id) => u64::from(db.regs[*id as usize].width),
                NodeKind::Block { children, .. } => extent(db, children),
            };
            node.offset
                .saturating_add(reps.saturating_mul(node.stride))
                .saturating_add(inner)
        })
        .max()
        .unwrap_or(0)
}
