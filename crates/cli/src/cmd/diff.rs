//! `mmiotrace diff`: compare two traces as sequences of register operations.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use mmiotrace_trace::{Direction, Event, Timestamp, Value};

use super::common::{fmt_time, open_trace, register_label, warn_if_truncated};
use super::polling::{Folder, Options};
use super::regs::{Registers, RegsArgs, namer};

/// Compare two traces as sequences of (register, direction, value)
/// operations, aligned by content, not by time: the same init sequence with
/// different timing lines up.
///
/// Prints a summary (operations changed, removed and inserted, for writes
/// and for reads), then each difference with a few operations of context:
///   `- OP`    only in A (removed)
///   `+ OP`    only in B (inserted)
///   `~ OP`    the same register and direction, another value (changed)
/// Each line names the operation's place in its trace (`a#N`, the Nth
/// operation, its time and sequence number).
///
/// Polling loops are folded first (as `mmiotrace collapse --min-repeats 2`
/// does), so that a loop that spun 37 times in one run and 52 times in the
/// other is the same; --exact compares every access. Threads are not told
/// apart: to compare one thread, `mmiotrace filter --thread` first.
///
/// With register databases (--regs, --device, --chipset, bound to each
/// trace's mappings as `mmiotrace decode` binds them), an access to a
/// register that a database names is compared by that name, not by its
/// address, and shown by it (`W 4 CTRL 0x4000000`): the same init sequence
/// lines up even where the device sits at another address. Two devices
/// decoded with the same database are then not told apart (`mmiotrace
/// filter --map` first). Accesses no database names are compared by
/// address (or with --by-offset, by map and offset).
///
/// The alignment is a shortest edit script (Myers' O(ND) algorithm, in
/// linear space), after matching operations that occur exactly once in
/// both traces (patience diff). Where two stretches differ too much to
/// align within --max-cost, the stretch is reported as removed and inserted
/// whole.
///
/// Memory: both traces' operations are held, about 20 bytes per operation
/// (after folding), plus the differences found (and, with --regs, one copy
/// of each register name met).
///
/// Exit status: 0 if the traces are the same, 1 if they differ, 2 on error.
///
/// Examples:
///   mmiotrace diff good.trace bad.trace | less
///   mmiotrace diff --by-offset boot1.mtb boot2.mtb     # BARs moved between boots
///   mmiotrace diff --regs nv_mmio.xml good.trace bad.trace
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The first trace, text or binary.
    #[arg(value_name = "A")]
    a: PathBuf,

    /// The second trace, text or binary.
    #[arg(value_name = "B")]
    b: PathBuf,

    /// Compare every access; do not fold polling loops first.
    #[arg(long)]
    exact: bool,

    /// Name registers by map id and offset in the map instead of physical
    /// address (for traces whose devices sit at other addresses).
    #[arg(long)]
    by_offset: bool,

    /// Print only the summary.
    #[arg(short, long)]
    summary: bool,

    /// Operations of context around each difference.
    #[arg(short = 'C', long, value_name = "N", default_value_t = 2)]
    context: usize,

    /// Most work (cells of the edit graph) spent aligning one stretch.
    #[arg(long, value_name = "N", default_value_t = 200_000_000)]
    max_cost: u64,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,

    #[command(flatten)]
    regs: RegsArgs,
}

/// `OpKey::register` of an access that no database names.
const UNNAMED: u32 = u32::MAX;

/// What is compared: the register, the direction and the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct OpKey {
    /// The register's name (an index into `Interner::names`), or
    /// [`UNNAMED`]; when named, `map_id` and `addr` are 0.
    register: u32,
    /// With --by-offset, the map id; 0 otherwise.
    map_id: u32,
    /// The physical address, or with --by-offset the offset in the map.
    addr: u64,
    dir: Direction,
    value: Value,
}

/// One trace, as operation ids in order, with where each came from.
#[derive(Debug, Default)]
struct Ops {
    ids: Vec<u32>,
    times: Vec<Timestamp>,
    /// `u64::MAX` for none.
    seqs: Vec<u64>,
}

/// Interns operation keys (and register names) as small ids shared by both
/// traces.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<OpKey, u32>,
    keys: Vec<OpKey>,
    name_ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    fn name_id(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        self.names.push(Arc::clone(name));
        let id = (self.names.len() - 1) as u32;
        self.name_ids.insert(Arc::clone(name), id);
        id
    }

    fn id(&mut self, key: OpKey) -> u32 {
        *self.ids.entry(key).or_insert_with(|| {
            self.keys.push(key);
            (self.keys.len() - 1) as u32
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Same,
    Removed,
    Inserted,
}

/// The edit script, run-length coded: (edit, count).
#[derive(Debug, Default)]
struct Script {
    runs: Vec<(Edit, u64)>,
}

impl Script {
    fn push(&mut self, edit: Edit, n: u64) {
        if n == 0 {
            return;
        }
        match self.runs.last_mut() {
            Some((last, count)) if *last == edit => *count += n,
            _ => self.runs.push((edit, n)),
        }
    }
}

/// Prints the error the way main does, and exits with 2 as diff(1) does.
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mmiotrace: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if self.a == Path::new("-") && self.b == Path::new("-") {
            anyhow::bail!(
                "A and B are both standard input (-), which can be read only once: give at least one as a file"
            );
        }
        let registers = self.regs.load()?;
        let mut interner = Interner::default();
        let a = self.read_ops(&self.a, &mut interner, registers.as_ref())?;
        let b = self.read_ops(&self.b, &mut interner, registers.as_ref())?;
        let mut script = Script::default();
        let mut aligner = Aligner {
            a: &a.ids,
            b: &b.ids,
            max_cost: self.max_cost,
            patience: true,
            script: &mut script,
        };
        aligner.diff(0, a.ids.len(), 0, b.ids.len());
        let report = self.report(&a, &b, &interner, &script);
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(report.as_bytes())
            .and_then(|()| stdout.flush());
        if let Err(err) = written
            && err.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(anyhow::Error::new(err).context("cannot write to standard output"));
        }
        let same = script.runs.iter().all(|(edit, _)| *edit == Edit::Same);
        Ok(if same {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }

    fn read_ops(
        &self,
        path: &Path,
        interner: &mut Interner,
        registers: Option<&Registers>,
    ) -> anyhow::Result<Ops> {
        let (mut reader, _) = open_trace(path, self.strict)?;
        let mut ops = Ops::default();
        let mut map_base: HashMap<u32, u64> = HashMap::new();
        let by_offset = self.by_offset;
        // Fed the folded events: folding keeps the order of MAP records
        // and accesses, so every access is bound as in the trace.
        let mut namer = namer(registers)?;
        let mut take = |event: Event| {
            let name = namer.as_mut().and_then(|n| n.name(&event));
            match &event {
                Event::Map(m) if by_offset => {
                    map_base.insert(m.map_id, m.phys);
                }
                Event::Access(a) => {
                    let register = name.map_or(UNNAMED, |n| interner.name_id(n));
                    let (map_id, addr) = if register != UNNAMED {
                        (0, 0)
                    } else if by_offset {
                        let base = map_base.get(&a.map_id).copied().unwrap_or(0);
                        (a.map_id, a.phys.wrapping_sub(base))
                    } else {
                        (0, a.phys)
                    };
                    ops.ids.push(interner.id(OpKey {
                        register,
                        map_id,
                        addr,
                        dir: a.dir,
                        value: a.value,
                    }));
                    ops.times.push(a.time);
                    ops.seqs.push(a.ext.seq.unwrap_or(u64::MAX));
                }
                _ => {}
            }
            Ok::<(), std::convert::Infallible>(())
        };
        if self.exact {
            while let Some(event) = reader.read_ref()? {
                let _ = take(event.clone());
            }
        } else {
            let mut folder = Folder::new(Options {
                min_repeats: 2,
                ..Options::default()
            });
            while let Some(event) = reader.read_ref()? {
                let _ = folder.push(event, &mut take);
            }
            let _ = folder.finish(&mut take);
        }
        warn_if_truncated(&reader);
        Ok(ops)
    }

    fn op_text(&self, interner: &Interner, id: u32) -> String {
        let key = &interner.keys[id as usize];
        let register = if key.register != UNNAMED {
            interner.names[key.register as usize].to_string()
        } else if self.by_offset {
            format!("map{}+{:#x}", key.map_id, key.addr)
        } else {
            register_label(key.addr, None)
        };
        format!(
            "{} {} {register} {}",
            dir_name(key.dir),
            key.value.width(),
            value_text(&key.value)
        )
    }

    fn report(&self, a: &Ops, b: &Ops, interner: &Interner, script: &Script) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_report(&mut out, a, b, interner, script);
        out
    }

    fn write_report(
        &self,
        out: &mut String,
        a: &Ops,
        b: &Ops,
        interner: &Interner,
        script: &Script,
    ) -> std::fmt::Result {
        let hunks = hunks(a, b, interner, script, self.context);
        // [writes, reads] × [changed, removed, inserted]
        let mut counts = [[0u64; 3]; 2];
        let mut same = 0u64;
        for (edit, n) in &script.runs {
            if *edit == Edit::Same {
                same += n;
            }
        }
        for hunk in &hunks {
            for line in &hunk.lines {
                let (column, id) = match *line {
                    Line::Changed(i, _) => (0, a.ids[i]),
                    Line::Removed(i) => (1, a.ids[i]),
                    Line::Inserted(j) => (2, b.ids[j]),
                    Line::Context(_) => continue,
                };
                let row = usize::from(interner.keys[id as usize].dir == Direction::Read);
                counts[row][column] += 1;
            }
        }
        let total = |c: usize| counts[0][c] + counts[1][c];
        writeln!(
            out,
            "--- a: {} ({} operations)",
            self.a.display(),
            a.ids.len()
        )?;
        writeln!(
            out,
            "+++ b: {} ({} operations)",
            self.b.display(),
            b.ids.len()
        )?;
        if hunks.is_empty() {
            writeln!(out, "same: all {same} operations")?;
        } else {
            writeln!(
                out,
                "different: {} changed, {} removed, {} inserted; {same} the same",
                total(0),
                total(1),
                total(2)
            )?;
            for (row, name) in [(0, "writes"), (1, "reads")] {
                writeln!(
                    out,
                    "  {name:<7} {} changed, {} removed, {} inserted",
                    counts[row][0], counts[row][1], counts[row][2]
                )?;
            }
            writeln!(out, "  places that differ: {}", hunks.len())?;
        }
        if !self.exact {
            writeln!(
                out,
                "(polling loops folded before comparing; --exact compares every access)"
            )?;
        }
        if self.summary {
            return Ok(());
        }
        let place = |ops: &Ops, side: &str, i: usize| {
            let mut s = format!("{side}#{} {}", i + 1, fmt_time(ops.times[i]));
            if ops.seqs[i] != u64::MAX {
                let _ = write!(s, " seq={}", ops.seqs[i]);
            }
            s
        };
        for hunk in &hunks {
            writeln!(out, "\n@@ a#{} b#{} @@", hunk.a_start + 1, hunk.b_start + 1)?;
            for line in &hunk.lines {
                match *line {
                    Line::Context(i) => {
                        writeln!(out, "  {}", self.op_text(interner, a.ids[i]))?;
                    }
                    Line::Removed(i) => writeln!(
                        out,
                        "- {:<40} ({})",
                        self.op_text(interner, a.ids[i]),
                        place(a, "a", i)
                    )?,
                    Line::Inserted(j) => writeln!(
                        out,
                        "+ {:<40} ({})",
                        self.op_text(interner, b.ids[j]),
                        place(b, "b", j)
                    )?,
                    Line::Changed(i, j) => {
                        let new = &interner.keys[b.ids[j] as usize].value;
                        let text = format!(
                            "{} -> {}",
                            self.op_text(interner, a.ids[i]),
                            value_text(new)
                        );
                        writeln!(
                            out,
                            "~ {text:<40} ({}, {})",
                            place(a, "a", i),
                            place(b, "b", j)
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn dir_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Read => "R",
        Direction::Write => "W",
    }
}

fn value_text(value: &Value) -> String {
    if value.is_wide() {
        let digits: String = value
            .as_le_bytes()
            .iter()
            .rev()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("0x{digits}")
    } else {
        format!("{:#x}", value.low_u64())
    }
}

#[derive(Debug, Clone, Copy)]
enum Line {
    /// The same in both: its index in A.
    Context(usize),
    Removed(usize),
    Inserted(usize),
    Changed(usize, usize),
}

#[derive(Debug)]
struct Hunk {
    a_start: usize,
    b_start: usize,
    lines: Vec<Line>,
}

/// Groups the script's differences into hunks with `context` operations
/// around them, pairing a removal and an insertion of the same register and
/// direction in one stretch as a change.
fn hunks(a: &Ops, b: &Ops, interner: &Interner, script: &Script, context: usize) -> Vec<Hunk> {
    let same_register = |x: u32, y: u32| {
        let (x, y) = (&interner.keys[x as usize], &interner.keys[y as usize]);
        x.register == y.register
            && x.map_id == y.map_id
            && x.addr == y.addr
            && x.dir == y.dir
            && x.value.width() == y.value.width()
    };
    let runs = &script.runs;
    let mut hunks = Vec::new();
    let mut open: Option<Hunk> = None;
    let (mut i, mut j) = (0usize, 0usize);
    let mut previous_same = 0usize;
    let mut r = 0;
    while r < runs.len() {
        let (edit, n) = runs[r];
        if edit == Edit::Same {
            let n = n as usize;
            if let Some(mut hunk) = open.take() {
                let more = r + 1 < runs.len();
                let shown = if more && n <= 2 * context {
                    n
                } else {
                    n.min(context)
                };
                hunk.lines.extend((i..i + shown).map(Line::Context));
                if shown == n {
                    open = Some(hunk);
                } else {
                    hunks.push(hunk);
                }
            }
            previous_same = n;
            i += n;
            j += n;
            r += 1;
            continue;
        }
        let (mut removed, mut inserted) = (0usize, 0usize);
        while let Some(&(edit, n)) = runs.get(r) {
            match edit {
                Edit::Same => break,
                Edit::Removed => removed += n as usize,
                Edit::Inserted => inserted += n as usize,
            }
            r += 1;
        }
        let hunk = open.get_or_insert_with(|| {
            let lead = context.min(previous_same);
            Hunk {
                a_start: i - lead,
                b_start: j - lead,
                lines: (i - lead..i).map(Line::Context).collect(),
            }
        });
        // Pair removals with insertions of the same register, in order.
        let mut next_insert = 0;
        for k in 0..removed {
            let pair = (next_insert..inserted).find(|&m| same_register(a.ids[i + k], b.ids[j + m]));
            match pair {
                Some(m) => {
                    hunk.lines
                        .extend((next_insert..m).map(|m| Line::Inserted(j + m)));
                    hunk.lines.push(Line::Changed(i + k, j + m));
                    next_insert = m + 1;
                }
                None => hunk.lines.push(Line::Removed(i + k)),
            }
        }
        hunk.lines
            .extend((next_insert..inserted).map(|m| Line::Inserted(j + m)));
        i += removed;
        j += inserted;
        previous_same = 0;
    }
    hunks.extend(open);
    hunks
}

/// Computes the edit script between `a` and `b`.
struct Aligner<'a> {
    a: &'a [u32],
    b: &'a [u32],
    max_cost: u64,
    /// Anchor on operations unique to both stretches first. Off only in
    /// tests, to check that the Myers part alone finds shortest scripts.
    patience: bool,
    script: &'a mut Script,
}

impl Aligner<'_> {
    /// Aligns a[a0..a1] with b[b0..b1], appending to the script.
    fn diff(&mut self, mut a0: usize, mut a1: usize, mut b0: usize, mut b1: usize) {
        // Common prefix and suffix.
        let start = (a0, b0);
        while a0 < a1 && b0 < b1 && self.a[a0] == self.b[b0] {
            a0 += 1;
            b0 += 1;
        }
        let prefix = (a0 - start.0) as u64;
        let mut suffix = 0u64;
        while a0 < a1 && b0 < b1 && self.a[a1 - 1] == self.b[b1 - 1] {
            a1 -= 1;
            b1 -= 1;
            suffix += 1;
        }
        self.script.push(Edit::Same, prefix);
        if a0 == a1 || b0 == b1 {
            self.script.push(Edit::Removed, (a1 - a0) as u64);
            self.script.push(Edit::Inserted, (b1 - b0) as u64);
        } else if let Some(anchors) = self
            .patience
            .then(|| unique_anchors(&self.a[a0..a1], &self.b[b0..b1]))
            .flatten()
        {
            let (mut x, mut y) = (a0, b0);
            for (ai, bi) in anchors {
                self.diff(x, a0 + ai, y, b0 + bi);
                self.script.push(Edit::Same, 1);
                x = a0 + ai + 1;
                y = b0 + bi + 1;
            }
            self.diff(x, a1, y, b1);
        } else {
            self.myers(a0, a1, b0, b1);
        }
        self.script.push(Edit::Same, suffix);
    }

    /// Myers' divide and conquer on the middle snake, for stretches with no
    /// prefix or suffix in common and no unique common operation.
    fn myers(&mut self, a0: usize, a1: usize, b0: usize, b1: usize) {
        match middle_snake(&self.a[a0..a1], &self.b[b0..b1], self.max_cost) {
            Some((x, y, u, v)) => {
                self.diff(a0, a0 + x, b0, b0 + y);
                self.script.push(Edit::Same, (u - x) as u64);
                self.diff(a0 + u, a1, b0 + v, b1);
            }
            None => {
                self.script.push(Edit::Removed, (a1 - a0) as u64);
                self.script.push(Edit::Inserted, (b1 - b0) as u64);
            }
        }
    }
}

/// Pairs of positions of the operations that occur exactly once in `a` and
/// once in `b`, the longest increasing run of them (patience diff). `None`
/// if there are none.
fn unique_anchors(a: &[u32], b: &[u32]) -> Option<Vec<(usize, usize)>> {
    // id → (count in a, count in b, position in a, position in b)
    let mut seen: HashMap<u32, (u32, u32, usize, usize)> = HashMap::new();
    for (i, &id) in a.iter().enumerate() {
        let e = seen.entry(id).or_insert((0, 0, i, 0));
        e.0 += 1;
    }
    for (j, &id) in b.iter().enumerate() {
        if let Some(e) = seen.get_mut(&id) {
            e.1 += 1;
            e.3 = j;
        }
    }
    let mut pairs: Vec<(usize, usize)> = seen
        .values()
        .filter(|e| e.0 == 1 && e.1 == 1)
        .map(|e| (e.2, e.3))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    pairs.sort_unstable();
    // Longest increasing subsequence of the b positions (patience sorting).
    let mut tops: Vec<usize> = Vec::new(); // index into pairs of each pile's top
    let mut back: Vec<Option<usize>> = vec![None; pairs.len()];
    for (k, &(_, bj)) in pairs.iter().enumerate() {
        let pile = tops.partition_point(|&t| pairs[t].1 < bj);
        back[k] = pile.checked_sub(1).map(|p| tops[p]);
        if pile == tops.len() {
            tops.push(k);
        } else {
            tops[pile] = k;
        }
    }
    let mut chain = Vec::with_capacity(tops.len());
    let mut at = tops.last().copied();
    while let Some(k) = at {
        chain.push(pairs[k]);
        at = back[k];
    }
    chain.reverse();
    Some(chain)
}

/// The middle snake of Myers' algorithm: a stretch `a[x..u] == b[y..v]`
/// on some shortest edit path from (0, 0) to (n, m). `a` and `b` differ
/// in their first and last elements. `None` if finding it would cost more
/// than `max_cost` cells.
fn middle_snake(a: &[u32], b: &[u32], max_cost: u64) -> Option<(usize, usize, usize, usize)> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let delta = n - m;
    let odd = delta & 1 != 0;
    let max_d = (n + m + 1) / 2;
    let offset = max_d + delta.abs() + 2;
    let size = (2 * offset + 1) as usize;
    // Furthest x on diagonal k (x − y = k), forward from (0, 0) and backward from (n, m).
    let mut forward = vec![0isize; size];
    let mut backward = vec![n; size];
    let at = |k: isize| (k + offset) as usize;
    let mut cost: u64 = 0;
    for d in 0..=max_d {
        cost += 2 * (2 * d as u64 + 1);
        if cost > max_cost {
            return None;
        }
        let mut k = -d;
        while k <= d {
            let mut x = if d == 0 {
                0
            } else if k == -d || (k != d && forward[at(k - 1)] < forward[at(k + 1)]) {
                forward[at(k + 1)]
            } else {
                forward[at(k - 1)] + 1
            };
            let mut y = x - k;
            let (x0, y0) = (x, y);
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            forward[at(k)] = x;
            if odd && k >= delta - (d - 1) && k <= delta + (d - 1) && x >= backward[at(k)] {
                return Some((x0 as usize, y0 as usize, x as usize, y as usize));
            }
            k += 2;
        }
        let mut j = -d;
        while j <= d {
            let k = delta + j;
            let mut x = if d == 0 {
                n
            } else if j == -d || (j != d && backward[at(k + 1)] - 1 < backward[at(k - 1)]) {
                backward[at(k + 1)] - 1
            } else {
                backward[at(k - 1)]
            };
            let mut y = x - k;
            let (x1, y1) = (x, y);
            while x > 0 && y > 0 && a[(x - 1) as usize] == b[(y - 1) as usize] {
                x -= 1;
                y -= 1;
            }
            backward[at(k)] = x;
            if !odd && k >= -d && k <= d && x <= forward[at(k)] {
                return Some((x as usize, y as usize, x1 as usize, y1 as usize));
            }
            j += 2;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The edit script of two strings, as a string of `=`, `-`, `+`.
    fn script(a: &str, b: &str) -> String {
        let ids = |s: &str| s.bytes().map(u32::from).collect::<Vec<u32>>();
        let (a, b) = (ids(a), ids(b));
        let mut script = Script::default();
        Aligner {
            a: &a,
            b: &b,
            max_cost: u64::MAX,
            patience: true,
            script: &mut script,
        }
        .diff(0, a.len(), 0, b.len());
        script
            .runs
            .iter()
            .map(|(e, n)| {
                let c = match e {
                    Edit::Same => '=',
                    Edit::Removed => '-',
                    Edit::Inserted => '+',
                };
                c.to_string().repeat(*n as usize)
            })
            .collect()
    }

    /// Checks that the script turns `a` into `b` and has `edits` edits.
    fn check(a: &str, b: &str, edits: usize) {
        let s = script(a, b);
        let (mut i, mut j) = (0, 0);
        let (a_bytes, b_bytes) = (a.as_bytes(), b.as_bytes());
        for c in s.chars() {
            match c {
                '=' => {
                    assert_eq!(a_bytes[i], b_bytes[j], "{a} {b} {s}");
                    i += 1;
                    j += 1;
                }
                '-' => i += 1,
                _ => j += 1,
            }
        }
        assert_eq!((i, j), (a.len(), b.len()), "{a} {b} {s}");
        assert_eq!(
            s.chars().filter(|&c| c != '=').count(),
            edits,
            "{a} {b} {s}"
        );
    }

    #[test]
    fn shortest_scripts() {
        check("abcabba", "cbabac", 5);
        check("", "abc", 3);
        check("abc", "", 3);
        check("abc", "abc", 0);
        check("aaaa", "aaaaaa", 2);
        check("abab", "baba", 2);
        check("xaaay", "xaay", 1);
        check("abcdefgh", "abXdefYh", 4);
        check("aabbaabb", "bbaabbaa", 4);
    }

    /// Length of the longest common subsequence, by dynamic programming.
    fn lcs(a: &[u32], b: &[u32]) -> usize {
        let mut row = vec![0usize; b.len() + 1];
        for &x in a {
            let mut diagonal = 0;
            for (k, &y) in b.iter().enumerate() {
                let up = row[k + 1];
                row[k + 1] = if x == y { diagonal + 1 } else { up.max(row[k]) };
                diagonal = up;
            }
        }
        row[b.len()]
    }

    #[test]
    fn myers_alone_finds_shortest_scripts() {
        // A small linear congruential generator: reproducible, no dependency.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |modulo: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % modulo
        };
        for _ in 0..500 {
            let (n, m, symbols) = (next(30) as usize, next(30) as usize, 1 + next(4));
            let a: Vec<u32> = (0..n).map(|_| next(symbols) as u32).collect();
            let b: Vec<u32> = (0..m).map(|_| next(symbols) as u32).collect();
            let mut script = Script::default();
            Aligner {
                a: &a,
                b: &b,
                max_cost: u64::MAX,
                patience: false,
                script: &mut script,
            }
            .diff(0, n, 0, m);
            let (mut i, mut j, mut edits) = (0, 0, 0);
            for &(edit, count) in &script.runs {
                for _ in 0..count {
                    match edit {
                        Edit::Same => {
                            assert_eq!(a[i], b[j], "{a:?} {b:?}");
                            i += 1;
                            j += 1;
                        }
                        Edit::Removed => (i, edits) = (i + 1, edits + 1),
                        Edit::Inserted => (j, edits) = (j + 1, edits + 1),
                    }
                }
            }
            assert_eq!((i, j), (n, m), "{a:?} {b:?}");
            assert_eq!(edits, n + m - 2 * lcs(&a, &b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn a_costly_stretch_is_replaced_whole() {
        let a: Vec<u32> = (0..100).map(|i| i % 2).collect();
        let b: Vec<u32> = (0..100)
            .map(|i| 1 - i % 2 + 2 * u32::from(i % 7 == 0))
            .collect();
        let mut script = Script::default();
        Aligner {
            a: &a,
            b: &b,
            max_cost: 10,
            patience: true,
            script: &mut script,
        }
        .diff(0, a.len(), 0, b.len());
        let removed: u64 = script
            .runs
            .iter()
            .filter(|r| r.0 == Edit::Removed)
            .map(|r| r.1)
            .sum();
        let inserted: u64 = script
            .runs
            .iter()
            .filter(|r| r.0 == Edit::Inserted)
            .map(|r| r.1)
            .sum();
        let same: u64 = script
            .runs
            .iter()
            .filter(|r| r.0 == Edit::Same)
            .map(|r| r.1)
            .sum();
        assert_eq!(removed + same, 100);
        assert_eq!(inserted + same, 100);
    }
}
