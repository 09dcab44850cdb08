//! Timestamps from the CPU's time-stamp counter, and their conversion.
//!
//! A `clock_gettime` per event costs a patched access site more than the
//! rest of its logging, so a producer may stamp a record with the raw TSC
//! instead ([`read_tsc`], flagged with [`crate::RECORD_FLAG_TSC`]). The
//! recorder then converts it into nanoseconds since `Header::clock_base_ns`
//! with a [`TscClock`]: pairs of (TSC, `CLOCK_MONOTONIC`) readings it takes
//! itself as it drains, between which it interpolates.

use std::collections::VecDeque;

/// The time-stamp counter now (`rdtsc`).
///
/// On other architectures than x86_64 this returns 0, and no producer
/// there ever sets [`crate::RECORD_FLAG_TSC`]: [`tsc_is_usable`] is false.
#[inline]
pub fn read_tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: every x86_64 CPU has `rdtsc`; it reads a counter into
        // registers and touches no memory (a seccomp or prctl(PR_SET_TSC)
        // ban would make it fault, which tsc_is_usable cannot see; no
        // runtime sets that on itself).
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Whether the TSC ticks at a constant rate that goes on in every sleep
/// state: `/proc/cpuinfo` lists both `constant_tsc` and `nonstop_tsc` for
/// every CPU. Only then may a producer stamp records with [`read_tsc`].
/// Always false on other architectures than x86_64.
///
/// It reads a file and allocates: call it once, at load, never in a
/// signal handler.
pub fn tsc_is_usable() -> bool {
    cfg!(target_arch = "x86_64")
        && std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|text| cpuinfo_has_stable_tsc(&text))
}

/// Whether every `flags` line of `cpuinfo` (there is one per CPU) holds
/// both `constant_tsc` and `nonstop_tsc`, and there is at least one.
fn cpuinfo_has_stable_tsc(cpuinfo: &str) -> bool {
    let mut seen = false;
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.trim() != "flags" {
            continue;
        }
        let mut constant = false;
        let mut nonstop = false;
        for flag in value.split_ascii_whitespace() {
            constant |= flag == "constant_tsc";
            nonstop |= flag == "nonstop_tsc";
        }
        if !(constant && nonstop) {
            return false;
        }
        seen = true;
    }
    seen
}

/// One calibration point: a TSC reading and `CLOCK_MONOTONIC` (absolute
/// nanoseconds) taken at the same moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscPair {
    pub tsc: u64,
    pub ns: u64,
}

impl TscPair {
    /// A pair taken now: the clock read between two TSC readings, paired
    /// with their midpoint; of three tries, the one whose readings were
    /// closest (the others were interrupted or slowed down).
    pub fn now() -> TscPair {
        let mut best = (u64::MAX, TscPair { tsc: 0, ns: 0 });
        for _ in 0..3 {
            let before = read_tsc();
            let ns = crate::now_ns();
            let after = read_tsc();
            let window = after.wrapping_sub(before);
            if window < best.0 {
                let tsc = before.wrapping_add(window / 2);
                best = (window, TscPair { tsc, ns });
            }
        }
        best.1
    }
}

/// A calibration point and the slope to the next one.
#[derive(Debug, Clone, Copy)]
struct Knot {
    pair: TscPair,
    /// Nanoseconds per TSC tick from this pair to the next, in 32.32 fixed
    /// point; 0 for the newest pair (readings newer than the next-to-newest
    /// pair take that pair's slope).
    slope: u64,
}

/// Converts raw TSC readings into nanoseconds since a clock base (the
/// file's `Header::clock_base_ns`), piecewise linearly through
/// calibration pairs.
///
/// A reading between two pairs is interpolated between them; one newer
/// than the newest pair is extrapolated from the newest two, one older
/// than the oldest from the oldest two. The result is clamped at 0 (the
/// base). With pairs that grow in both TSC and nanoseconds (others are
/// ignored), the conversion never decreases as the TSC grows.
///
/// Only the last `capacity` pairs are kept. Nothing here allocates after
/// the history is full.
#[derive(Debug, Clone)]
pub struct TscClock {
    base_ns: u64,
    knots: VecDeque<Knot>,
    capacity: usize,
    /// The segment of the last conversion: the next reading is most
    /// likely in it too (the recorder converts records in order).
    last: Option<Segment>,
}

/// The readings `lo..hi` convert through `from` and `slope`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    lo: u64,
    hi: u64,
    from: TscPair,
    slope: u64,
}

/// Pairs a [`TscClock`] keeps unless told otherwise: at one pair per
/// millisecond or more, the last four seconds and more.
pub const TSC_CLOCK_HISTORY: usize = 4096;

impl TscClock {
    /// A clock with no pairs yet, converting to nanoseconds since `base_ns`
    /// (`CLOCK_MONOTONIC`), keeping the last [`TSC_CLOCK_HISTORY`] pairs.
    pub fn new(base_ns: u64) -> TscClock {
        TscClock::with_capacity(base_ns, TSC_CLOCK_HISTORY)
    }

    /// As [`TscClock::new`], keeping the last `capacity` pairs (at least 2).
    pub fn with_capacity(base_ns: u64, capacity: usize) -> TscClock {
        let capacity = capacity.max(2);
        TscClock {
            base_ns,
            knots: VecDeque::with_capacity(capacity),
            capacity,
            last: None,
        }
    }

    /// Pairs kept.
    pub fn len(&self) -> usize {
        self.knots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.knots.is_empty()
    }

    /// The newest pair, if any.
    pub fn newest(&self) -> Option<TscPair> {
        self.knots.back().map(|knot| knot.pair)
    }

    /// Adds a calibration pair. One that is not newer than the newest pair
    /// in both TSC and nanoseconds is ignored (returns false). The oldest
    /// pair goes once `capacity` are kept.
    pub fn add(&mut self, pair: TscPair) -> bool {
        if let Some(newest) = self.knots.back_mut() {
            if pair.tsc <= newest.pair.tsc || pair.ns <= newest.pair.ns {
                return false;
            }
            newest.slope = slope(newest.pair, pair);
        }
        if self.knots.len() == self.capacity {
            self.knots.pop_front();
        }
        self.knots.push_back(Knot { pair, slope: 0 });
        self.last = None;
        true
    }

    /// Takes a pair now if there is none or the newest is at least
    /// `interval_ns` old. Returns whether it took one.
    pub fn calibrate(&mut self, interval_ns: u64) -> bool {
        if let Some(newest) = self.knots.back()
            && crate::now_ns() < newest.pair.ns.saturating_add(interval_ns)
        {
            return false;
        }
        self.add(TscPair::now())
    }

    /// Whether it has the two pairs a conversion needs.
    pub fn can_convert(&self) -> bool {
        self.knots.len() >= 2
    }

    /// `tsc` in nanoseconds since the base, clamped at 0; 0 while fewer
    /// than two pairs are kept.
    #[inline]
    pub fn to_ns(&mut self, tsc: u64) -> u64 {
        let segment = match self.last {
            Some(last) if (last.lo..last.hi).contains(&tsc) => last,
            _ => match self.segment(tsc) {
                Some(segment) => {
                    self.last = Some(segment);
                    segment
                }
                None => return 0,
            },
        };
        let from = segment.from;
        let ns = if tsc >= from.tsc {
            from.ns.saturating_add(scale(tsc - from.tsc, segment.slope))
        } else {
            from.ns.saturating_sub(scale(from.tsc - tsc, segment.slope))
        };
        ns.saturating_sub(self.base_ns)
    }

    /// The segment that converts `tsc`: from the last pair at or before it
    /// to the next; before the oldest pair, the oldest segment; after the
    /// next-to-newest, the newest.
    fn segment(&self, tsc: u64) -> Option<Segment> {
        let n = self.knots.len();
        if n < 2 {
            return None;
        }
        // The last pair at or before tsc, but neither the newest (the
        // newest segment goes on after it) nor before the oldest.
        let at = self
            .knots
            .partition_point(|knot| knot.pair.tsc <= tsc)
            .clamp(1, n - 1)
            - 1;
        let knot = self.knots[at];
        Some(Segment {
            lo: if at == 0 { 0 } else { knot.pair.tsc },
            hi: if at == n - 2 {
                u64::MAX
            } else {
                self.knots[at + 1].pair.tsc
            },
            from: knot.pair,
            slope: knot.slope,
        })
    }
}

/// Nanoseconds per tick from `a` to `b` in 32.32 fixed point (`b` newer in both).
fn slope(a: TscPair, b: TscPair) -> u64 {
    let ns = u128::from(b.ns - a.ns) << 32;
    let ticks = u128::from(b.tsc - a.tsc);
    u64::try_from(ns / ticks).unwrap_or(u64::MAX)
}

/// `ticks` times a 32.32 slope, in nanoseconds (rounded down).
#[inline]
fn scale(ticks: u64, slope: u64) -> u64 {
    u64::try_from((u128::from(ticks) * u128::from(slope)) >> 32).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(tsc: u64, ns: u64) -> TscPair {
        TscPair { tsc, ns }
    }

    /// Base 10,000 ns; 2 ticks per ns up to tsc 3000, then 1 tick per ns.
    fn synthetic() -> TscClock {
        let mut clock = TscClock::new(10_000);
        for (tsc, ns) in [(1000, 11_000), (3000, 12_000), (7000, 16_000)] {
            assert!(clock.add(pair(tsc, ns)));
        }
        clock
    }

    #[test]
    fn interpolates_exactly_between_the_bracketing_pairs() {
        let mut clock = synthetic();
        assert_eq!(clock.to_ns(1000), 1000);
        assert_eq!(clock.to_ns(2000), 1500);
        assert_eq!(clock.to_ns(2999), 1999);
        assert_eq!(clock.to_ns(3000), 2000);
        assert_eq!(clock.to_ns(5000), 4000);
        assert_eq!(clock.to_ns(7000), 6000);
    }

    #[test]
    fn extrapolates_from_the_newest_two_and_the_oldest_two() {
        let mut clock = synthetic();
        // Newer than the newest: 1 tick per ns, as from 3000 to 7000.
        assert_eq!(clock.to_ns(9000), 8000);
        assert_eq!(clock.to_ns(1_000_007_000), 1_000_006_000);
        // Older than the oldest: 2 ticks per ns, as from 1000 to 3000.
        assert_eq!(clock.to_ns(600), 800);
        // Before the base: clamped at 0.
        assert_eq!(clock.to_ns(0), 500);
        let mut late_base = synthetic();
        late_base.base_ns = 10_900;
        assert_eq!(late_base.to_ns(600), 0);
        assert_eq!(late_base.to_ns(0), 0);
    }

    #[test]
    fn needs_two_pairs_and_ignores_pairs_that_go_back() {
        let mut clock = TscClock::new(0);
        assert_eq!(clock.to_ns(5), 0);
        assert!(clock.add(pair(100, 1000)));
        assert_eq!(clock.to_ns(150), 0);
        assert!(!clock.add(pair(100, 2000)), "same tsc");
        assert!(!clock.add(pair(200, 1000)), "same ns");
        assert!(!clock.add(pair(50, 3000)), "older tsc");
        assert!(clock.add(pair(200, 2000)));
        assert_eq!(clock.to_ns(150), 1500);
    }

    #[test]
    fn keeps_a_bounded_history() {
        let mut clock = TscClock::with_capacity(0, 3);
        for i in 1..=10 {
            clock.add(pair(i * 100, i * 1000));
        }
        assert_eq!(clock.len(), 3);
        assert_eq!(clock.newest(), Some(pair(1000, 10_000)));
        // Older than the oldest kept (800): extrapolated, 10 ns per tick.
        assert_eq!(clock.to_ns(100), 1000);
    }

    #[test]
    fn never_decreases_as_the_tsc_grows() {
        // Uneven rates and spans that do not divide evenly, so the fixed
        // point rounds.
        let mut clock = TscClock::new(1_000_000);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut tsc, mut ns) = (5_000_000u64, 3_000_000u64);
        for _ in 0..200 {
            tsc += 1 + next() % 3_000_000;
            ns += 1 + next() % 1_000_000;
            assert!(clock.add(pair(tsc, ns)));
        }
        let mut last = 0;
        let mut reading = 0u64;
        while reading < tsc + 10_000_000 {
            let converted = clock.to_ns(reading);
            assert!(
                converted >= last,
                "tsc {reading}: {converted} ns < {last} ns before"
            );
            last = converted;
            reading += 1 + next() % 20_000;
        }
    }

    #[test]
    fn rounding_stays_within_a_nanosecond() {
        let mut clock = TscClock::new(0);
        // 2.6 ticks per ns, spans that do not divide evenly.
        clock.add(pair(1_000_003, 7_000_001));
        clock.add(pair(27_000_011, 17_000_004));
        for tsc in [1_000_003u64, 1_000_004, 5_555_555, 27_000_010] {
            let exact = 7_000_001 + (tsc - 1_000_003) as u128 * 10_000_003 / 26_000_008;
            let got = u128::from(clock.to_ns(tsc));
            assert!(
                got <= exact && exact - got <= 1,
                "tsc {tsc}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn cpuinfo_flags_need_both_on_every_cpu() {
        let both = "processor\t: 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc rdtscp\n\n";
        assert!(cpuinfo_has_stable_tsc(both));
        assert!(cpuinfo_has_stable_tsc(&format!("{both}{both}")));
        let constant_only = "flags\t\t: fpu tsc constant_tsc\n";
        assert!(!cpuinfo_has_stable_tsc(constant_only));
        assert!(!cpuinfo_has_stable_tsc(&format!("{both}{constant_only}")));
        assert!(!cpuinfo_has_stable_tsc("flags\t\t: nonstop_tsc\n"));
        // A prefix of a flag is not the flag.
        assert!(!cpuinfo_has_stable_tsc(
            "flags\t\t: constant_tsc_x nonstop_tsc\n"
        ));
        assert!(!cpuinfo_has_stable_tsc("processor\t: 0\n"));
        assert!(!cpuinfo_has_stable_tsc(""));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn calibration_takes_a_pair_once_the_interval_is_over() {
        let mut clock = TscClock::new(0);
        assert!(!clock.can_convert());
        assert!(clock.calibrate(3_600_000_000_000), "the first pair, always");
        assert!(!clock.calibrate(3_600_000_000_000), "not an hour yet");
        assert!(!clock.can_convert());
        assert!(clock.calibrate(0));
        assert!(clock.can_convert());
        assert_eq!(clock.len(), 2);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn pairs_taken_now_grow_and_convert_back_to_their_time() {
        let first = TscPair::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = TscPair::now();
        assert!(second.tsc > first.tsc && second.ns > first.ns);
        let mut clock = TscClock::new(first.ns);
        assert!(clock.add(first) && clock.add(second));
        // A reading between them converts into the span between them.
        let middle = clock.to_ns(first.tsc + (second.tsc - first.tsc) / 2);
        assert!(middle > 0 && middle < second.ns - first.ns);
    }
}
