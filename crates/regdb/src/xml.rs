//! Helpers shared by the two XML loaders: positions and numbers.

use std::sync::Arc;

use crate::error::{Error, SourcePos};

/// Maps byte offsets of one file to lines and columns. roxmltree can do
/// this itself, but by scanning from the start each time, which is
/// quadratic over a file of thousands of elements.
#[derive(Debug)]
pub(crate) struct Lines {
    file: Arc<str>,
    starts: Vec<usize>,
}

impl Lines {
    pub(crate) fn new(file: Arc<str>, text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr_newlines(text.as_bytes()).map(|i| i + 1));
        Lines { file, starts }
    }

    pub(crate) fn file(&self) -> &Arc<str> {
        &self.file
    }

    pub(crate) fn pos(&self, offset: usize) -> SourcePos {
        let line = self.starts.partition_point(|start| *start <= offset).max(1);
        let column = offset - self.starts[line - 1] + 1;
        SourcePos::new(&self.file, line as u32, column as u32)
    }

    pub(crate) fn node(&self, node: roxmltree::Node<'_, '_>) -> SourcePos {
        self.pos(node.range().start)
    }

    /// The position of attribute `name` of `node`, or of the node.
    pub(crate) fn attr(&self, node: roxmltree::Node<'_, '_>, name: &str) -> SourcePos {
        match node.attribute_node(name) {
            Some(attr) => self.pos(attr.range().start),
            None => self.node(node),
        }
    }
}

fn memchr_newlines(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
}

/// Parses `text` as XML, turning a syntax error into one that names the
/// file, line and column.
pub(crate) fn parse_document<'a>(
    file: &Arc<str>,
    text: &'a str,
) -> Result<roxmltree::Document<'a>, Error> {
    roxmltree::Document::parse(text).map_err(|err| {
        let pos = err.pos();
        let message = err.to_string().replace(&format!(" at {pos}"), "");
        Error::invalid(SourcePos::new(file, pos.row, pos.col), message)
    })
}

/// An integer as rules-ng-ng and SVD write them: `0x1f`, `#1f` (SVD), `31`,
/// `0b11111` (SVD), a leading `-` for two's complement.
pub(crate) fn parse_int(text: &str) -> Option<u64> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .or_else(|| digits.strip_prefix('#'))
    {
        u64::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        u64::from_str_radix(bin, 2).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        // C's strtoull with base 0, which rules-ng-ng uses: octal.
        u64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse::<u64>().ok()?
    };
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(parse_int("0x1F"), Some(31));
        assert_eq!(parse_int("31"), Some(31));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("#10"), Some(16));
        assert_eq!(parse_int("0b101"), Some(5));
        assert_eq!(parse_int("-1"), Some(u64::MAX));
        assert_eq!(parse_int("0xg"), None);
        assert_eq!(parse_int(""), None);
    }

    #[test]
    fn positions() {
        let lines = Lines::new(Arc::from("f.xml"), "ab\ncd\n\nef");
        assert_eq!(lines.pos(0).to_string(), "f.xml:1:1");
        assert_eq!(lines.pos(1).to_string(), "f.xml:1:2");
        assert_eq!(lines.pos(3).to_string(), "f.xml:2:1");
        assert_eq!(lines.pos(7).to_string(), "f.xml:4:1");
    }
}
