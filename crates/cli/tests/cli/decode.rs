//! `mmiotrace decode`, run as the real binary: kernel traces with the
//! envytools database, user-space traces with a TOML map, the kernel's
//! rwmmio ftrace events with an SVD file, and the errors.

use crate::common::{
    data, mmiotrace, nv_mmio, path_str as s, regdb_data, stderr_text, succeeded_stdout,
};

#[test]
fn kernel_log_with_rnndb_learns_the_chipset_and_names_registers() {
    let trace = data("kernel-crlf-truncated.txt");
    let db = nv_mmio();
    let out = mmiotrace(&["decode", s(&trace), "--regs", s(&db)]);
    let text = succeeded_stdout(&out);
    let want = [
        "5.321847 MAP 1 0xfd000000+0x1000000 -> 10de:1c82/bar0 nv_mmio.xml#NV_MMIO\n",
        "5.321903 VARIANT 10de:1c82/bar0 chipset=GP108 (from PMC.ID)\n",
        "5.321903 0 R 4 10de:1c82/bar0 0x000000 0x138000a1 PMC.ID => STEPPING=0xa1 DEVICE_ID=0 CHIPSET=GP108 FOUNDRY=TSMC\n",
        "5.321969 0 W 4 10de:1c82/bar0 0x000140 0x00000000 PMC.INTR_EN_HOST\n",
        "5.322004 0 R 1 10de:1c82/bar0 0x6013d4 0x00 PRMIO.CRX\n",
        "5.400000 MARK modeset begins\n",
        // BAR1 (VRAM) has no database.
        "5.400120 MAP 2 0xe0000000+0x200000 -> no database\n",
        "5.400200 0 W 4 map2 0xe0000000 0xdeadbeef ?\n",
        "5.400300 0 ? ? map2 0xe0000010 ? ?\n",
        "LOST 12 events\n",
    ];
    for line in want {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let err = stderr_text(&out);
    assert!(
        err.contains("the trace ends in the middle of a record"),
        "{err}"
    );
    assert!(err.contains("overlapping register definitions"), "{err}");
}

#[test]
fn json_lines_and_a_forced_chipset() {
    let trace = data("kernel-crlf-truncated.txt");
    let db = nv_mmio();
    let out = mmiotrace(&[
        "decode",
        s(&trace),
        "--regs",
        s(&db),
        "--device",
        "10de:1c82=nv_mmio.xml@GK104",
        "--format",
        "jsonl",
    ]);
    let text = succeeded_stdout(&out);
    let values: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let id = values
        .iter()
        .find(|v| v["register"] == "PMC.ID")
        .expect("a PMC.ID access");
    // With the chipset given, nothing is learnt: CHIPSET is still a field.
    assert_eq!(id["fields"]["CHIPSET"], "GP108");
    assert_eq!(id["device"], "10de:1c82/bar0");
    assert!(!values.iter().any(|v| v["kind"] == "VARIANT"), "{text}");
    let enable = values
        .iter()
        .find(|v| v["register"] == "PMC.ENABLE" && v["kind"] == "W")
        .expect("a PMC.ENABLE write");
    assert_eq!(enable["fields"]["PFIFO"], true);
    assert_eq!(enable["value"], "0xffffffff");
}

#[test]
fn user_space_trace_with_a_toml_map_by_path_glob() {
    let dir = std::env::temp_dir().join(format!("mmiotrace-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let trace = dir.join("nic.trace");
    std::fs::write(
        &trace,
        "VERSION 20070824\n\
         MAP 0.003990 1 0x0 0x7fc454c92000 0x20000 0x0 8743 seq=0 proc=8743 path=/tmp/nic-bar0\n\
         R 4 0.004010 1 0x8 0x81 0x557fba75c358 8743 seq=1 proc=8743\n\
         W 4 0.004070 1 0x0 0x4000000 0x557fba75c385 8743 seq=2 proc=8743\n\
         R 2 0.005570 1 0x16 0x6cc9 0x557fba75c3b8 8743 seq=3 proc=8743\n",
    )
    .expect("write trace");
    let map = regdb_data("example-nic.toml");
    let out = mmiotrace(&[
        "decode",
        s(&trace),
        "--device",
        &format!("/tmp/nic-*={}", s(&map)),
    ]);
    assert_eq!(
        succeeded_stdout(&out),
        "0.003990 MAP 1 0x0+0x20000 /tmp/nic-bar0 -> map1 example-nic#example-nic\n\
         0.004010 8743 R 4 map1 0x000008 0x00000081 STATUS => FD SPEED=M1000\n\
         0.004070 8743 W 4 map1 0x000000 0x04000000 CTRL <= RST\n\
         0.005570 8743 R 2 map1 0x000016 0x6cc9 EERD+0x2 => DATA=0x6cc9\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rwmmio_ftrace_with_an_svd_peripheral_at_a_virtual_address() {
    let trace = data("rwmmio-uart.txt");
    let svd = regdb_data("demo-mcu.svd");
    let out = mmiotrace(&[
        "decode",
        s(&trace),
        "--regs",
        s(&svd),
        "--device",
        "0xffff800010001000+0x1000=DEMO_MCU#UART0",
    ]);
    assert_eq!(
        succeeded_stdout(&out),
        "812.305511 412 W 4 0xffff800010001000 0x000008 0x00000015 UART0.CTRL <= EN PARITY=EVEN STATE=START\n\
         812.305520 412 R 4 0xffff800010001000 0x000004 0x000000a0 UART0.STATUS => RXNE TXE\n\
         812.305700 88 R 2 0xffff800010001000 0x00000c 0x01a0 UART0.BAUD\n"
    );
}

#[test]
fn bad_database_is_an_error_with_file_line_and_problem() {
    let bad = regdb_data("bad/toml-field-overlap.toml");
    let trace = data("kernel-crlf-truncated.txt");
    let out = mmiotrace(&["decode", s(&trace), "--regs", s(&bad)]);
    assert!(!out.status.success());
    assert_eq!(
        stderr_text(&out),
        format!(
            "mmiotrace: error: {}:4:23: field B (bits 4:3) overlaps field A (bits 3:0) of CTRL\n",
            bad.display()
        )
    );
}

#[test]
fn usage_errors() {
    let trace = data("kernel-crlf-truncated.txt");
    let out = mmiotrace(&["decode", s(&trace)]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("no register database: give one with --regs FILE"),
        "{}",
        stderr_text(&out)
    );

    let map = regdb_data("example-nic.toml");
    let out = mmiotrace(&[
        "decode",
        s(&trace),
        "--regs",
        s(&map),
        "--device",
        "0xfe00zz=example-nic",
    ]);
    assert!(!out.status.success());
    assert_eq!(
        stderr_text(&out),
        "mmiotrace: error: --device \"0xfe00zz=example-nic\": \"0xfe00zz\" is not an address\n"
    );

    let out = mmiotrace(&["decode", s(&trace), "--regs", s(&map), "--chipset", "GK104"]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("--chipset GK104"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn help_describes_the_spec_grammar() {
    let out = mmiotrace(&["decode", "--help"]);
    let text = succeeded_stdout(&out);
    for needle in [
        "SELECTOR=DATABASE[#DOMAIN][@VARIANT]",
        "rwmmio",
        "PMC.ID",
        "docs/REGISTERS.md",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
}
