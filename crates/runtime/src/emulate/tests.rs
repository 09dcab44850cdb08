//! The emulator on a flat test memory; the helpers serve the slow path's
//! and the single-step mode's tests too.

use super::*;
use iced_x86::{Decoder, DecoderOptions};

/// A flat little-endian memory at `BASE` that records every access.
pub(crate) struct TestBus {
    mem: Vec<u8>,
    pub(crate) log: Vec<Access>,
}

pub(crate) const BASE: u64 = 0x1000_0000;

impl Bus for TestBus {
    fn check(&mut self, addr: u64, width: u8, _write: bool) -> Result<(), Refusal> {
        let start = addr.checked_sub(BASE).ok_or(Refusal::OutsideRange)? as usize;
        self.mem
            .get(start..start + width as usize)
            .map(|_| ())
            .ok_or(Refusal::OutsideRange)
    }
    fn load(&mut self, addr: u64, width: u8) -> Result<u64, Refusal> {
        let start = (addr - BASE) as usize;
        let bytes = self
            .mem
            .get(start..start + width as usize)
            .ok_or(Refusal::OutsideRange)?;
        let mut value = [0u8; 8];
        value[..width as usize].copy_from_slice(bytes);
        let value = u64::from_le_bytes(value);
        self.log.push(Access {
            direction: Direction::Read,
            addr,
            width,
            value,
        });
        Ok(value)
    }
    fn store(&mut self, addr: u64, width: u8, value: u64) -> Result<(), Refusal> {
        let start = (addr - BASE) as usize;
        let bytes = self
            .mem
            .get_mut(start..start + width as usize)
            .ok_or(Refusal::OutsideRange)?;
        bytes.copy_from_slice(&value.to_le_bytes()[..width as usize]);
        self.log.push(Access {
            direction: Direction::Write,
            addr,
            width,
            value,
        });
        Ok(())
    }
    fn segment_base(&mut self, _segment: Register) -> Option<u64> {
        None
    }
    fn check_bytes(&mut self, addr: u64, len: usize, _write: bool) -> Result<(), Refusal> {
        let start = addr.checked_sub(BASE).ok_or(Refusal::OutsideRange)? as usize;
        self.mem
            .get(start..start + len)
            .map(|_| ())
            .ok_or(Refusal::OutsideRange)
    }
    fn load_bytes(&mut self, addr: u64, out: &mut [u8]) -> Result<(), Refusal> {
        self.check_bytes(addr, out.len(), false)?;
        let start = (addr - BASE) as usize;
        out.copy_from_slice(&self.mem[start..start + out.len()]);
        let mut low = [0u8; 8];
        let n = out.len().min(8);
        low[..n].copy_from_slice(&out[..n]);
        self.log.push(Access {
            direction: Direction::Read,
            addr,
            width: out.len() as u8,
            value: u64::from_le_bytes(low),
        });
        Ok(())
    }
    fn store_bytes(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Refusal> {
        self.check_bytes(addr, bytes.len(), true)?;
        let start = (addr - BASE) as usize;
        self.mem[start..start + bytes.len()].copy_from_slice(bytes);
        let mut low = [0u8; 8];
        let n = bytes.len().min(8);
        low[..n].copy_from_slice(&bytes[..n]);
        self.log.push(Access {
            direction: Direction::Write,
            addr,
            width: bytes.len() as u8,
            value: u64::from_le_bytes(low),
        });
        Ok(())
    }
}

pub(crate) fn decode(bytes: &[u8]) -> Instruction {
    let mut decoder = Decoder::with_ip(64, bytes, 0x40_0000, DecoderOptions::NONE);
    decoder.decode()
}

pub(crate) fn bus() -> TestBus {
    TestBus {
        mem: (0..64u8).map(|i| 0x80 | i).collect(),
        log: Vec::new(),
    }
}

#[test]
fn movsx_reports_the_memory_value_not_the_extended_register() {
    // movsx rax, byte [rbx]
    let insn = decode(&[0x48, 0x0f, 0xbe, 0x03]);
    let mut regs = Regs::default();
    regs.gpr[3] = BASE + 1;
    let mut bus = bus();
    emulate(&insn, &mut regs, &mut bus).expect("emulated");
    assert_eq!(bus.log[0].value, 0x81);
    assert_eq!(regs.gpr[0], 0xffff_ffff_ffff_ff81);
    assert_eq!(regs.rip, 0x40_0004);
}

#[test]
fn high_byte_and_word_destinations_keep_other_bits() {
    // mov ah, [rbx] ; mov cx, [rbx] ; mov edx, [rbx]
    let mut regs = Regs {
        gpr: [0x1111_1111_1111_1111; 16],
        ..Regs::default()
    };
    regs.gpr[3] = BASE;
    let mut bus = bus();
    emulate(&decode(&[0x8a, 0x23]), &mut regs, &mut bus).expect("mov ah");
    assert_eq!(regs.gpr[0], 0x1111_1111_1111_8011);
    emulate(&decode(&[0x66, 0x8b, 0x0b]), &mut regs, &mut bus).expect("mov cx");
    assert_eq!(regs.gpr[1], 0x1111_1111_1111_8180);
    emulate(&decode(&[0x8b, 0x13]), &mut regs, &mut bus).expect("mov edx");
    assert_eq!(regs.gpr[2], 0x8382_8180);
}

#[test]
fn store_immediate_sign_extends_to_64_bits() {
    // mov qword [rbx+8], -2
    let mut regs = Regs::default();
    regs.gpr[3] = BASE;
    let mut bus = bus();
    emulate(
        &decode(&[0x48, 0xc7, 0x43, 0x08, 0xfe, 0xff, 0xff, 0xff]),
        &mut regs,
        &mut bus,
    )
    .expect("emulated");
    assert_eq!(
        bus.log,
        [Access {
            direction: Direction::Write,
            addr: BASE + 8,
            width: 8,
            value: 0xffff_ffff_ffff_fffe
        }]
    );
}

#[test]
fn rep_stos_backwards_does_the_whole_repeat() {
    // std; rep stosw  (DF set in rflags)
    let insn = decode(&[0xf3, 0x66, 0xab]);
    let mut regs = Regs::default();
    regs.gpr[0] = 0xaaaa_bbbb;
    regs.gpr[1] = 3;
    regs.gpr[7] = BASE + 10;
    regs.rflags = DF;
    let mut bus = bus();
    emulate(&insn, &mut regs, &mut bus).expect("emulated");
    let addrs: Vec<u64> = bus.log.iter().map(|a| a.addr - BASE).collect();
    assert_eq!(addrs, [10, 8, 6]);
    assert!(bus.log.iter().all(|a| a.value == 0xbbbb && a.width == 2));
    assert_eq!((regs.gpr[1], regs.gpr[7]), (0, BASE + 4));
    assert_eq!(regs.rip, 0x40_0003);
}

#[test]
fn rep_movs_stops_before_an_element_it_cannot_do() {
    // rep movsq: the third element would leave the memory
    let insn = decode(&[0xf3, 0x48, 0xa5]);
    let mut regs = Regs {
        rip: 0x40_0000,
        ..Regs::default()
    };
    regs.gpr[1] = 5;
    regs.gpr[6] = BASE;
    regs.gpr[7] = BASE + 48;
    let mut bus = bus();
    emulate(&insn, &mut regs, &mut bus).expect("partly emulated");
    assert_eq!(bus.log.len(), 4, "two loads and two stores");
    assert_eq!(
        (regs.gpr[1], regs.gpr[6], regs.gpr[7]),
        (3, BASE + 16, BASE + 64)
    );
    assert_eq!(regs.rip, 0x40_0000, "resumes at the same instruction");
    assert_eq!(
        emulate(&insn, &mut regs, &mut bus),
        Err(Refusal::OutsideRange)
    );
}

/// 32 registers of 64 bytes.
struct TestVectors([[u8; 64]; 32]);

impl Vectors for TestVectors {
    fn read(&mut self, reg: Register, out: &mut [u8]) -> Option<()> {
        let n = reg.number();
        out.copy_from_slice(self.0.get(n)?.get(..out.len())?);
        Some(())
    }
    fn write(&mut self, reg: Register, bytes: &[u8], zero_to: usize) -> Option<()> {
        let r = self.0.get_mut(reg.number())?;
        r[..bytes.len()].copy_from_slice(bytes);
        r[bytes.len()..zero_to.max(bytes.len())].fill(0);
        Some(())
    }
    fn opmask(&mut self, _k: Register) -> Option<u64> {
        None
    }
}

#[test]
fn vector_loads_zero_or_keep_the_upper_bits_as_their_encoding_says() {
    let mut regs = Regs::default();
    regs.gpr[3] = BASE;
    for (bytes, kept_from) in [
        // movdqu xmm1, [rbx]: legacy SSE keeps bits 128 and up
        (&[0xf3, 0x0f, 0x6f, 0x0b][..], Some(16)),
        // vmovdqu xmm1, [rbx]: VEX zeroes them
        (&[0xc5, 0xfa, 0x6f, 0x0b][..], None),
        // movd xmm1, [rbx]: zeroes bits 32..128, keeps the rest
        (&[0x66, 0x0f, 0x6e, 0x0b][..], Some(16)),
    ] {
        let mut vectors = TestVectors([[0x77; 64]; 32]);
        let mut bus = bus();
        emulate_vector(&decode(bytes), &mut regs, &mut vectors, &mut bus).expect("emulated");
        let width = bus.log[0].width as usize;
        assert_eq!(bus.log.len(), 1);
        let r = vectors.0[1];
        assert_eq!(&r[..width], &bus.mem[..width]);
        match kept_from {
            Some(from) => {
                assert!(r[width..from].iter().all(|&b| b == 0), "{bytes:02x?}");
                assert!(r[from..].iter().all(|&b| b == 0x77), "{bytes:02x?}");
            }
            None => assert!(r[width..].iter().all(|&b| b == 0), "{bytes:02x?}"),
        }
    }
}

#[test]
fn movhps_store_writes_the_high_half() {
    // movhps [rbx+8], xmm2
    let mut regs = Regs::default();
    regs.gpr[3] = BASE;
    let mut vectors = TestVectors([[0; 64]; 32]);
    for (i, b) in vectors.0[2].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut bus = bus();
    emulate_vector(
        &decode(&[0x0f, 0x17, 0x53, 0x08]),
        &mut regs,
        &mut vectors,
        &mut bus,
    )
    .expect("emulated");
    assert_eq!(bus.log[0].addr, BASE + 8);
    assert_eq!(&bus.mem[8..16], &[8, 9, 10, 11, 12, 13, 14, 15]);
}

#[test]
fn compares_set_the_flags_of_the_real_instruction() {
    // cmp dword [rbx], 0x80838281 (equal) ; test byte [rbx+1], 0x80
    let mut regs = Regs {
        rflags: 0x202,
        ..Regs::default()
    };
    regs.gpr[3] = BASE;
    let mut bus = bus();
    emulate(
        &decode(&[0x81, 0x3b, 0x80, 0x81, 0x82, 0x83]),
        &mut regs,
        &mut bus,
    )
    .expect("cmp");
    assert_eq!(regs.rflags & 0x8d5, ZF | 0x4, "ZF and PF");
    emulate(&decode(&[0xf6, 0x43, 0x01, 0x80]), &mut regs, &mut bus).expect("test");
    assert_eq!(regs.rflags & (ZF | 0x80), 0x80, "SF, not ZF");
    assert_eq!(regs.rflags & 0x202, 0x202, "other flags kept");
}

#[test]
fn movdir64b_copies_64_bytes_in_one_read_and_one_write() {
    // movdir64b rax, [rbx]
    let mut regs = Regs::default();
    regs.gpr[3] = BASE;
    regs.gpr[0] = BASE;
    let mut bus = TestBus {
        mem: (0..128u8).collect(),
        log: Vec::new(),
    };
    regs.gpr[3] = BASE + 64;
    emulate(
        &decode(&[0x66, 0x0f, 0x38, 0xf8, 0x03]),
        &mut regs,
        &mut bus,
    )
    .expect("movdir64b");
    assert_eq!(
        bus.log
            .iter()
            .map(|a| (a.direction, a.addr, a.width))
            .collect::<Vec<_>>(),
        [
            (Direction::Read, BASE + 64, 64),
            (Direction::Write, BASE, 64)
        ]
    );
    assert_eq!(bus.mem[..64], (64..128u8).collect::<Vec<_>>()[..]);
}

#[test]
fn movbe_swaps_bytes_and_pop_computes_its_address_after_rsp_moves() {
    // movbe eax, [rbx]
    let mut regs = Regs::default();
    regs.gpr[3] = BASE;
    let mut bus = bus();
    emulate(&decode(&[0x0f, 0x38, 0xf0, 0x03]), &mut regs, &mut bus).expect("movbe");
    assert_eq!(regs.gpr[0], 0x8081_8283);
    // pop qword [rsp]: reads the top, then stores at the new top
    let mut regs = Regs::default();
    regs.gpr[4] = BASE + 8;
    let mut stack = super::tests::bus();
    emulate(&decode(&[0x8f, 0x04, 0x24]), &mut regs, &mut stack).expect("pop");
    assert_eq!(regs.gpr[4], BASE + 16);
    assert_eq!(
        stack
            .log
            .iter()
            .map(|a| (a.direction, a.addr))
            .collect::<Vec<_>>(),
        [(Direction::Read, BASE + 8), (Direction::Write, BASE + 16)]
    );
}
