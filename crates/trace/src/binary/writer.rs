//! Encoding events into the binary format.

use std::io::{self, Write};

use crate::EventWrite;
use crate::blocks::Blocks;

use super::*;

/// Writes events in the binary format.
///
/// Events are encoded into a buffer of the writer's own, which goes to the
/// underlying writer in blocks of 64 KiB: a `File` needs no `BufWriter`.
/// Call [`finish`](Self::finish) (or [`flush`](Self::flush)) at the end;
/// dropping the writer writes what is pending too, ignoring errors.
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
    out: Blocks<W>,
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
            out: Blocks::new(out),
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
        if let Event::Access(a) = event {
            // Most records, and they carry no string to check.
            encode_access(a, &mut self.state, &mut self.slots, self.out.pending());
            return self.out.done();
        }
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
        encode_event(event, &mut self.state, &mut self.slots, self.out.pending());
        self.out.done()
    }

    /// Writes what is pending and flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> io::Result<W> {
        self.out.finish()
    }

    /// The underlying writer, with what is pending written to it but not
    /// flushed.
    pub fn into_inner(self) -> io::Result<W> {
        self.out.into_inner()
    }

    /// The underlying writer. The last events may still be pending in this
    /// writer: [`flush`](Self::flush) first.
    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }

    /// The underlying writer (see [`get_ref`](Self::get_ref)).
    pub fn get_mut(&mut self) -> &mut W {
        self.out.get_mut()
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
        if a.value.is_wide() || slot.map_id != a.map_id || a.ext.hook.is_some() {
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

/// Appends the record of an access: a short one when it fits (see
/// [`DeltaState::short_word`]), else the general one.
#[inline]
fn encode_access(a: &Access, st: &mut DeltaState, slots: &mut MapSlots, out: &mut Vec<u8>) {
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
        // Eight bytes and a truncate, not a copy of varying length
        // (a call to memcpy): the value is at most 8 bytes here.
        let end = out.len() + usize::from(a.value.width());
        out.extend_from_slice(&a.value.low_u64().to_le_bytes());
        out.truncate(end);
        st.time = a.time.nanos;
        st.phys = a.phys;
        st.pc = a.pc;
        st.pid = a.pid;
        st.seq = a.ext.seq.unwrap_or(st.seq);
    } else {
        encode_long_access(a, log2_width, st, out);
    }
    *slot = MapSlot {
        map_id: a.map_id,
        phys: a.phys,
    };
}

/// The general record of an access, for one that fits no short record.
#[inline(never)]
fn encode_long_access(a: &Access, log2_width: u8, st: &mut DeltaState, out: &mut Vec<u8>) {
    let kind = match a.dir {
        Direction::Read => KIND_READ,
        Direction::Write => KIND_WRITE,
    };
    let hook_flag = if a.ext.hook.is_some() { FLAG_HOOK } else { 0 };
    out.push(kind << KIND_SHIFT | ext_flags(&a.ext) | hook_flag);
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
    if let Some(hook) = a.ext.hook {
        put_varint(out, hook.rule.into());
        match hook.device {
            Some(value) => {
                out.push(1);
                put_varint(out, value);
            }
            None => out.push(0),
        }
    }
}

/// Appends the record of `event` to `out`. Strings must fit (see [`overlong_string`]).
fn encode_event(event: &Event, st: &mut DeltaState, slots: &mut MapSlots, out: &mut Vec<u8>) {
    match event {
        Event::Access(a) => encode_access(a, st, slots, out),
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
