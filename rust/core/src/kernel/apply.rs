//! `y = clip(x + eta * delta, lower, upper)` over a row: the lane loops, the hand-written
//! kernels where they apply, the in-place form of the noise path, and the wide (`f64`)
//! form for an `eta` outside the element type's range.

#[cfg(target_arch = "x86_64")]
use super::dispatch::simd_apply;
use super::{for_blocks, pow2_steps, prefetch_row, Row, LANES};
use crate::bounds::SideAccess;
use crate::real::Real;
use crate::simd::prefetch_ahead;

/// `y = clip(x + eta * delta, lower, upper)` over one stretch of a row. `DIFF`: the row's
/// `d` holds `z` and `delta = z - x` is formed in registers (the projection's apply), so
/// the result is bitwise that of the stored `delta`.
#[inline(always)]
pub(super) fn apply_chunk<T: Real, L: SideAccess<T>, H: SideAccess<T>, const DIFF: bool>(
    row: &Row<'_, T, L, H>,
    eta: T,
    out: &mut [T],
) {
    let (x, d) = (row.x, &row.d[..row.x.len()]);
    let out = &mut out[..x.len()];
    for base in (0..x.len()).step_by(LANES) {
        prefetch_row(row, base);
        for i in base..(base + LANES).min(x.len()) {
            let delta = if DIFF { d[i] - x[i] } else { d[i] };
            let y = x[i] + eta * delta;
            out[i] = y.max(row.lo.at(i)).min(row.hi.at(i));
        }
    }
}

/// `y = clip(x + eta * delta, lower, upper)` for one row; `stream` asks for non-temporal
/// stores (an output too large for the cache).
pub(crate) fn apply_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eta: T,
    out: &mut [T],
    par: bool,
    stream: bool,
) {
    apply_row_any::<T, L, H, false>(row, eta, out, par, stream);
}

/// [`apply_row`] for a row whose `d` holds `z`: `y = clip(x + eta * (z - x))`, bitwise as
/// [`apply_row`] on the row with `delta = z - x` stored (for a `z - x` that does not
/// overflow: the projection's caller halves those first).
pub(crate) fn apply_row_diff<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row_xz: &Row<'_, T, L, H>,
    eta: T,
    out: &mut [T],
    par: bool,
    stream: bool,
) {
    apply_row_any::<T, L, H, true>(row_xz, eta, out, par, stream);
}

/// [`apply_row`] (`DIFF` false) or [`apply_row_diff`] (true): the hand-written kernels
/// where they apply, else the lane loops.
fn apply_row_any<T: Real, L: SideAccess<T>, H: SideAccess<T>, const DIFF: bool>(
    row: &Row<'_, T, L, H>,
    eta: T,
    out: &mut [T],
    par: bool,
    stream: bool,
) {
    // only the hand-written x86_64 kernels stream their stores
    #[cfg(not(target_arch = "x86_64"))]
    let _ = stream;
    let body = |start: usize, out: &mut [T]| {
        let sub = row.sub(start, start + out.len());
        #[cfg(target_arch = "x86_64")]
        if simd_apply::<f32, _, _, _, DIFF>(&sub, eta, &mut *out, stream)
            || simd_apply::<f64, _, _, _, DIFF>(&sub, eta, &mut *out, stream)
        {
            return;
        }
        apply_chunk_best::<T, L, H, DIFF>(&sub, eta, out);
    };
    for_blocks(out, par, body);
}

/// Whether a row's `eta` must be applied by [`apply_row_wide`]: it lies outside the normal
/// range of `T` (beyond it, `eta * delta` in `T` would overflow, or lose bits as a
/// subnormal), or outside `f64`'s (`eta_parts` holds it then).
pub(crate) fn needs_wide_apply<T: Real>(eta: f64) -> bool {
    eta != 0.0 && !T::of_f64(eta).is_normal()
}

/// `clip(x + eta * d, lo, hi)` in `f64`, rounded once to `T`.
#[inline]
fn clip_wide<T: Real>(x: T, d: f64, eta: f64, lo: T, hi: T) -> T {
    let y = x.as_f64() + eta * d;
    if y.is_nan() {
        // An infinite eta (beyond f64) times a zero delta: the element does not move.
        return x;
    }
    T::of_f64(y.max(lo.as_f64()).min(hi.as_f64()))
}

/// `y = clip(x + eta * delta, lower, upper)` for a row whose `eta = m * 2^k` lies outside
/// the range [`apply_row`] handles ([`needs_wide_apply`]): computed in `f64` with `delta`
/// scaled by `2^k` (exact for the deltas that made eta so large or small). A rare path
/// (subnormal or near-overflow deltas), so one plain loop.
pub(crate) fn apply_row_wide<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    (m, k): (f64, i32),
    out: &mut [T],
) {
    let (a1, a2) = pow2_steps(k);
    for (i, o) in out.iter_mut().enumerate().take(row.len()) {
        let d = row.d[i].as_f64() * a1 * a2;
        *o = clip_wide(row.x[i], d, m, row.lo.at(i), row.hi.at(i));
    }
}

/// [`apply_row_wide`] for a row whose `delta` is `y` itself (the noise path).
pub(crate) fn apply_row_in_place_wide<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    x: &[T],
    lo: L,
    hi: H,
    (m, k): (f64, i32),
    y: &mut [T],
) {
    let (a1, a2) = pow2_steps(k);
    for (i, (v, &xi)) in y.iter_mut().zip(x).enumerate() {
        *v = clip_wide(xi, v.as_f64() * a1 * a2, m, lo.at(i), hi.at(i));
    }
}

/// `y = clip(x + eta * y, lower, upper)` over one stretch of a row, in place (the same
/// arithmetic as [`apply_chunk`], so the results agree bitwise).
#[inline(always)]
fn apply_chunk_in_place<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    x: &[T],
    lo: L,
    hi: H,
    eta: T,
    y: &mut [T],
) {
    let x = &x[..y.len()];
    for base in (0..y.len()).step_by(LANES) {
        prefetch_ahead(x, base);
        prefetch_ahead(y, base);
        for side in [lo.values(), hi.values()].into_iter().flatten() {
            prefetch_ahead(side, base);
        }
        for i in base..(base + LANES).min(y.len()) {
            let v = x[i] + eta * y[i];
            y[i] = v.max(lo.at(i)).min(hi.at(i));
        }
    }
}

/// `y = clip(x + eta * y, lower, upper)` for one row whose `delta` is `y` itself (the noise
/// path, which draws `delta` into the output).
pub(crate) fn apply_row_in_place<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    x: &[T],
    lo: L,
    hi: H,
    eta: T,
    y: &mut [T],
    par: bool,
) {
    let body = |start: usize, y: &mut [T]| {
        let len = y.len();
        let (lo, hi) = (lo.sub(start, len), hi.sub(start, len));
        apply_chunk_in_place_best(&x[start..start + len], lo, hi, eta, y);
    };
    for_blocks(y, par, body);
}

multiversion!(apply_chunk_best, apply_chunk_avx2, apply_chunk,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>; const DIFF: bool>,
    (row: &Row<'_, T, L, H>, eta: T, out: &mut [T]) -> ());
multiversion!(apply_chunk_in_place_best, apply_chunk_in_place_avx2, apply_chunk_in_place,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>>,
    (x: &[T], lo: L, hi: H, eta: T, y: &mut [T]) -> ());
