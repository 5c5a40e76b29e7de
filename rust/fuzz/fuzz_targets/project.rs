//! Fuzz target: `project` (see `harness::check_project`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(report) = clipresc_fuzz::harness::run("project", data) {
        panic!("invariant violated:\n{report}");
    }
});
