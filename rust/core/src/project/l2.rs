//! `p = 2`: `y = clip(x + t d)` with `d = z - x` and `t = min(1, eta)`, `eta` the
//! clipping-aware scale of `d` for size `eps` (per coordinate, the minimiser of
//! `(y_i - z_i)^2 + lam (y_i - x_i)^2` on the box is `clip(x_i + d_i / (1 + lam))`; the
//! ball picks `t = 1 / (1 + lam)`).
//!
//! The solver of `perturb` runs on `d` without storing it: its first pass (the hand-written
//! kernels' `DIFF` form, [`row_pass_first_diff`]) forms `d = z - x` in registers, and where
//! that pass settles `t` (most rows: its bracket, from the previous row's answer or a
//! subsample, holds the answer), the apply forms `d` again in registers. Two passes over
//! `x` and `z`, no `d` row written. Where more passes are needed, or the CPU has no such
//! kernels, `d` is written into the output row and the solver goes on there (the rare
//! paths); the results are bitwise the same either way.

use super::{clip_z, fold_stretches, row_bad, Row};
use crate::bounds::SideAccess;
use crate::kernel::{
    apply_row_diff, apply_row_in_place, apply_row_in_place_wide, needs_wide_apply, room,
    row_pass_first_diff,
};
use crate::norm::P2;
use crate::real::Real;
use crate::solve::{
    after_first, bracket_at, first_guess, solve_row, AfterFirst, Hints, Options, RowOutcome,
    EXPECT_SATURATED,
};

/// Writes the projection of one row into `y`; returns `t` (1 when `clip(z)` is inside the
/// ball, 0 at `eps = 0` or `z = x`), or `None` when the row holds invalid values. `hints`
/// carries the previous row's answer (see [`Hints`]); `stream` asks for non-temporal
/// stores (outputs too large for the cache).
pub(super) fn project_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    hints: &mut Hints,
    par: bool,
    stream: bool,
) -> Option<f64> {
    let hint = hints.next(P2, row.eps);
    // `stored`: `d` (halved when `half`) is in `y`
    let (mut out, mut stored) = solve_fused(row, y, hint, par);
    let mut half = false;
    if out.invalid {
        out = solve_halved(row, y, par)?;
        (half, stored) = (true, true);
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
        if !stored {
            write_direction(row, y, false, par);
        }
        let parts = out.eta_parts.unwrap_or((out.eta, 0));
        apply_row_in_place_wide(row.x, row.lo, row.hi, parts, y);
    } else if stored {
        apply_row_in_place(row.x, row.lo, row.hi, T::of_f64(out.eta), y, par);
    } else {
        apply_row_diff(&with_z(row), T::of_f64(out.eta), y, par, stream);
    }
    Some(t)
}

/// The solver's outcome on `d = z - x`, and whether it wrote `d` into `y` on the way: the
/// first pass reads `x` and `z` (see the module's doc); only a row that needs more passes
/// has `d` written for them.
fn solve_fused<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    hint: f64,
    par: bool,
) -> (RowOutcome, bool) {
    let n = row.x.len();
    let element = |i: usize| {
        let d = row.z[i] - row.x[i];
        (d.abs(), room(row.x[i], d, row.lo.at(i), row.hi.at(i)))
    };
    // A row expected to saturate (the previous one did, or the subsample cannot reach its
    // share of `eps`): the projection has no saturating first pass, so it splits at zero
    // as a row without a guess does.
    let guess = match first_guess(n, row.eps, P2, hint, element) {
        g if g == EXPECT_SATURATED => 0.0,
        g => g,
    };
    let bracket = bracket_at::<T, _>(guess, P2);
    let Some(first) = row_pass_first_diff(&with_z(row), bracket, par) else {
        write_direction(row, y, false, par);
        return (solve(row, y, hint, par), true);
    };
    match after_first(first, row.eps, P2, bracket, n) {
        AfterFirst::Done(out) => {
            #[cfg(test)]
            tests::FUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (out, false)
        }
        AfterFirst::More(rest) => {
            write_direction(row, y, false, par);
            let out = rest.finish(&direction(row, y), P2, &Options::default(), par);
            (out, true)
        }
    }
}

/// The row for the kernels' `DIFF` forms: `z` in the place of `d`.
fn with_z<'a, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'a, T, L, H>,
) -> crate::kernel::Row<'a, T, L, H> {
    crate::kernel::Row {
        x: row.x,
        d: row.z,
        lo: row.lo,
        hi: row.hi,
    }
}

/// The row with its direction stored in `d`.
fn direction<'a, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'a, T, L, H>,
    d: &'a [T],
) -> crate::kernel::Row<'a, T, L, H> {
    crate::kernel::Row {
        x: row.x,
        d,
        lo: row.lo,
        hi: row.hi,
    }
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
    solve_row(
        &direction(row, y),
        row.eps,
        P2,
        &Options::default(),
        par,
        hint,
    )
}

/// The solver's outcome for a row whose first solve found it invalid: `None` when it holds
/// invalid values, else `z - x` overflowed, and the row is solved on the halved direction
/// `z / 2 - x / 2` written into `y` (which leaves the direction, and so the projection,
/// unchanged; only `eta` doubles).
fn solve_halved<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    par: bool,
) -> Option<RowOutcome> {
    if row_bad(row) {
        return None;
    }
    write_direction(row, y, true, par);
    Some(solve(row, y, 0.0, par))
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

#[cfg(test)]
mod tests {
    //! The fused row (no `d` row written where the first pass settles `t`) against the
    //! same solver run on `d` stored in the output row: bitwise the same `y` and `t`, on
    //! every path (hinted and unhinted short rows, subsampled long rows, rows longer than
    //! a block in parallel, saturated rows, `z = x`, `eps = 0`, deltas that need
    //! rescaling, `z - x` overflowing).
    use super::*;
    use crate::bounds::{ScalarSide, SliceSide};
    use crate::kernel::BLOCK;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Rows whose `t` the fused first pass settled (no `d` row written).
    pub(super) static FUSED: AtomicUsize = AtomicUsize::new(0);

    /// The row through the stored-`d` path only.
    fn project_row_stored<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
        row: &Row<'_, T, L, H>,
        y: &mut [T],
        hints: &mut Hints,
        par: bool,
    ) -> Option<f64> {
        let hint = hints.next(P2, row.eps);
        write_direction(row, y, false, par);
        let mut out = solve(row, y, hint, par);
        let mut half = false;
        if out.invalid {
            out = solve_halved(row, y, par)?;
            half = true;
        } else {
            hints.record(P2, row.eps, hint, &out);
        }
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

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Rows of `n` elements in [0, 1], `z` a step of size `scale` from `x`.
    fn rows<T: Real>(g: &mut Lcg, rows: usize, n: usize, scale: f64) -> (Vec<T>, Vec<T>) {
        let x: Vec<T> = (0..rows * n).map(|_| T::of_f64(g.next())).collect();
        let z = x
            .iter()
            .map(|&v| T::of_f64(v.as_f64() + scale * (g.next() + g.next() - 1.0)))
            .collect();
        (x, z)
    }

    fn bits<T: Real>(v: &[T]) -> Vec<u64> {
        v.iter().map(|a| a.as_f64().to_bits()).collect()
    }

    /// Both paths over `rows` rows in order (hints carried from row to row), for `eps(r)`.
    #[allow(clippy::too_many_arguments)]
    fn agree<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
        x: &[T],
        z: &[T],
        n: usize,
        lo: L,
        hi: H,
        eps: impl Fn(usize) -> f64,
        par: bool,
        what: &str,
    ) {
        let (mut h1, mut h2) = (Hints::default(), Hints::default());
        for r in 0..x.len() / n.max(1) {
            let row = Row {
                x: &x[r * n..(r + 1) * n],
                z: &z[r * n..(r + 1) * n],
                lo: lo.sub(r * n, n),
                hi: hi.sub(r * n, n),
                eps: eps(r),
            };
            let (mut y1, mut y2) = (vec![T::nan(); n], vec![T::nan(); n]);
            let t1 = project_row(&row, &mut y1, &mut h1, par, par);
            let t2 = project_row_stored(&row, &mut y2, &mut h2, par);
            assert_eq!(
                t1.map(f64::to_bits),
                t2.map(f64::to_bits),
                "{what} row {r}: t"
            );
            assert_eq!(bits(&y1), bits(&y2), "{what} row {r}: y");
        }
    }

    fn paths<T: Real>() {
        let mut g = Lcg(7);
        for (rows_n, n, scale) in [
            (20, 5, 0.3),
            (40, 3072, 0.05),
            (6, 9000, 0.05),
            (2, BLOCK + 1000, 0.05),
        ] {
            let (x, z) = rows::<T>(&mut g, rows_n, n, scale);
            let (lo_v, hi_v) = (vec![T::zero(); x.len()], vec![T::one(); x.len()]);
            let size = (n as f64).sqrt() * scale * 0.5;
            for (k, frac) in [0.0, 0.05, 0.3, 0.5, 0.9, 10.0].into_iter().enumerate() {
                // sizes that vary a little from row to row, so that hints miss now and then
                let eps = |r: usize| size * frac * (1.0 + 0.2 * ((r * 7 + k) % 5) as f64);
                for par in [false, true] {
                    let what = format!("{} n={n} frac={frac} par={par}", T::NAME);
                    let fused = FUSED.load(Ordering::Relaxed);
                    let (s0, s1) = (ScalarSide(T::zero()), ScalarSide(T::one()));
                    agree(&x, &z, n, s0, s1, eps, par, &format!("{what} scalar"));
                    let (v0, v1) = (SliceSide(&lo_v[..]), SliceSide(&hi_v[..]));
                    agree(&x, &z, n, v0, v1, eps, par, &format!("{what} slices"));
                    let open = ScalarSide(T::infinity());
                    agree(&x, &z, n, s0, open, eps, par, &format!("{what} one-sided"));
                    // most rows end after the fused first pass (the test would pass
                    // vacuously if none did)
                    if n >= 1000 && frac > 0.0 && frac < 0.5 {
                        let settled = FUSED.load(Ordering::Relaxed) - fused;
                        assert!(settled >= rows_n, "{what}: {settled} fused rows");
                    }
                }
            }
            // z = x: nothing moves
            agree(
                &x,
                &x,
                n,
                ScalarSide(T::zero()),
                ScalarSide(T::one()),
                |_| 0.5,
                false,
                "z = x",
            );
        }
    }

    #[test]
    fn fused_rows_match_the_stored_direction_f32() {
        paths::<f32>();
    }

    #[test]
    fn fused_rows_match_the_stored_direction_f64() {
        paths::<f64>();
    }

    /// Deltas whose squares leave the type's range (rescaled by the solver), and `z - x`
    /// overflowing (halved), in both paths.
    fn extremes<T: Real>() {
        let n = 40;
        let x: Vec<T> = (0..n).map(|i| T::of_f64(0.25 + 0.01 * i as f64)).collect();
        let tiny: Vec<T> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| v + T::of_f64(1e-30 * (1.0 + i as f64)))
            .collect();
        let lo = ScalarSide(T::zero());
        let hi = ScalarSide(T::one());
        agree(&x, &tiny, n, lo, hi, |_| 1e-30, false, "tiny deltas");
        let big = T::max_value();
        let xo: Vec<T> = (0..n)
            .map(|i| if i % 2 == 0 { -big } else { T::zero() })
            .collect();
        let zo: Vec<T> = (0..n)
            .map(|i| if i % 2 == 0 { big } else { T::one() })
            .collect();
        let (ninf, inf) = (ScalarSide(T::neg_infinity()), ScalarSide(T::infinity()));
        agree(
            &xo,
            &zo,
            n,
            ninf,
            inf,
            |_| big.as_f64(),
            false,
            "overflowing z - x",
        );
        agree(
            &xo,
            &zo,
            n,
            ninf,
            inf,
            |_| 1.0,
            false,
            "overflowing z - x, small eps",
        );
    }

    #[test]
    fn fused_rows_match_the_stored_direction_at_the_extremes() {
        extremes::<f32>();
        extremes::<f64>();
    }
}
