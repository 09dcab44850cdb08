//! The output buffer of the text and binary writers.

use std::io::{self, Write};

/// Bytes a writer collects before it hands them to its underlying writer.
pub(crate) const BLOCK: usize = 64 * 1024;

/// Events are formatted straight into `pending`, which goes to the
/// underlying writer in blocks of about [`BLOCK`] bytes: one `write_all`
/// per block rather than per event (for tens of millions of events, a
/// `memcpy` call and a `BufWriter`'s bookkeeping per event showed up).
/// What is pending when this is dropped is written then, errors ignored,
/// as a `BufWriter` does.
#[derive(Debug)]
pub(crate) struct Blocks<W: Write> {
    /// `None` only once `finish` or `into_inner` took it.
    out: Option<W>,
    pending: Vec<u8>,
}

const TAKEN: &str = "only finish and into_inner take the writer, and they consume its owner";

impl<W: Write> Blocks<W> {
    pub(crate) fn new(out: W) -> Self {
        Blocks {
            out: Some(out),
            pending: Vec::with_capacity(BLOCK + 512),
        }
    }

    /// Where the next event goes: append to it, then call [`Blocks::done`].
    #[inline]
    pub(crate) fn pending(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// One event was appended: writes the block out once it is full.
    #[inline]
    pub(crate) fn done(&mut self) -> io::Result<()> {
        if self.pending.len() >= BLOCK {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Hands what is pending to the underlying writer, without flushing
    /// it. Written or not, it is no longer pending.
    fn write_pending(&mut self) -> io::Result<()> {
        let result = match &mut self.out {
            Some(out) if !self.pending.is_empty() => out.write_all(&self.pending),
            _ => Ok(()),
        };
        self.pending.clear();
        result
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.out.as_mut().expect(TAKEN).flush()
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out.take().expect(TAKEN))
    }

    pub(crate) fn into_inner(mut self) -> io::Result<W> {
        self.write_pending()?;
        Ok(self.out.take().expect(TAKEN))
    }

    pub(crate) fn get_ref(&self) -> &W {
        self.out.as_ref().expect(TAKEN)
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        self.out.as_mut().expect(TAKEN)
    }
}

impl<W: Write> Drop for Blocks<W> {
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::{Event, TextWriter, Version};

    use super::*;

    /// The sizes of the writes an underlying writer got, shared with the test.
    #[derive(Clone, Default)]
    struct Writes(Rc<RefCell<Vec<usize>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn version(text: &str) -> Event {
        Event::Version(Version {
            version: text.to_owned(),
        })
    }

    #[test]
    fn events_go_out_in_blocks_and_what_is_pending_on_flush_and_drop() {
        let writes = Writes::default();
        let mut writer = TextWriter::new(writes.clone());
        let line = "VERSION 20070824\n".len();
        let per_block = BLOCK.div_ceil(line);
        for _ in 0..per_block - 1 {
            writer.write_event(&version("20070824")).expect("write");
        }
        assert!(
            writes.0.borrow().is_empty(),
            "nothing before a block is full"
        );
        writer.write_event(&version("20070824")).expect("write");
        assert_eq!(*writes.0.borrow(), [per_block * line]);
        writer.write_event(&version("20070824")).expect("write");
        writer.flush().expect("flush");
        assert_eq!(*writes.0.borrow(), [per_block * line, line]);
        writer.write_event(&version("20070824")).expect("write");
        drop(writer);
        assert_eq!(*writes.0.borrow(), [per_block * line, line, line]);
    }

    #[test]
    fn an_event_that_cannot_be_written_leaves_nothing_pending() {
        let mut writer = TextWriter::new(Vec::new());
        writer.write_event(&version("2007")).expect("write");
        assert!(writer.write_event(&version("has space")).is_err());
        assert_eq!(writer.finish().expect("a Vec"), b"VERSION 2007\n");
    }
}
