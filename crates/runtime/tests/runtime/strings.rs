//! `movs`/`stos`/`lods` on traced memory are emulated with their values,
//! the whole `rep` in one fault, forwards and backwards; long ones are
//! logged in runs that share one time.

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
    // The first difference, not two lists of 3,000-odd accesses.
    let differs = actual.iter().zip(&expected).position(|(a, e)| a != e);
    assert!(
        differs.is_none() && actual.len() == expected.len(),
        "access {differs:?} differs (of {} logged, {} expected): {:?} vs {:?}; stderr:\n{}",
        actual.len(),
        expected.len(),
        differs.and_then(|i| actual.get(i)),
        differs.and_then(|i| expected.get(i)),
        run.stderr
    );
    assert!(
        run.stderr.is_empty(),
        "no displaced instruction: {}",
        run.stderr
    );
    // The 3,000-byte movsb and the 300-dword stosl are the last 3,300
    // accesses: logged in runs of at most 128 elements, each run with one
    // time, not one time per access (which would give thousands).
    let times = |records: &[&mmiotrace_shm::Popped]| {
        let mut times: Vec<u64> = records.iter().map(|p| p.record.time_ns).collect();
        times.dedup();
        times.len()
    };
    let accesses: Vec<_> = run.accesses().collect();
    let long = &accesses[accesses.len() - 3300..];
    let (movsb, stosl) = long.split_at(3000);
    assert!(
        (3000usize.div_ceil(128)..=3000usize.div_ceil(128) + 25).contains(&times(movsb)),
        "the movsb's records have {} different times",
        times(movsb)
    );
    assert!(
        (300usize.div_ceil(128)..=300usize.div_ceil(128) + 5).contains(&times(stosl)),
        "the stosl's records have {} different times",
        times(stosl)
    );
}
