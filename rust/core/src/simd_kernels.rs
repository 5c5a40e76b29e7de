//! Hand-written SIMD kernels for the cases that dominate real use: `f32` or `f64` data,
//! `p` in {0.5, 1, 1.5, 2, 3} (powers by square roots and products, see `crate::norm::PHalf`),
//! each bound a scalar or one value per element. The generic lane loops
//! in `kernel` cover everything else; LLVM's vectoriser keeps their accumulators in
//! registers only for the simplest passes (it spilled the first pass to the stack, or fell
//! back to scalar code), so the split pass and the apply are written with intrinsics.
//!
//! The two kernels are written once ([`simd_kernels!`]) over a small set of lane operations
//! that each instruction set defines for each element type: `crate::avx2` (256-bit vectors,
//! comparisons into vectors, a table-driven permutation packs lanes) and `crate::avx512`
//! (512-bit vectors, comparisons into mask registers, `vcompress` packs lanes). Same
//! arithmetic as the generic kernels (no FMA: `x + eta * delta` must round like NumPy's),
//! lanes combined in a fixed order, so the results do not depend on the thread count; the
//! tests hold every kernel set to the generic loops.

use crate::kernel::FirstSums;
use crate::real::Real;

/// One side of the box over a chunk: a scalar, or one value per element.
#[derive(Clone, Copy)]
pub(crate) enum Side<'a, E> {
    Scalar(E),
    Slice(&'a [E]),
}

impl<E: Real> Side<'_, E> {
    /// The value at `i` (tails and the candidate list).
    #[inline]
    pub(crate) fn at(self, i: usize) -> E {
        match self {
            Side::Scalar(v) => v,
            Side::Slice(s) => s[i],
        }
    }

    /// Whether this side is one finite scalar.
    pub(crate) fn finite_scalar(self) -> bool {
        matches!(self, Side::Scalar(v) if v.is_finite())
    }
}

/// A chunk of a row and its bounds. `d` holds `delta`, or for the kernels' `DIFF` form the
/// point `z` whose `delta = z - x` they compute in registers (the projection, which then
/// writes no `delta` row).
#[derive(Clone, Copy)]
pub(crate) struct Chunk<'a, E> {
    pub x: &'a [E],
    pub d: &'a [E],
    pub lo: Side<'a, E>,
    pub hi: Side<'a, E>,
}

/// An element type with hand-written kernels (`f32`, `f64`).
pub(crate) trait Elem: Real {
    /// `s` as a slice of `Self` when `T` is `Self`.
    fn of<T: Real>(s: &[T]) -> Option<&[Self]>;
    /// `s` as a mutable slice of `Self` when `T` is `Self`.
    fn of_mut<T: Real>(s: &mut [T]) -> Option<&mut [Self]>;
}

impl Elem for f32 {
    #[inline(always)]
    fn of<T: Real>(s: &[T]) -> Option<&[f32]> {
        T::f32s(s)
    }
    #[inline(always)]
    fn of_mut<T: Real>(s: &mut [T]) -> Option<&mut [f32]> {
        T::f32s_mut(s)
    }
}

impl Elem for f64 {
    #[inline(always)]
    fn of<T: Real>(s: &[T]) -> Option<&[f64]> {
        T::f64s(s)
    }
    #[inline(always)]
    fn of_mut<T: Real>(s: &mut [T]) -> Option<&mut [f64]> {
        T::f64s_mut(s)
    }
}

/// A set of hand-written kernels for the element type `E` (one per instruction set).
pub(crate) trait Kernels<E> {
    /// Whether this CPU runs them (checked at run time).
    fn available() -> bool;

    /// A pass over a chunk split at the bracket `(eta_lo, eta_hi]` (see `FirstSums`) for
    /// `p = K / 2` (`K` in {1, 2, 3, 4, 6}; powers as `crate::norm::PHalf` takes them).
    /// `VALIDATE`: the first pass, which also counts invalid elements and finds the largest
    /// `|delta|` (`CHECK_X` then also checks that `x` is finite, which the bounds check
    /// implies when both bounds are finite); a later pass over a valid row leaves `bad` and
    /// `amax` at zero. `SPLIT`: the bracket is not empty (`eta_lo < eta_hi`); with `eta_lo
    /// == eta_hi` nothing lies inside, so the pass skips the candidates and the second
    /// comparison. `LS` / `HS`: the lower / upper side holds one value per element.
    /// `DIFF`: `c.d` holds `z` and `delta = z - x` (rounded in `E`, as a stored `delta`
    /// would be).
    ///
    /// # Safety
    /// [`Kernels::available`] returned `true`.
    unsafe fn first<
        const K: u32,
        const VALIDATE: bool,
        const CHECK_X: bool,
        const SPLIT: bool,
        const LS: bool,
        const HS: bool,
        const DIFF: bool,
    >(
        c: Chunk<'_, E>,
        eta_lo: E,
        eta_hi: E,
    ) -> FirstSums;

    /// `y = min(max(x + eta * delta, lower), upper)` (no FMA: rounds like NumPy); `LS` /
    /// `HS` as in [`Kernels::first`]. `STREAM` writes with non-temporal stores: for outputs
    /// too large to stay in cache, the stores skip reading the destination lines first.
    /// `DIFF` as in [`Kernels::first`] (`y = clip(x + eta * (z - x))`).
    ///
    /// # Safety
    /// [`Kernels::available`] returned `true`.
    unsafe fn apply<const LS: bool, const HS: bool, const STREAM: bool, const DIFF: bool>(
        c: Chunk<'_, E>,
        eta: E,
        out: &mut [E],
    );
}

/// The kernels of `crate::avx2` (AVX2 and FMA).
pub(crate) struct Avx2;
/// The kernels of `crate::avx512` (AVX-512 F, VL, BW and DQ).
pub(crate) struct Avx512;

/// Declares `fn NAME(a: V, b: V) -> R` for each `NAME -> R => INTRINSIC;` (lane-wise),
/// compiled for the target features `$feat`.
macro_rules! binary_ops {
    ($feat:literal; $($(#[$doc:meta])* $name:ident -> $r:ty => $f:expr;)*) => {
        $(
            $(#[$doc])*
            #[inline]
            #[target_feature(enable = $feat)]
            fn $name(a: V, b: V) -> $r {
                $f(a, b)
            }
        )*
    };
}

/// Declares the lane-wise `add`, `sub`, `mul`, `max`, `min` over `V` and the comparisons
/// into the lane mask `M` (`$cmp::<PREDICATE>`), compiled for the target features `$feat`.
macro_rules! lane_ops {
    ($feat:literal; add: $add:ident, sub: $sub:ident, mul: $mul:ident, max: $max:ident,
     min: $min:ident, cmp: $cmp:ident) => {
        $crate::simd_kernels::binary_ops! { $feat;
            add -> V => $add;
            sub -> V => $sub;
            mul -> V => $mul;
            max -> V => $max;
            min -> V => $min;
            /// `a > b` (false on NaN).
            gt -> M => $cmp::<_CMP_GT_OQ>;
            /// `a <= b` (false on NaN).
            le -> M => $cmp::<_CMP_LE_OQ>;
            /// `!(a <= b)` (true on NaN).
            nle -> M => $cmp::<_CMP_NLE_UQ>;
            /// `!(a < b)` (true on NaN).
            nlt -> M => $cmp::<_CMP_NLT_UQ>;
            /// `!(a >= b)` (true on NaN).
            nge -> M => $cmp::<_CMP_NGE_UQ>;
            /// Either is NaN.
            unord -> M => $cmp::<_CMP_UNORD_Q>;
        }
    };
}

/// Declares `splat`, `zero`, `load`, `store`, `store_slots`, `stream_store` and `to_lanes`
/// over the intrinsics of `E`'s vector type `V` (`W` lanes of `E`, `size_of::<V>()` bytes),
/// compiled for the target features `$feat`.
macro_rules! memory_ops {
    ($feat:literal; set1: $set1:ident, setzero: $setzero:ident, loadu: $loadu:ident,
     storeu: $storeu:ident, stream: $stream:ident) => {
        #[inline]
        #[target_feature(enable = $feat)]
        fn splat(v: E) -> V {
            $set1(v)
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn zero() -> V {
            $setzero()
        }

        /// Loads `W` elements (`s` must hold exactly `W`).
        #[inline]
        #[target_feature(enable = $feat)]
        fn load(s: &[E]) -> V {
            let s: &[E; W] = s.try_into().expect("W elements");
            // SAFETY: `s` is `W` initialised elements (`size_of::<V>()` readable bytes);
            // `loadu` has no alignment requirement.
            unsafe { $loadu(s.as_ptr()) }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn store(o: &mut [E; W], v: V) {
            // SAFETY: `o` is `W` elements (`size_of::<V>()` writable bytes); `storeu` has no
            // alignment requirement.
            unsafe { $storeu(o.as_mut_ptr(), v) }
        }

        /// Stores all `W` lanes of `v` into `W` slots that may be uninitialised.
        #[allow(dead_code)] // the AVX2 lanes pack through their own permutation
        #[inline]
        #[target_feature(enable = $feat)]
        fn store_slots(o: &mut [std::mem::MaybeUninit<E>; W], v: V) {
            // SAFETY: `o` is `W` slots of `E` (`size_of::<V>()` writable bytes;
            // `MaybeUninit<E>` has the layout of `E`); `storeu` has no alignment requirement.
            unsafe { $storeu(o.as_mut_ptr().cast(), v) }
        }

        /// Stores `v` with a non-temporal hint.
        ///
        /// # Safety
        /// `o` is aligned to `size_of::<V>()` bytes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn stream_store(o: &mut [E; W], v: V) {
            // SAFETY: `o` is `W` writable elements (`size_of::<V>()` bytes), aligned by the
            // caller's contract.
            unsafe { $stream(o.as_mut_ptr(), v) }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn to_lanes(v: V) -> [E; W] {
            let mut out = [0.0; W];
            store(&mut out, v);
            out
        }
    };
}

/// Expands the kernels (`first`, `apply`) and the [`Kernels`] impl of `$isa` for `E`,
/// compiled for the target features `$feat` (which `$has()` checks at run time), over the
/// lane operations of the module that expands it:
/// - `E`, its vector `V` of `W` lanes, its lane mask `M` (a comparison's result), its
///   packing selector `I` and its lane counter `C`;
/// - from [`memory_ops!`]: `splat`, `zero`, `load`, `store`, `stream_store`, `to_lanes`;
/// - `add`, `sub`, `mul`, `max`, `min`, `abs`, and the comparisons `gt`, `le`, `nle`,
///   `nlt`, `nge`, `unord` into `M`;
/// - `blend(a, b, m)` (`m ? b : a`), `mask_add(acc, m, v)` (`acc + v` in the lanes of
///   `m`), `mask_or`, `no_lanes`, `any_lane`;
/// - `count_zero`, `count_add(c, m)` (one more in the lanes of `m`), `count_total`;
/// - `inside(outside)` (the selector of the lanes not in `outside`), `pack(dst, v, sel)`
///   (stores the selected lanes of `v` packed to the front of `dst`, arbitrary lanes after
///   them) and `packed(sel)` (how many lanes it selects).
macro_rules! simd_kernels {
    ($feat:literal, $isa:ident, $has:path) => {
        use std::mem::MaybeUninit;

        use crate::kernel::{room, FirstSums};
        use crate::norm::PHalf;
        use crate::safeguard::Cand;
        use crate::simd::prefetch_ahead;
        use crate::simd_kernels::{$isa, Chunk, Kernels, Side};

        /// `(values, broadcast)` of a side: the slice (empty for a scalar) and the scalar
        /// in every lane (zero for a slice); the kernels take one or the other by a const
        /// parameter.
        #[inline]
        #[target_feature(enable = $feat)]
        fn parts(side: Side<'_, E>, n: usize) -> (&[E], V) {
            match side {
                Side::Scalar(v) => (&[], splat(v)),
                Side::Slice(s) => (&s[..n], zero()),
            }
        }

        /// A side's lanes at `i`: loaded when `SLICE`, else the broadcast scalar.
        #[inline]
        #[target_feature(enable = $feat)]
        fn side_at<const SLICE: bool>(values: &[E], bcast: V, i: usize) -> V {
            if SLICE {
                load(&values[i..i + W])
            } else {
                bcast
            }
        }

        /// `delta`'s lanes at `x`'s lanes `xv`: `d` itself, or with `DIFF` (`d` holding `z`)
        /// `z - x`.
        #[inline]
        #[target_feature(enable = $feat)]
        fn delta_at<const DIFF: bool>(xv: V, d: &[E]) -> V {
            if DIFF {
                sub(load(d), xv)
            } else {
                load(d)
            }
        }

        /// Sums the lanes of `v` in `f64`, in index order.
        #[inline]
        #[target_feature(enable = $feat)]
        fn sum_lanes(v: V) -> f64 {
            to_lanes(v).iter().map(|&l| f64::from(l)).sum()
        }

        /// `(|delta|, room, upper - x, x - lower)` of `W` elements: `room = upper - x` where
        /// `delta > 0`, else `x - lower`.
        #[inline]
        #[target_feature(enable = $feat)]
        fn abs_room_sides(xv: V, dv: V, lo: V, hi: V) -> (V, V, V, V) {
            let up = sub(hi, xv);
            let dn = sub(xv, lo);
            (abs(dv), blend(dn, up, gt(dv, zero())), up, dn)
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn pow<const K: u32>(v: V) -> V {
            // as `PHalf::<K>` (each step correctly rounded, so the lanes agree with it)
            let mut out = if K % 2 == 1 { sqrt(v) } else { v };
            let products = if K % 2 == 1 { K / 2 } else { K / 2 - 1 };
            for _ in 0..products {
                out = mul(out, v);
            }
            out
        }

        fn pow_s<const K: u32>(v: E) -> E {
            PHalf::<K>::of(v)
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

        /// The alignment of a vector store in bytes (that of a non-temporal one).
        const ALIGN: usize = std::mem::size_of::<V>();

        /// Appends the candidates of elements with `|delta|` `a` and room `s`.
        fn push_cands<const K: u32>(cands: &mut Vec<Cand>, a: &[E], s: &[E]) {
            cands.reserve(a.len());
            for (&a, &s) in a.iter().zip(s) {
                cands.push(Cand::new(f64::from(a), f64::from(s), PHalf::<K>));
            }
        }

        /// The `W` slots of `buf` from `at` on.
        #[inline(always)]
        fn slots(buf: &mut [MaybeUninit<E>], at: usize) -> &mut [MaybeUninit<E>; W] {
            (&mut buf[at..at + W]).try_into().expect("W slots")
        }

        // The kernels' only precondition is that the CPU runs the target features `$feat`:
        // `Kernels`'s contract has the caller check `available` (`$has`) first.
        impl Kernels<E> for $isa {
            fn available() -> bool {
                $has()
            }

            #[target_feature(enable = $feat)]
            unsafe fn first<
                const K: u32,
                const VALIDATE: bool,
                const CHECK_X: bool,
                const SPLIT: bool,
                const LS: bool,
                const HS: bool,
                const DIFF: bool,
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
                let mut out = FirstSums {
                    cands: crate::safeguard::take_buffer(),
                    ..FirstSums::default()
                };
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
                    // AVX2 registers.
                    let (mut cs, mut ms, mut amax) = (zero(), zero(), zero());
                    let mut bad = no_lanes();
                    let mut nsat = count_zero();
                    let mut count = 0usize;
                    let end = full.min(start + PIECE);
                    for i in (start..end).step_by(W) {
                        // Later passes find the row in cache (short rows in L1, image rows in
                        // L2).
                        if VALIDATE {
                            prefetch_streams::<LS, HS>([x, d, lo_s, hi_s], i);
                        }
                        let xv = load(&x[i..i + W]);
                        let dv = delta_at::<DIFF>(xv, &d[i..i + W]);
                        let lo = side_at::<LS>(lo_s, lo_b, i);
                        let hi = side_at::<HS>(hi_s, hi_b, i);
                        let (a, s, up, dn) = abs_room_sides(xv, dv, lo, hi);
                        let sat_lo = le(s, mul(elo, a));
                        // Without a split the complement (NaN lanes land in both, and are
                        // invalid).
                        let free_hi = if SPLIT {
                            gt(s, mul(ehi, a))
                        } else {
                            nle(s, mul(elo, a))
                        };
                        cs = mask_add(cs, sat_lo, pow::<K>(s));
                        ms = mask_add(ms, free_hi, pow::<K>(a));
                        nsat = count_add(nsat, sat_lo);
                        let mut outside = mask_or(sat_lo, free_hi);
                        if VALIDATE {
                            amax = max(amax, a);
                            // invalid: delta not finite, x below lower or above upper (or NaN,
                            // or a NaN bound); with CHECK_X also x not finite
                            let b = if CHECK_X {
                                // Both rooms `x - lower` and `upper - x` are at least zero
                                // exactly when x is finite and inside its box: a finite
                                // difference of two floats has the sign of their order (zero
                                // only for equal ones, as subnormals keep), a finite x with an
                                // infinite bound gives the infinity of the comparison's
                                // outcome, and an infinite x gives a room of -inf or NaN on
                                // one side (NaN for an infinite bound of its sign), as does a
                                // NaN anywhere. The rooms are computed anyway: three fewer
                                // operations than comparing |x| too.
                                mask_or(nlt(a, inf), mask_or(nge(dn, zero()), nge(up, zero())))
                            } else {
                                mask_or(nlt(a, inf), mask_or(nge(xv, lo), nle(xv, hi)))
                            };
                            bad = mask_or(bad, b);
                            outside = mask_or(outside, b);
                        }
                        if !SPLIT {
                            continue;
                        }
                        let sel = inside(outside);
                        // At most one element per element seen is packed, so `count <= i -
                        // start` and `count + W <= PIECE`: the slices below never fail.
                        pack(slots(&mut packed_a, count), a, sel);
                        pack(slots(&mut packed_s, count), s, sel);
                        count += packed(sel);
                    }
                    out.c_lo += sum_lanes(cs);
                    out.m_hi += sum_lanes(ms);
                    out.nsat_lo += count_total(nsat);
                    out.amax = to_lanes(amax)
                        .iter()
                        .fold(out.amax, |m, &v| m.max(f64::from(v)));
                    any_bad |= any_lane(bad);
                    // SAFETY: the first `count` elements of both buffers were written in this
                    // piece (each vector stored its `k` inside lanes at `count..count + k`
                    // before `count` grew by `k`), and `MaybeUninit<E>` has the layout of `E`.
                    let (pa, ps) = unsafe {
                        (
                            std::slice::from_raw_parts(packed_a.as_ptr().cast::<E>(), count),
                            std::slice::from_raw_parts(packed_s.as_ptr().cast::<E>(), count),
                        )
                    };
                    push_cands::<K>(&mut out.cands, pa, ps);
                }
                for i in full..n {
                    let (xi, lo, hi) = (x[i], c.lo.at(i), c.hi.at(i));
                    let di = if DIFF { d[i] - xi } else { d[i] };
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
                        out.c_lo += f64::from(pow_s::<K>(s));
                        out.nsat_lo += 1;
                    } else if free_hi {
                        out.m_hi += f64::from(pow_s::<K>(a));
                    } else if !b {
                        push_cands::<K>(&mut out.cands, &[a], &[s]);
                    }
                }
                out.bad = any_bad as u64;
                out
            }

            #[target_feature(enable = $feat)]
            unsafe fn apply<
                const LS: bool,
                const HS: bool,
                const STREAM: bool,
                const DIFF: bool,
            >(
                c: Chunk<'_, E>,
                eta: E,
                out: &mut [E],
            ) {
                let n = c.x.len().min(c.d.len()).min(out.len());
                let (x, d, out) = (&c.x[..n], &c.d[..n], &mut out[..n]);
                let ((lo_s, lo_b), (hi_s, hi_b)) = (parts(c.lo, n), parts(c.hi, n));
                let one = |i: usize, out: &mut [E]| {
                    let di = if DIFF { d[i] - x[i] } else { d[i] };
                    let y = x[i] + eta * di;
                    out[i] = y.max(c.lo.at(i)).min(c.hi.at(i));
                };
                // streaming: elements before the first `ALIGN`-byte boundary of `out`
                let head = if STREAM {
                    out.as_ptr().align_offset(ALIGN).min(n)
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
                    let xv = load(&x[i..i + W]);
                    let y = add(xv, mul(e, delta_at::<DIFF>(xv, &d[i..i + W])));
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
                        // SAFETY: `os` starts `head + k * W` elements from an `ALIGN`-byte
                        // boundary (`align_offset` returned `head`) and `W` elements are `ALIGN`
                        // bytes, so it is `ALIGN`-byte aligned, as `stream_store` requires.
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
                    std::arch::x86_64::_mm_sfence();
                }
            }
        }
    };
}

pub(crate) use {binary_ops, lane_ops, memory_ops, simd_kernels};
