//! Number formatting without `fmt` machinery: the writers format tens of
//! millions of numbers, and `write!` costs several times more than these.

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `v` in decimal.
///
/// Each of these appends a fixed number of bytes and then truncates: a
/// fixed-size copy is a few stores, where appending a slice of varying
/// length calls `memcpy`, and a text trace line holds some ten numbers.
#[inline]
pub(crate) fn push_dec(out: &mut Vec<u8>, mut v: u64) {
    let digits = v.checked_ilog10().map_or(1, |log| log as usize + 1);
    let start = out.len();
    out.extend_from_slice(&[b'0'; 20]);
    for slot in out[start..start + digits].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.truncate(start + digits);
}

/// Appends `v` in decimal, zero-padded to exactly 6 digits (`v` < 1,000,000).
#[inline]
pub(crate) fn push_dec6(out: &mut Vec<u8>, v: u64) {
    debug_assert!(v < 1_000_000);
    let mut digits = [0u8; 6];
    let mut v = v % 1_000_000;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits);
}

/// Appends `v` in lowercase hex without leading zeros (`%x`), no `0x`.
#[inline]
pub(crate) fn push_hex(out: &mut Vec<u8>, v: u64) {
    let digits = if v == 0 {
        1
    } else {
        (64 - v.leading_zeros()).div_ceil(4) as usize
    };
    push_hex_padded(out, v, digits);
}

/// Appends the low `digits` nibbles of `v` in lowercase hex (`%0Nx`), no `0x`.
#[inline]
pub(crate) fn push_hex_padded(out: &mut Vec<u8>, v: u64, digits: usize) {
    let digits = digits.min(16);
    if digits == 0 {
        return;
    }
    // The wanted nibbles first: all 16 are formatted, the rest cut off.
    let start = out.len();
    out.extend_from_slice(&hex16(v << (4 * (16 - digits))));
    out.truncate(start + digits);
}

/// The 16 nibbles of `v` in lowercase hex, the most significant first,
/// without a loop or a table: each nibble spread into a byte of its own,
/// then turned into its digit in all bytes at once.
#[inline]
fn hex16(v: u64) -> [u8; 16] {
    const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    let mut x = u128::from(v);
    x = (x | x << 32) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    x = (x | x << 16) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    x = (x | x << 4) & (ONES * 0x0f);
    // Byte k holds nibble k. 10..=15 carry into bit 4 when 6 is added.
    let letters = ((x + ONES * 6) >> 4) & ONES;
    let digits = x + ONES * u128::from(b'0') + letters * u128::from(b'a' - b'0' - 10);
    digits.swap_bytes().to_le_bytes()
}

/// Appends one byte as two lowercase hex digits.
#[inline]
pub(crate) fn push_hex_byte(out: &mut Vec<u8>, b: u8) {
    out.push(HEX_DIGITS[(b >> 4) as usize]);
    out.push(HEX_DIGITS[(b & 0xf) as usize]);
}

/// The value of one ASCII hex digit.
#[inline]
pub(crate) fn hex_digit_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn matches_printf() {
        for v in [
            0u64,
            1,
            9,
            10,
            15,
            16,
            255,
            4096,
            0xfebf0010,
            99,
            100,
            999_999_999,
            1_000_000_000,
            9_999_999_999_999_999_999,
            10_000_000_000_000_000_000,
            u64::MAX,
            1 << 63,
        ] {
            assert_eq!(fmt(|o| push_dec(o, v)), format!("{v}"));
            assert_eq!(fmt(|o| push_hex(o, v)), format!("{v:x}"));
            assert_eq!(fmt(|o| push_hex_padded(o, v, 16)), format!("{v:016x}"));
            assert_eq!(
                fmt(|o| push_hex_padded(o, v, 4)),
                format!("{:04x}", v & 0xffff)
            );
            // After what is already there, which stays.
            let mut out = b"x=".to_vec();
            push_dec(&mut out, v);
            assert_eq!(out, format!("x={v}").as_bytes());
        }
        for v in [0u64, 1, 345, 999_999] {
            assert_eq!(fmt(|o| push_dec6(o, v)), format!("{v:06}"));
        }
        assert_eq!(fmt(|o| push_hex_byte(o, 0x0f)), "0f");
    }

    #[test]
    fn hex_matches_printf_at_every_length() {
        let mut v = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..10_000u32 {
            v ^= v << 13;
            v ^= v >> 7;
            v ^= v << 17;
            // Every number of digits, and digits 0-9 and a-f in each place.
            let n = v >> (i % 64);
            assert_eq!(fmt(|o| push_hex(o, n)), format!("{n:x}"));
            let digits = (i % 17) as usize;
            let padded = format!("{n:016x}");
            assert_eq!(
                fmt(|o| push_hex_padded(o, n, digits)),
                padded[16 - digits..]
            );
        }
    }
}
