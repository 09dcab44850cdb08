//! The emulator's and displaced execution's accesses, performed: on the
//! alias for traced memory, each logged, directly for untraced memory (the
//! other side of a `movs`).
//!
//! # Safety
//!
//! The accesses go to raw addresses through `access`: the alias of a range
//! held for the access, or the program's own memory.

use core::ffi::c_int;

use iced_x86::Register;
use mmiotrace_shm::{RECORD_FLAG_HOOKED, RECORD_FLAG_NO_DEVICE, Record, Shm, kind};

use crate::emulate::{self, Bus, Refusal};
use crate::hooks::{self, Hook, Plan};
use crate::ranges::{self, Range};
use crate::{access, log, state, sys, threads};

/// Performs the emulator's accesses: on the alias for traced memory
/// (logging each one), directly for untraced memory (the other side of a
/// `movs`).
pub struct AliasBus<'a> {
    /// The range that faulted, held by the handler.
    fault_range: Range,
    shm: &'a Shm,
    me: threads::Me,
    pc: u64,
}

impl<'a> AliasBus<'a> {
    /// The bus of one fault on `fault_range` (held by the caller) by the
    /// instruction at `pc`, logging to `me`'s ring.
    pub fn new(fault_range: Range, shm: &'a Shm, me: threads::Me, pc: u64) -> AliasBus<'a> {
        AliasBus {
            fault_range,
            shm,
            me,
            pc,
        }
    }

    /// The ring slot the accesses are logged to.
    pub fn slot(&self) -> usize {
        self.me.slot
    }
}

#[derive(Debug, Clone, Copy)]
enum Place {
    Traced(Range),
    Untraced,
}

/// One part of an access that lies in one mapping.
struct Piece {
    addr: u64,
    len: usize,
    place: Place,
    /// Keeps a traced range other than the faulting one mapped meanwhile.
    _held: Option<ranges::Held>,
}

/// The parts of an access: at most two, as an operand is at most
/// [`emulate::MAX_OPERAND`] bytes and ranges are whole pages.
struct Pieces {
    items: [Option<Piece>; 2],
}

impl AliasBus<'_> {
    /// Splits `addr..addr+len` where it crosses from one mapping (traced
    /// range, or untraced memory) into another.
    fn pieces(&self, addr: u64, len: usize) -> Result<Pieces, Refusal> {
        let mut pieces = Pieces {
            items: [None, None],
        };
        if len == 0 || len > emulate::MAX_OPERAND {
            return Err(Refusal::Unsupported);
        }
        if self.fault_range.contains(addr, len as u64) {
            pieces.items[0] = Some(Piece {
                addr,
                len,
                place: Place::Traced(self.fault_range),
                _held: None,
            });
            return Ok(pieces);
        }
        let end = addr.checked_add(len as u64).ok_or(Refusal::OutsideRange)?;
        let mut at = addr;
        let mut count = 0usize;
        while at < end {
            let piece_end = ((at | 4095) + 1).min(end);
            let (place, held) = if self.fault_range.contains(at, 1) {
                (Place::Traced(self.fault_range), None)
            } else if let Some(held) = ranges::lookup(at) {
                (Place::Traced(held.range), Some(held))
            } else {
                (Place::Untraced, None)
            };
            let same = |piece: &Piece| match (piece.place, place) {
                (Place::Traced(a), Place::Traced(b)) => a.start == b.start,
                (Place::Untraced, Place::Untraced) => true,
                _ => false,
            };
            let previous = count
                .checked_sub(1)
                .and_then(|i| pieces.items.get_mut(i))
                .and_then(|p| p.as_mut());
            match previous {
                Some(piece) if same(piece) => piece.len += (piece_end - at) as usize,
                _ => {
                    let slot = pieces.items.get_mut(count).ok_or(Refusal::OutsideRange)?;
                    *slot = Some(Piece {
                        addr: at,
                        len: (piece_end - at) as usize,
                        place,
                        _held: held,
                    });
                    count += 1;
                }
            }
            at = piece_end;
        }
        Ok(pieces)
    }

    fn log(&self, kind: u8, range: &Range, addr: u64, bytes: &[u8]) {
        if state::muted() {
            return;
        }
        let mut low = [0u8; 8];
        let n = bytes.len().min(8);
        if let (Some(dst), Some(src)) = (low.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        let record = Record {
            kind,
            width: bytes.len() as u8,
            map_id: range.map_id,
            offset: range.offset_of(addr),
            value: u64::from_le_bytes(low),
            pc: self.pc,
            tid: self.me.tid,
            pid: self.me.pid,
            ..Record::default()
        };
        // Values wider than 8 bytes travel whole as payload.
        let payload = if bytes.len() > 8 { bytes } else { &[] };
        log::push(self.shm, self.me.slot, record, payload);
    }

    /// Performs one access of `buf.len()` bytes at `addr`: each piece in
    /// one mapping with one instruction per power-of-two part, traced
    /// parts on the alias and logged.
    fn access(&mut self, addr: u64, buf: &mut [u8], write: bool) -> Result<(), Refusal> {
        let pieces = self.pieces(addr, buf.len())?;
        for piece in pieces.items.iter().flatten() {
            if let Place::Traced(range) = piece.place {
                permits(&range, write)?;
            }
        }
        let mut done = 0usize;
        for piece in pieces.items.iter().flatten() {
            let mut offset = 0usize;
            while offset < piece.len {
                let width = access::chunk(piece.len - offset);
                let at = piece.addr.wrapping_add(offset as u64);
                let part = buf
                    .get_mut(done..done + width)
                    .ok_or(Refusal::Unsupported)?;
                let (ptr, traced) = match piece.place {
                    Place::Traced(range) => (range.alias_of(at) as usize, Some(range)),
                    Place::Untraced => (at as usize, None),
                };
                if let Some(range) = traced
                    && width <= 8
                    && let Some(hook) = hooks::decide(
                        range.map_id,
                        range.offset_of(at),
                        width as u8,
                        write,
                        || self.since_start_ns(),
                        self.me.tid,
                    )
                {
                    self.hooked(hook, &range, at, ptr, part, write)?;
                    offset += width;
                    done += width;
                    continue;
                }
                // SAFETY: a traced part lies inside the alias of a range
                // held for the access (pieces() split at its end), whose
                // protection permits() checked; an untraced part is the
                // program's own memory, which its instruction accesses anyway.
                let ok = unsafe {
                    if write {
                        access::store(ptr, part)
                    } else {
                        access::load(ptr, part)
                    }
                };
                if !ok {
                    return Err(Refusal::Unsupported);
                }
                if let Some(range) = traced {
                    let kind = if write { kind::WRITE } else { kind::READ };
                    self.log(kind, &range, at, part);
                }
                offset += width;
                done += width;
            }
        }
        Ok(())
    }
}

impl AliasBus<'_> {
    fn since_start_ns(&self) -> u64 {
        mmiotrace_shm::now_ns().saturating_sub(self.shm.header().clock_base_ns)
    }

    /// Performs one part (at most 8 bytes) of an access that a hook acts
    /// on, and logs it with what the program saw and the device gave or
    /// got (docs/HOOKS.md).
    fn hooked(
        &mut self,
        mut hook: Hook,
        range: &Range,
        at: u64,
        ptr: usize,
        part: &mut [u8],
        write: bool,
    ) -> Result<(), Refusal> {
        let program_value = le_u64(part);
        let (seen, device) = match hook.before(program_value) {
            Plan::BusError => return Err(Refusal::BusError),
            Plan::NoDevice { read_value } => {
                if !write {
                    set_le(part, read_value);
                }
                (if write { program_value } else { read_value }, None)
            }
            Plan::Device { write_value } => {
                let mut bytes = write_value.to_le_bytes();
                let device_part = bytes.get_mut(..part.len()).ok_or(Refusal::Unsupported)?;
                let ok = if write {
                    // SAFETY: as in access(): the part lies inside the
                    // alias of a range held for the access.
                    unsafe { access::store(ptr, device_part) }
                } else {
                    // SAFETY: as above.
                    unsafe { access::load(ptr, part) }
                };
                if !ok {
                    return Err(Refusal::Unsupported);
                }
                if write {
                    (program_value, Some(write_value))
                } else {
                    let device = le_u64(part);
                    let seen = hook.after_read(device);
                    set_le(part, seen);
                    (seen, Some(device))
                }
            }
        };
        if state::muted() {
            return Ok(());
        }
        let kind = if write { kind::WRITE } else { kind::READ };
        match hook.mark() {
            Some(rule) => {
                let record = Record {
                    kind,
                    width: part.len() as u8,
                    flags: RECORD_FLAG_HOOKED
                        | if device.is_none() {
                            RECORD_FLAG_NO_DEVICE
                        } else {
                            0
                        },
                    map_id: range.map_id,
                    offset: range.offset_of(at),
                    value: seen,
                    pc: self.pc,
                    tid: self.me.tid,
                    pid: self.me.pid,
                    aux: device.unwrap_or(0),
                    ..Record::default()
                };
                log::push(self.shm, self.me.slot, record, &rule.to_le_bytes());
            }
            None => self.log(kind, range, at, part),
        }
        Ok(())
    }
}

/// The little-endian value of up to 8 bytes.
fn le_u64(bytes: &[u8]) -> u64 {
    let mut low = [0u8; 8];
    let n = bytes.len().min(8);
    if let (Some(dst), Some(src)) = (low.get_mut(..n), bytes.get(..n)) {
        dst.copy_from_slice(src);
    }
    u64::from_le_bytes(low)
}

/// `bytes` set to the low bytes of `value`.
fn set_le(bytes: &mut [u8], value: u64) {
    for (dst, src) in bytes.iter_mut().zip(value.to_le_bytes()) {
        *dst = src;
    }
}

fn permits(range: &Range, write: bool) -> Result<(), Refusal> {
    let needed = if write {
        libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    if range.prot as c_int & needed == 0 {
        return Err(Refusal::Protection);
    }
    Ok(())
}

impl Bus for AliasBus<'_> {
    fn check(&mut self, addr: u64, width: u8, write: bool) -> Result<(), Refusal> {
        self.check_bytes(addr, usize::from(width), write)
    }

    fn load(&mut self, addr: u64, width: u8) -> Result<u64, Refusal> {
        let mut value = [0u8; 8];
        let bytes = value
            .get_mut(..usize::from(width))
            .ok_or(Refusal::Unsupported)?;
        self.access(addr, bytes, false)?;
        Ok(u64::from_le_bytes(value))
    }

    fn store(&mut self, addr: u64, width: u8, value: u64) -> Result<(), Refusal> {
        let mut bytes = value.to_le_bytes();
        let bytes = bytes
            .get_mut(..usize::from(width))
            .ok_or(Refusal::Unsupported)?;
        self.access(addr, bytes, true)
    }

    fn segment_base(&mut self, segment: Register) -> Option<u64> {
        sys::segment_base(segment == Register::GS)
    }

    fn check_bytes(&mut self, addr: u64, len: usize, write: bool) -> Result<(), Refusal> {
        let pieces = self.pieces(addr, len)?;
        for piece in pieces.items.iter().flatten() {
            if let Place::Traced(range) = piece.place {
                permits(&range, write)?;
            }
        }
        Ok(())
    }

    fn load_bytes(&mut self, addr: u64, out: &mut [u8]) -> Result<(), Refusal> {
        self.access(addr, out, false)
    }

    fn store_bytes(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Refusal> {
        let mut copy = [0u8; emulate::MAX_OPERAND];
        let copy = copy.get_mut(..bytes.len()).ok_or(Refusal::Unsupported)?;
        copy.copy_from_slice(bytes);
        self.access(addr, copy, true)
    }
}
