//! Which accesses feed a `--counter` track: by address, or by register name.

use std::collections::{HashMap, HashSet};

use mmiotrace_regdb::namer::register_of;

use super::Counter;
use crate::cmd::common::glob_match;

/// Most register names whose verdict is remembered.
const VERDICT_CACHE_LIMIT: usize = 1 << 14;

/// The `--counter` registers.
#[derive(Debug, Default)]
pub struct CounterSelection {
    addresses: HashSet<u64>,
    name_globs: Vec<String>,
    /// Register names checked against `name_globs`, and the verdicts.
    verdicts: HashMap<Box<str>, bool>,
}

impl CounterSelection {
    pub fn new(counters: &[Counter]) -> CounterSelection {
        let mut selection = CounterSelection::default();
        for counter in counters {
            match counter {
                Counter::Addr(addr) => {
                    selection.addresses.insert(*addr);
                }
                Counter::Name(glob) => selection.name_globs.push(glob.clone()),
            }
        }
        selection
    }

    /// Whether an access to `phys`, named `reg` by the databases, is one.
    /// A name glob matches the register's name, or for an access inside a
    /// register (`STATUS+0x2`) the register's own name.
    pub fn contains(&mut self, phys: u64, reg: Option<&str>) -> bool {
        if self.addresses.contains(&phys) {
            return true;
        }
        let Some(reg) = reg else {
            return false;
        };
        if self.name_globs.is_empty() {
            return false;
        }
        if let Some(&verdict) = self.verdicts.get(reg) {
            return verdict;
        }
        let verdict = self
            .name_globs
            .iter()
            .any(|glob| glob_match(glob, reg) || glob_match(glob, register_of(reg)));
        if self.verdicts.len() >= VERDICT_CACHE_LIMIT {
            self.verdicts.clear();
        }
        self.verdicts.insert(reg.into(), verdict);
        verdict
    }
}
