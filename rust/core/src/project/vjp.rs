//! The closed-form VJP of the projection, row by row after the row's forward.

// Explicit indices over several parallel slices read like the formulas.
#![allow(clippy::needless_range_loop)]

use super::{
    forward_row, replay_row, run_rows, ProjectBatch, ProjectGrads, ProjectNorm, Row, RowState,
    RowWork,
};
use crate::bounds::SideAccess;
use crate::error::CoreError;
use crate::real::Real;

struct Backward<'g, T> {
    kind: ProjectNorm,
    ybar: &'g [T],
    /// The forward's multipliers, when the caller kept them.
    given: Option<&'g [f64]>,
}

impl<T: Real> RowWork<T> for Backward<'_, T> {
    fn row<L: SideAccess<T>, H: SideAccess<T>>(
        &self,
        row: &Row<'_, T, L, H>,
        r: usize,
        gx: &mut [T],
        gz: &mut [T],
        geps: &mut f64,
        st: &mut RowState,
        par: bool,
    ) -> bool {
        match self.grads(row, r, gx, gz, st, par) {
            Some(g) => {
                *geps = g;
                true
            }
            None => false,
        }
    }
}

impl<T: Real> Backward<'_, T> {
    /// Cotangents of one row; returns that of `eps` (`None`: the row holds invalid values).
    fn grads<L: SideAccess<T>, H: SideAccess<T>>(
        &self,
        row: &Row<'_, T, L, H>,
        r: usize,
        gx: &mut [T],
        gz: &mut [T],
        st: &mut RowState,
        par: bool,
    ) -> Option<f64> {
        let n = gx.len();
        let g = &self.ybar[r * n..(r + 1) * n];
        let zero = T::zero();
        // the forward (which validates the row), into gz as a scratch for y
        let mult = match self.given.map(|m| m[r]) {
            Some(m) if !m.is_nan() => replay_row(self.kind, row, gz, m, st, par)?,
            _ => forward_row(self.kind, row, gz, st, par)?,
        };
        let y_inside = |i: usize, y: T| y > row.lo.at(i) && y < row.hi.at(i);
        match self.kind {
            ProjectNorm::Inf => {
                let e = T::of_f64(row.eps);
                let mut geps = 0.0f64;
                for i in 0..n {
                    let (x, z) = (row.x[i], row.z[i]);
                    let (bl, bh) = (x - e, x + e);
                    let (lo, hi) = (row.lo.at(i), row.hi.at(i));
                    // ties count as the box, whose sides are constants
                    let (gxi, gzi) = if z > lo.max(bl) && z < hi.min(bh) {
                        (zero, g[i])
                    } else if z <= bl && bl > lo {
                        geps -= g[i].as_f64();
                        (g[i], zero)
                    } else if z >= bh && bh < hi {
                        geps += g[i].as_f64();
                        (g[i], zero)
                    } else {
                        (zero, zero)
                    };
                    gx[i] = gxi;
                    gz[i] = gzi;
                }
                Some(geps)
            }
            ProjectNorm::L2 if mult >= 1.0 || row.eps == 0.0 => {
                // y = clip(z), or y = x at eps = 0
                for i in 0..n {
                    let pass = if row.eps == 0.0 {
                        false
                    } else {
                        y_inside(i, row.z[i])
                    };
                    gx[i] = if row.eps == 0.0 { g[i] } else { zero };
                    gz[i] = if pass { g[i] } else { zero };
                }
                Some(0.0)
            }
            ProjectNorm::L2 => {
                let t = mult;
                let d: Vec<f64> = (0..n)
                    .map(|i| row.z[i].as_f64() - row.x[i].as_f64())
                    .collect();
                let (mut s, mut gd) = ([0.0f64; 4], [0.0f64; 4]);
                for i in 0..n {
                    if y_inside(i, gz[i]) {
                        s[i % 4] += d[i] * d[i];
                        gd[i % 4] += g[i].as_f64() * d[i];
                    }
                }
                let (s, gd): (f64, f64) = (s.iter().sum(), gd.iter().sum());
                let c = if s > 0.0 { gd / s } else { 0.0 };
                for i in 0..n {
                    let gi = g[i].as_f64();
                    if y_inside(i, gz[i]) {
                        gx[i] = T::of_f64((1.0 - t) * gi + c * t * d[i]);
                        gz[i] = T::of_f64(t * gi - c * t * d[i]);
                    } else {
                        let ci = gz[i].as_f64() - row.x[i].as_f64();
                        gx[i] = T::of_f64(if t > 0.0 { c * ci / t } else { 0.0 });
                        gz[i] = zero;
                    }
                }
                Some(if t > 0.0 { c * row.eps / t } else { 0.0 })
            }
            ProjectNorm::L1 if mult == 0.0 => {
                for i in 0..n {
                    gx[i] = zero;
                    gz[i] = if y_inside(i, row.z[i]) { g[i] } else { zero };
                }
                Some(0.0)
            }
            ProjectNorm::L1 => {
                let lam = if mult.is_infinite() {
                    // eps = 0: lam is the largest |d_i|
                    (0..n).fold(0.0f64, |m, i| {
                        m.max((row.z[i].as_f64() - row.x[i].as_f64()).abs())
                    })
                } else {
                    mult
                };
                let piece = |i: usize, strict: bool| -> (f64, f64, f64) {
                    let x = row.x[i].as_f64();
                    let d = row.z[i].as_f64() - x;
                    let s = if d > 0.0 {
                        row.hi.at(i).as_f64() - x
                    } else {
                        x - row.lo.at(i).as_f64()
                    };
                    let b = d.abs();
                    let moving = if strict { b > lam } else { b >= lam && b > 0.0 };
                    // 1: active, 2: saturated, 0: stays at x
                    let class = if !moving {
                        0.0
                    } else if b - lam < s {
                        1.0
                    } else {
                        2.0
                    };
                    (class, d.signum(), s)
                };
                let tally = |strict: bool| {
                    let (mut k, mut gs) = (0usize, 0.0f64);
                    for i in 0..n {
                        let (class, sign, _) = piece(i, strict);
                        if class == 1.0 {
                            k += 1;
                            gs += g[i].as_f64() * sign;
                        }
                    }
                    (k, gs)
                };
                // with no element strictly active (eps = 0, or lam on a breakpoint) take the
                // pieces just below lam: the derivative for increasing eps
                let (mut strict, (mut k, mut gs)) = (true, tally(true));
                if k == 0 {
                    strict = false;
                    (k, gs) = tally(false);
                }
                let q = if k > 0 { gs / k as f64 } else { 0.0 };
                for i in 0..n {
                    let (class, sign, _) = piece(i, strict);
                    let gi = g[i].as_f64();
                    let (a, b) = if class == 1.0 {
                        (sign * q, gi - sign * q)
                    } else if class == 2.0 {
                        (sign * q, 0.0)
                    } else {
                        (gi, 0.0)
                    };
                    gx[i] = T::of_f64(a);
                    gz[i] = T::of_f64(b);
                }
                Some(q)
            }
        }
    }
}

/// Cotangents of `y = project(batch)` for `ybar` (`rows * n` values), written into `grads`.
///
/// Conventions where the projection is not differentiable: an element on a side of the box
/// or of the `p = inf` ball counts as clipped (its side gets the cotangent: the box's sides
/// are constants, the ball's follow `x` and `eps`); at `eps = 0` and where `lam` (`p = 1`)
/// sits on a breakpoint, the pieces are those for increasing `eps`. Bounds get no gradient.
///
/// ```
/// use clipresc_core::{project_vjp, ProjectBatch, ProjectGrads, ProjectNorm, Bound, Eps};
/// let (x, z) = ([0.5f64, 0.9], [2.0f64, 0.9]);
/// let b = ProjectBatch { x: &x, z: &z, rows: 1, n: 2, lower: Bound::Scalar(0.0),
///     upper: Bound::Scalar(1.0), eps: Eps::Scalar(0.25), norm: ProjectNorm::L1 };
/// let (mut gx, mut gz, mut ge) = ([0.0f64; 2], [0.0f64; 2], [0.0f64]);
/// let grads = ProjectGrads { x: &mut gx, z: &mut gz, eps: &mut ge };
/// project_vjp(&b, &[1.0, 1.0], grads).unwrap();  // y[0] = x[0] + eps
/// assert_eq!((gx, gz, ge), ([1.0, 1.0], [0.0, 0.0], [1.0]));
/// ```
pub fn project_vjp<T: Real>(
    batch: &ProjectBatch<'_, T>,
    ybar: &[T],
    grads: ProjectGrads<'_, T>,
) -> Result<(), CoreError> {
    vjp_rows(batch, ybar, None, grads)
}

/// [`project_vjp`] given the forward's multipliers `mult` (`rows` values, as
/// [`crate::project_with_multipliers`] wrote them): no row is solved again (a NaN
/// multiplier, unknown, is). Bitwise the same cotangents as [`project_vjp`].
///
/// ```
/// use clipresc_core::{project_vjp_given, ProjectBatch, ProjectGrads, ProjectNorm, Bound, Eps};
/// let (x, z) = ([0.5f64, 0.9], [2.0f64, 0.9]);
/// let b = ProjectBatch { x: &x, z: &z, rows: 1, n: 2, lower: Bound::Scalar(0.0),
///     upper: Bound::Scalar(1.0), eps: Eps::Scalar(0.25), norm: ProjectNorm::L1 };
/// let (mut gx, mut gz, mut ge) = ([0.0f64; 2], [0.0f64; 2], [0.0f64]);
/// let grads = ProjectGrads { x: &mut gx, z: &mut gz, eps: &mut ge };
/// project_vjp_given(&b, &[1.0, 1.0], &[1.25], grads).unwrap();  // lam = 1.25
/// assert_eq!((gx, gz, ge), ([1.0, 1.0], [0.0, 0.0], [1.0]));
/// ```
pub fn project_vjp_given<T: Real>(
    batch: &ProjectBatch<'_, T>,
    ybar: &[T],
    mult: &[f64],
    grads: ProjectGrads<'_, T>,
) -> Result<(), CoreError> {
    if mult.len() != batch.rows {
        return Err(CoreError::Length {
            arg: "mult",
            expected: batch.rows,
            got: mult.len(),
        });
    }
    vjp_rows(batch, ybar, Some(mult), grads)
}

fn vjp_rows<T: Real>(
    batch: &ProjectBatch<'_, T>,
    ybar: &[T],
    given: Option<&[f64]>,
    grads: ProjectGrads<'_, T>,
) -> Result<(), CoreError> {
    let kind = batch.check(&[
        ("ybar", ybar.len()),
        ("x_grad", grads.x.len()),
        ("z_grad", grads.z.len()),
    ])?;
    if grads.eps.len() != batch.rows {
        return Err(CoreError::Length {
            arg: "eps_grad",
            expected: batch.rows,
            got: grads.eps.len(),
        });
    }
    run_rows(
        batch,
        &Backward { kind, ybar, given },
        grads.x,
        Some(grads.z),
        grads.eps,
    )
}
