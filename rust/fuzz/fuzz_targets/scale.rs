//! Fuzz target: `scale` (the solve): a typed error, or an eta whose clipped size is eps (or the largest size).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(report) = clipresc_fuzz::harness::run("scale", data) {
        panic!("invariant violated:\n{report}");
    }
});
