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
use std::mem::MaybeUninit;

use crate::kernel::{room, FirstSums};
use crate::norm::{P1, P2 as P2Norm};
use crate::safeguard::Cand;
use crate::simd::prefetch_ahead;

const W: usize = 8;

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

/// Prefetches `x`, `delta` and the bound sides that hold one value per element (`LS` / `HS`)
/// ahead of element `i`.
#[inline(always)]
fn prefetch_streams<const LS: bool, const HS: bool>([x, d, lo, hi]: [&[f32]; 4], i: usize) {
    prefetch_ahead(x, i);
    prefetch_ahead(d, i);
    if LS {
        prefetch_ahead(lo, i);
    }
    if HS {
        prefetch_ahead(hi, i);
    }
}

/// Elements per piece of the first pass (a multiple of `W`; the packed elements of a piece
/// stay on the stack, in L1).
const PIECE: usize = 1024;

/// Appends the candidates of elements with `|delta|` `a` and room `s`.
fn push_cands<const P2: bool>(cands: &mut Vec<Cand>, a: &[f32], s: &[f32]) {
    cands.reserve(a.len());
    for (&a, &s) in a.iter().zip(s) {
        cands.push(if P2 {
            Cand::new(a as f64, s as f64, P2Norm)
        } else {
            Cand::new(a as f64, s as f64, P1)
        });
    }
}

/// For each 8-bit lane mask, the indices of its set lanes in order (then zeros): the
/// permutation that packs those lanes to the front.
static COMPRESS: [[u32; W]; 256] = {
    let mut table = [[0u32; W]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut k, mut lane) = (0, 0);
        while lane < W {
            if (m >> lane) & 1 == 1 {
                table[m][k] = lane as u32;
                k += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    table
};

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

/// A pass over a chunk split at the bracket `(eta_lo, eta_hi]` (see `FirstSums`).
/// `VALIDATE`: the first pass, which also counts invalid elements and finds the largest
/// `|delta|` (`CHECK_X` then also checks that `x` is finite, which the bounds check implies
/// when both bounds are finite); a later pass over a valid row leaves `bad` and `amax` at
/// zero. `SPLIT`: the bracket is not empty (`eta_lo < eta_hi`); with `eta_lo == eta_hi`
/// nothing lies inside, so the pass skips the candidates and the second comparison.
/// `LS` / `HS`: the lower / upper side holds one value per element.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn first<
    const P2: bool,
    const VALIDATE: bool,
    const CHECK_X: bool,
    const SPLIT: bool,
    const LS: bool,
    const HS: bool,
>(
    c: F32Chunk<'_>,
    eta_lo: f32,
    eta_hi: f32,
) -> FirstSums {
    let n = c.x.len().min(c.d.len());
    let (x, d) = (&c.x[..n], &c.d[..n]);
    let ((lo_s, lo_b), (hi_s, hi_b)) = (c.lo.parts(n), c.hi.parts(n));
    let full = n / W * W;
    let zero = _mm256_setzero_ps();
    let (inf, sign) = (_mm256_set1_ps(f32::INFINITY), _mm256_set1_ps(-0.0));
    let (elo, ehi) = (_mm256_set1_ps(eta_lo), _mm256_set1_ps(eta_hi));
    let mut out = FirstSums::default();
    let mut any_bad = false;
    // The (|delta|, room) of the elements inside the bracket, packed to the front: each
    // vector's inside lanes are moved to its first lanes (`COMPRESS`) and stored where the
    // previous vector's ended, so the loop has no data-dependent branch.
    let mut packed_a = [MaybeUninit::<f32>::uninit(); PIECE];
    let mut packed_s = [MaybeUninit::<f32>::uninit(); PIECE];
    for start in (0..full).step_by(PIECE) {
        // Accumulators per piece, folded into `out` after it: none lives across the call
        // that turns the packed elements into candidates, so all stay in registers. One
        // vector per step: with the constants they fill the sixteen registers.
        let (mut cs, mut ms, mut amax, mut bad) = (zero, zero, zero, zero);
        let mut nsat = _mm256_setzero_si256();
        let mut count = 0usize;
        for i in (start..full.min(start + PIECE)).step_by(W) {
            // Later passes find the row in cache (short rows in L1, image rows in L2).
            if VALIDATE {
                prefetch_streams::<LS, HS>([x, d, lo_s, hi_s], i);
            }
            let (xv, dv) = (load8!(&x[i..i + W]), load8!(&d[i..i + W]));
            let lo = side8!(LS, lo_s, lo_b, i);
            let hi = side8!(HS, hi_s, hi_b, i);
            let (a, s) = abs_room(xv, dv, lo, hi);
            let sat_lo = _mm256_cmp_ps::<_CMP_LE_OQ>(s, _mm256_mul_ps(elo, a));
            // Without a split the complement (NaN lanes land in both, and are invalid).
            let free_hi = if SPLIT {
                _mm256_cmp_ps::<_CMP_GT_OQ>(s, _mm256_mul_ps(ehi, a))
            } else {
                _mm256_cmp_ps::<_CMP_NLE_UQ>(s, _mm256_mul_ps(elo, a))
            };
            cs = _mm256_add_ps(cs, _mm256_and_ps(sat_lo, pow::<P2>(s)));
            ms = _mm256_add_ps(ms, _mm256_and_ps(free_hi, pow::<P2>(a)));
            nsat = _mm256_sub_epi32(nsat, _mm256_castps_si256(sat_lo));
            let mut outside = _mm256_or_ps(sat_lo, free_hi);
            if VALIDATE {
                amax = _mm256_max_ps(amax, a);
                // invalid: delta not finite, x below lower or above upper (or NaN, or a NaN
                // bound)
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
                outside = _mm256_or_ps(outside, b);
            }
            if !SPLIT {
                continue;
            }
            let inside = (!_mm256_movemask_ps(outside) & 0xff) as usize;
            let perm: &[u32; W] = &COMPRESS[inside];
            // SAFETY: `perm` is eight initialised u32 (32 readable bytes) and `loadu` has no
            // alignment requirement. For the stores: at most one element per element seen
            // is packed, so `count <= i - start` and `count + 8 <= PIECE` (the vector ends
            // inside the piece): the eight floats written lie inside each buffer.
            unsafe {
                let perm = _mm256_loadu_si256(perm.as_ptr().cast());
                let dst_a = packed_a.as_mut_ptr().add(count).cast::<f32>();
                _mm256_storeu_ps(dst_a, _mm256_permutevar8x32_ps(a, perm));
                let dst_s = packed_s.as_mut_ptr().add(count).cast::<f32>();
                _mm256_storeu_ps(dst_s, _mm256_permutevar8x32_ps(s, perm));
            }
            count += COUNT[inside] as usize;
        }
        out.c_lo += sum8(cs);
        out.m_hi += sum8(ms);
        let mut ns = [0u32; W];
        // SAFETY: `ns` is eight u32 (32 writable bytes); `storeu` has no alignment
        // requirement.
        unsafe { _mm256_storeu_si256(ns.as_mut_ptr().cast(), nsat) };
        out.nsat_lo += ns.iter().map(|&v| v as u64).sum::<u64>();
        out.amax = lanes(amax).iter().fold(out.amax, |m, &v| m.max(v as f64));
        any_bad |= _mm256_movemask_ps(bad) != 0;
        // SAFETY: the first `count` floats of both buffers were written in this piece (each
        // vector stored its `k` inside lanes at `count..count + k` before `count` grew by
        // `k`), and `MaybeUninit<f32>` has the layout of `f32`.
        let (pa, ps) = unsafe {
            (
                std::slice::from_raw_parts(packed_a.as_ptr().cast::<f32>(), count),
                std::slice::from_raw_parts(packed_s.as_ptr().cast::<f32>(), count),
            )
        };
        push_cands::<P2>(&mut out.cands, pa, ps);
    }
    for i in full..n {
        let (xi, di, lo, hi) = (x[i], d[i], c.lo.at(i), c.hi.at(i));
        let a = di.abs();
        let s = room(xi, di, lo, hi);
        let (sat_lo, free_hi) = (s <= eta_lo * a, s > eta_hi * a);
        let b =
            VALIDATE && !(a < f32::INFINITY && xi >= lo && xi <= hi && xi.abs() < f32::INFINITY);
        any_bad |= b;
        if VALIDATE {
            out.amax = out.amax.max(a as f64);
        }
        if sat_lo {
            out.c_lo += pow_s::<P2>(s) as f64;
            out.nsat_lo += 1;
        } else if free_hi {
            out.m_hi += pow_s::<P2>(a) as f64;
        } else if !b {
            push_cands::<P2>(&mut out.cands, &[a], &[s]);
        }
    }
    out.bad = any_bad as u64;
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
        prefetch_streams::<LS, HS>([x, d, lo_s, hi_s], i);
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
