//! The NVMe test driver's work: controller registers, including the 8-byte
//! CAP and the disable/ready handshake.

use anyhow::{Result, ensure};

use crate::bar::Regs;

const CAP: usize = 0x00;
const VS: usize = 0x08;
const INTMS: usize = 0x0c;
const INTMC: usize = 0x10;
const CC: usize = 0x14;
const CSTS: usize = 0x1c;
const AQA: usize = 0x24;
const CC_EN: u32 = 1;
const CSTS_RDY: u32 = 1;

pub fn probe(regs: &dyn Regs) -> Result<()> {
    let cap = regs.read64(CAP);
    let vs = regs.read32(VS);
    println!(
        "cap {cap:#018x}: {} queue entries, doorbell stride {}, timeout {} ms",
        (cap & 0xffff) + 1,
        4u64 << ((cap >> 32) & 0xf),
        ((cap >> 24) & 0xff) * 500
    );
    println!("version {}.{}", vs >> 16, (vs >> 8) & 0xff);
    // The firmware may have enabled it: disable and wait for not-ready.
    let cc = regs.read32(CC);
    regs.write32(CC, cc & !CC_EN);
    let mut polls = 0u32;
    while regs.read32(CSTS) & CSTS_RDY != 0 {
        polls += 1;
        ensure!(polls < 1_000_000, "the controller never became not-ready");
    }
    println!("disabled, csts {:#x}", regs.read32(CSTS));
    regs.write32(AQA, 0x001f_001f);
    println!("aqa {:#010x}", regs.read32(AQA));
    regs.write32(INTMS, 1);
    regs.write32(INTMC, 1);
    Ok(())
}
