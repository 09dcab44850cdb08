//! mmiotrace's binary trace format (docs/FORMAT.md, "Binary format"):
//! a 12-byte header, then one record per event.
//!
//! Nearly every record of a real trace is a register access whose fields
//! differ little from the previous access's. Those are *short access*
//! records: a tag, one packed 64-bit word of small deltas and the value,
//! decoded with two unaligned loads, shifts and masks, without a branch
//! per field. Everything else (maps, marks, accesses that do not fit) is a
//! *general* record: a tag and LEB128 varints, most of them deltas too.
//!
//! This file holds the format's constants and the delta state both sides
//! keep; `writer` encodes, `reader` decodes.

use crate::event::*;

mod reader;
mod writer;

pub use reader::BinaryReader;
pub use writer::BinaryWriter;

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
/// R, W: a hook's fields follow (`Ext::hook`): rule `varint`, then `u8` 1
/// and the device's value `varint`, or `u8` 0 when the device was not
/// accessed.
const FLAG_HOOK: u8 = 1;
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
