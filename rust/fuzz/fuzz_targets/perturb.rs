//! Fuzz target: `perturb` (solve + apply): as `scale`, and y is exactly clip(x + eta * delta), agreeing with `scale` and a one-thread pool bitwise.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(report) = clipresc_fuzz::harness::run("perturb", data) {
        panic!("invariant violated:\n{report}");
    }
});
