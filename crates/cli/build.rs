//! Builds the preloaded runtime (`libmmiotrace_runtime.so`) and the QEMU
//! plugin of `mmiotrace vm` (`libmmiotrace_qemu_plugin.so`) and embeds both
//! in the `mmiotrace` binary, so that `record` and `vm` find them after
//! `cargo build` and after `cargo install` alike, from any directory.
//!
//! The runtime is always built optimised and with `panic = "abort"`: it runs
//! inside signal handlers, where unwinding is undefined behaviour. A separate
//! target directory keeps this nested cargo from waiting on the outer one's lock.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Sets `MMIOTRACE_GIT_COMMIT` for `--version`: the commit checked out, or
/// `unknown` outside a git checkout (a crates.io source package). Changes
/// not yet committed are not flagged: the build script does not rerun for
/// every edit, so such a flag would go stale.
fn git_commit(manifest_dir: &std::path::Path) {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(manifest_dir)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MMIOTRACE_GIT_COMMIT={commit}");
    // A commit or a checkout changes HEAD or its log.
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(file) = git(&["rev-parse", "--path-format=absolute", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let runtime_dir = manifest_dir.join("../runtime");
    let shm_dir = manifest_dir.join("../shm");
    for watched in [
        runtime_dir.join("src"),
        runtime_dir.join("Cargo.toml"),
        shm_dir.join("src"),
        shm_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    println!("cargo:rerun-if-env-changed=MMIOTRACE_RUNTIME_PREBUILT");
    git_commit(&manifest_dir);

    build_qemu_plugin(&manifest_dir.join("../qemu-plugin/src/lib.rs"), &out_dir);

    let embedded = out_dir.join("libmmiotrace_runtime.so");
    if let Some(prebuilt) = env::var_os("MMIOTRACE_RUNTIME_PREBUILT") {
        std::fs::copy(&prebuilt, &embedded).expect("copy MMIOTRACE_RUNTIME_PREBUILT");
        return;
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out_dir.join("runtime-target");
    let status = Command::new(cargo)
        .arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(runtime_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--config", "profile.release.panic=\"abort\""])
        .args(["--config", "profile.release.debug=0"])
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .status()
        .expect("run cargo to build the runtime");
    assert!(status.success(), "building mmiotrace-runtime failed");
    let built = target_dir.join("release/libmmiotrace_runtime.so");
    std::fs::copy(&built, &embedded).expect("copy the built runtime");
}

/// The plugin is one file with no dependencies: rustc builds it directly,
/// quicker than a nested cargo. Its `qemu_plugin_*` imports stay undefined
/// until QEMU loads it.
fn build_qemu_plugin(source: &std::path::Path, out_dir: &std::path::Path) {
    println!("cargo:rerun-if-changed={}", source.display());
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2024", "--crate-type", "cdylib"])
        .args(["--crate-name", "mmiotrace_qemu_plugin"])
        .args([
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .arg(source)
        .arg("-o")
        .arg(out_dir.join("libmmiotrace_qemu_plugin.so"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run rustc to build the QEMU plugin");
    assert!(status.success(), "building the QEMU plugin failed");
}
