//! `--trace` patterns. The runtime matches a pattern against the real path
//! of a mapped file (`/proc/self/fd/N`, absolute, without symlinks), so a
//! relative pattern (`adv-*`, `./adv-*`) or one through a symlink would
//! never match. The recorder makes each pattern absolute against its
//! working directory (PROGRAM's too) and resolves the symlinks of its
//! literal leading directories; at the end it warns about any pattern that
//! matched no mapping.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use mmiotrace_shm::glob;

/// One `--trace` pattern as given, and as the runtime matches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracePattern {
    pub given: String,
    pub resolved: String,
}

impl TracePattern {
    pub fn new(given: &str, cwd: &Path) -> TracePattern {
        TracePattern {
            given: given.to_owned(),
            resolved: resolve(given, cwd),
        }
    }

    /// Whether `path`, a mapped file's real path, matches.
    pub fn matches(&self, path: &str) -> bool {
        glob::matches(self.resolved.as_bytes(), path.as_bytes())
    }
}

/// `pattern` made absolute against `cwd`, with the symlinks of its leading
/// components that contain no pattern character resolved. Patterns that
/// are not paths (`anon_inode:[vfio-device]`) stay as they are.
fn resolve(pattern: &str, cwd: &Path) -> String {
    if pattern.starts_with("anon_inode:") || pattern.is_empty() {
        return pattern.to_owned();
    }
    let absolute = cwd.join(pattern);
    let bytes = absolute.as_os_str().as_bytes();
    // The literal part: whole components before the first that holds a
    // pattern character.
    let first_special = bytes.iter().position(|&b| glob::is_special(b));
    let literal_end = match first_special {
        Some(at) => bytes[..at].iter().rposition(|&b| b == b'/').unwrap_or(0),
        None => bytes.len(),
    };
    let literal = Path::new(OsStr::from_bytes(&bytes[..literal_end]));
    let rest = &bytes[literal_end..];
    let mut resolved = resolve_literal(literal).into_os_string().into_vec();
    if resolved.ends_with(b"/") && rest.starts_with(b"/") {
        resolved.pop();
    }
    resolved.extend_from_slice(rest);
    String::from_utf8_lossy(&resolved).into_owned()
}

/// `path` with its longest existing leading part canonicalised and the rest
/// (not there yet: a file PROGRAM creates) normalised lexically.
fn resolve_literal(path: &Path) -> PathBuf {
    let components: Vec<Component<'_>> = path.components().collect();
    for existing in (1..=components.len()).rev() {
        let head: PathBuf = components[..existing].iter().collect();
        let Ok(mut real) = std::fs::canonicalize(&head) else {
            continue;
        };
        for component in &components[existing..] {
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    real.pop();
                }
                other => real.push(other),
            }
        }
        return real;
    }
    path.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_patterns_and_symlinks_are_resolved() {
        let dir = std::env::temp_dir().join(format!("mmiotrace-patterns-{}", std::process::id()));
        let real = dir.join("real");
        std::fs::create_dir_all(&real).expect("dir");
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let real = std::fs::canonicalize(&real).expect("real");
        let shown = |p: &Path| p.display().to_string();
        let resolve_in = |pattern: &str| resolve(pattern, &link);
        assert_eq!(resolve_in("adv-*"), format!("{}/adv-*", shown(&real)));
        assert_eq!(resolve_in("./adv-*"), format!("{}/adv-*", shown(&real)));
        assert_eq!(resolve_in("../link/a?"), format!("{}/a?", shown(&real)));
        assert_eq!(
            resolve_in("later.bar"),
            format!("{}/later.bar", shown(&real))
        );
        assert_eq!(
            resolve(&format!("{}/**/x", shown(&link)), Path::new("/")),
            format!("{}/**/x", shown(&real))
        );
        assert_eq!(resolve("/dev/shm/*", Path::new("/tmp")), "/dev/shm/*");
        assert_eq!(
            resolve("anon_inode:\\[vfio-device\\]", Path::new("/tmp")),
            "anon_inode:\\[vfio-device\\]"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
