//! Reading rules-ng-ng files into raw elements.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use roxmltree::Node as XmlNode;

use crate::error::{Error, Result, SourcePos};
use crate::model::*;
use crate::xml::{Lines, parse_document, parse_int};

#[derive(Debug, Clone, Default)]
pub(super) struct RawVar {
    pub(super) varset: Option<(String, SourcePos)>,
    pub(super) prefix: Option<(String, SourcePos)>,
    pub(super) variants: Option<(String, SourcePos)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    Reg(u8),
    Array,
    Stripe,
    UseGroup,
}

#[derive(Debug, Clone)]
pub(super) struct RawElem {
    pub(super) tag: Tag,
    pub(super) name: Option<String>,
    pub(super) offset: u64,
    pub(super) stride: Option<u64>,
    pub(super) length: u64,
    pub(super) var: RawVar,
    pub(super) access: Access,
    pub(super) ty: Option<(String, SourcePos)>,
    pub(super) shr: u8,
    pub(super) radix: Option<u8>,
    pub(super) fields: Vec<RawField>,
    pub(super) values: Vec<RawValue>,
    pub(super) children: Vec<RawElem>,
    pub(super) at: SourcePos,
}

#[derive(Debug, Clone)]
pub(super) struct RawField {
    pub(super) name: String,
    pub(super) low: u8,
    pub(super) high: u8,
    pub(super) ty: Option<(String, SourcePos)>,
    pub(super) var: RawVar,
    pub(super) shr: u8,
    pub(super) add: u64,
    pub(super) radix: Option<u8>,
    pub(super) values: Vec<RawValue>,
    pub(super) at: SourcePos,
}

#[derive(Debug, Clone)]
pub(super) struct RawValue {
    pub(super) name: String,
    pub(super) value: Option<u64>,
    pub(super) var: RawVar,
}

#[derive(Debug, Clone)]
pub(super) struct RawEnum {
    pub(super) name: String,
    pub(super) var: RawVar,
    pub(super) inline: bool,
    pub(super) values: Vec<RawValue>,
}

#[derive(Debug, Clone)]
pub(super) struct RawBitset {
    pub(super) name: String,
    pub(super) var: RawVar,
    pub(super) inline: bool,
    pub(super) fields: Vec<RawField>,
}

#[derive(Debug, Clone)]
pub(super) struct RawDomain {
    pub(super) name: String,
    pub(super) width: u32,
    pub(super) var: RawVar,
    pub(super) elems: Vec<RawElem>,
}

#[derive(Debug, Default)]
pub(super) struct Parser {
    pub(super) search: Vec<PathBuf>,
    pub(super) loaded: Vec<PathBuf>,
    pub(super) domains: Vec<RawDomain>,
    pub(super) enums: Vec<RawEnum>,
    pub(super) bitsets: Vec<RawBitset>,
    pub(super) groups: HashMap<String, Vec<RawElem>>,
    pub(super) spectypes: HashMap<String, (String, SourcePos)>,
}

/// The attributes a node may have, read with their positions for errors.
pub(super) struct Attrs<'a, 'input> {
    pub(super) node: XmlNode<'a, 'input>,
    pub(super) lines: &'a Lines,
}

impl<'a, 'input> Attrs<'a, 'input> {
    pub(super) fn at(&self) -> SourcePos {
        self.lines.node(self.node)
    }

    pub(super) fn str(&self, name: &str) -> Option<&'a str> {
        self.node.attribute(name)
    }

    pub(super) fn string(&self, name: &str) -> Option<(String, SourcePos)> {
        self.str(name)
            .map(|v| (v.to_string(), self.lines.attr(self.node, name)))
    }

    pub(super) fn required(&self, name: &str) -> Result<&'a str> {
        self.str(name).ok_or_else(|| {
            Error::invalid(
                self.at(),
                format!("<{}> has no {name} attribute", self.node.tag_name().name()),
            )
        })
    }

    pub(super) fn int(&self, name: &str) -> Result<Option<u64>> {
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

    pub(super) fn small(&self, name: &str, max: u64) -> Result<Option<u8>> {
        match self.int(name)? {
            None => Ok(None),
            Some(v) if v <= max => Ok(Some(v as u8)),
            Some(v) => Err(Error::invalid(
                self.lines.attr(self.node, name),
                format!("{name}={v} is out of range (at most {max})"),
            )),
        }
    }

    pub(super) fn var(&self) -> RawVar {
        RawVar {
            varset: self.string("varset"),
            prefix: self.string("prefix"),
            variants: self.string("variants"),
        }
    }

    pub(super) fn flag(&self, name: &str) -> bool {
        matches!(self.str(name), Some("yes" | "true" | "1"))
    }
}

impl Parser {
    pub(super) fn parse_file(
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

    pub(super) fn find_import(&self, importer: &Path, file: &str) -> Option<PathBuf> {
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
    pub(super) fn parse_definition(&mut self, attrs: &Attrs<'_, '_>) -> Result<()> {
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

    pub(super) fn parse_domain(&mut self, attrs: &Attrs<'_, '_>) -> Result<()> {
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

    pub(super) fn parse_elems(
        &mut self,
        parent: XmlNode<'_, '_>,
        lines: &Lines,
    ) -> Result<Vec<RawElem>> {
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

    pub(super) fn parse_elem(&mut self, tag: Tag, attrs: &Attrs<'_, '_>) -> Result<RawElem> {
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

pub(super) fn parse_values(parent: XmlNode<'_, '_>, lines: &Lines) -> Result<Vec<RawValue>> {
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

pub(super) fn parse_fields(parent: XmlNode<'_, '_>, lines: &Lines) -> Result<Vec<RawField>> {
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
