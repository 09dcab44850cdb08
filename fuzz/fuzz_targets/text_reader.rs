//! Any bytes through the text reader: no panic, and every event it reads
//! is written and read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmiotrace_trace::fuzzing::check_text(data);
});
