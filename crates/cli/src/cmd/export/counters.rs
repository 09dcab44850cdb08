//! Which accesses feed a `--counter` track: by address, or by register name.

use std::collections::HashSet;

use globset::GlobSet;
use mmiotrace_regdb::namer::register_of;

use super::Counter;
use crate::cmd::common::glob_set;

/// The `--counter` registers.
#[derive(Debug)]
pub struct CounterSelection {
    addresses: HashSet<u64>,
    names: GlobSet,
}

impl CounterSelection {
    pub fn new(counters: &[Counter]) -> anyhow::Result<CounterSelection> {
        let mut addresses = HashSet::new();
        let mut globs = Vec::new();
        for counter in counters {
            match counter {
                Counter::Addr(addr) => {
                    addresses.insert(*addr);
                }
                Counter::Name(glob) => globs.push(glob.clone()),
            }
        }
        Ok(CounterSelection {
            addresses,
            names: glob_set(&globs)?,
        })
    }

    /// Whether an access to `phys`, named `reg` by the databases, is one.
    /// A name glob matches the register's name, or for an access inside a
    /// register (`STATUS+0x2`) the register's own name.
    pub fn contains(&self, phys: u64, reg: Option<&str>) -> bool {
        if self.addresses.contains(&phys) {
            return true;
        }
        reg.is_some_and(|reg| self.names.is_match(reg) || self.names.is_match(register_of(reg)))
    }
}
