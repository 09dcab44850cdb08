//! `--symbols FILE`, shared by `decode` and `stats`: the guest's or the
//! program's code symbols, to name each access's pc.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use mmiotrace_trace::symbols::Symbols;

/// Reads a System.map or /proc/kallsyms copy.
pub fn load(path: &Path) -> anyhow::Result<Arc<Symbols>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let symbols = Symbols::read(BufReader::new(file), path.display().to_string())?;
    anyhow::ensure!(
        !symbols.is_empty(),
        "{}: no code symbols (expected System.map or /proc/kallsyms lines: ADDRESS TYPE NAME)",
        path.display()
    );
    Ok(Arc::new(symbols))
}

/// Most distinct pcs `stats` tallies.
const MAX_PCS: usize = 100_000;

/// Accesses by pc, for `stats --symbols`: which functions touch the device.
#[derive(Debug, Default)]
pub struct CodeTally {
    /// pc → (reads, writes).
    pcs: std::collections::HashMap<u64, (u64, u64)>,
    /// Accesses with pc 0 (not known).
    unknown: u64,
    /// Accesses at pcs beyond `MAX_PCS`.
    untallied: u64,
}

impl CodeTally {
    pub fn add(&mut self, event: &mmiotrace_trace::Event) {
        let mmiotrace_trace::Event::Access(a) = event else {
            return;
        };
        if a.pc == 0 {
            self.unknown += 1;
            return;
        }
        if self.pcs.len() >= MAX_PCS && !self.pcs.contains_key(&a.pc) {
            self.untallied += 1;
            return;
        }
        let entry = self.pcs.entry(a.pc).or_default();
        match a.dir {
            mmiotrace_trace::Direction::Read => entry.0 += 1,
            mmiotrace_trace::Direction::Write => entry.1 += 1,
        }
    }

    /// The `top` functions by accesses, as a report section.
    pub fn write(&self, out: &mut String, symbols: &Symbols, top: usize) -> std::fmt::Result {
        use std::fmt::Write as _;
        let mut by_function: std::collections::HashMap<String, (u64, u64, usize)> =
            std::collections::HashMap::new();
        for (pc, (reads, writes)) in &self.pcs {
            let name = match symbols.lookup(*pc) {
                Some(at) => match at.module {
                    Some(module) => format!("{} [{module}]", at.name),
                    None => at.name.to_owned(),
                },
                None => "(not in the symbol list)".to_owned(),
            };
            let entry = by_function.entry(name).or_default();
            entry.0 += reads;
            entry.1 += writes;
            entry.2 += 1;
        }
        let mut rows: Vec<_> = by_function.into_iter().collect();
        rows.sort_by(|a, b| {
            (b.1.0 + b.1.1)
                .cmp(&(a.1.0 + a.1.1))
                .then_with(|| a.0.cmp(&b.0))
        });
        writeln!(out)?;
        writeln!(
            out,
            "code (top {top} functions by accesses, from --symbols; {} accesses without a pc):",
            self.unknown
        )?;
        writeln!(
            out,
            "  {:>10} {:>10} {:>10} {:>5}  function",
            "accesses", "reads", "writes", "pcs"
        )?;
        for (name, (reads, writes, pcs)) in rows.iter().take(top) {
            writeln!(
                out,
                "  {:>10} {reads:>10} {writes:>10} {pcs:>5}  {name}",
                reads + writes
            )?;
        }
        if self.untallied > 0 {
            writeln!(
                out,
                "  (capped at {MAX_PCS} distinct pcs: {} accesses at further pcs are not counted here)",
                self.untallied
            )?;
        }
        Ok(())
    }
}
