//! Decoding with a hand-written TOML register map: the example NIC's
//! (tests/data/example-nic.toml, also shown in docs/REGISTERS.md).

use crate::common::*;

fn nic() -> mmiotrace_regdb::Database {
    mmiotrace_regdb::load(&data("example-nic.toml")).expect("example-nic.toml loads")
}

const TRACE: &str = "\
MAP 0.000001 1 0x0 0x7f0000000000 0x20000 0x0 100 path=/dev/shm/mmiotrace-example-nic-bar0
W 4 0.000002 1 0x0 0x4000040 0x0 100
R 4 0.000003 1 0x8 0x83 0x0 100
W 4 0.000004 1 0x14 0x301 0x0 100
R 4 0.000005 1 0x14 0xbaba0310 0x0 100
W 4 0.000006 1 0x20 0x08220000 0x0 100
R 4 0.000007 1 0x20 0x10221234 0x0 100
W 8 0.000008 1 0x2800 0xfebd0800 0x0 100
W 4 0.000009 1 0x5404 0x80005634 0x0 100
W 4 0.000010 1 0x540c 0x80005634 0x0 100
W 1 0.000011 1 0x1001b 0xb 0x0 100
W 2 0.000012 1 0x10018 0x3c 0x0 100
R 4 0.000013 1 0x4080 0x17 0x0 100
W 4 0.000014 1 0x5208 0x1 0x0 100
R 4 0.000015 1 0xc0 0x4 0x0 100
W 4 0.000016 1 0xd8 0x5 0x0 100
R 2 0.000017 1 0x16 0x8086 0x0 100
R 1 0.000018 1 0x15 0x03 0x0 100
";

#[test]
fn registers_arrays_blocks_fields_and_enums() {
    let out = decode_with(vec![nic()], &[], None, TRACE, false);
    let want = "\
0.000001 MAP 1 0x0+0x20000 /dev/shm/mmiotrace-example-nic-bar0 -> map1 example-nic#example-nic
0.000002 100 W 4 map1 0x000000 0x04000040 CTRL <= SLU RST
0.000003 100 R 4 map1 0x000008 0x00000083 STATUS => FD LU SPEED=M1000
0.000004 100 W 4 map1 0x000014 0x00000301 EERD <= START ADDR=3 DATA=0
0.000005 100 R 4 map1 0x000014 0xbaba0310 EERD => DONE ADDR=3 DATA=0xbaba
0.000006 100 W 4 map1 0x000020 0x08220000 MDIC <= DATA=0 REG=2 PHY=1 OP=READ
0.000007 100 R 4 map1 0x000020 0x10221234 MDIC => DATA=0x1234 REG=2 PHY=1 OP=?0x0 READY
0.000008 100 W 8 map1 0x002800 0x00000000febd0800 RDBAL
0.000009 100 W 4 map1 0x005404 0x80005634 RA[0].RAH <= ADDR=0x5634 AV
0.000010 100 W 4 map1 0x00540c 0x80005634 RA[1].RAH <= ADDR=0x5634 AV
0.000011 100 W 1 map1 0x01001b 0x0b TXD[1].CMD <= EOP IFCS RS
0.000012 100 W 2 map1 0x010018 0x003c TXD[1].LENGTH <= 60
0.000013 100 R 4 map1 0x004080 0x00000017 GPTC => 23
0.000014 100 W 4 map1 0x005208 0x00000001 MTA[2]
0.000015 100 R 4 map1 0x0000c0 0x00000004 ICR => LSC
0.000016 100 W 4 map1 0x0000d8 0x00000005 IMC <= TXDW LSC
0.000017 100 R 2 map1 0x000016 0x8086 EERD+0x2 => DATA=0x8086
0.000018 100 R 1 map1 0x000015 0x03 EERD+0x1 => ADDR=3
";
    assert_eq!(out, want);
}

#[test]
fn match_rules_select_the_map_among_several_databases() {
    // With two databases and no --device, the TOML map's [match] path
    // claims the mapping; the other mapping stays undecoded.
    let trace = format!(
        "{TRACE}MAP 0.000020 2 0x0 0x7f0000100000 0x1000 0x0 100 path=/dev/shm/other\nW 4 0.000021 2 0x0 0x1 0x0 100\n"
    );
    let out = decode_with(vec![nic(), nv_mmio().clone()], &[], None, &trace, false);
    assert!(
        out.contains("W 4 map1 0x000000 0x04000040 CTRL <= SLU RST\n"),
        "{out}"
    );
    assert!(
        out.contains("0.000020 MAP 2 0x0+0x1000 /dev/shm/other -> no database\n"),
        "{out}"
    );
    assert!(
        out.contains("0.000021 100 W 4 map2 0x000000 0x00000001 ?\n"),
        "{out}"
    );
}

#[test]
fn device_spec_by_map_id_and_by_pci_ids() {
    let by_id = decode_with(vec![nic()], &["1=example-nic"], None, TRACE, false);
    assert!(by_id.contains(" CTRL <= SLU RST\n"), "{by_id}");
    let pci = "PCIDEV 0018 8086100e b febc0000 0 0 0 0 0 0 20000 0 0 0 0 0 0 e1000\n\
               MAP 0.000001 1 0xfebc0000 0xffffc90000400000 0x20000 0x0 0\n\
               W 4 0.000002 1 0xfebc0100 0x8002 0x0 0\n";
    let out = decode_with(vec![nic()], &[], None, pci, false);
    assert!(
        out.contains(" W 4 8086:100e/bar0 0x000100 0x00008002 RCTL <= EN BAM\n"),
        "{out}"
    );
}

#[test]
fn spec_errors_say_what_is_wrong() {
    let mut dbs = vec![nic()];
    let err = |spec: &str, dbs: &mut Vec<mmiotrace_regdb::Database>| {
        mmiotrace_regdb::DeviceSpec::parse(spec, dbs)
            .expect_err("spec is refused")
            .to_string()
    };
    assert_eq!(
        err("8086:100e", &mut dbs),
        "--device \"8086:100e\": expected SELECTOR=DATABASE, e.g. 10de:1c82=nv_mmio.xml@GP107"
    );
    assert!(
        err("8086:100e=nope.toml", &mut dbs)
            .contains("no database \"nope.toml\" was loaded with --regs (loaded: example-nic)")
    );
    assert!(
        err("8086:100e/bar9=example-nic", &mut dbs).contains("\"bar9\" is not a BAR number (0-6)")
    );
    assert!(err("1=example-nic@GP107", &mut dbs).contains("example-nic has no variant \"GP107\""));
}

#[test]
fn docs_show_the_fixture_verbatim() {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/REGISTERS.md"),
    )
    .expect("docs/REGISTERS.md");
    let example = docs
        .split("### A complete example")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("a ```toml block after \"### A complete example\"");
    let fixture = std::fs::read_to_string(data("example-nic.toml")).expect("fixture");
    assert_eq!(
        example, fixture,
        "docs/REGISTERS.md and tests/data/example-nic.toml differ"
    );
}

#[test]
fn folded_polling_loops_decode_like_the_access_they_repeat() {
    let trace = "MAP 0.000001 1 0x0 0x7f0000000000 0x20000 0x0 100 path=/dev/shm/mmiotrace-example-nic-bar0\n\
                 R 4 0.000002 1 0x0 0x4000000 0x0 100\n\
                 REPEAT R 4 0.000003 1 0x0 0x4000000 0x0 100 count=9 len=1 end=0.000900 until=0x0\n";
    let out = decode_with(vec![nic()], &[], None, trace, false);
    assert!(
        out.ends_with(
            "0.000003 100 R 4 map1 0x000000 0x04000000 CTRL => RST (repeated 9 more times, until 0.000900 read 0x00000000)\n"
        ),
        "{out}"
    );
    let json = decode_with(vec![nic()], &[], None, trace, true);
    let last: serde_json::Value =
        serde_json::from_str(json.lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["kind"], "REPEAT");
    assert_eq!(last["count"], 9);
    assert_eq!(last["register"], "CTRL");
    assert_eq!(last["fields"]["RST"], true);
}
