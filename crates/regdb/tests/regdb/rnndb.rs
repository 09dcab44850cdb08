//! Decoding against the real envytools database (`shared/rnndb`, MIT data,
//! read where it lies): register names and field values across chipsets.

use crate::common::*;

#[test]
fn whole_database_loads_with_positions_on_its_known_overlaps() {
    let root = mmiotrace_regdb::load(&rnndb_dir().join("root.xml")).expect("root.xml loads");
    assert!(root.regs.len() > 10_000, "{} registers", root.regs.len());
    assert!(root.space_index("NV_MMIO").is_some());
    assert!(root.space_index("NV_PCI").is_some());
    // envytools has registers defined twice (pci.xml's P2P registers);
    // they are warnings that name both places, not a refusal to load.
    let p2p = root
        .warnings
        .iter()
        .find(|w| w.message.contains("P2P_READ_REPLY_ADDR_LOW"))
        .expect("the P2P overlap is reported");
    assert!(p2p.to_string().contains("bus/pci.xml:427:2: register P2P_READ_REPLY_ADDR_LOW at 0x1c8 overlaps register P2P_OUT_READ_REQUEST_ADDR_LOW at 0x1c8"), "{p2p}");
}

#[test]
fn pmc_id_fields_move_between_chipsets() {
    assert_eq!(
        nv1("NV40", "R", 4, 0, 0x040100a1),
        "PMC.ID => STEPPING=0xa1 DEVICE_ID=1 CHIPSET=NV40 FOUNDRY=TSMC"
    );
    // DEVICE_ID is bits 15..19 from G92 on, 12..17 from GF119 on.
    assert_eq!(
        nv1("G92", "R", 4, 0, 0x092a80a2),
        "PMC.ID => STEPPING=0xa2 DEVICE_ID=0x15 CHIPSET=G92 FOUNDRY=TSMC"
    );
    assert_eq!(
        nv1("GK104", "R", 4, 0, 0x0e40a0a2),
        "PMC.ID => STEPPING=0xa2 DEVICE_ID=0xa CHIPSET=GK104 FOUNDRY=TSMC"
    );
    // Before NV10 the register has other fields altogether.
    assert_eq!(
        nv1("NV4", "R", 4, 0, 0x00104000),
        "PMC.ID => ARCHITECTURE=NV4 REV_MINOR=0 REV_MAJOR=1 ALWAYS0=0 FOUNDRY=SGS"
    );
}

#[test]
fn chipset_is_learnt_from_a_pmc_id_read() {
    // 0x137 is GP107: from then on PFIFO.CTRL has no ENABLE bit (GF100:GK104 only).
    let lines = nv(None, &[("R", 4, 0, 0x137000a1), ("W", 4, 0x2200, 0x1f1)]);
    assert_eq!(
        lines,
        [
            "PMC.ID => STEPPING=0xa1 DEVICE_ID=0 CHIPSET=GP107 FOUNDRY=TSMC",
            "PFIFO.CTRL <= UNK8=1 unknown=0xf1",
        ]
    );
    let out = decode_with(
        vec![nv_mmio().clone()],
        &["10de:1c82=nv_mmio.xml"],
        None,
        &nv_trace(&[("R", 4, 0, 0x0c0000a1), ("W", 4, 0x2200, 0x1f1)]),
        false,
    );
    assert!(
        out.contains(" VARIANT 10de:1c82/bar0 chipset=GF100 (from PMC.ID)\n"),
        "{out}"
    );
    assert!(
        out.contains("PFIFO.CTRL <= ENABLE UNK4=0xf UNK8=1\n"),
        "{out}"
    );
}

#[test]
fn chipset_flag_and_spec_variant() {
    let trace = nv_trace(&[("W", 4, 0x2200, 0x1f1)]);
    let flag = decode_with(vec![nv_mmio().clone()], &[], Some("GK104"), &trace, false);
    assert!(
        flag.contains("PFIFO.CTRL <= UNK8=1 unknown=0xf1\n"),
        "{flag}"
    );
    // The spec's @variant wins over --chipset.
    let spec = decode_with(
        vec![nv_mmio().clone()],
        &["10de:1c82=nv_mmio.xml@GF100"],
        Some("GK104"),
        &trace,
        false,
    );
    assert!(
        spec.contains("PFIFO.CTRL <= ENABLE UNK4=0xf UNK8=1\n"),
        "{spec}"
    );
    assert!(
        spec.contains(" MAP 1 0xf0000000+0x1000000 -> 10de:1c82/bar0 nv_mmio.xml#NV_MMIO@GF100\n"),
        "{spec}"
    );
}

#[test]
fn ptimer_moved_between_nv1_and_nv3() {
    assert_eq!(nv1("NV1", "R", 4, 0x101404, 5), "PTIMER.TIME_HIGH");
    assert_eq!(nv1("NV4", "R", 4, 0x9410, 5), "PTIMER.TIME_HIGH");
    assert_eq!(nv1("NV4", "R", 4, 0x9404, 5), "?");
    assert_eq!(
        nv1("GT215", "W", 4, 0x9220, 0x10a1f),
        "PTIMER.CLOCK_SOURCE <= INTERNAL_MUL=0x1f INTERNAL_DIV=0xa SELECT=EXTERNAL"
    );
    // CLOCK_SOURCE is NV41 and later.
    assert_eq!(nv1("NV40", "W", 4, 0x9220, 0x10a1f), "?");
}

#[test]
fn pbus_host_mem_per_generation() {
    assert_eq!(
        nv1("NV44", "R", 4, 0x1704, 0x1000_0000),
        "PBUS.HOST_MEM.BAR1_GART_LIMIT"
    );
    // shr=16 address fields, inline enums from g80_defs.xml.
    assert_eq!(
        nv1("G84", "R", 4, 0x1700, 0x0200_0123),
        "PBUS.HOST_MEM.PMEM => OFFSET=0x1230000 TARGET=SYSRAM"
    );
    // A field typed with an inline bitset decodes as a nested set.
    assert_eq!(
        nv1("G84", "W", 4, 0x1704, 0x6001_2345),
        "PBUS.HOST_MEM.CHAN <= CHAN={ADDRESS=0x12345000 TARGET=SYSRAM} WHICH=BAR"
    );
    assert_eq!(
        nv1("GF100", "W", 4, 0x1704, 0x8001_2345),
        "PBUS.HOST_MEM.BAR1 <= CHAN={ADDRESS=0x12345000 TARGET=VRAM} MODE=VM"
    );
}

#[test]
fn pfifo_per_generation() {
    assert_eq!(
        nv1("NV4", "R", 4, 0x2100, 0x11),
        "PFIFO.INTR => CACHE_ERROR RUNOUT"
    );
    assert_eq!(
        nv1("G84", "R", 4, 0x2100, 0x11),
        "PFIFO.INTR => CACHE_ERROR BAR_FAULT"
    );
    assert_eq!(
        nv1("GF100", "R", 4, 0x2100, 0x3000_0101),
        "PFIFO.INTR => CHAN_TABLE_ERROR PLAYLIST VM_FAULT SUBFIFO_INTR"
    );
    assert_eq!(
        nv1("GF100", "R", 4, 0x2204, 7),
        "PFIFO.SUBFIFO_ENABLE => 0 1 2"
    );
    assert_eq!(nv1("GK104", "R", 4, 0x2204, 7), "?");
    assert_eq!(
        nv1("GF100", "W", 4, 0x2254, 0x1001_2345),
        "PFIFO.BAR1_BASE <= ADDR=0x12345000 UNK28"
    );
    // An array of 0x1000 channels, 8 bytes apart, GK104 on.
    assert_eq!(
        nv1("GK104", "W", 4, 0x80_0028, 0x8000_1234),
        "PFIFO_CHAN[5].CHAN <= INST={ADDRESS=0x1234000 TARGET=VRAM} UNK31"
    );
}

#[test]
fn pgraph_gpc_and_tpc_arrays() {
    // PGRAPH 0x400000, GPC[n] 0x100000 + n*0x8000, TPC[m] 0x4000 + m*0x800.
    assert_eq!(
        nv1("GF100", "W", 4, 0x51_400c, 0x3f),
        "PGRAPH.GPC[2].TPC[0].POLY.PM_UNK00C <= SEL=0xf unknown=0x30"
    );
    assert_eq!(
        nv1("GF119", "W", 4, 0x51_400c, 0x3f),
        "PGRAPH.GPC[2].TPC[0].POLY.PM_UNK00C <= SEL=0x1f unknown=0x20"
    );
    assert_eq!(
        nv1("GK104", "W", 4, 0x51_c80c, 0x3f),
        "PGRAPH.GPC[3].TPC[1].POLY.PM_UNK00C <= SEL=0x3f"
    );
    // A non-inline enum (G80_VSTATUS) on a read-only register.
    assert_eq!(
        nv1("GF100", "R", 4, 0x51_4060, 0x9),
        "PGRAPH.GPC[2].TPC[0].POLY.VSTATUS => UNK0=BUSY UNK1=BUSY UNK2=IDLE UNK3=IDLE UNK4=IDLE UNK5=IDLE UNK6=IDLE UNK7=IDLE UNK8=IDLE UNK9=IDLE"
    );
    assert_eq!(
        nv1("GF100", "R", 4, 0x40_0100, 0x20_0011),
        "PGRAPH.INTR => NOTIFY ILLEGAL_MTHD TRAP"
    );
    // PGRAPH's GF100 layout does not exist on G80.
    assert_ne!(
        nv1("G80", "R", 4, 0x51_400c, 0),
        "PGRAPH.GPC[2].TPC[0].POLY.PM_UNK00C"
    );
}

#[test]
fn partial_and_unknown_accesses() {
    // A byte read inside a 32-bit register names it with the byte offset, undecoded.
    assert_eq!(nv1("GF100", "R", 1, 1, 0), "PMC.ID+0x1");
    assert_eq!(nv1("GF100", "R", 4, 0xff_fff0, 0), "?");
}

#[test]
fn json_lines_carry_fields_as_values() {
    let out = decode_with(
        vec![nv_mmio().clone()],
        &["10de:1c82=nv_mmio.xml@GK104"],
        None,
        &nv_trace(&[("R", 4, 0, 0x0e40a0a2), ("W", 4, 0x2254, 0x1001_2345)]),
        true,
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect();
    let id = lines
        .iter()
        .find(|v| v["register"] == "PMC.ID")
        .expect("PMC.ID line");
    assert_eq!(id["kind"], "R");
    assert_eq!(id["device"], "10de:1c82/bar0");
    assert_eq!(id["offset"], "0x0");
    assert_eq!(id["value"], "0xe40a0a2");
    assert_eq!(id["fields"]["CHIPSET"], "GK104");
    assert_eq!(id["fields"]["STEPPING"], 0xa2);
    let bar1 = lines
        .iter()
        .find(|v| v["register"] == "PFIFO.BAR1_BASE")
        .expect("BAR1_BASE line");
    assert_eq!(bar1["kind"], "W");
    assert_eq!(bar1["fields"]["ADDR"], 0x1234_5000u64);
    assert_eq!(bar1["fields"]["UNK28"], true);
    let map = lines.iter().find(|v| v["kind"] == "MAP").expect("MAP line");
    assert_eq!(map["space"], "NV_MMIO");
    assert_eq!(map["base"], "0xf0000000");
}
