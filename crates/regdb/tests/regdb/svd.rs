//! Decoding with a CMSIS-SVD file (tests/data/demo-mcu.svd): peripherals at
//! absolute addresses, derivedFrom, register and cluster arrays, lists,
//! enumerated values per direction, alternate registers.

use crate::common::*;

const TRACE: &str = "\
MAP 0.000001 1 0x40000000 0x7f0000000000 0x100000 0x0 100 path=/dev/mem
R 4 0.000002 1 0x40001004 0xa0 0x0 100
W 4 0.000003 1 0x40001008 0x15 0x0 100
R 4 0.000004 1 0x40002008 0x15 0x0 100
W 2 0.000005 1 0x4000100c 0x1234 0x0 100
W 4 0.000006 1 0x40010000 0xa 0x0 100
W 4 0.000007 1 0x4001002c 0x6 0x0 100
W 4 0.000008 1 0x40010120 0x3 0x0 100
R 4 0.000009 1 0x40010184 0x3 0x0 100
W 4 0.000010 1 0x40020018 0x70 0x0 100
R 4 0.000011 1 0x40030000 0x70 0x0 100
";

fn svd() -> mmiotrace_regdb::Database {
    mmiotrace_regdb::load(&data("demo-mcu.svd")).expect("demo-mcu.svd loads")
}

#[test]
fn dev_mem_mapping_decodes_by_physical_address() {
    let out = decode_with(vec![svd()], &[], None, TRACE, false);
    let want = "\
0.000001 MAP 1 0x40000000+0x100000 /dev/mem -> DEMO_MCU DEMO_MCU#DEMO_MCU
0.000002 100 R 4 DEMO_MCU 0x40001004 0x000000a0 UART0.STATUS => RXNE TXE
0.000003 100 W 4 DEMO_MCU 0x40001008 0x00000015 UART0.CTRL <= EN PARITY=EVEN STATE=START
0.000004 100 R 4 DEMO_MCU 0x40002008 0x00000015 UART1.CTRL => EN PARITY=EVEN STATE=BUSY
0.000005 100 W 2 DEMO_MCU 0x4000100c 0x1234 UART0.BAUD
0.000006 100 W 4 DEMO_MCU 0x40010000 0x0000000a GPIO.OUT <= PIN1 PIN3
0.000007 100 W 4 DEMO_MCU 0x4001002c 0x00000006 GPIO.PIN_CFG[3] <= MODE=ALT PULL=1
0.000008 100 W 4 DEMO_MCU 0x40010120 0x00000003 GPIO.CH[2].CFG <= PARITY=ODD
0.000009 100 R 4 DEMO_MCU 0x40010184 0x00000003 GPIO.LATCH_B
0.000010 100 W 4 DEMO_MCU 0x40020018 0x00000070 TIMER.CCMR_OUTPUT <= OCM=7
0.000011 100 R 4 DEMO_MCU 0x40030000 0x00000070 ?
";
    assert_eq!(out, want);
}

#[test]
fn a_peripheral_as_its_own_space_for_virtual_addresses() {
    // An rwmmio-style trace: no MAP, kernel virtual addresses; the range
    // is bound to UART1 with offsets from its base.
    let trace = "W 4 0.000001 0 0xffff800010001008 0x15 0x0 7\nR 4 0.000002 0 0xffff800010001000 0x41 0x0 7\n";
    let out = decode_with(
        vec![svd()],
        &["0xffff800010001000+0x1000=DEMO_MCU#UART1"],
        None,
        trace,
        false,
    );
    assert_eq!(
        out,
        "0.000001 7 W 4 0xffff800010001000 0x000008 0x00000015 UART1.CTRL <= EN PARITY=EVEN STATE=START\n\
         0.000002 7 R 4 0xffff800010001000 0x000000 0x00000041 UART1.DATA => BYTE=0x41\n"
    );
}
