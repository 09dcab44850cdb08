//! Unmodified third-party binaries from Debian packages, traced by
//! `mmiotrace record` (.ci/run installs them). Each access in the trace is
//! checked against what the program printed and against the file's contents.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mmiotrace_trace::{Direction, Event, Item, ReadOptions, TraceReader};

const MMIOTRACE: &str = env!("CARGO_BIN_EXE_mmiotrace");

fn require(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!("{tool} is not installed; .ci/run installs it (apt-get install {tool})")
    })
}

/// A file of 8 KiB with byte i = i % 256, in a private directory.
struct Backing {
    dir: PathBuf,
}

impl Backing {
    fn new(name: &str, under: &str) -> Backing {
        let dir = PathBuf::from(format!(
            "{under}/mmiotrace-3p-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let bytes: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        std::fs::write(dir.join("mem.bar"), bytes).expect("write backing file");
        Backing { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("mem.bar")
    }

    fn trace(&self) -> PathBuf {
        self.dir.join("run.trace")
    }

    fn glob(&self) -> String {
        format!("{}/*.bar", self.dir.display())
    }

    fn contents(&self) -> Vec<u8> {
        std::fs::read(self.file()).expect("read backing file")
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run mmiotrace");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// (direction, width, phys, value) of every access in a trace.
fn accesses(trace: &Path) -> Vec<(Direction, u8, u64, u64)> {
    let file = std::fs::File::open(trace).expect("open trace");
    TraceReader::new(file, ReadOptions::default().with_fatal_truncation(true))
        .expect("trace")
        .filter_map(|item| match item.expect("parse trace") {
            Item::Event(Event::Access(a)) => Some((a.dir, a.width(), a.phys, a.value.low_u64())),
            Item::Event(Event::Unknown(u)) => panic!("UNKNOWN access in trace: {u:?}"),
            _ => None,
        })
        .collect()
}

fn le(bytes: &[u8], at: usize, width: usize) -> u64 {
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(&bytes[at..at + width]);
    u64::from_le_bytes(v)
}

#[test]
fn memtool_mw_and_md_every_width() {
    let memtool = require("memtool");
    let backing = Backing::new("memtool", "/dev/shm");
    let file = backing.file();
    for (flag, width, at, values) in [
        ("-b", 1u8, 0x101usize, vec![0xa5u64, 0x5a]),
        ("-w", 2, 0x202, vec![0xbeef, 0xdead, 0x1234]),
        ("-l", 4, 0x400, vec![0xdeadbeef, 0x12345678]),
        ("-q", 8, 0x808, vec![0x0123_4567_89ab_cdef]),
    ] {
        let mut cmd = Command::new(MMIOTRACE);
        cmd.arg("record")
            .arg("-q")
            .arg("-o")
            .arg(backing.trace())
            .args(["--trace", &backing.glob(), "--"])
            .arg(&memtool)
            .args(["mw", flag, "-d"])
            .arg(&file)
            .arg(format!("{at:#x}"))
            .args(values.iter().map(|v| format!("{v:#x}")));
        run(&mut cmd);
        let expected: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (Direction::Write, width, (at + i * width as usize) as u64, v))
            .collect();
        assert_eq!(accesses(&backing.trace()), expected, "memtool mw {flag}");
        let contents = backing.contents();
        for (i, &v) in values.iter().enumerate() {
            assert_eq!(le(&contents, at + i * width as usize, width as usize), v);
        }

        // Read the region back with md: each value it prints is one read in the trace.
        let len = values.len() * width as usize + 2 * width as usize;
        let mut cmd = Command::new(MMIOTRACE);
        cmd.arg("record")
            .arg("-q")
            .arg("-o")
            .arg(backing.trace())
            .args(["--trace", &backing.glob(), "--"])
            .arg(&memtool)
            .args(["md", flag, "-s"])
            .arg(&file)
            .arg(format!("{at:#x}+{len:#x}"));
        let out = run(&mut cmd);
        let printed: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .flat_map(|line| {
                // "00000100: beef dead ...   ascii"; the hex columns sit between ':' and two spaces.
                let hex = line.split_once(':').map_or("", |(_, rest)| rest);
                let hex = hex
                    .split("  ")
                    .find(|part| !part.trim().is_empty())
                    .unwrap_or("");
                hex.split_whitespace()
                    .map(|word| u64::from_str_radix(word, 16).expect("hex word"))
                    .collect::<Vec<_>>()
            })
            .collect();
        let reads = accesses(&backing.trace());
        assert_eq!(reads.len(), len / width as usize, "memtool md {flag}");
        for (i, &(dir, w, phys, value)) in reads.iter().enumerate() {
            let offset = at + i * width as usize;
            assert_eq!((dir, w, phys), (Direction::Read, width, offset as u64));
            assert_eq!(
                value,
                le(&contents, offset, width as usize),
                "file contents"
            );
            assert_eq!(value, printed[i], "what memtool printed");
        }
    }
}

#[test]
fn busybox_devmem_on_a_bind_mounted_dev_mem() {
    let busybox = require("busybox");
    require("unshare");
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (CI runs as root)");
    // Outside /dev: a machine without /dev/mem gets a tmpfs over /dev in the namespace.
    let backing = Backing::new("devmem", "/tmp");
    let script = format!(
        "set -e
         [ -e /dev/mem ] || {{ mount -t tmpfs tmpfs /dev; touch /dev/mem; }}
         mount --bind {file} /dev/mem
         {bb} devmem 0x1004 32 0x11223344
         {bb} devmem 0x1004 32
         {bb} devmem 0x1006 16
         {bb} devmem 0x1007 8
         {bb} devmem 0x1ff8 64",
        file = backing.file().display(),
        bb = busybox.display(),
    );
    let out = run(Command::new(MMIOTRACE)
        .arg("record")
        .arg("-q")
        .arg("-o")
        .arg(backing.trace())
        .args([
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]));
    let printed: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| u64::from_str_radix(line.trim().trim_start_matches("0x"), 16).expect("hex"))
        .collect();
    let contents = backing.contents();
    let tail = le(&contents, 0x1ff8, 8);
    assert_eq!(printed, [0x11223344, 0x1122, 0x11, tail]);
    assert_eq!(le(&contents, 0x1004, 4), 0x11223344);
    // /dev/mem's offset is the physical address; busybox makes exactly the
    // one access each command asks for (no read-back after the write).
    assert_eq!(
        accesses(&backing.trace()),
        [
            (Direction::Write, 4, 0x1004, 0x11223344),
            (Direction::Read, 4, 0x1004, 0x11223344),
            (Direction::Read, 2, 0x1006, 0x1122),
            (Direction::Read, 1, 0x1007, 0x11),
            (Direction::Read, 8, 0x1ff8, tail),
        ]
    );
}
