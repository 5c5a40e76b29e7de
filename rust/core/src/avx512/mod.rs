//! The AVX-512 lane operations of the hand-written kernels (`crate::simd_kernels`):
//! sixteen `f32` lanes (`__m512`) or eight `f64` lanes (`__m512d`), comparisons into mask
//! registers (the masked adds need no `and` per accumulator), and the lanes inside the
//! bracket packed by `vcompress`.
//!
//! Picked at run time where the CPU has AVX-512 F, VL, BW and DQ (`crate::simd::has_avx512`),
//! else the AVX2 kernels run.

/// Declares the lane operations of `crate::simd_kernels::simd_kernels!` for one element
/// type over its AVX-512 intrinsics, then the kernels over them.
macro_rules! avx512_lanes {
    (E: $e:ty, V: $v:ty, M: $m:ty, W: $w:expr,
     set1: $set1:ident, setzero: $setzero:ident, loadu: $loadu:ident, storeu: $storeu:ident,
     stream: $stream:ident, sqrt: $sqrt:ident, add: $add:ident, sub: $sub:ident, mul: $mul:ident,
     max: $max:ident, min: $min:ident, cmp: $cmp:ident, abs: $abs:ident,
     mask_add: $mask_add:ident, blend: $blend:ident, compress: $compress:ident) => {
        use std::arch::x86_64::*;

        use crate::simd_kernels::{lane_ops, memory_ops, simd_kernels};

        type E = $e;
        type V = $v;
        /// A lane mask: bit `k` for lane `k`.
        type M = $m;
        /// The lanes to pack.
        type I = M;
        /// The lane count.
        type C = u32;
        const W: usize = $w;

        /// Every lane of a mask.
        const FULL: M = M::MAX >> (M::BITS as usize - W);

        memory_ops! { "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt";
            set1: $set1, setzero: $setzero, loadu: $loadu, storeu: $storeu, stream: $stream
        }

        lane_ops! { "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt";
            add: $add, sub: $sub, mul: $mul, max: $max, min: $min, cmp: $cmp
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn sqrt(v: V) -> V {
            $sqrt(v)
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn abs(v: V) -> V {
            $abs(v)
        }

        /// `acc + v` in the lanes of `m`, `acc` elsewhere.
        #[inline]
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn mask_add(acc: V, m: M, v: V) -> V {
            $mask_add(acc, m, acc, v)
        }

        /// `m ? b : a`, lane by lane.
        #[inline]
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn blend(a: V, b: V, m: M) -> V {
            $blend(m, a, b)
        }

        #[inline(always)]
        fn mask_or(a: M, b: M) -> M {
            a | b
        }

        #[inline(always)]
        fn no_lanes() -> M {
            0
        }

        #[inline(always)]
        fn any_lane(m: M) -> bool {
            m != 0
        }

        #[inline(always)]
        fn count_zero() -> C {
            0
        }

        #[inline(always)]
        fn count_add(acc: C, m: M) -> C {
            acc + m.count_ones()
        }

        #[inline(always)]
        fn count_total(acc: C) -> u64 {
            u64::from(acc)
        }

        /// The lanes not set in `outside`.
        #[inline(always)]
        fn inside(outside: M) -> I {
            !outside & FULL
        }

        #[inline(always)]
        fn packed(sel: I) -> usize {
            sel.count_ones() as usize
        }

        /// Stores the lanes of `v` set in `sel` packed to the front of `dst` (zeros after
        /// them).
        #[inline]
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn pack(dst: &mut [std::mem::MaybeUninit<E>; W], v: V, sel: I) {
            store_slots(dst, $compress(sel, v));
        }

        simd_kernels!(
            "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt",
            Avx512,
            crate::simd::has_avx512
        );
    };
}

mod lanes32;
mod lanes64;
