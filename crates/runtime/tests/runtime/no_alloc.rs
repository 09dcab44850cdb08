//! The signal path neither allocates nor frees: a traced program whose own
//! malloc family counts the calls made while a thread is inside the
//! runtime's handlers, across first accesses of new threads (slot claims),
//! emulated loads and stores, compares and vector moves, displaced
//! integer and SSE instructions (with values) and the slow path.

use mmiotrace_shm::kind;

#[test]
fn handlers_never_call_the_allocator() {
    let program = crate::common::compile("noalloc", &["-ldl"]);
    let run = crate::common::record_with_device(
        &program,
        "noalloc-dev",
        4096,
        &[],
        crate::common::small_config(),
    );
    run.assert_success();
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("IN_HANDLER"))
        .expect("result line");
    let fields: Vec<&str> = line.split(' ').collect();
    let in_handler: u64 = fields[1].parse().expect("count");
    let all: u64 = fields[3].parse().expect("count");
    assert_eq!(in_handler, 0, "allocator calls inside the handler");
    assert!(
        all > 0,
        "the hook sees allocations outside the handler (thread creation)"
    );
    // Per thread: 2000 movs; lock add (read, write), cmp, addps (reads),
    // movdqu (write), and a gather on the slow path (UNKNOWN) with AVX2.
    let gathers = if run.stdout.contains("AVX2 1") {
        5
    } else {
        println!("note: no AVX2, the slow path (gather) is not exercised");
        0
    };
    assert_eq!(
        run.accesses()
            .filter(|p| p.record.kind == kind::UNKNOWN)
            .count(),
        gathers
    );
    assert_eq!(run.accesses().count(), 5 * (2000 + 5) + gathers);
    let wide = run.accesses().filter(|p| p.record.width == 16).count();
    assert_eq!(wide, 10, "addps read and movdqu write, 16 bytes each");
}
