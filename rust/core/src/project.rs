//! Exact Euclidean projection of `z` onto `{y : ||y - x||_p <= eps} ∩ [lower, upper]`.
//!
//! With a multiplier `lam` for the ball, the problem splits per coordinate into a 1-D convex
//! problem on an interval, whose minimum is its unconstrained minimiser, clipped. With
//! `d = z - x`:
//!
//! - `p = inf`: `y = clip(z, max(lower, x - eps), min(upper, x + eps))`;
//! - `p = 2`: `y = clip(x + t d)` with `t = min(1, eta)`, `eta` the clipping-aware scale of
//!   `d` for size `eps` (one call of [`crate::scale`] on the row);
//! - `p = 1`: `y_i = clip(z_i - sign(d_i) lam)` where `|d_i| > lam`, else `x_i`; `lam` is
//!   the root of the piecewise-linear, non-increasing `h(lam) = sum_i min(max(|d_i| - lam,
//!   0), s_i) = eps` (`s_i` the room towards `sign(d_i)`), or 0 when `clip(z)` is inside.
//!   Breakpoint search (see [`solve_l1`]): Newton steps from the side of the bracket that
//!   moved last, each pass fixing the elements whose piece is known and keeping the others;
//!   a pass that does not halve the kept set is followed by one at the median breakpoint,
//!   so the work is `O(n)` in the worst case.
//!
//! Rows run in parallel; each row is computed sequentially in a fixed order, so results are
//! bitwise identical for any thread count.

// Explicit indices over several parallel slices are the shape the vectoriser needs.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use crate::batch::{scale, Batch, Eps};
use crate::bounds::{Bound, ScalarSide, SideAccess, SliceSide};
use crate::error::CoreError;
use crate::norm::Norm;
use crate::real::Real;
use crate::solve::Options;

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
        let eps: Vec<f64> = match self.eps {
            Eps::Scalar(e) => vec![e],
            Eps::PerRow(v) => {
                if v.len() != self.rows {
                    return Err(CoreError::Length {
                        arg: "eps",
                        expected: self.rows,
                        got: v.len(),
                    });
                }
                v.to_vec()
            }
        };
        for (what, bad) in [
            (
                "negative or NaN",
                &(|e: f64| e.is_nan() || e < 0.0) as &dyn Fn(f64) -> bool,
            ),
            ("infinite", &|e: f64| e.is_infinite()),
        ] {
            let hits: Vec<usize> = (0..eps.len()).filter(|&r| bad(eps[r])).collect();
            if let Some(&first) = hits.first() {
                return Err(CoreError::BadEps {
                    what,
                    count: hits.len(),
                    first,
                });
            }
        }
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
        match found {
            [(count, first), _, _] if count > 0 => CoreError::NonFinite {
                arg: "x",
                count,
                first,
            },
            [_, (count, first), _] if count > 0 => CoreError::NonFinite {
                arg: "z",
                count,
                first,
            },
            [_, _, (count, first)] => CoreError::OutOfBounds { count, first },
        }
    }
}

fn bound_at<T: Real>(b: &Bound<'_, T>, r: usize, j: usize, n: usize) -> T {
    match *b {
        Bound::Scalar(v) => v,
        Bound::Shared(s) => s[j],
        Bound::Full(s) => s[r * n + j],
    }
}

/// One row: its inputs and its sides of the box.
#[derive(Clone, Copy)]
struct Row<'a, T, L, H> {
    x: &'a [T],
    z: &'a [T],
    lo: L,
    hi: H,
    eps: f64,
}

/// Per-row scratch reused across the rows one worker handles.
#[derive(Default)]
struct Scratch {
    /// `(|d_i|, s_i)` of the elements still undecided (p = 1).
    pairs: Vec<(f64, f64)>,
    /// Breakpoints for the median step (p = 1).
    points: Vec<f64>,
    /// `d = z - x` (p = 2, VJP).
    d: Vec<f64>,
}

/// Whether `x_i`, `z_i` are finite and `x_i` inside its bounds (branch-free).
#[inline(always)]
fn is_bad<T: Real>(x: T, z: T, lo: T, hi: T) -> bool {
    let inf = T::infinity();
    !((x.abs() < inf) & (z.abs() < inf) & (x >= lo) & (x <= hi))
}

fn row_bad<T: Real, L: SideAccess<T>, H: SideAccess<T>>(row: &Row<'_, T, L, H>) -> bool {
    let mut bad = false;
    for i in 0..row.x.len() {
        bad |= is_bad(row.x[i], row.z[i], row.lo.at(i), row.hi.at(i));
    }
    bad
}

#[inline(always)]
fn clamp<T: Real>(v: T, lo: T, hi: T) -> T {
    // `v.max(lo).min(hi)` without the NaN-ignoring semantics mattering: inputs are valid
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// `p = inf`: the ball is a box, and the intersection of two boxes is a box.
fn project_inf<T: Real, L: SideAccess<T>, H: SideAccess<T>>(row: &Row<'_, T, L, H>, y: &mut [T]) {
    let e = T::of_f64(row.eps);
    for i in 0..y.len() {
        let x = row.x[i];
        let lo = row.lo.at(i).max(x - e);
        let hi = row.hi.at(i).min(x + e);
        y[i] = clamp(row.z[i], lo, hi);
    }
}

/// `p = 2`: returns `t` (1 when `clip(z)` is inside the ball) and writes `y`.
fn project_l2<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
) -> Result<f64, CoreError> {
    let n = y.len();
    if row.eps == 0.0 {
        y.copy_from_slice(row.x);
        return Ok(0.0);
    }
    // one pass: `d = z - x` into `y` (the solver reads it from there) and the squared size
    // of `clip(z) - x` in f64 (8 accumulators in a fixed order)
    let mut acc = [0.0f64; 8];
    let mut overflow = false;
    for i in 0..n {
        let (x, z) = (row.x[i], row.z[i]);
        let c = clamp(z, row.lo.at(i), row.hi.at(i)).as_f64() - x.as_f64();
        acc[i % 8] += c * c;
        y[i] = z - x;
        overflow |= y[i].is_infinite();
    }
    if acc.iter().sum::<f64>() <= row.eps * row.eps {
        for i in 0..n {
            y[i] = clamp(row.z[i], row.lo.at(i), row.hi.at(i));
        }
        return Ok(1.0);
    }
    // `z - x` overflowed: halve it, which leaves the direction, and so the projection,
    // unchanged (only `eta` doubles)
    let half = T::of_f64(0.5);
    if overflow {
        for i in 0..n {
            y[i] = row.z[i] * half - row.x[i] * half;
        }
    }
    let lower = side_bound(&row.lo);
    let upper = side_bound(&row.hi);
    let batch = Batch {
        x: row.x,
        delta: &*y,
        rows: 1,
        n,
        lower,
        upper,
        eps: Eps::Scalar(row.eps),
        norm: Norm::P(2.0),
    };
    let mut eta = [T::zero()];
    scale(&batch, &Options::default(), &mut eta)?;
    let eta = eta[0];
    for i in 0..n {
        y[i] = clamp(row.x[i] + eta * y[i], row.lo.at(i), row.hi.at(i));
    }
    let t = eta.as_f64();
    Ok(if overflow { t * 0.5 } else { t })
}

fn side_bound<'a, T: Real, S: SideAccess<T> + 'a>(s: &'a S) -> Bound<'a, T> {
    match (s.scalar(), s.values()) {
        (Some(v), _) => Bound::Scalar(v),
        (None, Some(v)) => Bound::Shared(v),
        (None, None) => unreachable!("a side is a scalar or a slice"),
    }
}

/// `p = 1` pass over the row: fills `pairs` with `(|d_i|, s_i)` for every element (an
/// element with `d_i = 0` is dropped by the first pass of [`solve_l1`]), and returns
/// `h(0) = sum min(|d_i|, s_i)` and the number of elements free at `lam = 0+`.
fn l1_gather<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pairs: &mut Vec<(f64, f64)>,
) -> (f64, usize) {
    let n = row.x.len();
    pairs.clear();
    pairs.resize(n, (0.0, 0.0));
    let mut acc = [0.0f64; 8];
    let mut free = 0usize;
    for i in 0..n {
        let x = row.x[i].as_f64();
        let d = row.z[i].as_f64() - x;
        let s = if d > 0.0 {
            row.hi.at(i).as_f64() - x
        } else {
            x - row.lo.at(i).as_f64()
        };
        let b = d.abs();
        acc[i % 8] += b.min(s);
        free += (b > 0.0 && b < s) as usize;
        pairs[i] = (b, s);
    }
    (acc.iter().sum(), free)
}

/// Passes of [`solve_l1`] after which the bracket is returned (a median pass at least
/// halves the breakpoints inside it, so 2 * 64 passes decide any row unless rounding
/// leaves an element undecided).
const MAX_L1_PASSES: usize = 400;

/// Newton passes of [`solve_l1`] that may fail to halve the undecided set before median
/// steps take over: the work is at most `(SLOW_NEWTON + 4) n`-ish in the worst case.
const SLOW_NEWTON: usize = 6;

/// The root `lam` of `h(lam) = eps` given `h(0) = h0 > eps > 0` (see the module docs).
fn solve_l1(
    pairs: &mut Vec<(f64, f64)>,
    points: &mut Vec<f64>,
    h0: f64,
    free0: usize,
    eps: f64,
    work: &mut usize,
) -> f64 {
    // h(lam) = sat + act - k lam + (sum over the undecided pairs) on the bracket [lo, hi]
    let (mut sat, mut act, mut k) = (0.0f64, 0.0f64, 0usize);
    let mut lo = 0.0f64;
    let mut hi = pairs.iter().fold(0.0f64, |m, p| m.max(p.0));
    let mut cand = if free0 > 0 {
        (h0 - eps) / free0 as f64
    } else {
        f64::NAN
    };
    let (mut median_next, mut slow) = (false, 0usize);
    for _ in 0..MAX_L1_PASSES {
        if pairs.is_empty() {
            if k == 0 {
                return lo;
            }
            return ((sat + act - eps) / k as f64).clamp(lo, hi);
        }
        if median_next || !(cand > lo && cand < hi) {
            points.clear();
            for &(b, s) in pairs.iter() {
                let a = b - s;
                if a > lo && a < hi {
                    points.push(a);
                }
                if b > lo && b < hi {
                    points.push(b);
                }
            }
            if points.is_empty() {
                // every undecided piece is linear on the bracket up to rounding: decide at
                // the midpoint
                cand = 0.5 * (lo + hi);
            } else {
                let mid = points.len() / 2;
                let (_, m, _) = points.select_nth_unstable_by(mid, f64::total_cmp);
                cand = *m;
            }
        }
        *work += pairs.len();
        // h and its one-sided slopes at `cand`
        // and the nearest breakpoints of the undecided elements on either side
        let mut acc = [0.0f64; 4];
        let (mut k_right, mut k_left) = (0usize, 0usize);
        let (mut next_up, mut next_down) = (f64::INFINITY, f64::NEG_INFINITY);
        for (j, &(b, s)) in pairs.iter().enumerate() {
            let v = b - cand;
            acc[j % 4] += v.max(0.0).min(s);
            k_right += (v > 0.0 && v <= s) as usize;
            k_left += (v >= 0.0 && v < s) as usize;
            let a = b - s;
            for bp in [a, b] {
                if bp > cand {
                    next_up = next_up.min(bp);
                } else if bp < cand {
                    next_down = next_down.max(bp);
                }
            }
        }
        let h = sat + act - k as f64 * cand + acc.iter().sum::<f64>();
        if h == eps {
            return cand;
        }
        let went_up = h > eps;
        if went_up {
            lo = cand;
        } else {
            hi = cand;
        }
        let before = pairs.len();
        // the slope at `cand`: fixed active elements plus the undecided ones moving there
        let slope = (k + if went_up { k_right } else { k_left }) as f64;
        // h is linear from `cand` to the nearest breakpoint on the side of the root: when
        // the Newton step stays inside that piece it lands on the root exactly
        if slope > 0.0 {
            let step = cand + (h - eps) / slope;
            let inside = if went_up {
                step <= next_up && step < hi
            } else {
                step >= next_down && step > lo
            };
            if inside {
                return step;
            }
        }
        pairs.retain(|&(b, s)| {
            if b <= lo {
                false
            } else if b - hi >= s {
                sat += s;
                false
            } else if b - lo <= s && b >= hi {
                act += b;
                k += 1;
                false
            } else {
                true
            }
        });
        // Newton passes that do not halve the undecided set are allowed SLOW_NEWTON times
        // (Newton from the left end is Michelot's method: it shrinks the set steadily but
        // not always by half); after that such a pass is followed by a median step
        let halved = 2 * pairs.len() <= before;
        if !halved && !median_next {
            slow += 1;
        }
        median_next = !median_next && !halved && slow > SLOW_NEWTON;
        // Newton from the end that just moved, along its inner slope
        cand = if slope > 0.0 {
            cand + (h - eps) / slope
        } else {
            f64::NAN
        };
    }
    // only rounding can keep elements undecided this long: the bracket is a few ulps wide
    0.5 * (lo + hi)
}

/// `p = 1`: returns `lam` and writes `y`.
fn project_l1<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    scratch: &mut Scratch,
) -> f64 {
    let n = y.len();
    if row.eps == 0.0 {
        y.copy_from_slice(row.x);
        return f64::INFINITY;
    }
    let (h0, free0) = l1_gather(row, &mut scratch.pairs);
    if h0 <= row.eps {
        for i in 0..n {
            y[i] = clamp(row.z[i], row.lo.at(i), row.hi.at(i));
        }
        return 0.0;
    }
    let lam = solve_l1(
        &mut scratch.pairs,
        &mut scratch.points,
        h0,
        free0,
        row.eps,
        &mut 0,
    );
    l1_apply(row, lam, y);
    lam
}

fn l1_apply<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    lam: f64,
    y: &mut [T],
) {
    for i in 0..y.len() {
        let (x, z) = (row.x[i].as_f64(), row.z[i].as_f64());
        let d = z - x;
        let v = if d > lam {
            z - lam
        } else if d < -lam {
            z + lam
        } else {
            x
        };
        y[i] = clamp(T::of_f64(v), row.lo.at(i), row.hi.at(i));
    }
}

/// Batches smaller than this run on the calling thread.
const PAR_MIN_ELEMENTS: usize = 1 << 15;

/// What one row computes, writing into its slices `a` and `b` (`b` may be empty) and its
/// per-row value `m`.
trait PerRow<T: Real>: Sync {
    fn row<L: SideAccess<T>, H: SideAccess<T>>(
        &self,
        row: &Row<'_, T, L, H>,
        r: usize,
        a: &mut [T],
        b: &mut [T],
        m: &mut f64,
        scratch: &mut Scratch,
    ) -> Result<(), CoreError>;
}

/// Runs `work` over every row with the sides of the box monomorphised; `a` and `m` are
/// required, `b` optional (`rows * n`, `rows * n`, `rows` values).
fn dispatch<T: Real, W: PerRow<T>>(
    pb: &ProjectBatch<'_, T>,
    work: &W,
    a: &mut [T],
    b: Option<&mut [T]>,
    m: &mut [f64],
) -> Result<(), CoreError> {
    let n = pb.n;
    match (pb.lower, pb.upper) {
        (Bound::Scalar(l), Bound::Scalar(h)) => {
            rows_with(pb, work, a, b, m, |_| ScalarSide(l), |_| ScalarSide(h))
        }
        (Bound::Scalar(l), hb) => rows_with(
            pb,
            work,
            a,
            b,
            m,
            |_| ScalarSide(l),
            |r| SliceSide(slice_of(&hb, r, n)),
        ),
        (lb, Bound::Scalar(h)) => rows_with(
            pb,
            work,
            a,
            b,
            m,
            |r| SliceSide(slice_of(&lb, r, n)),
            |_| ScalarSide(h),
        ),
        (lb, hb) => rows_with(
            pb,
            work,
            a,
            b,
            m,
            |r| SliceSide(slice_of(&lb, r, n)),
            |r| SliceSide(slice_of(&hb, r, n)),
        ),
    }
}

fn slice_of<'a, T: Real>(b: &Bound<'a, T>, r: usize, n: usize) -> &'a [T] {
    match *b {
        Bound::Scalar(_) => unreachable!("scalar bounds take the scalar path"),
        Bound::Shared(s) => s,
        Bound::Full(s) => &s[r * n..(r + 1) * n],
    }
}

/// One row's work item: its index, its output slices and its per-row value.
type Job<'s, T> = (usize, (&'s mut [T], (&'s mut [T], &'s mut f64)));

#[allow(clippy::too_many_arguments)]
fn rows_with<'a, T, W, L, H, FL, FH>(
    pb: &ProjectBatch<'a, T>,
    work: &W,
    a: &mut [T],
    b: Option<&mut [T]>,
    m: &mut [f64],
    lo_of: FL,
    hi_of: FH,
) -> Result<(), CoreError>
where
    T: Real,
    W: PerRow<T>,
    L: SideAccess<T>,
    H: SideAccess<T>,
    FL: Fn(usize) -> L + Sync,
    FH: Fn(usize) -> H + Sync,
{
    let n = pb.n;
    if pb.rows == 0 {
        return Ok(());
    }
    if n == 0 {
        m.fill(0.0);
        return Ok(());
    }
    let one = |r: usize,
               ar: &mut [T],
               br: &mut [T],
               mr: &mut f64,
               scratch: &mut Scratch|
     -> Result<bool, CoreError> {
        let row = Row {
            x: &pb.x[r * n..(r + 1) * n],
            z: &pb.z[r * n..(r + 1) * n],
            lo: lo_of(r),
            hi: hi_of(r),
            eps: pb.eps.get(r),
        };
        if row_bad(&row) {
            return Ok(true);
        }
        work.row(&row, r, ar, br, mr, scratch)?;
        Ok(false)
    };
    let b_rows: Vec<&mut [T]> = match b {
        Some(b) => b.chunks_mut(n).collect(),
        None => (0..pb.rows).map(|_| <&mut [T]>::default()).collect(),
    };
    let jobs: Vec<Job<'_, T>> = a
        .chunks_mut(n)
        .zip(b_rows.into_iter().zip(m.iter_mut()))
        .enumerate()
        .collect();
    let results: Vec<Result<bool, CoreError>> = if pb.rows > 1 && pb.x.len() >= PAR_MIN_ELEMENTS {
        jobs.into_par_iter()
            .map_init(Scratch::default, |s, (r, (ar, (br, mr)))| {
                one(r, ar, br, mr, s)
            })
            .collect()
    } else {
        let mut s = Scratch::default();
        jobs.into_iter()
            .map(|(r, (ar, (br, mr)))| one(r, ar, br, mr, &mut s))
            .collect()
    };
    let mut bad = false;
    for res in results {
        bad |= res?;
    }
    if bad {
        return Err(pb.diagnose());
    }
    Ok(())
}

struct Forward {
    kind: ProjectNorm,
}

impl<T: Real> PerRow<T> for Forward {
    fn row<L: SideAccess<T>, H: SideAccess<T>>(
        &self,
        row: &Row<'_, T, L, H>,
        _r: usize,
        y: &mut [T],
        _b: &mut [T],
        m: &mut f64,
        scratch: &mut Scratch,
    ) -> Result<(), CoreError> {
        *m = match self.kind {
            ProjectNorm::Inf => {
                project_inf(row, y);
                0.0
            }
            ProjectNorm::L2 => project_l2(row, y)?,
            ProjectNorm::L1 => project_l1(row, y, scratch),
        };
        Ok(())
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
    let kind = batch.check(&[("out", y_out.len())])?;
    let mut mult = vec![0.0f64; batch.rows];
    dispatch(batch, &Forward { kind }, y_out, None, &mut mult)
}

struct Backward<'g, T> {
    kind: ProjectNorm,
    ybar: &'g [T],
}

impl<T: Real> PerRow<T> for Backward<'_, T> {
    fn row<L: SideAccess<T>, H: SideAccess<T>>(
        &self,
        row: &Row<'_, T, L, H>,
        r: usize,
        gx: &mut [T],
        gz: &mut [T],
        geps: &mut f64,
        scratch: &mut Scratch,
    ) -> Result<(), CoreError> {
        *geps = self.grads(row, r, gx, gz, scratch)?;
        Ok(())
    }
}

/// Cotangents of one row; returns that of `eps`.
impl<T: Real> Backward<'_, T> {
    fn grads<L: SideAccess<T>, H: SideAccess<T>>(
        &self,
        row: &Row<'_, T, L, H>,
        r: usize,
        gx: &mut [T],
        gz: &mut [T],
        scratch: &mut Scratch,
    ) -> Result<f64, CoreError> {
        let n = gx.len();
        let g = &self.ybar[r * n..(r + 1) * n];
        let zero = T::zero();
        // the forward, into gz as a scratch for y
        let mult = match self.kind {
            ProjectNorm::Inf => 0.0,
            ProjectNorm::L2 => project_l2(row, gz)?,
            ProjectNorm::L1 => project_l1(row, gz, scratch),
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
                Ok(geps)
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
                Ok(0.0)
            }
            ProjectNorm::L2 => {
                let t = mult;
                let d = &mut scratch.d;
                d.clear();
                d.extend((0..n).map(|i| row.z[i].as_f64() - row.x[i].as_f64()));
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
                Ok(if t > 0.0 { c * row.eps / t } else { 0.0 })
            }
            ProjectNorm::L1 if mult == 0.0 => {
                for i in 0..n {
                    gx[i] = zero;
                    gz[i] = if y_inside(i, row.z[i]) { g[i] } else { zero };
                }
                Ok(0.0)
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
                Ok(q)
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
    dispatch(
        batch,
        &Backward { kind, ybar },
        grads.x,
        Some(grads.z),
        grads.eps,
    )
}

#[cfg(test)]
mod tests {
    use super::solve_l1;

    /// `h(lam)` directly, for checking roots.
    fn h(pairs: &[(f64, f64)], lam: f64) -> f64 {
        pairs.iter().map(|&(b, s)| (b - lam).max(0.0).min(s)).sum()
    }

    fn solve(pairs: &[(f64, f64)], eps: f64) -> (f64, usize) {
        let h0: f64 = pairs.iter().map(|&(b, s)| b.min(s)).sum();
        let free0 = pairs.iter().filter(|&&(b, s)| b > 0.0 && b < s).count();
        let (mut p, mut pts, mut work) = (pairs.to_vec(), Vec::new(), 0);
        let lam = solve_l1(&mut p, &mut pts, h0, free0, eps, &mut work);
        (lam, work)
    }

    /// The work (elements visited over all passes) stays linear on inputs built to slow
    /// Newton down: breakpoints spread over many orders of magnitude, every element
    /// saturated at `lam = 0`, and many equal breakpoints.
    #[test]
    fn work_is_linear_on_hard_inputs() {
        let n = 20_000;
        let cases: Vec<Vec<(f64, f64)>> = vec![
            (0..n)
                .map(|i| (1.0 / (1.0 + i as f64), f64::INFINITY))
                .collect(),
            (0..n)
                .map(|i| (1.5f64.powi((i % 1500) as i32 - 750), 1e300))
                .collect(),
            (0..n)
                .map(|i| (10.0 + i as f64 * 1e-3, 0.5 + (i % 7) as f64))
                .collect(),
            (0..n).map(|i| (1.0 + (i % 2) as f64, 1.0)).collect(),
            (0..n)
                .map(|i| {
                    (
                        2.0 + ((i * 7919) % n) as f64 / n as f64,
                        0.001 * (i % 13) as f64,
                    )
                })
                .collect(),
        ];
        for (c, pairs) in cases.iter().enumerate() {
            let total = h(pairs, 0.0);
            for frac in [1e-9, 1e-3, 0.1, 0.5, 0.9, 0.999] {
                let eps = frac * total;
                let (lam, work) = solve(pairs, eps);
                let got = h(pairs, lam);
                assert!(
                    (got - eps).abs() <= 1e-9 * total,
                    "case {c} frac {frac}: h(lam) = {got}, eps = {eps}"
                );
                assert!(
                    work <= 8 * n,
                    "case {c} frac {frac}: work {work} for n = {n}"
                );
            }
        }
    }
}
