//! Exact-width accesses: one instruction per device access.
//!
//! # Safety
//!
//! A device register must see exactly the access the program made: one
//! read or one write of the same width. These functions perform each piece
//! of an access with a single load or store instruction of that width
//! (`mov` up to 8 bytes, `movdqu`/`vmovdqu`/`vmovdqu64` for 16, 32 and 64)
//! on a raw address, which needs inline assembly and raw pointers, hence
//! `unsafe`. Callers guarantee that the address is mapped with the needed
//! protection (the alias of a held range, or the program's own memory).

use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

/// The widest single access the CPU and the kernel allow here: 16, 32 (AVX
/// state enabled) or 64 (AVX-512 state enabled). Decided once, outside
/// any handler, by [`detect`].
static MAX_CHUNK: AtomicU8 = AtomicU8::new(16);

/// XCR0 bits: SSE, AVX; opmask, ZMM_Hi256, Hi16_ZMM.
const XCR0_AVX: u64 = 0b110;
const XCR0_AVX512: u64 = 0b1110_0000;

/// Reads CPUID and XCR0 (CPUID traps to the hypervisor in a VM: never on
/// the signal path) and records the widest access.
pub fn detect() {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    let avx = leaf1.ecx & (1 << 28) != 0;
    let xcr0 = if osxsave { xgetbv0() } else { 0 };
    let max_leaf = core::arch::x86_64::__cpuid(0).eax;
    let avx512f = max_leaf >= 7 && core::arch::x86_64::__cpuid_count(7, 0).ebx & (1 << 16) != 0;
    let widest = if avx512f && xcr0 & (XCR0_AVX | XCR0_AVX512) == XCR0_AVX | XCR0_AVX512 {
        64
    } else if avx && xcr0 & XCR0_AVX == XCR0_AVX {
        32
    } else {
        16
    };
    MAX_CHUNK.store(widest, Ordering::Relaxed);
}

/// XCR0, the state components the OS enabled.
pub fn xgetbv0() -> u64 {
    let (eax, edx): (u32, u32);
    // SAFETY: xgetbv with ECX=0 is valid whenever CPUID.1:ECX.OSXSAVE is
    // set, which the callers check.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") eax, out("edx") edx, options(nomem, nostack, preserves_flags));
    }
    u64::from(eax) | (u64::from(edx) << 32)
}

/// The widest single access ([`detect`]).
pub fn max_chunk() -> usize {
    usize::from(MAX_CHUNK.load(Ordering::Relaxed))
}

/// The width of the next piece of an access of `len` more bytes: the
/// largest power of two that fits, up to [`max_chunk`].
pub fn chunk(len: usize) -> usize {
    let cap = len.min(max_chunk()).max(1);
    1usize << (usize::BITS - 1 - cap.leading_zeros())
}

/// One load of exactly `out.len()` bytes (1, 2, 4, 8, 16, 32 or 64, at
/// most [`max_chunk`]) from `ptr` into `out`.
///
/// # Safety
///
/// `ptr..ptr+out.len()` must be mapped readable, or be the program's own
/// memory whose fault (if any) the program would have taken itself.
pub unsafe fn load(ptr: usize, out: &mut [u8]) -> bool {
    let dst = out.as_mut_ptr();
    // SAFETY: the caller's contract for `ptr`; `dst` is valid for
    // out.len() bytes. Each arm is one load of exactly that width (the
    // second instruction copies a register into `out`).
    unsafe {
        match out.len() {
            1 => {
                asm!("mov {t:l}, byte ptr [{p}]", "mov byte ptr [{d}], {t:l}", p = in(reg) ptr, d = in(reg) dst, t = out(reg) _, options(nostack, preserves_flags))
            }
            2 => {
                asm!("mov {t:x}, word ptr [{p}]", "mov word ptr [{d}], {t:x}", p = in(reg) ptr, d = in(reg) dst, t = out(reg) _, options(nostack, preserves_flags))
            }
            4 => {
                asm!("mov {t:e}, dword ptr [{p}]", "mov dword ptr [{d}], {t:e}", p = in(reg) ptr, d = in(reg) dst, t = out(reg) _, options(nostack, preserves_flags))
            }
            8 => {
                asm!("mov {t}, qword ptr [{p}]", "mov qword ptr [{d}], {t}", p = in(reg) ptr, d = in(reg) dst, t = out(reg) _, options(nostack, preserves_flags))
            }
            16 => {
                asm!("movdqu xmm0, xmmword ptr [{p}]", "movdqu xmmword ptr [{d}], xmm0", p = in(reg) ptr, d = in(reg) dst, out("xmm0") _, options(nostack, preserves_flags))
            }
            32 if max_chunk() >= 32 => {
                asm!("vmovdqu ymm0, ymmword ptr [{p}]", "vmovdqu ymmword ptr [{d}], ymm0", "vzeroupper", p = in(reg) ptr, d = in(reg) dst, out("xmm0") _, options(nostack, preserves_flags))
            }
            64 if max_chunk() >= 64 => {
                asm!("vmovdqu64 zmm0, zmmword ptr [{p}]", "vmovdqu64 zmmword ptr [{d}], zmm0", "vzeroupper", p = in(reg) ptr, d = in(reg) dst, out("xmm0") _, options(nostack, preserves_flags))
            }
            _ => return false,
        }
    }
    true
}

/// One store of exactly `bytes.len()` bytes (as [`load`]) to `ptr`.
///
/// # Safety
///
/// As [`load`], writable.
pub unsafe fn store(ptr: usize, bytes: &[u8]) -> bool {
    let src = bytes.as_ptr();
    // SAFETY: the caller's contract for `ptr`; `src` is valid for
    // bytes.len() bytes. Each arm is one store of exactly that width.
    unsafe {
        match bytes.len() {
            1 => {
                asm!("mov {t:l}, byte ptr [{s}]", "mov byte ptr [{p}], {t:l}", p = in(reg) ptr, s = in(reg) src, t = out(reg) _, options(nostack, preserves_flags))
            }
            2 => {
                asm!("mov {t:x}, word ptr [{s}]", "mov word ptr [{p}], {t:x}", p = in(reg) ptr, s = in(reg) src, t = out(reg) _, options(nostack, preserves_flags))
            }
            4 => {
                asm!("mov {t:e}, dword ptr [{s}]", "mov dword ptr [{p}], {t:e}", p = in(reg) ptr, s = in(reg) src, t = out(reg) _, options(nostack, preserves_flags))
            }
            8 => {
                asm!("mov {t}, qword ptr [{s}]", "mov qword ptr [{p}], {t}", p = in(reg) ptr, s = in(reg) src, t = out(reg) _, options(nostack, preserves_flags))
            }
            16 => {
                asm!("movdqu xmm0, xmmword ptr [{s}]", "movdqu xmmword ptr [{p}], xmm0", p = in(reg) ptr, s = in(reg) src, out("xmm0") _, options(nostack, preserves_flags))
            }
            32 if max_chunk() >= 32 => {
                asm!("vmovdqu ymm0, ymmword ptr [{s}]", "vmovdqu ymmword ptr [{p}], ymm0", "vzeroupper", p = in(reg) ptr, s = in(reg) src, out("xmm0") _, options(nostack, preserves_flags))
            }
            64 if max_chunk() >= 64 => {
                asm!("vmovdqu64 zmm0, zmmword ptr [{s}]", "vmovdqu64 zmmword ptr [{p}], zmm0", "vzeroupper", p = in(reg) ptr, s = in(reg) src, out("xmm0") _, options(nostack, preserves_flags))
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_powers_of_two_up_to_the_widest() {
        detect();
        assert_eq!(chunk(1), 1);
        assert_eq!(chunk(3), 2);
        assert_eq!(chunk(10), 8);
        assert_eq!(chunk(16), 16);
        assert_eq!(chunk(28), 16);
        assert_eq!(chunk(512), max_chunk());
    }

    #[test]
    fn every_width_copies_exactly_its_bytes() {
        detect();
        let source: Vec<u8> = (0..80u8).collect();
        for width in [1usize, 2, 4, 8, 16, 32, 64] {
            if width > max_chunk() {
                continue;
            }
            let mut out = vec![0xeeu8; width];
            // SAFETY: `source` holds 80 readable bytes; 3 + 64 <= 80.
            assert!(unsafe { load(source.as_ptr() as usize + 3, &mut out) });
            assert_eq!(out, source[3..3 + width]);
            let mut target = vec![0u8; 80];
            // SAFETY: `target` holds 80 writable bytes.
            assert!(unsafe { store(target.as_mut_ptr() as usize + 5, &out) });
            assert_eq!(target[5..5 + width], source[3..3 + width]);
            assert!(target[..5].iter().all(|&b| b == 0));
            assert!(target[5 + width..].iter().all(|&b| b == 0));
        }
    }
}
