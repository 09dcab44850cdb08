//! Traced mappings stay traced, with the right offsets, through partial
//! munmap, mprotect, mremap (a mapping that grows or moves is described
//! again by a REMAP record), and stop being traced under MAP_FIXED.

use std::collections::HashMap;

use mmiotrace_shm::kind;

#[test]
fn partial_unmap_mprotect_mremap_and_map_fixed() {
    let program = crate::common::compile("mapping_ops", &[]);
    let run = crate::common::record_with_device(
        &program,
        "ops-dev",
        8 * 4096,
        &[],
        crate::common::small_config(),
    );
    run.assert_success();
    assert!(run.stdout.contains("DONE"));
    let mut map_number: HashMap<u32, usize> = HashMap::new();
    let actual: Vec<String> = run
        .records
        .iter()
        // The patched sites' reports at exit (patching is on by default).
        .filter(|p| {
            p.record.kind != kind::MARK
                || !mmiotrace_shm::payload_text(&p.payload).starts_with(b"mmiotrace: patch: ")
        })
        .map(|p| {
            let r = &p.record;
            match r.kind {
                kind::MAP => {
                    let n = map_number.len() + 1;
                    map_number.insert(r.map_id, n);
                    format!("MAP {n}")
                }
                kind::UNMAP => format!("UNMAP {}", map_number[&r.map_id]),
                kind::REMAP => format!("REMAP {} {:x} {:x}", map_number[&r.map_id], r.aux, r.value),
                kind::READ => format!("R {} {:x} {:x}", r.width, r.offset, r.value),
                kind::WRITE => format!("W {} {:x} {:x}", r.width, r.offset, r.value),
                other => format!("kind {other}"),
            }
        })
        .collect();
    let expected: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("E "))
        .collect();
    assert_eq!(actual, expected, "stderr:\n{}", run.stderr);
}
