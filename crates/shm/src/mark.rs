//! MARK texts cut to [`MAX_MARK_LEN`] bytes, visibly and without allocating.

/// Longest MARK text, in bytes, wherever it comes from (`mmiotrace_mark()`,
/// the mark FIFO): a longer one is cut by [`clip_mark`].
pub const MAX_MARK_LEN: usize = 4096;

/// The MARK text of a text whose first bytes are `head` and whose whole
/// length is `total` bytes, into `out`; returns its length. A text of at
/// most [`MAX_MARK_LEN`] bytes is `head` itself. A longer one keeps its
/// beginning (cut before a UTF-8 continuation byte) and ends with
/// `…[truncated N bytes]`, N being the bytes left out: [`MAX_MARK_LEN`]
/// bytes in all. `head` must hold the first `min(total, MAX_MARK_LEN)`
/// bytes. Does not allocate (the runtime calls it).
pub fn clip_mark(head: &[u8], total: u64, out: &mut [u8; MAX_MARK_LEN]) -> usize {
    if total <= MAX_MARK_LEN as u64 && head.len() as u64 >= total {
        let len = total as usize;
        out[..len].copy_from_slice(&head[..len]);
        return len;
    }
    let mut notice = Notice::default();
    let mut keep = MAX_MARK_LEN.min(head.len());
    // Fewer bytes kept make N longer: settle in a few rounds.
    for _ in 0..4 {
        notice.set(total.saturating_sub(keep as u64));
        keep = (MAX_MARK_LEN - notice.len).min(head.len());
        while keep > 0 && head.get(keep).is_some_and(|&b| b & 0xc0 == 0x80) {
            keep -= 1;
        }
    }
    notice.set(total.saturating_sub(keep as u64));
    let keep = keep.min(MAX_MARK_LEN - notice.len);
    out[..keep].copy_from_slice(&head[..keep]);
    out[keep..keep + notice.len].copy_from_slice(&notice.bytes[..notice.len]);
    keep + notice.len
}

/// `…[truncated N bytes]`, formatted without allocating.
#[derive(Debug)]
struct Notice {
    bytes: [u8; 48],
    len: usize,
}

impl Default for Notice {
    fn default() -> Notice {
        Notice {
            bytes: [0; 48],
            len: 0,
        }
    }
}

impl Notice {
    fn set(&mut self, dropped: u64) {
        let mut digits = [0u8; 20];
        let mut n = 0;
        let mut value = dropped;
        loop {
            digits[n] = b'0' + (value % 10) as u8;
            n += 1;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.len = 0;
        let mut push = |bytes: &[u8]| {
            self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        };
        push("…[truncated ".as_bytes());
        for i in (0..n).rev() {
            push(&digits[i..=i]);
        }
        push(b" bytes]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_marks_are_clipped_visibly() {
        let mut out = [0u8; MAX_MARK_LEN];
        let short = b"phase one";
        let len = clip_mark(short, short.len() as u64, &mut out);
        assert_eq!(&out[..len], short);
        let exact = vec![b'x'; MAX_MARK_LEN];
        assert_eq!(
            clip_mark(&exact, exact.len() as u64, &mut out),
            MAX_MARK_LEN
        );
        // 2 MB, of which only the head was kept by the reader.
        let total = 2_000_000u64;
        let head = vec![b'y'; MAX_MARK_LEN];
        let len = clip_mark(&head, total, &mut out);
        assert_eq!(len, MAX_MARK_LEN);
        let text = std::str::from_utf8(&out[..len]).expect("UTF-8");
        let kept = text.find('…').expect("notice");
        assert_eq!(
            &text[kept..],
            format!("…[truncated {} bytes]", total - kept as u64)
        );
        // Never inside a UTF-8 character.
        let wide = "é".repeat(MAX_MARK_LEN);
        let len = clip_mark(wide.as_bytes(), wide.len() as u64, &mut out);
        let text = std::str::from_utf8(&out[..len]).expect("cut at a character boundary");
        let kept = text.find('…').expect("notice");
        assert!(text.ends_with(&format!("[truncated {} bytes]", wide.len() - kept)));
    }
}
