//! What the lab's tests share: where the repository is, the `mmiotrace`
//! binary, and booting the guest.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `mmiotrace` binary of this build profile, built if needed.
pub fn mmiotrace_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/PROFILE/deps");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "-q", "-p", "mmiotrace", "--bin", "mmiotrace"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        build.env("CARGO_TARGET_DIR", target);
    }
    let status = build.current_dir(repo()).status().expect("run cargo build");
    assert!(status.success(), "cargo build -p mmiotrace failed");
    profile_dir.join("mmiotrace")
}

/// One guest at a time: the tests run in parallel threads, and TCG guests
/// on a 2-core machine are slow enough one by one.
static BOOTING: Mutex<()> = Mutex::new(());

/// Boots the lab into a fresh output folder `name` (under the target's
/// temporary folder) and runs `crates/lab/guest/SCRIPT OUT ARGS...` there,
/// QEMU under the `wrap` command if any (`lab/run --wrap`). Returns OUT;
/// panics with the console if the guest's command failed.
pub fn boot(name: &str, wrap: &[OsString], script: &str, args: &[OsString]) -> PathBuf {
    let _one_at_a_time = BOOTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).expect("create the output folder");
    let mut command = Command::new(repo().join("lab/run"));
    command.arg("--out").arg(&out);
    for word in wrap {
        command.arg("--wrap").arg(word);
    }
    let output = command
        .arg("--")
        .arg("sh")
        .arg(repo().join("crates/lab/guest").join(script))
        .arg(&out)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run lab/run");
    assert!(
        output.status.success(),
        "lab/run {script} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}
