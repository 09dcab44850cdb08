//! The XSAVE area of a case: building a random initial state, and reading
//! registers from a saved one with XSTATE_BV applied.

use super::rng::Rng;

pub const SSE: usize = 1;
pub const AVX: usize = 2;
pub const OPMASK: usize = 5;
pub const ZMM_HI256: usize = 6;
pub const HI16_ZMM: usize = 7;

/// The CPU's XSAVE layout and the components the harness switches.
#[derive(Debug, Clone)]
pub struct Layout {
    /// x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM, as far as XCR0 enables them.
    pub mask: u64,
    /// Standard-format offset of each component (0 when absent).
    pub offset: [usize; 8],
    pub avx: bool,
    pub avx512: bool,
}

impl Layout {
    pub fn detect() -> Layout {
        let xcr0 = xgetbv0();
        let mask = xcr0 & 0b1110_0111;
        let mut offset = [0usize; 8];
        for (component, slot) in offset.iter_mut().enumerate().skip(2) {
            if mask & (1 << component) != 0 {
                *slot = core::arch::x86_64::__cpuid_count(0xd, component as u32).ebx as usize;
            }
        }
        Layout {
            mask,
            offset,
            avx: mask & 0b100 != 0 && std::arch::is_x86_feature_detected!("avx"),
            avx512: mask & 0b1110_0000 == 0b1110_0000
                && std::arch::is_x86_feature_detected!("avx512f"),
        }
    }

    /// The number of vector registers and their width in bytes.
    pub fn vectors(&self) -> (usize, usize) {
        if self.avx512 {
            (32, 64)
        } else if self.avx {
            (16, 32)
        } else {
            (16, 16)
        }
    }

    /// A random initial state: x87 with four valid random registers,
    /// default control words (random rounding), random vector and opmask
    /// registers, every component in use.
    pub fn random_area(&self, rng: &mut Rng, area: &mut [u8]) {
        area.fill(0);
        area[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        // FTW (abridged): ST0..ST3 valid, with TOP = 0.
        area[4] = 0x0f;
        for st in 0..4 {
            let base = 32 + 16 * st;
            let mantissa = rng.next() | (1 << 63);
            area[base..base + 8].copy_from_slice(&mantissa.to_le_bytes());
            let exponent = (0x3fff - 20 + (rng.below(40) as u16)) | ((rng.below(2) as u16) << 15);
            area[base + 8..base + 10].copy_from_slice(&exponent.to_le_bytes());
        }
        let mxcsr = 0x1f80u32 | ((rng.below(4) as u32) << 13);
        area[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        area[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        let (count, width) = self.vectors();
        for n in 0..count {
            let mut bytes = [0u8; 64];
            rng.fill(&mut bytes[..width]);
            self.put_vector(area, n, &bytes);
        }
        if self.avx512 {
            for k in 0..8 {
                let value = rng.next();
                let at = self.offset[OPMASK] + 8 * k;
                area[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        // Some components start in their initial state (XSTATE_BV bit
        // clear, whatever the area holds), as after `vzeroupper`: writing
        // a register there must claim the component.
        let mut in_use = self.mask;
        for (component, percent) in [
            (SSE, 10),
            (AVX, 25),
            (OPMASK, 15),
            (ZMM_HI256, 25),
            (HI16_ZMM, 15),
        ] {
            if rng.chance(percent) {
                in_use &= !(1u64 << component);
            }
        }
        area[512..520].copy_from_slice(&in_use.to_le_bytes());
    }

    fn put_vector(&self, area: &mut [u8], n: usize, bytes: &[u8; 64]) {
        if n < 16 {
            area[160 + 16 * n..176 + 16 * n].copy_from_slice(&bytes[..16]);
            if self.avx {
                let at = self.offset[AVX] + 16 * n;
                area[at..at + 16].copy_from_slice(&bytes[16..32]);
            }
            if self.avx512 {
                let at = self.offset[ZMM_HI256] + 32 * n;
                area[at..at + 32].copy_from_slice(&bytes[32..64]);
            }
        } else if self.avx512 {
            let at = self.offset[HI16_ZMM] + 64 * (n - 16);
            area[at..at + 64].copy_from_slice(bytes);
        }
    }

    fn in_use(&self, area: &[u8], component: usize) -> bool {
        let bv = u64::from_le_bytes(area[512..520].try_into().expect("8 bytes"));
        bv & (1 << component) != 0
    }

    /// Vector register `n` (all 64 bytes, zero beyond what the CPU has).
    pub fn vector(&self, area: &[u8], n: usize) -> [u8; 64] {
        let mut out = [0u8; 64];
        if n < 16 {
            if self.in_use(area, SSE) {
                out[..16].copy_from_slice(&area[160 + 16 * n..176 + 16 * n]);
            }
            if self.avx && self.in_use(area, AVX) {
                let at = self.offset[AVX] + 16 * n;
                out[16..32].copy_from_slice(&area[at..at + 16]);
            }
            if self.avx512 && self.in_use(area, ZMM_HI256) {
                let at = self.offset[ZMM_HI256] + 32 * n;
                out[32..64].copy_from_slice(&area[at..at + 32]);
            }
        } else if self.avx512 && self.in_use(area, HI16_ZMM) {
            let at = self.offset[HI16_ZMM] + 64 * (n - 16);
            out.copy_from_slice(&area[at..at + 64]);
        }
        out
    }

    pub fn opmask(&self, area: &[u8], k: usize) -> u64 {
        if !self.avx512 || !self.in_use(area, OPMASK) {
            return 0;
        }
        let at = self.offset[OPMASK] + 8 * k;
        u64::from_le_bytes(area[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Everything a case can change, in one comparable dump: the x87
    /// region (control, status, tags, last instruction/operand, ST0-7),
    /// MXCSR, every vector register and the opmask registers.
    pub fn dump(&self, area: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(2600);
        if self.in_use(area, 0) {
            out.extend_from_slice(&area[0..24]);
            out.extend_from_slice(&area[32..160]);
        } else {
            let mut init = [0u8; 152];
            init[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
            out.extend_from_slice(&init);
        }
        out.extend_from_slice(&area[24..28]);
        let (count, _) = self.vectors();
        for n in 0..count {
            out.extend_from_slice(&self.vector(area, n));
        }
        for k in 0..8 {
            out.extend_from_slice(&self.opmask(area, k).to_le_bytes());
        }
        out
    }

    /// Names the part of a [`Layout::dump`] at `offset`.
    pub fn describe(&self, offset: usize) -> String {
        let (count, _) = self.vectors();
        match offset {
            0..24 => format!("x87 control/status/pointers byte {offset}"),
            24..152 => format!("ST{}", (offset - 24) / 16),
            152..156 => "MXCSR".to_owned(),
            o if o < 156 + 64 * count => {
                let byte = (o - 156) % 64;
                format!("vector register {} byte {byte}", (o - 156) / 64)
            }
            o => format!("k{}", (o - 156 - 64 * count) / 8),
        }
    }
}

fn xgetbv0() -> u64 {
    assert!(
        core::arch::x86_64::__cpuid(1).ecx & (1 << 27) != 0,
        "the OS has not enabled XSAVE"
    );
    let (eax, edx): (u32, u32);
    // SAFETY: xgetbv 0 is valid when CPUID.1:ECX.OSXSAVE is set (checked above).
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") eax, out("edx") edx, options(nomem, nostack));
    }
    u64::from(eax) | (u64::from(edx) << 32)
}
