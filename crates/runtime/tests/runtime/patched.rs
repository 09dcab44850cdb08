//! Patched access sites (docs/ARCHITECTURE.md, "Patched sites"): every
//! site of `tests/programs/patch.c` runs often enough to be patched, on
//! plain memory and on a traced mapping; registers, flags and the exact
//! trace must be those of the fault path, and the sites' report must show
//! that the accesses after the first few made no exception.

use std::process::Command;

use mmiotrace_shm::{RECORD_FLAG_FAST_PATH, RECORD_FLAG_TSC, kind, payload_text};

const PATCH_AFTER: usize = 4;

fn run(mode: &str, patch: &str) -> crate::common::Run {
    let run = record_on_device(
        "patch",
        &format!("patch-{mode}-{patch}"),
        4096,
        &[mode],
        patch,
    );
    assert!(
        !run.stdout.contains("FAIL"),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run
}

/// Test program `name` with the path of a new traced file of `len`
/// bytes and `args`, recorded with `MMIOTRACE_PATCH=patch` and a ring of
/// 65,536 records: it must succeed, and nothing may be lost.
fn record_on_device(
    name: &str,
    tag: &str,
    len: usize,
    args: &[&str],
    patch: &str,
) -> crate::common::Run {
    let program = crate::common::compile(name, &[]);
    let dev = crate::common::TempShmFile::new(tag, len);
    let mut command = Command::new(&program);
    command.arg(&dev.0).args(args).env("MMIOTRACE_PATCH", patch);
    let glob = dev.0.to_str().expect("utf8 path").to_owned();
    let mut config = crate::common::small_config();
    config.ring_entries = 1 << 16;
    let run = crate::common::record(command, &[&glob], config);
    run.assert_success();
    assert_eq!(run.lost, 0);
    run
}

/// The sites' report (MARK records): (pc, what, faults).
fn sites(run: &crate::common::Run) -> Vec<(u64, String, usize)> {
    run.records
        .iter()
        .filter(|p| p.record.kind == kind::MARK)
        .filter_map(|p| {
            let text = String::from_utf8_lossy(payload_text(&p.payload)).into_owned();
            let rest = text.strip_prefix("mmiotrace: patch: site 0x")?;
            let (pc, rest) = rest.split_once(": ")?;
            let (what, faults) = rest.rsplit_once(", ")?;
            let faults = faults.strip_suffix(" faults")?.parse().ok()?;
            Some((u64::from_str_radix(pc, 16).ok()?, what.to_owned(), faults))
        })
        .collect()
}

fn events(run: &crate::common::Run) -> Vec<String> {
    run.accesses()
        .map(|p| {
            let r = &p.record;
            // Every field the fast path writes, but the time's encoding.
            assert_eq!(
                (
                    r.map_id,
                    r.flags & !(RECORD_FLAG_TSC | RECORD_FLAG_FAST_PATH),
                    r.ext,
                    r.aux,
                    r.tid
                ),
                (1, 0, 0, 0, r.pid),
                "{r:?}"
            );
            let dir = if r.kind == kind::READ { 'R' } else { 'W' };
            format!("{dir} {} {:x} {:x}", r.width, r.offset, r.value)
        })
        .collect()
}

/// The accesses the trampolines' fast path logged.
fn fast_path_records(run: &crate::common::Run) -> Vec<&mmiotrace_shm::Record> {
    run.accesses()
        .map(|p| &p.record)
        .filter(|r| r.flags & RECORD_FLAG_FAST_PATH != 0)
        .collect()
}

#[test]
fn every_patched_form_matches_the_fault_path_exactly() {
    let patched = run("sites", "on");
    let expected: Vec<String> = patched
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("E "))
        .map(str::to_owned)
        .collect();
    assert_eq!(events(&patched), expected, "stderr:\n{}", patched.stderr);
    let report = sites(&patched);
    // 16 instruction sites of 5 bytes or more, the shared site, r12-based,
    // and 3 short ones (2 to 4 bytes), patched by punning where a
    // trampoline can be mapped in reach of their jump: always for 3 and 4
    // bytes here (a 64 KiB or 16 MiB window far from anything mapped), not
    // always for 2 (256 bytes).
    assert_eq!(report.len(), 20, "{report:?}");
    let done: Vec<_> = report.iter().filter(|s| s.1 == "patched").collect();
    assert!(done.len() >= 19, "{report:?}");
    // Patched after its first faults: the other 16 accesses made none.
    assert!(done.iter().all(|s| s.2 == PATCH_AFTER), "{report:?}");
    // A short site with no trampoline in reach faults every time.
    assert!(
        report
            .iter()
            .filter(|s| s.1 != "patched")
            .all(|s| s.1.contains("too short") && s.2 == 20),
        "{report:?}"
    );
    // Every access of a site is logged with its pc.
    let pcs: std::collections::BTreeSet<u64> = report.iter().map(|s| s.0).collect();
    assert!(patched.accesses().all(|p| pcs.contains(&p.record.pc)));

    // The fast path logged most of them: each site's first run of its
    // trampoline takes the general path (it learns the site's range).
    let fast = fast_path_records(&patched);
    assert!(fast.len() >= 19 * 14, "{} by the fast path", fast.len());
    // Their raw TSC times grow with their sequence numbers.
    assert!(fast.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));

    // Patched without the fast path: the same trace, none of it fast.
    let general = run("sites", "general");
    assert_eq!(events(&general), expected);
    assert_eq!(fast_path_records(&general).len(), 0);
    assert_eq!(sites(&general).len(), report.len());

    // The same program with patching off: the same trace, and no report.
    let unpatched = run("sites", "off");
    assert_eq!(events(&unpatched), expected);
    assert_eq!(sites(&unpatched), []);
}

#[test]
fn eight_threads_run_a_site_while_it_is_patched() {
    let run = run("threads", "on");
    let mut per_thread: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    for p in run.accesses() {
        assert_eq!(p.record.kind, kind::WRITE);
        assert_eq!(p.record.offset, (p.record.value >> 24) * 64);
        per_thread
            .entry(p.record.tid)
            .or_default()
            .push(p.record.value);
    }
    assert_eq!(per_thread.len(), 8);
    for values in per_thread.values() {
        let id = values[0] >> 24;
        let want: Vec<u64> = (0..4000).map(|i| id << 24 | i).collect();
        assert_eq!(values, &want, "thread {id}: every store once, in order");
    }
    let report = sites(&run);
    assert_eq!(report.len(), 1, "{report:?}");
    // Patched while the threads ran. Which threads faulted first depends
    // on the scheduler, but not the bound: PATCH_AFTER - 1 faults leave
    // the site unpatched, and each thread faults at most once more, as the
    // patch's trigger, while it is under way (it waits for it to end), or
    // at its first run of the trampoline without a ring slot (the fault
    // path claims it one). Once each.
    assert_eq!(report[0].1, "patched");
    assert!(report[0].2 <= PATCH_AFTER - 1 + 8, "{report:?}");
}

#[test]
fn a_forked_child_keeps_the_patched_site_and_logs_as_itself() {
    let run = run("fork", "on");
    let values: Vec<(u32, u64, u64)> = run
        .accesses()
        .map(|p| (p.record.pid, p.record.offset, p.record.value))
        .collect();
    assert_eq!(values.len(), 30);
    let parent = values[0].0;
    let child: Vec<_> = values.iter().filter(|v| v.0 != parent).collect();
    let want_child: Vec<(u64, u64)> = (0..10).map(|i| (4, 0x200 + i)).collect();
    assert_eq!(
        child.iter().map(|v| (v.1, v.2)).collect::<Vec<_>>(),
        want_child
    );
    let want_parent: Vec<(u64, u64)> = (0..10)
        .map(|i| (0, 0x100 + i))
        .chain((0..10).map(|i| (8, 0x300 + i)))
        .collect();
    assert_eq!(
        values
            .iter()
            .filter(|v| v.0 == parent)
            .map(|v| (v.1, v.2))
            .collect::<Vec<_>>(),
        want_parent
    );
    // Parent and child each report the site: patched, with no fault
    // after the first ones in the parent, and one in the child: its first
    // access, whose thread has no ring slot yet (a trampoline never claims
    // one), takes the fault path.
    let mut report: Vec<usize> = sites(&run)
        .iter()
        .filter(|s| s.1 == "patched")
        .map(|s| s.2)
        .collect();
    report.sort();
    assert_eq!(report, [PATCH_AFTER, PATCH_AFTER + 1]);
}

#[test]
fn a_site_is_patched_from_a_handler_on_a_small_alternate_stack() {
    // Patching needs more stack than 12 KiB less a signal frame: it runs
    // on a stack of its own.
    let run = run("altstack", "on");
    let values: Vec<u64> = run.accesses().map(|p| p.record.value).collect();
    assert_eq!(values, (0..20).map(|i| 0x400 + i).collect::<Vec<u64>>());
    let report = sites(&run);
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].1, "patched", "{report:?}");
}

#[test]
fn a_short_site_before_a_hot_one_waits_so_that_both_are_patched() {
    // Patched first, the short site's jump would borrow the long one's
    // first byte, which could then never become its jump.
    let run = run("neighbours", "on");
    let values: Vec<(u64, u64)> = run
        .accesses()
        .map(|p| (p.record.offset, p.record.value))
        .collect();
    let want: Vec<(u64, u64)> = (0..20)
        .flat_map(|i| [(8, 0x500 + i), (0x10, 0x500 + i)])
        .collect();
    assert_eq!(values, want);
    let report = sites(&run);
    assert_eq!(report.len(), 2, "{report:?}");
    assert!(report.iter().all(|s| s.1 == "patched"), "{report:?}");
}

#[test]
fn a_genuine_fault_at_a_patched_site_reaches_the_programs_handler_as_unpatched() {
    // The program's SIGSEGV handler sees the same pc and address before
    // the site is patched and after (the program checks, and fails).
    let run = run("genuine", "on");
    let report = sites(&run);
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].1, "patched", "{report:?}");
    let pc = report[0].0;
    assert!(
        run.stdout
            .contains(&format!("genuine fault at pc {pc:x}\n")),
        "{}",
        run.stdout
    );
}

#[test]
fn stores_through_a_patched_site_while_the_mapping_is_replaced_100_times() {
    // Each mapping is a new range (and may take a freed table entry);
    // a site's cached entry must never send a store to an old alias.
    let run = run("remap", "on");
    let mut per_thread: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    let mut maps = std::collections::BTreeSet::new();
    for p in run.accesses() {
        let r = &p.record;
        assert_eq!(r.kind, kind::WRITE);
        assert_eq!(r.offset, (r.value >> 24) * 64, "{r:?}");
        maps.insert(r.map_id);
        per_thread
            .entry(r.value >> 24)
            .or_default()
            .push(r.value & 0xff_ffff);
    }
    assert_eq!(per_thread.len(), 4);
    for (id, values) in &per_thread {
        let want: Vec<u64> = (0..values.len() as u64).collect();
        assert!(values == &want, "thread {id}: every store once, in order");
    }
    // Stores to most of the 101 mappings.
    assert!(maps.len() > 50, "{} mappings stored to", maps.len());
    let report = sites(&run);
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].1, "patched", "{report:?}");
    assert!(!fast_path_records(&run).is_empty());
}

/// glibc's own `memcpy` (an unmodified library routine; with AVX-512,
/// 64-byte EVEX stores from ZMM16 and up, which the fast path performs
/// whole) of 256-byte blocks into a traced mapping: its store sites are
/// patched after their first faults, nearly every store is logged by the
/// fast path, and the trace, replayed, rebuilds exactly the program's
/// image of what it copied.
#[test]
fn glibc_memcpy_into_a_traced_mapping_is_patched_and_logged_exactly() {
    let run = record_on_device("memcpy", "memcpy", 16 * 4096, &["256", "2000"], "on");
    let mut image = vec![0u8; 16 * 4096];
    let mut written = 0usize;
    for popped in run.accesses() {
        let r = &popped.record;
        assert_eq!(r.kind, kind::WRITE, "{r:?}");
        let width = usize::from(r.width);
        let value = if width <= 8 {
            r.value.to_le_bytes()[..width].to_vec()
        } else {
            popped.payload[..width].to_vec()
        };
        let at = r.offset as usize;
        image[at..at + width].copy_from_slice(&value);
        written += width;
    }
    let hash = image.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    assert!(
        run.stdout.contains(&format!("IMAGE {hash:016x}")),
        "the trace rebuilds image {hash:016x}; the program says {}",
        run.stdout
    );
    assert!(written >= 256 * 2000, "{written} bytes written");
    let patched = sites(&run)
        .iter()
        .filter(|(_, what, _)| what == "patched")
        .count();
    assert!(patched >= 1, "sites: {:?}", sites(&run));
    let stores = run.accesses().count();
    let fast = fast_path_records(&run).len();
    assert!(
        fast * 10 >= stores * 9,
        "{fast} of {stores} stores by the fast path; sites: {:?}",
        sites(&run)
    );
}

/// Three threads store through one patched site while the main thread
/// takes write permission from the traced mapping and gives it back 300
/// times: each store either reaches the device and the trace, or faults
/// genuinely into the program's handler, which skips it; the counts add
/// up, the values logged are each thread's in order, and nothing hangs.
/// The same on the fault path (patching off).
#[test]
fn stores_through_a_patched_site_while_write_permission_comes_and_goes() {
    for patch in ["on", "off"] {
        write_permission_comes_and_goes(patch);
    }
}

fn write_permission_comes_and_goes(patch: &str) {
    let tag = format!("mprotect-race-{patch}");
    let run = record_on_device("mprotect_race", &tag, 4096, &[], patch);
    assert!(run.stdout.contains("DONE"), "{}", run.stdout);
    let mut faulted_somewhere = false;
    for line in run.stdout.lines().filter(|l| l.starts_with("T ")) {
        let numbers: Vec<u64> = line[2..]
            .split(' ')
            .map(|n| n.parse().expect("number"))
            .collect();
        let (thread, attempts, faults) = (numbers[0], numbers[1], numbers[2]);
        faulted_somewhere |= faults > 0;
        let values: Vec<u64> = run
            .accesses()
            .map(|p| &p.record)
            .filter(|r| r.kind == kind::WRITE && r.offset == 0x100 + 8 * thread)
            .map(|r| r.value)
            .collect();
        assert_eq!(
            values.len() as u64 + faults,
            attempts,
            "patching {patch}, thread {thread}: {} stores logged, {faults} faulted, {attempts} made",
            values.len()
        );
        assert!(
            values
                .windows(2)
                .all(|w| (w[0] & 0xff_ffff) < (w[1] & 0xff_ffff) && w[0] >> 24 == thread),
            "patching {patch}, thread {thread}: values out of order"
        );
    }
    assert!(faulted_somewhere, "no store met a read-only mapping");
    if patch == "off" {
        assert!(fast_path_records(&run).is_empty());
        return;
    }
    let patched = sites(&run).iter().any(|(_, what, _)| what == "patched");
    assert!(patched, "sites: {:?}", sites(&run));
    assert!(
        !fast_path_records(&run).is_empty(),
        "no store went through the fast path"
    );
}

/// 256 short stores, four in a row in each of 64 functions: every one is
/// patched (each punned jump lands on an entry stub in its window, and a
/// stub leaves the store before it a window clear of the code), and the
/// trace is the fault path's, store for store.
#[test]
fn runs_of_short_stores_are_all_patched() {
    let patched = record_on_device("short_pairs", "short-pairs-on", 4096, &[], "on");
    let fault_path = record_on_device("short_pairs", "short-pairs-off", 4096, &[], "off");
    let report = sites(&patched);
    let done = report
        .iter()
        .filter(|(_, what, _)| what == "patched")
        .count();
    assert_eq!(done, 256, "sites: {report:?}");
    assert_eq!(events(&patched), events(&fault_path));
    assert_eq!(events(&patched).len(), 256 * 100);
    let fast = fast_path_records(&patched).len();
    assert!(fast >= 256 * 90, "{fast} stores by the fast path");
}

/// glibc's `memcpy` of 7 bytes: two overlapping 4-byte stores, of 2 and
/// 3 bytes of code, the first right before the second: both patched.
#[test]
fn glibc_memcpy_of_seven_bytes_is_patched_store_for_store() {
    let run = record_on_device("memcpy", "memcpy-7", 16 * 4096, &["7", "2000"], "on");
    let report = sites(&run);
    assert!(
        report.iter().all(|(_, what, _)| what == "patched") && !report.is_empty(),
        "sites: {report:?}"
    );
    assert_eq!(run.accesses().count(), 2 * 2000);
}
