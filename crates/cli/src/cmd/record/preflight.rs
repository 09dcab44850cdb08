//! Programs that `LD_PRELOAD` cannot reach, found before they run.
//!
//! The runtime gets into a program only through the dynamic loader, and the
//! loader ignores `LD_PRELOAD` in some programs. Recording one of them would
//! produce an empty trace that looks like "the program made no accesses", so
//! `record` refuses with an error that says why (`--no-preload-check` runs
//! it anyway, for a launcher whose children are dynamically linked):
//!
//! - a statically linked program (an ELF file without a `PT_INTERP` program
//!   header, `static-pie` included): no loader runs at all;
//! - a program of another architecture or class (32-bit x86): the loader
//!   skips a 64-bit x86 runtime;
//! - a program the kernel starts in secure-execution mode (`AT_SECURE`):
//!   set-user-ID to another user, set-group-ID to another group, or with
//!   file capabilities when not run by root, on a mount without `nosuid`.
//!   The loader then ignores `LD_PRELOAD` entries that contain a slash.
//!
//! A `#!` script is checked through its interpreter.
//!
//! Before any of that, and before the trace file is touched, [`startable`]
//! checks that PROGRAM can be started at all: a command that cannot run
//! must not cost the user the trace they recorded last time.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;

/// Why the runtime cannot be preloaded into a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreachable {
    /// No ELF interpreter: statically linked.
    Static,
    /// An ELF file for another machine or class than x86-64.
    ForeignArchitecture,
    /// Set-user-ID or set-group-ID to someone else, or file capabilities.
    SecureExecution(&'static str),
}

impl Unreachable {
    fn explain(&self) -> String {
        match self {
            Unreachable::Static => {
                "is statically linked (it has no ELF interpreter, so no dynamic loader runs)"
                    .to_owned()
            }
            Unreachable::ForeignArchitecture => {
                "is not an x86-64 program (the loader skips an x86-64 runtime for it)".to_owned()
            }
            Unreachable::SecureExecution(why) => format!(
                "is {why} (the kernel runs it in secure-execution mode, where the loader ignores LD_PRELOAD)"
            ),
        }
    }
}

/// Fails with a clear error if `program` (as `Command` would find it) is
/// one the runtime cannot be preloaded into.
pub fn check(program: &OsStr) -> Result<()> {
    let Some(path) = resolve(program) else {
        // Not found or not executable: spawning reports that.
        return Ok(());
    };
    let mut checked = path.clone();
    for _ in 0..4 {
        match inspect(&checked) {
            Verdict::Reachable => return Ok(()),
            Verdict::Unreachable(why) => {
                let through = if checked == path {
                    String::new()
                } else {
                    format!(" (the interpreter of {})", path.display())
                };
                bail!(
                    "{}{through} {}: the tracing runtime cannot be preloaded into it, and nothing it does would be traced. Record a dynamically linked, non-set-ID build, or pass --no-preload-check to run it anyway (for a launcher whose children should be traced)",
                    checked.display(),
                    why.explain()
                );
            }
            Verdict::Script(interpreter) => checked = interpreter,
        }
    }
    Ok(())
}

/// Fails with an error that names the missing piece if `program` cannot
/// be started: not found (in `PATH`, for a name without a slash), not an
/// executable file, or a `#!` script whose interpreter is missing (the
/// kernel's "No such file or directory" would name neither).
pub fn startable(program: &OsStr) -> Result<()> {
    let shown = Path::new(program).display();
    let Some(path) = resolve(program) else {
        bail!("starting {shown}: no executable file of that name in PATH");
    };
    let mut checked = path.clone();
    for _ in 0..4 {
        let meta = match std::fs::metadata(&checked) {
            Ok(meta) => meta,
            Err(err) if checked == path => {
                bail!("starting {shown}: {err}");
            }
            Err(err) => bail!(
                "starting {shown}: its interpreter {} ({}): {err}",
                checked.display(),
                script_line(&path)
            ),
        };
        if !meta.is_file() || !executable(&checked) {
            let what = if checked == path {
                String::new()
            } else {
                format!(": its interpreter {}", checked.display())
            };
            bail!("starting {shown}{what}: not an executable file");
        }
        let Ok(mut file) = File::open(&checked) else {
            return Ok(());
        };
        let mut head = vec![0u8; 256];
        let Ok(len) = read_up_to(&mut file, &mut head) else {
            return Ok(());
        };
        head.truncate(len);
        match shebang(&head) {
            Some(interpreter) => checked = interpreter,
            None => return Ok(()),
        }
    }
    Ok(())
}

/// The `#!` line of a script, for a message.
fn script_line(path: &Path) -> String {
    let head = std::fs::read(path).unwrap_or_default();
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned()
}

/// Whether the caller may execute `path` (`access(X_OK)`, as `execve` checks).
fn executable(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path; access has no memory effects.
    unsafe { libc::access(c_path.as_ptr(), libc::X_OK) == 0 }
}

#[derive(Debug)]
enum Verdict {
    Reachable,
    Unreachable(Unreachable),
    Script(PathBuf),
}

/// The file `Command::new(program)` executes: `program` itself if it
/// contains a slash, else the first executable match in `PATH`.
fn resolve(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

fn inspect(path: &Path) -> Verdict {
    let Ok(mut file) = File::open(path) else {
        return Verdict::Reachable;
    };
    let mut head = vec![0u8; 4096];
    let Ok(len) = read_up_to(&mut file, &mut head) else {
        return Verdict::Reachable;
    };
    head.truncate(len);
    if let Some(interpreter) = shebang(&head) {
        return Verdict::Script(interpreter);
    }
    if let Some(why) = secure_execution(path) {
        return Verdict::Unreachable(Unreachable::SecureExecution(why));
    }
    match elf_interpreter(&head, &mut file) {
        Some(Elf::Dynamic) | None => Verdict::Reachable,
        Some(Elf::Static) => Verdict::Unreachable(Unreachable::Static),
        Some(Elf::Foreign) => Verdict::Unreachable(Unreachable::ForeignArchitecture),
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The interpreter of a `#!` script.
fn shebang(head: &[u8]) -> Option<PathBuf> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n')?];
    let interpreter = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|word| !word.is_empty())?;
    Some(PathBuf::from(OsStr::from_bytes(interpreter)))
}

#[derive(Debug, PartialEq, Eq)]
enum Elf {
    Dynamic,
    Static,
    Foreign,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Whether an ELF file has a `PT_INTERP` header; `None` if it is not ELF.
fn elf_interpreter(head: &[u8], file: &mut File) -> Option<Elf> {
    if head.get(..4)? != b"\x7fELF" {
        return None;
    }
    // EI_CLASS 2 = 64-bit, EI_DATA 1 = little-endian.
    if head.get(4) != Some(&2) || head.get(5) != Some(&1) || u16_at(head, 18)? != EM_X86_64 {
        return Some(Elf::Foreign);
    }
    let phoff = u64_at(head, 32)?;
    let phentsize = u64::from(u16_at(head, 54)?);
    let phnum = u64::from(u16_at(head, 56)?);
    if phentsize < 4 || phnum > 4096 {
        return None;
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(phoff)).ok()?;
    file.read_exact(&mut table).ok()?;
    let has_interp = table
        .chunks(phentsize as usize)
        .any(|header| u32_at(header, 0) == Some(PT_INTERP));
    Some(if has_interp {
        Elf::Dynamic
    } else {
        Elf::Static
    })
}

/// Why the kernel would set `AT_SECURE` for this file, if it would.
fn secure_execution(path: &Path) -> Option<&'static str> {
    let meta = std::fs::metadata(path).ok()?;
    if nosuid_mount(path) {
        return None;
    }
    // SAFETY: getuid and getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mode = meta.mode();
    if mode & libc::S_ISUID != 0 && meta.uid() != uid {
        return Some("set-user-ID to another user");
    }
    if mode & libc::S_ISGID != 0 && meta.gid() != gid {
        return Some("set-group-ID to another group");
    }
    if uid != 0 && has_file_capabilities(path) {
        return Some("given file capabilities");
    }
    None
}

fn nosuid_mount(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: zeroed is a valid statvfs; statvfs writes into it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let ret = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    ret == 0 && stat.f_flag & libc::ST_NOSUID != 0
}

fn has_file_capabilities(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: NUL-terminated path and name; a null buffer of size 0 asks
    // only for the value's size.
    let size = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_interpreter_of_a_script() {
        assert_eq!(
            shebang(b"#! /bin/sh -e\necho hi\n"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(shebang(b"\x7fELF"), None);
    }

    #[test]
    fn a_script_whose_interpreter_is_missing_names_it() {
        let dir = std::env::temp_dir().join(format!("mmiotrace-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let script = dir.join("script");
        std::fs::write(&script, "#!/nonexistent/interpreter -x\necho hi\n").expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = startable(script.as_os_str()).expect_err("missing interpreter");
        let _ = std::fs::remove_dir_all(&dir);
        let message = err.to_string();
        assert!(
            message.contains("its interpreter /nonexistent/interpreter"),
            "{message}"
        );
        assert!(startable(OsStr::new("sh")).is_ok());
        assert!(startable(OsStr::new("/nonexistent/prog")).is_err());
    }

    #[test]
    fn a_dynamic_program_is_reachable() {
        let sh = resolve(OsStr::new("sh")).expect("sh in PATH");
        assert!(check(sh.as_os_str()).is_ok());
    }
}
