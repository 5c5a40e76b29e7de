//! `p = 2`: `y = clip(x + t d)` with `d = z - x` and `t = min(1, eta)`, `eta` the
//! clipping-aware scale of `d` for size `eps` (per coordinate, the minimiser of
//! `(y_i - z_i)^2 + lam (y_i - x_i)^2` on the box is `clip(x_i + d_i / (1 + lam))`; the
//! ball picks `t = 1 / (1 + lam)`).
//!
//! The row's `d` is written into its output row, the solver of `perturb`
//! ([`crate::solve::solve_row`], which also validates the row) reads it there, and the
//! apply overwrites it in place: the same passes as `perturb`, plus the one that forms `d`.

use super::{clip_z, fold_stretches, row_bad, Row};
use crate::bounds::SideAccess;
use crate::kernel::{apply_row_in_place, apply_row_in_place_wide, needs_wide_apply};
use crate::norm::P2;
use crate::real::Real;
use crate::solve::{solve_row, Hints, Options, RowOutcome};

/// Writes the projection of one row into `y`; returns `t` (1 when `clip(z)` is inside the
/// ball, 0 at `eps = 0` or `z = x`), or `None` when the row holds invalid values. `hints`
/// carries the previous row's answer (see [`Hints`]).
pub(super) fn project_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    hints: &mut Hints,
    par: bool,
) -> Option<f64> {
    let mut half = false;
    write_direction(row, y, half, par);
    let hint = hints.next(P2, row.eps);
    let mut out = solve(row, y, hint, par);
    if out.invalid {
        if row_bad(row) {
            return None;
        }
        // `z - x` overflowed: halve it, which leaves the direction, and so the projection,
        // unchanged (only `eta` doubles)
        half = true;
        write_direction(row, y, half, par);
        out = solve(row, y, 0.0, par);
    } else {
        hints.record(P2, row.eps, hint, &out);
    }
    // every movable element saturates below the target: clip(z) is inside the ball
    let t = if out.saturated {
        1.0
    } else if half {
        out.eta * 0.5
    } else {
        out.eta
    };
    if t >= 1.0 {
        clip_z(row, y, par);
        return Some(1.0);
    }
    if t == 0.0 {
        y.copy_from_slice(row.x);
        return Some(0.0);
    }
    if needs_wide_apply::<T>(out.eta) {
        let parts = out.eta_parts.unwrap_or((out.eta, 0));
        apply_row_in_place_wide(row.x, row.lo, row.hi, parts, y);
    } else {
        apply_row_in_place(row.x, row.lo, row.hi, T::of_f64(out.eta), y, par);
    }
    Some(t)
}

/// What [`replay_row`] did.
pub(super) enum Replay {
    /// The row is done: `None` when it holds invalid values, else `t`.
    Done(Option<f64>),
    /// The forward took a path the replay does not repeat (a halved direction, a split
    /// `eta`): solve again.
    Solve,
}

/// The VJP's view of one row's forward given its `t` (as [`project_row`] returned it):
/// validates the row and, when `0 <= t < 1` and `eps > 0` (where the VJP reads `y`),
/// writes `y` with the forward's own apply, so bitwise as the forward wrote it.
pub(super) fn replay_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    t: f64,
    par: bool,
) -> Replay {
    if row_bad(row) {
        return Replay::Done(None);
    }
    if t >= 1.0 || row.eps == 0.0 {
        return Replay::Done(Some(t));
    }
    if t == 0.0 {
        y.copy_from_slice(row.x);
        return Replay::Done(Some(0.0));
    }
    if t.is_nan() || t < 0.0 || needs_wide_apply::<T>(t) {
        return Replay::Solve;
    }
    write_direction(row, y, false, par);
    // the forward halves directions this large (its sums would overflow in f64)
    let limit = T::of_f64(1e140);
    if y.iter().any(|v| !v.is_finite() || v.abs() >= limit) {
        return Replay::Solve;
    }
    apply_row_in_place(row.x, row.lo, row.hi, T::of_f64(t), y, par);
    Replay::Done(Some(t))
}

/// The solver on the direction held in `y`.
fn solve<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &[T],
    hint: f64,
    par: bool,
) -> RowOutcome {
    let dir = crate::kernel::Row {
        x: row.x,
        d: y,
        lo: row.lo,
        hi: row.hi,
    };
    solve_row(&dir, row.eps, P2, &Options::default(), par, hint)
}

/// `y = z - x` (`z / 2 - x / 2` when `half`).
fn write_direction<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    half: bool,
    par: bool,
) {
    fold_stretches(
        y,
        par,
        |start, y| {
            let sub = row.sub(start, start + y.len());
            if half {
                halved_best(sub.x, sub.z, y);
            } else {
                difference_best(sub.x, sub.z, y);
            }
        },
        |_, _| (),
    );
}

#[inline(always)]
fn difference<T: Real>(x: &[T], z: &[T], y: &mut [T]) {
    let (x, z) = (&x[..y.len()], &z[..y.len()]);
    for i in 0..y.len() {
        y[i] = z[i] - x[i];
    }
}

#[inline(always)]
fn halved<T: Real>(x: &[T], z: &[T], y: &mut [T]) {
    let half = T::of_f64(0.5);
    let (x, z) = (&x[..y.len()], &z[..y.len()]);
    for i in 0..y.len() {
        y[i] = z[i] * half - x[i] * half;
    }
}

multiversion!(difference_best, difference_avx2, difference, <T: Real>,
    (x: &[T], z: &[T], y: &mut [T]) -> ());
multiversion!(halved_best, halved_avx2, halved, <T: Real>,
    (x: &[T], z: &[T], y: &mut [T]) -> ());
