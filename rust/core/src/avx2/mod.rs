//! The AVX2 lane operations of the hand-written kernels (`crate::simd_kernels`): eight
//! `f32` lanes (`__m256`) or four `f64` lanes (`__m256d`), comparisons into vectors (a set
//! lane is all ones), and the lanes inside the bracket packed by a table-driven permutation
//! (`vpermps`).

/// Declares the lane operations of `crate::simd_kernels::simd_kernels!` for one element
/// type over its AVX2 intrinsics, then the kernels over them.
macro_rules! avx2_lanes {
    (E: $e:ty, V: $v:ty, W: $w:expr, words: $words:expr, count: $cnt:ty,
     set1: $set1:ident, setzero: $setzero:ident, loadu: $loadu:ident, storeu: $storeu:ident,
     stream: $stream:ident, sqrt: $sqrt:ident, add: $add:ident, sub: $sub:ident, mul: $mul:ident,
     and: $and:ident, or: $or:ident, max: $max:ident, min: $min:ident, cmp: $cmp:ident,
     andnot: $andnot:ident, blendv: $blendv:ident, movemask: $movemask:ident,
     count_sub: $count_sub:ident, as_int: $as_int:ident, as_ps: $as_ps:path) => {
        use std::arch::x86_64::*;

        use super::COUNT;
        use crate::simd_kernels::{binary_ops, lane_ops, memory_ops, simd_kernels};

        type E = $e;
        type V = $v;
        /// A lane mask: all ones in the lanes set.
        type M = V;
        /// The lanes to pack: bit `k` for lane `k` (a [`mask_bits`] value).
        type I = usize;
        /// Per-lane counters.
        type C = __m256i;
        const W: usize = $w;

        /// See [`super::compress_table`].
        static COMPRESS: [[u32; 8]; 256] = super::compress_table($words);

        memory_ops! { "avx2,fma";
            set1: $set1, setzero: $setzero, loadu: $loadu, storeu: $storeu, stream: $stream
        }

        lane_ops! { "avx2,fma";
            add: $add, sub: $sub, mul: $mul, max: $max, min: $min, cmp: $cmp
        }

        binary_ops! { "avx2,fma"; mask_or -> M => $or; }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn sqrt(v: V) -> V {
            $sqrt(v)
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn abs(v: V) -> V {
            $andnot($set1(-0.0), v)
        }

        /// `mask ? b : a`, lane by lane.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn blend(a: V, b: V, mask: M) -> V {
            $blendv(a, b, mask)
        }

        /// `acc + v` in the lanes of `mask`, `acc + 0` elsewhere.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn mask_add(acc: V, mask: M, v: V) -> V {
            $add(acc, $and(mask, v))
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn no_lanes() -> M {
            $setzero()
        }

        /// Bit `k` set where lane `k` of the mask is set.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn mask_bits(mask: M) -> usize {
            $movemask(mask) as usize
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn any_lane(mask: M) -> bool {
            mask_bits(mask) != 0
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn count_zero() -> C {
            _mm256_setzero_si256()
        }

        /// Adds one to each counter whose lane of `mask` is set (a set lane is -1 as an
        /// integer).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn count_add(acc: C, mask: M) -> C {
            $count_sub(acc, $as_int(mask))
        }

        /// The sum of the counters.
        #[allow(clippy::useless_conversion)] // the identity for `f64`'s u64 counters
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn count_total(acc: C) -> u64 {
            let mut ns: [$cnt; W] = [0; W];
            // SAFETY: `ns` is `W` counters of `size_of::<V>() / W` bytes (32 writable
            // bytes); `storeu` has no alignment requirement.
            unsafe { _mm256_storeu_si256(ns.as_mut_ptr().cast(), acc) };
            ns.iter().map(|&v| u64::from(v)).sum()
        }

        /// The lanes not set in `outside`.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn inside(outside: M) -> I {
            !mask_bits(outside) & ((1 << W) - 1)
        }

        /// How many lanes `sel` selects.
        #[inline(always)]
        fn packed(sel: I) -> usize {
            usize::from(COUNT[sel])
        }

        /// Stores the lanes of `v` set in `sel` packed to the front of `dst`; the slots
        /// after them get arbitrary lanes.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn pack(dst: &mut [std::mem::MaybeUninit<E>; W], v: V, sel: I) {
            let perm: &[u32; 8] = &COMPRESS[sel];
            // SAFETY: `perm` is eight u32 (32 readable bytes) and `dst` `W` elements (32
            // writable bytes); `loadu` and `storeu` have no alignment requirement.
            unsafe {
                let perm = _mm256_loadu_si256(perm.as_ptr().cast());
                // The permutation moves 32-bit words (two per `f64` lane).
                let packed = _mm256_permutevar8x32_ps($as_ps(v), perm);
                _mm256_storeu_ps(dst.as_mut_ptr().cast(), packed);
            }
        }

        simd_kernels!("avx2,fma", Avx2, crate::simd::has_avx2);
    };
}

pub(crate) mod cand_sums;
mod lanes32;
mod lanes64;

/// For each 8-bit lane mask, the 32-bit words of its set lanes in order (then zeros): the
/// permutation (`_mm256_permutevar8x32`) that packs those lanes to the front. A lane is
/// `words` 32-bit words wide (1 for `f32`, 2 for `f64`, whose masks use 4 bits).
const fn compress_table(words: usize) -> [[u32; 8]; 256] {
    let mut table = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut k, mut lane) = (0, 0);
        while lane < 8 / words {
            if (m >> lane) & 1 == 1 {
                let mut w = 0;
                while w < words {
                    table[m][k] = (lane * words + w) as u32;
                    k += 1;
                    w += 1;
                }
            }
            lane += 1;
        }
        m += 1;
    }
    table
}

/// The number of set lanes of each 8-bit lane mask.
static COUNT: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut m = 0;
    while m < 256 {
        table[m] = (m as u32).count_ones() as u8;
        m += 1;
    }
    table
};

/// `v` itself: the `f32` lanes need no cast before the word permutation.
#[inline(always)]
fn same(v: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    v
}
