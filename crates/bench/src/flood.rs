//! `--work flood`: a synthetic producer that pushes access records straight
//! into a ring of the recorder's shared-memory file with `Shm::push`, the
//! runtime's own producer call, without faulting. It logs far faster than
//! the fault path can, so the recorder's drain alone sets the pace: the
//! `recorder-drain-*` rows: records as the fault path logs them.
//! `--work flood-tsc` pushes compact records (`Shm::push_compact`, one
//! 32-byte entry each, stamped with the raw TSC), as a patched site's fast
//! path does: the `recorder-drain-tsc-*` rows.
//!
//! # Safety
//!
//! This module maps the shared-memory file whose path `mmiotrace record`
//! passes in `MMIOTRACE_SHM`, and hands the mapping to `Shm::from_raw`. The
//! mapping is never unmapped (the process exits right after).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mmiotrace_shm::{
    ENV_SHM_PATH, PushResult, Record, Shm, TscPair, compact, kind, read_tsc, tsc_is_usable,
};

/// Pushes a `MAP` of `page` and then `events` 4-byte writes to it, the
/// values counting up, as compact records if `tsc`, one every
/// `pace_ns` nanoseconds if that is not 0 (paced by the TSC); returns the
/// events pushed and the seconds taken (the producer's own time, waits on a
/// full ring included).
pub fn flood(
    page: &std::path::Path,
    events: u64,
    tsc: bool,
    pace_ns: u64,
) -> anyhow::Result<(u64, f64, u64)> {
    let path = std::env::var_os(ENV_SHM_PATH)
        .context("--work flood runs under `mmiotrace record` (no MMIOTRACE_SHM)")?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.to_string_lossy()))?;
    let len = file.metadata()?.len() as usize;
    // SAFETY: a new shared mapping at an address the kernel chooses (no
    // MAP_FIXED), so nothing existing is replaced; the fd is open.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mmap of the shared-memory file");
    }
    // SAFETY: `base..base+len` maps the whole file read/write, shared, and
    // is never unmapped.
    let shm = unsafe { Shm::from_raw(base.cast(), len) }.map_err(|err| anyhow::anyhow!("{err}"))?;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let pid = std::process::id();
    let slot = shm.claim_slot(tid).context("no free ring slot")?;
    let map_id = shm.next_map_id();
    let canonical = std::fs::canonicalize(page)?;
    let map = Record {
        kind: kind::MAP,
        width: 0,
        map_id,
        tid,
        pid,
        offset: 0,
        value: 4096,
        pc: 0,
        aux: 0x7f00_0000_0000,
        ..Record::default()
    };
    let mut path_bytes = canonical.as_os_str().as_encoded_bytes().to_vec();
    path_bytes.push(0);
    ensure!(
        matches!(shm.push(slot, map, &path_bytes), PushResult::Pushed),
        "the recorder took no MAP record"
    );
    // TSC ticks per event, in 48.16 fixed point.
    let pace = if pace_ns > 0 {
        ensure!(
            tsc_is_usable(),
            "pacing needs a usable TSC (constant_tsc and nonstop_tsc)"
        );
        let (first, since) = (TscPair::now(), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let last = TscPair::now();
        let ticks_per_ns = (last.tsc - first.tsc) as f64 / since.elapsed().as_nanos() as f64;
        (ticks_per_ns * pace_ns as f64 * 65536.0) as u64
    } else {
        0
    };
    let full_waits_before = shm.full_waits();
    let start = Instant::now();
    let start_tsc = read_tsc();
    for i in 0..events {
        if pace != 0 {
            let due = start_tsc + ((u128::from(i) * u128::from(pace)) >> 16) as u64;
            while read_tsc() < due {
                std::hint::spin_loop();
            }
        }
        let (offset, value, pc) = ((i % 1024) * 4, i & 0xffff_ffff, 0x40_1000 + (i % 4) * 2);
        let pushed = if tsc {
            // As a patched site's fast path logs it (its thread's MAP
            // record above came first, with the ids).
            let key = compact::key(map_id, offset).context("a map id that fits")?;
            shm.push_compact(
                slot,
                compact::head(true, 4, 0, pc),
                key,
                &(value as u32).to_le_bytes(),
            )
        } else {
            let record = Record {
                kind: kind::WRITE,
                width: 4,
                map_id,
                tid,
                pid,
                offset,
                value,
                pc,
                ..Record::default()
            };
            shm.push(slot, record, &[])
        };
        match pushed {
            PushResult::Pushed => {}
            other => bail!("push {i} of {events}: {other:?}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let waits = shm.full_waits() - full_waits_before;
    shm.release_slot(slot);
    Ok((events, secs, waits))
}
