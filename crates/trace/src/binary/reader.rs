//! Decoding the binary format, one event at a time.

use std::borrow::Cow;
use std::io::Read;

use crate::error::{Error, Location, Position};
use crate::input::InputBuf;
use crate::{Item, ReadOptions, Step, Truncation, take_event};

use super::*;

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
        hook: None,
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
    if tag & !(FLAG_SEQ | FLAG_PROCESS | FLAG_HOOK) & 0x0f != 0 {
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
    if tag & FLAG_HOOK != 0 {
        let rule = d.varint_u32("hook rule")?;
        let present_at = d.pos;
        let device = match d.byte()? {
            0 => None,
            1 => {
                let value_at = d.pos;
                let value = d.varint()?;
                if width < 8 && value >> (8 * u32::from(width)) != 0 {
                    return d.invalid(
                        value_at,
                        format!("the device's value does not fit in {width} bytes"),
                    );
                }
                Some(value)
            }
            other => return d.invalid(present_at, format!("invalid hook device flag {other}")),
        };
        a.ext.hook = Some(Hooked { rule, device });
    }
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
