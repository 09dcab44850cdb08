//! The differential harness: every case runs twice, on plain memory and on
//! traced mappings at the same addresses, with the same registers; the
//! registers, flags, vector state, memory and the trace are compared.
//! See tests/runtime/differential.rs for the two sides (test and traced child).

pub mod child;
pub mod expect;
pub mod hand;
pub mod layout;
pub mod machine;
pub mod random;
pub mod rng;
pub mod xstate;

/// One case: an instruction sequence and the state it starts from.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the case does, in assembly.
    pub name: String,
    /// The instructions, assembled at [`layout::CODE`].
    pub code: Vec<u8>,
    pub gpr: [u64; 16],
    /// Initial RFLAGS (arithmetic flags and DF are loaded).
    pub rflags: u64,
    /// Seeds the memory contents and the vector registers.
    pub seed: u64,
    /// Bytes written over the seeded memory (window or stack addresses).
    pub patches: Vec<(u64, Vec<u8>)>,
    /// The device-visible accesses, in order; `None`: derived from the
    /// instructions (see [`expect::derive`]).
    pub accesses: Option<Vec<Access>>,
}

/// One access the program makes (the runtime splits it where it crosses
/// mappings, and traced parts into power-of-two pieces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    pub addr: u64,
    pub len: usize,
}

impl Access {
    pub fn read(addr: u64, len: usize) -> Access {
        Access {
            write: false,
            addr,
            len,
        }
    }

    pub fn write(addr: u64, len: usize) -> Access {
        Access {
            write: true,
            addr,
            len,
        }
    }
}

/// Environment variables between the test and the traced child.
pub const ENV_CHILD: &str = "MMIOTRACE_DIFF_CHILD";
pub const ENV_SET: &str = "MMIOTRACE_DIFF_SET";
pub const ENV_FILE_A: &str = "MMIOTRACE_DIFF_FILE_A";
pub const ENV_FILE_B: &str = "MMIOTRACE_DIFF_FILE_B";
pub const ENV_COUNT: &str = "MMIOTRACE_DIFF_CASES";
pub const ENV_SEED: &str = "MMIOTRACE_DIFF_SEED";
pub const ENV_ONLY: &str = "MMIOTRACE_DIFF_ONLY";
/// Runs of the traced side of each case (patched mode when over 1).
pub const ENV_RUNS: &str = "MMIOTRACE_DIFF_RUNS";
