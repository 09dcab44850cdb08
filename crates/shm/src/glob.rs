//! Path globs, matched without allocating (the runtime's `mmap`
//! interposer can run before the allocator is usable). The runtime matches
//! mapped paths against `MMIOTRACE_TRACE` with them, and the recorder
//! finds `--trace` patterns that matched nothing with the same code.
//!
//! Syntax: `*` matches within one path component, `**` across components,
//! `?` one byte other than `/`, `[abc]`, `[a-z]`, `[!a]` a byte class, and
//! `\` makes the next byte literal (`anon_inode:\[vfio-device\]`).

/// Whether `byte` is special in a pattern.
pub fn is_special(byte: u8) -> bool {
    matches!(byte, b'*' | b'?' | b'[' | b'\\')
}

/// Whether `path` matches `pattern` as a whole.
pub fn matches(pattern: &[u8], path: &[u8]) -> bool {
    match_from(pattern, path, 0)
}

/// Recursion depth bound: each `*` adds one level; pathological patterns
/// fail to match instead of exhausting the stack.
const MAX_DEPTH: u32 = 32;

fn match_from(pattern: &[u8], path: &[u8], depth: u32) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let (mut p, mut s) = (pattern, path);
    loop {
        match p {
            [] => return s.is_empty(),
            [b'*', b'*', rest @ ..] => {
                if let Some(after_slash) = rest.strip_prefix(b"/") {
                    // `**/x`: x at the start of this or any later component.
                    let mut tail = s;
                    loop {
                        if match_from(after_slash, tail, depth + 1) {
                            return true;
                        }
                        match tail.iter().position(|&c| c == b'/') {
                            Some(i) => tail = tail.get(i + 1..).unwrap_or(&[]),
                            None => return false,
                        }
                    }
                }
                let mut tail = s;
                loop {
                    if match_from(rest, tail, depth + 1) {
                        return true;
                    }
                    match tail.split_first() {
                        Some((_, next)) => tail = next,
                        None => return false,
                    }
                }
            }
            [b'*', rest @ ..] => {
                let mut tail = s;
                loop {
                    if match_from(rest, tail, depth + 1) {
                        return true;
                    }
                    match tail.split_first() {
                        Some((&c, next)) if c != b'/' => tail = next,
                        _ => return false,
                    }
                }
            }
            [b'?', rest @ ..] => match s.split_first() {
                Some((&c, next)) if c != b'/' => {
                    p = rest;
                    s = next;
                }
                _ => return false,
            },
            [b'[', rest @ ..] => {
                let Some((&c, next)) = s.split_first() else {
                    return false;
                };
                match class(rest, c) {
                    Some((true, after)) => {
                        p = after;
                        s = next;
                    }
                    _ => return false,
                }
            }
            [b'\\', literal, rest @ ..] | [literal, rest @ ..] => match s.split_first() {
                Some((&c, next)) if c == *literal => {
                    p = rest;
                    s = next;
                }
                _ => return false,
            },
        }
    }
}

/// Matches byte `c` against the class that starts after `[`; returns whether
/// it matched and the pattern after `]`, or `None` for an unterminated class.
fn class(pattern: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negated, mut p) = match pattern {
        [b'!' | b'^', rest @ ..] => (true, rest),
        _ => (false, pattern),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        match p {
            [] => return None,
            [b']', rest @ ..] if !first => return Some((matched != negated, rest)),
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                matched |= (*lo..=*hi).contains(&c);
                p = rest;
            }
            [single, rest @ ..] => {
                matched |= *single == c;
                p = rest;
            }
        }
        first = false;
    }
}

/// Device-like files traced by default (docs/ARCHITECTURE.md, "Background"). The real path of a
/// sysfs resource file is under `/sys/devices`; both spellings are listed
/// because the program may map either and readlink resolves the symlink.
pub const DEFAULT_PATTERNS: &[&[u8]] = &[
    b"/dev/mem",
    b"/sys/bus/pci/devices/*/resource[0-9]*",
    b"/sys/devices/pci*/**/resource[0-9]*",
    b"/dev/uio*",
    b"anon_inode:\\[vfio-device\\]",
    b"/dev/nvidia*",
    b"/dev/dri/*",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn any_default(path: &str) -> bool {
        DEFAULT_PATTERNS.iter().any(|p| matches(p, path.as_bytes()))
    }

    #[test]
    fn default_patterns() {
        assert!(any_default("/dev/mem"));
        assert!(any_default(
            "/sys/devices/pci0000:00/0000:00:02.0/resource0"
        ));
        assert!(any_default(
            "/sys/devices/pci0000:00/0000:00:1c.0/0000:02:00.0/resource2_wc"
        ));
        assert!(any_default("/sys/bus/pci/devices/0000:00:02.0/resource0"));
        assert!(any_default("anon_inode:[vfio-device]"));
        assert!(any_default("/dev/uio0"));
        assert!(any_default("/dev/nvidia0"));
        assert!(any_default("/dev/dri/card0"));
        assert!(!any_default(
            "/sys/devices/pci0000:00/0000:00:02.0/resource"
        ));
        assert!(!any_default("/dev/memory"));
        assert!(!any_default("anon_inode:[eventfd]"));
        assert!(!any_default("/dev/shm/x"));
    }

    #[test]
    fn star_stays_in_one_component_and_double_star_crosses() {
        assert!(matches(b"/dev/shm/*", b"/dev/shm/abc"));
        assert!(!matches(b"/dev/*", b"/dev/shm/abc"));
        assert!(matches(b"/dev/**", b"/dev/shm/abc"));
        assert!(matches(b"/a/**/b", b"/a/b"));
        assert!(matches(b"/a/**/b", b"/a/x/y/b"));
        assert!(matches(b"/a/?", b"/a/z"));
        assert!(!matches(b"/a/[!z]", b"/a/z"));
        assert!(matches(b"/a/[x-z]", b"/a/y"));
        assert!(!matches(b"/a/[x-z", b"/a/y"));
    }
}
