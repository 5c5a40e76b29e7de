//! The AVX-512 kernels, written once over the vector operations of the module that expands
//! them: the element type `E`, its vector `V` of `W` lanes and mask `M`, and `splat`,
//! `zero`, `load`, `store`, `stream_store`, `to_lanes`, `add`, `sub`, `mul`, `max`, `min`,
//! `abs`, the comparisons (into masks), `mask_add`, `blend` and `compress`.

/// Declares `fn NAME(a: V, b: V) -> R` for each `NAME -> R => INTRINSIC;` (lane-wise).
macro_rules! ops512 {
    ($($(#[$doc:meta])* $name:ident -> $r:ty => $f:expr;)*) => {
        $(
            $(#[$doc])*
            #[inline]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
            fn $name(a: V, b: V) -> $r {
                $f(a, b)
            }
        )*
    };
}

/// Expands the kernels (`first`, `apply`) and the [`Lanes512`](super::Lanes512) impl for
/// `E`.
macro_rules! kernels512 {
    () => {
        use std::arch::x86_64::*;
        use std::mem::MaybeUninit;

        use super::Lanes512;
        use crate::avx2::{Chunk, Side};
        use crate::kernel::{room, FirstSums};
        use crate::norm::{P1, P2 as P2Norm};
        use crate::safeguard::Cand;
        use crate::simd::prefetch_ahead;

        /// Every lane of a mask.
        const FULL: M = M::MAX >> (M::BITS as usize - W);

        /// `(values, broadcast)` of a side: the slice (empty for a scalar) and the scalar
        /// in every lane (zero for a slice).
        #[inline]
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn parts(side: Side<'_, E>, n: usize) -> (&[E], V) {
            match side {
                Side::Scalar(v) => (&[], splat(v)),
                Side::Slice(s) => (&s[..n], zero()),
            }
        }

        /// A side's lanes at `i`: loaded when `SLICE`, else the broadcast scalar.
        #[inline]
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn side_at<const SLICE: bool>(values: &[E], bcast: V, i: usize) -> V {
            if SLICE {
                load(&values[i..i + W])
            } else {
                bcast
            }
        }

        /// Sums the lanes of `v` in `f64`, in index order.
        #[inline]
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn sum_lanes(v: V) -> f64 {
            to_lanes(v).iter().map(|&l| f64::from(l)).sum()
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn pow<const P2: bool>(v: V) -> V {
            if P2 {
                mul(v, v)
            } else {
                v
            }
        }

        fn pow_s<const P2: bool>(v: E) -> E {
            if P2 {
                v * v
            } else {
                v
            }
        }

        /// Prefetches `x`, `delta` and the bound sides that hold one value per element
        /// (`LS` / `HS`) ahead of element `i`.
        #[inline(always)]
        fn prefetch_streams<const LS: bool, const HS: bool>([x, d, lo, hi]: [&[E]; 4], i: usize) {
            prefetch_ahead(x, i);
            prefetch_ahead(d, i);
            if LS {
                prefetch_ahead(lo, i);
            }
            if HS {
                prefetch_ahead(hi, i);
            }
        }

        /// Elements per piece of the first pass (a multiple of `W`; the packed elements of
        /// a piece stay on the stack, in L1). It is the solver's chunk, as
        /// `crate::kernel::fold_chunk_runs` requires of the kernels it runs.
        const PIECE: usize = crate::kernel::CHUNK;

        /// Appends the candidates of elements with `|delta|` `a` and room `s`.
        fn push_cands<const P2: bool>(cands: &mut Vec<Cand>, a: &[E], s: &[E]) {
            cands.reserve(a.len());
            for (&a, &s) in a.iter().zip(s) {
                let (a, s) = (f64::from(a), f64::from(s));
                cands.push(if P2 {
                    Cand::new(a, s, P2Norm)
                } else {
                    Cand::new(a, s, P1)
                });
            }
        }

        /// The `W` slots of `buf` from `at` on.
        #[inline(always)]
        fn slots(buf: &mut [MaybeUninit<E>], at: usize) -> &mut [MaybeUninit<E>; W] {
            (&mut buf[at..at + W]).try_into().expect("W slots")
        }

        /// See [`crate::avx2::Lanes::first`].
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn first<
            const P2: bool,
            const VALIDATE: bool,
            const CHECK_X: bool,
            const SPLIT: bool,
            const LS: bool,
            const HS: bool,
        >(
            c: Chunk<'_, E>,
            eta_lo: E,
            eta_hi: E,
        ) -> FirstSums {
            let n = c.x.len().min(c.d.len());
            let (x, d) = (&c.x[..n], &c.d[..n]);
            let ((lo_s, lo_b), (hi_s, hi_b)) = (parts(c.lo, n), parts(c.hi, n));
            let full = n / W * W;
            let inf = splat(E::INFINITY);
            let (elo, ehi) = (splat(eta_lo), splat(eta_hi));
            let mut out = FirstSums::default();
            let mut any_bad = false;
            // The (|delta|, room) of the elements inside the bracket, packed to the front
            // (see the AVX2 kernel): `vcompress` moves each vector's inside lanes to its
            // first lanes, stored where the previous vector's ended.
            let mut packed_a = [MaybeUninit::<E>::uninit(); PIECE];
            let mut packed_s = [MaybeUninit::<E>::uninit(); PIECE];
            for start in (0..full).step_by(PIECE) {
                let (mut cs, mut ms, mut amax) = (zero(), zero(), zero());
                let mut bad: M = 0;
                let mut nsat = 0u32;
                let mut count = 0usize;
                let end = full.min(start + PIECE);
                for i in (start..end).step_by(W) {
                    if VALIDATE {
                        prefetch_streams::<LS, HS>([x, d, lo_s, hi_s], i);
                    }
                    let (xv, dv) = (load(&x[i..i + W]), load(&d[i..i + W]));
                    let lo = side_at::<LS>(lo_s, lo_b, i);
                    let hi = side_at::<HS>(hi_s, hi_b, i);
                    let a = abs(dv);
                    let s = blend(sub(xv, lo), sub(hi, xv), gt(dv, zero()));
                    let sat_lo = le(s, mul(elo, a));
                    // Without a split the complement (NaN lanes land in both, and are
                    // invalid).
                    let free_hi = if SPLIT {
                        gt(s, mul(ehi, a))
                    } else {
                        nle(s, mul(elo, a))
                    };
                    cs = mask_add(cs, sat_lo, pow::<P2>(s));
                    ms = mask_add(ms, free_hi, pow::<P2>(a));
                    nsat += sat_lo.count_ones();
                    let mut outside = sat_lo | free_hi;
                    if VALIDATE {
                        amax = max(amax, a);
                        // invalid: delta not finite, x below lower or above upper (or NaN,
                        // or a NaN bound)
                        let mut b = nlt(a, inf) | nge(xv, lo) | nle(xv, hi);
                        if CHECK_X {
                            b |= nlt(abs(xv), inf);
                        }
                        bad |= b;
                        outside |= b;
                    }
                    if !SPLIT {
                        continue;
                    }
                    let inside = !outside & FULL;
                    // At most one element per element seen is packed, so `count <= i -
                    // start` and `count + W <= PIECE`: the slices below never fail.
                    store_slots(slots(&mut packed_a, count), compress(inside, a));
                    store_slots(slots(&mut packed_s, count), compress(inside, s));
                    count += inside.count_ones() as usize;
                }
                out.c_lo += sum_lanes(cs);
                out.m_hi += sum_lanes(ms);
                out.nsat_lo += u64::from(nsat);
                out.amax = to_lanes(amax)
                    .iter()
                    .fold(out.amax, |m, &v| m.max(f64::from(v)));
                any_bad |= bad != 0;
                // SAFETY: the first `count` elements of both buffers were written in this
                // piece (each vector stored its `k` inside lanes at `count..count + k`
                // before `count` grew by `k`), and `MaybeUninit<E>` has the layout of `E`.
                let (pa, ps) = unsafe {
                    (
                        std::slice::from_raw_parts(packed_a.as_ptr().cast::<E>(), count),
                        std::slice::from_raw_parts(packed_s.as_ptr().cast::<E>(), count),
                    )
                };
                push_cands::<P2>(&mut out.cands, pa, ps);
            }
            for i in full..n {
                let (xi, di, lo, hi) = (x[i], d[i], c.lo.at(i), c.hi.at(i));
                let a = di.abs();
                let s = room(xi, di, lo, hi);
                let (sat_lo, free_hi) = (s <= eta_lo * a, s > eta_hi * a);
                let b = VALIDATE
                    && !(a < E::INFINITY && xi >= lo && xi <= hi && xi.abs() < E::INFINITY);
                any_bad |= b;
                if VALIDATE {
                    out.amax = out.amax.max(f64::from(a));
                }
                if sat_lo {
                    out.c_lo += f64::from(pow_s::<P2>(s));
                    out.nsat_lo += 1;
                } else if free_hi {
                    out.m_hi += f64::from(pow_s::<P2>(a));
                } else if !b {
                    push_cands::<P2>(&mut out.cands, &[a], &[s]);
                }
            }
            out.bad = any_bad as u64;
            out
        }

        /// See [`crate::avx2::Lanes::apply`].
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
        fn apply<const LS: bool, const HS: bool, const STREAM: bool>(
            c: Chunk<'_, E>,
            eta: E,
            out: &mut [E],
        ) {
            let n = c.x.len().min(c.d.len()).min(out.len());
            let (x, d, out) = (&c.x[..n], &c.d[..n], &mut out[..n]);
            let ((lo_s, lo_b), (hi_s, hi_b)) = (parts(c.lo, n), parts(c.hi, n));
            let one = |i: usize, out: &mut [E]| {
                let y = x[i] + eta * d[i];
                out[i] = y.max(c.lo.at(i)).min(c.hi.at(i));
            };
            // streaming: elements before the first 64-byte boundary of `out`
            let head = if STREAM {
                out.as_ptr().align_offset(64).min(n)
            } else {
                0
            };
            for i in 0..head {
                one(i, out);
            }
            let body = (n - head) / W * W;
            let e = splat(eta);
            for i in (head..head + body).step_by(W) {
                prefetch_streams::<LS, HS>([x, d, lo_s, hi_s], i);
                let y = add(load(&x[i..i + W]), mul(e, load(&d[i..i + W])));
                let lo = side_at::<LS>(lo_s, lo_b, i);
                let hi = side_at::<HS>(hi_s, hi_b, i);
                // Exactly Rust's `y.max(lo).min(hi)` (see the AVX2 kernel): a NaN `y` gives
                // `lo`.
                let y = blend(max(lo, y), lo, unord(y, y));
                let y = min(hi, y);
                let os: &mut [E; W] = (&mut out[i..i + W]).try_into().expect("W elements");
                if STREAM {
                    // SAFETY: `os` starts `head + k * W` elements from a 64-byte boundary
                    // (`align_offset` returned `head`) and `W` elements are 64 bytes, so it
                    // is 64-byte aligned, as `stream_store` requires.
                    unsafe { stream_store(os, y) };
                } else {
                    store(os, y);
                }
            }
            for i in head + body..n {
                one(i, out);
            }
            if STREAM {
                // Non-temporal stores are weakly ordered: fence before anyone else reads
                // `out`.
                _mm_sfence();
            }
        }

        impl Lanes512 for E {
            #[inline(always)]
            unsafe fn first<
                const P2: bool,
                const VALIDATE: bool,
                const CHECK_X: bool,
                const SPLIT: bool,
                const LS: bool,
                const HS: bool,
            >(
                c: Chunk<'_, E>,
                eta_lo: E,
                eta_hi: E,
            ) -> FirstSums {
                // SAFETY: the caller guarantees AVX-512 F, VL, BW and DQ (with AVX2 and
                // FMA), the kernel's only precondition.
                unsafe { first::<P2, VALIDATE, CHECK_X, SPLIT, LS, HS>(c, eta_lo, eta_hi) }
            }

            #[inline(always)]
            unsafe fn apply<const LS: bool, const HS: bool, const STREAM: bool>(
                c: Chunk<'_, E>,
                eta: E,
                out: &mut [E],
            ) {
                // SAFETY: as in `first`.
                unsafe { apply::<LS, HS, STREAM>(c, eta, out) }
            }
        }
    };
}
