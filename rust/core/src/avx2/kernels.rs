//! The AVX2 kernels, written once over the vector operations of the module that expands
//! them: the element type `E`, its vector `V` of `W` lanes, and `splat`, `zero`, `load`,
//! `to_lanes`, `add`, `sub`, `mul`, `and`, `or`, `max`, `min`, `abs`, the comparisons,
//! `blend`, `mask_bits`, `count_add` / `count_total`, `compress_into` and `stream_store`.

/// Declares `splat`, `zero`, `load`, `store`, `stream_store` and `to_lanes` over the
/// intrinsics of `E`'s vector type (`W` lanes of `E`, 32 bytes).
macro_rules! memory_ops {
    (set1: $set1:ident, setzero: $setzero:ident, loadu: $loadu:ident, storeu: $storeu:ident,
     stream: $stream:ident,) => {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn splat(v: E) -> V {
            $set1(v)
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn zero() -> V {
            $setzero()
        }

        /// Loads `W` elements (`s` must hold exactly `W`).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn load(s: &[E]) -> V {
            let s: &[E; W] = s.try_into().expect("W elements");
            // SAFETY: `s` is `W` initialised elements (32 readable bytes); `loadu` has no
            // alignment requirement.
            unsafe { $loadu(s.as_ptr()) }
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn store(o: &mut [E; W], v: V) {
            // SAFETY: `o` is `W` elements (32 writable bytes); `storeu` has no alignment
            // requirement.
            unsafe { $storeu(o.as_mut_ptr(), v) }
        }

        /// Stores `v` with a non-temporal hint.
        ///
        /// # Safety
        /// `o` is 32-byte aligned.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn stream_store(o: &mut [E; W], v: V) {
            // SAFETY: `o` is `W` writable elements (32 bytes), aligned by the caller's
            // contract.
            unsafe { $stream(o.as_mut_ptr(), v) }
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn to_lanes(v: V) -> [E; W] {
            let mut out = [0.0; W];
            store(&mut out, v);
            out
        }
    };
}

/// Declares `fn NAME(a: V, b: V) -> V` for each `NAME => INTRINSIC;` (lane-wise, AVX2).
macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident => $f:expr;)*) => {
        $(
            $(#[$doc])*
            #[inline]
            #[target_feature(enable = "avx2,fma")]
            fn $name(a: V, b: V) -> V {
                $f(a, b)
            }
        )*
    };
}

/// Expands the kernels (`first`, `apply`) and the [`Lanes`](super::Lanes) impl for `E`.
macro_rules! kernels {
    () => {
        use std::arch::x86_64::*;
        use std::mem::MaybeUninit;

        use super::{Chunk, Lanes, Side, COUNT};
        use crate::kernel::{room, FirstSums};
        use crate::norm::{P1, P2 as P2Norm};
        use crate::real::Real;
        use crate::safeguard::Cand;
        use crate::simd::prefetch_ahead;

        /// `(values, broadcast)` of a side: the slice (empty for a scalar) and the scalar
        /// in every lane (zero for a slice); the kernels take one or the other by a const
        /// parameter.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn parts(side: Side<'_, E>, n: usize) -> (&[E], V) {
            match side {
                Side::Scalar(v) => (&[], splat(v)),
                Side::Slice(s) => (&s[..n], zero()),
            }
        }

        /// A side's lanes at `i`: loaded when `SLICE`, else the broadcast scalar.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn side_at<const SLICE: bool>(values: &[E], bcast: V, i: usize) -> V {
            if SLICE {
                load(&values[i..i + W])
            } else {
                bcast
            }
        }

        /// Sums the lanes of `v` in `f64`, in index order.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn sum_lanes(v: V) -> f64 {
            to_lanes(v).iter().map(|&l| f64::from(l)).sum()
        }

        /// `(|delta|, room)` of `W` elements: `room = upper - x` where `delta > 0`, else
        /// `x - lower`.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn abs_room(xv: V, dv: V, lo: V, hi: V) -> (V, V) {
            let up = sub(hi, xv);
            let dn = sub(xv, lo);
            (abs(dv), blend(dn, up, gt(dv, zero())))
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
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

        /// See [`Lanes::first`].
        #[target_feature(enable = "avx2,fma")]
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
            // The (|delta|, room) of the elements inside the bracket, packed to the front:
            // each vector's inside lanes are moved to its first lanes and stored where the
            // previous vector's ended, so the loop has no data-dependent branch.
            let mut packed_a = [MaybeUninit::<E>::uninit(); PIECE];
            let mut packed_s = [MaybeUninit::<E>::uninit(); PIECE];
            for start in (0..full).step_by(PIECE) {
                // Accumulators per piece, folded into `out` after it: none lives across the
                // call that turns the packed elements into candidates, so all stay in
                // registers. One vector per step: with the constants they fill the sixteen
                // registers.
                let (mut cs, mut ms, mut amax, mut bad) = (zero(), zero(), zero(), zero());
                let mut nsat = _mm256_setzero_si256();
                let mut count = 0usize;
                let end = full.min(start + PIECE);
                for i in (start..end).step_by(W) {
                    // Later passes find the row in cache (short rows in L1, image rows in
                    // L2).
                    if VALIDATE {
                        prefetch_streams::<LS, HS>([x, d, lo_s, hi_s], i);
                    }
                    let (xv, dv) = (load(&x[i..i + W]), load(&d[i..i + W]));
                    let lo = side_at::<LS>(lo_s, lo_b, i);
                    let hi = side_at::<HS>(hi_s, hi_b, i);
                    let (a, s) = abs_room(xv, dv, lo, hi);
                    let sat_lo = le(s, mul(elo, a));
                    // Without a split the complement (NaN lanes land in both, and are
                    // invalid).
                    let free_hi = if SPLIT {
                        gt(s, mul(ehi, a))
                    } else {
                        nle(s, mul(elo, a))
                    };
                    cs = add(cs, and(sat_lo, pow::<P2>(s)));
                    ms = add(ms, and(free_hi, pow::<P2>(a)));
                    nsat = count_add(nsat, sat_lo);
                    let mut outside = or(sat_lo, free_hi);
                    if VALIDATE {
                        amax = max(amax, a);
                        // invalid: delta not finite, x below lower or above upper (or NaN,
                        // or a NaN bound)
                        let mut b = or(nlt(a, inf), or(nge(xv, lo), nle(xv, hi)));
                        if CHECK_X {
                            b = or(b, nlt(abs(xv), inf));
                        }
                        bad = or(bad, b);
                        outside = or(outside, b);
                    }
                    if !SPLIT {
                        continue;
                    }
                    let inside = !mask_bits(outside) & ((1 << W) - 1);
                    // At most one element per element seen is packed, so `count <= i -
                    // start` and `count + W <= PIECE`: the slices below never fail.
                    compress_into(slots(&mut packed_a, count), a, inside);
                    compress_into(slots(&mut packed_s, count), s, inside);
                    count += usize::from(COUNT[inside]);
                }
                out.c_lo += sum_lanes(cs);
                out.m_hi += sum_lanes(ms);
                out.nsat_lo += count_total(nsat);
                out.amax = to_lanes(amax)
                    .iter()
                    .fold(out.amax, |m, &v| m.max(f64::from(v)));
                any_bad |= mask_bits(bad) != 0;
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

        /// See [`Lanes::apply`].
        #[target_feature(enable = "avx2,fma")]
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
            // streaming: elements before the first 32-byte boundary of `out`
            let head = if STREAM {
                out.as_ptr().align_offset(32).min(n)
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
                // Exactly Rust's `y.max(lo).min(hi)`: `max(lo, y)` returns `y` when the two
                // are equal (the sign of a zero `y` survives), and a NaN `y` (an `eta` past
                // the type's range times a zero delta) gives `lo`. Bounds are never NaN here
                // (validated).
                let y = blend(max(lo, y), lo, unord(y, y));
                let y = min(hi, y);
                let os: &mut [E; W] = (&mut out[i..i + W]).try_into().expect("W elements");
                if STREAM {
                    // SAFETY: `os` starts `head + k * W` elements from a 32-byte boundary
                    // (`align_offset` returned `head`) and `W` elements are 32 bytes, so it
                    // is 32-byte aligned, as `stream_store` requires.
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

        impl Lanes for E {
            #[inline(always)]
            fn of<T: Real>(s: &[T]) -> Option<&[E]> {
                of_slice(s)
            }

            #[inline(always)]
            fn of_mut<T: Real>(s: &mut [T]) -> Option<&mut [E]> {
                of_slice_mut(s)
            }

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
                // SAFETY: the caller guarantees AVX2 and FMA, the kernel's only
                // precondition.
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
