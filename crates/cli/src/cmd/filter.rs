//! `mmiotrace filter`: keep or drop events by what, where, who and when.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use globset::{Glob, GlobMatcher, GlobSet};
use mmiotrace_regdb::namer::register_of;
use mmiotrace_trace::{Direction, Event, Timestamp};

use super::common::{
    TraceFormat, glob_set, open_trace, parse_glob, parse_range, parse_time, parse_u32, parse_u64,
    refuse_same_file, trace_writer, warn_if_truncated,
};
use super::regs::{RegsArgs, namer};

/// Keep (or, with --drop, remove) the accesses that match every given
/// condition; the output is again a valid trace.
///
/// Conditions on accesses (R, W, VR, VW, UNKNOWN and REPEAT lines); each
/// option may be repeated, and an access matches an option when it matches
/// any of its values:
///   --map ID                  map id
///   --addr RANGE              physical address: any byte of the access in
///                             RANGE (0xfebf0000..0xfebf0100, 0xfebf0008, ...)
///   --reg GLOB                register name from the databases (--regs):
///                             `PGRAPH.GPC*`, `EE[RC]D`, `RA\[?\].RAH`.
///                             An access inside a register (`EERD+0x2`)
///                             matches its register's name too. Accesses no
///                             database names match no --reg.
///   --dir R|W                 direction
///   --width N                 width in bytes
///   --thread TID, --process PID
///
/// Windows, which apply to MARK lines too:
///   --time RANGE              seconds, e.g. 1.5..2 or 12.000345..
///   --seq RANGE               sequence numbers, e.g. 1000..2000
///   --from-mark GLOB [--to-mark GLOB]
///                             from each MARK whose text matches the first
///                             glob to the next that matches the second,
///                             both marks included; without --to-mark, to
///                             the end
///
/// GLOB: `*` any run of characters, `?` any one, `[RC]` or `[0-3]` one of a
/// class (`[!0]` any but), `{a,b}` either; the whole name or text must
/// match. `\` takes the next character literally: register arrays are
/// `RA\[0\].RAL`, so `RA[0].RAL` would mean `RA0.RAL`. Quote globs from
/// the shell.
///
/// VERSION, PCIDEV, MAP, UNMAP and lost-event lines are always kept (MAP and
/// UNMAP only for the maps --map selects), so that the output still says what
/// was mapped and what was lost. Marks are kept unless a window excludes them.
/// RANGE is START..END (END excluded), START..=END, START.., ..END or a
/// single value; numbers are decimal or 0x-prefixed hex.
///
/// Register databases (--regs, --device, --chipset) are bound to the
/// trace's mappings as `mmiotrace decode` binds them (see its --help).
///
/// Examples:
///   mmiotrace filter --dir W run.trace
///   mmiotrace filter --addr 0xfebf0000..0xfebf0100 --from-mark 'probe*' --to-mark 'probe done' run.mtb -o probe.mtb
///   mmiotrace filter --drop --addr 0xfebf0008 run.trace      # everything but the status register
///   mmiotrace filter --regs nv_mmio.xml --reg 'PGRAPH.GPC*' gpu.trace
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The trace to read, text or binary; `-` for standard input.
    #[arg(value_name = "IN")]
    input: PathBuf,

    /// Where to write; `-` (the default) for standard output. A file is
    /// written beside OUT and renamed over it only on success (an error
    /// leaves the old OUT as it was); OUT may not be IN.
    #[arg(short, long, value_name = "OUT", default_value = "-")]
    output: PathBuf,

    /// Output format (default: binary when OUT ends in `.mtb`, else text).
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: Option<TraceFormat>,

    /// Remove the matching accesses instead of keeping them.
    #[arg(long)]
    drop: bool,

    /// Accesses to this map id.
    #[arg(long, value_name = "ID", value_parser = parse_u32)]
    map: Vec<u32>,

    /// Accesses that touch this physical address range.
    #[arg(long, value_name = "RANGE", value_parser = parse_addr_range)]
    addr: Vec<(u64, u64)>,

    /// Accesses to a register whose name matches GLOB (needs --regs).
    #[arg(long, value_name = "GLOB", value_parser = parse_glob)]
    reg: Vec<Glob>,

    /// Reads (R) or writes (W).
    #[arg(long, value_name = "R|W", value_parser = parse_dir)]
    dir: Vec<Direction>,

    /// Accesses of this width in bytes.
    #[arg(long, value_name = "N", value_parser = parse_u32)]
    width: Vec<u32>,

    /// Accesses that a hook of `record --hook`, `--hook-lib` changed or
    /// marked (`hook=` in the trace).
    #[arg(long)]
    hooked: bool,

    /// Accesses that rule N of the hook file changed or marked (0: the
    /// plugin of --hook-lib).
    #[arg(long = "hook", value_name = "N", value_parser = parse_u32)]
    hook: Vec<u32>,

    /// Accesses by this thread id (the pid field).
    #[arg(long, value_name = "TID", value_parser = parse_u32)]
    thread: Vec<u32>,

    /// Accesses by this process id (the proc= field).
    #[arg(long, value_name = "PID", value_parser = parse_u32)]
    process: Vec<u32>,

    /// Events in this time window, in seconds.
    #[arg(long, value_name = "RANGE", value_parser = parse_time_range)]
    time: Option<(Timestamp, Timestamp)>,

    /// Events with sequence numbers in this range (events without one are outside).
    #[arg(long, value_name = "RANGE", value_parser = parse_seq_range)]
    seq: Option<(u64, u64)>,

    /// Start a window at each MARK whose text matches GLOB.
    #[arg(long, value_name = "GLOB", value_parser = parse_mark_glob)]
    from_mark: Option<Box<GlobMatcher>>,

    /// End the window at the next MARK whose text matches GLOB.
    #[arg(long, value_name = "GLOB", requires = "from_mark", value_parser = parse_mark_glob)]
    to_mark: Option<Box<GlobMatcher>>,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,

    // Boxed: inline, they would make this the largest of main.rs's commands
    // by far (clippy::large_enum_variant).
    #[command(flatten)]
    regs: Box<RegsArgs>,
}

/// Whether a register name matches the --reg globs: an access inside a
/// register (`EERD+0x2`) matches by its register's name too.
fn reg_matches(globs: &GlobSet, name: &str) -> bool {
    globs.is_match(name) || globs.is_match(register_of(name))
}

/// Boxed, as `regs` is: inline, two compiled globs would make this the
/// largest of main.rs's commands by far.
fn parse_mark_glob(text: &str) -> anyhow::Result<Box<GlobMatcher>> {
    parse_glob(text).map(|glob| Box::new(glob.compile_matcher()))
}

fn parse_dir(text: &str) -> anyhow::Result<Direction> {
    match text {
        "R" | "r" | "read" => Ok(Direction::Read),
        "W" | "w" | "write" => Ok(Direction::Write),
        _ => bail!("expected R or W"),
    }
}

fn parse_addr_range(text: &str) -> anyhow::Result<(u64, u64)> {
    parse_range(text, parse_u64, 0, u64::MAX, |v| v.checked_sub(1))
}

fn parse_seq_range(text: &str) -> anyhow::Result<(u64, u64)> {
    parse_range(text, parse_u64, 0, u64::MAX, |v| v.checked_sub(1))
}

fn parse_time_range(text: &str) -> anyhow::Result<(Timestamp, Timestamp)> {
    let (low, high) = parse_range(
        text,
        parse_time,
        Timestamp::ZERO,
        Timestamp::from_nanos(u64::MAX),
        |t| t.nanos.checked_sub(1).map(Timestamp::from_nanos),
    )?;
    Ok((low, high))
}

/// What an access-like event offers the conditions.
struct Target {
    map_id: u32,
    phys: u64,
    width: u64,
    dir: Option<Direction>,
    pid: u32,
}

fn target(event: &Event) -> Option<Target> {
    match event {
        Event::Access(a) => Some(Target {
            map_id: a.map_id,
            phys: a.phys,
            width: a.width().into(),
            dir: Some(a.dir),
            pid: a.pid,
        }),
        Event::Repeat(r) => Some(Target {
            map_id: r.map_id,
            phys: r.phys,
            width: r.value.width().into(),
            dir: Some(r.dir),
            pid: r.pid,
        }),
        // The width and direction of an UNKNOWN access are not known: it
        // matches no --width or --dir.
        Event::Unknown(u) => Some(Target {
            map_id: u.map_id,
            phys: u.phys,
            width: 1,
            dir: None,
            pid: u.pid,
        }),
        _ => None,
    }
}

impl Cmd {
    /// Whether the access-like event matches every access condition;
    /// `name` is its register's name, if a database has one.
    fn matches(&self, event: &Event, t: &Target, name: Option<&str>, regs: &GlobSet) -> bool {
        let any = |list: &[u32], v: u32| list.is_empty() || list.contains(&v);
        let width_ok = self.width.is_empty()
            || (!matches!(event, Event::Unknown(_))
                && self.width.iter().any(|&w| u64::from(w) == t.width));
        let dir_ok = self.dir.is_empty() || t.dir.is_some_and(|d| self.dir.contains(&d));
        let last = t.phys.saturating_add(t.width - 1);
        let addr_ok = self.addr.is_empty()
            || self
                .addr
                .iter()
                .any(|&(low, high)| t.phys <= high && last >= low);
        let process = event.ext().and_then(|x| x.process);
        let process_ok =
            self.process.is_empty() || process.is_some_and(|p| self.process.contains(&p));
        let hook = event.ext().and_then(|x| x.hook);
        let hook_ok = (!self.hooked || hook.is_some())
            && (self.hook.is_empty() || hook.is_some_and(|h| self.hook.contains(&h.rule)));
        any(&self.map, t.map_id)
            && any(&self.thread, t.pid)
            && width_ok
            && dir_ok
            && addr_ok
            && process_ok
            && hook_ok
            && (self.reg.is_empty() || name.is_some_and(|n| reg_matches(regs, n)))
    }

    /// Whether the event is inside the --time and --seq windows.
    fn in_windows(&self, event: &Event) -> bool {
        let time_ok = match (self.time, event.time()) {
            (None, _) => true,
            (Some((low, high)), Some(t)) => low <= t && t <= high,
            (Some(_), None) => false,
        };
        let seq_ok = match (self.seq, event.ext().and_then(|x| x.seq)) {
            (None, _) => true,
            (Some((low, high)), Some(s)) => low <= s && s <= high,
            (Some(_), None) => false,
        };
        time_ok && seq_ok
    }

    pub fn run(self) -> anyhow::Result<()> {
        let registers = self.regs.load()?;
        if !self.reg.is_empty() && registers.is_none() {
            bail!("--reg needs a register database: give one with --regs FILE");
        }
        // Names are looked up only for --reg.
        let mut namer = namer(registers.as_ref().filter(|_| !self.reg.is_empty()))?;
        let reg_globs = glob_set(&self.reg)?;
        refuse_same_file(&self.input, &self.output)?;
        let (mut reader, _) = open_trace(&self.input, self.strict)?;
        let (mut writer, out_name, out_file) = trace_writer(&self.output, self.to)?;
        // Inside a --from-mark/--to-mark window; always without --from-mark.
        let mut in_marks = self.from_mark.is_none();
        while let Some(event) = reader.read_ref()? {
            let name = namer.as_mut().and_then(|n| n.name(event));
            let keep = match event {
                Event::Version(_) | Event::PciDev(_) | Event::Lost(_) => true,
                Event::Map(m) => self.map.is_empty() || self.map.contains(&m.map_id),
                Event::Unmap(u) => self.map.is_empty() || self.map.contains(&u.map_id),
                Event::Mark(m) => {
                    let mut inside = in_marks;
                    if let Some(from) = &self.from_mark {
                        if !in_marks && from.is_match(&m.text) {
                            in_marks = true;
                            inside = true;
                        } else if in_marks
                            && self.to_mark.as_ref().is_some_and(|to| to.is_match(&m.text))
                        {
                            in_marks = false;
                        }
                    }
                    self.drop || (inside && self.in_windows(event))
                }
                _ => match target(event) {
                    Some(t) => {
                        let selected = in_marks
                            && self.in_windows(event)
                            && self.matches(event, &t, name.map(|n| &**n), &reg_globs);
                        selected != self.drop
                    }
                    None => true,
                },
            };
            if keep {
                writer
                    .write_event(event)
                    .with_context(|| format!("cannot write to {out_name}"))?;
            }
        }
        warn_if_truncated(&reader);
        writer
            .flush()
            .with_context(|| format!("cannot write to {out_name}"))?;
        drop(writer);
        out_file.commit()
    }
}
