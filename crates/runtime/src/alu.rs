//! The flags of `cmp` and `test`, computed by the CPU itself.
//!
//! # Safety
//!
//! Emulating a compare exactly means reproducing every arithmetic flag,
//! including the auxiliary-carry and parity flags and whatever the CPU
//! leaves in flags the manual calls undefined. Rather than recompute them,
//! the emulator runs the same instruction, at the same width, on copies of
//! its operands in registers and reads RFLAGS back. That needs inline
//! assembly, hence `unsafe`; the assembly touches nothing but the two
//! operand registers, the output register and the stack slot of
//! `pushfq`/`pop`.

use core::arch::asm;

/// The arithmetic flags: CF, PF, AF, ZF, SF, OF.
pub const ARITHMETIC_FLAGS: u64 = 0x8d5;

/// Which compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `cmp a, b`: the flags of `a - b`.
    Cmp,
    /// `test a, b`: the flags of `a & b`.
    Test,
}

macro_rules! flags_of {
    ($insn:literal, $a:expr, $b:expr, $mod:literal) => {{
        let flags: u64;
        // SAFETY: a register-only compare followed by pushfq/pop; the asm
        // block is not `nostack`, so the compiler keeps the stack usable.
        unsafe {
            asm!(
                concat!($insn, " {a", $mod, "}, {b", $mod, "}"),
                "pushfq",
                "pop {f}",
                a = in(reg) $a,
                b = in(reg) $b,
                f = lateout(reg) flags,
            );
        }
        flags
    }};
}

/// The RFLAGS image after `op a, b` at `width` bytes (1, 2, 4 or 8; only
/// the low `width` bytes of `a` and `b` count). Only the
/// [`ARITHMETIC_FLAGS`] bits are meaningful.
pub fn flags(op: Compare, width: u8, a: u64, b: u64) -> u64 {
    match (op, width) {
        (Compare::Cmp, 1) => flags_of!("cmp", a, b, ":l"),
        (Compare::Cmp, 2) => flags_of!("cmp", a, b, ":x"),
        (Compare::Cmp, 4) => flags_of!("cmp", a, b, ":e"),
        (Compare::Cmp, _) => flags_of!("cmp", a, b, ""),
        (Compare::Test, 1) => flags_of!("test", a, b, ":l"),
        (Compare::Test, 2) => flags_of!("test", a, b, ":x"),
        (Compare::Test, 4) => flags_of!("test", a, b, ":e"),
        (Compare::Test, _) => flags_of!("test", a, b, ""),
    }
}

/// `rflags` with its arithmetic flags replaced by those of `result`.
pub fn merge(rflags: u64, result: u64) -> u64 {
    (rflags & !ARITHMETIC_FLAGS) | (result & ARITHMETIC_FLAGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CF: u64 = 1;
    const ZF: u64 = 1 << 6;
    const SF: u64 = 1 << 7;
    const OF: u64 = 1 << 11;

    #[test]
    fn compare_flags_follow_the_width() {
        // 0x80 - 1 as bytes: signed overflow, no carry.
        let f = flags(Compare::Cmp, 1, 0x80, 1);
        assert_eq!(f & (CF | ZF | SF | OF), OF);
        // The same values as dwords: no overflow.
        let f = flags(Compare::Cmp, 4, 0x80, 1);
        assert_eq!(f & (CF | ZF | SF | OF), 0);
        // Upper bits beyond the width are ignored.
        let f = flags(Compare::Cmp, 2, 0xdead_0005, 0xbeef_0005);
        assert_eq!(f & ZF, ZF);
        let f = flags(Compare::Cmp, 8, 0, 1);
        assert_eq!(f & (CF | SF), CF | SF);
        let f = flags(Compare::Test, 8, 0xf0, 0x0f);
        assert_eq!(f & (ZF | CF | OF), ZF);
    }
}
