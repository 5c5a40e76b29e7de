//! `p = inf`: the ball is a box, and the intersection of two boxes is a box, so
//! `y = clip(z, max(lower, x - eps), min(upper, x + eps))`, validated in the same pass.

use super::{clamp, fold_stretches, is_bad, Row};
use crate::bounds::SideAccess;
use crate::real::Real;

/// Writes the projection of one row into `y`; returns `false` when the row holds invalid
/// values (`y` is then meaningless).
pub(super) fn project_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    par: bool,
) -> bool {
    let e = T::of_f64(row.eps);
    let bad = fold_stretches(
        y,
        par,
        |start, y| stretch_best(&row.sub(start, start + y.len()), e, y),
        |a, b| a | b,
    );
    !bad
}

#[inline(always)]
fn stretch<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    e: T,
    y: &mut [T],
) -> bool {
    let (x, z) = (&row.x[..y.len()], &row.z[..y.len()]);
    let mut bad = false;
    for i in 0..y.len() {
        let (lo, hi) = (row.lo.at(i), row.hi.at(i));
        let (ball_lo, ball_hi) = (x[i] - e, x[i] + e);
        let lo2 = if ball_lo > lo { ball_lo } else { lo };
        let hi2 = if ball_hi < hi { ball_hi } else { hi };
        y[i] = clamp(z[i], lo2, hi2);
        bad |= is_bad(x[i], z[i], lo, hi);
    }
    bad
}

multiversion!(stretch_best, stretch_avx2, stretch,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, e: T, y: &mut [T]) -> bool);
