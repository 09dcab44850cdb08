//! Damaged databases load or fail with an error; they never panic, and
//! neither does decoding with whatever loaded.

use std::sync::Arc;

use mmiotrace_regdb::{Chosen, Database};
use proptest::prelude::*;

/// Bytes that matter to the three syntaxes.
const INTERESTING: &[u8] = b"<>\"'=/0x9:[]{}-# \n.%sAF";

fn damage(text: &str, edits: &[(usize, usize, bool)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for &(at, what, insert) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = at % bytes.len();
        let byte = INTERESTING[what % INTERESTING.len()];
        if insert {
            bytes.insert(at, byte);
        } else {
            bytes[at] = byte;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Looks up and decodes a spread of offsets in every space.
fn exercise(db: &Database) {
    for space in 0..db.spaces.len() {
        for offset in (0..0x80u64).chain([
            0x2800,
            0x5404,
            0x1_0018,
            0x4000_1008,
            0x4001_0120,
            u64::MAX - 3,
        ]) {
            for write in [false, true] {
                if let Some(found) = db.resolve(space, offset, write, &Chosen::default()) {
                    found.plan.run(0xdead_beef_f00d_cafe, &mut Ignore);
                    found.plan.run_part(0x1234_5678, 0xffff_0000, &mut Ignore);
                }
            }
        }
    }
}

struct Ignore;

impl mmiotrace_regdb::FieldSink for Ignore {
    fn field(&mut self, _: &str, _: mmiotrace_regdb::FieldValue<'_>) {}
    fn whole(&mut self, _: mmiotrace_regdb::FieldValue<'_>) {}
    fn begin(&mut self, _: &str) {}
    fn end(&mut self) {}
    fn unknown_bits(&mut self, _: u64) {}
}

const RNN: &str = r#"<database xmlns="http://nouveau.freedesktop.org/">
<enum name="chip" bare="yes"><value name="A1"/><value name="B2"/><value name="C3"/></enum>
<bitset name="intr" inline="yes"><bitfield pos="0" name="X"/><bitfield low="4" high="7" name="Y" variants="B2-"/></bitset>
<domain name="D" prefix="chip">
  <reg32 offset="0x0" name="ID"><bitfield low="0" high="7" name="CHIP" type="chip"/></reg32>
  <array offset="0x10" name="UNIT" stride="0x10" length="4" variants="A1:C3">
    <reg32 offset="0x0" name="INTR" type="intr"/>
    <reg16 offset="0x4" name="CFG" length="2" stride="2"><value value="1" name="ON"/></reg16>
  </array>
  <stripe offset="0x60" stride="8" length="2"><reg64 offset="0" name="TIME"/></stripe>
</domain>
</database>
"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn damaged_toml(edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 1..6)) {
        let text = std::fs::read_to_string(crate::common::data("example-nic.toml")).expect("fixture");
        let damaged = damage(&text, &edits);
        if let Ok(db) = mmiotrace_regdb::toml_map::parse(Arc::from("t.toml"), "t", &damaged) {
            exercise(&db);
        }
    }

    #[test]
    fn damaged_svd(edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 1..6)) {
        let text = std::fs::read_to_string(crate::common::data("demo-mcu.svd")).expect("fixture");
        let damaged = damage(&text, &edits);
        if let Ok(db) = mmiotrace_regdb::svd::parse(Arc::from("t.svd"), &damaged) {
            exercise(&db);
        }
    }

    #[test]
    fn damaged_rules_ng(edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 1..6)) {
        let dir = std::env::temp_dir().join(format!("regdb-no-panic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("db.xml");
        std::fs::write(&path, damage(RNN, &edits)).expect("write");
        if let Ok(db) = mmiotrace_regdb::rnn::load(&path) {
            exercise(&db);
        }
    }
}

#[test]
fn undamaged_fixtures_load() {
    let dir = std::env::temp_dir().join(format!("regdb-no-panic-clean-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("db.xml");
    std::fs::write(&path, RNN).expect("write");
    let db = mmiotrace_regdb::rnn::load(&path).expect("the clean rules-ng-ng text loads");
    let found = db
        .resolve(0, 0x34, false, &Chosen::default())
        .expect("UNIT[2].CFG[0]");
    assert_eq!(&*found.name, "UNIT[2].CFG[0]");
    let found = db
        .resolve(0, 0x68, false, &Chosen::default())
        .expect("TIME[1]");
    assert_eq!(&*found.name, "TIME[1]");
    let _ = std::fs::remove_dir_all(&dir);
}
