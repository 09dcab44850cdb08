//! The input buffer both readers share: one reusable buffer over any `Read`,
//! refilled in place, so a record is always contiguous in memory and the
//! readers use constant memory however long the trace is.

use std::io::{ErrorKind, Read};

/// Bytes read per refill once the buffer has room.
pub(crate) const DEFAULT_CAPACITY: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) struct InputBuf<R> {
    inner: R,
    buf: Vec<u8>,
    /// First unconsumed byte.
    start: usize,
    /// End of the valid bytes.
    end: usize,
    /// Bytes consumed before `buf[0]`: turns `start` into an offset in the input.
    base: u64,
    eof: bool,
}

impl<R: Read> InputBuf<R> {
    pub(crate) fn new(inner: R) -> Self {
        InputBuf {
            inner,
            buf: vec![0; DEFAULT_CAPACITY],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
        }
    }

    /// The unconsumed bytes in the buffer.
    #[inline]
    pub(crate) fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n.min(self.end - self.start);
    }

    /// Offset in the input of the first unconsumed byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    pub(crate) fn is_eof(&self) -> bool {
        self.eof
    }

    /// Reads more bytes, keeping the unconsumed ones. The buffer grows, up to
    /// `limit` bytes, only when the unconsumed bytes already fill it. Returns
    /// the number of new bytes: 0 at the end of the input, or when the
    /// unconsumed bytes already fill `limit`.
    pub(crate) fn refill(&mut self, limit: usize) -> std::io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(limit.max(DEFAULT_CAPACITY));
            if grown <= self.buf.len() {
                return Ok(0);
            }
            self.buf.resize(grown, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Reads until at least `n` bytes are available or the input ends.
    pub(crate) fn fill_at_least(&mut self, n: usize) -> std::io::Result<()> {
        while self.end - self.start < n && !self.eof {
            if self.refill(n)? == 0 && !self.eof {
                break;
            }
        }
        Ok(())
    }
}
