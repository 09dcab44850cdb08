//! Quick per-access cost: untraced, the bare exception floor, traced.
//! Not a benchmark suite (crates/bench is); run with
//! `cargo test -p mmiotrace-runtime --release --test cost -- --ignored --nocapture`.

mod common;

use std::process::Command;

fn ns_per_access(stdout: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("ns_per_access "))
        .expect("result line")
        .parse()
        .expect("number")
}

#[test]
#[ignore = "timing, not a check"]
fn per_access_cost() {
    let program = common::compile("bench", &[]);
    let dev = common::TempShmFile::new("bench-dev", 4096);
    for _ in 0..3 {
        let plain = Command::new(&program)
            .arg("plain")
            .arg(&dev.0)
            .arg("10000000")
            .output()
            .expect("run");
        let floor = Command::new(&program)
            .arg("floor")
            .arg(&dev.0)
            .arg("300000")
            .output()
            .expect("run");
        let mut traced = Command::new(&program);
        traced.arg("traced").arg(&dev.0).arg("150000");
        let config = mmiotrace_shm::Config {
            slot_count: 4,
            ring_records: 1 << 16,
            drop_when_full: false,
        };
        let run = common::record(traced, &[dev.0.to_str().expect("utf8")], config);
        assert!(run.status.success(), "{}", run.stderr);
        assert_eq!(run.accesses().count(), 300_000);
        println!(
            "untraced {:.1} ns, exception floor {:.0} ns, traced {:.0} ns per access",
            ns_per_access(&String::from_utf8_lossy(&plain.stdout)),
            ns_per_access(&String::from_utf8_lossy(&floor.stdout)),
            ns_per_access(&run.stdout),
        );
    }
}
