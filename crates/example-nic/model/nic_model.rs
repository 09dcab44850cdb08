//! The example NIC as a device model: a hook plugin (the C ABI of
//! include/mmiotrace_hook.h) that plays the NIC behind BAR0, for
//!
//! ```text
//! rustc --edition 2024 --crate-type cdylib -C panic=abort -O \
//!     crates/example-nic/model/nic_model.rs -o libnic_model.so
//! mmiotrace record --model ./libnic_model.so \
//!     --trace '/dev/shm/mmiotrace-example-nic-*' -- example-nic --no-device
//! ```
//!
//! The driver then runs against no device at all: every access it makes
//! to BAR0 is answered here, inside the runtime's signal handler. So this
//! file allocates nothing and takes no lock: the BAR is a static array of
//! atomics, and nothing panics (it is built with `panic=abort`, and
//! indexing is checked with `get`).
//!
//! It behaves as `src/device.rs` does, without its delays: it sees every
//! access, so a write takes effect at once (CTRL.RST clears as it is set,
//! EERD and MDIC are done as they are written, TDT sends at once, the link
//! comes up when CTRL.SLU is set). ICR keeps its causes until reset, as
//! in the file-backed model, so that the driver prints the same summary.
//! One file, no dependencies: rustc builds it directly.

#![allow(dead_code)] // regs.rs is shared with the driver, which uses all of it

use std::sync::atomic::{AtomicU64, Ordering};

#[path = "../src/regs.rs"]
mod regs;

use regs::*;

const PASS: i32 = 0;
const MODIFIED: i32 = 1;
const DROP: i32 = 2;
const WRITE: u8 = 1;
const BEFORE: u8 = 0;

/// Marvell 88E1011, as in device.rs.
const PHY_ID: u32 = 0x0141_0c20;
const MAC_ADDR: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// include/mmiotrace_hook.h's `struct mmiotrace_hook_access`.
#[repr(C)]
pub struct Access {
    abi_version: u32,
    map_id: u32,
    offset: u64,
    value: u64,
    width: u8,
    dir: u8,
    phase: u8,
    reserved: u8,
    tid: u32,
}

/// BAR0, 8 bytes per atomic word.
static BAR: [AtomicU64; BAR_SIZE / 8] = [const { AtomicU64::new(0) }; BAR_SIZE / 8];
/// PHY registers, by MDIO register number.
static PHY: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];

fn mask(width: u8) -> u64 {
    if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(width))) - 1
    }
}

fn load(offset: usize, width: u8) -> u64 {
    let Some(word) = BAR.get(offset / 8) else {
        return mask(width); // outside BAR0: nothing answers
    };
    let shift = 8 * (offset % 8) as u32;
    (word.load(Ordering::Acquire) >> shift) & mask(width)
}

fn store(offset: usize, width: u8, value: u64) {
    let Some(word) = BAR.get(offset / 8) else {
        return;
    };
    let shift = 8 * (offset % 8) as u32;
    let bits = mask(width) << shift;
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
        Some((old & !bits) | ((value << shift) & bits))
    });
}

fn reg(offset: usize) -> u32 {
    load(offset, 4) as u32
}

fn set_reg(offset: usize, value: u32) {
    store(offset, 4, u64::from(value));
}

/// Power-on or CTRL.RST: the register space cleared, descriptor memory kept.
fn reset() {
    for word in BAR.iter().take(DESCRIPTOR_MEMORY / 8) {
        word.store(0, Ordering::Release);
    }
    set_reg(STATUS, STATUS_FD | STATUS_SPEED_1000);
    for phy in &PHY {
        phy.store(0, Ordering::Relaxed);
    }
    PHY[PHY_CTRL as usize].store(u64::from(PHY_CTRL_AUTONEG_EN), Ordering::Relaxed);
    PHY[PHY_ID1 as usize].store(u64::from(PHY_ID >> 16), Ordering::Relaxed);
    PHY[PHY_ID2 as usize].store(u64::from(PHY_ID & 0xffff), Ordering::Relaxed);
}

/// The EEPROM image of device.rs: words 0-2 the MAC address, a checksum
/// word that makes the 16 words sum to `EEPROM_CHECKSUM`.
fn eeprom_word(addr: u32) -> u16 {
    let word = |addr: u32| -> u16 {
        match addr {
            0..=2 => {
                let i = addr as usize * 2;
                u16::from_le_bytes([MAC_ADDR[i], MAC_ADDR[i + 1]])
            }
            0x0a => 0x6cc9,
            0x0b => 0x1000,
            0x0c => 0x8086,
            0x0d => 0x100e,
            0x0e => 0x8086,
            _ => 0,
        }
    };
    match addr {
        0x0f => (0..0x0f).map(word).fold(EEPROM_CHECKSUM, u16::wrapping_sub),
        _ if addr < EEPROM_WORDS => word(addr),
        _ => 0xffff,
    }
}

/// A register write's effect, after the value was stored.
fn written(offset: usize) {
    match offset {
        CTRL => {
            let ctrl = reg(CTRL);
            if ctrl & CTRL_RST != 0 {
                reset();
                set_reg(CTRL, 0);
            } else if ctrl & CTRL_SLU != 0 && reg(STATUS) & STATUS_LU == 0 {
                set_reg(STATUS, reg(STATUS) | STATUS_LU);
                set_reg(ICR, reg(ICR) | ICR_LSC);
            }
        }
        EERD => {
            let eerd = reg(EERD);
            if eerd & EERD_START != 0 {
                let addr = (eerd >> EERD_ADDR_SHIFT) & 0xff;
                let data = u32::from(eeprom_word(addr));
                set_reg(EERD, data << 16 | addr << EERD_ADDR_SHIFT | EERD_DONE);
            }
        }
        MDIC => {
            let mdic = reg(MDIC);
            let phy_addr = (mdic >> MDIC_PHY_SHIFT) & 0x1f;
            let phy = PHY.get(((mdic >> MDIC_REG_SHIFT) & 0x1f) as usize);
            let done = match phy {
                _ if phy_addr != PHY_ADDR => mdic | MDIC_READY | MDIC_ERROR,
                Some(phy) if mdic & MDIC_OP_READ != 0 => {
                    (mdic & !0xffff) | phy.load(Ordering::Relaxed) as u32 | MDIC_READY
                }
                Some(phy) if mdic & MDIC_OP_WRITE != 0 => {
                    let value = mdic as u16 & !PHY_CTRL_RESTART_AUTONEG;
                    phy.store(u64::from(value), Ordering::Relaxed);
                    mdic | MDIC_READY
                }
                _ => mdic,
            };
            set_reg(MDIC, done);
        }
        IMC => {
            set_reg(IMS, reg(IMS) & !reg(IMC));
            set_reg(IMC, 0);
        }
        TDT if reg(TCTL) & TCTL_EN != 0 => transmit(),
        _ => {}
    }
}

/// Sends every descriptor from TDH to TDT: DD set, counted, TDH moved on,
/// then TXDW raised (in that order, as the hardware does).
fn transmit() {
    let entries = reg(TDLEN) as usize / DESCRIPTOR_SIZE;
    let base_bus = u64::from(reg(TDBAH)) << 32 | u64::from(reg(TDBAL));
    let Some(base) = base_bus.checked_sub(BAR0_BUS_ADDR).map(|b| b as usize) else {
        return;
    };
    let (mut head, tail) = (reg(TDH) as usize, reg(TDT) as usize);
    if entries == 0 || tail >= entries || base + entries * DESCRIPTOR_SIZE > BAR_SIZE {
        return;
    }
    while head != tail {
        let descriptor = base + head * DESCRIPTOR_SIZE;
        let length = load(descriptor + TXD_LENGTH, 2);
        store(descriptor + TXD_STATUS, 1, u64::from(TXD_STATUS_DD));
        set_reg(GPTC, reg(GPTC).wrapping_add(1));
        let octets = (u64::from(reg(TOTH)) << 32 | u64::from(reg(TOTL))).wrapping_add(length);
        set_reg(TOTL, octets as u32);
        set_reg(TOTH, (octets >> 32) as u32);
        head = (head + 1) % entries;
    }
    set_reg(TDH, head as u32);
    set_reg(ICR, reg(ICR) | ICR_TXDW);
}

/// The plugin's entry (include/mmiotrace_hook.h): reads are answered from
/// the model, writes are taken by it (nothing else is behind BAR0).
///
/// # Safety
///
/// `access` points to a valid `struct mmiotrace_hook_access`, as the
/// runtime guarantees.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmiotrace_hook_access(access: *mut Access) -> i32 {
    // SAFETY: the caller's contract.
    let Some(access) = (unsafe { access.as_mut() }) else {
        return PASS;
    };
    if access.phase != BEFORE {
        return PASS;
    }
    let offset = access.offset as usize;
    if access.dir == WRITE {
        store(offset, access.width, access.value);
        written(offset);
        DROP
    } else {
        access.value = load(offset, access.width);
        MODIFIED
    }
}

/// Called when the driver maps BAR0: the device powers on.
#[unsafe(no_mangle)]
pub extern "C" fn mmiotrace_hook_map(_map_id: u32, _path: *const u8, _offset: u64, _len: u64) {
    reset();
}
