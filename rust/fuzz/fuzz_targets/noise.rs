//! Fuzz target: Noise (placeholder: runs the forward checks until the core draws noise; see `harness::check_noise`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(report) = clipresc_fuzz::harness::run("noise", data) {
        panic!("invariant violated:\n{report}");
    }
});
