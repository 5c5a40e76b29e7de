//! `p = 1`: `y_i = clip(z_i - sign(d_i) lam)` where `b_i = |d_i| > lam`, else `x_i`, with
//! `lam` the root of `h(lam) = sum_i f_i(lam) = eps`, `f_i(lam) = min(max(b_i - lam, 0),
//! s_i)` (`s_i` the room towards `sign(d_i)`), or 0 when `clip(z)` is inside the ball.
//!
//! Each `f_i` is `s_i` up to its breakpoint `a_i = b_i - s_i`, falls with slope -1 to 0 at
//! `b_i`, and stays 0. On a bracket `[c1, c2]` of `lam` an element is decided (zero, its
//! cap `s_i`, or active `b_i - lam` all along) unless a breakpoint lies inside, so
//! `h = sat + act - k lam + (the undecided elements' sum)` there.
//!
//! The search (see [`locate`]):
//! 1. A bracket of a few percent around a guess of `lam` (the previous row's answer in a
//!    group of rows, else an estimate from a subsample of a long row): one pass over the
//!    row splits it there, in lanes the compiler vectorises, and collects the few
//!    undecided elements. When the root lies inside, those finish it.
//! 2. Otherwise a Newton step from the bracket's end on the root's side, and a new
//!    bracket around it, for at most [`SPLIT_PASSES`] passes.
//! 3. Then (or once the root is bracketed) the undecided elements are collected and
//!    [`solve_compact`] finishes on them: Newton steps, each followed by dropping the
//!    elements decided on the shrunk bracket, with a step at the median breakpoint after
//!    any step that did not halve the undecided set. Its work is linear in their number.
//!
//! So the work is `O(n)` for any input, and on typical data it is one pass over the row
//! to split it, a little work on a few percent of its elements, and one pass to apply.

use super::{clamp, clip_z, fold_stretches, Row};
use crate::bounds::{SideAccess, SliceSide};
use crate::kernel::BLOCK;
use crate::par::fold_range;
use crate::real::Real;
use crate::simd::prefetch_ahead;

/// What a worker carries from row to row (see [`super::RowState`]).
#[derive(Default)]
pub(crate) struct State {
    /// The previous row's `lam` (0: none).
    hint: f64,
    /// The undecided elements `(b_i, s_i)`.
    pairs: Vec<(f64, f64)>,
    /// Breakpoints, for the median steps of [`solve_compact`].
    points: Vec<f64>,
}

/// Half-width of the first bracket, relative to its guess: rows alike (one `eps`, similar
/// data) give answers within about 1% of each other, and about 2% of the elements of a
/// typical row have a breakpoint in such a bracket.
const GUESS_WIDTH: f64 = 0.03;

/// Half-width of the bracket around a Newton step from a missed bracket (the step is
/// closer to the root than the guess was).
const STEP_WIDTH: f64 = 0.02;

/// Bracketed passes over the row before the undecided elements of the bracket that holds
/// the root are handed to [`solve_compact`] whatever their number.
const SPLIT_PASSES: usize = 3;

/// Rows at least this long estimate `lam` on a subsample when there is no previous row.
pub(super) const SUBSAMPLE_MIN: usize = 8192;
const SUB_BLOCKS: usize = 32;
const SUB_BLOCK_LEN: usize = 64;

/// Lanes of the split pass (`f64` accumulators: two AVX2 registers each).
const LANES: usize = 8;

/// Stretches of [`LANES`] elements whose undecided flags are looked at together.
const SPAN_STRETCHES: usize = 8;

/// How an element's `f_i` behaves on a bracket `[lo, hi]` of `lam`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Piece {
    /// `f_i = 0` (also when it cannot move: `s_i = 0`).
    Zero,
    /// `f_i = s_i`.
    Capped,
    /// `f_i = b_i - lam`.
    Active,
    /// A breakpoint lies strictly inside.
    Undecided,
}

/// The one rule that decides an element on a bracket, written with selects so that the
/// lane loops vectorise it; `a = b - s`.
#[inline(always)]
// `!(s > 0.0)` is meant: a NaN room counts as zero, and the select form vectorises
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn piece(b: f64, s: f64, a: f64, lo: f64, hi: f64) -> (bool, bool, bool) {
    let zero = (b <= lo) | !(s > 0.0);
    let capped = !zero & (a >= hi);
    let active = !zero & !capped & (a <= lo) & (b >= hi);
    (zero, capped, active)
}

#[inline(always)]
fn piece_of(b: f64, s: f64, lo: f64, hi: f64) -> Piece {
    match piece(b, s, b - s, lo, hi) {
        (true, _, _) => Piece::Zero,
        (_, true, _) => Piece::Capped,
        (_, _, true) => Piece::Active,
        _ => Piece::Undecided,
    }
}

/// `f_i(lam)` given `v = b_i - lam`.
#[inline(always)]
fn ramp(v: f64, s: f64) -> f64 {
    let v = if v > 0.0 { v } else { 0.0 };
    if v < s {
        v
    } else {
        s
    }
}

/// `(b_i, s_i)` of element `i`, in `f64` (exact for `f32` data).
#[inline(always)]
fn element<T: Real>(x: T, z: T, lo: T, hi: T) -> (f64, f64) {
    let (x, z) = (x.as_f64(), z.as_f64());
    let d = z - x;
    let s = if d > 0.0 {
        hi.as_f64() - x
    } else {
        x - lo.as_f64()
    };
    (d.abs(), s)
}

/// The sums of one pass over a row split at the bracket `[c1, c2]` (`c1 <= c2`; equal: the
/// values at that point). `h(c) = fixed - k c + (the undecided elements' f_i(c))`.
#[derive(Clone, Copy, Debug, Default)]
struct Split {
    /// `sum s_i` over the capped elements plus `sum b_i` over the active ones.
    fixed: f64,
    /// The number of active elements.
    k: u64,
    /// `sum f_i(c1)` and `sum f_i(c2)` over the undecided elements.
    g1: f64,
    g2: f64,
    /// The undecided elements that move just below `c1` (`a_i < c1`) and just above `c2`
    /// (`b_i > c2`): the slopes of `h` outside the bracket, with `k`.
    k1: u64,
    k2: u64,
    /// First pass only: `h(0) = sum min(b_i, s_i)`, the size of `clip(z) - x`.
    h0: f64,
    /// First pass only: the largest `b_i`.
    bmax: f64,
    /// First pass only: the number of invalid elements.
    bad: u64,
}

impl std::ops::Add for Split {
    type Output = Split;
    fn add(self, o: Split) -> Split {
        Split {
            fixed: self.fixed + o.fixed,
            k: self.k + o.k,
            g1: self.g1 + o.g1,
            g2: self.g2 + o.g2,
            k1: self.k1 + o.k1,
            k2: self.k2 + o.k2,
            h0: self.h0 + o.h0,
            bmax: self.bmax.max(o.bmax),
            bad: self.bad + o.bad,
        }
    }
}

impl Split {
    /// `h(c1)` and `h(c2)`.
    fn ends(&self, c1: f64, c2: f64) -> (f64, f64) {
        let k = self.k as f64;
        (self.fixed - k * c1 + self.g1, self.fixed - k * c2 + self.g2)
    }
}

/// The lane accumulators of [`stretch_split`], added to per stretch of [`LANES`] elements
/// (`k` and `bad` count in `f64` lanes, exactly: a stretch holds far fewer than 2^53
/// elements).
#[derive(Clone, Copy)]
struct Acc {
    fixed: [f64; LANES],
    k: [f64; LANES],
    h0: [f64; LANES],
    bmax: [f64; LANES],
    bad: [f64; LANES],
}

/// [`LANES`] elements' shares of a split at `[c1, c2]` added to `acc`; returns which are
/// undecided (and valid). `FIRST`: also `h0`, `bmax` and the validity check. The inputs
/// are converted to `f64` first and every step is a select over whole lane arrays, so that
/// the accumulators stay in vector registers.
#[inline(always)]
fn split_lanes<const FIRST: bool>(
    acc: &mut Acc,
    (x, z, lo, hi): (&[f64; LANES], &[f64; LANES], &[f64; LANES], &[f64; LANES]),
    c1: f64,
    c2: f64,
) -> [bool; LANES] {
    let mut und = [false; LANES];
    let (mut fixed, mut k) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (mut h0, mut bad) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut bm = acc.bmax;
    for j in 0..LANES {
        let d = z[j] - x[j];
        let s = if d > 0.0 { hi[j] - x[j] } else { x[j] - lo[j] };
        let b = d.abs();
        let a = b - s;
        let (zero, capped, active) = piece(b, s, a, c1, c2);
        let share = if capped { s } else { 0.0 };
        fixed[j] = if active { b } else { share };
        k[j] = if active { 1.0 } else { 0.0 };
        let undecided = !zero & !capped & !active;
        if FIRST {
            let inf = f64::INFINITY;
            let valid = (x[j].abs() < inf) & (z[j].abs() < inf) & (x[j] >= lo[j]) & (x[j] <= hi[j]);
            h0[j] = if b < s { b } else { s };
            bm[j] = if b > bm[j] { b } else { bm[j] };
            bad[j] = if valid { 0.0 } else { 1.0 };
            und[j] = undecided & valid;
        } else {
            und[j] = undecided;
        }
    }
    for j in 0..LANES {
        acc.fixed[j] += fixed[j];
        acc.k[j] += k[j];
        if FIRST {
            acc.h0[j] += h0[j];
            acc.bad[j] += bad[j];
        }
    }
    acc.bmax = bm;
    und
}

/// One pass over a stretch of a row (see [`Split`]), pushing its undecided elements onto
/// `cands` (in row order). Lanes accumulate in `f64` in a fixed order (a short tail is
/// padded with elements that add nothing); the undecided elements' sums come from `cands`
/// afterwards (they are few), in row order.
#[inline(always)]
fn stretch_split<T: Real, L: SideAccess<T>, H: SideAccess<T>, const FIRST: bool>(
    row: &Row<'_, T, L, H>,
    c1: f64,
    c2: f64,
    cands: &mut Vec<(f64, f64)>,
) -> Split {
    let n = row.x.len();
    let mut acc = Acc {
        fixed: [0.0; LANES],
        k: [0.0; LANES],
        h0: [0.0; LANES],
        bmax: [0.0; LANES],
        bad: [0.0; LANES],
    };
    let from = cands.len();
    let (xs, zs) = (&row.x[..n], &row.z[..n]);
    let full = n - n % LANES;
    // The lanes' undecided flags are stored (a byte each) and looked at once per span of
    // SPAN_STRETCHES stretches: undecided elements are rare, and testing each stretch's
    // flags took longer than the stretch's arithmetic.
    let mut flags = [[false; LANES]; SPAN_STRETCHES];
    let mut base = 0;
    while base < full {
        let span = base;
        let stretches = ((full - base) / LANES).min(SPAN_STRETCHES);
        for f in flags.iter_mut().take(stretches) {
            prefetch_ahead(xs, base);
            prefetch_ahead(zs, base);
            for side in [row.lo.values(), row.hi.values()].into_iter().flatten() {
                prefetch_ahead(side, base);
            }
            let r = row.sub(base, base + LANES);
            let (xc, zc) = (&xs[base..base + LANES], &zs[base..base + LANES]);
            let x: [f64; LANES] = std::array::from_fn(|j| xc[j].as_f64());
            let z: [f64; LANES] = std::array::from_fn(|j| zc[j].as_f64());
            let lo: [f64; LANES] = std::array::from_fn(|j| r.lo.at(j).as_f64());
            let hi: [f64; LANES] = std::array::from_fn(|j| r.hi.at(j).as_f64());
            *f = split_lanes::<FIRST>(&mut acc, (&x, &z, &lo, &hi), c1, c2);
            base += LANES;
        }
        for (q, f) in flags.iter().take(stretches).enumerate() {
            // one flag per byte (0 or 1): the set bytes are the undecided lanes
            let word = u64::from_le_bytes(f.map(u8::from));
            if word != 0 {
                collect(row, span + q * LANES, word, cands);
            }
        }
    }
    if full < n {
        // padding: x = z = lo = hi = 0 is a valid element with d = 0, which adds nothing
        let r = row.sub(full, n);
        let pad = |j: usize, v: &dyn Fn(usize) -> T| if full + j < n { v(j).as_f64() } else { 0.0 };
        let x: [f64; LANES] = std::array::from_fn(|j| pad(j, &|j| xs[full + j]));
        let z: [f64; LANES] = std::array::from_fn(|j| pad(j, &|j| zs[full + j]));
        let lo: [f64; LANES] = std::array::from_fn(|j| pad(j, &|j| r.lo.at(j)));
        let hi: [f64; LANES] = std::array::from_fn(|j| pad(j, &|j| r.hi.at(j)));
        // the padding is never undecided (`d = 0`: zero)
        let und = split_lanes::<FIRST>(&mut acc, (&x, &z, &lo, &hi), c1, c2);
        collect(row, full, u64::from_le_bytes(und.map(u8::from)), cands);
    }
    let mut out = Split::default();
    for j in 0..LANES {
        out = out
            + Split {
                fixed: acc.fixed[j],
                k: acc.k[j] as u64,
                h0: acc.h0[j],
                bmax: acc.bmax[j],
                bad: acc.bad[j] as u64,
                ..Split::default()
            };
    }
    for &(b, s) in &cands[from..] {
        out.g1 += ramp(b - c1, s);
        out.g2 += ramp(b - c2, s);
        out.k1 += (b - s < c1) as u64;
        out.k2 += (b > c2) as u64;
    }
    out
}

/// Pushes the elements `start + j` of `row` whose byte `j` of `und` is set onto `cands`, in
/// order (read again from the row: the lanes stay in registers).
#[inline(never)]
fn collect<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    start: usize,
    mut und: u64,
    cands: &mut Vec<(f64, f64)>,
) {
    while und != 0 {
        let i = start + (und.trailing_zeros() / 8) as usize;
        cands.push(element(row.x[i], row.z[i], row.lo.at(i), row.hi.at(i)));
        und &= und - 1;
    }
}

multiversion!(stretch_split_best, stretch_split_avx2, stretch_split,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>; const FIRST: bool>,
    (row: &Row<'_, T, L, H>, c1: f64, c2: f64, cands: &mut Vec<(f64, f64)>) -> Split);

/// One pass over the row split at `[c1, c2]`; its undecided elements replace `cands` (in
/// row order). `first`: the first pass over the row, which also validates it and sums
/// `h0` and `bmax`. Long rows run in blocks of [`BLOCK`] elements, in parallel when `par`,
/// their sums added in block order.
fn split<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    (c1, c2): (f64, f64),
    first: bool,
    cands: &mut Vec<(f64, f64)>,
    par: bool,
) -> Split {
    cands.clear();
    let one = |r: &Row<'_, T, L, H>, out: &mut Vec<(f64, f64)>| {
        if first {
            stretch_split_best::<T, L, H, true>(r, c1, c2, out)
        } else {
            stretch_split_best::<T, L, H, false>(r, c1, c2, out)
        }
    };
    let n = row.x.len();
    if n <= BLOCK {
        return one(row, cands);
    }
    let (sums, parts) = fold_range(
        par,
        n.div_ceil(BLOCK),
        (Split::default(), Vec::new()),
        |bi| {
            let mut part = Vec::new();
            let sums = one(&row.sub(bi * BLOCK, n.min((bi + 1) * BLOCK)), &mut part);
            (sums, vec![part])
        },
        |(s, mut p), (s2, p2)| {
            p.extend(p2);
            (s + s2, p)
        },
    );
    for part in parts {
        cands.extend(part);
    }
    sums
}

/// Writes the projection of one row into `y`; returns `lam` (0 when `clip(z)` is inside
/// the ball, infinity at `eps = 0`), or `None` when the row holds invalid values.
pub(super) fn project_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
    st: &mut State,
    par: bool,
) -> Option<f64> {
    let eps = row.eps;
    let guess = if eps <= 0.0 {
        0.0
    } else if st.hint > 0.0 {
        st.hint
    } else {
        subsample_guess(row, st)
    };
    let bracket = (guess * (1.0 - GUESS_WIDTH), guess * (1.0 + GUESS_WIDTH));
    let first = split(row, bracket, true, &mut st.pairs, par);
    if first.bad > 0 {
        return None;
    }
    if eps == 0.0 {
        y.copy_from_slice(row.x);
        return Some(f64::INFINITY);
    }
    if !(first.bmax.is_finite() && first.h0.is_finite()) {
        // `z - x`, a room or their sum overflowed (`f64` data near its limits)
        return Some(project_halved(row, y));
    }
    if first.h0 <= eps {
        clip_z(row, y, par);
        return Some(0.0);
    }
    let lam = locate(row, first, bracket, st, par);
    st.hint = lam;
    apply(row, lam, y, par);
    Some(lam)
}

/// The root of `h(lam) = eps` given the first split (`h(0) > eps > 0`).
fn locate<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    mut sums: Split,
    (mut c1, mut c2): (f64, f64),
    st: &mut State,
    par: bool,
) -> f64 {
    let eps = row.eps;
    // h(lo) > eps >= h(hi)
    let (mut lo, mut hi) = (0.0f64, sums.bmax);
    for pass in 0.. {
        let (g1, g2) = sums.ends(c1, c2);
        if g1 == eps {
            return c1;
        }
        if g2 == eps {
            return c2;
        }
        if g1 > eps && g2 < eps {
            let start = secant((c1, g1), (c2, g2), eps);
            let base = (sums.fixed, sums.k);
            return solve_compact(&mut st.pairs, &mut st.points, base, (c1, c2), start, eps);
        }
        if pass >= SPLIT_PASSES {
            // The last pass split at the bracket [lo, hi] that every earlier pass narrowed, yet
            // h does not cross eps strictly inside it: the bracket has shrunk to one point, or
            // rounding in the sums put h(lo) at or below eps (or h(hi) at or above it). The
            // root is then the end where h meets eps to rounding; another pass at the same
            // bracket would repeat this one forever.
            return if g2 >= eps { c2 } else { c1 };
        }
        // the root lies outside: Newton from the end on its side
        let step = if g2 > eps {
            lo = lo.max(c2);
            let slope = (sums.k + sums.k2) as f64;
            c2 + (g2 - eps) / slope
        } else {
            hi = hi.min(c1);
            let slope = (sums.k + sums.k1) as f64;
            c1 - (eps - g1) / slope
        };
        if pass + 1 >= SPLIT_PASSES {
            // the bracket [lo, hi] holds the root: hand over its undecided elements
            (c1, c2) = (lo, hi);
            sums = split(row, (c1, c2), false, &mut st.pairs, par);
            continue;
        }
        let step = if step > lo && step < hi {
            step
        } else {
            0.5 * (lo + hi)
        };
        c1 = lo.max(step * (1.0 - STEP_WIDTH));
        c2 = hi.min(step * (1.0 + STEP_WIDTH));
        sums = split(row, (c1, c2), false, &mut st.pairs, par);
    }
    unreachable!("the loop returns")
}

/// Where the line through `(c1, g1)` and `(c2, g2)` meets `eps` (`g1 > eps > g2`).
fn secant((c1, g1): (f64, f64), (c2, g2): (f64, f64), eps: f64) -> f64 {
    c1 + (g1 - eps) * ((c2 - c1) / (g1 - g2))
}

/// An estimate of `lam` from [`SUB_BLOCKS`] blocks spread over a long row (0: none; any
/// value is safe: it only decides where the first pass looks).
fn subsample_guess<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    st: &mut State,
) -> f64 {
    let n = row.x.len();
    if n < SUBSAMPLE_MIN {
        return 0.0;
    }
    st.pairs.clear();
    let (mut h0, mut bmax) = (0.0f64, 0.0f64);
    for blk in 0..SUB_BLOCKS {
        let start = blk * (n / SUB_BLOCKS);
        for i in start..start + SUB_BLOCK_LEN {
            let (b, s) = element(row.x[i], row.z[i], row.lo.at(i), row.hi.at(i));
            if b > 0.0 && s > 0.0 && b.is_finite() {
                st.pairs.push((b, s));
                h0 += b.min(s);
                bmax = bmax.max(b);
            }
        }
    }
    let target = row.eps * (SUB_BLOCKS * SUB_BLOCK_LEN) as f64 / n as f64;
    if !(h0 > target && h0.is_finite()) {
        return 0.0;
    }
    let base = (0.0, 0);
    solve_compact(
        &mut st.pairs,
        &mut st.points,
        base,
        (0.0, bmax),
        f64::NAN,
        target,
    )
}

/// The row's projection computed on a copy scaled by 1/2 (exact, but for subnormals), for
/// values so large that `z - x` or the sizes overflow; returns `lam`.
fn project_halved<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    y: &mut [T],
) -> f64 {
    let n = row.x.len();
    let half = |f: &dyn Fn(usize) -> T| (0..n).map(|i| 0.5 * f(i).as_f64()).collect();
    let (x, z): (Vec<f64>, Vec<f64>) = (half(&|i| row.x[i]), half(&|i| row.z[i]));
    let (lo, hi): (Vec<f64>, Vec<f64>) = (half(&|i| row.lo.at(i)), half(&|i| row.hi.at(i)));
    let copy = Row {
        x: &x,
        z: &z,
        lo: SliceSide(&lo[..]),
        hi: SliceSide(&hi[..]),
        eps: 0.5 * row.eps,
    };
    let mut out = vec![0.0f64; n];
    let lam = project_row(&copy, &mut out, &mut State::default(), false)
        .expect("halving keeps a valid row valid");
    for (i, (yi, v)) in y.iter_mut().zip(out).enumerate() {
        // Halving rounds subnormal x and bounds (5e-324 / 2 is 0): an element left at its
        // halved x keeps its own x, and every value is held to the row's own box.
        let v = if v == x[i] {
            row.x[i].as_f64()
        } else {
            2.0 * v
        };
        *yi = T::of_f64(clamp(v, row.lo.at(i).as_f64(), row.hi.at(i).as_f64()));
    }
    2.0 * lam
}

/// `y = clip(z - sign(d) lam)` where `|d| > lam`, else `x`, computed in `f64`.
fn apply<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    lam: f64,
    y: &mut [T],
    par: bool,
) {
    fold_stretches(
        y,
        par,
        |start, y| apply_stretch_best(&row.sub(start, start + y.len()), lam, y),
        |_, _| (),
    );
}

#[inline(always)]
fn apply_stretch<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    lam: f64,
    y: &mut [T],
) {
    let (xs, zs) = (&row.x[..y.len()], &row.z[..y.len()]);
    for i in 0..y.len() {
        let (x, z) = (xs[i].as_f64(), zs[i].as_f64());
        let d = z - x;
        let v = if d > lam {
            z - lam
        } else if d < -lam {
            z + lam
        } else {
            x
        };
        y[i] = T::of_f64(clamp(v, row.lo.at(i).as_f64(), row.hi.at(i).as_f64()));
    }
}

multiversion!(apply_stretch_best, apply_stretch_avx2, apply_stretch,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, lam: f64, y: &mut [T]) -> ());

/// Passes of [`solve_compact`] after which the bracket is returned (a median pass at least
/// halves the breakpoints inside it, so 2 * 64 passes decide any set unless rounding
/// leaves an element undecided).
const MAX_COMPACT_PASSES: usize = 400;

/// Newton passes of [`solve_compact`] that may fail to halve the undecided set before
/// median steps take over.
const SLOW_NEWTON: usize = 2;

/// The root of `h(lam) = eps` on the bracket `[lo, hi]` (`h(lo) > eps >= h(hi)`), where
/// `h(lam) = fixed - k lam + sum f_i(lam)` over the undecided `pairs` `(b_i, s_i)`,
/// starting at `start` (any value: one outside the bracket starts with a median step).
///
/// Each pass evaluates `h` at a candidate, moves one end of the bracket there, and drops
/// the elements the new bracket decides. The candidate is the Newton step from the end
/// that moved, and when `h` is linear up to that step it is the root; after a pass that
/// did not halve the undecided set (past [`SLOW_NEWTON`] of them), the candidate is the
/// median of the breakpoints inside the bracket, which at least halves them. So the work
/// is `O(len(pairs))`.
fn solve_compact(
    pairs: &mut Vec<(f64, f64)>,
    points: &mut Vec<f64>,
    base: (f64, u64),
    bracket: (f64, f64),
    start: f64,
    eps: f64,
) -> f64 {
    solve_compact_counted(pairs, points, base, bracket, start, eps, &mut 0)
}

/// [`solve_compact`], also counting the elements visited (for the tests of its bound).
fn solve_compact_counted(
    pairs: &mut Vec<(f64, f64)>,
    points: &mut Vec<f64>,
    (mut fixed, mut k): (f64, u64),
    (mut lo, mut hi): (f64, f64),
    start: f64,
    eps: f64,
    work: &mut usize,
) -> f64 {
    let mut cand = start;
    let (mut median_next, mut slow) = (false, 0usize);
    for _ in 0..MAX_COMPACT_PASSES {
        if pairs.is_empty() {
            if k == 0 {
                return lo;
            }
            return ((fixed - eps) / k as f64).clamp(lo, hi);
        }
        if median_next || !(cand > lo && cand < hi) {
            cand = median_breakpoint(pairs, points, lo, hi);
        }
        *work += pairs.len();
        // h and its one-sided slopes at `cand`, and the nearest breakpoints of the
        // undecided elements on either side
        let mut acc = [0.0f64; 4];
        let (mut k_right, mut k_left) = (0u64, 0u64);
        let (mut next_up, mut next_down) = (f64::INFINITY, f64::NEG_INFINITY);
        for (j, &(b, s)) in pairs.iter().enumerate() {
            let a = b - s;
            acc[j % 4] += ramp(b - cand, s);
            // compared with the breakpoints as computed, as `next_up` / `next_down` are (a
            // median step lands on one exactly, where `b - cand < s` may disagree)
            k_right += (a <= cand && cand < b) as u64;
            k_left += (a < cand && cand <= b) as u64;
            for bp in [a, b] {
                if bp > cand {
                    next_up = next_up.min(bp);
                } else if bp < cand {
                    next_down = next_down.max(bp);
                }
            }
        }
        let h = fixed - k as f64 * cand + acc.iter().sum::<f64>();
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
        pairs.retain(|&(b, s)| match piece_of(b, s, lo, hi) {
            Piece::Zero => false,
            Piece::Capped => {
                fixed += s;
                false
            }
            Piece::Active => {
                fixed += b;
                k += 1;
                false
            }
            Piece::Undecided => true,
        });
        // Newton passes that do not halve the undecided set are allowed SLOW_NEWTON times
        // (Newton from one end is Michelot's method: it shrinks the set steadily but not
        // always by half); after that such a pass is followed by a median step
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

/// The median of the undecided elements' breakpoints strictly inside `(lo, hi)` (the
/// midpoint when there are none: every piece is linear there up to rounding).
fn median_breakpoint(pairs: &[(f64, f64)], points: &mut Vec<f64>, lo: f64, hi: f64) -> f64 {
    points.clear();
    for &(b, s) in pairs {
        for bp in [b - s, b] {
            if bp > lo && bp < hi {
                points.push(bp);
            }
        }
    }
    if points.is_empty() {
        return 0.5 * (lo + hi);
    }
    let mid = points.len() / 2;
    *points.select_nth_unstable_by(mid, f64::total_cmp).1
}

#[cfg(test)]
mod tests {
    use super::{solve_compact_counted, Piece};

    /// `h(lam)` directly, for checking roots.
    fn h(pairs: &[(f64, f64)], lam: f64) -> f64 {
        pairs.iter().map(|&(b, s)| (b - lam).max(0.0).min(s)).sum()
    }

    fn solve(pairs: &[(f64, f64)], eps: f64) -> (f64, usize) {
        let bmax = pairs.iter().fold(0.0f64, |m, p| m.max(p.0));
        let (mut p, mut pts, mut work) = (pairs.to_vec(), Vec::new(), 0);
        let base = (0.0, 0);
        let lam = solve_compact_counted(
            &mut p,
            &mut pts,
            base,
            (0.0, bmax),
            f64::NAN,
            eps,
            &mut work,
        );
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

    /// The bracket rule against its definition: an element is decided on `[lo, hi]` exactly
    /// when no breakpoint lies strictly inside, and then `f_i` is what its piece says at
    /// both ends.
    #[test]
    fn pieces_follow_the_breakpoints() {
        let vals = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, f64::INFINITY];
        let f = |b: f64, s: f64, lam: f64| (b - lam).max(0.0).min(s);
        for &b in &vals[..7] {
            for &s in &vals {
                for &lo in &vals[..7] {
                    for &hi in &vals[..7] {
                        if hi < lo {
                            continue;
                        }
                        let p = super::piece_of(b, s, lo, hi);
                        let inside = |bp: f64| bp > lo && bp < hi;
                        let movable = b > 0.0 && s > 0.0;
                        assert_eq!(
                            p == Piece::Undecided,
                            movable && (inside(b - s) || inside(b)),
                            "b {b} s {s} [{lo}, {hi}]: {p:?}"
                        );
                        for lam in [lo, hi] {
                            let want = match p {
                                Piece::Zero => 0.0,
                                Piece::Capped => s,
                                Piece::Active => b - lam,
                                Piece::Undecided => continue,
                            };
                            assert_eq!(f(b, s, lam), want, "b {b} s {s} [{lo}, {hi}] at {lam}");
                        }
                    }
                }
            }
        }
    }
}
