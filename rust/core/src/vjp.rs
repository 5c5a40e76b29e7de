//! Closed-form vector-Jacobian products of [`crate::scale`] and [`crate::perturb`].
//!
//! Implicit differentiation of `F = sum_U |eta d_i|^p + sum_S s_i^p - eps^p = 0`
//! (DESIGN.md section 3): with `U` the unsaturated and `S` the saturated movable elements,
//! `M = sum_U |d_i|^p` and `D = eta^(p-1) M`,
//!
//! ```text
//! d eta / d eps = eps^(p-1) / D                       (M^(-1/p) at eps = 0: finite)
//! d eta / d d_j = -eta |d_j|^(p-1) sign(d_j) / M      for j in U
//! d eta / d x_j = sign(d_j) s_j^(p-1) / D             for j in S
//! d eta / d u_j = -s_j^(p-1) / D   (j in S, d_j > 0);  d eta / d l_j = +s_j^(p-1) / D  (d_j < 0)
//! ```
//!
//! and for `y = clip(x + eta d, l, u)` with cotangent `ybar`, `etabar = sum_U ybar_j d_j`
//! flows through `eta` while each element passes `ybar_j` to `x_j` and `d_j` (times `eta`)
//! when it moves freely, or to the bound it sits on when saturated.
//!
//! Conventions at the non-differentiable points are those of the array-API backend
//! (`clipresc/backends/generic.py`):
//! - the saturated set is `S = {i : d_i != 0, s_i / |d_i| <= eta}` (ties saturated), so at a
//!   breakpoint the derivative is the one-sided one for increasing `eps`;
//! - `eps = 0`: `d eta / d eps = M^(-1/p)` and no other gradient through `eta`;
//! - every movable element saturated (`eps` unreachable, or exactly the largest size):
//!   `eta = s_k / |d_k|` follows the element `k` that saturates last (the first of the
//!   largest keys), so only `x_k`, `d_k` and `k`'s bound get gradient through `eta`;
//! - `p = inf`: `eta = eps / |d_k|` for the first largest `|d_k|` among the elements with
//!   `s_k >= eps` and `s_k > 0`; only `eps` and `d_k` get gradient. Unreachable: `k` is the
//!   first element with the largest room, then the largest `|d_k|`, and the rule above applies;
//! - `s_j = 0` with `p < 1` (where `s_j^(p-1)` is infinite) contributes 0;
//! - `d_j = 0`: no gradient through `eta`; for `perturb` the element moves freely
//!   (`dy_j/dx_j = 1`, `dy_j/dd_j = eta`).
//!
//! Everything is accumulated in `f64` (also for `f32` data) over blocks fixed by the row
//! length, combined in a fixed order; gradients of bounds shared by every row are summed over
//! the rows in row order. The results are bitwise identical for any thread count.
// Explicit lane indices are the shape the vectoriser needs.
#![allow(clippy::needless_range_loop)]

use crate::batch::{solve_stats, Batch, Summary};
use crate::bounds::{Bound, SideAccess};
use crate::error::CoreError;
use crate::kernel::{room, Row, BLOCK};
use crate::norm::{Power, P1};
use crate::par::{fold_range, map_items, map_range, Plan};
use crate::real::Real;
use crate::solve::Options;
use crate::visit::{visit, RowJob, Sides};

/// The incoming cotangent.
#[derive(Clone, Copy, Debug)]
pub enum Cotangent<'a, T> {
    /// `etabar`, one value per row: the VJP of [`crate::scale`].
    Eta(&'a [T]),
    /// `ybar`, `rows * n` values (row-major): the VJP of [`crate::perturb`].
    Y(&'a [T]),
}

/// Where the cotangents of the inputs go.
///
/// `lower` / `upper` must be `None` for scalar bounds; for array bounds they are either `None`
/// (not wanted) or hold as many values as the bound (`n` for [`Bound::Shared`], summed over
/// the rows; `rows * n` for [`Bound::Full`]).
#[derive(Debug)]
pub struct Grads<'a, T> {
    pub x: &'a mut [T],
    pub delta: &'a mut [T],
    /// One value per row (the caller sums them for a scalar `eps`).
    pub eps: &'a mut [f64],
    pub lower: Option<&'a mut [T]>,
    pub upper: Option<&'a mut [T]>,
}

/// Cotangents of `eta = scale(batch)` for `etabar` (one per row), written into `grads`.
///
/// `eta`, when given, must be the forward's scales for the same batch: the solve is then
/// skipped (and so is the validation of the values; the returned summary is empty).
///
/// ```
/// use clipresc_core::{scale_vjp, Batch, Bound, Eps, Grads, Norm, Options};
/// let (x, d) = ([0.5f64, 0.9], [1.0f64, 1.0]);
/// let batch = Batch { x: &x, delta: &d, rows: 1, n: 2, lower: Bound::Scalar(0.0),
///     upper: Bound::Scalar(1.0), eps: Eps::Scalar(0.5), norm: Norm::P(1.0) };
/// let (mut xb, mut db, mut eb) = ([0.0; 2], [0.0; 2], [0.0]);
/// let grads = Grads { x: &mut xb, delta: &mut db, eps: &mut eb, lower: None, upper: None };
/// scale_vjp(&batch, &Options::default(), None, &[1.0], grads).unwrap();
/// // eta = eps - (1 - 0.9): d eta / d eps = 1, d eta / d x_1 = 1, d eta / d d_0 = -eta
/// assert_eq!(eb[0], 1.0);
/// assert!((xb[1] - 1.0).abs() < 1e-15 && (db[0] + 0.4).abs() < 1e-15);
/// ```
pub fn scale_vjp<T: Real>(
    batch: &Batch<'_, T>,
    opts: &Options,
    eta: Option<&[T]>,
    etabar: &[T],
    grads: Grads<'_, T>,
) -> Result<Summary, CoreError> {
    vjp(batch, opts, eta, Cotangent::Eta(etabar), grads)
}

/// Cotangents of `y = perturb(batch)` for `ybar` (`rows * n` values), written into `grads`.
///
/// `eta` as in [`scale_vjp`].
pub fn perturb_vjp<T: Real>(
    batch: &Batch<'_, T>,
    opts: &Options,
    eta: Option<&[T]>,
    ybar: &[T],
    grads: Grads<'_, T>,
) -> Result<Summary, CoreError> {
    vjp(batch, opts, eta, Cotangent::Y(ybar), grads)
}

/// [`perturb_vjp`] with `ybar` read from `grads.x`, which it then overwrites with the
/// cotangent of `x`: no buffer for `ybar` besides the output (XLA hands the JAX backward its
/// cotangent and the gradient in one buffer). Bitwise the same results as [`perturb_vjp`].
///
/// ```
/// use clipresc_core::{perturb_vjp, perturb_vjp_in_place, Batch, Bound, Eps, Grads, Norm, Options};
/// let (x, d) = ([0.5f64, 0.9], [1.0f64, 1.0]);
/// let batch = Batch { x: &x, delta: &d, rows: 1, n: 2, lower: Bound::Scalar(0.0),
///     upper: Bound::Scalar(1.0), eps: Eps::Scalar(0.5), norm: Norm::P(1.0) };
/// let ybar = [1.0, 0.5];
/// let (mut xb, mut db, mut eb) = ([0.0; 2], [0.0; 2], [0.0]);
/// let g = Grads { x: &mut xb, delta: &mut db, eps: &mut eb, lower: None, upper: None };
/// perturb_vjp(&batch, &Options::default(), None, &ybar, g).unwrap();
/// let (mut xi, mut di, mut ei) = (ybar, [0.0; 2], [0.0]);
/// let g = Grads { x: &mut xi, delta: &mut di, eps: &mut ei, lower: None, upper: None };
/// perturb_vjp_in_place(&batch, &Options::default(), None, g).unwrap();
/// assert_eq!((xb, db, eb), (xi, di, ei));
/// ```
pub fn perturb_vjp_in_place<T: Real>(
    batch: &Batch<'_, T>,
    opts: &Options,
    eta: Option<&[T]>,
    grads: Grads<'_, T>,
) -> Result<Summary, CoreError> {
    vjp_any(batch, opts, eta, Cot::InX, grads)
}

/// Either VJP, by the kind of cotangent.
pub fn vjp<T: Real>(
    batch: &Batch<'_, T>,
    opts: &Options,
    eta: Option<&[T]>,
    cot: Cotangent<'_, T>,
    grads: Grads<'_, T>,
) -> Result<Summary, CoreError> {
    let cot = match cot {
        Cotangent::Eta(e) => Cot::Eta(e),
        Cotangent::Y(y) => Cot::Y(y),
    };
    vjp_any(batch, opts, eta, cot, grads)
}

/// The cotangent as the passes read it.
#[derive(Clone, Copy, Debug)]
enum Cot<'a, T> {
    Eta(&'a [T]),
    Y(&'a [T]),
    /// `ybar` in `grads.x`, overwritten element by element with `x`'s cotangent.
    InX,
}

fn vjp_any<T: Real>(
    batch: &Batch<'_, T>,
    opts: &Options,
    eta: Option<&[T]>,
    cot: Cot<'_, T>,
    grads: Grads<'_, T>,
) -> Result<Summary, CoreError> {
    batch.check()?;
    let (rows, n) = (batch.rows, batch.n);
    let total = rows * n;
    let (cot_arg, cot_len, cot_expected) = match cot {
        Cot::Eta(e) => ("etabar", e.len(), rows),
        Cot::Y(y) => ("ybar", y.len(), total),
        Cot::InX => ("ybar", grads.x.len(), total),
    };
    let mut lengths = vec![
        (cot_arg, cot_len, cot_expected),
        ("x_grad", grads.x.len(), total),
        ("delta_grad", grads.delta.len(), total),
        ("eps_grad", grads.eps.len(), rows),
    ];
    if let Some(e) = eta {
        lengths.push(("eta", e.len(), rows));
    }
    for (arg, bound, out) in [
        ("lower_grad", &batch.lower, &grads.lower),
        ("upper_grad", &batch.upper, &grads.upper),
    ] {
        if let Some(out) = out {
            let expected = match bound {
                Bound::Scalar(_) => 0,
                Bound::Shared(_) => n,
                Bound::Full(_) => total,
            };
            lengths.push((arg, out.len(), expected));
        }
    }
    for (arg, got, expected) in lengths {
        if got != expected {
            return Err(CoreError::Length { arg, expected, got });
        }
    }
    let (etas, summary) = match eta {
        Some(e) => (e.iter().map(|v| v.as_f64()).collect(), Summary::default()),
        None => {
            let outcomes = solve_stats(batch, opts)?;
            let mut s = Summary::default();
            for (r, o) in outcomes.iter().enumerate() {
                if o.unreachable {
                    s.unreachable_rows += 1;
                    s.first_unreachable.get_or_insert(r);
                }
            }
            (outcomes.iter().map(|o| o.eta).collect::<Vec<f64>>(), s)
        }
    };
    if n == 0 {
        grads.eps.iter_mut().for_each(|e| *e = 0.0);
        if let Some(l) = grads.lower {
            l.iter_mut().for_each(|v| *v = T::zero());
        }
        if let Some(u) = grads.upper {
            u.iter_mut().for_each(|v| *v = T::zero());
        }
        return Ok(summary);
    }
    let shared_wanted = [(&batch.lower, &grads.lower), (&batch.upper, &grads.upper)]
        .iter()
        .any(|(b, g)| matches!(b, Bound::Shared(_)) && g.is_some());
    // gradients of shared bounds are summed over all rows after the rows are written, so
    // they need `ybar` after it is overwritten: keep a copy (a rare case)
    let copy: Vec<T>;
    let cot = match cot {
        Cot::InX if shared_wanted => {
            copy = grads.x.to_vec();
            Cot::Y(&copy)
        }
        c => c,
    };
    let job = Job {
        b: batch,
        etas: &etas,
        cot,
    };
    visit(batch.norm, batch.lower, batch.upper, n, (job, grads));
    Ok(summary)
}

/// How `eta` depends on the row's elements.
#[derive(Clone, Copy, Debug, Default)]
enum Mode {
    /// No dependence (`eps = 0`, nothing movable): only `eps` may get gradient.
    #[default]
    Zero,
    /// Finite `p`, `eps > 0`, some element unsaturated: the implicit-function formulas.
    Regular { inv_m: f64 },
    /// Every movable element saturated: `eta = s_k / |d_k|`.
    Follow { k: usize },
    /// `p = inf`, reachable: `eta = eps / |d_k|`.
    InfReach { k: usize },
}

/// What one row's gradient needs besides its elements.
#[derive(Clone, Copy, Debug, Default)]
struct Info {
    eta: f64,
    /// The cotangent of `eta` (given, or `sum_U ybar_j d_j`).
    eb: f64,
    mode: Mode,
}

/// Lanes of the scans: independent `f64` accumulators the compiler can vectorise (four
/// vectors of AVX-512, eight of AVX2, so that the adds do not wait on each other).
const LANES: usize = 32;

/// Sums of one scan over a row (or a block of it), combined left to right.
#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    /// `sum_U |d_i|^p` (finite `p`).
    m: f64,
    /// `p = inf`: the largest `|d_i|` over movable elements with `s_i >= eps`, `s_i > 0`.
    a_reach: f64,
    /// `sum_U ybar_i d_i`.
    ebar: f64,
}

impl Acc {
    fn then(self, o: Acc) -> Acc {
        Acc {
            m: self.m + o.m,
            a_reach: self.a_reach.max(o.a_reach),
            ebar: self.ebar + o.ebar,
        }
    }
}

/// The largest `T` at most `eta` (NaN for NaN): for any `key: T`, `key <= key_bound(eta)`
/// exactly when `key as f64 <= eta`, so the lane loops compare keys in `T` (twice the lanes
/// of `f64` for `f32`, and no conversion) with the same outcome.
fn key_bound<T: Real>(eta: f64) -> T {
    let t = T::of_f64(eta);
    if t.as_f64() > eta {
        // rounded up, so `T` is `f32` (an `f64` is exact): the next `f32` below
        T::of_f64(f64::from((t.as_f64() as f32).next_down()))
    } else {
        t
    }
}

/// Whether element `(x, d)` is saturated at the scale whose [`key_bound`] is `thr`, its
/// `|d|` and its room (`s / |d|` is computed in `T` like the forward's keys; it is NaN or
/// infinite for `d = 0`, so such elements never count as saturated).
#[inline(always)]
fn classify<T: Real>(thr: T, x: T, d: T, lo: T, hi: T) -> (bool, T, T) {
    let a = d.abs();
    let s = room(x, d, lo, hi);
    (s / a <= thr, a, s)
}

/// One element's share of a scan: `(|d|^p or, for p = inf, the reaching |d|; ybar d)`,
/// each 0 when it does not count.
type Part = (f64, f64);

/// The lane arrays of a scan, combined left to right at the end.
#[derive(Clone, Copy)]
struct Lanes {
    v: [f64; LANES],
    eb: [f64; LANES],
}

impl Lanes {
    #[inline(always)]
    fn new() -> Self {
        Lanes {
            v: [0.0; LANES],
            eb: [0.0; LANES],
        }
    }

    fn finish<const MAX: bool>(self) -> Acc {
        let mut acc = Acc::default();
        for k in 0..LANES {
            let (v, ebar) = (self.v[k], self.eb[k]);
            acc = acc.then(if MAX {
                Acc {
                    m: 0.0,
                    a_reach: v,
                    ebar,
                }
            } else {
                Acc {
                    m: v,
                    a_reach: 0.0,
                    ebar,
                }
            });
        }
        acc
    }
}

/// Folds `part(x, d, lo, hi, ybar)` of the elements `start..end` of a row into lanes (`ybar`
/// is `x` again unless `Y`; `MAX`: the first part is maxed, not summed): lane `k` takes the
/// elements `start + k`, `start + k + LANES`, ... in order, so the grouping is fixed by
/// `start` and `end` alone. Each group of [`LANES`] elements is one elementwise loop the
/// compiler vectorises, its parts added straight into the lanes (kept in registers).
#[inline(always)]
fn scan_lanes<T, L, H, const Y: bool, const MAX: bool>(
    row: &Row<'_, T, L, H>,
    ybar: &[T],
    start: usize,
    end: usize,
    part: impl Fn(T, T, T, T, T) -> Part,
) -> Acc
where
    T: Real,
    L: SideAccess<T>,
    H: SideAccess<T>,
{
    let len = end - start;
    let (x, d) = (&row.x[start..end], &row.d[start..end]);
    let y = if Y { &ybar[start..end] } else { x };
    let (lo, hi) = (row.lo.sub(start, len), row.hi.sub(start, len));
    let mut lanes = Lanes::new();
    let full = len - len % LANES;
    // whole groups with a constant trip count (unrolled, the lanes kept in registers), then
    // the ragged rest
    for g0 in (0..full).step_by(LANES) {
        fold_group::<T, L, H, MAX, LANES>(&mut lanes, x, d, y, lo, hi, g0, &part);
    }
    let rest = len - full;
    if rest > 0 {
        fold_group::<T, L, H, MAX, 0>(&mut lanes, x, d, y, lo, hi, full, &part);
    }
    lanes.finish::<MAX>()
}

/// Adds the parts of the elements `g0..g0 + m` into lanes `0..m`, where `m` is `M`, or
/// the rest of the slices when `M` is 0.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fold_group<T, L, H, const MAX: bool, const M: usize>(
    lanes: &mut Lanes,
    x: &[T],
    d: &[T],
    y: &[T],
    lo: L,
    hi: H,
    g0: usize,
    part: &impl Fn(T, T, T, T, T) -> Part,
) where
    T: Real,
    L: SideAccess<T>,
    H: SideAccess<T>,
{
    let m = if M == 0 { x.len() - g0 } else { M };
    let (xs, ds, ys) = (&x[g0..g0 + m], &d[g0..g0 + m], &y[g0..g0 + m]);
    let (l, h) = (lo.sub(g0, m), hi.sub(g0, m));
    for k in 0..m {
        let p = part(xs[k], ds[k], l.at(k), h.at(k), ys[k]);
        lanes.v[k] = if MAX {
            lanes.v[k].max(p.0)
        } else {
            lanes.v[k] + p.0
        };
        lanes.eb[k] += p.1;
    }
}

/// `ybar d` where `keep` (and `Y`), else 0: computed for every element and masked by bits,
/// so that `ybar` is read by plain vector loads rather than masked ones.
#[inline(always)]
fn masked<const Y: bool, T: Real>(keep: bool, y: T, d: T) -> f64 {
    if !Y {
        return 0.0;
    }
    let yd = y.as_f64() * d.as_f64();
    f64::from_bits(yd.to_bits() & 0u64.wrapping_sub(keep as u64))
}

/// One block of the scan for finite `p`: `M` and `etabar` (`Y`: from `ybar`).
#[inline(always)]
fn scan_finite<T, P, L, H, const Y: bool>(
    row: &Row<'_, T, L, H>,
    pw: P,
    eta: f64,
    ybar: &[T],
    start: usize,
    end: usize,
) -> Acc
where
    T: Real,
    P: Power,
    L: SideAccess<T>,
    H: SideAccess<T>,
{
    let thr = key_bound::<T>(eta);
    scan_lanes::<T, L, H, Y, false>(row, ybar, start, end, |x, d, lo, hi, y| {
        let (sat, a, _) = classify(thr, x, d, lo, hi);
        let mv = a > T::zero();
        let unsat = mv & !sat;
        let m = if unsat { pw.pow64(a.as_f64()) } else { 0.0 };
        (m, masked::<Y, T>(unsat, y, d))
    })
}

/// One block of the scan for `p = inf`: the reaching `|d|`, and `etabar`.
#[inline(always)]
fn scan_inf<T, L, H, const Y: bool>(
    row: &Row<'_, T, L, H>,
    eta: f64,
    eps: T,
    ybar: &[T],
    start: usize,
    end: usize,
) -> Acc
where
    T: Real,
    L: SideAccess<T>,
    H: SideAccess<T>,
{
    let thr = key_bound::<T>(eta);
    scan_lanes::<T, L, H, Y, true>(row, ybar, start, end, |x, d, lo, hi, y| {
        let (sat, a, s) = classify(thr, x, d, lo, hi);
        let mv = a > T::zero();
        let cand = mv & (s >= eps) & (s > T::zero());
        let am = if cand { a.as_f64() } else { 0.0 };
        (am, masked::<Y, T>(mv & !sat, y, d))
    })
}

/// Runs `f` on the blocks of `0..n` (fixed by `n` alone) and combines them in order.
fn fold_blocks<F>(n: usize, par: bool, f: F) -> Acc
where
    F: Fn(usize, usize) -> Acc + Sync,
{
    let block = |bi: usize| f(bi * BLOCK, n.min((bi + 1) * BLOCK));
    fold_range(par, n.div_ceil(BLOCK), Acc::default(), block, Acc::then)
}

/// The element that saturates last: the first of the largest keys `s_i / |d_i|`.
fn last_to_saturate<T: Real, L: SideAccess<T>, H: SideAccess<T>>(row: &Row<'_, T, L, H>) -> usize {
    let (mut best, mut k) = (f64::NEG_INFINITY, usize::MAX);
    for i in 0..row.len() {
        let a = row.d[i].abs();
        let key = (room(row.x[i], row.d[i], row.lo.at(i), row.hi.at(i)) / a).as_f64();
        if a > T::zero() && key > best {
            (best, k) = (key, i);
        }
    }
    k
}

/// `p = inf`, reachable: the first movable element with room `>= eps` (and `> 0`) whose
/// `|d|` is the largest, `a_reach`.
fn first_reaching<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: T,
    a_reach: f64,
) -> usize {
    let n = row.len();
    let hit = |i: usize| {
        let d = row.d[i];
        let s = room(row.x[i], d, row.lo.at(i), row.hi.at(i));
        (s >= eps) & (s > T::zero()) & (d.abs().as_f64() == a_reach)
    };
    // whole groups tested by one branch-free (vectorised) fold, then the hit group searched
    let mut g0 = 0;
    while g0 < n {
        let g1 = n.min(g0 + FIND_GROUP);
        if any_in_best(row, eps, a_reach, g0, g1) {
            return (g0..g1).find(|&i| hit(i)).unwrap_or(usize::MAX);
        }
        g0 = g1;
    }
    usize::MAX
}

/// Elements per group of [`first_reaching`]'s search.
const FIND_GROUP: usize = 256;

/// Whether an element of `start..end` reaches `eps` with `|d| = a_reach` (see
/// [`first_reaching`]).
#[inline(always)]
fn any_in<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: T,
    a_reach: f64,
    start: usize,
    end: usize,
) -> bool {
    let len = end - start;
    let (x, d) = (&row.x[start..end], &row.d[start..end]);
    let (lo, hi) = (row.lo.sub(start, len), row.hi.sub(start, len));
    let mut any = false;
    for i in 0..len {
        let s = room(x[i], d[i], lo.at(i), hi.at(i));
        any |= (s >= eps) & (s > T::zero()) & (d[i].abs().as_f64() == a_reach);
    }
    any
}

/// `p = inf`, unreachable: the first element with the largest room, then the largest `|d|`.
fn largest_room<T: Real, L: SideAccess<T>, H: SideAccess<T>>(row: &Row<'_, T, L, H>) -> usize {
    let (mut best, mut k) = ((f64::NEG_INFINITY, 0.0f64), usize::MAX);
    for i in 0..row.len() {
        let a = row.d[i].abs();
        let s = room(row.x[i], row.d[i], row.lo.at(i), row.hi.at(i)).as_f64();
        let a64 = a.as_f64();
        if a > T::zero() && (s > best.0 || (s == best.0 && a64 > best.1)) {
            (best, k) = ((s, a64), i);
        }
    }
    k
}

/// Compile-time choices of the write pass: a `ybar` is given (`Y`), `eta` depends on
/// the elements through the implicit-function formulas (`REG`, [`Mode::Regular`]), and
/// `ybar` is read from the output of `x`'s cotangent before it is written (`IN`).
trait Flags: Copy + Send + Sync {
    const Y: bool;
    const REG: bool;
    const IN: bool;
}

#[derive(Clone, Copy, Debug)]
struct F<const Y: bool, const REG: bool, const IN: bool = false>;

impl<const Y: bool, const REG: bool, const IN: bool> Flags for F<Y, REG, IN> {
    const Y: bool = Y;
    const REG: bool = REG;
    const IN: bool = IN;
}

/// One row's constants of the per-element cotangents, in the arithmetic `W` of the write
/// pass (`f64`, or `T` where [`narrow`] allows it).
#[derive(Clone, Copy, Debug)]
struct Consts<T, W = f64> {
    eta: W,
    /// [`key_bound`] of `eta`.
    thr: T,
    /// `1 / eta` (0 unless `Mode::Regular`, where `eta > 0`).
    inv_eta: W,
    /// `etabar / M` (`Mode::Regular`, else 0).
    cs: W,
    /// `etabar * eta / M` (`Mode::Regular`, else 0).
    cd: W,
}

impl<T: Real, W: Real> Consts<T, W> {
    fn of(info: &Info) -> Consts<T, W> {
        let (inv_eta, cs, cd) = match info.mode {
            Mode::Regular { inv_m } => {
                (1.0 / info.eta, info.eb * inv_m, info.eb * info.eta * inv_m)
            }
            _ => (0.0, 0.0, 0.0),
        };
        Consts {
            eta: W::of_f64(info.eta),
            thr: key_bound(info.eta),
            inv_eta: W::of_f64(inv_eta),
            cs: W::of_f64(cs),
            cd: W::of_f64(cd),
        }
    }
}

/// Whether one row's write pass may compute in `T` rather than `f64`: `T` is narrower
/// than `f64` (`f32`: sixteen lanes to a 512-bit vector instead of eight, and no
/// conversions), `v^(p-1)` is exact there (`p` in {1, 2}, or no `Mode::Regular` term), and
/// the row's constants lie far inside `T`'s normal range, so that each cotangent is within
/// a few ulps of the `f64` one (a product or two and one sum, each rounded in `T`; where
/// `yb * eta` alone is written it is the same correctly rounded product).
fn narrow<T: Real, P: Power>(info: &Info) -> bool {
    let c = Consts::<T, f64>::of(info);
    let tame = |v: f64| v == 0.0 || (v.is_finite() && (NARROW_MIN..=NARROW_MAX).contains(&v.abs()));
    T::EPS > f64::EPSILON
        && (P::EXACT_M1 || !matches!(info.mode, Mode::Regular { .. }))
        && [c.eta, c.inv_eta, c.cs, c.cd].into_iter().all(tame)
}

/// The range of row constants [`narrow`] accepts: `2^-100 ..= 2^100`, far inside `f32`'s
/// normal range (`2^-126 .. 2^128`).
const NARROW_MIN: f64 = 7.888609052210118e-31;
const NARROW_MAX: f64 = 1.2676506002282294e30;

/// The cotangents one element passes on: `[x, delta, lower, upper]`, from its own `ybar`
/// (`has_y`) and, for `Mode::Regular` (`reg`), through `eta`. Branch-free; the flags are
/// constants wherever it is inlined.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn terms<T: Real, P: Power, W: Real>(
    pw: P,
    c: &Consts<T, W>,
    x: T,
    d: T,
    lo: T,
    hi: T,
    y: T,
    has_y: bool,
    reg: bool,
) -> [W; 4] {
    let eta = c.eta;
    let (sat, a, s) = classify(c.thr, x, d, lo, hi);
    let up = d > T::zero();
    let zero = W::zero();
    let mut g = [zero; 4];
    if has_y {
        let yb = W::of_f64(y.as_f64());
        g[0] = if sat { zero } else { yb };
        g[1] = if sat { zero } else { yb * eta };
        g[2] = if sat & !up { yb } else { zero };
        g[3] = if sat & up { yb } else { zero };
    }
    if reg {
        // saturated: etabar * d eta / d x_j = etabar sign_j (s_j / eta)^(p-1) / M;
        // unsaturated: etabar * d eta / d delta_j = -etabar eta |d_j|^(p-1) sign_j / M
        let (aw, sw) = (W::of_f64(a.as_f64()), W::of_f64(s.as_f64()));
        let sign = if up { W::one() } else { -W::one() };
        let v = pw.pow_m1_in(if sat { sw * c.inv_eta } else { aw });
        let q = if pw.below_one() & (sw == zero) {
            zero
        } else {
            c.cs * v
        };
        g[0] = g[0] + if sat { sign * q } else { zero };
        g[1] = g[1]
            + if (a > T::zero()) & !sat {
                -(sign * (c.cd * v))
            } else {
                zero
            };
        g[2] = g[2] + if sat & !up { q } else { zero };
        g[3] = g[3] + if sat & up { -q } else { zero };
    }
    g
}

/// `eb *` the partials of `eta` in element `k`'s inputs for the modes where `eta` follows
/// one element: `[x, delta, lower, upper]`.
fn follow_terms<T: Real>(info: &Info, d: T) -> [f64; 4] {
    let (d64, eb) = (d.as_f64(), info.eb);
    match info.mode {
        Mode::Follow { .. } => [
            -eb / d64,
            -eb * info.eta / d64,
            if d64 < 0.0 { -eb / d64.abs() } else { 0.0 },
            if d64 > 0.0 { eb / d64.abs() } else { 0.0 },
        ],
        Mode::InfReach { .. } => [0.0, -eb * info.eta / d64, 0.0, 0.0],
        _ => [0.0; 4],
    }
}

fn mode_k(mode: Mode) -> Option<usize> {
    match mode {
        Mode::Follow { k } | Mode::InfReach { k } => Some(k),
        _ => None,
    }
}

/// The outputs of one row (or one block of it).
struct RowOut<'o, T> {
    x: &'o mut [T],
    d: &'o mut [T],
    lo: Option<&'o mut [T]>,
    hi: Option<&'o mut [T]>,
}

impl<'o, T> RowOut<'o, T> {
    /// Splits into consecutive pieces of `len` elements.
    fn split(self, len: usize) -> Vec<RowOut<'o, T>> {
        let mut lo = self.lo.map(|l| l.chunks_mut(len));
        let mut hi = self.hi.map(|h| h.chunks_mut(len));
        self.x
            .chunks_mut(len)
            .zip(self.d.chunks_mut(len))
            .map(|(x, d)| RowOut {
                x,
                d,
                lo: lo.as_mut().and_then(|it| it.next()),
                hi: hi.as_mut().and_then(|it| it.next()),
            })
            .collect()
    }
}

fn pieces<T>(s: Option<&mut [T]>, len: usize, count: usize) -> Vec<Option<&mut [T]>> {
    match s {
        Some(s) => s.chunks_mut(len).map(Some).collect(),
        None => (0..count).map(|_| None).collect(),
    }
}

struct Job<'j, 'a, T> {
    b: &'j Batch<'a, T>,
    etas: &'j [f64],
    cot: Cot<'j, T>,
}

/// Columns per work item of the pass that sums shared-bound gradients over the rows.
const COLS: usize = 4096;

impl<T: Real> RowJob<T> for (Job<'_, '_, T>, Grads<'_, T>) {
    type Out = ();

    fn run<P: Power, L: Sides<T>, H: Sides<T>>(self, pw: Option<P>, lo: L, hi: H) {
        let (job, grads) = self;
        job.rows(pw, grads, lo, hi)
    }
}

impl<T: Real> Job<'_, '_, T> {
    fn rows<P: Power, L: Sides<T>, H: Sides<T>>(
        &self,
        pw: Option<P>,
        g: Grads<'_, T>,
        lo: L,
        hi: H,
    ) {
        let b = self.b;
        let (rows, n) = (b.rows, b.n);
        let row_of = |r: usize| Row {
            x: &b.x[r * n..(r + 1) * n],
            d: &b.delta[r * n..(r + 1) * n],
            lo: lo.row(r),
            hi: hi.row(r),
        };
        let ybar_row = |r: usize| match self.cot {
            Cot::Y(y) => Some(&y[r * n..(r + 1) * n]),
            Cot::Eta(_) | Cot::InX => None,
        };
        let in_x = matches!(self.cot, Cot::InX);
        // Full bounds are written per row; shared ones summed over the rows afterwards.
        let (lo_full, lo_shared) = match (b.lower, g.lower) {
            (Bound::Full(_), Some(o)) => (Some(o), None),
            (Bound::Shared(_), Some(o)) => (None, Some(o)),
            _ => (None, None),
        };
        let (hi_full, hi_shared) = match (b.upper, g.upper) {
            (Bound::Full(_), Some(o)) => (Some(o), None),
            (Bound::Shared(_), Some(o)) => (None, Some(o)),
            _ => (None, None),
        };
        let plan = Plan::new(rows, n);
        let work: Vec<_> =
            g.x.chunks_mut(n)
                .zip(g.delta.chunks_mut(n))
                .zip(pieces(lo_full, n, rows))
                .zip(pieces(hi_full, n, rows))
                .zip(g.eps.iter_mut())
                .enumerate()
                .map(|(r, ((((x, d), lo), hi), e))| (r, RowOut { x, d, lo, hi }, e))
                .collect();
        let infos: Vec<Info> = map_items(plan.rows, work, |(r, out, epsbar)| {
            let row = row_of(r);
            let ybar = if in_x { Some(&*out.x) } else { ybar_row(r) };
            let (info, ee) = self.row_info(pw, &row, r, ybar, plan.inner);
            *epsbar = info.eb * ee;
            let ybar = if in_x { YRow::InX } else { ybar_row(r).into() };
            write_row(pw, &row, &info, ybar, out, plan.inner);
            info
        });
        if lo_shared.is_some() || hi_shared.is_some() {
            self.shared(
                pw, &infos, &row_of, &ybar_row, lo_shared, hi_shared, plan.pool,
            );
        }
    }

    /// Scans one row: its `Info` and `d eta / d eps`.
    fn row_info<P: Power, L: SideAccess<T>, H: SideAccess<T>>(
        &self,
        pw: Option<P>,
        row: &Row<'_, T, L, H>,
        r: usize,
        ybar: Option<&[T]>,
        par: bool,
    ) -> (Info, f64) {
        let eta = self.etas[r];
        let eps = self.b.eps.get(r);
        let eps_t = T::of_f64(eps);
        let y = ybar.unwrap_or(&[]);
        let has_y = ybar.is_some();
        let acc = fold_blocks(row.len(), par, |start, end| match (pw, has_y) {
            (Some(pw), true) => scan_finite_best::<T, P, L, H, true>(row, pw, eta, y, start, end),
            (Some(pw), false) => scan_finite_best::<T, P, L, H, false>(row, pw, eta, y, start, end),
            (None, true) => scan_inf_best::<T, L, H, true>(row, eta, eps_t, y, start, end),
            (None, false) => scan_inf_best::<T, L, H, false>(row, eta, eps_t, y, start, end),
        });
        let eb = match self.cot {
            Cot::Eta(e) => e[r].as_f64(),
            Cot::Y(_) | Cot::InX => acc.ebar,
        };
        // whether anything can move (`delta != 0`): only asked when the scan's sums leave
        // it open, so the scan needs no count
        let any_mov = || row.d.iter().any(|v| v.abs() > T::zero());
        let (mode, ee) = match pw {
            Some(pw) => {
                let m = acc.m;
                // `m > 0` needs a movable element
                let regular = m > 0.0;
                let all_sat = !regular && any_mov();
                let ee = if !regular {
                    0.0
                } else if eta > 0.0 {
                    pw.pow_m1(eps / eta) / m
                } else {
                    1.0 / pw.root64(m)
                };
                let mode = if regular && eps > 0.0 && eta > 0.0 {
                    Mode::Regular { inv_m: 1.0 / m }
                } else if all_sat && eps > 0.0 {
                    Mode::Follow {
                        k: last_to_saturate(row),
                    }
                } else {
                    Mode::Zero
                };
                (mode, ee)
            }
            None => {
                if acc.a_reach > 0.0 {
                    let k = first_reaching(row, eps_t, acc.a_reach);
                    (Mode::InfReach { k }, 1.0 / acc.a_reach)
                } else if eps > 0.0 && any_mov() {
                    (
                        Mode::Follow {
                            k: largest_room(row),
                        },
                        0.0,
                    )
                } else {
                    (Mode::Zero, 0.0)
                }
            }
        };
        (Info { eta, eb, mode }, ee)
    }

    /// Sums the gradients of bounds shared by every row, over the rows in row order.
    #[allow(clippy::too_many_arguments)]
    fn shared<'r, 'y, P, L, H, FR, FY>(
        &self,
        pw: Option<P>,
        infos: &[Info],
        row_of: &FR,
        ybar_row: &FY,
        lo_out: Option<&mut [T]>,
        hi_out: Option<&mut [T]>,
        par: bool,
    ) where
        P: Power,
        L: SideAccess<T>,
        H: SideAccess<T>,
        FR: Fn(usize) -> Row<'r, T, L, H> + Sync,
        FY: Fn(usize) -> Option<&'y [T]> + Sync,
    {
        let n = self.b.n;
        let (want_lo, want_hi) = (lo_out.is_some(), hi_out.is_some());
        let parts: Vec<(Vec<f64>, Vec<f64>)> = map_range(par, n.div_ceil(COLS), |ci| {
            let (j0, j1) = (ci * COLS, n.min((ci + 1) * COLS));
            let mut acc = vec![[0.0f64; 2]; j1 - j0];
            for (r, info) in infos.iter().enumerate() {
                let ybar = ybar_row(r);
                let row = row_of(r);
                let c = Consts::<T, f64>::of(info);
                let y = ybar.unwrap_or(&[]);
                let has_y = ybar.is_some();
                let mut add = |j: usize, t: [f64; 4]| {
                    acc[j - j0][0] += t[2];
                    acc[j - j0][1] += t[3];
                };
                let at = |j: usize| (row.x[j], row.d[j], row.lo.at(j), row.hi.at(j));
                match (pw, info.mode) {
                    (Some(pw), Mode::Regular { .. }) if info.eb != 0.0 => {
                        for j in j0..j1 {
                            let (x, d, lo, hi) = at(j);
                            let yb = if has_y { y[j] } else { T::zero() };
                            add(j, terms(pw, &c, x, d, lo, hi, yb, has_y, true));
                        }
                    }
                    _ if has_y => {
                        for j in j0..j1 {
                            let (x, d, lo, hi) = at(j);
                            add(j, terms(P1, &c, x, d, lo, hi, y[j], true, false));
                        }
                    }
                    _ => {}
                }
                if let Some(k) = mode_k(info.mode) {
                    if (j0..j1).contains(&k) {
                        add(k, follow_terms(info, row.d[k]));
                    }
                }
            }
            let lo = if want_lo {
                acc.iter().map(|v| v[0]).collect()
            } else {
                Vec::new()
            };
            let hi = if want_hi {
                acc.iter().map(|v| v[1]).collect()
            } else {
                Vec::new()
            };
            (lo, hi)
        });
        for (out, pick) in [(lo_out, 0usize), (hi_out, 1)] {
            if let Some(out) = out {
                let vals = parts
                    .iter()
                    .flat_map(|p| if pick == 0 { &p.0 } else { &p.1 });
                for (o, v) in out.iter_mut().zip(vals) {
                    *o = T::of_f64(*v);
                }
            }
        }
    }
}

/// Writes the cotangents of elements `start..start + o.x.len()` of one row: one plain loop
/// the compiler vectorises (bound cotangents, rarely wanted, in a second one).
#[inline(always)]
fn write_range<T, P, L, H, C, W>(
    pw: P,
    row: &Row<'_, T, L, H>,
    c: &Consts<T, W>,
    ybar: &[T],
    start: usize,
    o: &mut RowOut<'_, T>,
) where
    T: Real,
    P: Power,
    L: SideAccess<T>,
    H: SideAccess<T>,
    C: Flags,
    W: Real,
{
    let len = o.x.len();
    let (xs, ds) = (&mut o.x[..len], &mut o.d[..len]);
    let (x, d) = (&row.x[start..start + len], &row.d[start..start + len]);
    let (lo, hi) = (row.lo.sub(start, len), row.hi.sub(start, len));
    let y = if C::Y && !C::IN {
        &ybar[start..start + len]
    } else {
        x
    };
    // (a plain call, not a closure: closures are not always inlined into the AVX2 copy;
    // with `IN`, element `i` of `ybar` is read from `xs[i]` just before it is written)
    macro_rules! g {
        ($i:ident) => {
            terms(
                pw,
                c,
                x[$i],
                d[$i],
                lo.at($i),
                hi.at($i),
                if C::IN { xs[$i] } else { y[$i] },
                C::Y,
                C::REG,
            )
        };
    }
    match (o.lo.as_deref_mut(), o.hi.as_deref_mut()) {
        (None, None) => {
            for i in 0..len {
                let t = g!(i);
                xs[i] = T::of_f64(t[0].as_f64());
                ds[i] = T::of_f64(t[1].as_f64());
            }
        }
        (mut lo_out, mut hi_out) => {
            for i in 0..len {
                let t = g!(i);
                xs[i] = T::of_f64(t[0].as_f64());
                ds[i] = T::of_f64(t[1].as_f64());
                if let Some(l) = lo_out.as_deref_mut() {
                    l[i] = T::of_f64(t[2].as_f64());
                }
                if let Some(h) = hi_out.as_deref_mut() {
                    h[i] = T::of_f64(t[3].as_f64());
                }
            }
        }
    }
}

/// Where one row's `ybar` is.
#[derive(Clone, Copy)]
enum YRow<'y, T> {
    /// None (the VJP of `scale`).
    No,
    Slice(&'y [T]),
    /// In the row's output of `x`'s cotangent.
    InX,
}

impl<'y, T> From<Option<&'y [T]>> for YRow<'y, T> {
    fn from(y: Option<&'y [T]>) -> Self {
        y.map_or(YRow::No, YRow::Slice)
    }
}

/// Writes the per-element cotangents of one row, in `T`'s arithmetic where [`narrow`]
/// allows it.
fn write_row<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    pw: Option<P>,
    row: &Row<'_, T, L, H>,
    info: &Info,
    ybar: YRow<'_, T>,
    out: RowOut<'_, T>,
    par: bool,
) {
    if narrow::<T, P>(info) {
        write_row_in::<T, P, L, H, T>(pw, row, info, ybar, out, par)
    } else {
        write_row_in::<T, P, L, H, f64>(pw, row, info, ybar, out, par)
    }
}

/// [`write_row`] in the arithmetic of `W`.
fn write_row_in<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>, W: Real>(
    pw: Option<P>,
    row: &Row<'_, T, L, H>,
    info: &Info,
    ybar: YRow<'_, T>,
    out: RowOut<'_, T>,
    par: bool,
) {
    let (y, has_y, in_x) = match ybar {
        YRow::No => (&[][..], false, false),
        YRow::Slice(y) => (y, true, false),
        YRow::InX => (&[][..], true, true),
    };
    let c = Consts::<T, W>::of(info);
    let body = |start: usize, mut o: RowOut<'_, T>| {
        let o = &mut o;
        match (pw, info.mode, has_y, in_x) {
            (Some(pw), Mode::Regular { .. }, true, true) => {
                write_range_best::<T, P, L, H, F<true, true, true>, W>(pw, row, &c, y, start, o)
            }
            (Some(pw), Mode::Regular { .. }, true, false) => {
                write_range_best::<T, P, L, H, F<true, true>, W>(pw, row, &c, y, start, o)
            }
            (Some(pw), Mode::Regular { .. }, false, _) => {
                write_range_best::<T, P, L, H, F<false, true>, W>(pw, row, &c, y, start, o)
            }
            (_, _, true, true) => {
                write_range_best::<T, P1, L, H, F<true, false, true>, W>(P1, row, &c, y, start, o)
            }
            (_, _, true, false) => {
                write_range_best::<T, P1, L, H, F<true, false>, W>(P1, row, &c, y, start, o)
            }
            (_, _, false, _) => {
                write_range_best::<T, P1, L, H, F<false, false>, W>(P1, row, &c, y, start, o)
            }
        }
        if let Some(k) = mode_k(info.mode) {
            if (start..start + o.x.len()).contains(&k) {
                let t = follow_terms(info, row.d[k]);
                let j = k - start;
                o.x[j] = T::of_f64(o.x[j].as_f64() + t[0]);
                o.d[j] = T::of_f64(o.d[j].as_f64() + t[1]);
                if let Some(l) = o.lo.as_deref_mut() {
                    l[j] = T::of_f64(l[j].as_f64() + t[2]);
                }
                if let Some(h) = o.hi.as_deref_mut() {
                    h[j] = T::of_f64(h[j].as_f64() + t[3]);
                }
            }
        }
    };
    if row.len() > BLOCK {
        let pieces: Vec<_> = out.split(BLOCK).into_iter().enumerate().collect();
        map_items(par, pieces, |(bi, o)| body(bi * BLOCK, o));
    } else {
        body(0, out);
    }
}

vjp_multiversion!(scan_finite_best, scan_finite_avx512, scan_finite_avx2, scan_finite,
    <T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>; const Y: bool>,
    (row: &Row<'_, T, L, H>, pw: P, eta: f64, ybar: &[T], start: usize, end: usize) -> Acc);
vjp_multiversion!(scan_inf_best, scan_inf_avx512, scan_inf_avx2, scan_inf,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>; const Y: bool>,
    (row: &Row<'_, T, L, H>, eta: f64, eps: T, ybar: &[T], start: usize, end: usize) -> Acc);
vjp_multiversion!(any_in_best, any_in_avx512, any_in_avx2, any_in,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, eps: T, a_reach: f64, start: usize, end: usize) -> bool);
vjp_multiversion!(write_range_best, write_range_avx512, write_range_avx2, write_range,
    <T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>, C: Flags, W: Real>,
    (pw: P, row: &Row<'_, T, L, H>, c: &Consts<T, W>, ybar: &[T], start: usize, o: &mut RowOut<'_, T>)
    -> ());

#[cfg(test)]
#[path = "vjp_simd_tests.rs"]
mod simd_tests;
