//! Hand-written AVX2 kernels for the case that dominates real use: `f32` data, `p = 1` or
//! `p = 2`, each bound a scalar or one value per element. The generic lane loops in `kernel` cover everything else; LLVM's
//! vectoriser keeps their accumulators in registers only for the simplest passes (it spilled
//! the first and the collecting pass to the stack, or fell back to scalar code), so these
//! two passes are written with intrinsics.
//!
//! Same arithmetic as the generic kernels (no FMA: `x + eta * delta` must round like
//! NumPy's), lanes combined in a fixed order, so the results do not depend on the thread
//! count.
// Explicit lane indices mirror the generic kernels.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::kernel::{room, Collected, FirstSums, POINTS};
use crate::norm::{P1, P2 as P2Norm};
use crate::safeguard::Cand;

const W: usize = 8;
/// Elements per loop step: two vectors, for two independent dependency chains.
const STEP: usize = 2 * W;

/// One side of the box over a chunk: a scalar, or one value per element.
#[derive(Clone, Copy)]
pub(crate) enum Side32<'a> {
    Scalar(f32),
    Slice(&'a [f32]),
}

impl<'a> Side32<'a> {
    /// `(values, broadcast)`: the slice (empty for a scalar) and the scalar in every lane
    /// (zero for a slice); the kernels take one or the other by a const parameter.
    #[target_feature(enable = "avx2,fma")]
    fn parts(self, n: usize) -> (&'a [f32], __m256) {
        match self {
            Side32::Scalar(v) => (&[], _mm256_set1_ps(v)),
            Side32::Slice(s) => (&s[..n], _mm256_setzero_ps()),
        }
    }

    /// The value at `i` (tails and the candidate list).
    #[inline]
    fn at(self, i: usize) -> f32 {
        match self {
            Side32::Scalar(v) => v,
            Side32::Slice(s) => s[i],
        }
    }

    /// Whether this side is one finite scalar.
    pub(crate) fn finite_scalar(self) -> bool {
        matches!(self, Side32::Scalar(v) if v.is_finite())
    }
}

/// A chunk of an `f32` row and its bounds.
#[derive(Clone, Copy)]
pub(crate) struct F32Chunk<'a> {
    pub x: &'a [f32],
    pub d: &'a [f32],
    pub lo: Side32<'a>,
    pub hi: Side32<'a>,
}

/// Loads eight floats.
macro_rules! load8 {
    ($s:expr) => {{
        let s: &[f32; W] = $s.try_into().expect("a slice of eight floats");
        // SAFETY: `s` is eight initialised f32 (32 readable bytes); `loadu` has no
        // alignment requirement.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }};
}

/// A side's eight lanes at `i`: loaded when `SLICE`, else the broadcast scalar.
macro_rules! side8 {
    ($slice_kind:expr, $values:expr, $bcast:expr, $i:expr) => {
        if $slice_kind {
            load8!(&$values[$i..$i + W])
        } else {
            $bcast
        }
    };
}

/// Eight lanes as an array.
#[target_feature(enable = "avx2,fma")]
fn lanes(v: __m256) -> [f32; W] {
    let mut out = [0f32; W];
    // SAFETY: `out` is eight f32 (32 writable bytes); `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Sums the eight lanes of `v` in `f64`, in index order.
#[target_feature(enable = "avx2,fma")]
fn sum8(v: __m256) -> f64 {
    lanes(v).iter().map(|&l| l as f64).sum()
}

/// Sums the sixteen lanes of `v` in `f64`, lane by lane in index order.
#[target_feature(enable = "avx2,fma")]
fn sum16(v: [__m256; 2]) -> f64 {
    let mut s = 0.0;
    for h in v {
        for l in lanes(h) {
            s += l as f64;
        }
    }
    s
}

/// `(|delta|, room)` of eight elements: `room = upper - x` where `delta > 0`, else
/// `x - lower`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn abs_room(xv: __m256, dv: __m256, lo: __m256, hi: __m256) -> (__m256, __m256) {
    let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), dv);
    let up = _mm256_sub_ps(hi, xv);
    let dn = _mm256_sub_ps(xv, lo);
    let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(dv, _mm256_setzero_ps());
    (a, _mm256_blendv_ps(dn, up, pos))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn pow<const P2: bool>(v: __m256) -> __m256 {
    if P2 {
        _mm256_mul_ps(v, v)
    } else {
        v
    }
}

fn pow_s<const P2: bool>(v: f32) -> f32 {
    if P2 {
        v * v
    } else {
        v
    }
}

/// The first, validating pass over a chunk (see `FirstSums`). `CHECK_X` also checks that
/// `x` is finite, which the bounds check implies when both bounds are finite. `LS` / `HS`:
/// the lower / upper side holds one value per element.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn first<const P2: bool, const CHECK_X: bool, const LS: bool, const HS: bool>(
    c: F32Chunk<'_>,
    t: [f32; POINTS],
) -> FirstSums {
    let n = c.x.len().min(c.d.len());
    let (x, d) = (&c.x[..n], &c.d[..n]);
    let ((lo_s, lo_b), (hi_s, hi_b)) = (c.lo.parts(n), c.hi.parts(n));
    // One vector per step: the accumulators (m0, four g, counts) and the constants
    // already fill the sixteen registers; unrolling spilled them.
    let full = n / W * W;
    let zero = _mm256_setzero_ps();
    let (inf, sign) = (_mm256_set1_ps(f32::INFINITY), _mm256_set1_ps(-0.0));
    let tv = [
        _mm256_set1_ps(t[0]),
        _mm256_set1_ps(t[1]),
        _mm256_set1_ps(t[2]),
        _mm256_set1_ps(t[3]),
    ];
    let mut m0 = zero;
    let mut g = [zero; POINTS];
    let mut nsat0 = _mm256_setzero_si256();
    let (mut amax, mut bad) = (zero, zero);
    for i in (0..full).step_by(W) {
        let (xv, dv) = (load8!(&x[i..i + W]), load8!(&d[i..i + W]));
        let lo = side8!(LS, lo_s, lo_b, i);
        let hi = side8!(HS, hi_s, hi_b, i);
        let (a, s) = abs_room(xv, dv, lo, hi);
        let (w, cc) = (pow::<P2>(a), pow::<P2>(s));
        let sat0 = _mm256_cmp_ps::<_CMP_LE_OQ>(s, zero);
        m0 = _mm256_add_ps(m0, _mm256_andnot_ps(sat0, w));
        nsat0 = _mm256_sub_epi32(nsat0, _mm256_castps_si256(sat0));
        amax = _mm256_max_ps(amax, a);
        // invalid: delta not finite, x below lower or above upper (or NaN, or a NaN bound)
        let mut b = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_NLT_UQ>(a, inf),
            _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_NGE_UQ>(xv, lo),
                _mm256_cmp_ps::<_CMP_NLE_UQ>(xv, hi),
            ),
        );
        if CHECK_X {
            let ax = _mm256_andnot_ps(sign, xv);
            b = _mm256_or_ps(b, _mm256_cmp_ps::<_CMP_NLT_UQ>(ax, inf));
        }
        bad = _mm256_or_ps(bad, b);
        for j in 0..POINTS {
            let gj = _mm256_min_ps(_mm256_mul_ps(tv[j], w), cc);
            g[j] = _mm256_add_ps(g[j], gj);
        }
    }
    let mut out = FirstSums {
        m0: sum8(m0),
        ..Default::default()
    };
    for j in 0..POINTS {
        out.g[j] = sum8(g[j]);
    }
    let mut ns = [0u32; W];
    // SAFETY: `ns` is eight u32 (32 writable bytes); `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(ns.as_mut_ptr().cast(), nsat0) };
    out.nsat0 = ns.iter().map(|&v| v as u64).sum();
    out.amax = lanes(amax).iter().fold(0.0f32, |m, &v| m.max(v)) as f64;
    let mut any_mov = out.amax > 0.0;
    let mut any_bad = _mm256_movemask_ps(bad) != 0;
    for i in full..n {
        let (xi, di, lo, hi) = (x[i], d[i], c.lo.at(i), c.hi.at(i));
        let a = di.abs();
        let s = room(xi, di, lo, hi);
        let (w, cc) = (pow_s::<P2>(a), pow_s::<P2>(s));
        let sat0 = s <= 0.0;
        out.m0 += if sat0 { 0.0 } else { w as f64 };
        out.nsat0 += sat0 as u64;
        any_mov |= a > 0.0;
        out.amax = out.amax.max(a as f64);
        any_bad |= !(a < f32::INFINITY && xi >= lo && xi <= hi && xi.abs() < f32::INFINITY);
        for j in 0..POINTS {
            let gj = t[j] * w;
            out.g[j] += (if gj < cc { gj } else { cc }) as f64;
        }
    }
    out.nmov = any_mov as u64;
    out.bad = any_bad as u64;
    out
}

/// Splits a chunk at the bracket `(eta_lo, eta_hi]` (see `Collected`); `LS` / `HS` as in
/// [`first`].
#[target_feature(enable = "avx2,fma")]
pub(crate) fn collect<const P2: bool, const LS: bool, const HS: bool>(
    c: F32Chunk<'_>,
    eta_lo: f32,
    eta_hi: f32,
) -> Collected {
    let n = c.x.len().min(c.d.len());
    let (x, d) = (&c.x[..n], &c.d[..n]);
    let ((lo_s, lo_b), (hi_s, hi_b)) = (c.lo.parts(n), c.hi.parts(n));
    let full = n / STEP * STEP;
    let zero = _mm256_setzero_ps();
    let (elo, ehi) = (_mm256_set1_ps(eta_lo), _mm256_set1_ps(eta_hi));
    let (mut cs, mut ms) = ([zero; 2], [zero; 2]);
    // Per vector, a bit per element inside the bracket: written without branches or calls
    // so that the accumulators stay in registers; turned into candidates after the loop.
    let mut masks = vec![0u8; full / W];
    for (step, mask) in masks.chunks_exact_mut(2).enumerate() {
        for h in 0..2 {
            let i = step * STEP + h * W;
            let xv = load8!(&x[i..i + W]);
            let dv = load8!(&d[i..i + W]);
            let lo = side8!(LS, lo_s, lo_b, i);
            let hi = side8!(HS, hi_s, hi_b, i);
            let (a, s) = abs_room(xv, dv, lo, hi);
            let sat_lo = _mm256_cmp_ps::<_CMP_LE_OQ>(s, _mm256_mul_ps(elo, a));
            let free_hi = _mm256_cmp_ps::<_CMP_GT_OQ>(s, _mm256_mul_ps(ehi, a));
            cs[h] = _mm256_add_ps(cs[h], _mm256_and_ps(sat_lo, pow::<P2>(s)));
            ms[h] = _mm256_add_ps(ms[h], _mm256_and_ps(free_hi, pow::<P2>(a)));
            mask[h] = !(_mm256_movemask_ps(_mm256_or_ps(sat_lo, free_hi)) as u8);
        }
    }
    let inside: usize = masks.iter().map(|m| m.count_ones() as usize).sum();
    let mut out = Collected {
        c: sum16(cs),
        m: sum16(ms),
        cands: Vec::with_capacity(inside + (n - full)),
    };
    let room = |i: usize| room(x[i], d[i], c.lo.at(i), c.hi.at(i));
    let cand = |i: usize| {
        let (a, s) = (d[i].abs() as f64, room(i) as f64);
        if P2 {
            Cand::new(a, s, P2Norm)
        } else {
            Cand::new(a, s, P1)
        }
    };
    for (vi, mut keep) in masks.into_iter().enumerate() {
        while keep != 0 {
            let k = keep.trailing_zeros() as usize;
            keep &= keep - 1;
            out.cands.push(cand(vi * W + k));
        }
    }
    for i in full..n {
        let (a, s) = (d[i].abs(), room(i));
        let (sat_lo, free_hi) = (s <= eta_lo * a, s > eta_hi * a);
        if sat_lo {
            out.c += pow_s::<P2>(s) as f64;
        } else if free_hi {
            out.m += pow_s::<P2>(a) as f64;
        } else {
            out.cands.push(cand(i));
        }
    }
    out
}

/// `y = min(max(x + eta * delta, lower), upper)` (no FMA: rounds like NumPy); `LS` / `HS`
/// as in [`first`]. `STREAM` writes with non-temporal stores: for outputs too large to stay
/// in cache, the stores skip reading the destination lines first.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn apply<const LS: bool, const HS: bool, const STREAM: bool>(
    c: F32Chunk<'_>,
    eta: f32,
    out: &mut [f32],
) {
    let n = c.x.len().min(c.d.len()).min(out.len());
    let (x, d, out) = (&c.x[..n], &c.d[..n], &mut out[..n]);
    let ((lo_s, lo_b), (hi_s, hi_b)) = (c.lo.parts(n), c.hi.parts(n));
    let one = |i: usize, out: &mut [f32]| {
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
    let e = _mm256_set1_ps(eta);
    for i in (head..head + body).step_by(W) {
        let y = _mm256_add_ps(load8!(&x[i..i + W]), _mm256_mul_ps(e, load8!(&d[i..i + W])));
        let lo = side8!(LS, lo_s, lo_b, i);
        let hi = side8!(HS, hi_s, hi_b, i);
        // Exactly Rust's `y.max(lo).min(hi)`: `max_ps(lo, y)` returns `y` when the two are
        // equal (the sign of a zero `y` survives), and a NaN `y` (an `eta` past f32's range
        // times a zero delta) gives `lo`. Bounds are never NaN here (validated).
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(y, y);
        let y = _mm256_blendv_ps(_mm256_max_ps(lo, y), lo, nan);
        let y = _mm256_min_ps(hi, y);
        let os: &mut [f32; W] = (&mut out[i..i + W]).try_into().expect("eight floats");
        if STREAM {
            // SAFETY: `os` is eight writable f32 starting at `head + k * 8` elements from a
            // 32-byte boundary (`align_offset` returned `head`), so it is 32-byte aligned, as
            // `stream_ps` requires.
            unsafe { _mm256_stream_ps(os.as_mut_ptr(), y) };
        } else {
            // SAFETY: `os` is eight writable f32; `storeu` has no alignment requirement.
            unsafe { _mm256_storeu_ps(os.as_mut_ptr(), y) };
        }
    }
    for i in head + body..n {
        one(i, out);
    }
    if STREAM {
        // Non-temporal stores are weakly ordered: fence before anyone else reads `out`.
        _mm_sfence();
    }
}
