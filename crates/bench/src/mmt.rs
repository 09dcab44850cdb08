//! valgrind-mmt's binary trace: the loads and stores it logged in a traced
//! mapping, read back to check a buffer loop run under it (the
//! `buffer-*-mmt` rows).
//!
//! valgrind-mmt is envytools' fork of valgrind (`--tool=mmt`), which the
//! nouveau project traces GPU drivers with. `--mmt-trace-file=PATH` traces
//! every mapping of the file opened at PATH; the trace goes to valgrind's
//! log (`--log-file=FILE`), in the binary format of its
//! `mmt/mmt_trace_bin.c`: one record per event, a type byte, fixed
//! little-endian fields, a `\n`. Valgrind's own messages (`--PID-- …`)
//! share the log as lines of text between records.
//!
//! Only the records a traced file can produce are read (opens, maps,
//! unmaps, loads and stores, writes to it, syncs); the ioctl dumps of the
//! GPU drivers' device files are an error here.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::{Context, bail, ensure};
use mmiotrace_trace::Direction;

/// One load or store valgrind-mmt logged in a traced mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmtAccess<'a> {
    pub dir: Direction,
    /// Offset in the traced file: the mapping's file offset plus the
    /// access's offset in the mapping.
    pub offset: u64,
    /// The value, little-endian, as wide as the access (up to 32 bytes for
    /// vector moves).
    pub value: &'a [u8],
}

impl MmtAccess<'_> {
    /// The value's first (up to) 8 bytes as a number.
    pub fn low_u64(&self) -> u64 {
        let mut bytes = [0; 8];
        let n = self.value.len().min(8);
        bytes[..n].copy_from_slice(&self.value[..n]);
        u64::from_le_bytes(bytes)
    }
}

/// What else the log held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MmtLog {
    /// Records by type byte (`b'w'`, `b'M'`, …), loads and stores included.
    pub records: BTreeMap<u8, u64>,
    /// Lines of valgrind's own text.
    pub text_lines: u64,
    /// Traced mappings by region id: file offset and length.
    pub regions: BTreeMap<u32, (u64, u64)>,
}

/// Reads a valgrind-mmt log from `reader` (`name` for errors), calling
/// `each` with every load and store logged in a traced mapping.
pub fn read(
    reader: impl BufRead,
    name: &str,
    mut each: impl FnMut(&MmtAccess<'_>),
) -> anyhow::Result<MmtLog> {
    let mut input = Input {
        reader,
        at: 0,
        buf: Vec::new(),
    };
    let mut log = MmtLog::default();
    let mut value = [0u8; 255];
    loop {
        let start = input.at;
        let Some(kind) = input.byte_or_end()? else {
            break;
        };
        let what = || {
            format!(
                "{name}: offset {start}: record {:?}",
                char::from(kind).escape_default().to_string()
            )
        };
        match kind {
            b'-' | b'=' => {
                // `--PID-- …` or `==PID== …`: a message of valgrind's own.
                input.skip_line().with_context(what)?;
                log.text_lines += 1;
                continue;
            }
            b'w' | b'r' => {
                let region = input.u32().with_context(what)?;
                let at = input.u32().with_context(what)?;
                let width = usize::from(input.u8().with_context(what)?);
                input.exact(&mut value[..width]).with_context(what)?;
                let &(file_offset, _) = log
                    .regions
                    .get(&region)
                    .with_context(|| format!("{}: region {region} was never mapped", what()))?;
                each(&MmtAccess {
                    dir: if kind == b'w' {
                        Direction::Write
                    } else {
                        Direction::Read
                    },
                    offset: file_offset + u64::from(at),
                    value: &value[..width],
                });
            }
            b'W' | b'R' => {
                // An access outside traced mappings (--mmt-trace-all-mem).
                input.skip(8).with_context(what)?;
                let width = usize::from(input.u8().with_context(what)?);
                input.skip(width).with_context(what)?;
            }
            b'M' => {
                let offset = input.u64().with_context(what)?;
                input.skip(12).with_context(what)?; // prot, flags, fd
                let id = input.u32().with_context(what)?;
                input.skip(8).with_context(what)?; // address
                let len = input.u64().with_context(what)?;
                log.regions.insert(id, (offset, len));
            }
            b'o' => {
                input.skip(12).with_context(what)?; // flags, mode, fd
                input.sized().with_context(what)?; // the path
            }
            b'u' => input.skip(8 + 4 + 4 * 8).with_context(what)?,
            b'e' => input.skip(8 + 4 + 6 * 8).with_context(what)?,
            b'd' => input.skip(8).with_context(what)?,
            b'S' => input.skip(4).with_context(what)?,
            b't' => {
                input.skip(4).with_context(what)?;
                input.sized().with_context(what)?;
            }
            b'x' | b's' => input.sized().with_context(what)?,
            _ => bail!(
                "{name}: offset {start}: unknown record type {kind:#04x} after {} records",
                log.records.values().sum::<u64>()
            ),
        }
        let end = input.u8().with_context(what)?;
        ensure!(
            end == b'\n',
            "{}: not ended by a newline (found {end:#04x} at offset {})",
            what(),
            input.at - 1
        );
        *log.records.entry(kind).or_default() += 1;
    }
    Ok(log)
}

/// The log, read byte by byte with its offset kept for errors.
struct Input<R> {
    reader: R,
    at: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Input<R> {
    fn byte_or_end(&mut self) -> anyhow::Result<Option<u8>> {
        let byte = self.reader.fill_buf()?.first().copied();
        if byte.is_some() {
            self.reader.consume(1);
            self.at += 1;
        }
        Ok(byte)
    }

    fn exact(&mut self, out: &mut [u8]) -> anyhow::Result<()> {
        self.reader
            .read_exact(out)
            .context("the log ends inside it")?;
        self.at += out.len() as u64;
        Ok(())
    }

    fn u8(&mut self) -> anyhow::Result<u8> {
        let mut byte = [0];
        self.exact(&mut byte)?;
        Ok(byte[0])
    }

    fn u32(&mut self) -> anyhow::Result<u32> {
        let mut bytes = [0; 4];
        self.exact(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> anyhow::Result<u64> {
        let mut bytes = [0; 8];
        self.exact(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn skip(&mut self, n: usize) -> anyhow::Result<()> {
        self.buf.resize(n, 0);
        let mut buf = std::mem::take(&mut self.buf);
        let read = self.exact(&mut buf);
        self.buf = buf;
        read
    }

    /// A string or buffer: a 32-bit length, then that many bytes.
    fn sized(&mut self) -> anyhow::Result<()> {
        let len = self.u32()?;
        self.skip(len as usize)
    }

    fn skip_line(&mut self) -> anyhow::Result<()> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf)?;
        self.at += n as u64;
        ensure!(
            self.buf.last() == Some(&b'\n'),
            "the log ends inside a line of text"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log as valgrind-mmt writes it for a program that opens the traced
    /// file, maps 8 KiB of it from offset 0x1000, stores a word, loads 8
    /// bytes and unmaps it, with a line of valgrind's text in between.
    fn log() -> Vec<u8> {
        let mut log = Vec::new();
        log.extend(b"--42-- WARNING: Serious error when reading debug info\n");
        // o: flags, mode, fd, path (length with its NUL).
        log.push(b'o');
        for field in [2u32, 0o600, 3] {
            log.extend(field.to_le_bytes());
        }
        log.extend(5u32.to_le_bytes());
        log.extend(b"/buf\0\n");
        // M: file offset, prot, flags, fd, region id, address, length.
        log.push(b'M');
        log.extend(0x1000u64.to_le_bytes());
        for field in [3u32, 1, 3, 7] {
            log.extend(field.to_le_bytes());
        }
        log.extend(0x7f00_0000_0000u64.to_le_bytes());
        log.extend(0x2000u64.to_le_bytes());
        log.push(b'\n');
        // w: region 7, offset 0x10, 4 bytes.
        log.push(b'w');
        log.extend(7u32.to_le_bytes());
        log.extend(0x10u32.to_le_bytes());
        log.push(4);
        log.extend(0xdead_beefu32.to_le_bytes());
        log.push(b'\n');
        log.extend(b"--42-- a second message\n");
        // r: region 7, offset 0x18, 8 bytes.
        log.push(b'r');
        log.extend(7u32.to_le_bytes());
        log.extend(0x18u32.to_le_bytes());
        log.push(8);
        log.extend(0x0123_4567_89ab_cdefu64.to_le_bytes());
        log.push(b'\n');
        // u: file offset, region id, address, length, two zeros.
        log.push(b'u');
        log.extend(0x1000u64.to_le_bytes());
        log.extend(7u32.to_le_bytes());
        for field in [0x7f00_0000_0000u64, 0x2000, 0, 0] {
            log.extend(field.to_le_bytes());
        }
        log.push(b'\n');
        log
    }

    /// An access as the tests see it: direction, file offset, value, width.
    type Seen = (Direction, u64, u64, usize);

    fn accesses(log: &[u8]) -> anyhow::Result<(Vec<Seen>, MmtLog)> {
        let mut seen = Vec::new();
        let summary = read(log, "test.log", |access| {
            seen.push((
                access.dir,
                access.offset,
                access.low_u64(),
                access.value.len(),
            ))
        })?;
        Ok((seen, summary))
    }

    /// Where `pattern` starts in `log`.
    fn find(log: &[u8], pattern: &[u8]) -> usize {
        log.windows(pattern.len())
            .position(|window| window == pattern)
            .expect("the pattern is in the log")
    }

    #[test]
    fn loads_and_stores_come_with_their_file_offset_and_value() {
        let (seen, summary) = accesses(&log()).expect("a well-formed log");
        assert_eq!(
            seen,
            [
                (Direction::Write, 0x1010, 0xdead_beef, 4),
                (Direction::Read, 0x1018, 0x0123_4567_89ab_cdef, 8)
            ]
        );
        assert_eq!(summary.text_lines, 2);
        assert_eq!(
            summary.records,
            BTreeMap::from([(b'M', 1), (b'o', 1), (b'r', 1), (b'u', 1), (b'w', 1)])
        );
        assert_eq!(summary.regions, BTreeMap::from([(7, (0x1000, 0x2000))]));
    }

    #[test]
    fn a_cut_or_garbled_log_is_an_error_that_says_where() {
        let log = log();
        let cut = &log[..log.len() - 10];
        let err = format!("{:#}", accesses(cut).expect_err("a cut log"));
        assert!(
            err.contains("record \"u\"") && err.contains("ends inside it"),
            "{err}"
        );
        let w = find(&log, b"w\x07\0\0\0");
        let mut garbled = log.clone();
        garbled[w + 9] = 2; // the store's width: 2, so 2 bytes too many follow
        let err = format!("{:#}", accesses(&garbled).expect_err("a garbled log"));
        assert!(err.contains("not ended by a newline"), "{err}");
        let mut unknown = log.clone();
        unknown[w] = b'?';
        let err = format!("{:#}", accesses(&unknown).expect_err("an unknown record"));
        assert!(
            err.contains(&format!(
                "offset {w}: unknown record type 0x3f after 2 records"
            )),
            "{err}"
        );
    }

    #[test]
    fn an_access_to_an_unmapped_region_is_an_error() {
        let log = log();
        let m = find(&log, b"M\0\x10\0\0");
        let mut unmapped = log.clone();
        unmapped[m + 1 + 8 + 12] = 8; // the map's region id: 8, not 7
        let err = format!("{:#}", accesses(&unmapped).expect_err("no region 7"));
        assert!(err.contains("region 7 was never mapped"), "{err}");
    }
}
