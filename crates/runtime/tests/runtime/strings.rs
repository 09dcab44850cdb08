//! `movs`/`stos`/`lods` on traced memory are emulated with their values,
//! the whole `rep` in one fault, forwards and backwards.

use mmiotrace_shm::kind;

#[test]
fn string_instructions_are_emulated_with_values() {
    let program = crate::common::compile("strings", &[]);
    let run = crate::common::record_with_device(
        &program,
        "strings-dev",
        4096,
        &[],
        crate::common::small_config(),
    );
    run.assert_success();
    let expected: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("E "))
        .collect();
    let actual: Vec<String> = run
        .accesses()
        .map(|p| {
            let r = &p.record;
            let dir = match r.kind {
                kind::READ => "R",
                kind::WRITE => "W",
                _ => "U",
            };
            format!("{dir} {} {:x} {:x}", r.width, r.offset, r.value)
        })
        .collect();
    assert_eq!(actual, expected, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.is_empty(),
        "no displaced instruction: {}",
        run.stderr
    );
}
