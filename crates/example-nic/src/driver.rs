//! The driver: brings the NIC up the way an e1000 driver's probe and open
//! do, then sends a few packets. Every register access goes through [`Bar`].

use std::ffi::CStr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use crate::bar::Bar;
use crate::marker::Marker;
use crate::regs::*;

const RESET_TIMEOUT: Duration = Duration::from_secs(1);
const EEPROM_TIMEOUT: Duration = Duration::from_millis(500);
const MDIO_TIMEOUT: Duration = Duration::from_millis(500);
const LINK_TIMEOUT: Duration = Duration::from_secs(2);
const TX_TIMEOUT: Duration = Duration::from_secs(1);
/// Between two reads of a register being polled, as a driver's `udelay`.
const POLL_DELAY: Duration = Duration::from_micros(20);
const PACKETS: usize = 3;
const FRAME_LEN: usize = 60;

/// What the driver learned and did, for the summary line.
#[derive(Debug)]
pub struct Summary {
    pub mac: [u8; 6],
    pub phy_id: u32,
    pub link_speed_mbps: u32,
    pub full_duplex: bool,
    pub packets_sent: u32,
    pub octets_sent: u64,
    pub interrupt_causes: u32,
    /// TX-done interrupts (ICR.TXDW) seen before the device had set DD in
    /// the descriptors: the driver waited for DD rather than trusting them.
    pub early_tx_done: u32,
}

#[derive(Debug)]
pub struct Driver<'a> {
    bar: &'a Bar,
    marker: Marker,
}

impl<'a> Driver<'a> {
    pub fn new(bar: &'a Bar, marker: Marker) -> Self {
        Self { bar, marker }
    }

    pub fn run(&self) -> anyhow::Result<Summary> {
        let status = self.bar.read32(STATUS);
        ensure!(
            status != u32::MAX,
            "device not responding (STATUS reads all ones)"
        );
        self.bar.write32(IMC, u32::MAX);
        self.bar.read32(ICR); // ack anything pending (read-to-clear on hardware)

        self.phase(c"reset");
        self.bar.write32(CTRL, self.bar.read32(CTRL) | CTRL_RST);
        self.wait_for(
            CTRL,
            "CTRL",
            "the reset to complete (CTRL.RST to clear)",
            RESET_TIMEOUT,
            |ctrl| ctrl & CTRL_RST == 0,
        )?;
        self.bar.write32(IMC, u32::MAX); // reset unmasks nothing, but be sure

        self.phase(c"eeprom");
        let mac = self.read_mac_address()?;
        self.bar
            .write32(RAL0, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
        self.bar.write32(
            RAH0,
            u32::from(u16::from_le_bytes([mac[4], mac[5]])) | RAH_AV,
        );

        self.phase(c"rings");
        let rx_buffers = vec![[0u8; 2048]; RING_ENTRIES];
        self.setup_rx_ring(&rx_buffers);
        self.setup_tx_ring();

        self.phase(c"link");
        let phy_id =
            u32::from(self.mdio_read(PHY_ID1)?) << 16 | u32::from(self.mdio_read(PHY_ID2)?);
        self.mdio_write(PHY_CTRL, PHY_CTRL_AUTONEG_EN | PHY_CTRL_RESTART_AUTONEG)?;
        self.bar.write32(CTRL, self.bar.read32(CTRL) | CTRL_SLU);
        let status = self.wait_for(STATUS, "STATUS", "link up (STATUS.LU)", LINK_TIMEOUT, |s| {
            s & STATUS_LU != 0
        })?;

        self.phase(c"tx");
        let frames: Vec<_> = (0..PACKETS).map(|packet| frame(&mac, packet)).collect();
        let early_tx_done = self.transmit(&frames)?;
        let packets_sent = self.bar.read32(GPTC);
        let octets_sent = self.bar.read64(TOTL); // TOTL and TOTH in one 64-bit load

        self.bar.write32(IMS, ICR_LSC | ICR_TXDW);
        let interrupt_causes = self.bar.read32(ICR);
        drop(rx_buffers); // the RX ring points into these until here
        Ok(Summary {
            mac,
            phy_id,
            link_speed_mbps: match status & STATUS_SPEED_MASK {
                STATUS_SPEED_1000 => 1000,
                STATUS_SPEED_100 => 100,
                _ => 10,
            },
            full_duplex: status & STATUS_FD != 0,
            packets_sent,
            octets_sent,
            interrupt_causes,
            early_tx_done,
        })
    }

    fn phase(&self, name: &CStr) {
        self.marker.mark(name);
    }

    /// Polls a register until `done` holds, and returns its last value.
    fn wait_for(
        &self,
        offset: usize,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(u32) -> bool,
    ) -> anyhow::Result<u32> {
        let start = Instant::now();
        loop {
            let value = self.bar.read32(offset);
            // No register polled here ever reads all ones: a device that
            // was removed (surprise removal, a dead link) reads all ones
            // everywhere, and waiting for it would only time out.
            ensure!(
                value != u32::MAX,
                "device removed: {name} reads all ones while waiting for {what}"
            );
            if done(value) {
                return Ok(value);
            }
            if start.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for {what} ({name} = {value:#010x})");
            }
            std::thread::sleep(POLL_DELAY);
        }
    }

    fn eeprom_read(&self, word: u32) -> anyhow::Result<u16> {
        self.bar.write32(EERD, word << EERD_ADDR_SHIFT | EERD_START);
        self.wait_for(
            EERD,
            "EERD",
            &format!("EEPROM word {word:#x}"),
            EEPROM_TIMEOUT,
            |eerd| eerd & EERD_DONE != 0,
        )?;
        Ok(self.bar.read16(EERD + EERD_DATA_BYTE))
    }

    /// Reads the whole (16-word) EEPROM, checks its checksum and returns the
    /// MAC address from words 0-2.
    fn read_mac_address(&self) -> anyhow::Result<[u8; 6]> {
        let mut words = [0u16; EEPROM_WORDS as usize];
        for (addr, word) in (0..).zip(&mut words) {
            *word = self.eeprom_read(addr)?;
        }
        let sum = words.iter().fold(0u16, |sum, &word| sum.wrapping_add(word));
        ensure!(
            sum == EEPROM_CHECKSUM,
            "EEPROM checksum is {sum:#06x}, expected {EEPROM_CHECKSUM:#06x}"
        );
        let [a, b] = words[0].to_le_bytes();
        let [c, d] = words[1].to_le_bytes();
        let [e, f] = words[2].to_le_bytes();
        Ok([a, b, c, d, e, f])
    }

    fn mdio(&self, command: u32, reg: u32) -> anyhow::Result<u16> {
        self.bar.write32(
            MDIC,
            command | reg << MDIC_REG_SHIFT | PHY_ADDR << MDIC_PHY_SHIFT,
        );
        let mdic = self.wait_for(
            MDIC,
            "MDIC",
            &format!("PHY register {reg}"),
            MDIO_TIMEOUT,
            |mdic| mdic & MDIC_READY != 0,
        )?;
        ensure!(
            mdic & MDIC_ERROR == 0,
            "PHY register {reg}: MDIC reports an error ({mdic:#010x})"
        );
        Ok(mdic as u16)
    }

    fn mdio_read(&self, reg: u32) -> anyhow::Result<u16> {
        self.mdio(MDIC_OP_READ, reg)
    }

    fn mdio_write(&self, reg: u32, value: u16) -> anyhow::Result<()> {
        self.mdio(MDIC_OP_WRITE | u32::from(value), reg).map(drop)
    }

    fn setup_rx_ring(&self, buffers: &[[u8; 2048]]) {
        for (index, buffer) in buffers.iter().enumerate() {
            let descriptor = RX_RING + index * DESCRIPTOR_SIZE;
            self.bar.write64(descriptor, buffer.as_ptr() as u64); // a "DMA" address
            self.bar.write64(descriptor + 8, 0); // length, checksum, status, errors
        }
        self.bar.write64(RDBAL, BAR0_BUS_ADDR + RX_RING as u64); // RDBAL and RDBAH at once
        self.bar
            .write32(RDLEN, (RING_ENTRIES * DESCRIPTOR_SIZE) as u32);
        self.bar.write32(RDH, 0);
        self.bar.write32(RDT, RING_ENTRIES as u32 - 1);
        self.bar.write32(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
    }

    fn setup_tx_ring(&self) {
        self.bar.write64(TDBAL, BAR0_BUS_ADDR + TX_RING as u64); // TDBAL and TDBAH at once
        self.bar
            .write32(TDLEN, (RING_ENTRIES * DESCRIPTOR_SIZE) as u32);
        self.bar.write32(TDH, 0);
        self.bar.write32(TDT, 0);
        self.bar.write32(TCTL, TCTL_EN | TCTL_PSP);
    }

    /// Fills one descriptor per frame, rings the doorbell once, waits for
    /// the TX-done interrupt cause (ICR.TXDW), then reclaims each
    /// descriptor once the device has set its DD bit. ICR only says that
    /// *something* was sent: a cause seen before a descriptor is done (a
    /// stale or early interrupt) makes the driver wait for that
    /// descriptor's DD, never reclaim it unsent. Returns how many
    /// descriptors the interrupt came early for.
    fn transmit(&self, frames: &[[u8; FRAME_LEN]]) -> anyhow::Result<u32> {
        ensure!(
            frames.len() < RING_ENTRIES,
            "more frames than TX descriptors"
        );
        for (index, frame) in frames.iter().enumerate() {
            let descriptor = TX_RING + index * DESCRIPTOR_SIZE;
            self.bar
                .write64(descriptor + TXD_BUFFER_ADDR, frame.as_ptr() as u64);
            self.bar.write16(descriptor + TXD_LENGTH, FRAME_LEN as u16);
            self.bar.write8(descriptor + TXD_LENGTH + 2, 0); // no checksum offload
            self.bar.write8(
                descriptor + TXD_CMD,
                TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS,
            );
            self.bar.write32(descriptor + TXD_STATUS, 0); // status, css, special
        }
        let tail = frames.len();
        self.bar.write32(TDT, tail as u32);
        self.wait_for(
            ICR,
            "ICR",
            "the TX-done interrupt (ICR.TXDW)",
            TX_TIMEOUT,
            |icr| icr & ICR_TXDW != 0,
        )?;
        let mut early = 0;
        for index in 0..tail {
            let status = TX_RING + index * DESCRIPTOR_SIZE + TXD_STATUS;
            if self.bar.read8(status) & TXD_STATUS_DD != 0 {
                continue;
            }
            early += 1;
            let start = Instant::now();
            loop {
                let dd = self.bar.read8(status);
                ensure!(
                    dd != u8::MAX,
                    "device removed: TX descriptor {index} reads all ones"
                );
                if dd & TXD_STATUS_DD != 0 {
                    break;
                }
                if start.elapsed() > TX_TIMEOUT {
                    bail!(
                        "timed out after {TX_TIMEOUT:?} waiting for the device to send descriptor {index} (ICR said TX done, DD is not set)"
                    );
                }
                std::thread::sleep(POLL_DELAY);
            }
        }
        let head = self.wait_for(TDH, "TDH", "the device's TX head", TX_TIMEOUT, |head| {
            head as usize == tail
        })?;
        ensure!(head as usize == tail, "TDH is {head}, expected {tail}");
        Ok(early)
    }
}

/// A minimum-size broadcast frame with a local-experimental EtherType.
fn frame(source: &[u8; 6], sequence: usize) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    frame[0..6].fill(0xff);
    frame[6..12].copy_from_slice(source);
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    let payload = format!("mmiotrace example-nic packet {sequence}");
    frame[14..14 + payload.len()].copy_from_slice(payload.as_bytes());
    frame
}
