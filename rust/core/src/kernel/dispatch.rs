//! Picks the hand-written AVX2 kernels of `crate::avx2` for a row when its element type
//! and the CPU allow (`None` / `false` otherwise: the generic lane loops run).

use super::{fold_chunks, FirstSums, Row};
use crate::avx2::{Chunk, Lanes, Side};
use crate::bounds::SideAccess;
use crate::real::Real;

/// [`row_pass_first`] with the AVX2 kernels of `E`, or `None` when the row's elements are
/// not `E` or the CPU lacks AVX2.
pub(super) fn avx2_first<E: Lanes, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    p2: bool,
    (eta_lo, eta_hi): (f64, f64),
    validate: bool,
    par: bool,
) -> Option<FirstSums> {
    let whole = avx2_chunk::<E, T, L, H>(row)?;
    let (lo, hi) = (E::of_f64(eta_lo), E::of_f64(eta_hi));
    let check_x = validate && !(whole.lo.finite_scalar() && whole.hi.finite_scalar());
    let split = lo != hi;
    let sides = (L::SLICE, H::SLICE);
    Some(fold_chunks(row, par, |r| {
        let c = avx2_chunk::<E, T, L, H>(r).expect("a sub-row keeps the kind of its row");
        // SAFETY: `avx2_chunk` returns `Some` only after `has_avx2` has checked at run time
        // that this CPU executes AVX2 and FMA, the kernels' only precondition.
        unsafe {
            // [P2, VALIDATE, CHECK_X, SPLIT]; CHECK_X only when validating
            match (p2, validate, check_x, split) {
                (true, true, false, false) => {
                    with_sides!(sides, E::first, [true, true, false, false], (c, lo, hi))
                }
                (true, true, false, true) => {
                    with_sides!(sides, E::first, [true, true, false, true], (c, lo, hi))
                }
                (true, true, true, false) => {
                    with_sides!(sides, E::first, [true, true, true, false], (c, lo, hi))
                }
                (true, true, true, true) => {
                    with_sides!(sides, E::first, [true, true, true, true], (c, lo, hi))
                }
                (true, false, _, false) => {
                    with_sides!(sides, E::first, [true, false, false, false], (c, lo, hi))
                }
                (true, false, _, true) => {
                    with_sides!(sides, E::first, [true, false, false, true], (c, lo, hi))
                }
                (false, true, false, false) => {
                    with_sides!(sides, E::first, [false, true, false, false], (c, lo, hi))
                }
                (false, true, false, true) => {
                    with_sides!(sides, E::first, [false, true, false, true], (c, lo, hi))
                }
                (false, true, true, false) => {
                    with_sides!(sides, E::first, [false, true, true, false], (c, lo, hi))
                }
                (false, true, true, true) => {
                    with_sides!(sides, E::first, [false, true, true, true], (c, lo, hi))
                }
                (false, false, _, false) => {
                    with_sides!(sides, E::first, [false, false, false, false], (c, lo, hi))
                }
                (false, false, _, true) => {
                    with_sides!(sides, E::first, [false, false, false, true], (c, lo, hi))
                }
            }
        }
    }))
}

/// Calls `f::<BEFORE.., LS, HS, AFTER..>(ARGS..)` for the run-time pair `sides = (LS, HS)`.
macro_rules! with_sides {
    ($sides:expr, $($f:ident)::+, [$($c:expr),*], ($($arg:expr),*)) => {
        with_sides!($sides, $($f)::+, [$($c),*], [], ($($arg),*))
    };
    ($sides:expr, $($f:ident)::+, [$($c:expr),*], [$($after:expr),*], ($($arg:expr),*)) => {
        match $sides {
            (false, false) => $($f)::+::<$($c,)* false, false $(, $after)*>($($arg),*),
            (false, true) => $($f)::+::<$($c,)* false, true $(, $after)*>($($arg),*),
            (true, false) => $($f)::+::<$($c,)* true, false $(, $after)*>($($arg),*),
            (true, true) => $($f)::+::<$($c,)* true, true $(, $after)*>($($arg),*),
        }
    };
}
use with_sides;

/// The row as `E` data on a CPU with AVX2 and FMA: the case the hand-written kernels of
/// `avx2` take.
#[inline(always)]
fn avx2_chunk<'r, E: Lanes, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &'r Row<'_, T, L, H>,
) -> Option<Chunk<'r, E>> {
    if !crate::simd::has_avx2() {
        return None;
    }
    let side = |scalar: Option<T>, values: Option<&'r [T]>| match (scalar, values) {
        (Some(v), _) => Some(Side::Scalar(E::of_f64(v.as_f64()))),
        (None, Some(s)) => E::of(s).map(Side::Slice),
        (None, None) => None,
    };
    Some(Chunk {
        x: E::of(row.x)?,
        d: E::of(row.d)?,
        lo: side(row.lo.scalar(), row.lo.values())?,
        hi: side(row.hi.scalar(), row.hi.values())?,
    })
}

/// [`apply_row`]'s body with the AVX2 kernel of `E`; `false` (nothing written) when the
/// row's elements are not `E` or the CPU lacks AVX2.
pub(super) fn avx2_apply<E: Lanes, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eta: T,
    out: &mut [T],
    stream: bool,
) -> bool {
    let (Some(c), Some(o)) = (avx2_chunk::<E, T, L, H>(row), E::of_mut(out)) else {
        return false;
    };
    let (sides, e) = ((L::SLICE, H::SLICE), E::of_f64(eta.as_f64()));
    // SAFETY: `avx2_chunk` returned `Some` only after `has_avx2` checked AVX2 and FMA.
    unsafe {
        if stream {
            with_sides!(sides, E::apply, [], [true], (c, e, o))
        } else {
            with_sides!(sides, E::apply, [], [false], (c, e, o))
        }
    }
    true
}
