//! Run-time choice of the instruction set for the VJP's lane loops ([`crate::vjp`]).
//!
//! The loops work on `f64` lanes (also for `f32` data), so AVX-512's 8 `f64` lanes per
//! vector halve their instructions against AVX2. Each loop is compiled three times from the
//! same generic source with explicit lanes: baseline x86-64, AVX2+FMA and AVX-512; the
//! fastest one this CPU runs is picked, by the same checks as the forward's loops
//! ([`crate::simd`]: `CLIPRESC_NO_AVX512` turns AVX-512 off here too). No version
//! reassociates or fuses operations (Rust never contracts `a * b + c` into an FMA by
//! itself), so all give bitwise the same results.

/// `$best`: `$generic` compiled for AVX-512 (`$avx512`) or AVX2+FMA (`$avx2`) when this CPU
/// has them, else as it is (the shape of `multiversion!` in `kernel`, with one more level).
macro_rules! vjp_multiversion {
    ($vis:vis $best:ident, $avx512:ident, $avx2:ident, $generic:ident,
     <$($g:ident: $bound:path),* $(; const $c:ident: bool)?>,
     ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512dq,avx512bw")]
        unsafe fn $avx512<$($g: $bound),* $(, const $c: bool)?>($($arg: $ty),*) -> $ret {
            $generic::<$($g),* $(, $c)?>($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2<$($g: $bound),* $(, const $c: bool)?>($($arg: $ty),*) -> $ret {
            $generic::<$($g),* $(, $c)?>($($arg),*)
        }

        #[inline(always)]
        $vis fn $best<$($g: $bound),* $(, const $c: bool)?>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if crate::simd::has_avx512() {
                // SAFETY: `$avx512` differs from `$generic` only in being compiled for the
                // AVX-512 subsets F, VL, DQ, BW (and AVX2, FMA), and `has_avx512` has checked
                // at run time that this CPU executes all of them (and POPCNT); no other
                // preconditions.
                return unsafe { $avx512::<$($g),* $(, $c)?>($($arg),*) };
            }
            #[cfg(target_arch = "x86_64")]
            if crate::simd::has_avx2() {
                // SAFETY: `$avx2` differs from `$generic` only in being compiled for AVX2
                // and FMA, and `has_avx2` has checked at run time that this CPU executes
                // both instruction sets; there are no other preconditions.
                return unsafe { $avx2::<$($g),* $(, $c)?>($($arg),*) };
            }
            $generic::<$($g),* $(, $c)?>($($arg),*)
        }
    };
}
