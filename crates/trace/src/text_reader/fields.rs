//! The fields of a text line: a cursor over the line's bytes that reads
//! numbers, times and values, and says where it failed.

use std::borrow::Cow;

use super::{LineError, LineErrorAt, LineResult};
use crate::event::*;
use crate::num::hex_digit_value;

/// Hex digit values by byte; 0xff for bytes that are not hex digits.
static HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'f' => d - b'a' + 10,
            d @ b'A'..=b'F' => d - b'A' + 10,
            _ => 0xff,
        };
        b += 1;
    }
    table
};

pub(super) struct Cursor<'a> {
    pub(super) s: &'a [u8],
    pub(super) i: usize,
}

impl<'a> Cursor<'a> {
    #[cold]
    pub(super) fn err_at(&self, column: usize, message: impl Into<Cow<'static, str>>) -> LineError {
        Box::new(LineErrorAt {
            column,
            message: message.into(),
        })
    }

    pub(super) fn err(&self, message: impl Into<Cow<'static, str>>) -> LineError {
        self.err_at(self.i, message)
    }

    #[inline(always)]
    pub(super) fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    pub(super) fn rest_is_blank(&self) -> bool {
        self.s[self.i.min(self.s.len())..]
            .iter()
            .all(|&b| b == b' ' || b == b'\t')
    }

    /// Describes the byte at the cursor for an error message.
    pub(super) fn found(&self) -> String {
        match self.peek() {
            None => "the end of the line".to_string(),
            Some(b) if b.is_ascii_graphic() => format!("\"{}\"", b as char),
            Some(b' ') => "a second space".to_string(),
            Some(b) => format!("byte {b:#04x}"),
        }
    }

    /// The single space that separates two fields.
    #[inline(always)]
    pub(super) fn space_before(&mut self, what: &'static str) -> LineResult<()> {
        if self.peek() == Some(b' ') {
            self.i += 1;
            Ok(())
        } else if self.peek().is_none() {
            Err(self.err(format!("the line ends before the {what}")))
        } else {
            Err(self.err(format!(
                "expected a space before the {what}, found {}",
                self.found()
            )))
        }
    }

    /// After a number: the field must end here.
    #[inline(always)]
    pub(super) fn end_of_field(&self, what: &'static str) -> LineResult<()> {
        match self.peek() {
            None | Some(b' ' | b'\t') => Ok(()),
            Some(_) => Err(self.err(format!("unexpected {} in the {what}", self.found()))),
        }
    }

    #[inline(always)]
    pub(super) fn dec_u64(&mut self, what: &'static str) -> LineResult<u64> {
        let start = self.i;
        let digits = self.s.get(start..).unwrap_or_default();
        let mut value: u64 = 0;
        let mut n = 0;
        // Up to 19 digits cannot overflow; longer runs take the checked path.
        while let Some(&d) = digits.get(n) {
            let d = d.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            value = value.wrapping_mul(10).wrapping_add(u64::from(d));
            n += 1;
        }
        if n == 0 || n > 19 {
            return self.dec_u64_slow(what);
        }
        self.i = start + n;
        self.end_of_field(what)?;
        Ok(value)
    }

    #[cold]
    pub(super) fn dec_u64_slow(&mut self, what: &'static str) -> LineResult<u64> {
        let start = self.i;
        let mut value: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| self.err_at(start, format!("the {what} is too large")))?;
            self.i += 1;
        }
        if self.i == start {
            return Err(self.err(format!("expected a decimal {what}, found {}", self.found())));
        }
        self.end_of_field(what)?;
        Ok(value)
    }

    #[inline(always)]
    pub(super) fn dec_u32(&mut self, what: &'static str) -> LineResult<u32> {
        let start = self.i;
        let value = self.dec_u64(what)?;
        u32::try_from(value).map_err(|_| {
            self.err_at(
                start,
                format!("the {what} is too large (the maximum is 4294967295)"),
            )
        })
    }

    /// ` <decimal>`.
    #[inline(always)]
    pub(super) fn field_dec_u32(&mut self, what: &'static str) -> LineResult<u32> {
        self.space_before(what)?;
        self.dec_u32(what)
    }

    /// Hex digits (no prefix) into a u64.
    #[inline(always)]
    pub(super) fn hex_digits(&mut self, what: &'static str, after_0x: bool) -> LineResult<u64> {
        let start = self.i;
        let digits = self.s.get(start..).unwrap_or_default();
        let mut value: u64 = 0;
        let mut n = 0;
        while let Some(&d) = digits.get(n) {
            let d = HEX_VALUE[usize::from(d)];
            if d > 15 {
                break;
            }
            value = (value << 4) | u64::from(d);
            n += 1;
        }
        if n == 0 || n > 16 {
            return self.hex_digits_slow(what, after_0x);
        }
        self.i = start + n;
        self.end_of_field(what)?;
        Ok(value)
    }

    /// No digits, or more than 16 of them (leading zeros, or an overflow).
    #[cold]
    pub(super) fn hex_digits_slow(
        &mut self,
        what: &'static str,
        after_0x: bool,
    ) -> LineResult<u64> {
        let start = self.i;
        let mut value: u64 = 0;
        while let Some(d) = self.peek().and_then(hex_digit_value) {
            if value >> 60 != 0 {
                return Err(self.err_at(start, format!("the {what} does not fit in 64 bits")));
            }
            value = (value << 4) | u64::from(d);
            self.i += 1;
        }
        if self.i == start {
            return Err(if after_0x {
                self.err("expected a hex value after \"0x\"")
            } else {
                self.err(format!("expected a hex {what}, found {}", self.found()))
            });
        }
        self.end_of_field(what)?;
        Ok(value)
    }

    #[inline(always)]
    pub(super) fn expect_0x(&mut self, what: &'static str) -> LineResult<()> {
        if self.s[self.i.min(self.s.len())..].starts_with(b"0x") {
            self.i += 2;
            Ok(())
        } else {
            Err(self.err(format!(
                "expected \"0x\" and the {what}, found {}",
                self.found()
            )))
        }
    }

    /// ` 0x<hex>`.
    #[inline(always)]
    pub(super) fn field_0x(&mut self, what: &'static str) -> LineResult<u64> {
        self.space_before(what)?;
        self.expect_0x(what)?;
        self.hex_digits(what, true)
    }

    /// ` <hex>` without a prefix, as in PCIDEV lines.
    pub(super) fn field_hex(&mut self, what: &'static str) -> LineResult<u64> {
        self.space_before(what)?;
        self.hex_digits(what, false)
    }

    /// ` <hex>` of exactly `digits` digits (PCIDEV's `%02x%02x`, `%04x%04x`).
    pub(super) fn field_hex_fixed(&mut self, what: &'static str, digits: usize) -> LineResult<u64> {
        self.space_before(what)?;
        let start = self.i;
        let value = self.hex_digits(what, false)?;
        if self.i - start != digits {
            return Err(self.err_at(
                start,
                format!("expected exactly {digits} hex digits for the {what}"),
            ));
        }
        Ok(value)
    }

    /// ` %u.%06lu`.
    #[inline(always)]
    pub(super) fn field_time(&mut self) -> LineResult<Timestamp> {
        self.space_before("time")?;
        self.time()
    }

    /// `%u.%06lu` at the cursor.
    #[inline(always)]
    pub(super) fn time(&mut self) -> LineResult<Timestamp> {
        let start = self.i;
        let mut secs: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            secs = secs
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| self.err_at(start, "the time is too large"))?;
            self.i += 1;
        }
        if self.i == start {
            return Err(self.err(format!(
                "expected a time (seconds.microseconds), found {}",
                self.found()
            )));
        }
        if self.peek() != Some(b'.') {
            return Err(self.err(format!(
                "expected \".\" and 6 digits of microseconds in the time, found {}",
                self.found()
            )));
        }
        self.i += 1;
        let mut micros: u64 = 0;
        for _ in 0..6 {
            match self.peek() {
                Some(d @ b'0'..=b'9') => {
                    micros = micros * 10 + u64::from(d - b'0');
                    self.i += 1;
                }
                _ => {
                    return Err(self.err(format!(
                        "expected 6 digits of microseconds in the time, found {}",
                        self.found()
                    )));
                }
            }
        }
        self.end_of_field("time")?;
        let nanos = secs
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(micros * 1000))
            .ok_or_else(|| self.err_at(start, "the time is too large (over 584 years)"))?;
        Ok(Timestamp::from_nanos(nanos))
    }

    /// A wide value: `0x` and up to 2×`width` hex digits, most significant first.
    pub(super) fn field_wide_value(&mut self, width: u8) -> LineResult<Value> {
        self.space_before("value")?;
        self.wide_value(width)
    }

    /// A value of `width` bytes at the cursor: `0x` and hex digits (the
    /// wide form above 8 bytes).
    pub(super) fn value(&mut self, width: u8) -> LineResult<Value> {
        if width > 8 {
            return self.wide_value(width);
        }
        let value_at = self.i;
        self.expect_0x("value")?;
        let raw = self.hex_digits("value", true)?;
        let mut value = Value::ZERO;
        if !value.set_u64(width, raw) {
            return Err(self.err_at(value_at, format!("the value does not fit in {width} bytes")));
        }
        Ok(value)
    }

    /// The wide form of a value at the cursor.
    pub(super) fn wide_value(&mut self, width: u8) -> LineResult<Value> {
        self.expect_0x("value")?;
        let start = self.i;
        while self.peek().and_then(hex_digit_value).is_some() {
            self.i += 1;
        }
        let digits = &self.s[start..self.i];
        if digits.is_empty() {
            return Err(self.err("expected a hex value after \"0x\""));
        }
        self.end_of_field("value")?;
        let significant = digits
            .iter()
            .position(|&d| d != b'0')
            .map_or(&digits[..0], |first| &digits[first..]);
        if significant.len() > 2 * usize::from(width) {
            return Err(self.err_at(start, format!("the value does not fit in {width} bytes")));
        }
        // docs/FORMAT.md: up to 2×width digits, leading zeros included.
        if digits.len() > 2 * usize::from(width) {
            return Err(self.err_at(
                start,
                format!(
                    "a {width}-byte value has at most {} hex digits, this one has {}",
                    2 * usize::from(width),
                    digits.len()
                ),
            ));
        }
        let mut le = [0u8; Value::MAX_WIDTH];
        // Walk from the least significant digit, two digits per byte.
        for (k, &d) in significant.iter().rev().enumerate() {
            let nibble = hex_digit_value(d).unwrap_or(0);
            le[k / 2] |= nibble << (4 * (k % 2));
        }
        Value::from_le_bytes(&le[..usize::from(width)])
            .ok_or_else(|| self.err_at(start, "invalid value width"))
    }
}
