//! `mmiotrace record --hook`, `--hook-lib` and `--model` (docs/HOOKS.md):
//! the example NIC's driver (crates/example-nic) under injected faults,
//! shown taking its real error paths; a device model in place of its
//! simulated device; counts that stay exact under 8 threads; rule files
//! refused with FILE:LINE:COL before the program starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use mmiotrace_trace::{Access, Direction, Event, Hooked, Item, ReadOptions, TraceReader};

use crate::common::programs::{Scratch, program};
use crate::common::{regdb_data, stderr_text};

const MMIOTRACE: &str = env!("CARGO_BIN_EXE_mmiotrace");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `example-nic` binary of this build profile, built if needed (it is
/// another package's binary, which this crate's tests cannot name).
fn example_nic() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/PROFILE/deps");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args([
            "build",
            "-q",
            "-p",
            "mmiotrace-example-nic",
            "--bin",
            "example-nic",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            build.env("CARGO_TARGET_DIR", target);
        }
        let status = build.current_dir(repo()).status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p mmiotrace-example-nic failed"
        );
        profile_dir.join("example-nic")
    })
}

/// A shared library built from one source file, once per test binary.
fn plugin(name: &str, build: impl FnOnce(&Path) -> Command) -> PathBuf {
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}.so", std::process::id()));
    if !out.exists() {
        let result = build(&out).output().expect("run the compiler");
        assert!(
            result.status.success(),
            "building {name}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
    out
}

/// The NIC model plugin in Rust (crates/example-nic/model/nic_model.rs).
fn nic_model() -> PathBuf {
    plugin("nic_model", |out| {
        let mut rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
        rustc
            .args([
                "--edition",
                "2024",
                "--crate-type",
                "cdylib",
                "-C",
                "panic=abort",
                "-O",
            ])
            .arg(repo().join("crates/example-nic/model/nic_model.rs"))
            .arg("-o")
            .arg(out);
        rustc
    })
}

/// The C plugin of examples/hooks/stuck_bits.c.
fn stuck_bits() -> PathBuf {
    plugin("stuck_bits", |out| {
        let mut cc = Command::new("cc");
        cc.args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I"])
            .arg(repo().join("include"))
            .arg(repo().join("examples/hooks/stuck_bits.c"))
            .arg("-o")
            .arg(out);
        cc
    })
}

/// One run of the example NIC under `mmiotrace record`.
struct NicRun {
    out: Output,
    trace: Vec<Event>,
    text: String,
}

impl NicRun {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        stderr_text(&self.out)
    }

    fn accesses(&self) -> Vec<&Access> {
        self.trace
            .iter()
            .filter_map(|event| match event {
                Event::Access(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn hooked(&self) -> Vec<&Access> {
        self.accesses()
            .into_iter()
            .filter(|a| a.ext.hook.is_some())
            .collect()
    }

    /// The trace's lines that a hook marked, for failure messages.
    fn hooked_lines(&self) -> String {
        self.text
            .lines()
            .filter(|line| line.contains(" hook="))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs the NIC driver under `record` with `rules` as the hook file, and
/// the options `extra`.
fn run_nic(test: &str, rules: Option<&str>, extra: &[&str], nic_args: &[&str]) -> NicRun {
    let scratch = Scratch::new(test);
    let trace = scratch.path("nic.trace");
    let bar = scratch.path("nic.bar");
    let mut cmd = Command::new(MMIOTRACE);
    cmd.arg("record")
        .arg("-o")
        .arg(&trace)
        .args(["--trace", &scratch.glob()])
        .arg("--regs")
        .arg(regdb_data("example-nic.toml"))
        .args(extra);
    if let Some(rules) = rules {
        let file = scratch.path("hooks.toml");
        std::fs::write(&file, rules).expect("write the rules");
        cmd.arg("--hook").arg(file);
    }
    let out = cmd
        .arg("--")
        .arg(example_nic())
        .arg("--bar")
        .arg(&bar)
        .args(nic_args)
        .output()
        .expect("run mmiotrace record");
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let trace = TraceReader::new(
        text.as_bytes(),
        ReadOptions::default().with_fatal_truncation(true),
    )
    .expect("a trace")
    .map(|item| match item.expect("the trace parses") {
        Item::Event(event) => event,
        Item::Truncated(t) => panic!("{t}"),
    })
    .collect();
    NicRun { out, trace, text }
}

const EERD_DATA: u64 = 0x16;
const STATUS: u64 = 0x8;
const ICR: u64 = 0xc0;
const TDT: u64 = 0x3818;
const TX_STATUS0: u64 = 0x1_000c;

#[test]
fn an_eeprom_checksum_error_is_reported_and_the_driver_fails() {
    let run = run_nic(
        "eeprom",
        Some(
            "# The 4th EEPROM word comes back with bit 0 flipped.\n\
             [[rule]]\nname = \"bad-eeprom-word\"\nregister = \"EERD\"\nwidth = 2\ndir = \"r\"\nnth = 4\nflip = 0x1\n",
        ),
        &[],
        &[],
    );
    assert_eq!(run.out.status.code(), Some(1), "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("example-nic: error: EEPROM checksum is 0xbabb, expected 0xbaba"),
        "{}",
        run.stderr()
    );
    let hooked = run.hooked();
    assert_eq!(hooked.len(), 1, "{}", run.hooked_lines());
    let read = hooked[0];
    assert_eq!(
        (read.dir, read.phys, read.width()),
        (Direction::Read, EERD_DATA, 2)
    );
    // The driver saw 0x1 where the EEPROM gave 0x0.
    assert_eq!(read.value.low_u64(), 0x1);
    assert_eq!(
        read.ext.hook,
        Some(Hooked {
            rule: 1,
            device: Some(0x0)
        })
    );
    assert!(
        run.text.contains("MARK "),
        "the rules are named in the trace"
    );
    assert!(
        run.text.contains(" hook 1 bad-eeprom-word ("),
        "{}",
        &run.text[..run.text.len().min(600)]
    );
    assert!(
        run.stderr().contains("matched 16, acted on 1"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_link_that_never_comes_up_times_out() {
    let run = run_nic(
        "link",
        Some("[[rule]]\nname = \"link-down\"\nregister = \"STATUS\"\ndir = \"r\"\nclear = 0x2\n"),
        &[],
        &[],
    );
    assert_eq!(run.out.status.code(), Some(1), "{}", run.stderr());
    assert!(
        run.stderr().contains(
            "example-nic: error: timed out after 2s waiting for link up (STATUS.LU) (STATUS = 0x00000081)"
        ),
        "{}",
        run.stderr()
    );
    let status_reads: Vec<_> = run
        .accesses()
        .into_iter()
        .filter(|a| a.phys == STATUS && a.dir == Direction::Read)
        .collect();
    assert!(
        status_reads
            .iter()
            .all(|a| a.ext.hook.is_some_and(|h| h.rule == 1))
    );
    assert!(status_reads.iter().all(|a| a.value.low_u64() & 0x2 == 0));
    // The device did bring the link up: the driver just never saw it.
    assert!(
        status_reads.iter().any(|a| a
            .ext
            .hook
            .and_then(|h| h.device)
            .is_some_and(|d| d & 0x2 != 0)),
        "{}",
        run.hooked_lines()
    );
}

#[test]
fn a_device_removed_in_the_middle_of_transmission_stops_the_driver() {
    // TDT's first write sets the ring up; its second rings the doorbell.
    let run = run_nic(
        "removal",
        Some(
            "[[rule]]\nname = \"surprise-removal\"\nregister = \"TDT\"\ndir = \"w\"\nnth = 2\nremove = true\n",
        ),
        &[],
        &[],
    );
    assert_eq!(run.out.status.code(), Some(1), "{}", run.stderr());
    assert!(
        run.stderr().contains(
            "example-nic: error: device removed: ICR reads all ones while waiting for the TX-done interrupt (ICR.TXDW)"
        ),
        "{}",
        run.stderr()
    );
    let accesses = run.accesses();
    let doorbell = accesses
        .iter()
        .position(|a| a.ext.hook.is_some())
        .expect("a hooked access");
    assert_eq!(
        (accesses[doorbell].dir, accesses[doorbell].phys),
        (Direction::Write, TDT)
    );
    assert_eq!(
        accesses[doorbell].ext.hook,
        Some(Hooked {
            rule: 1,
            device: None
        })
    );
    // Then one read, all ones, and the driver stops: no spinning.
    let after = &accesses[doorbell + 1..];
    assert_eq!(after.len(), 1, "{}", run.hooked_lines());
    assert_eq!(
        (after[0].phys, after[0].value.low_u64()),
        (ICR, 0xffff_ffff)
    );
    assert_eq!(
        after[0].ext.hook,
        Some(Hooked {
            rule: 1,
            device: None
        })
    );
}

#[test]
fn an_early_tx_done_interrupt_is_not_trusted() {
    // ICR's first read is the probe's ack; the second is the first of the
    // TX wait: it says TX done. The simulated device runs in a thread of
    // its own and may really have sent by then, so the descriptors' first
    // looks say "not yet" too (DD clear, once each): the interrupt is early
    // whatever the timing, and the driver must wait for each DD.
    let mut rules = String::from(
        "[[rule]]\nname = \"early-txdw\"\nregister = \"ICR\"\ndir = \"r\"\nafter = 1\ntimes = 1\nset = 0x1\n",
    );
    for index in 0..3 {
        rules.push_str(&format!(
            "[[rule]]\nname = \"not-yet-{index}\"\noffset = {:#x}\ndir = \"r\"\nnth = 1\nclear = 0x1\n",
            TX_STATUS0 + index * 16
        ));
    }
    let run = run_nic("early", Some(&rules), &[], &[]);
    assert_eq!(run.out.status.code(), Some(0), "{}", run.stderr());
    let stdout = run.stdout();
    assert!(
        stdout.contains("  sent         3 packets, 180 bytes"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  warning      the TX-done interrupt came before the device had sent 3 of them; the driver waited for each"
        ),
        "{stdout}"
    );
    let accesses = run.accesses();
    let early = accesses
        .iter()
        .position(|a| a.ext.hook.is_some())
        .expect("a hooked access");
    let icr = accesses[early];
    assert_eq!(icr.phys, ICR);
    assert_eq!(icr.value.low_u64() & 1, 1, "the driver saw TXDW");
    // The device's own value is recorded beside it. Whether it had said
    // TXDW yet depends on its thread (it failed here once, on a loaded
    // machine, when the device had already sent): not asserted.
    assert!(
        icr.ext.hook.and_then(|h| h.device).is_some(),
        "the device's own value is recorded"
    );
    // The driver then looked at descriptor 0's DD before going on.
    assert_eq!(accesses[early + 1].phys, TX_STATUS0);
    // The ICR read and each descriptor's first look.
    assert_eq!(run.hooked().len(), 4, "{}", run.hooked_lines());
}

#[test]
fn a_plugin_model_replaces_the_simulated_device() {
    let model = nic_model();
    let run = run_nic(
        "model",
        None,
        &["--model", model.to_str().expect("UTF-8 path")],
        &["--no-device"],
    );
    assert_eq!(run.out.status.code(), Some(0), "{}", run.stderr());
    let stdout = run.stdout();
    for line in [
        "  MAC address  52:54:00:12:34:56 (EEPROM checksum ok)",
        "  PHY          id 0x01410c20 at MDIO address 1",
        "  link         up, 1000 Mb/s, full duplex",
        "  sent         3 packets, 180 bytes (interrupt causes: TXDW LSC)",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    // The model is the device: its answers are not marked as changes.
    assert!(run.hooked().is_empty(), "{}", run.hooked_lines());
    // And without it, nothing answers: the driver sees a dead device.
    let bare = run_nic("model-bare", None, &[], &["--no-device"]);
    assert_eq!(bare.out.status.code(), Some(1), "{}", bare.stderr());
}

#[test]
fn a_c_plugin_keeps_the_mdio_ready_bit_clear_and_mdio_times_out() {
    let scratch = Scratch::new("stuck");
    let trace = scratch.path("nic.trace");
    let out = Command::new(MMIOTRACE)
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .args(["--trace", &scratch.glob(), "--hook-lib"])
        .arg(stuck_bits())
        .env("STUCK_OFFSET", "0x20")
        .env("STUCK_MASK", "0x10000000")
        .arg("--")
        .arg(example_nic())
        .arg("--bar")
        .arg(scratch.path("nic.bar"))
        .output()
        .expect("run mmiotrace record");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    assert!(
        stderr_text(&out).contains(
            "example-nic: error: timed out after 500ms waiting for PHY register 2 (MDIC = 0x08220141)"
        ),
        "{}",
        stderr_text(&out)
    );
    let text = std::fs::read_to_string(&trace).expect("the trace");
    let marked: Vec<&str> = text.lines().filter(|l| l.contains(" hook=0 ")).collect();
    assert!(!marked.is_empty());
    assert!(
        marked
            .iter()
            .all(|l| l.contains(" 0x20 0x8220141 ") && l.ends_with(" hook=0 dev=0x18220141")),
        "{}",
        marked[..marked.len().min(5)].join("\n")
    );
}

#[test]
fn hook_counts_are_exact_across_eight_threads() {
    let scratch = Scratch::new("threads");
    let bar = scratch.bar("regs", 4096);
    let rules = scratch.path("hooks.toml");
    std::fs::write(
        &rules,
        "[[rule]]\noffset = 0\nnth = 3\nvalue = 0x33\n\n\
         [[rule]]\noffset = 8\nafter = 100\ntimes = 50\nset = 0x1\n",
    )
    .expect("write rules");
    let trace = scratch.path("t.trace");
    let (threads, iterations) = (8, 2000);
    let out = Command::new(MMIOTRACE)
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .args(["--trace", &scratch.glob(), "--hook"])
        .arg(&rules)
        .arg("--")
        .arg(program("hookreads"))
        .arg(&bar)
        .arg(threads.to_string())
        .arg(iterations.to_string())
        .output()
        .expect("run mmiotrace record");
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "nonzero0=1 nonzero8=50\n"
    );
    let stderr = stderr_text(&out);
    let total = threads * iterations;
    assert!(
        stderr.contains(&format!("matched {total}, acted on 1")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("matched {total}, acted on 50")),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&trace).expect("the trace");
    assert_eq!(text.matches(" hook=1 dev=none").count(), 1);
    assert_eq!(text.matches(" hook=2 dev=0x0").count(), 50);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("R ")).count(),
        2 * total
    );
}

/// `record` with a rule file that it must refuse before PROGRAM runs.
fn refused(rules: &str, extra: &[&str]) -> String {
    let scratch = Scratch::new("refused");
    let file = scratch.path("hooks.toml");
    std::fs::write(&file, rules).expect("write rules");
    let witness = scratch.path("ran");
    let trace = scratch.path("t.trace");
    let out = Command::new(MMIOTRACE)
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .arg("--hook")
        .arg(&file)
        .args(extra)
        .args(["--", "touch"])
        .arg(&witness)
        .output()
        .expect("run mmiotrace record");
    assert_eq!(out.status.code(), Some(1));
    assert!(!witness.exists(), "the program ran");
    assert!(!trace.exists(), "the trace was created");
    let file = file.display().to_string();
    stderr_text(&out).replace(&file, "hooks.toml")
}

#[test]
fn bad_rule_files_are_refused_with_file_line_and_column_before_the_program_starts() {
    let regs = regdb_data("example-nic.toml");
    let regs = ["--regs", regs.to_str().expect("UTF-8 path")];
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "[[rule]]\noffset = 8\ndir = \"sideways\"\npass = true\n",
            &[],
            "hooks.toml:3:7: dir is \"r\" (or \"read\") or \"w\" (or \"write\"), not \"sideways\"",
        ),
        (
            "[[rule]]\noffset = 8\nvaleu = 3\n",
            &[],
            "hooks.toml:3:1: unknown field `valeu`",
        ),
        (
            "[[rule]]\noffset = 8\n",
            &[],
            "hooks.toml:1:1: this rule does nothing: give it one action",
        ),
        (
            "[[rule]]\noffset = 8\nvalue = 1\ndrop = true\n",
            &[],
            "hooks.toml:4:8: a rule has one action; this one has value and drop",
        ),
        (
            "[[rule]]\nregister = \"STATUS\"\npass = true\n",
            &[],
            "hooks.toml:2:12: register = \"STATUS\" needs a register database: --regs FILE",
        ),
        (
            "[[rule]]\nregister = \"STATSU\"\npass = true\n",
            &regs,
            "hooks.toml:2:12: no register \"STATSU\" in example-nic",
        ),
        (
            "[[rule]]\noffset = 0x14\nwidth = 2\nvalue = 0x12345\n",
            &[],
            "hooks.toml:4:9: 0x12345 does not fit in 2 bytes (width = 2)",
        ),
        (
            "[[rule]]\noffset = 0\ndelay = \"5 minutes\"\n",
            &[],
            "hooks.toml:3:9: delay: \"5 minutes\" is not a duration (a number and ns, us, ms or s)",
        ),
        (
            "[[rule]]\noffset = 0\ndrop = true\n",
            &[],
            "hooks.toml:3:8: drop applies to writes: add dir = \"w\"",
        ),
        (
            "[[rule]]\noffset = 0\nnth = 0\npass = true\n",
            &[],
            "hooks.toml:3:7: nth counts from 1 (the first matching access)",
        ),
        (
            "[[rule]]\nrange = [0x10, 0x8]\npass = true\n",
            &[],
            "hooks.toml:2:16: the range's END must be greater than its START",
        ),
        ("[[rule]\n", &[], "hooks.toml:1:8: "),
    ];
    for (rules, extra, expected) in cases {
        let stderr = refused(rules, extra);
        assert!(
            stderr.starts_with(&format!("mmiotrace: error: {expected}")),
            "rules:\n{rules}\nexpected: {expected}\ngot: {stderr}"
        );
    }
}

#[test]
fn a_sigbus_rule_kills_the_program_as_a_bus_error_would() {
    let run = run_nic(
        "sigbus",
        // Every read of STATUS: Rust's own SIGBUS handler (for stack
        // overflows) resets the disposition and returns, so the read runs
        // again, as after a real bus error, and the second SIGBUS kills.
        Some("[[rule]]\nregister = \"STATUS\"\nsigbus = true\n"),
        &[],
        &[],
    );
    // 128 + SIGBUS (7), as the shell reports a program killed by it.
    assert_eq!(run.out.status.code(), Some(135), "{}", run.stderr());
    assert!(
        run.stderr().contains("was killed by signal 7"),
        "{}",
        run.stderr()
    );
    assert!(
        run.accesses().iter().all(|a| a.phys != STATUS),
        "the read was not made"
    );
    assert!(
        run.stderr().contains("matched 2, acted on 2"),
        "{}",
        run.stderr()
    );
}

#[test]
fn filter_and_stats_select_hooked_accesses() {
    let run = run_nic(
        "select",
        Some(
            "[[rule]]\nregister = \"ICR\"\ndir = \"r\"\nafter = 1\ntimes = 1\nset = 0x1\n\n\
             [[rule]]\nregister = \"STATUS\"\npass = true\n",
        ),
        &[],
        &[],
    );
    assert_eq!(run.out.status.code(), Some(0), "{}", run.stderr());
    let scratch = Scratch::new("select-files");
    let trace = scratch.path("nic.trace");
    std::fs::write(&trace, &run.text).expect("write the trace");
    let trace = trace.to_str().expect("UTF-8 path");
    let accesses = |args: &[&str]| -> Vec<String> {
        let out = crate::common::stdout(args);
        out.lines()
            .filter(|l| l.starts_with("R ") || l.starts_with("W "))
            .map(str::to_owned)
            .collect()
    };
    let hooked = accesses(&["filter", "--hooked", trace]);
    assert_eq!(hooked.len(), run.hooked().len());
    assert!(hooked.iter().all(|l| l.contains(" hook=")));
    let rule1 = accesses(&["filter", "--hook", "1", trace]);
    assert_eq!(rule1.len(), 1, "{rule1:?}");
    assert!(
        rule1[0].contains(" 0xc0 0x5 ") && rule1[0].ends_with(" hook=1 dev=0x4"),
        "{rule1:?}"
    );
    let stats = crate::common::stdout(&["stats", "--hooked", trace]);
    let reads = stats
        .lines()
        .find(|l| l.trim_start().starts_with("R "))
        .expect("an R line");
    assert_eq!(
        reads.split_whitespace().nth(1),
        Some(run.hooked().len().to_string().as_str()),
        "{stats}"
    );
}
