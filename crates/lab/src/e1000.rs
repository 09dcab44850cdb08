//! The e1000 test driver's work: what a NIC driver's probe does, with the
//! registers whose reads have side effects (ICR clears when read), so that a
//! tracer that reads twice changes what the driver prints.
//!
//! Every poll loop ends on the first try on QEMU's e1000 (reset and EEPROM
//! reads complete at once), so traced and untraced runs make the very same
//! accesses: the device's log of each must be equal.

use std::sync::Barrier;

use anyhow::{Result, ensure};

use crate::bar::{Regs, UioIrq};

pub const CTRL: usize = 0x0000;
pub const CTRL_RST: u32 = 1 << 26;
pub const STATUS: usize = 0x0008;
pub const EERD: usize = 0x0014;
pub const EERD_START: u32 = 1 << 0;
pub const EERD_DONE: u32 = 1 << 4;
pub const ICR: usize = 0x00c0;
pub const ICS: usize = 0x00c8;
pub const IMS: usize = 0x00d0;
pub const IMC: usize = 0x00d8;
/// The cause the driver raises itself (ICS) and reads back: receive timer,
/// not link change, which the device may raise on its own.
pub const ICR_RXT0: u32 = 1 << 7;
pub const RAL0: usize = 0x5400;
pub const RAH0: usize = 0x5404;
/// Statistics registers: CRCERRS .. (clear on read).
pub const STATS: usize = 0x4000;
/// The VLAN filter table: 128 read/write words, a scratch area per thread.
pub const VFTA: usize = 0x5600;

const POLL_LIMIT: u32 = 100_000;

/// Reset, EEPROM, MAC, interrupt cause; prints what it found.
pub fn probe(regs: &dyn Regs, irq: Option<&UioIrq>) -> Result<()> {
    println!("status {:#010x}", regs.read32(STATUS) & !0x3f0); // speed/link bits vary before reset
    regs.write32(IMC, 0xffff_ffff);
    regs.write32(CTRL, regs.read32(CTRL) | CTRL_RST);
    let mut polls = 0;
    while regs.read32(CTRL) & CTRL_RST != 0 {
        polls += 1;
        ensure!(polls < POLL_LIMIT, "the reset never completed");
    }
    regs.write32(IMC, 0xffff_ffff);
    regs.read32(ICR);
    println!("reset done");

    let mut words = [0u16; 64];
    for (index, word) in words.iter_mut().enumerate() {
        regs.write32(EERD, ((index as u32) << 8) | EERD_START);
        let mut polls = 0;
        while regs.read32(EERD) & EERD_DONE == 0 {
            polls += 1;
            ensure!(polls < POLL_LIMIT, "EEPROM word {index} never became ready");
        }
        // The data is the register's upper half. (QEMU's e1000 answers a
        // 2-byte read at EERD+2 with the register's low half, so read 4.)
        *word = (regs.read32(EERD) >> 16) as u16;
    }
    let checksum = words.iter().fold(0u16, |sum, w| sum.wrapping_add(*w));
    println!(
        "eeprom: 64 words, checksum {checksum:#06x} {}",
        if checksum == 0xbaba { "ok" } else { "BAD" }
    );
    let eeprom_mac: Vec<u8> = words[..3].iter().flat_map(|w| w.to_le_bytes()).collect();
    let low = regs.read32(RAL0).to_le_bytes();
    let high = regs.read32(RAH0);
    let ra_mac = [
        low[0],
        low[1],
        low[2],
        low[3],
        high as u8,
        (high >> 8) as u8,
    ];
    println!(
        "mac: {} (eeprom) {} (RAL0/RAH0, {})",
        hex_mac(&eeprom_mac),
        hex_mac(&ra_mac),
        if high & (1 << 31) != 0 {
            "valid"
        } else {
            "not valid"
        }
    );

    // ICR clears when read: the second read must find nothing.
    regs.write32(ICS, ICR_RXT0);
    let first = regs.read32(ICR) & ICR_RXT0;
    let second = regs.read32(ICR) & ICR_RXT0;
    println!("icr: first read {first:#x}, second read {second:#x}");

    if let Some(irq) = irq {
        irq.unmask()?;
        regs.write32(IMS, ICR_RXT0);
        regs.write32(ICS, ICR_RXT0);
        let count = irq.wait(10_000)?;
        let cause = regs.read32(ICR) & ICR_RXT0;
        regs.write32(IMC, 0xffff_ffff);
        irq.unmask()?;
        match count {
            Some(_) => println!("uio: interrupt received, cause {cause:#x}"),
            None => println!("uio: NO interrupt within 10 s, cause {cause:#x}"),
        }
    }

    // A narrower access than the device implements: the device sees a
    // 4-byte read at the same address (docs/LAB.md).
    println!("status low half {:#06x}", regs.read16(STATUS) & !0x3f0);

    let stats: Vec<u32> = (0..16).map(|i| regs.read32(STATS + 4 * i)).collect();
    println!(
        "stats: {} registers read, sum {}",
        stats.len(),
        stats.iter().map(|&v| u64::from(v)).sum::<u64>()
    );
    Ok(())
}

fn hex_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `threads` threads, thread i pinned to CPU i, each doing `rounds` rounds
/// of: write its own VFTA word, read it back, read STATUS, read a
/// statistics register. Prints one line per thread.
pub fn threads<R: Regs + Sync>(regs: &R, threads: usize, rounds: u32) -> Result<()> {
    ensure!(
        threads <= 8,
        "at most 8 threads (VFTA has 128 words, 16 each)"
    );
    let start = Barrier::new(threads);
    let results: Vec<Result<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let start = &start;
                scope.spawn(move || -> Result<u32> {
                    pin_to_cpu(index)?;
                    start.wait();
                    let mut mismatches = 0;
                    for round in 0..rounds {
                        let word = VFTA + 4 * (index * 16 + (round as usize % 16));
                        let value = ((index as u32) << 24) | round;
                        regs.write32(word, value);
                        if regs.read32(word) != value {
                            mismatches += 1;
                        }
                        regs.read32(STATUS);
                        regs.read32(STATS + 4 * (index % 16));
                    }
                    Ok(mismatches)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    });
    for (index, result) in results.into_iter().enumerate() {
        let mismatches = result?;
        println!(
            "thread {index} on cpu {index}: {rounds} rounds, {mismatches} read-back mismatches"
        );
    }
    Ok(())
}

fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE (at most 8 threads).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the calling thread, a set of the size given.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    ensure!(
        ret == 0,
        "cannot pin to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}
