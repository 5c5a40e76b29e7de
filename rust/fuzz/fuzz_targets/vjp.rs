//! Fuzz target: The VJP (placeholder: runs the forward checks until the core has a VJP; see `harness::check_vjp`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(report) = clipresc_fuzz::harness::run("vjp", data) {
        panic!("invariant violated:\n{report}");
    }
});
