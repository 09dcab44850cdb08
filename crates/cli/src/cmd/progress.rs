//! Progress on standard error, for someone watching a terminal: a bar over
//! the bytes of a long read, and `record`'s live line. Nothing is drawn
//! when standard error is not a terminal (a pipe, a file, a test), nor
//! with `-q`.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// Whether to draw: not `quiet`, and standard error is a terminal.
fn wanted(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// Redraws per second: enough to look live, few enough to cost nothing.
const REFRESH_HZ: u8 = 8;

/// A bar over `len` bytes of `name` being read, cleared when dropped;
/// hidden unless [`wanted`], or when the length is unknown (standard input).
pub fn reading(name: &str, len: Option<u64>, quiet: bool) -> ProgressBar {
    let Some(len) = len.filter(|_| wanted(quiet)) else {
        return ProgressBar::hidden();
    };
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("the template above is valid")
    .progress_chars("=> ");
    let bar =
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(REFRESH_HZ))
            .with_style(style)
            .with_prefix(format!("reading {name}"))
            .with_finish(ProgressFinish::AndClear);
    bar.tick();
    bar
}

/// What [`LiveLine`] shows.
#[derive(Debug, Clone, Copy)]
pub struct LiveCounts {
    pub events: u64,
    pub maps: usize,
    pub threads: usize,
    pub processes: usize,
}

/// `record`'s live line: events so far and per second, maps, threads and
/// processes, redrawn a few times a second, gone when recording ends.
#[derive(Debug)]
pub struct LiveLine {
    line: Option<ProgressBar>,
    started: Instant,
    last: Instant,
    last_events: u64,
}

impl LiveLine {
    pub fn new(quiet: bool) -> LiveLine {
        let line = wanted(quiet).then(|| {
            let line =
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(REFRESH_HZ))
                    .with_style(
                        ProgressStyle::with_template("mmiotrace: recording: {msg}")
                            .expect("the template above is valid"),
                    )
                    .with_finish(ProgressFinish::AndClear);
            line.set_message("started");
            line
        });
        let now = Instant::now();
        LiveLine {
            line,
            started: now,
            last: now,
            last_events: 0,
        }
    }

    /// Whether [`update`](Self::update) would redraw now: at most every
    /// half second, and only on a terminal.
    pub fn due(&self) -> bool {
        self.line.is_some() && self.last.elapsed() >= Duration::from_millis(500)
    }

    /// Redraws with the counts so far.
    pub fn update(&mut self, counts: LiveCounts) {
        let Some(line) = &self.line else {
            return;
        };
        let now = Instant::now();
        let since = now.duration_since(self.last).as_secs_f64().max(1e-3);
        let rate = counts.events.saturating_sub(self.last_events) as f64 / since;
        line.set_message(format!(
            "{} events, {} events/s, {} maps, {} threads, {} processes ({:.0} s)",
            counts.events,
            human(rate),
            counts.maps,
            counts.threads,
            counts.processes,
            now.duration_since(self.started).as_secs_f64()
        ));
        let events = counts.events;
        self.last = now;
        self.last_events = events;
    }

    /// Removes the line, before the summary is printed.
    pub fn clear(&mut self) {
        if let Some(line) = self.line.take() {
            line.finish_and_clear();
        }
    }
}

/// 1234567.0 as "1.23 M".
fn human(rate: f64) -> String {
    match rate {
        r if r >= 1e6 => format!("{:.2} M", r / 1e6),
        r if r >= 1e3 => format!("{:.1} k", r / 1e3),
        r => format!("{r:.0}"),
    }
}
