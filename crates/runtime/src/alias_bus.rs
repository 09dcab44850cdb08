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

use crate::emulate::{self, Bus, Refusal, StringRun};
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
        let mut record = Record::default();
        self.fill(
            &mut record,
            kind,
            range,
            addr,
            bytes.len() as u8,
            le_u64(bytes),
        );
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

/// Most elements of a string instruction performed and logged as one run
/// ([`Bus::string_run`]): a `movs` between two traced ranges logs two
/// records per element, and a run fits in half of the smallest ring.
const RUN_ELEMENTS: u64 = (mmiotrace_shm::MIN_RING_ENTRIES / 4) as u64;

/// Where one side of a run of string elements lies (a part of one page).
enum Side {
    /// In a traced range; a range other than the faulting one is held
    /// (kept mapped) for as long as the side lives.
    Traced {
        range: Range,
        _held: Option<ranges::Held>,
    },
    Untraced,
}

impl Side {
    fn range(&self) -> Option<&Range> {
        match self {
            Side::Traced { range, .. } => Some(range),
            Side::Untraced => None,
        }
    }

    /// The address an element at program address `addr` is accessed at.
    fn ptr(&self, addr: u64) -> usize {
        match self {
            Side::Traced { range, .. } => range.alias_of(addr) as usize,
            Side::Untraced => addr as usize,
        }
    }
}

impl AliasBus<'_> {
    /// Where `addr..addr+len` (inside one page) lies.
    fn side(&self, addr: u64, len: u64) -> Side {
        if self.fault_range.contains(addr, len) {
            return Side::Traced {
                range: self.fault_range,
                _held: None,
            };
        }
        match ranges::lookup(addr) {
            Some(held) => Side::Traced {
                range: held.range,
                _held: Some(held),
            },
            None => Side::Untraced,
        }
    }

    /// A record of the access of `value` (`width` bytes) at `addr` in `range`.
    fn fill(&self, record: &mut Record, kind: u8, range: &Range, addr: u64, width: u8, value: u64) {
        *record = Record {
            kind,
            width,
            map_id: range.map_id,
            offset: range.offset_of(addr),
            value,
            pc: self.pc,
            tid: self.me.tid,
            pid: self.me.pid,
            ..Record::default()
        };
    }
}

/// One access of `width` (1, 2, 4 or 8) bytes at `ptr`: a load, or with
/// `store` a store of `value`; the value loaded (or stored).
///
/// # Safety
///
/// As [`access::load`] and [`access::store`].
unsafe fn element(ptr: usize, width: u8, store: Option<u64>) -> u64 {
    let mut bytes = store.unwrap_or(0).to_le_bytes();
    let Some(part) = bytes.get_mut(..usize::from(width)) else {
        return 0;
    };
    // SAFETY: the caller's contract; `part` is 1, 2, 4 or 8 bytes, widths
    // both functions perform with one instruction.
    unsafe {
        if store.is_some() {
            access::store(ptr, part);
        } else {
            access::load(ptr, part);
        }
    }
    u64::from_le_bytes(bytes)
}

impl Bus for AliasBus<'_> {
    /// Up to [`RUN_ELEMENTS`] elements whose accesses all lie in one page
    /// on each side (so in one traced range, or in untraced memory), with
    /// no hook to consult: each element's accesses made as one at a time
    /// would make them, in the same order, and logged as one run
    /// ([`log::push_run`]). Anything else (an element across a page,
    /// hooks, a side that does not permit its access) is left to the
    /// caller, element by element.
    fn string_run(
        &mut self,
        run: StringRun,
        dest: u64,
        width: u8,
        count: u64,
        backwards: bool,
    ) -> u64 {
        if count < 2 || !matches!(width, 1 | 2 | 4 | 8) || hooks::active() || state::muted() {
            return 0;
        }
        let w = u64::from(width);
        // Elements from `addr` on, in the run's direction, inside its page.
        let in_page = |addr: u64| {
            let at = addr & 4095;
            match (at + w > 4096, backwards) {
                (true, _) => 0,
                (false, true) => at / w + 1,
                (false, false) => (4096 - at) / w,
            }
        };
        let source = match run {
            StringRun::Movs { source } => Some(source),
            StringRun::Stos { .. } => None,
        };
        let n = source
            .map_or(u64::MAX, in_page)
            .min(in_page(dest))
            .min(count)
            .min(RUN_ELEMENTS);
        if n < 2 {
            return 0;
        }
        // The lowest address of a side's n elements.
        let low = |first: u64| {
            if backwards {
                first.wrapping_sub((n - 1) * w)
            } else {
                first
            }
        };
        let dest_side = self.side(low(dest), n * w);
        let source_side = source.map(|source| self.side(low(source), n * w));
        if let Some(range) = dest_side.range()
            && permits(range, true).is_err()
        {
            return 0;
        }
        if let Some(range) = source_side.as_ref().and_then(Side::range)
            && permits(range, false).is_err()
        {
            return 0;
        }
        let traced_source = source_side
            .as_ref()
            .is_some_and(|side| side.range().is_some());
        let traced_dest = dest_side.range().is_some();
        let per = u64::from(traced_source) + u64::from(traced_dest);
        if per == 0 {
            return 0;
        }
        let at = |first: u64, element: u64| {
            if backwards {
                first.wrapping_sub(element * w)
            } else {
                first.wrapping_add(element * w)
            }
        };
        let mut done = 0u64;
        // A movs between traced ranges: the element's load was made and
        // logged, its store not yet.
        let mut loaded: Option<u64> = None;
        let shm = self.shm;
        let me = self.me;
        let this = &*self;
        let mut each = |_: usize, record: &mut Record| -> bool {
            if done >= n {
                return false;
            }
            let d = at(dest, done);
            match (run, source, &source_side) {
                (StringRun::Stos { value }, _, _) => {
                    // SAFETY: the destination side lies in the alias of a
                    // range held for the run (the faulting one, or one
                    // `side` holds) whose protection permits the store.
                    unsafe { element(dest_side.ptr(d), width, Some(value)) };
                    if let Some(range) = dest_side.range() {
                        this.fill(record, kind::WRITE, range, d, width, value);
                    }
                }
                (StringRun::Movs { .. }, Some(first), Some(source_side)) => {
                    let s = at(first, done);
                    if traced_source && traced_dest {
                        if let Some(value) = loaded.take() {
                            // SAFETY: as above.
                            unsafe { element(dest_side.ptr(d), width, Some(value)) };
                            if let Some(range) = dest_side.range() {
                                this.fill(record, kind::WRITE, range, d, width, value);
                            }
                        } else {
                            // SAFETY: as above, for the source and a load.
                            let value = unsafe { element(source_side.ptr(s), width, None) };
                            if let Some(range) = source_side.range() {
                                this.fill(record, kind::READ, range, s, width, value);
                            }
                            loaded = Some(value);
                            return true;
                        }
                    } else {
                        // SAFETY: as above; the untraced side is the
                        // program's own memory, which its instruction
                        // accesses anyway.
                        let value = unsafe { element(source_side.ptr(s), width, None) };
                        // SAFETY: as above.
                        unsafe { element(dest_side.ptr(d), width, Some(value)) };
                        match (source_side.range(), dest_side.range()) {
                            (Some(range), _) => {
                                this.fill(record, kind::READ, range, s, width, value)
                            }
                            (None, Some(range)) => {
                                this.fill(record, kind::WRITE, range, d, width, value)
                            }
                            (None, None) => {}
                        }
                    }
                }
                _ => return false,
            }
            done += 1;
            true
        };
        log::push_run(shm, me.slot, me.tid, (n * per) as usize, &mut each);
        if let (Some(value), Some(range)) = (loaded, dest_side.range()) {
            // Cannot happen (the run had room for every record); the
            // element is finished, and logged on its own.
            let d = at(dest, done);
            // SAFETY: as in the run.
            unsafe { element(dest_side.ptr(d), width, Some(value)) };
            let mut record = Record::default();
            self.fill(&mut record, kind::WRITE, range, d, width, value);
            log::push(shm, me.slot, record, &[]);
            done += 1;
        }
        done
    }

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
