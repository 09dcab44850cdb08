//! `record --hook FILE`, `--hook-lib LIB`, `--model LIB`: the rule file
//! parsed and checked (every error names FILE:LINE:COL) and compiled into
//! the hook file that the runtime maps (`mmiotrace_shm::hooks`), before
//! PROGRAM starts. The format is docs/HOOKS.md's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mmiotrace_regdb::{Database, NodeKind};
use mmiotrace_shm::hooks::{
    FLAG_MODEL, FLAG_PLUGIN, HookRule, HookTable, MAX_GLOB, MAX_LIB_PATH, MAX_RULES, MAX_VALUES,
    action, dir,
};
use serde::Deserialize;
use toml::Spanned;

/// The rule file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<Spanned<RuleDef>>,
}

/// A number: a TOML integer, or a string for values from 2^63 up
/// (`"0xffffffffffffffff"`), which TOML integers cannot hold.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    name: Option<Spanned<String>>,
    // What it matches.
    path: Option<Spanned<String>>,
    map: Option<Spanned<Number>>,
    offset: Option<Spanned<Number>>,
    range: Option<Spanned<Vec<Spanned<Number>>>>,
    register: Option<Spanned<String>>,
    width: Option<Spanned<Number>>,
    dir: Option<Spanned<String>>,
    nth: Option<Spanned<Number>>,
    after: Option<Spanned<Number>>,
    times: Option<Spanned<Number>>,
    after_time: Option<Spanned<String>>,
    // What it does.
    value: Option<Spanned<Number>>,
    values: Option<Spanned<Vec<Spanned<Number>>>>,
    set: Option<Spanned<Number>>,
    clear: Option<Spanned<Number>>,
    flip: Option<Spanned<Number>>,
    drop: Option<Spanned<bool>>,
    delay: Option<Spanned<String>>,
    pass: Option<Spanned<bool>>,
    remove: Option<Spanned<bool>>,
    sigbus: Option<Spanned<bool>>,
}

/// A rule as the recorder describes it: for the trace's MARK lines and the
/// summary.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub number: u32,
    pub name: Option<String>,
    /// `FILE:LINE`.
    pub at: String,
}

/// What `--hook`, `--hook-lib` and `--model` ask for.
#[derive(Debug)]
pub struct Hooks {
    pub table: Box<HookTable>,
    pub rules: Vec<RuleInfo>,
}

/// Byte offsets to `FILE:LINE:COL`.
struct Lines<'a> {
    file: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(file: &'a str, text: &str) -> Lines<'a> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { file, starts }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        (line, offset - self.starts[line - 1] + 1)
    }

    fn at(&self, offset: usize) -> String {
        let (line, col) = self.line_col(offset);
        format!("{}:{line}:{col}", self.file)
    }
}

/// An error at a span of the rule file.
fn error_at<T>(lines: &Lines<'_>, span: std::ops::Range<usize>, message: String) -> Result<T> {
    bail!("{}: {message}", lines.at(span.start))
}

/// Reads `--hook FILE` (if any) and the plugin options into a table.
pub fn load(
    rule_file: Option<&Path>,
    lib: Option<&Path>,
    model: Option<&Path>,
    regs: &[Database],
) -> Result<Option<Hooks>> {
    if rule_file.is_none() && lib.is_none() && model.is_none() {
        return Ok(None);
    }
    let mut table = HookTable::new_boxed();
    let mut rules = Vec::new();
    if let Some(path) = rule_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the hook rules {}", path.display()))?;
        rules = compile(&path.display().to_string(), &text, regs, &mut table)?;
    }
    if let Some((plugin, flags)) = lib
        .map(|lib| (lib, FLAG_PLUGIN))
        .or(model.map(|model| (model, FLAG_PLUGIN | FLAG_MODEL)))
    {
        let resolved = std::fs::canonicalize(plugin)
            .with_context(|| format!("the plugin {}", plugin.display()))?;
        let bytes = resolved.as_os_str().as_encoded_bytes();
        if bytes.len() > MAX_LIB_PATH {
            bail!("the plugin's path {} is too long", resolved.display());
        }
        table.lib_path[..bytes.len()].copy_from_slice(bytes);
        table.lib_path_len = bytes.len() as u32;
        table.flags = flags;
    }
    Ok(Some(Hooks { table, rules }))
}

/// Parses and checks a rule file's `text`, named `file` in errors, into
/// `table`.
pub fn compile(
    file: &str,
    text: &str,
    regs: &[Database],
    table: &mut HookTable,
) -> Result<Vec<RuleInfo>> {
    let lines = Lines::new(file, text);
    let parsed: RuleFile = toml::from_str(text).or_else(|err| {
        error_at(
            &lines,
            err.span().unwrap_or(0..0),
            err.message().trim_end().to_string(),
        )
    })?;
    if parsed.rule.len() > MAX_RULES {
        let span = parsed.rule[MAX_RULES].span();
        return error_at(&lines, span, format!("more than {MAX_RULES} rules"));
    }
    let mut values_used = 1; // values[0] stays unused, so 0 means "none"
    let mut infos = Vec::new();
    for (index, def) in parsed.rule.iter().enumerate() {
        let rule = &mut table.rules[index];
        rule.set_defaults();
        let mut compiler = Compiler {
            lines: &lines,
            rule,
            values: &mut table.values,
            values_used: &mut values_used,
        };
        compiler.rule(def.get_ref(), def.span(), regs)?;
        infos.push(RuleInfo {
            number: index as u32 + 1,
            name: def.get_ref().name.as_ref().map(|n| n.get_ref().clone()),
            at: format!("{file}:{}", lines.line_col(def.span().start).0),
        });
    }
    table.rule_count = parsed.rule.len() as u32;
    Ok(infos)
}

struct Compiler<'a, 'l> {
    lines: &'a Lines<'l>,
    rule: &'a mut HookRule,
    values: &'a mut [u64; MAX_VALUES],
    values_used: &'a mut usize,
}

impl Compiler<'_, '_> {
    fn fail<T>(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Result<T> {
        error_at(self.lines, span, message.into())
    }

    fn number(&self, n: &Spanned<Number>, what: &str) -> Result<u64> {
        match n.get_ref() {
            Number::Int(i) => u64::try_from(*i)
                .or_else(|_| self.fail(n.span(), format!("{what} must not be negative"))),
            Number::Text(text) => {
                let parsed = match text.strip_prefix("0x").or(text.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                    None => text.replace('_', "").parse::<u64>(),
                };
                parsed.or_else(|_| {
                    self.fail(
                        n.span(),
                        format!("{what}: \"{text}\" is not a number (decimal, or hex with 0x)"),
                    )
                })
            }
        }
    }

    fn rule(
        &mut self,
        def: &RuleDef,
        span: std::ops::Range<usize>,
        regs: &[Database],
    ) -> Result<()> {
        if let Some(path) = &def.path {
            if path.get_ref().is_empty() || !self.rule.set_glob(path.get_ref().as_bytes()) {
                return self.fail(
                    path.span(),
                    format!("path must be a glob of 1 to {MAX_GLOB} bytes"),
                );
            }
        }
        if let Some(map) = &def.map {
            let id = self.number(map, "map")?;
            self.rule.map_id = u32::try_from(id)
                .ok()
                .filter(|&id| id != 0)
                .map_or_else(|| self.fail(map.span(), "map is a map id, 1 or more"), Ok)?;
        }
        self.place(def, regs)?;
        if let Some(width) = &def.width {
            match self.number(width, "width")? {
                w @ (1 | 2 | 4 | 8) => self.rule.width = w as u32,
                _ => return self.fail(width.span(), "width is 1, 2, 4 or 8 (bytes)"),
            }
        }
        if let Some(d) = &def.dir {
            self.rule.dir = match d.get_ref().as_str() {
                "r" | "read" => dir::READ,
                "w" | "write" => dir::WRITE,
                other => {
                    return self.fail(
                        d.span(),
                        format!(
                            "dir is \"r\" (or \"read\") or \"w\" (or \"write\"), not \"{other}\""
                        ),
                    );
                }
            };
        }
        self.counts(def)?;
        if let Some(t) = &def.after_time {
            self.rule.after_time_ns = duration(t.get_ref())
                .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
                .map_or_else(|why| self.fail(t.span(), format!("after_time: {why}")), Ok)?;
        }
        self.action(def, span)
    }

    /// `offset`, `range` or `register`.
    fn place(&mut self, def: &RuleDef, regs: &[Database]) -> Result<()> {
        let given = [
            def.offset.as_ref().map(Spanned::span),
            def.range.as_ref().map(Spanned::span),
            def.register.as_ref().map(Spanned::span),
        ];
        if let Some(second) = given.iter().flatten().nth(1) {
            return self.fail(
                second.clone(),
                "a rule takes one of offset, range and register",
            );
        }
        if let Some(offset) = &def.offset {
            let at = self.number(offset, "offset")?;
            self.rule.offset_start = at;
            self.rule.offset_end = at.saturating_add(1);
        }
        if let Some(range) = &def.range {
            let [start, end] = range.get_ref().as_slice() else {
                return self.fail(
                    range.span(),
                    "range is [START, END]: offsets START up to, not including, END",
                );
            };
            let (start_at, end_at) = (
                self.number(start, "range start")?,
                self.number(end, "range end")?,
            );
            if end_at <= start_at {
                return self.fail(end.span(), "the range's END must be greater than its START");
            }
            self.rule.offset_start = start_at;
            self.rule.offset_end = end_at;
        }
        if let Some(name) = &def.register {
            if regs.is_empty() {
                return self.fail(
                    name.span(),
                    format!(
                        "register = \"{}\" needs a register database: --regs FILE",
                        name.get_ref()
                    ),
                );
            }
            let Some((offset, width)) = regs.iter().find_map(|db| register(db, name.get_ref()))
            else {
                let names: Vec<&str> = regs.iter().map(|db| &*db.name).collect();
                return self.fail(
                    name.span(),
                    format!("no register \"{}\" in {}", name.get_ref(), names.join(", ")),
                );
            };
            self.rule.offset_start = offset;
            self.rule.offset_end = offset + u64::from(width);
        }
        Ok(())
    }

    /// `nth`, `after`, `times`.
    fn counts(&mut self, def: &RuleDef) -> Result<()> {
        if let Some(nth) = &def.nth {
            if let Some(other) = def.after.as_ref().or(def.times.as_ref()) {
                return self.fail(other.span(), "nth cannot be combined with after or times");
            }
            let n = self.number(nth, "nth")?;
            if n == 0 {
                return self.fail(nth.span(), "nth counts from 1 (the first matching access)");
            }
            self.rule.after = n - 1;
            self.rule.times = 1;
        }
        if let Some(after) = &def.after {
            self.rule.after = self.number(after, "after")?;
        }
        if let Some(times) = &def.times {
            self.rule.times = self.number(times, "times")?;
            if self.rule.times == 0 {
                return self.fail(times.span(), "times = 0 would never act; remove the rule");
            }
        }
        Ok(())
    }

    fn action(&mut self, def: &RuleDef, span: std::ops::Range<usize>) -> Result<()> {
        let flag = |b: &Option<Spanned<bool>>| b.as_ref().map(|b| (b.span(), *b.get_ref()));
        let bits = def
            .set
            .as_ref()
            .or(def.clear.as_ref())
            .or(def.flip.as_ref());
        let actions = [
            ("value", def.value.as_ref().map(Spanned::span)),
            ("values", def.values.as_ref().map(Spanned::span)),
            ("set/clear/flip", bits.map(Spanned::span)),
            ("drop", def.drop.as_ref().map(Spanned::span)),
            ("delay", def.delay.as_ref().map(Spanned::span)),
            ("pass", def.pass.as_ref().map(Spanned::span)),
            ("remove", def.remove.as_ref().map(Spanned::span)),
            ("sigbus", def.sigbus.as_ref().map(Spanned::span)),
        ];
        let mut chosen = actions
            .iter()
            .filter_map(|(name, at)| at.clone().map(|at| (*name, at)));
        let Some((first, _)) = chosen.next() else {
            return self.fail(
                span,
                "this rule does nothing: give it one action (value, values, set/clear/flip, drop, delay, pass, remove or sigbus)",
            );
        };
        if let Some((second, at)) = chosen.next() {
            return self.fail(
                at,
                format!("a rule has one action; this one has {first} and {second}"),
            );
        }
        for (name, value) in [
            ("drop", flag(&def.drop)),
            ("pass", flag(&def.pass)),
            ("remove", flag(&def.remove)),
            ("sigbus", flag(&def.sigbus)),
        ] {
            if let Some((at, false)) = value {
                return self.fail(at, format!("{name} = false does nothing; remove it"));
            }
        }
        if let Some(value) = &def.value {
            self.rule.action = action::VALUE;
            let v = self.number(value, "value")?;
            self.check_width(value.span(), v)?;
            self.rule.value = v;
        } else if let Some(values) = &def.values {
            self.rule.action = action::SEQUENCE;
            if values.get_ref().is_empty() {
                return self.fail(values.span(), "values needs at least one value");
            }
            if *self.values_used + values.get_ref().len() > MAX_VALUES {
                return self.fail(
                    values.span(),
                    format!(
                        "more than {} values in all the rules' sequences",
                        MAX_VALUES - 1
                    ),
                );
            }
            self.rule.values_start = *self.values_used as u32;
            self.rule.values_len = values.get_ref().len() as u32;
            for value in values.get_ref() {
                let v = self.number(value, "values")?;
                self.check_width(value.span(), v)?;
                self.values[*self.values_used] = v;
                *self.values_used += 1;
            }
        } else if bits.is_some() {
            self.rule.action = action::BITS;
            for (field, what) in [
                (&def.set, "set"),
                (&def.clear, "clear"),
                (&def.flip, "flip"),
            ] {
                if let Some(n) = field {
                    let v = self.number(n, what)?;
                    self.check_width(n.span(), v)?;
                    match what {
                        "set" => self.rule.set = v,
                        "clear" => self.rule.clear = v,
                        _ => self.rule.flip = v,
                    }
                }
            }
        } else if let Some(d) = &def.drop {
            if self.rule.dir != dir::WRITE {
                return self.fail(d.span(), "drop applies to writes: add dir = \"w\"");
            }
            self.rule.action = action::DROP;
        } else if let Some(delay) = &def.delay {
            self.rule.action = action::DELAY;
            let d = duration(delay.get_ref())
                .map_or_else(|why| self.fail(delay.span(), format!("delay: {why}")), Ok)?;
            if d > Duration::from_secs(10) {
                return self.fail(delay.span(), "delay: at most 10 s");
            }
            self.rule.delay_ns = d.as_nanos() as u64;
        } else if def.pass.is_some() {
            self.rule.action = action::PASS;
        } else if def.remove.is_some() {
            self.rule.action = action::REMOVE;
        } else if def.sigbus.is_some() {
            self.rule.action = action::SIGBUS;
        }
        Ok(())
    }

    /// A value must fit the rule's `width`, when it has one.
    fn check_width(&self, span: std::ops::Range<usize>, value: u64) -> Result<()> {
        let width = self.rule.width;
        if (1..8).contains(&width) && value >> (8 * width) != 0 {
            return self.fail(
                span,
                format!("{value:#x} does not fit in {width} bytes (width = {width})"),
            );
        }
        Ok(())
    }
}

/// `10ms`, `1.5s`, `250us`, `100ns`.
fn duration(text: &str) -> std::result::Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => {
            return Err(format!(
                "\"{text}\" is not a duration (a number and ns, us, ms or s)"
            ));
        }
    };
    number
        .parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .ok_or_else(|| format!("\"{text}\" is not a duration (a number and ns, us, ms or s)"))
}

/// A register's offset in bytes and width in a database's default space:
/// `NAME`, or `BLOCK.NAME` for a register in a block.
fn register(db: &Database, name: &str) -> Option<(u64, u8)> {
    let space = db.spaces.get(db.default_space)?;
    let mut nodes = &space.nodes;
    let mut base = 0u64;
    let mut parts = name.split('.').peekable();
    while let Some(part) = parts.next() {
        // A register's name is its register's; a block's is its node's.
        let node = nodes.iter().find(|n| match (&n.name, &n.kind) {
            (Some(name), _) => &**name == part,
            (None, NodeKind::Reg(id)) => {
                db.regs.get(*id as usize).is_some_and(|r| &*r.name == part)
            }
            (None, NodeKind::Block { .. }) => false,
        })?;
        base += node.offset * space.unit;
        match &node.kind {
            NodeKind::Reg(id) if parts.peek().is_none() => {
                return db.regs.get(*id as usize).map(|reg| (base, reg.width));
            }
            NodeKind::Block { children, .. } => nodes = children,
            NodeKind::Reg(_) => return None,
        }
    }
    None
}

/// The MARK lines that name the rules at the start of the trace.
pub fn describe(rules: &[RuleInfo]) -> Vec<String> {
    rules
        .iter()
        .map(|rule| {
            let mut text = format!("hook {}", rule.number);
            if let Some(name) = &rule.name {
                let _ = write!(text, " {name}");
            }
            let _ = write!(text, " ({})", rule.at);
            text
        })
        .collect()
}

/// The summary's lines: per rule, the accesses it matched and acted on.
pub fn print_summary(rules: &[RuleInfo], file: &HookFile, hooked: u64) {
    eprintln!("  hooked accesses in the trace: {hooked}");
    let Some(table) = file.table() else { return };
    for (info, rule) in rules.iter().zip(table.rules()) {
        eprintln!(
            "    hook {}{} ({}): matched {}, acted on {}",
            info.number,
            info.name
                .as_ref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default(),
            info.at,
            rule.matched(),
            rule.fired()
        );
    }
}

/// The hook file: written before PROGRAM starts, mapped to read the
/// counters at the end, removed when recording ends.
#[derive(Debug)]
pub struct HookFile {
    pub path: PathBuf,
    mapping: memmap2::Mmap,
}

impl HookFile {
    pub fn create(table: &HookTable) -> Result<HookFile> {
        let dir = Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_owned()
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!(
            "mmiotrace-hooks-{}-{}",
            std::process::id(),
            mmiotrace_shm::now_ns()
        ));
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
        }
        .with_context(|| format!("creating the hook file {}", path.display()))?;
        let written = std::io::Write::write_all(&mut &file, table.as_bytes());
        // SAFETY: a shared read-only mapping of a file this process just
        // created; the runtimes change only its atomic counters.
        let mapping = written.and_then(|()| unsafe { memmap2::Mmap::map(&file) });
        match mapping {
            Ok(mapping) => Ok(HookFile { path, mapping }),
            Err(err) => {
                let _ = std::fs::remove_file(&path);
                Err(err).with_context(|| format!("writing the hook file {}", path.display()))
            }
        }
    }

    /// The table with the counters as the runtimes left them.
    pub fn table(&self) -> Option<&HookTable> {
        // SAFETY: the mapping lives as long as `self`; the table's shared
        // fields are atomics.
        unsafe { HookTable::from_raw(self.mapping.as_ptr() as *mut u8, self.mapping.len()) }.ok()
    }
}

impl Drop for HookFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
