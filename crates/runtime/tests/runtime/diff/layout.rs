//! Fixed addresses shared by both runs of every case.
//!
//! ```text
//! CODE    one RWX page group for the case's instructions
//! WINDOW  page 0: untraced anonymous memory
//!         pages 1-2: mapping A (traced file, 8 KiB) in the traced run
//!         page 3: mapping B (another traced file, 4 KiB) in the traced run
//! STACK   the case's stack (RSP starts at STACK_TOP)
//! ```
//! In the plain run, pages 1-3 are anonymous memory at the same addresses.

pub const PAGE: u64 = 4096;
pub const CODE: u64 = 0x5a00_0000_0000;
pub const CODE_LEN: usize = 64 * 1024;
/// Within ±2 GiB of CODE, so that RIP-relative operands can reach it.
pub const WINDOW: u64 = CODE + 0x10_0000;
pub const WINDOW_LEN: usize = 4 * PAGE as usize;
pub const A_START: u64 = WINDOW + PAGE;
pub const A_LEN: usize = 2 * PAGE as usize;
pub const B_START: u64 = WINDOW + 3 * PAGE;
pub const B_LEN: usize = PAGE as usize;
pub const STACK: u64 = 0x5c00_0000_0000;
pub const STACK_LEN: usize = 256 * 1024;
pub const STACK_TOP: u64 = STACK + 192 * 1024;
/// The stack bytes compared after each case: what pushes and pops of a
/// case can touch, inside the red zone of any RSP the case faults with (the
/// signal frames of the traced run lie below it).
pub const STACK_CHECK_LO: u64 = STACK_TOP - 64;
pub const STACK_CHECK_HI: u64 = STACK_TOP + 256;

/// Which mapping an address lies in, and its offset there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Untraced,
    A(u64),
    B(u64),
}

pub fn place(addr: u64) -> Place {
    if (A_START..A_START + A_LEN as u64).contains(&addr) {
        Place::A(addr - A_START)
    } else if (B_START..B_START + B_LEN as u64).contains(&addr) {
        Place::B(addr - B_START)
    } else {
        Place::Untraced
    }
}

/// `mmap` with `MAP_FIXED`, panicking on failure.
pub fn map_fixed(addr: u64, len: usize, prot: i32, flags: i32, fd: i32) {
    // SAFETY: the fixed addresses above are reserved for the harness.
    let got = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            flags | libc::MAP_FIXED,
            fd,
            0,
        )
    };
    assert_eq!(
        got as u64,
        addr,
        "mmap at {addr:#x}: {}",
        std::io::Error::last_os_error()
    );
}

pub fn map_anonymous(addr: u64, len: usize, prot: i32) {
    map_fixed(addr, len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1);
}
