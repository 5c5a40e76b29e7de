//! Run-time CPU feature detection for the hot loops.
//!
//! Wheels target baseline x86-64 (SSE2). The lane loops are also compiled for AVX2+FMA and
//! for AVX-512, and the widest the CPU has is picked at run time. The source of every
//! version is the same generic code with explicit lanes, so all add in the same order and
//! give bitwise the same results. The hand-written kernels (`crate::avx2`,
//! `crate::avx512`) are held to those loops by the tests.

/// Whether this CPU runs AVX2 and FMA instructions (checked once).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    })
}

/// Whether this CPU runs the AVX-512 subsets the kernels use (F, VL, BW, DQ: every CPU with
/// AVX-512 since Skylake-SP and Zen 4 has them), AVX2, FMA and POPCNT (checked once).
/// `CLIPRESC_NO_AVX512` set to anything but `0` turns it off (to compare the two paths).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let off = std::env::var_os("CLIPRESC_NO_AVX512").is_some_and(|v| v != "0");
        !off && has_avx2()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("popcnt")
    })
}

/// How far ahead of the element being read the streaming passes prefetch, in bytes. The
/// hardware prefetcher of the development machine (a VM) did not keep up with these loops:
/// prefetching 2 KiB ahead cut the CPU time of `scale` by a third (see the README).
#[cfg(target_arch = "x86_64")]
pub(crate) const PREFETCH_BYTES: usize = 2048;

/// Asks the CPU to bring the cache line of `s[i + PREFETCH_BYTES / size_of::<T>()]` into L1.
/// That element may lie past the end of `s` (the passes see a row in chunks, and the next
/// chunk follows in memory): the address is only a hint.
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(s: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let ahead = s
            .as_ptr()
            .wrapping_add(i + PREFETCH_BYTES / std::mem::size_of::<T>().max(1));
        // SAFETY: a prefetch reads nothing the program sees and never faults, whatever the
        // address (`wrapping_add` forms it without claiming it lies inside `s`; it is never
        // dereferenced). SSE, part of baseline x86-64, has the instruction.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ahead.cast())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, i);
}
