//! `--mark-fifo`: each line written to the FIFO becomes a MARK.
//!
//! - A line longer than [`MAX_MARK_LEN`] bytes keeps its beginning and ends
//!   with `…[truncated N bytes]` (only its first bytes are ever held in
//!   memory), so every trace stays readable, text or binary.
//! - A trailing `\r` is dropped; empty lines are ignored (they would be
//!   marks without text).
//! - At the end of the recording, a last line without a newline is kept:
//!   the recorder writes a newline and then an end-of-recording line of
//!   its own to the FIFO, and takes every mark the reader thread found
//!   before it.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mmiotrace_shm::MAX_MARK_LEN;

use super::drain::mark_text_of;

/// What the recorder writes to the FIFO at the end: a newline that ends a
/// last line written without one, then a line no writer sends (it starts
/// with a NUL byte).
const END: &[u8] = b"\n\0mmiotrace: end of recording\n";

/// Raw bytes of a line held before the rest is only counted: a few more
/// than a mark keeps, so that [`mark_text_of`] always has enough.
const KEEP: usize = MAX_MARK_LEN + 4;

#[derive(Debug)]
enum FromFifo {
    Mark(String),
    End,
}

/// The FIFO, its reader thread, and whether `record` created it (and
/// removes it at the end).
#[derive(Debug)]
pub struct MarkFifo {
    path: PathBuf,
    receiver: mpsc::Receiver<FromFifo>,
    created: bool,
    /// The recorder's own write end (the FIFO is opened read-write, so it
    /// never reports end-of-file when a writer closes it).
    fifo: File,
}

impl MarkFifo {
    /// Creates (if needed) and opens the FIFO, and starts reading it.
    pub fn open(path: &Path) -> Result<MarkFifo> {
        let created = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_fifo() => false,
            Ok(_) => bail!("--mark-fifo {}: exists and is not a FIFO", path.display()),
            Err(_) => {
                let c_path = CString::new(path.as_os_str().as_bytes())
                    .context("--mark-fifo path contains a NUL byte")?;
                // SAFETY: c_path is a valid NUL-terminated string.
                if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("creating the FIFO {}", path.display()));
                }
                true
            }
        };
        // Read-write: every `echo text > fifo` adds one marker, and the
        // FIFO never reports end-of-file in between.
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the FIFO {}", path.display()))?;
        let reader = fifo
            .try_clone()
            .with_context(|| format!("duplicating the FIFO {}", path.display()))?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || read_lines(reader, &sender));
        Ok(MarkFifo {
            path: path.to_owned(),
            receiver,
            created,
            fifo,
        })
    }

    /// A mark read since the last call, if any.
    pub fn try_next(&self) -> Option<String> {
        match self.receiver.try_recv() {
            Ok(FromFifo::Mark(text)) => Some(text),
            _ => None,
        }
    }

    /// Every mark still in the FIFO, a last line without a newline
    /// included. Waits for the reader thread to reach the end-of-recording
    /// line, for at most 5 seconds (a reader thread that far behind has a
    /// backlog that no user writes by hand).
    pub fn finish(&mut self) -> Vec<String> {
        let mut marks = Vec::new();
        if (&self.fifo).write_all(END).is_err() {
            marks.extend(std::iter::from_fn(|| self.try_next()));
            return marks;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receiver.recv_timeout(left) {
                Ok(FromFifo::Mark(text)) => marks.push(text),
                Ok(FromFifo::End) | Err(_) => break,
            }
        }
        marks
    }

    /// Removes the FIFO if `record` created it.
    pub fn remove_if_created(&self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The reader thread: splits what comes out of the FIFO into lines.
fn read_lines(mut fifo: File, sender: &mpsc::Sender<FromFifo>) {
    let mut chunk = vec![0u8; 64 * 1024];
    // The current line: its first KEEP bytes, and its whole length.
    let mut head = Vec::with_capacity(KEEP);
    let mut len = 0u64;
    loop {
        let read = match fifo.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        for piece in chunk[..read].split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            let room = KEEP.saturating_sub(head.len());
            head.extend_from_slice(&body[..body.len().min(room)]);
            len += body.len() as u64;
            if !ends {
                continue;
            }
            let item = line_item(&head, len);
            head.clear();
            len = 0;
            let end = matches!(item, Some(FromFifo::End));
            if let Some(item) = item
                && sender.send(item).is_err()
            {
                return;
            }
            if end {
                return;
            }
        }
    }
}

/// What one complete line (its first bytes `head`, `len` in all) means.
fn line_item(head: &[u8], len: u64) -> Option<FromFifo> {
    if head == &END[1..END.len() - 1] {
        return Some(FromFifo::End);
    }
    let mut head = head;
    let mut len = len;
    if len == head.len() as u64
        && let Some(without_cr) = head.strip_suffix(b"\r")
    {
        head = without_cr;
        len -= 1;
    }
    if len == 0 {
        return None;
    }
    let text = String::from_utf8_lossy(head);
    Some(FromFifo::Mark(mark_text_of(&text, len - head.len() as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_marks() {
        let mark = |line: &[u8]| match line_item(&line[..line.len().min(KEEP)], line.len() as u64) {
            Some(FromFifo::Mark(text)) => Some(text),
            Some(FromFifo::End) => Some("END".to_owned()),
            None => None,
        };
        assert_eq!(mark(b"phase one").as_deref(), Some("phase one"));
        assert_eq!(mark(b"crlf\r").as_deref(), Some("crlf"));
        assert_eq!(mark(b""), None);
        assert_eq!(mark(b"\r"), None);
        assert_eq!(mark(&END[1..END.len() - 1]).as_deref(), Some("END"));
        let long = vec![b'a'; 2_000_000];
        let text = mark(&long).expect("a mark");
        assert_eq!(text.len(), MAX_MARK_LEN);
        let kept = text.find('…').expect("notice");
        assert!(text.ends_with(&format!("…[truncated {} bytes]", 2_000_000 - kept)));
    }
}
