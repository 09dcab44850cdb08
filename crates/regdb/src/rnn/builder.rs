//! Building a [`Database`] from the parsed elements.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result, SourcePos};
use crate::model::*;

use super::parser::*;

/// The variant context of an element: the set it exists in, and what its
/// own `variants` attribute, and its children's, are read against.
#[derive(Debug, Clone, Default)]
struct Ctx {
    variants: VariantSet,
    /// From `prefix`, inherited: the variant set children's variants name.
    prefix: Option<EnumId>,
    /// From `varset`: overrides `prefix` for this element's own variants;
    /// inherited only where no prefix is active.
    varset: Option<EnumId>,
}

impl Ctx {
    /// The variant set that a `variants` attribute here names.
    fn active(&self) -> Option<EnumId> {
        self.varset.or(self.prefix)
    }
}

pub(super) struct Builder {
    raw_enums: Vec<RawEnum>,
    raw_bitsets: Vec<RawBitset>,
    groups: HashMap<String, Vec<RawElem>>,
    spectypes: HashMap<String, (String, SourcePos)>,
    domains: Vec<RawDomain>,
    db: Database,
    /// Named (not inline) enumerations: raw index to database index.
    enum_ids: HashMap<String, EnumId>,
    bitset_ids: HashMap<String, BitsetId>,
    /// Groups being expanded, to catch a group that uses itself.
    group_stack: Vec<String>,
}

impl Builder {
    pub(super) fn new(parser: Parser, path: Arc<str>, file: &Path) -> Result<Self> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string());
        Ok(Builder {
            raw_enums: parser.enums,
            raw_bitsets: parser.bitsets,
            groups: parser.groups,
            spectypes: parser.spectypes,
            domains: parser.domains,
            db: Database {
                path,
                name: name.into(),
                format: DbFormat::RulesNg,
                spaces: Vec::new(),
                default_space: 0,
                regs: Vec::new(),
                enums: Vec::new(),
                bitsets: Vec::new(),
                matches: Vec::new(),
                warnings: Vec::new(),
            },
            enum_ids: HashMap::new(),
            bitset_ids: HashMap::new(),
            group_stack: Vec::new(),
        })
    }

    pub(super) fn build(mut self) -> Result<Database> {
        // Every enumeration gets an id first, so that variants can name any
        // of them as their variant set, in any order.
        for (i, raw) in self.raw_enums.iter().enumerate() {
            self.enum_ids.insert(raw.name.clone(), i as EnumId);
            self.db.enums.push(EnumDef {
                name: raw.name.as_str().into(),
                values: Vec::new(),
            });
        }
        for i in 0..self.raw_enums.len() {
            let raw = self.raw_enums[i].clone();
            if raw.inline {
                // Instantiated where used, in the user's variants.
                continue;
            }
            let ctx = self.ctx(&raw.var, &Ctx::default())?;
            let values = self.values(&raw.values, &ctx)?;
            self.db.enums[i].values = values;
        }
        for (i, raw) in self.raw_bitsets.iter().enumerate() {
            self.bitset_ids.insert(raw.name.clone(), i as BitsetId);
            self.db.bitsets.push(Bitset {
                name: raw.name.as_str().into(),
                fields: Vec::new(),
            });
        }
        for i in 0..self.raw_bitsets.len() {
            let raw = self.raw_bitsets[i].clone();
            if raw.inline {
                continue;
            }
            let ctx = self.ctx(&raw.var, &Ctx::default())?;
            let fields = self.fields(&raw.fields, &ctx, None)?;
            self.db.bitsets[i].fields = fields;
        }
        let domains = std::mem::take(&mut self.domains);
        if domains.is_empty() {
            return Err(Error::File {
                file: self.db.path.clone(),
                message: "defines no <domain>: nothing to decode with".into(),
            });
        }
        for domain in &domains {
            let ctx = self.ctx(&domain.var, &Ctx::default())?;
            let unit = u64::from(domain.width / 8);
            let nodes = self.nodes(&domain.elems, &ctx, unit)?;
            let mut space = Space {
                name: domain.name.as_str().into(),
                unit,
                absolute: false,
                varset: ctx.active(),
                nodes,
                probes: Vec::new(),
            };
            space.probes = find_probes(&self.db, &space);
            if space.name.as_ref() == "NV_MMIO" {
                let index = self.db.spaces.len();
                self.db.matches.push((
                    index,
                    MatchRule::PciVendor {
                        vendor: 0x10de,
                        bar: 0,
                    },
                ));
            }
            self.db.spaces.push(space);
        }
        Ok(self.db)
    }

    fn enum_id(&self, name: &str, at: &SourcePos) -> Result<EnumId> {
        self.enum_ids.get(name).copied().ok_or_else(|| {
            Error::invalid(
                at.clone(),
                format!("no <enum> named {name:?} to use as a variant set"),
            )
        })
    }

    /// The context of an element with variant attributes `var` inside `parent`.
    fn ctx(&self, var: &RawVar, parent: &Ctx) -> Result<Ctx> {
        let mut ctx = parent.clone();
        if let Some((prefix, at)) = &var.prefix {
            ctx.prefix = match prefix.as_str() {
                "none" => None,
                name => Some(self.enum_id(name, at)?),
            };
        }
        if ctx.prefix.is_some() {
            ctx.varset = None;
        }
        if let Some((varset, at)) = &var.varset {
            ctx.varset = Some(self.enum_id(varset, at)?);
        }
        if let Some((variants, at)) = &var.variants {
            let varset = ctx.active().ok_or_else(|| {
                Error::invalid(
                    at.clone(),
                    format!("variants={variants:?} but no variant set is active (no varset or prefix here or above)"),
                )
            })?;
            let allowed = self.variant_ranges(varset, variants, at)?;
            let count = self.raw_enums[varset as usize].values.len();
            ctx.variants.restrict(varset, count, |i| allowed[i]);
        }
        Ok(ctx)
    }

    /// Which values of `varset` a `variants` attribute selects.
    fn variant_ranges(&self, varset: EnumId, text: &str, at: &SourcePos) -> Result<Vec<bool>> {
        let values = &self.raw_enums[varset as usize].values;
        let index = |name: &str| {
            values.iter().position(|v| v.name == name).ok_or_else(|| {
                Error::invalid(
                    at.clone(),
                    format!(
                        "variants={text:?}: {name:?} is not a value of the variant set {}",
                        self.raw_enums[varset as usize].name
                    ),
                )
            })
        };
        let mut allowed = vec![false; values.len()];
        for range in text.split_whitespace() {
            let split = range.find([':', '-']);
            let (first, last) = match split {
                None => {
                    let i = index(range)?;
                    (i, i + 1)
                }
                Some(at_sep) => {
                    let (a, rest) = range.split_at(at_sep);
                    let inclusive = rest.starts_with('-');
                    let b = &rest[1..];
                    let first = if a.is_empty() { 0 } else { index(a)? };
                    let last = if b.is_empty() {
                        values.len()
                    } else if inclusive {
                        index(b)? + 1
                    } else {
                        index(b)?
                    };
                    (first, last)
                }
            };
            for slot in allowed.iter_mut().take(last).skip(first) {
                *slot = true;
            }
        }
        Ok(allowed)
    }

    fn values(&self, raw: &[RawValue], ctx: &Ctx) -> Result<Vec<EnumValue>> {
        raw.iter()
            .map(|v| {
                let vctx = self.ctx(&v.var, ctx)?;
                Ok(EnumValue {
                    name: v.name.as_str().into(),
                    value: v.value,
                    variants: vctx.variants,
                    access: Access::RW,
                })
            })
            .collect()
    }

    /// Fields in context `ctx`; `width` is the register's width in bits,
    /// when known, to check bit ranges against.
    fn fields(
        &mut self,
        raw: &[RawField],
        ctx: &Ctx,
        width: Option<(u32, &str)>,
    ) -> Result<Vec<Field>> {
        let mut fields = Vec::with_capacity(raw.len());
        for f in raw {
            if let Some((bits, reg)) = width
                && u32::from(f.high) >= bits
            {
                return Err(Error::invalid(
                    f.at.clone(),
                    format!(
                        "bitfield {} (bits {}..{}) does not fit the {bits}-bit register {reg}",
                        f.name, f.low, f.high
                    ),
                ));
            }
            let fctx = self.ctx(&f.var, ctx)?;
            if fctx.variants.is_empty() {
                continue;
            }
            let bits = u32::from(f.high - f.low) + 1;
            let (ty, inline_fields) =
                self.resolve_type(f.ty.as_ref(), &f.values, &[], &fctx, bits, f.radix, &f.name)?;
            let ty = match (ty, inline_fields.is_empty()) {
                (ty, true) => ty,
                (_, false) => {
                    // A field typed with an inline bitset: its own bit set.
                    let id = self.db.bitsets.len() as BitsetId;
                    self.db.bitsets.push(Bitset {
                        name: f.name.as_str().into(),
                        fields: inline_fields,
                    });
                    Type::Bitset(id)
                }
            };
            fields.push(Field {
                name: f.name.as_str().into(),
                low: f.low,
                high: f.high,
                ty,
                variants: fctx.variants,
                access: Access::RW,
                shr: f.shr,
                add: f.add,
            });
        }
        // Fields may share bits: rules-ng-ng describes alternative
        // meanings of the same bits that way (ALPHA and SRC_BUF of NV1
        // PGRAPH), so that is no error here.
        Ok(fields)
    }

    /// The type named `name` (or the default for `bits` bits), plus inline
    /// values and fields. Returns the type and, for an inline bit set, its
    /// fields instantiated in `ctx`.
    #[allow(clippy::too_many_arguments)]
    fn resolve_type(
        &mut self,
        name: Option<&(String, SourcePos)>,
        values: &[RawValue],
        fields: &[RawField],
        ctx: &Ctx,
        bits: u32,
        radix: Option<u8>,
        owner: &str,
    ) -> Result<(Type, Vec<Field>)> {
        let mut inline_fields = if fields.is_empty() {
            Vec::new()
        } else {
            self.fields(fields, ctx, Some((bits, owner)))?
        };
        let inline_enum = |b: &mut Builder, raw: &[RawValue], name: &str| -> Result<Type> {
            let values = b.values(raw, ctx)?;
            let id = b.db.enums.len() as EnumId;
            b.db.enums.push(EnumDef {
                name: name.into(),
                values,
            });
            Ok(Type::Enum(id))
        };
        let ty = match name {
            None if !values.is_empty() => inline_enum(self, values, owner)?,
            None if bits == 1 => Type::Bool,
            None => Type::Hex,
            Some((ty_name, at)) => {
                let mut ty_name = ty_name.as_str();
                let mut hops = 0;
                while let Some((target, _)) = self.spectypes.get(ty_name) {
                    ty_name = target;
                    hops += 1;
                    if hops > 16 {
                        return Err(Error::invalid(
                            at.clone(),
                            format!("spectype {ty_name} refers to itself"),
                        ));
                    }
                }
                let ty_name = ty_name.to_string();
                if let Some(&id) = self.enum_ids.get(&ty_name) {
                    let raw = &self.raw_enums[id as usize];
                    if raw.inline {
                        let mut raw_values = raw.values.clone();
                        raw_values.extend(values.iter().cloned());
                        inline_enum(self, &raw_values, &ty_name)?
                    } else {
                        Type::Enum(id)
                    }
                } else if let Some(&id) = self.bitset_ids.get(&ty_name) {
                    let raw = &self.raw_bitsets[id as usize];
                    if raw.inline {
                        let raw_fields = raw.fields.clone();
                        let ctx_fields = self.fields(&raw_fields, ctx, Some((bits, owner)))?;
                        inline_fields.extend(ctx_fields);
                        Type::Hex
                    } else {
                        Type::Bitset(id)
                    }
                } else {
                    match ty_name.as_str() {
                        "hex" | "address" | "waddress" | "a3xx_regid" | "bitfield" => Type::Hex,
                        "uint" => Type::Uint,
                        "int" => Type::Int,
                        "boolean" => Type::Bool,
                        "float" => Type::Float,
                        "fixed" => Type::Fixed {
                            radix: radix.unwrap_or(0),
                            signed: true,
                        },
                        "ufixed" => Type::Fixed {
                            radix: radix.unwrap_or(0),
                            signed: false,
                        },
                        "enum" if !values.is_empty() => inline_enum(self, values, owner)?,
                        other => {
                            return Err(Error::invalid(
                                at.clone(),
                                format!(
                                    "type {other:?} is no enum, bitset, spectype or built-in type"
                                ),
                            ));
                        }
                    }
                }
            }
        };
        // A register may carry both a type and its own values or fields.
        let ty = match ty {
            Type::Hex | Type::Uint if !values.is_empty() && name.is_some() => {
                inline_enum(self, values, owner)?
            }
            ty => ty,
        };
        if !inline_fields.is_empty() {
            inline_fields.sort_by_key(|f| f.low);
        }
        Ok((ty, inline_fields))
    }

    fn nodes(&mut self, raw: &[RawElem], parent: &Ctx, unit: u64) -> Result<Vec<Node>> {
        let mut nodes = Vec::with_capacity(raw.len());
        for elem in raw {
            if elem.tag == Tag::UseGroup {
                let name = elem.name.clone().unwrap_or_default();
                if self.group_stack.contains(&name) {
                    return Err(Error::invalid(
                        elem.at.clone(),
                        format!("group {name:?} uses itself"),
                    ));
                }
                let Some(group) = self.groups.get(&name).cloned() else {
                    return Err(Error::invalid(
                        elem.at.clone(),
                        format!("no <group> named {name:?}"),
                    ));
                };
                self.group_stack.push(name);
                let ctx = self.ctx(&elem.var, parent)?;
                let inner = self.nodes(&group, &ctx, unit);
                self.group_stack.pop();
                nodes.extend(inner?);
                continue;
            }
            let ctx = self.ctx(&elem.var, parent)?;
            if ctx.variants.is_empty() {
                // Exists in no variant (a range that ends before it starts).
                continue;
            }
            let node = match elem.tag {
                Tag::Reg(width) => {
                    let name = elem.name.clone().unwrap_or_default();
                    let bits = 8 * u32::from(width);
                    let (ty, fields) = self.resolve_type(
                        elem.ty.as_ref(),
                        &elem.values,
                        &elem.fields,
                        &ctx,
                        bits,
                        elem.radix,
                        &name,
                    )?;
                    let id = self.db.regs.len() as RegId;
                    self.db.regs.push(Register {
                        name: name.into(),
                        width,
                        access: elem.access,
                        fields,
                        ty,
                        shr: elem.shr,
                        at: elem.at.clone(),
                    });
                    let span = u64::from(width).div_ceil(unit).max(1);
                    Node {
                        name: None,
                        offset: elem.offset,
                        stride: elem.stride.unwrap_or(span),
                        length: elem.length,
                        variants: ctx.variants.clone(),
                        kind: NodeKind::Reg(id),
                    }
                }
                Tag::Array | Tag::Stripe => {
                    let stride = match elem.stride {
                        Some(stride) => stride,
                        None if elem.length == 1 => 0,
                        None => {
                            return Err(Error::invalid(
                                elem.at.clone(),
                                format!(
                                    "{} has length {} but no stride",
                                    elem.name.as_deref().unwrap_or("stripe"),
                                    elem.length
                                ),
                            ));
                        }
                    };
                    let children = self.nodes(&elem.children, &ctx, unit)?;
                    Node {
                        name: elem.name.as_deref().map(Into::into),
                        offset: elem.offset,
                        stride,
                        length: elem.length,
                        variants: ctx.variants.clone(),
                        kind: NodeKind::Block {
                            children,
                            interleaved: elem.tag == Tag::Stripe && elem.length != 0,
                        },
                    }
                }
                Tag::UseGroup => unreachable!("handled above"),
            };
            nodes.push(node);
        }
        // The envytools database has a few dozen of these (a register
        // defined twice, a row whose length runs into the next register);
        // rules-ng-ng's own decoder takes the first definition, and so does
        // ours, with a warning.
        for warning in check_overlaps(&self.db, &nodes, unit) {
            if !self.db.warnings.contains(&warning) {
                self.db.warnings.push(warning);
            }
        }
        Ok(nodes)
    }
}

/// Registers at one fixed address with a field typed by a variant set.
pub(crate) fn find_probes(db: &Database, space: &Space) -> Vec<Probe> {
    let varsets: Vec<EnumId> = space.varset.into_iter().collect();
    let mut probes = Vec::new();
    collect_probes(db, &space.nodes, 0, space.unit, "", &varsets, &mut probes);
    probes
}

fn collect_probes(
    db: &Database,
    nodes: &[Node],
    base: u64,
    unit: u64,
    prefix: &str,
    varsets: &[EnumId],
    probes: &mut Vec<Probe>,
) {
    for node in nodes {
        if node.length != 1 {
            continue;
        }
        let offset = base + node.offset;
        match &node.kind {
            NodeKind::Reg(id) => {
                let reg = &db.regs[*id as usize];
                for field in &reg.fields {
                    if let Type::Enum(e) = field.ty
                        && varsets.contains(&e)
                    {
                        probes.push(Probe {
                            offset: offset * unit,
                            width: reg.width,
                            low: field.low,
                            high: field.high,
                            varset: e,
                            register: format!("{prefix}{}", reg.name).into(),
                        });
                    }
                }
            }
            NodeKind::Block { children, .. } => {
                let prefix = match &node.name {
                    Some(name) => format!("{prefix}{name}."),
                    None => prefix.to_string(),
                };
                collect_probes(db, children, offset, unit, &prefix, varsets, probes);
            }
        }
    }
}
