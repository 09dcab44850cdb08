//! rules-ng-ng XML, the format of envytools' rnndb and of Mesa's freedreno
//! and etnaviv register files.
//!
//! What is read:
//! - `<import file=…>`: searched for in the importing file's directory and
//!   each directory above it, then in the directories of `RNN_PATH`
//!   (colon-separated). Each file is read once.
//! - `<domain>` (same-named domains are merged, as rules-ng-ng does), with
//!   `width` (bits per address unit, default 8), `prefix` and `varset`.
//! - `<reg8>`, `<reg16>`, `<reg32>`, `<reg64>` with `offset`, `length`,
//!   `stride`, `access`, `type`, `shr`; `<bitfield>` (`low`/`high` or `pos`,
//!   `type`, `shr`, `add`, `radix`) and `<value>` inside.
//! - `<array>` and `<stripe>` (`offset`, `stride`, `length`; a stripe without
//!   a name adds nothing to the names below it), `<group>` and `<use-group>`.
//! - `<enum>`, `<bitset>` (`inline="yes"` ones are copied into each user, so
//!   they take the user's variants), `<spectype>`.
//! - `variants` on any element: space-separated ranges over the values of
//!   the active variant set (`varset`, else `prefix`, else the container's):
//!   `A` alone, `A:B` from A up to but not including B, `A-B` from A to B,
//!   `A-` from A on, `:B` up to B. An element exists where all of its
//!   containers exist too.
//!
//! Documentation elements (`<doc>`, `<brief>`, `<copyright>`, …) and elements
//! this decoder has no use for are skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use roxmltree::Node as XmlNode;

use crate::error::{Error, Result, SourcePos};
use crate::model::*;
use crate::xml::{Lines, parse_document, parse_int};

/// Loads the rules-ng-ng database rooted at `path` and everything it imports.
pub fn load(path: &Path) -> Result<Database> {
    let mut parser = Parser {
        search: rnn_path(),
        ..Parser::default()
    };
    let display: Arc<str> = Arc::from(path.display().to_string());
    parser.parse_file(path, display.clone(), None)?;
    Builder::new(parser, display, path)?.build()
}

fn rnn_path() -> Vec<PathBuf> {
    std::env::var_os("RNN_PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default)]
struct RawVar {
    varset: Option<(String, SourcePos)>,
    prefix: Option<(String, SourcePos)>,
    variants: Option<(String, SourcePos)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Reg(u8),
    Array,
    Stripe,
    UseGroup,
}

#[derive(Debug, Clone)]
struct RawElem {
    tag: Tag,
    name: Option<String>,
    offset: u64,
    stride: Option<u64>,
    length: u64,
    var: RawVar,
    access: Access,
    ty: Option<(String, SourcePos)>,
    shr: u8,
    radix: Option<u8>,
    fields: Vec<RawField>,
    values: Vec<RawValue>,
    children: Vec<RawElem>,
    at: SourcePos,
}

#[derive(Debug, Clone)]
struct RawField {
    name: String,
    low: u8,
    high: u8,
    ty: Option<(String, SourcePos)>,
    var: RawVar,
    shr: u8,
    add: u64,
    radix: Option<u8>,
    values: Vec<RawValue>,
    at: SourcePos,
}

#[derive(Debug, Clone)]
struct RawValue {
    name: String,
    value: Option<u64>,
    var: RawVar,
}

#[derive(Debug, Clone)]
struct RawEnum {
    name: String,
    var: RawVar,
    inline: bool,
    values: Vec<RawValue>,
}

#[derive(Debug, Clone)]
struct RawBitset {
    name: String,
    var: RawVar,
    inline: bool,
    fields: Vec<RawField>,
}

#[derive(Debug, Clone)]
struct RawDomain {
    name: String,
    width: u32,
    var: RawVar,
    elems: Vec<RawElem>,
}

#[derive(Debug, Default)]
struct Parser {
    search: Vec<PathBuf>,
    loaded: Vec<PathBuf>,
    domains: Vec<RawDomain>,
    enums: Vec<RawEnum>,
    bitsets: Vec<RawBitset>,
    groups: HashMap<String, Vec<RawElem>>,
    spectypes: HashMap<String, (String, SourcePos)>,
}

/// The attributes a node may have, read with their positions for errors.
struct Attrs<'a, 'input> {
    node: XmlNode<'a, 'input>,
    lines: &'a Lines,
}

impl<'a, 'input> Attrs<'a, 'input> {
    fn at(&self) -> SourcePos {
        self.lines.node(self.node)
    }

    fn str(&self, name: &str) -> Option<&'a str> {
        self.node.attribute(name)
    }

    fn string(&self, name: &str) -> Option<(String, SourcePos)> {
        self.str(name)
            .map(|v| (v.to_string(), self.lines.attr(self.node, name)))
    }

    fn required(&self, name: &str) -> Result<&'a str> {
        self.str(name).ok_or_else(|| {
            Error::invalid(
                self.at(),
                format!("<{}> has no {name} attribute", self.node.tag_name().name()),
            )
        })
    }

    fn int(&self, name: &str) -> Result<Option<u64>> {
        match self.str(name) {
            None => Ok(None),
            Some(text) => parse_int(text).map(Some).ok_or_else(|| {
                Error::invalid(
                    self.lines.attr(self.node, name),
                    format!("{name}={text:?} is not a number"),
                )
            }),
        }
    }

    fn small(&self, name: &str, max: u64) -> Result<Option<u8>> {
        match self.int(name)? {
            None => Ok(None),
            Some(v) if v <= max => Ok(Some(v as u8)),
            Some(v) => Err(Error::invalid(
                self.lines.attr(self.node, name),
                format!("{name}={v} is out of range (at most {max})"),
            )),
        }
    }

    fn var(&self) -> RawVar {
        RawVar {
            varset: self.string("varset"),
            prefix: self.string("prefix"),
            variants: self.string("variants"),
        }
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.str(name), Some("yes" | "true" | "1"))
    }
}

impl Parser {
    fn parse_file(
        &mut self,
        path: &Path,
        display: Arc<str>,
        from: Option<SourcePos>,
    ) -> Result<()> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.loaded.contains(&canonical) {
            return Ok(());
        }
        self.loaded.push(canonical);
        let text = std::fs::read_to_string(path).map_err(|source| match &from {
            Some(at) => Error::invalid(
                at.clone(),
                format!("cannot read imported file {}: {source}", path.display()),
            ),
            None => Error::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let lines = Lines::new(display, &text);
        let doc = parse_document(lines.file(), &text)?;
        let root = doc.root_element();
        if root.tag_name().name() != "database" {
            return Err(Error::invalid(
                lines.node(root),
                format!(
                    "expected a rules-ng-ng <database>, found <{}>",
                    root.tag_name().name()
                ),
            ));
        }
        for child in root.children().filter(|n| n.is_element()) {
            let attrs = Attrs {
                node: child,
                lines: &lines,
            };
            match child.tag_name().name() {
                "import" => {
                    let file = attrs.required("file")?;
                    let found = self.find_import(path, file).ok_or_else(|| {
                        Error::invalid(
                            attrs.at(),
                            format!(
                                "cannot find imported file {file:?} next to {} or above it, or in RNN_PATH",
                                path.display()
                            ),
                        )
                    })?;
                    let display = Arc::from(found.display().to_string());
                    self.parse_file(&found, display, Some(attrs.at()))?;
                }
                "domain" => self.parse_domain(&attrs)?,
                _ => self.parse_definition(&attrs)?,
            }
        }
        Ok(())
    }

    fn find_import(&self, importer: &Path, file: &str) -> Option<PathBuf> {
        let mut dir = importer.parent();
        while let Some(d) = dir {
            let candidate = d.join(file);
            if candidate.is_file() {
                return Some(candidate);
            }
            dir = d.parent();
        }
        self.search
            .iter()
            .map(|d| d.join(file))
            .find(|candidate| candidate.is_file())
    }

    /// `<enum>`, `<bitset>`, `<group>`, `<spectype>`, wherever they appear.
    /// Returns false for anything else.
    fn parse_definition(&mut self, attrs: &Attrs<'_, '_>) -> Result<()> {
        match attrs.node.tag_name().name() {
            "enum" => {
                let name = attrs.required("name")?.to_string();
                let values = parse_values(attrs.node, attrs.lines)?;
                let var = attrs.var();
                match self.enums.iter_mut().find(|e| e.name == name) {
                    Some(existing) => existing.values.extend(values),
                    None => self.enums.push(RawEnum {
                        name,
                        var,
                        inline: attrs.flag("inline"),
                        values,
                    }),
                }
            }
            "bitset" => {
                let name = attrs.required("name")?.to_string();
                let fields = parse_fields(attrs.node, attrs.lines)?;
                let var = attrs.var();
                match self.bitsets.iter_mut().find(|b| b.name == name) {
                    Some(existing) => existing.fields.extend(fields),
                    None => self.bitsets.push(RawBitset {
                        name,
                        var,
                        inline: attrs.flag("inline"),
                        fields,
                    }),
                }
            }
            "group" => {
                let name = attrs.required("name")?.to_string();
                let elems = self.parse_elems(attrs.node, attrs.lines)?;
                self.groups.entry(name).or_default().extend(elems);
            }
            "spectype" => {
                let name = attrs.required("name")?.to_string();
                let ty = attrs.string("type").unwrap_or(("hex".into(), attrs.at()));
                self.spectypes.insert(name, ty);
            }
            _ => {}
        }
        Ok(())
    }

    fn parse_domain(&mut self, attrs: &Attrs<'_, '_>) -> Result<()> {
        let name = attrs.required("name")?.to_string();
        let width = attrs.int("width")?.unwrap_or(8);
        if !matches!(width, 8 | 16 | 32 | 64) {
            return Err(Error::invalid(
                attrs.lines.attr(attrs.node, "width"),
                format!("domain width {width} is not 8, 16, 32 or 64"),
            ));
        }
        let elems = self.parse_elems(attrs.node, attrs.lines)?;
        match self.domains.iter_mut().find(|d| d.name == name) {
            Some(existing) => existing.elems.extend(elems),
            None => self.domains.push(RawDomain {
                name,
                width: width as u32,
                var: attrs.var(),
                elems,
            }),
        }
        Ok(())
    }

    fn parse_elems(&mut self, parent: XmlNode<'_, '_>, lines: &Lines) -> Result<Vec<RawElem>> {
        let mut elems = Vec::new();
        for child in parent.children().filter(|n| n.is_element()) {
            let attrs = Attrs { node: child, lines };
            let tag = match child.tag_name().name() {
                "reg8" => Tag::Reg(1),
                "reg16" => Tag::Reg(2),
                "reg32" => Tag::Reg(4),
                "reg64" => Tag::Reg(8),
                "array" => Tag::Array,
                "stripe" => Tag::Stripe,
                "use-group" => Tag::UseGroup,
                _ => {
                    self.parse_definition(&attrs)?;
                    continue;
                }
            };
            elems.push(self.parse_elem(tag, &attrs)?);
        }
        Ok(elems)
    }

    fn parse_elem(&mut self, tag: Tag, attrs: &Attrs<'_, '_>) -> Result<RawElem> {
        let name = match tag {
            Tag::Reg(_) | Tag::UseGroup => Some(attrs.required("name")?.to_string()),
            Tag::Array | Tag::Stripe => attrs.str("name").map(str::to_string),
        };
        let offset = match tag {
            Tag::UseGroup => 0,
            _ => attrs.int("offset")?.unwrap_or(0),
        };
        let access = match attrs.str("access") {
            None | Some("rw") => Access::RW,
            Some("r" | "ro") => Access::R,
            Some("w" | "wo") => Access::W,
            Some(other) => {
                return Err(Error::invalid(
                    attrs.lines.attr(attrs.node, "access"),
                    format!("access={other:?} is not r, w or rw"),
                ));
            }
        };
        let (fields, values, children) = match tag {
            Tag::Reg(_) => (
                parse_fields(attrs.node, attrs.lines)?,
                parse_values(attrs.node, attrs.lines)?,
                Vec::new(),
            ),
            Tag::Array | Tag::Stripe => (
                Vec::new(),
                Vec::new(),
                self.parse_elems(attrs.node, attrs.lines)?,
            ),
            Tag::UseGroup => (Vec::new(), Vec::new(), Vec::new()),
        };
        if let Tag::Reg(_) = tag {
            // Definitions nested in a register (an inline <enum> or <bitset>).
            for child in attrs.node.children().filter(|n| n.is_element()) {
                if matches!(child.tag_name().name(), "enum" | "bitset") {
                    self.parse_definition(&Attrs {
                        node: child,
                        lines: attrs.lines,
                    })?;
                }
            }
        }
        Ok(RawElem {
            tag,
            name,
            offset,
            stride: attrs.int("stride")?,
            length: attrs.int("length")?.unwrap_or(1),
            var: attrs.var(),
            access,
            ty: attrs.string("type"),
            shr: attrs.small("shr", 63)?.unwrap_or(0),
            radix: attrs.small("radix", 63)?,
            fields,
            values,
            children,
            at: attrs.at(),
        })
    }
}

fn parse_values(parent: XmlNode<'_, '_>, lines: &Lines) -> Result<Vec<RawValue>> {
    let mut values = Vec::new();
    for child in parent
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "value")
    {
        let attrs = Attrs { node: child, lines };
        values.push(RawValue {
            name: attrs.required("name")?.to_string(),
            value: attrs.int("value")?,
            var: attrs.var(),
        });
    }
    Ok(values)
}

fn parse_fields(parent: XmlNode<'_, '_>, lines: &Lines) -> Result<Vec<RawField>> {
    let mut fields = Vec::new();
    for child in parent
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "bitfield")
    {
        let attrs = Attrs { node: child, lines };
        let name = attrs.required("name")?.to_string();
        let (low, high) = match (
            attrs.small("pos", 63)?,
            attrs.int("low")?,
            attrs.int("high")?,
        ) {
            (Some(pos), None, None) => (u64::from(pos), u64::from(pos)),
            (None, Some(low), Some(high)) => (low, high),
            _ => {
                return Err(Error::invalid(
                    attrs.at(),
                    format!("bitfield {name} needs either pos, or low and high"),
                ));
            }
        };
        if low > high || high > 63 {
            return Err(Error::invalid(
                attrs.at(),
                format!("bitfield {name} has a bad bit range: low={low}, high={high}"),
            ));
        }
        fields.push(RawField {
            name,
            low: low as u8,
            high: high as u8,
            ty: attrs.string("type"),
            var: attrs.var(),
            shr: attrs.small("shr", 63)?.unwrap_or(0),
            add: attrs.int("add")?.unwrap_or(0),
            radix: attrs.small("radix", 63)?,
            values: parse_values(child, lines)?,
            at: attrs.at(),
        });
    }
    Ok(fields)
}

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

struct Builder {
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
    fn new(parser: Parser, path: Arc<str>, file: &Path) -> Result<Self> {
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

    fn build(mut self) -> Result<Database> {
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

/// Registers among `nodes` (one container) that share an address in some
/// variant and some access direction.
pub(crate) fn check_overlaps(db: &Database, nodes: &[Node], unit: u64) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    let mut regs: Vec<(&Node, &Register)> = nodes
        .iter()
        .filter_map(|n| match n.kind {
            NodeKind::Reg(id) => Some((n, &db.regs[id as usize])),
            NodeKind::Block { .. } => None,
        })
        .collect();
    regs.sort_by_key(|(n, _)| n.offset);
    for (i, (a, ra)) in regs.iter().enumerate() {
        let a_span = u64::from(ra.width).div_ceil(unit).max(1);
        let a_end = end_of(a, a_span);
        for (b, rb) in &regs[i + 1..] {
            if b.offset >= a_end {
                break;
            }
            let shares_direction =
                (ra.access.read && rb.access.read) || (ra.access.write && rb.access.write);
            if !shares_direction || !a.variants.intersects(&b.variants) {
                continue;
            }
            let b_span = u64::from(rb.width).div_ceil(unit).max(1);
            if rows_overlap(a, a_span, b, b_span) {
                found.push(Diagnostic {
                    at: rb.at.clone(),
                    message: format!(
                        "register {} at {:#x} overlaps register {} at {:#x} ({})",
                        rb.name,
                        b.offset * unit,
                        ra.name,
                        a.offset * unit,
                        ra.at
                    ),
                });
            }
        }
    }
    found
}

/// One past the last unit of a row of registers (saturating).
fn end_of(node: &Node, span: u64) -> u64 {
    let reps = node.length.max(1) - 1;
    node.offset
        .saturating_add(reps.saturating_mul(node.stride))
        .saturating_add(span)
}

/// Whether some register of row `a` shares a unit with some register of row `b`.
fn rows_overlap(a: &Node, a_span: u64, b: &Node, b_span: u64) -> bool {
    let (few, few_span, many, many_span) = if a.length <= b.length && a.length != 0 {
        (a, a_span, b, b_span)
    } else {
        (b, b_span, a, a_span)
    };
    let count = if few.length == 0 {
        1
    } else {
        few.length.min(1 << 16)
    };
    for k in 0..count {
        let start = few.offset.saturating_add(k.saturating_mul(few.stride));
        let end = start.saturating_add(few_span);
        if hits_row(start, end, many, many_span) {
            return true;
        }
    }
    false
}

/// Whether `[start, end)` shares a unit with some register of `row`.
fn hits_row(start: u64, end: u64, row: &Node, span: u64) -> bool {
    if end <= row.offset {
        return false;
    }
    let first_end = row.offset.saturating_add(span);
    if row.stride == 0 || row.length == 1 {
        return start < first_end;
    }
    // The first repetition that ends after `start`.
    let k = if start >= first_end {
        (start - first_end + 1).div_ceil(row.stride)
    } else {
        0
    };
    if row.length != 0 && k >= row.length {
        return false;
    }
    row.offset.saturating_add(k.saturating_mul(row.stride)) < end
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(offset: u64, stride: u64, length: u64) -> Node {
        Node {
            name: None,
            offset,
            stride,
            length,
            variants: VariantSet::all(),
            kind: NodeKind::Reg(0),
        }
    }

    #[test]
    fn interleaved_rows_do_not_overlap() {
        assert!(!rows_overlap(&row(0, 8, 4), 4, &row(4, 8, 4), 4));
        assert!(rows_overlap(&row(0, 8, 4), 4, &row(16, 8, 1), 4));
        assert!(rows_overlap(&row(0, 8, 4), 4, &row(2, 8, 4), 4));
        assert!(!rows_overlap(&row(0, 8, 4), 4, &row(32, 4, 2), 4));
        assert!(rows_overlap(&row(0, 4, 1), 4, &row(0, 4, 1), 4));
    }
}
