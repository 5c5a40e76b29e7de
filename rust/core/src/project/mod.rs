//! Exact Euclidean projection of `z` onto `{y : ||y - x||_p <= eps} ∩ [lower, upper]`.
//!
//! With a multiplier `lam` for the ball, the problem splits per coordinate into a 1-D convex
//! problem on an interval, whose minimum is its unconstrained minimiser, clipped. With
//! `d = z - x`:
//!
//! - `p = inf` ([`inf`]): `y = clip(z, max(lower, x - eps), min(upper, x + eps))`, one pass;
//! - `p = 2` ([`l2`]): `y = clip(x + t d)` with `t = min(1, eta)`, `eta` the clipping-aware
//!   scale of `d` for size `eps`: the solver of `perturb`, whose first pass and apply form
//!   `d` in registers (no `d` row is written unless a row needs more passes);
//! - `p = 1` ([`l1`]): `y_i = clip(z_i - sign(d_i) lam)` where `|d_i| > lam`, else `x_i`;
//!   `lam` is the root of the piecewise-linear, non-increasing `h(lam) = sum_i
//!   min(max(|d_i| - lam, 0), s_i) = eps` (`s_i` the room towards `sign(d_i)`), or 0 when
//!   `clip(z)` is inside.
//!
//! The rows run through the core's [`visit`] (the sides of the box monomorphised) and its
//! parallelism policy ([`Plan`]): groups of rows, fixed by the batch's shape, run in
//! parallel, in order within a group (a row's `p = 1` and `p = 2` searches start from the
//! previous row's answer); long rows run their passes in parallel blocks whose partial
//! sums are added in block order. Results are therefore bitwise identical for any thread
//! count.

use crate::batch::{streams_output, Batch, Eps};
use crate::bounds::{Bound, SideAccess};
use crate::error::CoreError;
use crate::kernel::BLOCK;
use crate::norm::{Norm, Power};
use crate::par::{hint_group_rows, map_items, Plan};
use crate::real::Real;
use crate::solve::Hints;
use crate::visit::{visit, RowJob, Sides};
use std::sync::atomic::{AtomicUsize, Ordering};

mod inf;
mod l1;
mod l2;
mod vjp;

pub use vjp::{project_vjp, project_vjp_given};

/// `rows` pairs `(x, z)` of vectors of length `n`, row-major and contiguous.
#[derive(Clone, Copy, Debug)]
pub struct ProjectBatch<'a, T> {
    pub x: &'a [T],
    pub z: &'a [T],
    pub rows: usize,
    pub n: usize,
    pub lower: Bound<'a, T>,
    pub upper: Bound<'a, T>,
    pub eps: Eps<'a>,
    pub norm: ProjectNorm,
}

impl<'a, T: Copy> ProjectBatch<'a, T> {
    /// The projection of the rows of `b`, with `z` in the place of `b.delta` (the bindings
    /// describe both calls with one [`Batch`]).
    ///
    /// ```
    /// use clipresc_core::{Batch, Bound, Eps, Norm, ProjectBatch, ProjectNorm};
    /// let (x, z) = ([0.5f64, 0.5], [0.9f64, 0.1]);
    /// let b = Batch { x: &x, delta: &z, rows: 1, n: 2, lower: Bound::Scalar(0.0),
    ///     upper: Bound::Scalar(1.0), eps: Eps::Scalar(0.3), norm: Norm::P(2.0) };
    /// let pb = ProjectBatch::of_batch(&b, ProjectNorm::L2);
    /// assert_eq!((pb.z, pb.rows, pb.norm), (&z[..], 1, ProjectNorm::L2));
    /// ```
    pub fn of_batch(b: &Batch<'a, T>, norm: ProjectNorm) -> Self {
        ProjectBatch {
            x: b.x,
            z: b.delta,
            rows: b.rows,
            n: b.n,
            lower: b.lower,
            upper: b.upper,
            eps: b.eps,
            norm,
        }
    }
}

/// The norms with an exact, linear-time projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectNorm {
    L1,
    L2,
    Inf,
}

impl ProjectNorm {
    /// The norm for `p`, if it is 1, 2 or infinity.
    ///
    /// ```
    /// use clipresc_core::ProjectNorm;
    /// assert_eq!(ProjectNorm::new(f64::INFINITY), Some(ProjectNorm::Inf));
    /// assert_eq!(ProjectNorm::new(3.0), None);
    /// ```
    pub fn new(p: f64) -> Option<ProjectNorm> {
        if p == 1.0 {
            Some(ProjectNorm::L1)
        } else if p == 2.0 {
            Some(ProjectNorm::L2)
        } else if p == f64::INFINITY {
            Some(ProjectNorm::Inf)
        } else {
            None
        }
    }

    /// The norm, for [`visit`].
    fn norm(self) -> Norm {
        match self {
            ProjectNorm::L1 => Norm::P(1.0),
            ProjectNorm::L2 => Norm::P(2.0),
            ProjectNorm::Inf => Norm::Inf,
        }
    }
}

/// Where the cotangents of [`project_vjp`] go (bounds get none).
#[derive(Debug)]
pub struct ProjectGrads<'a, T> {
    pub x: &'a mut [T],
    pub z: &'a mut [T],
    /// One value per row (the caller sums them for a scalar `eps`).
    pub eps: &'a mut [f64],
}

impl<T: Real> ProjectBatch<'_, T> {
    fn check(&self, outs: &[(&'static str, usize)]) -> Result<ProjectNorm, CoreError> {
        let kind = self.norm;
        let total = self.rows * self.n;
        for (arg, got) in [("x", self.x.len()), ("z", self.z.len())]
            .into_iter()
            .chain(outs.iter().copied())
        {
            if got != total {
                return Err(CoreError::Length {
                    arg,
                    expected: total,
                    got,
                });
            }
        }
        for (arg, b) in [("lower", &self.lower), ("upper", &self.upper)] {
            let expected = match b {
                Bound::Scalar(_) => continue,
                Bound::Shared(s) => (s.len(), self.n),
                Bound::Full(s) => (s.len(), total),
            };
            if expected.0 != expected.1 {
                return Err(CoreError::Length {
                    arg,
                    expected: expected.1,
                    got: expected.0,
                });
            }
        }
        self.eps.check(self.rows)?;
        Ok(kind)
    }

    /// Count and first flat index of the invalid elements (error path only): non-finite `x`,
    /// then non-finite `z`, then `x` outside its bounds.
    fn diagnose(&self) -> CoreError {
        let mut found = [(0usize, usize::MAX); 3];
        for r in 0..self.rows {
            for j in 0..self.n {
                let i = r * self.n + j;
                let (lo, hi) = (
                    bound_at(&self.lower, r, j, self.n),
                    bound_at(&self.upper, r, j, self.n),
                );
                let (x, z) = (self.x[i], self.z[i]);
                let k = if !x.is_finite() {
                    Some(0)
                } else if !z.is_finite() {
                    Some(1)
                } else if !(x >= lo && x <= hi) {
                    Some(2)
                } else {
                    None
                };
                if let Some(k) = k {
                    found[k].0 += 1;
                    found[k].1 = found[k].1.min(i);
                }
            }
        }
        CoreError::from_found(found, "z")
    }
}

fn bound_at<T: Real>(b: &Bound<'_, T>, r: usize, j: usize, n: usize) -> T {
    match *b {
        Bound::Scalar(v) => v,
        Bound::Shared(s) => s[j],
        Bound::Full(s) => s[r * n + j],
    }
}

/// One row: its inputs, its sides of the box and its size.
#[derive(Clone, Copy)]
pub(super) struct Row<'a, T, L, H> {
    pub x: &'a [T],
    pub z: &'a [T],
    pub lo: L,
    pub hi: H,
    pub eps: f64,
}

impl<'a, T: Real, L: SideAccess<T>, H: SideAccess<T>> Row<'a, T, L, H> {
    /// The elements `start..end` of the row.
    pub(super) fn sub(&self, start: usize, end: usize) -> Self {
        Row {
            x: &self.x[start..end],
            z: &self.z[start..end],
            lo: self.lo.sub(start, end - start),
            hi: self.hi.sub(start, end - start),
            eps: self.eps,
        }
    }
}

/// Whether `x_i`, `z_i` are finite and `x_i` inside its bounds (branch-free).
#[inline(always)]
pub(super) fn is_bad<T: Real>(x: T, z: T, lo: T, hi: T) -> bool {
    let inf = T::infinity();
    !((x.abs() < inf) & (z.abs() < inf) & (x >= lo) & (x <= hi))
}

/// Whether the row holds an invalid element (a plain loop: only on the rare paths).
pub(super) fn row_bad<T: Real, L: SideAccess<T>, H: SideAccess<T>>(row: &Row<'_, T, L, H>) -> bool {
    (0..row.x.len()).any(|i| is_bad(row.x[i], row.z[i], row.lo.at(i), row.hi.at(i)))
}

/// `v` clamped to `[lo, hi]` with selects (the lane loops vectorise it); inputs are valid.
#[inline(always)]
pub(super) fn clamp<F: PartialOrd + Copy>(v: F, lo: F, hi: F) -> F {
    let v = if v < lo { lo } else { v };
    if v > hi {
        hi
    } else {
        v
    }
}

/// `body(start, stretch)` over the consecutive [`BLOCK`]-element stretches of `y`, on the
/// pool when `par`; the results combined with `add` in stretch order. A row of one block
/// runs `body` directly (no allocation).
pub(super) fn fold_stretches<T, R, F, A>(y: &mut [T], par: bool, body: F, add: A) -> R
where
    T: Send,
    R: Send,
    F: Fn(usize, &mut [T]) -> R + Sync + Send,
    A: Fn(R, R) -> R,
{
    if y.len() <= BLOCK {
        return body(0, y);
    }
    let items: Vec<(usize, &mut [T])> = y.chunks_mut(BLOCK).enumerate().collect();
    let parts = map_items(par, items, |(bi, c)| body(bi * BLOCK, c));
    let mut it = parts.into_iter();
    let first = it.next().expect("a row longer than a block has blocks");
    it.fold(first, add)
}

/// `y = clip(z)`: the projection when `clip(z)` is already inside the ball.
pub(super) fn clip_z<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    par: bool,
) {
    fold_stretches(
        y,
        par,
        |start, y| clip_z_best(&row.sub(start, start + y.len()), y),
        |_, _| (),
    );
}

#[inline(always)]
fn clip_z_chunk<T: Real, L: SideAccess<T>, H: SideAccess<T>>(row: &Row<'_, T, L, H>, y: &mut [T]) {
    let z = &row.z[..y.len()];
    for i in 0..y.len() {
        y[i] = clamp(z[i], row.lo.at(i), row.hi.at(i));
    }
}

multiversion!(clip_z_best, clip_z_avx2, clip_z_chunk,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, y: &mut [T]) -> ());

/// What one worker carries from row to row of its group: the previous rows' answers, as
/// starting points, and reusable scratch; and whether the batch's outputs are too large
/// to stay in cache (the `p = 2` apply then writes with non-temporal stores, as
/// `perturb`'s does).
#[derive(Default)]
pub(super) struct RowState {
    pub l1: l1::State,
    pub l2: Hints,
    pub stream: bool,
}

/// Rows per group (see [`RowState`] and [`hint_group_rows`]): groups that leave at least 64
/// of short rows to share among threads, or 16 of rows long enough for `p = 1` to estimate
/// `lam` on a subsample (each a large task; that estimate misses the first bracket about
/// half the time, the previous row's answer rarely).
fn group_rows(rows: usize, n: usize) -> usize {
    let groups = if n >= l1::SUBSAMPLE_MIN { 16 } else { 64 };
    hint_group_rows(rows, n, groups)
}

/// The forward projection of one row into `y`; returns the multiplier (`t` for `p = 2`,
/// `lam` for `p = 1`, 0 for `p = inf`), or `None` when the row holds invalid values.
pub(super) fn forward_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    kind: ProjectNorm,
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    st: &mut RowState,
    par: bool,
) -> Option<f64> {
    match kind {
        ProjectNorm::Inf => inf::project_row(row, y, par).then_some(0.0),
        ProjectNorm::L2 => {
            ROW_SEARCHES.fetch_add(1, Ordering::Relaxed);
            l2::project_row(row, y, &mut st.l2, par, st.stream)
        }
        ProjectNorm::L1 => {
            ROW_SEARCHES.fetch_add(1, Ordering::Relaxed);
            l1::project_row(row, y, &mut st.l1, par)
        }
    }
}

/// Rows whose multiplier was searched for (`p = 1`, `p = 2`), over the process's life.
static ROW_SEARCHES: AtomicUsize = AtomicUsize::new(0);

/// How many rows have had their multiplier searched for so far (`p = 1` and `p = 2`
/// forwards, and the VJPs that solve again): lets tests check that [`project_vjp_given`]
/// searches nothing.
#[doc(hidden)]
pub fn project_row_searches() -> usize {
    ROW_SEARCHES.load(Ordering::Relaxed)
}

/// What the VJP needs of one row's forward given its multiplier `mult` (as
/// [`forward_row`] returned it): the row validated and, where the VJP reads the
/// projection (`p = 2` with `0 <= t < 1`, `p = inf`), `y` written bitwise as the forward
/// wrote it. Returns the multiplier, or `None` when the row holds invalid values.
pub(super) fn replay_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    kind: ProjectNorm,
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    mult: f64,
    st: &mut RowState,
    par: bool,
) -> Option<f64> {
    match kind {
        // one pass, nothing to search
        ProjectNorm::Inf => forward_row(kind, row, y, st, par),
        // the p = 1 VJP reads only `lam`
        ProjectNorm::L1 => (!row_bad(row)).then_some(mult),
        ProjectNorm::L2 => match l2::replay_row(row, y, mult, par) {
            l2::Replay::Done(t) => t,
            l2::Replay::Solve => forward_row(kind, row, y, st, par),
        },
    }
}

/// What one row computes, writing into its slices `a` and `b` (`b` may be empty) and its
/// per-row value `m`; returns `false` when the row holds invalid values.
pub(super) trait RowWork<T: Real>: Sync {
    #[allow(clippy::too_many_arguments)]
    fn row<L: SideAccess<T>, H: SideAccess<T>>(
        &self,
        row: &Row<'_, T, L, H>,
        r: usize,
        a: &mut [T],
        b: &mut [T],
        m: &mut f64,
        st: &mut RowState,
        par: bool,
    ) -> bool;
}

/// Every row of a batch through a [`RowWork`], for [`visit`]; `a` and `m` are required,
/// `b` optional (`rows * n`, `rows * n`, `rows` values). Its output: whether any row held
/// invalid values.
struct ProjectJob<'j, 'a, T, W> {
    pb: &'j ProjectBatch<'a, T>,
    work: &'j W,
    a: &'j mut [T],
    b: Option<&'j mut [T]>,
    m: &'j mut [f64],
}

/// One group's work item: its index and its slices of `a`, `b` and `m`.
type Group<'s, T> = (usize, (&'s mut [T], (Option<&'s mut [T]>, &'s mut [f64])));

impl<T: Real, W: RowWork<T>> RowJob<T> for ProjectJob<'_, '_, T, W> {
    type Out = bool;

    fn run<P: Power, L: Sides<T>, H: Sides<T>>(self, _pw: Option<P>, lo: L, hi: H) -> bool {
        let (pb, work, n) = (self.pb, self.work, self.pb.n);
        if pb.rows == 0 {
            return false;
        }
        if n == 0 {
            self.m.fill(0.0);
            return false;
        }
        let plan = Plan::new(pb.rows, n);
        let stream = streams_output(pb.x, &pb.lower, &pb.upper);
        let g = group_rows(pb.rows, n);
        let groups = pb.rows.div_ceil(g);
        let b_parts: Vec<Option<&mut [T]>> = match self.b {
            Some(b) => b.chunks_mut(g * n).map(Some).collect(),
            None => (0..groups).map(|_| None).collect(),
        };
        let items: Vec<Group<'_, T>> = self
            .a
            .chunks_mut(g * n)
            .zip(b_parts.into_iter().zip(self.m.chunks_mut(g)))
            .enumerate()
            .collect();
        let run_group = |(gi, (a, (mut b, m))): Group<'_, T>| -> bool {
            let mut st = RowState {
                stream,
                ..RowState::default()
            };
            let mut ok = true;
            for (k, (ar, mr)) in a.chunks_mut(n).zip(m.iter_mut()).enumerate() {
                let r = gi * g + k;
                let row = Row {
                    x: &pb.x[r * n..(r + 1) * n],
                    z: &pb.z[r * n..(r + 1) * n],
                    lo: lo.row(r),
                    hi: hi.row(r),
                    eps: pb.eps.get(r),
                };
                let br: &mut [T] = match b.as_deref_mut() {
                    Some(b) => &mut b[k * n..(k + 1) * n],
                    None => &mut [],
                };
                ok &= work.row(&row, r, ar, br, mr, &mut st, plan.inner);
            }
            ok
        };
        !map_items(plan.rows, items, run_group)
            .into_iter()
            .all(|ok| ok)
    }
}

/// Runs `work` over every row of `pb`; a row with invalid values makes the whole call fail
/// with the diagnosis of every invalid element.
pub(super) fn run_rows<T: Real, W: RowWork<T>>(
    pb: &ProjectBatch<'_, T>,
    work: &W,
    a: &mut [T],
    b: Option<&mut [T]>,
    m: &mut [f64],
) -> Result<(), CoreError> {
    let job = ProjectJob { pb, work, a, b, m };
    if visit(pb.norm.norm(), pb.lower, pb.upper, pb.n, job) {
        return Err(pb.diagnose());
    }
    Ok(())
}

struct Forward {
    kind: ProjectNorm,
}

impl<T: Real> RowWork<T> for Forward {
    fn row<L: SideAccess<T>, H: SideAccess<T>>(
        &self,
        row: &Row<'_, T, L, H>,
        _r: usize,
        y: &mut [T],
        _b: &mut [T],
        m: &mut f64,
        st: &mut RowState,
        par: bool,
    ) -> bool {
        match forward_row(self.kind, row, y, st, par) {
            Some(v) => {
                *m = v;
                true
            }
            None => false,
        }
    }
}

/// Writes the projection of every row of `z` into `y_out` (`rows * n` values).
///
/// ```
/// use clipresc_core::{project, ProjectBatch, ProjectNorm, Bound, Eps};
/// let (x, z) = ([0.5f64, 0.9], [2.0f64, 0.9]);
/// let b = ProjectBatch { x: &x, z: &z, rows: 1, n: 2, lower: Bound::Scalar(0.0),
///     upper: Bound::Scalar(1.0), eps: Eps::Scalar(0.25), norm: ProjectNorm::L1 };
/// let mut y = [0.0f64; 2];
/// project(&b, &mut y).unwrap();
/// assert_eq!(y, [0.75, 0.9]);
/// ```
pub fn project<T: Real>(batch: &ProjectBatch<'_, T>, y_out: &mut [T]) -> Result<(), CoreError> {
    let mut mult = vec![0.0f64; batch.rows];
    project_with_multipliers(batch, y_out, &mut mult)
}

/// [`project`], also writing each row's multiplier into `mult_out` (`rows` values): `t`
/// for `p = 2` (1 when `clip(z)` is inside the ball), `lam` for `p = 1` (0 when `clip(z)`
/// is inside, infinity at `eps = 0`), 0 for `p = inf`. [`project_vjp_given`] takes them,
/// so that the VJP does not solve again.
///
/// ```
/// use clipresc_core::{project_with_multipliers, ProjectBatch, ProjectNorm, Bound, Eps};
/// let (x, z) = ([0.5f64, 0.9], [2.0f64, 0.9]);
/// let b = ProjectBatch { x: &x, z: &z, rows: 1, n: 2, lower: Bound::Scalar(0.0),
///     upper: Bound::Scalar(1.0), eps: Eps::Scalar(0.25), norm: ProjectNorm::L1 };
/// let (mut y, mut lam) = ([0.0f64; 2], [0.0f64]);
/// project_with_multipliers(&b, &mut y, &mut lam).unwrap();
/// assert_eq!((y, lam), ([0.75, 0.9], [1.25]));
/// ```
pub fn project_with_multipliers<T: Real>(
    batch: &ProjectBatch<'_, T>,
    y_out: &mut [T],
    mult_out: &mut [f64],
) -> Result<(), CoreError> {
    let kind = batch.check(&[("out", y_out.len())])?;
    if mult_out.len() != batch.rows {
        return Err(CoreError::Length {
            arg: "mult_out",
            expected: batch.rows,
            got: mult_out.len(),
        });
    }
    run_rows(batch, &Forward { kind }, y_out, None, mult_out)
}
