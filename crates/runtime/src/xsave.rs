//! The interrupted thread's vector registers, in the signal frame.
//!
//! On signal delivery the kernel saves the x87/SSE/AVX/AVX-512 state into
//! the signal frame with `xsave` (standard, non-compacted format) and
//! restores it from there at `sigreturn`. `uc_mcontext.fpregs` points at
//! that area: the 512-byte FXSAVE region (XMM0-15 at offset 160), the
//! 64-byte XSAVE header (XSTATE_BV at 512), then the extended components
//! at the offsets CPUID leaf 0xD reports: YMM_Hi128 (the upper halves of
//! YMM0-15), the opmask registers, ZMM_Hi256 (the upper halves of ZMM0-15)
//! and Hi16_ZMM (ZMM16-31). A component whose XSTATE_BV bit is clear is in
//! its initial state (all zero) whatever the area holds; writing a register
//! of such a component zeroes the component first and sets the bit.
//!
//! The kernel marks the area with `FP_XSTATE_MAGIC1` in the FXSAVE
//! region's software-reserved bytes (offset 464), followed by the size and
//! the components the frame holds; without it, only the FXSAVE region is
//! there.
//!
//! # Safety
//!
//! The area is raw memory the kernel placed in the signal frame; this
//! module reads and writes it through raw pointers, within the size the
//! kernel recorded, and executes CPUID, hence `unsafe`.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use iced_x86::Register;

use crate::emulate::Vectors;

/// The interrupted thread's x87/SSE/AVX state, where the kernel saved it
/// (the signal frame), as the trampoline needs it.
#[derive(Debug, Clone, Copy)]
pub struct FpFrame {
    pub area: *mut u8,
    /// `xrstor`/`xsave` component mask; 0 means the legacy FXSAVE format only.
    pub xsave_mask: u64,
    /// Bytes of the area the kernel wrote.
    pub size: usize,
}

const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
const SW_RESERVED: usize = 464;
const XSTATE_BV: usize = 512;
const XMM0: usize = 160;
const FXSAVE_SIZE: usize = 512;

/// Components the trampoline switches: x87, SSE, AVX, opmask, ZMM_Hi256,
/// Hi16_ZMM (not MPX, PKRU or AMX).
pub const SWITCHED: u64 = 0b1110_0111;

const SSE: u32 = 1;
const AVX: u32 = 2;
const OPMASK: u32 = 5;
const ZMM_HI256: u32 = 6;
const HI16_ZMM: u32 = 7;

/// Offset and size of each component 0..8 in the standard format (CPUID
/// leaf 0xD, sub-leaf i: EBX offset, EAX size), packed offset << 16 | size.
static LAYOUT: [AtomicU32; 8] = [const { AtomicU32::new(0) }; 8];
/// XCR0, or 0 when the OS has not enabled XSAVE.
static XCR0: AtomicU64 = AtomicU64::new(0);
/// Whether the CPU has XSAVEC (CPUID leaf 0xD, sub-leaf 1, EAX bit 1).
static XSAVEC: AtomicBool = AtomicBool::new(false);

/// Reads the layout from CPUID (never on the signal path: CPUID traps to
/// the hypervisor in a VM).
pub fn detect() {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    let max_leaf = core::arch::x86_64::__cpuid(0).eax;
    if leaf1.ecx & (1 << 27) == 0 || max_leaf < 0xd {
        return;
    }
    let xcr0 = crate::access::xgetbv0();
    for (component, slot) in LAYOUT.iter().enumerate().skip(2) {
        if xcr0 & (1 << component) == 0 {
            continue;
        }
        let sub = core::arch::x86_64::__cpuid_count(0xd, component as u32);
        slot.store((sub.ebx << 16) | (sub.eax & 0xffff), Ordering::Relaxed);
    }
    XSAVEC.store(
        core::arch::x86_64::__cpuid_count(0xd, 1).eax & 0b10 != 0,
        Ordering::Relaxed,
    );
    XCR0.store(xcr0, Ordering::Relaxed);
}

/// The vector state Rust code and the C library it calls may change:
/// x87, SSE (with MXCSR), AVX, the AVX-512 opmask and upper registers
/// (glibc's `memcpy` and `memset` use YMM16-31 and the opmasks where the
/// CPU has AVX-512, and end AVX2 code with `vzeroupper`).
const SCRATCH_STATE: u64 = 0b1110_0111;

/// How a patched site's trampoline saves the vector state around Rust
/// code: the XSAVE component mask, the bytes of the area (a multiple of
/// 64), and whether to use XSAVEC (else XSAVE); `None` without XSAVE.
pub fn scratch_area() -> Option<(u64, usize, bool)> {
    let xcr0 = XCR0.load(Ordering::Relaxed);
    if xcr0 & 0b11 != 0b11 {
        return None;
    }
    let mask = xcr0 & SCRATCH_STATE;
    let end = (2..8u32)
        .filter(|c| mask & (1 << c) != 0)
        .filter_map(layout)
        .map(|(offset, size)| offset + size)
        .fold(576, usize::max);
    Some((mask, (end + 63) & !63, XSAVEC.load(Ordering::Relaxed)))
}

fn layout(component: u32) -> Option<(usize, usize)> {
    let packed = LAYOUT.get(component as usize)?.load(Ordering::Relaxed);
    (packed != 0).then_some(((packed >> 16) as usize, (packed & 0xffff) as usize))
}

/// The FP state saved in the frame of `uc`, if the kernel saved one.
pub fn frame(uc: &libc::ucontext_t) -> Option<FpFrame> {
    let area = uc.uc_mcontext.fpregs as *mut u8;
    if area.is_null() || area as usize % 16 != 0 {
        return None;
    }
    // SAFETY: fpregs points at the frame's FXSAVE region, 512 bytes.
    let magic1 = unsafe { (area.add(SW_RESERVED) as *const u32).read() };
    // SAFETY: as above; the software-reserved bytes hold the extended size
    // (u32 at +4), the component mask (u64 at +8) and the XSAVE size (u32 at +16).
    let (xfeatures, xstate_size) = unsafe {
        (
            (area.add(SW_RESERVED + 8) as *const u64).read_unaligned(),
            (area.add(SW_RESERVED + 16) as *const u32).read_unaligned() as usize,
        )
    };
    let xcr0 = XCR0.load(Ordering::Relaxed);
    if magic1 != FP_XSTATE_MAGIC1 || area as usize % 64 != 0 || xcr0 == 0 {
        return Some(FpFrame {
            area,
            xsave_mask: 0,
            size: FXSAVE_SIZE,
        });
    }
    // SAFETY: with MAGIC1 present the kernel wrote xstate_size bytes and
    // MAGIC2 right after them.
    let magic2 = unsafe { (area.add(xstate_size) as *const u32).read_unaligned() };
    if magic2 != FP_XSTATE_MAGIC2 {
        return None;
    }
    Some(FpFrame {
        area,
        xsave_mask: xfeatures & xcr0 & SWITCHED,
        size: xstate_size,
    })
}

/// After a copy of an x87 instruction ran at `copy_ip` on the scratch at
/// `scratch`, makes the saved last-instruction and last-operand pointers
/// name the program's instruction at `rip` and its operand at `addr`.
pub fn fix_x87_pointers(frame: FpFrame, copy_ip: u64, scratch: u64, rip: u64, addr: u64) {
    let area = frame.area;
    // SAFETY: FIP and FDP are the u64s at 8 and 16 of the FXSAVE region
    // (64-bit format), inside the frame's area.
    unsafe {
        let fip = area.add(8) as *mut u64;
        if fip.read_unaligned() == copy_ip {
            fip.write_unaligned(rip);
        }
        let fdp = area.add(16) as *mut u64;
        let last = fdp.read_unaligned();
        if last >= scratch && last < scratch + 1024 {
            fdp.write_unaligned(addr.wrapping_add(last - scratch));
        }
    }
}

/// The vector registers of a frame, for the emulator.
#[derive(Debug)]
pub struct FrameVectors {
    frame: FpFrame,
}

impl FrameVectors {
    pub fn new(frame: FpFrame) -> FrameVectors {
        FrameVectors { frame }
    }

    fn in_frame(&self, component: u32) -> bool {
        component == SSE || self.frame.xsave_mask & (1 << component) != 0
    }

    fn xstate_bv(&self) -> u64 {
        if self.frame.xsave_mask == 0 {
            // FXSAVE format: the SSE state is always there.
            return 1 << SSE;
        }
        // SAFETY: the XSAVE header is inside an XSAVE-format area.
        unsafe { (self.frame.area.add(XSTATE_BV) as *const u64).read() }
    }

    /// Where the part of register `n` starting at byte `from` lives:
    /// `Some(Some((component, offset)))`; `Some(None)` when the CPU (the
    /// frame) does not have that part (the bits above 128 without AVX, above
    /// 256 without AVX-512): it reads as zero and can only be written zero;
    /// `None` when the register does not exist.
    fn place(&self, n: usize, from: usize) -> Option<Option<(u32, usize)>> {
        let component = match (n, from) {
            (0..16, 0..16) => SSE,
            (0..16, 16..32) => AVX,
            (0..16, 32..64) => ZMM_HI256,
            (16..32, 0..64) => HI16_ZMM,
            _ => return None,
        };
        if !self.in_frame(component) {
            // XMM16-31 exist only with AVX-512.
            return (n < 16).then_some(None);
        }
        let offset = match component {
            SSE => XMM0 + 16 * n + from,
            AVX => layout(AVX)?.0 + 16 * n + from - 16,
            ZMM_HI256 => layout(ZMM_HI256)?.0 + 32 * n + from - 32,
            _ => layout(HI16_ZMM)?.0 + 64 * (n - 16) + from,
        };
        (offset < self.frame.size).then_some(Some((component, offset)))
    }

    /// Makes `component` hold its initial state explicitly and marks it in use.
    fn claim(&mut self, component: u32) -> Option<()> {
        if self.xstate_bv() & (1 << component) != 0 {
            return Some(());
        }
        if self.frame.xsave_mask == 0 {
            return None;
        }
        let (offset, size) = if component == SSE {
            (XMM0, 256)
        } else {
            layout(component)?
        };
        if offset + size > self.frame.size {
            return None;
        }
        // SAFETY: inside the frame's area (checked above).
        unsafe {
            core::ptr::write_bytes(self.frame.area.add(offset), 0, size);
            let bv = self.frame.area.add(XSTATE_BV) as *mut u64;
            bv.write(bv.read() | (1 << component));
        }
        Some(())
    }
}

/// Pieces of a register's bytes that lie in one component: 0..16, 16..32, 32..64.
const PARTS: [(usize, usize); 3] = [(0, 16), (16, 32), (32, 64)];

impl Vectors for FrameVectors {
    fn read(&mut self, reg: Register, out: &mut [u8]) -> Option<()> {
        let n = vector_number(reg)?;
        let bv = self.xstate_bv();
        for &(from, to) in PARTS.iter() {
            if from >= out.len() {
                break;
            }
            let to = to.min(out.len());
            let dst = out.get_mut(from..to)?;
            let Some((component, offset)) = self.place(n, from)? else {
                dst.fill(0);
                continue;
            };
            if bv & (1 << component) == 0 {
                dst.fill(0);
            } else {
                // SAFETY: place() checked the offset against the frame size;
                // a part never crosses its component.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        self.frame.area.add(offset),
                        dst.as_mut_ptr(),
                        dst.len(),
                    )
                };
            }
        }
        Some(())
    }

    fn write(&mut self, reg: Register, bytes: &[u8], zero_to: usize) -> Option<()> {
        let n = vector_number(reg)?;
        let end = zero_to.max(bytes.len()).min(64);
        // Check every part first: a refused write must change nothing.
        for &(from, to) in PARTS.iter().filter(|&&(from, _)| from < end) {
            let source = bytes.get(from.min(bytes.len())..to.min(bytes.len()))?;
            if self.place(n, from)?.is_none() && source.iter().any(|&b| b != 0) {
                return None;
            }
        }
        for &(from, to) in PARTS.iter() {
            if from >= end {
                break;
            }
            let to = to.min(end);
            let source = bytes.get(from.min(bytes.len())..to.min(bytes.len()))?;
            let Some((component, offset)) = self.place(n, from)? else {
                // A part this CPU does not have: zero, nothing to write.
                continue;
            };
            let zeros = to - from - source.len();
            if source.iter().all(|&b| b == 0) && self.xstate_bv() & (1 << component) == 0 {
                // Already zero in its initial state.
                continue;
            }
            self.claim(component)?;
            // SAFETY: place() checked the offset against the frame size.
            unsafe {
                let dst = self.frame.area.add(offset);
                core::ptr::copy_nonoverlapping(source.as_ptr(), dst, source.len());
                core::ptr::write_bytes(dst.add(source.len()), 0, zeros);
            }
        }
        Some(())
    }

    fn opmask(&mut self, k: Register) -> Option<u64> {
        let n = (k as usize).checked_sub(Register::K0 as usize)?;
        if n >= 8 {
            return None;
        }
        if !self.in_frame(OPMASK) || self.xstate_bv() & (1 << OPMASK) == 0 {
            return Some(0);
        }
        let (offset, _) = layout(OPMASK)?;
        if offset + 8 * n + 8 > self.frame.size {
            return None;
        }
        // SAFETY: inside the frame's area (checked above).
        Some(unsafe { (self.frame.area.add(offset + 8 * n) as *const u64).read_unaligned() })
    }
}

/// The number (0..32) of an XMM, YMM or ZMM register.
pub fn vector_number(reg: Register) -> Option<usize> {
    let first = if reg.is_xmm() {
        Register::XMM0
    } else if reg.is_ymm() {
        Register::YMM0
    } else if reg.is_zmm() {
        Register::ZMM0
    } else {
        return None;
    };
    Some(reg as usize - first as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(64))]
    struct Area([u8; 4096]);

    fn frame(area: &mut Area, mask: u64) -> FpFrame {
        FpFrame {
            area: area.0.as_mut_ptr(),
            xsave_mask: mask,
            size: 4096,
        }
    }

    #[test]
    fn writing_claims_a_component_in_its_initial_state() {
        detect();
        if XCR0.load(Ordering::Relaxed) & 0b110 != 0b110 {
            println!("note: no AVX state on this CPU; test skipped");
            return;
        }
        let mut area = Area([0xee; 4096]);
        // XSTATE_BV: x87 and SSE in use, AVX in its initial state.
        area.0[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&0b011u64.to_le_bytes());
        let mut vectors = FrameVectors::new(frame(&mut area, 0b111));
        let mut ymm3 = [0u8; 32];
        vectors.read(Register::YMM3, &mut ymm3).expect("read");
        assert_eq!(&ymm3[16..], &[0; 16], "initial state reads as zero");
        let value: Vec<u8> = (1..=32).collect();
        vectors.write(Register::YMM3, &value, 32).expect("write");
        let bv = u64::from_le_bytes(area.0[XSTATE_BV..XSTATE_BV + 8].try_into().expect("8"));
        assert_eq!(bv & 0b100, 0b100, "AVX marked in use");
        let mut vectors = FrameVectors::new(frame(&mut area, 0b111));
        let mut ymm3 = [0u8; 32];
        vectors.read(Register::YMM3, &mut ymm3).expect("read");
        assert_eq!(ymm3[..], value[..]);
        // The other registers' upper halves were zeroed, not left 0xee.
        let mut ymm4 = [0u8; 32];
        vectors.read(Register::YMM4, &mut ymm4).expect("read");
        assert_eq!(&ymm4[16..], &[0; 16]);
    }

    #[test]
    fn parts_the_cpu_lacks_read_as_zero_and_take_only_zeros() {
        detect();
        let mut area = Area([0; 4096]);
        area.0[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&0b011u64.to_le_bytes());
        // A frame with x87 and SSE only (no AVX, no AVX-512).
        let mut vectors = FrameVectors::new(frame(&mut area, 0b011));
        let xmm: Vec<u8> = (1..=16).collect();
        vectors
            .write(Register::XMM2, &xmm, 64)
            .expect("VEX-style load zeroing up to 512 bits");
        let mut zmm = [0xffu8; 64];
        vectors.read(Register::ZMM2, &mut zmm).expect("read");
        assert_eq!(zmm[..16], xmm[..]);
        assert!(zmm[16..].iter().all(|&b| b == 0));
        let wide = [1u8; 32];
        assert_eq!(vectors.write(Register::YMM2, &wide, 32), None);
        assert_eq!(vectors.read(Register::XMM17, &mut [0u8; 16]), None);
    }
}
