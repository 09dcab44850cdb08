//! Shared test harness: builds the runtime cdylib, compiles C test programs,
//! and records a program under the runtime with a small in-test drainer.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use mmiotrace_shm::{Config, ENV_SHM_PATH, Popped, Shm, kind};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The release cdylib, built (or brought up to date) once per test binary.
pub fn runtime_lib() -> PathBuf {
    static BUILD: Once = Once::new();
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "mmiotrace-runtime"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the runtime failed");
    });
    let lib = target.join("release/libmmiotrace_runtime.so");
    assert!(lib.exists(), "{} missing", lib.display());
    lib
}

/// Compiles `tests/programs/<name>.c` with `cc -O2` and returns the binary;
/// once per test binary (parallel tests would otherwise overwrite a binary
/// that another test is executing).
pub fn compile(name: &str, extra: &[&str]) -> PathBuf {
    static COMPILED: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut compiled = COMPILED.lock().expect("compile lock");
    if let Some((_, path)) = compiled.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(format!("{name}.c"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let status = Command::new("cc")
        .args(["-O2", "-Wall", "-pthread", "-o"])
        .arg(&out)
        .arg(&source)
        .args(extra)
        .status()
        .expect("run cc");
    assert!(status.success(), "compiling {} failed", source.display());
    compiled.push((name.to_owned(), out.clone()));
    out
}

/// A file in /dev/shm removed on drop.
pub struct TempShmFile(pub PathBuf);

impl TempShmFile {
    pub fn new(tag: &str, len: usize) -> TempShmFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = PathBuf::from(format!(
            "/dev/shm/mmiotrace-test-{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&path).expect("create /dev/shm file");
        file.set_len(len as u64).expect("size /dev/shm file");
        TempShmFile(path)
    }
}

impl Drop for TempShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a recorded run produced.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Every record, in sequence-number order.
    pub records: Vec<Popped>,
    pub lost: u64,
}

impl Run {
    /// READ, WRITE and UNKNOWN records.
    pub fn accesses(&self) -> impl Iterator<Item = &Popped> {
        self.records
            .iter()
            .filter(|p| matches!(p.record.kind, kind::READ | kind::WRITE | kind::UNKNOWN))
    }

    /// Fails the test unless each thread's records, in the recorder's
    /// order (by time), have increasing ring positions: the merge by time
    /// keeps every ring's own order (and these programs log no record from
    /// a signal handler, which would go to a borrowed ring).
    #[track_caller]
    pub fn assert_each_ring_in_order(&self) {
        let mut last: std::collections::HashMap<(u32, u32), u64> = Default::default();
        for p in &self.records {
            let key = (p.record.pid, p.record.tid);
            if let Some(&before) = last.get(&key) {
                assert!(
                    p.record.seq > before,
                    "thread {key:?}: ring position {} after {before}",
                    p.record.seq
                );
            }
            last.insert(key, p.record.seq);
        }
    }

    /// Fails the test, showing the program's output, unless it exited with 0.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "{:?}\n{}\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what record() mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Runs `command` under the runtime with a fresh shared-memory file and
/// drains the rings until it exits.
pub fn record(mut command: Command, trace_globs: &[&str], config: Config) -> Run {
    let lib = runtime_lib();
    let shm_file = TempShmFile::new("rings", config.total_size());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&shm_file.0)
        .expect("open shm");
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared mapping of a file we own, unmapped by Mapping.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            config.total_size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED);
    let mapping = Mapping {
        ptr: ptr.cast(),
        len: config.total_size(),
    };
    // SAFETY: a zeroed, page-aligned mapping of the right size, kept alive
    // by `mapping` for as long as `shm` is used.
    let shm = unsafe { Shm::init(mapping.ptr, mapping.len, &config, b"") }.expect("shm init");
    command
        .env("LD_PRELOAD", &lib)
        .env(ENV_SHM_PATH, &shm_file.0)
        .env("MMIOTRACE_TRACE", trace_globs.join("\n"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn traced program");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).expect("read stdout");
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).expect("read stderr");
        s
    });
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        let drained = drain(&shm, &mut records);
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "traced program did not finish");
        if drained == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    drain(&shm, &mut records);
    // The recorder's order: by time (every ring stamps on the file's one
    // clock), each ring's own order kept for equal times (a stable sort of
    // records drained ring by ring).
    records.sort_by_key(|p| p.record.time_ns);
    let lost = shm.lost();
    drop(mapping);
    Run {
        status,
        stdout: out_thread.join().expect("stdout thread"),
        stderr: err_thread.join().expect("stderr thread"),
        records,
        lost,
    }
}

fn drain(shm: &Shm, records: &mut Vec<Popped>) -> usize {
    let mut count = 0;
    for slot in 0..shm.slots_used() {
        while let Some(popped) = shm.pop(slot) {
            records.push(popped);
            count += 1;
        }
    }
    count
}

/// A small configuration for tests.
/// Records PROGRAM given a fresh traced /dev/shm file of `len` bytes
/// (named after `tag`) as its first argument, then `args`.
pub fn record_with_device(
    program: &Path,
    tag: &str,
    len: usize,
    args: &[&str],
    config: Config,
) -> Run {
    let dev = TempShmFile::new(tag, len);
    let mut command = Command::new(program);
    command.arg(&dev.0).args(args);
    record(command, &[dev.0.to_str().expect("utf8")], config)
}

pub fn small_config() -> Config {
    Config {
        slot_count: 16,
        ring_entries: 4096,
        drop_when_full: false,
    }
}
