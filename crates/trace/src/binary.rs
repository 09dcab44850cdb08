//! mmiotrace's binary trace format (docs/FORMAT.md, "Binary format"):
//! a 12-byte header, then one record per event.
//!
//! Nearly every record of a real trace is a register access whose fields
//! differ little from the previous access's. Those are *short access*
//! records: a tag, one packed 64-bit word of small deltas and the value,
//! decoded with two unaligned loads, shifts and masks, without a branch
//! per field. Everything else (maps, marks, accesses that do not fit) is a
//! *general* record: a tag and LEB128 varints, most of them deltas too.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use crate::error::{Error, Location, Position};
use crate::event::*;
use crate::input::InputBuf;
use crate::{EventWrite, Item, ReadOptions, Step, Truncation, take_event};

/// The first 8 bytes of every binary trace. The leading 0x89 byte is not
/// ASCII, so no text trace starts like this; the CR LF and 0x1a catch a
/// file mangled by a text-mode transfer (the trick PNG uses).
pub const MAGIC: [u8; 8] = *b"\x89MMT\r\n\x1a\n";

/// The format version this build writes and reads. Version 1 had no
/// short access records; this build rejects it.
pub const FORMAT_VERSION: u16 = 2;

/// Magic, version (u16 LE), flags (u16 LE, 0).
pub const HEADER_LEN: usize = 12;

/// Longest string (MARK text, driver, version, map path) a record may carry.
pub const MAX_STRING_LEN: usize = 1 << 20;

/// Longest possible record: a tag, a few dozen varints, a string.
const MAX_RECORD_LEN: usize = MAX_STRING_LEN + 512;

// General records: tag bit 7 clear, kind in bits 6..4, flags in bits 3..0.
const KIND_READ: u8 = 0;
const KIND_WRITE: u8 = 1;
const KIND_MAP: u8 = 2;
const KIND_UNMAP: u8 = 3;
const KIND_UNKNOWN: u8 = 4;
const KIND_MARK: u8 = 5;
const KIND_LOST: u8 = 6;
const KIND_META: u8 = 7;
const KIND_SHIFT: u32 = 4;
const FLAG_SEQ: u8 = 1 << 3;
const FLAG_PROCESS: u8 = 1 << 2;
/// MAP: a path follows.
const FLAG_PATH: u8 = 1;
/// META subkinds, in bits 3..0.
const META_VERSION: u8 = 0;
const META_PCIDEV: u8 = 1;
/// A folded polling loop (`Event::Repeat`); a flags byte follows the tag.
const META_REPEAT: u8 = 2;
// REPEAT flags byte: bit 0 write, bits 3..1 log2 width, then presence bits.
const REPEAT_WRITE: u8 = 1;
const REPEAT_SEQ: u8 = 1 << 4;
const REPEAT_PROCESS: u8 = 1 << 5;
const REPEAT_UNTIL: u8 = 1 << 6;

// Short access records: tag bit 7 set.
const SHORT_ACCESS: u8 = 1 << 7;
const SHORT_WRITE: u8 = 1 << 6;
/// log2 of the width (1, 2, 4 or 8 bytes) in tag bits 5..4.
const SHORT_WIDTH_SHIFT: u32 = 4;
/// The map slot in tag bits 3..0.
const SHORT_SLOT_MASK: u8 = 0x0f;
/// Tag and packed word; the value follows.
const SHORT_HEAD_LEN: usize = 9;
/// A short record with an 8-byte value. The reader's fast path decodes
/// from a window this long, whatever the record's own length.
const SHORT_MAX_LEN: usize = SHORT_HEAD_LEN + 8;

// The packed word of a short access, from bit 0 up.
/// Time delta, unsigned: up to about 4.2 ms in nanoseconds.
const TIME_BITS: u32 = 22;
/// Phys delta from the slot's previous phys, i16.
const PHYS_SHIFT: u32 = 22;
/// Pc delta, i16.
const PC_SHIFT: u32 = 38;
/// Pid delta, i8.
const PID_SHIFT: u32 = 54;
/// `Ext::seq` is present, and one more than the previous seq.
const SEQ_BIT: u64 = 1 << 62;
/// `Ext::process` is present, and the same as the previous one.
const PROCESS_BIT: u64 = 1 << 63;
const _: () = assert!(PHYS_SHIFT == TIME_BITS && PC_SHIFT == PHYS_SHIFT + 16);
const _: () = assert!(PID_SHIFT == PC_SHIFT + 16 && 1 << (PID_SHIFT + 8) == SEQ_BIT);

/// Number of map slots: a short access names its map by `map_id % MAP_SLOTS`.
const MAP_SLOTS: usize = 16;

/// The previous value of each delta-encoded field, shared by writer and
/// reader (which, between short accesses, keeps time, phys, pc and pid in
/// the event it lends instead; see [`decode_short`]).
#[derive(Debug, Clone, Copy)]
struct DeltaState {
    time: u64,
    /// The next seq is expected to be `seq + 1`.
    seq: u64,
    phys: u64,
    pc: u64,
    pid: u32,
    process: u32,
}

impl DeltaState {
    const START: DeltaState = DeltaState {
        time: 0,
        seq: u64::MAX,
        phys: 0,
        pc: 0,
        pid: 0,
        process: 0,
    };
}

/// The map id and phys of the last access whose map id falls in this slot.
#[derive(Debug, Clone, Copy)]
struct MapSlot {
    map_id: u32,
    phys: u64,
}

/// Every access record updates the slot `map_id % MAP_SLOTS`, so a short
/// access needs neither the map id nor more than a register offset.
#[derive(Debug, Clone)]
struct MapSlots([MapSlot; MAP_SLOTS]);

impl MapSlots {
    /// Slot `k` starts with map id `k` and phys 0.
    fn new() -> Self {
        let mut slots = [MapSlot { map_id: 0, phys: 0 }; MAP_SLOTS];
        for (k, slot) in slots.iter_mut().enumerate() {
            slot.map_id = k as u32;
        }
        MapSlots(slots)
    }

    #[inline(always)]
    fn of(&mut self, map_id: u32) -> &mut MapSlot {
        &mut self.0[map_id as usize % MAP_SLOTS]
    }
}

#[inline]
fn zigzag(delta: i64) -> u64 {
    ((delta << 1) ^ (delta >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[inline]
fn zigzag32(delta: i32) -> u64 {
    u64::from(((delta << 1) ^ (delta >> 31)) as u32)
}

#[inline]
fn unzigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

// ---------------------------------------------------------------- writing

/// Writes events in the binary format.
///
/// Each event is encoded into a reused buffer and handed to the underlying
/// writer with one `write_all`: wrap a `File` in a `BufWriter`. Call
/// [`finish`](Self::finish) (or [`flush`](Self::flush)) at the end.
///
/// ```
/// use mmiotrace_trace::{BinaryWriter, Event, Lost, Ext};
/// let mut w = BinaryWriter::new(Vec::new()).unwrap();
/// w.write_event(&Event::Lost(Lost { count: 3, ext: Ext::default() })).unwrap();
/// let bytes = w.finish().unwrap();
/// assert_eq!(&bytes[..8], &mmiotrace_trace::binary::MAGIC);
/// ```
#[derive(Debug)]
pub struct BinaryWriter<W: Write> {
    out: W,
    record: Vec<u8>,
    state: DeltaState,
    slots: MapSlots,
}

impl<W: Write> BinaryWriter<W> {
    /// Writes the header to `out` at once.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(&MAGIC);
        header[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.write_all(&header)?;
        Ok(BinaryWriter {
            out,
            record: Vec::with_capacity(256),
            state: DeltaState::START,
            slots: MapSlots::new(),
        })
    }

    /// Writes one event. Fails with `InvalidInput`, writing nothing, for a
    /// string longer than [`MAX_STRING_LEN`], and for what the text format
    /// cannot carry either (and the reader rejects): a VERSION string that
    /// is empty or holds whitespace, a driver name that holds whitespace, a
    /// REPEAT of no access.
    #[inline]
    pub fn write_event(&mut self, event: &Event) -> io::Result<()> {
        if let Some(what) = overlong_string(event) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the {what} is longer than the binary format's limit of 1 MiB"),
            ));
        }
        let unwritable = match event {
            Event::Repeat(r) => crate::text_writer::check_repeat(r).err(),
            Event::Version(v) => crate::text_writer::bad_version(v.version.as_bytes()).map(|b| b.1),
            Event::PciDev(p) => crate::text_writer::bad_driver(p.driver.as_bytes()).map(|b| b.1),
            _ => None,
        };
        if let Some(why) = unwritable {
            // The reader rejects what the text format cannot carry.
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        self.record.clear();
        encode_event(event, &mut self.state, &mut self.slots, &mut self.record);
        self.out.write_all(&self.record)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    /// The underlying writer, not flushed.
    pub fn into_inner(self) -> W {
        self.out
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

impl<W: Write> EventWrite for BinaryWriter<W> {
    fn write_event(&mut self, event: &Event) -> io::Result<()> {
        BinaryWriter::write_event(self, event)
    }
    fn flush(&mut self) -> io::Result<()> {
        BinaryWriter::flush(self)
    }
}

/// The string of `event` that the format cannot carry, if any. Checked
/// before encoding, so that a failed write leaves the delta state alone.
fn overlong_string(event: &Event) -> Option<&'static str> {
    let (what, s) = match event {
        Event::Map(Map {
            path: Some(path), ..
        }) => ("map path", path),
        Event::Mark(m) => ("MARK text", &m.text),
        Event::Version(v) => ("version", &v.version),
        Event::PciDev(p) => ("driver name", &p.driver),
        _ => return None,
    };
    (s.len() > MAX_STRING_LEN).then_some(what)
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A value as a general access record carries it: a varint up to 8 bytes,
/// the raw little-endian bytes above.
fn put_value(out: &mut Vec<u8>, value: &Value) {
    if value.is_wide() {
        out.extend_from_slice(value.as_le_bytes());
    } else {
        put_varint(out, value.low_u64());
    }
}

/// A REPEAT record: tag, flags byte, then the fields (docs/FORMAT.md).
fn encode_repeat(r: &Repeat, st: &mut DeltaState, out: &mut Vec<u8>) {
    out.push(KIND_META << KIND_SHIFT | META_REPEAT);
    let mut flags = (r.value.width().trailing_zeros() as u8) << 1;
    for (present, bit) in [
        (r.dir == Direction::Write, REPEAT_WRITE),
        (r.ext.seq.is_some(), REPEAT_SEQ),
        (r.ext.process.is_some(), REPEAT_PROCESS),
        (r.until.is_some(), REPEAT_UNTIL),
    ] {
        if present {
            flags |= bit;
        }
    }
    out.push(flags);
    st.put_time(out, r.time);
    put_varint(out, zigzag(r.end.nanos.wrapping_sub(r.time.nanos) as i64));
    put_varint(out, r.map_id.into());
    st.put_phys(out, r.phys);
    put_value(out, &r.value);
    st.put_pc_pid(out, r.pc, r.pid);
    put_varint(out, r.count);
    put_varint(out, r.len.into());
    st.put_ext(out, &r.ext);
    if let Some(until) = &r.until {
        put_value(out, until);
    }
}

/// `s` is at most [`MAX_STRING_LEN`] long (see [`overlong_string`]).
fn put_string(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[inline]
fn ext_flags(ext: &Ext) -> u8 {
    (if ext.seq.is_some() { FLAG_SEQ } else { 0 })
        | (if ext.process.is_some() {
            FLAG_PROCESS
        } else {
            0
        })
}

impl DeltaState {
    #[inline]
    fn put_time(&mut self, out: &mut Vec<u8>, t: Timestamp) {
        put_varint(out, zigzag(t.nanos.wrapping_sub(self.time) as i64));
        self.time = t.nanos;
    }
    #[inline]
    fn put_phys(&mut self, out: &mut Vec<u8>, phys: u64) {
        put_varint(out, zigzag(phys.wrapping_sub(self.phys) as i64));
        self.phys = phys;
    }
    #[inline]
    fn put_pc_pid(&mut self, out: &mut Vec<u8>, pc: u64, pid: u32) {
        put_varint(out, zigzag(pc.wrapping_sub(self.pc) as i64));
        self.pc = pc;
        put_varint(out, zigzag32(pid.wrapping_sub(self.pid) as i32));
        self.pid = pid;
    }
    #[inline]
    fn put_ext(&mut self, out: &mut Vec<u8>, ext: &Ext) {
        if let Some(seq) = ext.seq {
            put_varint(
                out,
                zigzag(seq.wrapping_sub(self.seq.wrapping_add(1)) as i64),
            );
            self.seq = seq;
        }
        if let Some(process) = ext.process {
            put_varint(out, zigzag32(process.wrapping_sub(self.process) as i32));
            self.process = process;
        }
    }

    /// The packed word of a short access record for `a`, if it fits one.
    #[inline]
    fn short_word(&self, a: &Access, slot: &MapSlot) -> Option<u64> {
        if a.value.is_wide() || slot.map_id != a.map_id {
            return None;
        }
        let time = a.time.nanos.wrapping_sub(self.time);
        if time >> TIME_BITS != 0 {
            return None;
        }
        let phys = i16::try_from(a.phys.wrapping_sub(slot.phys) as i64).ok()?;
        let pc = i16::try_from(a.pc.wrapping_sub(self.pc) as i64).ok()?;
        let pid = i8::try_from(a.pid.wrapping_sub(self.pid) as i32).ok()?;
        let seq = match a.ext.seq {
            None => 0,
            Some(seq) if seq == self.seq.wrapping_add(1) => SEQ_BIT,
            Some(_) => return None,
        };
        let process = match a.ext.process {
            None => 0,
            Some(process) if process == self.process => PROCESS_BIT,
            Some(_) => return None,
        };
        Some(
            time | u64::from(phys as u16) << PHYS_SHIFT
                | u64::from(pc as u16) << PC_SHIFT
                | u64::from(pid as u8) << PID_SHIFT
                | seq
                | process,
        )
    }
}

/// Appends the record of `event` to `out`. Strings must fit (see [`overlong_string`]).
fn encode_event(event: &Event, st: &mut DeltaState, slots: &mut MapSlots, out: &mut Vec<u8>) {
    match event {
        Event::Access(a) => {
            let slot = slots.of(a.map_id);
            let log2_width = a.value.width().trailing_zeros() as u8;
            if let Some(word) = st.short_word(a, slot) {
                let write = if a.dir == Direction::Write {
                    SHORT_WRITE
                } else {
                    0
                };
                let slot_index = (a.map_id as usize % MAP_SLOTS) as u8;
                out.push(SHORT_ACCESS | write | log2_width << SHORT_WIDTH_SHIFT | slot_index);
                out.extend_from_slice(&word.to_le_bytes());
                out.extend_from_slice(a.value.as_le_bytes());
                st.time = a.time.nanos;
                st.phys = a.phys;
                st.pc = a.pc;
                st.pid = a.pid;
                st.seq = a.ext.seq.unwrap_or(st.seq);
            } else {
                let kind = match a.dir {
                    Direction::Read => KIND_READ,
                    Direction::Write => KIND_WRITE,
                };
                out.push(kind << KIND_SHIFT | ext_flags(&a.ext));
                out.push(log2_width);
                st.put_time(out, a.time);
                put_varint(out, a.map_id.into());
                st.put_phys(out, a.phys);
                if a.value.is_wide() {
                    out.extend_from_slice(a.value.as_le_bytes());
                } else {
                    put_varint(out, a.value.low_u64());
                }
                st.put_pc_pid(out, a.pc, a.pid);
                st.put_ext(out, &a.ext);
            }
            *slot = MapSlot {
                map_id: a.map_id,
                phys: a.phys,
            };
        }
        Event::Map(m) => {
            let path_flag = if m.path.is_some() { FLAG_PATH } else { 0 };
            out.push(KIND_MAP << KIND_SHIFT | ext_flags(&m.ext) | path_flag);
            st.put_time(out, m.time);
            put_varint(out, m.map_id.into());
            st.put_phys(out, m.phys);
            put_varint(out, m.virt);
            put_varint(out, m.len);
            st.put_pc_pid(out, m.pc, m.pid);
            st.put_ext(out, &m.ext);
            if let Some(path) = &m.path {
                put_string(out, path);
            }
        }
        Event::Unmap(u) => {
            out.push(KIND_UNMAP << KIND_SHIFT | ext_flags(&u.ext));
            st.put_time(out, u.time);
            put_varint(out, u.map_id.into());
            st.put_pc_pid(out, u.pc, u.pid);
            st.put_ext(out, &u.ext);
        }
        Event::Unknown(u) => {
            out.push(KIND_UNKNOWN << KIND_SHIFT | ext_flags(&u.ext));
            st.put_time(out, u.time);
            put_varint(out, u.map_id.into());
            st.put_phys(out, u.phys);
            out.extend_from_slice(&u.opcode);
            st.put_pc_pid(out, u.pc, u.pid);
            st.put_ext(out, &u.ext);
        }
        Event::Mark(m) => {
            out.push(KIND_MARK << KIND_SHIFT | ext_flags(&m.ext));
            st.put_time(out, m.time);
            st.put_ext(out, &m.ext);
            put_string(out, &m.text);
        }
        Event::Lost(l) => {
            out.push(KIND_LOST << KIND_SHIFT | ext_flags(&l.ext));
            put_varint(out, l.count);
            st.put_ext(out, &l.ext);
        }
        Event::Repeat(r) => encode_repeat(r, st, out),
        Event::Version(v) => {
            out.push(KIND_META << KIND_SHIFT | META_VERSION);
            put_string(out, &v.version);
        }
        Event::PciDev(p) => {
            out.push(KIND_META << KIND_SHIFT | META_PCIDEV);
            out.push(p.bus);
            out.push(p.devfn);
            put_varint(out, p.vendor.into());
            put_varint(out, p.device.into());
            put_varint(out, p.irq.into());
            for v in p.bar_start.iter().chain(p.bar_size.iter()) {
                put_varint(out, *v);
            }
            put_string(out, &p.driver);
        }
    }
}

// ---------------------------------------------------------------- reading

/// Decodes the short access record at the start of `rec` into `a`, which
/// holds the previous access: its time, pc and pid are the bases of this
/// record's deltas, and afterwards its time, phys, pc and pid are the
/// delta state of those fields. The reader keeps that state in the event
/// it lends rather than in `st`, which saves a load and a store per field
/// (see `BinaryReader::state_in_slot`); `st` keeps seq and proc.
///
/// `rec` is [`SHORT_MAX_LEN`] bytes whatever the record's length, so that
/// every load has a fixed offset and size; the bytes past the record are
/// masked off. Every short record is valid. Returns the record's length.
#[inline(always)]
fn decode_short(
    rec: &[u8; SHORT_MAX_LEN],
    st: &mut DeltaState,
    slots: &mut MapSlots,
    a: &mut Access,
) -> usize {
    let (head, value) = rec.split_at(SHORT_HEAD_LEN);
    let tag = head[0];
    let mut word = [0u8; 8];
    word.copy_from_slice(&head[1..]);
    let word = u64::from_le_bytes(word);
    let mut raw_value = [0u8; 8];
    raw_value.copy_from_slice(value);
    let log2_width = u32::from(tag >> SHORT_WIDTH_SHIFT) & 3;
    let value = u64::from_le_bytes(raw_value) & (u64::MAX >> (64 - (8 << log2_width)));

    let slot = &mut slots.0[usize::from(tag & SHORT_SLOT_MASK)];
    // `as i16 as u64` sign-extends: the deltas are two's complement.
    slot.phys = slot
        .phys
        .wrapping_add((word >> PHYS_SHIFT) as u16 as i16 as u64);
    let has_seq = word & SEQ_BIT != 0;
    st.seq = st.seq.wrapping_add(u64::from(has_seq));

    a.dir = if tag & SHORT_WRITE != 0 {
        Direction::Write
    } else {
        Direction::Read
    };
    a.time = Timestamp::from_nanos(a.time.nanos.wrapping_add(word & ((1 << TIME_BITS) - 1)));
    a.map_id = slot.map_id;
    a.phys = slot.phys;
    let width = 1u8 << log2_width;
    a.value.set_masked_u64(width, value);
    a.pc = a.pc.wrapping_add((word >> PC_SHIFT) as u16 as i16 as u64);
    a.pid = a.pid.wrapping_add((word >> PID_SHIFT) as u8 as i8 as u32);
    a.ext = Ext {
        seq: has_seq.then_some(st.seq),
        process: (word & PROCESS_BIT != 0).then_some(st.process),
    };
    SHORT_HEAD_LEN + usize::from(width)
}

enum DecodeError {
    /// The record continues past the bytes available.
    NeedMore,
    /// Malformed, at this offset within the record. Boxed so that a
    /// `DecodeResult<u64>` fits in two registers on the hot path.
    Invalid(Box<(usize, Cow<'static, str>)>),
}

type DecodeResult<T> = Result<T, DecodeError>;

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    #[inline]
    fn invalid<T>(&self, at: usize, why: impl Into<Cow<'static, str>>) -> DecodeResult<T> {
        Err(DecodeError::Invalid(Box::new((at, why.into()))))
    }

    #[inline(always)]
    fn byte(&mut self) -> DecodeResult<u8> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::NeedMore)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn bytes(&mut self, n: usize) -> DecodeResult<&[u8]> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::NeedMore)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::NeedMore)?;
        self.pos = end;
        Ok(slice)
    }

    #[inline(always)]
    fn varint(&mut self) -> DecodeResult<u64> {
        let pos = self.pos;
        let rest = self.buf.get(pos..).unwrap_or_default();
        if let Some(window) = rest.first_chunk::<8>() {
            // Branch-free for varints of up to 8 bytes (values below 2^56),
            // which is nearly all of them: a branch per byte mispredicts on
            // every change of length.
            let word = u64::from_le_bytes(*window);
            let ends = !word & 0x8080_8080_8080_8080;
            if ends != 0 {
                let len = (ends.trailing_zeros() / 8 + 1) as usize;
                let keep = u64::MAX >> (64 - 8 * len as u32);
                let mut x = word & keep & 0x7f7f_7f7f_7f7f_7f7f;
                x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
                x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
                x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
                self.pos = pos + len;
                return Ok(x);
            }
        }
        match rest.first() {
            Some(&b) => {
                self.pos = pos + 1;
                self.varint_slow(b)
            }
            None => Err(DecodeError::NeedMore),
        }
    }

    #[cold]
    fn varint_slow(&mut self, first: u8) -> DecodeResult<u64> {
        let start = self.pos - 1;
        if first < 0x80 {
            return Ok(u64::from(first));
        }
        let mut value = u64::from(first & 0x7f);
        let mut shift = 7;
        loop {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return self.invalid(start, "a varint does not fit in 64 bits");
            }
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return self.invalid(start, "a varint does not fit in 64 bits");
            }
        }
    }

    #[inline(always)]
    fn varint_u32(&mut self, what: &'static str) -> DecodeResult<u32> {
        let at = self.pos;
        let v = self.varint()?;
        u32::try_from(v)
            .or_else(|_| self.invalid(at, format!("the {what} does not fit in 32 bits")))
    }

    fn string(&mut self, what: &'static str) -> DecodeResult<String> {
        let at = self.pos;
        let len = self.varint()?;
        if len > MAX_STRING_LEN as u64 {
            return self.invalid(at, format!("the {what} is longer than 1 MiB ({len} bytes)"));
        }
        let text_at = self.pos;
        let bytes = self.bytes(len as usize)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => self.invalid(
                text_at + e.valid_up_to(),
                format!("the {what} is not valid UTF-8"),
            ),
        }
    }
}

impl DeltaState {
    #[inline]
    fn get_time(&mut self, d: &mut Decoder<'_>) -> DecodeResult<Timestamp> {
        self.time = self.time.wrapping_add(unzigzag(d.varint()?) as u64);
        Ok(Timestamp::from_nanos(self.time))
    }
    #[inline]
    fn get_phys(&mut self, d: &mut Decoder<'_>) -> DecodeResult<u64> {
        self.phys = self.phys.wrapping_add(unzigzag(d.varint()?) as u64);
        Ok(self.phys)
    }
    #[inline]
    fn get_pc_pid(&mut self, d: &mut Decoder<'_>) -> DecodeResult<(u64, u32)> {
        self.pc = self.pc.wrapping_add(unzigzag(d.varint()?) as u64);
        let delta = d.varint_u32("pid delta")?;
        self.pid = self.pid.wrapping_add(unzigzag32(delta) as u32);
        Ok((self.pc, self.pid))
    }
    #[inline]
    fn get_ext(&mut self, d: &mut Decoder<'_>, tag: u8) -> DecodeResult<Ext> {
        let mut ext = Ext::default();
        if tag & FLAG_SEQ != 0 {
            self.seq = self
                .seq
                .wrapping_add(1)
                .wrapping_add(unzigzag(d.varint()?) as u64);
            ext.seq = Some(self.seq);
        }
        if tag & FLAG_PROCESS != 0 {
            let delta = d.varint_u32("process delta")?;
            self.process = self.process.wrapping_add(unzigzag32(delta) as u32);
            ext.process = Some(self.process);
        }
        Ok(ext)
    }
}

/// Fills `a` from a general access record whose tag has been read.
fn decode_general_access(
    d: &mut Decoder<'_>,
    s: &mut DeltaState,
    tag: u8,
    a: &mut Access,
) -> DecodeResult<()> {
    if tag & !(FLAG_SEQ | FLAG_PROCESS) & 0x0f != 0 {
        return d.invalid(0, format!("reserved bits set in tag {tag:#04x}"));
    }
    let width_at = d.pos;
    let log2_width = d.byte()?;
    if log2_width > 6 {
        return d.invalid(width_at, format!("invalid access width code {log2_width}"));
    }
    let width = 1u8 << log2_width;
    a.dir = if tag >> KIND_SHIFT == KIND_READ {
        Direction::Read
    } else {
        Direction::Write
    };
    a.time = s.get_time(d)?;
    a.map_id = d.varint_u32("map id")?;
    a.phys = s.get_phys(d)?;
    let value_at = d.pos;
    let fits = if width <= 8 {
        let raw = d.varint()?;
        a.value.set_u64(width, raw)
    } else {
        a.value.set_le_bytes(d.bytes(usize::from(width))?)
    };
    if !fits {
        return d.invalid(value_at, format!("the value does not fit in {width} bytes"));
    }
    (a.pc, a.pid) = s.get_pc_pid(d)?;
    a.ext = s.get_ext(d, tag)?;
    Ok(())
}

/// The access in `slot`, which becomes one if it holds another kind.
#[inline]
fn access_slot(slot: &mut Event) -> &mut Access {
    if !matches!(slot, Event::Access(_)) {
        *slot = Event::Access(Access::EMPTY);
    }
    match slot {
        Event::Access(a) => a,
        _ => unreachable!("the slot was just made an access"),
    }
}

/// A value of `width` bytes as [`put_value`] wrote it.
fn decode_value(d: &mut Decoder<'_>, width: u8) -> DecodeResult<Value> {
    let at = d.pos;
    let mut value = Value::ZERO;
    let fits = if width <= 8 {
        let raw = d.varint()?;
        value.set_u64(width, raw)
    } else {
        value.set_le_bytes(d.bytes(usize::from(width))?)
    };
    if !fits {
        return d.invalid(at, format!("the value does not fit in {width} bytes"));
    }
    Ok(value)
}

/// A REPEAT record after its tag.
fn decode_repeat(d: &mut Decoder<'_>, s: &mut DeltaState) -> DecodeResult<Event> {
    let flags_at = d.pos;
    let flags = d.byte()?;
    let log2_width = (flags >> 1) & 0b111;
    if flags & 0x80 != 0 || log2_width > 6 {
        return d.invalid(flags_at, format!("invalid REPEAT flags {flags:#04x}"));
    }
    let width = 1u8 << log2_width;
    let time = s.get_time(d)?;
    let end = Timestamp::from_nanos(time.nanos.wrapping_add(unzigzag(d.varint()?) as u64));
    let map_id = d.varint_u32("map id")?;
    let phys = s.get_phys(d)?;
    let value = decode_value(d, width)?;
    let (pc, pid) = s.get_pc_pid(d)?;
    let count = d.varint()?;
    let len_at = d.pos;
    let len = d.varint_u32("REPEAT length")?;
    if len == 0 {
        return d.invalid(len_at, "a REPEAT must repeat at least one access");
    }
    let mut ext_tag = 0;
    if flags & REPEAT_SEQ != 0 {
        ext_tag |= FLAG_SEQ;
    }
    if flags & REPEAT_PROCESS != 0 {
        ext_tag |= FLAG_PROCESS;
    }
    let ext = s.get_ext(d, ext_tag)?;
    let until = if flags & REPEAT_UNTIL != 0 {
        Some(decode_value(d, width)?)
    } else {
        None
    };
    let dir = if flags & REPEAT_WRITE != 0 {
        Direction::Write
    } else {
        Direction::Read
    };
    Ok(Event::Repeat(Box::new(Repeat {
        dir,
        time,
        end,
        map_id,
        phys,
        value,
        pc,
        pid,
        count,
        len,
        until,
        ext,
    })))
}

/// Decodes one record of any kind from the start of `buf` into `slot`,
/// reusing it when it holds an event of the same kind. Updates `st` and
/// `slots` only on success; `slot` may be clobbered on failure. Returns
/// the record's length.
fn decode_record(
    buf: &[u8],
    st: &mut DeltaState,
    slots: &mut MapSlots,
    slot: &mut Event,
) -> DecodeResult<usize> {
    let Some(&tag) = buf.first() else {
        return Err(DecodeError::NeedMore);
    };
    if tag & SHORT_ACCESS != 0 {
        let len = SHORT_HEAD_LEN + (1 << ((tag >> SHORT_WIDTH_SHIFT) & 3));
        let Some(record) = buf.get(..len) else {
            return Err(DecodeError::NeedMore);
        };
        let mut window = [0u8; SHORT_MAX_LEN];
        window[..len].copy_from_slice(record);
        let a = access_slot(slot);
        a.time = Timestamp::from_nanos(st.time);
        a.phys = st.phys;
        a.pc = st.pc;
        a.pid = st.pid;
        return Ok(decode_short(&window, st, slots, a));
    }
    let mut d = Decoder { buf, pos: 1 };
    let mut s = *st;
    let kind = tag >> KIND_SHIFT;
    let low = tag & 0b11;
    if kind <= KIND_WRITE {
        let a = access_slot(slot);
        decode_general_access(&mut d, &mut s, tag, a)?;
        *slots.of(a.map_id) = MapSlot {
            map_id: a.map_id,
            phys: a.phys,
        };
        *st = s;
        return Ok(d.pos);
    }
    let event = match kind {
        KIND_MAP => {
            if low & !FLAG_PATH != 0 {
                return d.invalid(0, format!("reserved bits set in MAP tag {tag:#04x}"));
            }
            let time = s.get_time(&mut d)?;
            let map_id = d.varint_u32("map id")?;
            let phys = s.get_phys(&mut d)?;
            let virt = d.varint()?;
            let len = d.varint()?;
            let (pc, pid) = s.get_pc_pid(&mut d)?;
            let ext = s.get_ext(&mut d, tag)?;
            let path = if low & FLAG_PATH != 0 {
                Some(d.string("map path")?)
            } else {
                None
            };
            Event::Map(Map {
                time,
                map_id,
                phys,
                virt,
                len,
                pc,
                pid,
                ext,
                path,
            })
        }
        KIND_UNMAP | KIND_UNKNOWN | KIND_MARK | KIND_LOST if low != 0 => {
            return d.invalid(0, format!("reserved bits set in tag {tag:#04x}"));
        }
        KIND_UNMAP => {
            let time = s.get_time(&mut d)?;
            let map_id = d.varint_u32("map id")?;
            let (pc, pid) = s.get_pc_pid(&mut d)?;
            let ext = s.get_ext(&mut d, tag)?;
            Event::Unmap(Unmap {
                time,
                map_id,
                pc,
                pid,
                ext,
            })
        }
        KIND_UNKNOWN => {
            let time = s.get_time(&mut d)?;
            let map_id = d.varint_u32("map id")?;
            let phys = s.get_phys(&mut d)?;
            let mut opcode = [0u8; 3];
            opcode.copy_from_slice(d.bytes(3)?);
            let (pc, pid) = s.get_pc_pid(&mut d)?;
            let ext = s.get_ext(&mut d, tag)?;
            Event::Unknown(Unknown {
                time,
                map_id,
                phys,
                opcode,
                pc,
                pid,
                ext,
            })
        }
        KIND_MARK => {
            let time = s.get_time(&mut d)?;
            let ext = s.get_ext(&mut d, tag)?;
            let text = d.string("MARK text")?;
            Event::Mark(Mark { time, text, ext })
        }
        KIND_LOST => {
            let count = d.varint()?;
            let ext = s.get_ext(&mut d, tag)?;
            Event::Lost(Lost { count, ext })
        }
        _ => match tag & 0x0f {
            META_VERSION => {
                let at = d.pos;
                let version = d.string("version")?;
                if let Some((bad, why)) = crate::text_writer::bad_version(version.as_bytes()) {
                    let string_start = d.pos - version.len();
                    let at = if version.is_empty() {
                        at
                    } else {
                        string_start + bad
                    };
                    return d.invalid(at, why);
                }
                Event::Version(Version { version })
            }
            META_PCIDEV => {
                let bus = d.byte()?;
                let devfn = d.byte()?;
                let vendor_at = d.pos;
                let vendor = u16::try_from(d.varint()?);
                let device_at = d.pos;
                let device = u16::try_from(d.varint()?);
                let irq = d.varint_u32("irq")?;
                let mut bar_start = [0u64; PCI_BARS];
                for v in &mut bar_start {
                    *v = d.varint()?;
                }
                let mut bar_size = [0u64; PCI_BARS];
                for v in &mut bar_size {
                    *v = d.varint()?;
                }
                let driver = d.string("driver name")?;
                if let Some((bad, why)) = crate::text_writer::bad_driver(driver.as_bytes()) {
                    return d.invalid(d.pos - driver.len() + bad, why);
                }
                let Ok(vendor) = vendor else {
                    return d.invalid(vendor_at, "the vendor id does not fit in 16 bits");
                };
                let Ok(device) = device else {
                    return d.invalid(device_at, "the device id does not fit in 16 bits");
                };
                Event::PciDev(PciDev {
                    bus,
                    devfn,
                    vendor,
                    device,
                    irq,
                    bar_start,
                    bar_size,
                    driver,
                })
            }
            META_REPEAT => decode_repeat(&mut d, &mut s)?,
            _ => return d.invalid(0, format!("unknown record tag {tag:#04x}")),
        },
    };
    *slot = event;
    *st = s;
    Ok(d.pos)
}

/// Reads a binary trace one event at a time, in constant memory.
#[derive(Debug)]
pub struct BinaryReader<R> {
    input: InputBuf<R>,
    options: ReadOptions,
    state: DeltaState,
    /// Boxed: inline, it would make this reader much larger than a
    /// [`TextReader`](crate::TextReader), and the two share an enum.
    slots: Box<MapSlots>,
    /// The event last decoded, overwritten in place by the next.
    slot: Event,
    /// A cut-off end seen by `read_ref`.
    truncation: Option<Truncation>,
    done: bool,
    /// The slot holds the access last decoded, and its time, phys, pc and
    /// pid are the delta state: those of `state` are stale until `advance`
    /// copies them back. False at the end and after an error, which keeps
    /// the fast path from reading on.
    state_in_slot: bool,
}

impl<R: Read> BinaryReader<R> {
    /// Reads and checks the header.
    pub fn new(inner: R) -> Result<Self, Error> {
        Self::with_options(inner, ReadOptions::default())
    }

    pub fn with_options(inner: R, options: ReadOptions) -> Result<Self, Error> {
        Self::from_input(InputBuf::new(inner), options)
    }

    pub(crate) fn from_input(mut input: InputBuf<R>, options: ReadOptions) -> Result<Self, Error> {
        let io_error = |source| Error::Io {
            name: options.name.clone(),
            source,
        };
        input.fill_at_least(HEADER_LEN).map_err(io_error)?;
        let header = input.available();
        let syntax = |offset: u64, message: &str| Error::Syntax {
            position: Position {
                name: options.name.clone(),
                location: Location::Offset(offset),
            },
            message: message.to_owned(),
        };
        if !header.starts_with(&MAGIC[..header.len().min(MAGIC.len())]) || header.is_empty() {
            return Err(syntax(
                0,
                "not a binary mmiotrace trace (wrong magic bytes)",
            ));
        }
        if header.len() < HEADER_LEN {
            return Err(syntax(
                header.len() as u64,
                "the binary trace ends inside its 12-byte header",
            ));
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        let flags = u16::from_le_bytes([header[10], header[11]]);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                name: options.name.clone(),
                version,
                supported: FORMAT_VERSION,
            });
        }
        if flags != 0 {
            return Err(syntax(10, "unknown header flags (this build knows none)"));
        }
        input.consume(HEADER_LEN);
        Ok(BinaryReader {
            input,
            options,
            state: DeltaState::START,
            slots: Box::new(MapSlots::new()),
            slot: Event::Access(Access::EMPTY),
            truncation: None,
            done: false,
            state_in_slot: false,
        })
    }

    /// Offset in the input of the next record.
    pub fn offset(&self) -> u64 {
        self.input.offset()
    }

    fn position_at(&self, offset: u64) -> Position {
        Position {
            name: self.options.name.clone(),
            location: Location::Offset(offset),
        }
    }

    /// The next event, a [`Item::Truncated`] for a cut-off last record, or
    /// `None` at the end. A malformed record ends the stream: there is no
    /// way to find the next record after it.
    pub fn read_item(&mut self) -> Result<Option<Item>, Error> {
        let step = if self.advance_short() {
            Step::Event
        } else {
            self.advance()?
        };
        Ok(match step {
            Step::Event => Some(Item::Event(take_event(&mut self.slot))),
            Step::Truncated(t) => Some(Item::Truncated(t)),
            Step::End => None,
        })
    }

    /// Like [`read_item`](Self::read_item), but lends the event instead of
    /// moving it out: the reader decodes each record into the same event,
    /// which saves a copy per event and, for marks and maps, an allocation.
    ///
    /// A cut-off end is not an item here: `None` ends the stream, and
    /// [`truncation`](Self::truncation) then says whether it was cut off
    /// (unless truncation is fatal, when it is an error as usual).
    #[inline(always)]
    pub fn read_ref(&mut self) -> Result<Option<&Event>, Error> {
        if self.advance_short() {
            return Ok(Some(&self.slot));
        }
        self.read_ref_general()
    }

    /// The rest of [`read_ref`](Self::read_ref), out of line so that the
    /// fast path stays small where it is inlined.
    #[inline(never)]
    fn read_ref_general(&mut self) -> Result<Option<&Event>, Error> {
        Ok(match self.advance()? {
            Step::Event => Some(&self.slot),
            Step::Truncated(t) => {
                self.truncation = Some(t);
                None
            }
            Step::End => None,
        })
    }

    /// After [`read_ref`](Self::read_ref) returned `None`: where the input
    /// was cut off, if it was.
    pub fn truncation(&self) -> Option<&Truncation> {
        self.truncation.as_ref()
    }

    /// The fast path: decodes a short access in place into the slot, when
    /// the slot holds the last access decoded (`state_in_slot`), the next
    /// record is a short access and the buffer holds [`SHORT_MAX_LEN`]
    /// bytes. Returns false, having done nothing, otherwise.
    #[inline(always)]
    fn advance_short(&mut self) -> bool {
        if !self.state_in_slot {
            return false;
        }
        let Some(window) = self.input.available().first_chunk::<SHORT_MAX_LEN>() else {
            return false;
        };
        if window[0] & SHORT_ACCESS == 0 {
            return false;
        }
        let Event::Access(a) = &mut self.slot else {
            return false;
        };
        let len = decode_short(window, &mut self.state, &mut self.slots, a);
        self.input.consume(len);
        true
    }

    /// Any record, at any place in the buffer.
    fn advance(&mut self) -> Result<Step, Error> {
        if self.state_in_slot {
            if let Event::Access(a) = &self.slot {
                self.state.time = a.time.nanos;
                self.state.phys = a.phys;
                self.state.pc = a.pc;
                self.state.pid = a.pid;
            }
            self.state_in_slot = false;
        }
        loop {
            if self.done {
                return Ok(Step::End);
            }
            let available = self.input.available();
            match decode_record(available, &mut self.state, &mut self.slots, &mut self.slot) {
                Ok(len) => {
                    self.input.consume(len);
                    self.state_in_slot = matches!(self.slot, Event::Access(_));
                    return Ok(Step::Event);
                }
                Err(DecodeError::NeedMore) => self.need_more()?,
                Err(DecodeError::Invalid(invalid)) => {
                    let (at, message) = *invalid;
                    self.done = true;
                    return Err(Error::Syntax {
                        position: self.position_at(self.input.offset() + at as u64),
                        message: message.into_owned(),
                    });
                }
            }
            if self.done {
                return self.truncated();
            }
        }
    }

    /// Reads more input; sets `done` when there is none.
    #[cold]
    fn need_more(&mut self) -> Result<(), Error> {
        let read = self.input.refill(MAX_RECORD_LEN).map_err(|source| {
            self.done = true;
            Error::Io {
                name: self.options.name.clone(),
                source,
            }
        })?;
        if read == 0 {
            // At the end of the input, or a record claims to be longer than
            // any valid one (which decode_record rejects before asking).
            self.done = true;
        }
        Ok(())
    }

    fn truncated(&mut self) -> Result<Step, Error> {
        let bytes = self.input.available().len() as u64;
        if bytes == 0 {
            return Ok(Step::End);
        }
        let position = self.position_at(self.input.offset());
        self.input.consume(bytes as usize);
        if self.options.fatal_truncation {
            return Err(Error::Truncated { position, bytes });
        }
        Ok(Step::Truncated(Truncation { position, bytes }))
    }
}

impl<R: Read> Iterator for BinaryReader<R> {
    type Item = Result<Item, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.read_item().transpose()
    }
}
