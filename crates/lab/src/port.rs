//! Markers for the QEMU log: each byte written to the lab's isa-debugcon port
//! is an I/O access QEMU logs, so a line written there separates the log's
//! parts (docs/LAB.md).

use anyhow::{Result, ensure};

/// The lab's debugcon port (lab/run).
pub const DEBUGCON_PORT: u16 = 0xe9;

/// Writes `text` and a newline to the debugcon port, one `out` per byte.
pub fn mark(text: &str) -> Result<()> {
    ensure!(!text.contains('\n'), "a marker is one line");
    // SAFETY: asks for access to one I/O port; needs root, reported if refused.
    let ret = unsafe { libc::ioperm(libc::c_ulong::from(DEBUGCON_PORT), 1, 1) };
    ensure!(
        ret == 0,
        "ioperm({DEBUGCON_PORT:#x}): {} (run as root in the lab guest)",
        std::io::Error::last_os_error()
    );
    for byte in text.bytes().chain(std::iter::once(b'\n')) {
        // SAFETY: the port was granted above; the debugcon only prints it.
        unsafe {
            std::arch::asm!("out dx, al", in("dx") DEBUGCON_PORT, in("al") byte, options(nomem, nostack, preserves_flags));
        }
    }
    Ok(())
}
