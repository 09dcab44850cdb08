//! Register map of the simulated NIC: offsets and bits borrowed from the
//! Intel 8254x (e1000) so that a trace reads like one from real hardware.

/// Size of BAR0: 64 KiB of registers followed by 64 KiB of on-board memory.
pub const BAR_SIZE: usize = 128 * 1024;
/// Where the register space ends and on-board descriptor memory begins.
pub const DESCRIPTOR_MEMORY: usize = 0x1_0000;
/// The bus address at which the (pretend) PCI BAR0 sits; QEMU's e1000 default.
/// Ring base registers take bus addresses, so descriptors in on-board memory
/// are at `BAR0_BUS_ADDR + offset`.
pub const BAR0_BUS_ADDR: u64 = 0xfebc_0000;

pub const CTRL: usize = 0x0000;
pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;

pub const STATUS: usize = 0x0008;
pub const STATUS_FD: u32 = 1 << 0;
pub const STATUS_LU: u32 = 1 << 1;
pub const STATUS_SPEED_MASK: u32 = 0b11 << 6;
pub const STATUS_SPEED_100: u32 = 0b01 << 6;
pub const STATUS_SPEED_1000: u32 = 0b10 << 6;

pub const EERD: usize = 0x0014;
pub const EERD_START: u32 = 1 << 0;
pub const EERD_DONE: u32 = 1 << 4;
pub const EERD_ADDR_SHIFT: u32 = 8;
/// The data word sits in bits 31:16, i.e. at byte offset 2 of the register.
pub const EERD_DATA_BYTE: usize = 2;

pub const MDIC: usize = 0x0020;
pub const MDIC_REG_SHIFT: u32 = 16;
pub const MDIC_PHY_SHIFT: u32 = 21;
pub const MDIC_OP_WRITE: u32 = 1 << 26;
pub const MDIC_OP_READ: u32 = 1 << 27;
pub const MDIC_READY: u32 = 1 << 28;
pub const MDIC_ERROR: u32 = 1 << 30;

pub const ICR: usize = 0x00c0;
pub const ICR_TXDW: u32 = 1 << 0;
pub const ICR_LSC: u32 = 1 << 2;
pub const IMS: usize = 0x00d0;
pub const IMC: usize = 0x00d8;

pub const RCTL: usize = 0x0100;
pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_BAM: u32 = 1 << 15;
pub const RCTL_SECRC: u32 = 1 << 26;
pub const TCTL: usize = 0x0400;
pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;

pub const RDBAL: usize = 0x2800;
pub const RDLEN: usize = 0x2808;
pub const RDH: usize = 0x2810;
pub const RDT: usize = 0x2818;
pub const TDBAL: usize = 0x3800;
pub const TDBAH: usize = 0x3804;
pub const TDLEN: usize = 0x3808;
pub const TDH: usize = 0x3810;
pub const TDT: usize = 0x3818;

pub const GPTC: usize = 0x4080;
pub const TOTL: usize = 0x40c8;
pub const TOTH: usize = 0x40cc;

pub const RAL0: usize = 0x5400;
pub const RAH0: usize = 0x5404;
pub const RAH_AV: u32 = 1 << 31;

/// Legacy descriptors are 16 bytes; ring lengths must be multiples of 128.
pub const DESCRIPTOR_SIZE: usize = 16;
pub const RING_ENTRIES: usize = 8;
pub const TX_RING: usize = DESCRIPTOR_MEMORY;
pub const RX_RING: usize = DESCRIPTOR_MEMORY + 0x800;

/// Legacy TX descriptor fields (byte offsets within a descriptor).
pub const TXD_BUFFER_ADDR: usize = 0;
pub const TXD_LENGTH: usize = 8;
pub const TXD_CMD: usize = 11;
pub const TXD_STATUS: usize = 12;
pub const TXD_CMD_EOP: u8 = 1 << 0;
pub const TXD_CMD_IFCS: u8 = 1 << 1;
pub const TXD_CMD_RS: u8 = 1 << 3;
pub const TXD_STATUS_DD: u8 = 1 << 0;

pub const PHY_ADDR: u32 = 1;
pub const PHY_CTRL: u32 = 0;
pub const PHY_CTRL_RESTART_AUTONEG: u16 = 1 << 9;
pub const PHY_CTRL_AUTONEG_EN: u16 = 1 << 12;
pub const PHY_ID1: u32 = 2;
pub const PHY_ID2: u32 = 3;

/// EEPROM words 0x00..=0x0f sum to this when the image is valid.
pub const EEPROM_CHECKSUM: u16 = 0xbaba;
pub const EEPROM_WORDS: u32 = 16;
