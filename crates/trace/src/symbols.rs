//! Code symbols, to name the instruction at a trace's pc: `e1000_probe+0x1c`.
//!
//! Reads the `nm`-style lists the kernel publishes, `System.map` and
//! `/proc/kallsyms` (which adds each module symbol's `[module]` after a tab):
//!
//! ```text
//! ffffffff81000000 T _stext
//! ffffffffc0605e40 t e1000_read_phy_reg  [e1000]
//! ```
//!
//! Only code symbols count (types `t`, `T`, `w`, `W`); a pc belongs to the
//! last symbol at or below it, unless that symbol is the last one or lies
//! further away than [`MAX_OFFSET`]. An all-zero address (kallsyms read
//! without the right to see addresses) is refused with a message saying so.

use std::io::BufRead;
use std::sync::Arc;

use crate::error::{Error, Location, Position};

/// The farthest a pc may lie past its symbol's start: no function is this
/// long, and past it the pc is in code the list does not describe.
pub const MAX_OFFSET: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Symbol {
    addr: u64,
    name: Box<str>,
    module: Option<Box<str>>,
}

/// A sorted list of code symbols.
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    symbols: Vec<Symbol>,
}

/// Where a pc lies: its symbol, and how far into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolAt<'a> {
    pub name: &'a str,
    pub module: Option<&'a str>,
    pub offset: u64,
}

impl std::fmt::Display for SymbolAt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{:#x}", self.name, self.offset)?;
        if let Some(module) = self.module {
            write!(f, " [{module}]")?;
        }
        Ok(())
    }
}

impl Symbols {
    /// Reads a symbol list; `name` names it in errors.
    pub fn read(input: impl BufRead, name: impl Into<Arc<str>>) -> Result<Symbols, Error> {
        let name = name.into();
        let mut symbols = Vec::new();
        let mut zero_addresses = 0u64;
        for (index, line) in input.lines().enumerate() {
            let line = line.map_err(|source| Error::Io {
                name: name.clone(),
                source,
            })?;
            let syntax = |column: usize, message: String| Error::Syntax {
                position: Position {
                    name: name.clone(),
                    location: Location::Line {
                        line: index as u64 + 1,
                        column: column as u64 + 1,
                    },
                },
                message,
            };
            if line.trim().is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(addr), Some(kind), Some(symbol)) = (words.next(), words.next(), words.next())
            else {
                return Err(syntax(
                    0,
                    "expected ADDRESS TYPE NAME [[MODULE]]".to_owned(),
                ));
            };
            let addr = u64::from_str_radix(addr, 16)
                .map_err(|_| syntax(0, format!("expected a hex address, found {addr:?}")))?;
            let module = match words.next() {
                None => None,
                Some(m) => Some(
                    m.strip_prefix('[')
                        .and_then(|m| m.strip_suffix(']'))
                        .ok_or_else(|| {
                            let column = line.find(m).unwrap_or(0);
                            syntax(column, format!("expected [MODULE], found {m:?}"))
                        })?
                        .into(),
                ),
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            if addr == 0 {
                zero_addresses += 1;
                continue;
            }
            symbols.push(Symbol {
                addr,
                name: symbol.into(),
                module,
            });
        }
        if symbols.is_empty() && zero_addresses > 0 {
            return Err(Error::Syntax {
                position: Position {
                    name,
                    location: Location::Line { line: 1, column: 1 },
                },
                message: "every code symbol's address is 0: the list was read without the right to see addresses (copy /proc/kallsyms as root, or set kernel.kptr_restrict=0)".to_owned(),
            });
        }
        symbols.sort_by_key(|s| s.addr);
        Ok(Symbols { symbols })
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol holding `pc`, if the list describes it.
    pub fn lookup(&self, pc: u64) -> Option<SymbolAt<'_>> {
        let i = self.symbols.partition_point(|s| s.addr <= pc);
        let symbol = self.symbols.get(i.checked_sub(1)?)?;
        // Past the last symbol, nothing says where its code ends.
        self.symbols.get(i)?;
        let offset = pc - symbol.addr;
        (offset < MAX_OFFSET).then_some(SymbolAt {
            name: &symbol.name,
            module: symbol.module.as_deref(),
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "\
ffffffff81000000 T _stext
ffffffff81000100 t helper
ffffffff81000200 D some_data
ffffffffc0605e40 t e1000_read_phy_reg\t[e1000]
ffffffffc0606000 T e1000_probe\t[e1000]
ffffffffc0700000 t end_marker
";

    #[test]
    fn names_a_pc_by_function_and_offset() {
        let symbols = Symbols::read(LIST.as_bytes(), "kallsyms").expect("parses");
        assert_eq!(symbols.len(), 5);
        let at = |pc| symbols.lookup(pc).map(|l| l.to_string());
        assert_eq!(at(0xffffffff81000004).as_deref(), Some("_stext+0x4"));
        // Data symbols do not count: still in `helper`.
        assert_eq!(at(0xffffffff81000210).as_deref(), Some("helper+0x110"));
        assert_eq!(
            at(0xffffffffc0605e7c).as_deref(),
            Some("e1000_read_phy_reg+0x3c [e1000]")
        );
        assert_eq!(
            at(0xffffffffc0606000).as_deref(),
            Some("e1000_probe+0x0 [e1000]")
        );
        assert_eq!(at(0xffffffff80000000), None, "before the first symbol");
        assert_eq!(at(0xffffffffc0700010), None, "after the last symbol");
        assert_eq!(at(0xffffffff81200000), None, "too far past `helper`");
    }

    #[test]
    fn bad_lists_name_the_line() {
        let err = Symbols::read("ffffffff81000000 T a\nzz T b\n".as_bytes(), "System.map")
            .expect_err("bad address");
        assert_eq!(
            err.to_string(),
            "System.map:2:1: expected a hex address, found \"zz\""
        );
        let err =
            Symbols::read("ffffffff81000000 T\n".as_bytes(), "System.map").expect_err("no name");
        assert!(
            err.to_string()
                .starts_with("System.map:1:1: expected ADDRESS"),
            "{err}"
        );
        let err = Symbols::read(
            "0000000000000000 T a\n0000000000000000 t b\n".as_bytes(),
            "kallsyms",
        )
        .expect_err("hidden addresses");
        assert!(err.to_string().contains("kptr_restrict"), "{err}");
        let err = Symbols::read("ffffffff81000000 t a e1000\n".as_bytes(), "kallsyms")
            .expect_err("module without brackets");
        assert!(err.to_string().contains("expected [MODULE]"), "{err}");
    }
}
