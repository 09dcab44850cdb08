//! Bad databases: each file in tests/data/bad says on its first line the
//! error it must give (`expect: LINE:COLUMN: message`, where `{file}`
//! stands for the file's own path). Nothing may panic.

use std::path::Path;

fn expectation(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("fixture reads");
    let first = text.lines().next().unwrap_or("");
    let start = first.find("expect: ").map(|i| i + "expect: ".len());
    let start =
        start.unwrap_or_else(|| panic!("{}: no `expect:` on the first line", path.display()));
    first[start..].trim_end_matches("-->").trim().to_string()
}

#[test]
fn every_bad_database_names_file_line_and_problem() {
    let mut dir: Vec<_> = std::fs::read_dir(crate::common::data("bad"))
        .expect("tests/data/bad")
        .map(|e| e.expect("dir entry").path())
        .collect();
    dir.sort();
    assert!(dir.len() >= 20, "{} fixtures", dir.len());
    let mut failures = Vec::new();
    for path in &dir {
        let file = path.display().to_string();
        let want = format!("{file}:{}", expectation(path).replace("{file}", &file));
        match mmiotrace_regdb::load(path) {
            Ok(_) => failures.push(format!("{file}: loaded, expected: {want}")),
            Err(err) if err.to_string() == want => {}
            Err(err) => failures.push(format!("{file}:\n   got: {err}\n  want: {want}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn overlapping_rules_ng_registers_are_warnings_with_both_places() {
    let dir = std::env::temp_dir().join(format!("regdb-overlap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("overlap.xml");
    std::fs::write(
        &path,
        "<database>\n<domain name=\"T\">\n\t<reg32 offset=\"0\" name=\"A\"/>\n\t<reg16 offset=\"2\" name=\"B\"/>\n\t<reg32 offset=\"8\" name=\"STAT\" access=\"r\"/>\n\t<reg32 offset=\"8\" name=\"CMD\" access=\"w\"/>\n</domain>\n</database>\n",
    )
    .expect("write fixture");
    let db = mmiotrace_regdb::load(&path).expect("loads: rules-ng-ng overlaps only warn");
    let file = path.display();
    let warnings: Vec<String> = db.warnings.iter().map(ToString::to_string).collect();
    // A read-only and a write-only register may share an address.
    assert_eq!(
        warnings,
        [format!(
            "{file}:4:2: register B at 0x2 overlaps register A at 0x0 ({file}:3:2)"
        )]
    );
    let a = db.resolve(0, 2, true, &Default::default()).expect("A");
    assert_eq!(&*a.name, "A+0x2", "the first definition wins");
    let read = db.resolve(0, 8, false, &Default::default()).expect("STAT");
    let write = db.resolve(0, 8, true, &Default::default()).expect("CMD");
    assert_eq!((&*read.name, &*write.name), ("STAT", "CMD"));
    let _ = std::fs::remove_dir_all(&dir);
}
