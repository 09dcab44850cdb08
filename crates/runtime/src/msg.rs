//! One-line messages to standard error, formatted on the stack.
//!
//! `std::io` and `format!` may allocate or lock; these messages are written
//! from the `mmap` interposer and from the signal handlers.

use crate::sys;

/// A message of at most 512 bytes; longer text is cut.
#[derive(Debug)]
pub struct Msg {
    buf: [u8; 512],
    len: usize,
}

impl Default for Msg {
    fn default() -> Msg {
        Msg::new()
    }
}

impl Msg {
    /// Starts a message with the `mmiotrace: ` prefix.
    pub fn new() -> Msg {
        let mut msg = Msg {
            buf: [0; 512],
            len: 0,
        };
        msg.text("mmiotrace: ");
        msg
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Msg {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        self
    }

    pub fn text(&mut self, text: &str) -> &mut Msg {
        self.bytes(text.as_bytes())
    }

    /// `value` as `0x…`.
    pub fn hex(&mut self, value: u64) -> &mut Msg {
        let mut digits = [0u8; 16];
        let mut n = 0;
        let mut v = value;
        loop {
            if let Some(d) = digits.get_mut(n) {
                *d = b"0123456789abcdef"[(v & 15) as usize];
            }
            n += 1;
            v >>= 4;
            if v == 0 || n == 16 {
                break;
            }
        }
        self.text("0x");
        for i in (0..n).rev() {
            if let Some(&d) = digits.get(i) {
                self.bytes(&[d]);
            }
        }
        self
    }

    pub fn dec(&mut self, value: u64) -> &mut Msg {
        let mut digits = [0u8; 20];
        self.bytes(crate::sys::decimal(value, &mut digits))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Writes the message and a newline to standard error.
    pub fn emit(&mut self) {
        self.text("\n");
        sys::write_stderr(self.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        let mut msg = Msg::new();
        msg.hex(0)
            .text(" ")
            .hex(0xdead_beef)
            .text(" ")
            .dec(1234567)
            .text(" ")
            .hex(u64::MAX);
        assert_eq!(
            std::str::from_utf8(msg.as_bytes()).expect("utf8"),
            "mmiotrace: 0x0 0xdeadbeef 1234567 0xffffffffffffffff"
        );
    }
}
