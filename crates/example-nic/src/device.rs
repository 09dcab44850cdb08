//! The simulated NIC: a thread that plays the hardware behind BAR0.
//!
//! It touches the BAR file only with `pread`/`pwrite` (`FileExt::read_at` /
//! `write_at`), never through a mapping: its accesses are the device's own,
//! not the driver's, and must not show up in a trace of the driver.
//!
//! Every ~50 µs it reads the registers and reacts to what the driver wrote.
//! A model that only sees the file's contents cannot see *accesses*, so:
//! - read-to-clear registers (ICR, the statistics counters) are not cleared
//!   by reads; ICR keeps its cause bits until the next reset;
//! - a write is noticed by its effect on the value (CTRL.RST set, EERD.START
//!   without DONE, MDIC with an opcode but no READY, TDT != TDH, IMC != 0),
//!   and two writes between polls look like one;
//! - ICR is updated read-modify-write. The driver only ever reads ICR, so
//!   there is no lost update; a driver that wrote it could race the model.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::regs::*;

const POLL_INTERVAL: Duration = Duration::from_micros(50);
/// How long CTRL.RST stays set before the reset completes.
const RESET_TIME: Duration = Duration::from_millis(1);
/// How long after CTRL.SLU the link partner answers.
const LINK_UP_TIME: Duration = Duration::from_millis(5);
/// Marvell 88E1011, as on many e1000 boards.
const PHY_ID: u32 = 0x0141_0c20;
const MAC_ADDR: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[derive(Debug)]
pub struct Device {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<()>>,
}

impl Device {
    /// Puts the device in its power-on state, then starts it running.
    pub fn power_on(bar: File) -> io::Result<Self> {
        let mut model = Model {
            bar,
            reset_since: None,
            slu_since: None,
            link_up: false,
            phy: [0; 32],
        };
        model.reset()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("nic-device".into())
            .spawn(move || {
                // SYNC POINT: pairs with the Release store in `power_off`; only
                // the flag itself is communicated.
                while !stop_flag.load(Ordering::Acquire) {
                    model.step(Instant::now())?;
                    std::thread::sleep(POLL_INTERVAL);
                }
                Ok(())
            })?;
        Ok(Self { stop, thread })
    }

    pub fn power_off(self) -> io::Result<()> {
        // SYNC POINT: pairs with the Acquire load in the device loop.
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| io::Error::other("device model thread panicked"))?
    }
}

/// Only the state the registers cannot hold lives here.
struct Model {
    bar: File,
    reset_since: Option<Instant>,
    slu_since: Option<Instant>,
    link_up: bool,
    phy: [u16; 32],
}

impl Model {
    fn reg(&self, offset: usize) -> io::Result<u32> {
        let mut bytes = [0; 4];
        self.bar.read_exact_at(&mut bytes, offset as u64)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn set_reg(&self, offset: usize, value: u32) -> io::Result<()> {
        self.bar.write_all_at(&value.to_le_bytes(), offset as u64)
    }

    fn raise(&self, cause: u32) -> io::Result<()> {
        self.set_reg(ICR, self.reg(ICR)? | cause)
    }

    /// Clears the register space; CTRL last, since the driver polls it to
    /// learn that the reset is over. Descriptor memory is left alone.
    fn reset(&mut self) -> io::Result<()> {
        self.bar.write_all_at(&vec![0; DESCRIPTOR_MEMORY - 4], 4)?;
        self.set_reg(STATUS, STATUS_FD | STATUS_SPEED_1000)?;
        self.phy = [0; 32];
        self.phy[PHY_CTRL as usize] = PHY_CTRL_AUTONEG_EN;
        self.phy[PHY_ID1 as usize] = (PHY_ID >> 16) as u16;
        self.phy[PHY_ID2 as usize] = PHY_ID as u16;
        (self.reset_since, self.slu_since, self.link_up) = (None, None, false);
        self.set_reg(CTRL, 0)
    }

    fn step(&mut self, now: Instant) -> io::Result<()> {
        let ctrl = self.reg(CTRL)?;
        if ctrl & CTRL_RST != 0 {
            let since = *self.reset_since.get_or_insert(now);
            return if now - since >= RESET_TIME {
                self.reset()
            } else {
                Ok(())
            };
        }
        self.update_link(ctrl, now)?;
        self.serve_eeprom()?;
        self.serve_mdio()?;
        let imc = self.reg(IMC)?;
        if imc != 0 {
            self.set_reg(IMS, self.reg(IMS)? & !imc)?;
            self.set_reg(IMC, 0)?;
        }
        if self.reg(TCTL)? & TCTL_EN != 0 {
            self.transmit()?;
        }
        Ok(())
    }

    fn update_link(&mut self, ctrl: u32, now: Instant) -> io::Result<()> {
        let link_up = match ctrl & CTRL_SLU {
            0 => {
                self.slu_since = None;
                false
            }
            _ => now - *self.slu_since.get_or_insert(now) >= LINK_UP_TIME,
        };
        if link_up != self.link_up {
            self.link_up = link_up;
            let status = self.reg(STATUS)?;
            self.set_reg(
                STATUS,
                if link_up {
                    status | STATUS_LU
                } else {
                    status & !STATUS_LU
                },
            )?;
            self.raise(ICR_LSC)?;
        }
        Ok(())
    }

    fn serve_eeprom(&self) -> io::Result<()> {
        let eerd = self.reg(EERD)?;
        if eerd & EERD_START == 0 || eerd & EERD_DONE != 0 {
            return Ok(());
        }
        let addr = (eerd >> EERD_ADDR_SHIFT) & 0xff;
        let data = eeprom_word(addr);
        self.set_reg(
            EERD,
            u32::from(data) << 16 | addr << EERD_ADDR_SHIFT | EERD_DONE,
        )
    }

    fn serve_mdio(&mut self) -> io::Result<()> {
        let mdic = self.reg(MDIC)?;
        if mdic & (MDIC_OP_READ | MDIC_OP_WRITE) == 0 || mdic & MDIC_READY != 0 {
            return Ok(());
        }
        let phy_addr = (mdic >> MDIC_PHY_SHIFT) & 0x1f;
        let reg = ((mdic >> MDIC_REG_SHIFT) & 0x1f) as usize;
        if phy_addr != PHY_ADDR {
            return self.set_reg(MDIC, mdic | MDIC_READY | MDIC_ERROR);
        }
        if mdic & MDIC_OP_READ != 0 {
            self.set_reg(
                MDIC,
                (mdic & !0xffff) | u32::from(self.phy[reg]) | MDIC_READY,
            )
        } else {
            // Restarting auto-negotiation is a self-clearing command bit.
            self.phy[reg] = mdic as u16 & !PHY_CTRL_RESTART_AUTONEG;
            self.set_reg(MDIC, mdic | MDIC_READY)
        }
    }

    /// Sends every descriptor between TDH and TDT: marks it done, counts it,
    /// and moves TDH on. Packet bytes are never fetched (there is no DMA into
    /// the driver's memory), so only the descriptor's length matters.
    fn transmit(&self) -> io::Result<()> {
        let entries = self.reg(TDLEN)? as usize / DESCRIPTOR_SIZE;
        let (mut head, tail) = (self.reg(TDH)? as usize, self.reg(TDT)? as usize);
        let base_bus = u64::from(self.reg(TDBAH)?) << 32 | u64::from(self.reg(TDBAL)?);
        let Some(base) = base_bus
            .checked_sub(BAR0_BUS_ADDR)
            .map(|offset| offset as usize)
        else {
            return Ok(()); // a ring outside on-board memory: nothing to fetch
        };
        if entries == 0
            || tail >= entries
            || base < DESCRIPTOR_MEMORY
            || base + entries * DESCRIPTOR_SIZE > BAR_SIZE
        {
            return Ok(());
        }
        let mut sent = false;
        while head != tail {
            let descriptor = (base + head * DESCRIPTOR_SIZE) as u64;
            let mut length = [0; 2];
            self.bar
                .read_exact_at(&mut length, descriptor + TXD_LENGTH as u64)?;
            self.bar
                .write_all_at(&[TXD_STATUS_DD], descriptor + TXD_STATUS as u64)?;
            self.set_reg(GPTC, self.reg(GPTC)?.wrapping_add(1))?;
            let octets = (u64::from(self.reg(TOTH)?) << 32 | u64::from(self.reg(TOTL)?))
                .wrapping_add(u64::from(u16::from_le_bytes(length)));
            self.set_reg(TOTL, octets as u32)?;
            self.set_reg(TOTH, (octets >> 32) as u32)?;
            head = (head + 1) % entries;
            sent = true;
        }
        if sent {
            self.set_reg(TDH, head as u32)?;
            self.raise(ICR_TXDW)?;
        }
        Ok(())
    }
}

/// The EEPROM image: MAC address in words 0-2, a few configuration words,
/// and a checksum word that makes all 16 words sum to `EEPROM_CHECKSUM`.
fn eeprom_word(addr: u32) -> u16 {
    let word = |addr: u32| -> u16 {
        match addr {
            0..=2 => {
                let i = addr as usize * 2;
                u16::from_le_bytes([MAC_ADDR[i], MAC_ADDR[i + 1]])
            }
            0x0a => 0x6cc9, // initialization control 1
            0x0b => 0x1000, // subsystem id
            0x0c => 0x8086, // subsystem vendor
            0x0d => 0x100e, // device id
            0x0e => 0x8086, // vendor id
            _ => 0,
        }
    };
    match addr {
        0x0f => (0..0x0f).map(word).fold(EEPROM_CHECKSUM, u16::wrapping_sub),
        _ if addr < EEPROM_WORDS => word(addr),
        _ => 0xffff,
    }
}
