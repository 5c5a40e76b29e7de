//! Run-time CPU feature detection for the hot loops.
//!
//! Wheels target baseline x86-64 (SSE2). The lane loops are also compiled for AVX2+FMA and
//! picked at run time when the CPU has them. The source of both versions is the same
//! generic code with explicit lanes, so both add in the same order and give bitwise the
//! same results.

/// Whether this CPU runs AVX2 and FMA instructions (checked once).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    })
}
