//! Where `mmiotrace record` finds the runtime it preloads.
//!
//! The runtime is embedded in this binary by build.rs and written out once
//! per user and build to a private cache directory, so there is never a `.so`
//! to locate by hand. `MMIOTRACE_RUNTIME` overrides it (for runtime development).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libmmiotrace_runtime.so"));

/// FNV-1a of an embedded library, so that different builds never share a cache file.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The path of a runtime library to put in `LD_PRELOAD`.
pub fn runtime_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MMIOTRACE_RUNTIME") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("MMIOTRACE_RUNTIME={} is not a file", path.display());
        }
        return fs::canonicalize(&path)
            .with_context(|| format!("resolving MMIOTRACE_RUNTIME={}", path.display()));
    }
    private_cache_file("libmmiotrace_runtime", EMBEDDED)
}

/// `bytes` as a file in the user's private cache directory, named by `stem`
/// and a hash of the bytes (written once per build, then reused).
pub fn private_cache_file(stem: &str, bytes: &[u8]) -> Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = base.join(format!("mmiotrace-{uid}"));
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err).with_context(|| format!("creating {}", dir.display())),
    }
    let meta = fs::symlink_metadata(&dir).with_context(|| format!("checking {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o022 != 0 {
        bail!(
            "{} is not a private directory owned by uid {uid}; remove it or set MMIOTRACE_RUNTIME",
            dir.display()
        );
    }
    let path = dir.join(format!("{stem}-{:016x}.so", fnv1a(bytes)));
    if fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{stem}-{}.tmp", std::process::id()));
    let mut file = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("installing {}", path.display()))?;
    Ok(path)
}
