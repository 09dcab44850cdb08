//! For the tests of `mmiotrace record`: the C programs of tests/programs/,
//! and a traced scratch directory to run them in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// A private scratch directory under /dev/shm; `*.bar` in it is traced.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = PathBuf::from(format!(
            "/dev/shm/mmiotrace-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A traced file of `len` zero bytes.
    pub fn bar(&self, name: &str, len: u64) -> PathBuf {
        let path = self.path(&format!("{name}.bar"));
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(len))
            .expect("create bar");
        path
    }

    pub fn glob(&self) -> String {
        format!("{}/*.bar", self.0.display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles tests/programs/NAME.c once per test binary.
pub fn program(name: &str) -> PathBuf {
    compile(name, name, &[])
}

/// Compiles tests/programs/SOURCE.c with FLAGS, as NAME, once per test binary.
pub fn compile(name: &str, source: &str, flags: &[&str]) -> PathBuf {
    static COMPILED: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut compiled = COMPILED.lock().expect("compile lock");
    if let Some((_, path)) = compiled.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/programs/{source}.c"));
    // The process id keeps test binaries run side by side (nextest) from
    // overwriting each other's programs.
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("program-{name}-{}", std::process::id()));
    let out = Command::new("cc")
        .args(["-O2", "-g", "-pthread", "-Wall", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(flags)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "compiling {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    compiled.push((name.to_owned(), exe.clone()));
    exe
}
