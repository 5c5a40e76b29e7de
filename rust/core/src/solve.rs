//! Solving one row: Newton / variable fixing on `t = eta^p` from below, with the radix-select
//! safeguard after a bounded number of passes, and the closed form for `p = inf`.

use std::cell::RefCell;

use crate::bounds::{SideAccess, SliceSide};
use crate::kernel::{
    pow2_steps, row_bin_free, row_collect_bin, row_pass_first, row_pass_inf, row_pass_sat,
    FirstSums, FreeBins, Row, SatSums,
};
use crate::norm::Power;
use crate::real::Real;
use crate::safeguard::{self, crossing, Bins, Cand, Crossing, Fixed};

/// Tuning knobs of the solver.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Newton passes (after the validating pass) before the safeguard takes over.
    pub max_newton_passes: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_newton_passes: 4,
        }
    }
}

/// What solving one row found.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowOutcome {
    /// The scale `eta` (in `f64`).
    pub eta: f64,
    /// Newton passes over the row after the validating pass.
    pub passes: u32,
    /// Whether the safeguard finished the solve.
    pub safeguard: bool,
    /// Whether `eps` was above the largest reachable size (`eta` then saturates everything).
    pub unreachable: bool,
    /// Whether `eta` is the smallest scale that saturates every movable element (`eps` at
    /// or above the largest reachable size).
    pub saturated: bool,
    /// Whether the row holds invalid values (non-finite, or `x` outside its box).
    pub invalid: bool,
    /// `eta` as `(m, k)`, exactly `m * 2^k`, when it came from a rescaled `delta` (subnormal
    /// or huge deltas) or, for `p = inf`, from dividing by a subnormal `|delta_i|`: `eta`
    /// itself may then overflow or underflow `f64`, and the apply scales `delta` instead.
    pub eta_parts: Option<(f64, i32)>,
}

impl RowOutcome {
    fn eta(eta: f64, passes: u32, safeguard: bool) -> Self {
        RowOutcome {
            eta,
            passes,
            safeguard,
            ..Default::default()
        }
    }

    /// The outcome of a row with an invalid element (its first pass counted it).
    fn invalid() -> Self {
        RowOutcome {
            invalid: true,
            ..Default::default()
        }
    }
}

/// Relative slack when deciding that the target is exactly the largest reachable size.
fn reach_slack<T: Real>() -> f64 {
    64.0 * T::EPS
}

/// Rows at least this long first estimate `t` on a subsample.
const SUBSAMPLE_MIN: usize = 8192;
const SUB_BLOCKS: usize = 16;
const SUB_BLOCK_LEN: usize = 64;
/// The bracket the first pass splits the row at, relative to the subsample's estimate of
/// `t` (about 2.5% of the elements of a typical image fall inside).
const GUESS_RATIOS: [f64; 2] = [0.8, 1.25];

/// An estimate of `t` from a few blocks spread over a row of `n` elements, `element(i)`
/// giving `(|delta_i|, room)` (any value is safe: it only decides where the first pass
/// looks; 0 means "no estimate", [`EXPECT_SATURATED`] that the subsample cannot reach its
/// share of the target).
fn subsample_guess<T: Real, P: Power>(
    n: usize,
    element: impl Fn(usize) -> (T, T),
    target: f64,
    pw: P,
) -> f64 {
    if n < SUBSAMPLE_MIN {
        return 0.0;
    }
    let mut cands = Vec::with_capacity(SUB_BLOCKS * SUB_BLOCK_LEN);
    for b in 0..SUB_BLOCKS {
        let start = b * (n / SUB_BLOCKS);
        for i in start..start + SUB_BLOCK_LEN {
            let (a, s) = element(i);
            let (a64, s64) = (a.as_f64(), s.as_f64());
            if a64 > 0.0 && a64.is_finite() && s64 > 0.0 && s64.is_finite() {
                cands.push(Cand::new(a64, s64, pw));
            }
        }
    }
    let share = (SUB_BLOCKS * SUB_BLOCK_LEN) as f64 / n as f64;
    match safeguard::fix_small(&cands, 0.0, 0.0, target * share, pw, 12) {
        Fixed::Solved(Some(t)) | Fixed::Unfinished(t) if t.is_finite() && t > 0.0 => t,
        Fixed::Solved(None) if !cands.is_empty() => EXPECT_SATURATED,
        _ => 0.0,
    }
}

/// The guess (a hint, or a subsample's estimate) that the row's `eps` lies at or above its
/// largest reachable size: its first pass is then [`saturated_first`].
pub(crate) const EXPECT_SATURATED: f64 = f64::INFINITY;

/// Whether a row is too short for a subsample estimate: its first pass splits at the
/// caller's hint (see [`solve_row`]), or at `t = 0` without one.
pub(crate) fn is_short(n: usize) -> bool {
    n < SUBSAMPLE_MIN
}

/// Solves one row for finite `p`.
///
/// The first pass validates the row and splits it at a bracket around an estimate of `t`:
/// the sums over the elements saturated below it and free above it, and the few elements
/// in between. When the bracket holds the answer, it follows exactly from those elements.
/// Otherwise Newton / variable fixing from the best lower bound finishes, with the radix
/// select as a safeguard after [`Options::max_newton_passes`] passes. Long rows estimate
/// `t` on a subsample; short rows ([`is_short`]) take `hint` (a `t` the caller expects,
/// such as the previous row's; 0: none). Any hint gives the exact answer; a good one saves
/// a pass. A guess of [`EXPECT_SATURATED`] makes the first pass the saturating one
/// ([`saturated_first`]).
pub(crate) fn solve_row<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: f64,
    pw: P,
    opts: &Options,
    par: bool,
    hint: f64,
) -> RowOutcome {
    let guess = first_guess(row.len(), eps, pw, hint, |i| row.element(i));
    if guess == EXPECT_SATURATED {
        return saturated_first(row, eps, pw.pow64(eps), pw, opts, par);
    }
    solve_from(row, eps, pw, opts, par, guess)
}

/// [`solve_row`] with the first pass split around `guess` (a finite `t`; 0: at `t = 0`).
fn solve_from<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: f64,
    pw: P,
    opts: &Options,
    par: bool,
    guess: f64,
) -> RowOutcome {
    let bracket = bracket_at::<T, P>(guess, pw);
    let first = row_pass_first(row, pw, bracket, true, par);
    match after_first(first, eps, pw, bracket, row.len()) {
        AfterFirst::Done(out) => out,
        AfterFirst::More(rest) => rest.finish(row, pw, opts, par),
    }
}

/// Where the first pass of a row of `n` elements looks (see [`solve_row`]): `hint` for short
/// rows, a subsample's estimate (from `element(i)`, `(|delta_i|, room)`) for long ones, 0
/// without either, or [`EXPECT_SATURATED`].
pub(crate) fn first_guess<T: Real, P: Power>(
    n: usize,
    eps: f64,
    pw: P,
    hint: f64,
    element: impl Fn(usize) -> (T, T),
) -> f64 {
    if eps <= 0.0 {
        0.0
    } else if is_short(n) {
        if hint > 0.0 {
            hint // positive and finite, or EXPECT_SATURATED
        } else {
            0.0
        }
    } else {
        subsample_guess(n, element, pw.pow64(eps), pw)
    }
}

/// The bracket around `guess` (a finite `t`; 0: empty at zero).
pub(crate) fn bracket_at<T: Real, P: Power>(guess: f64, pw: P) -> (T, T) {
    let [eta_lo, eta_hi] = GUESS_RATIOS.map(|r| T::of_f64(pw.root64(r * guess)));
    // A bracket past T's range would multiply infinity by zero deltas: split at zero instead.
    if eta_hi.is_finite() {
        (eta_lo, eta_hi)
    } else {
        (T::zero(), T::zero())
    }
}

/// What the first pass of [`solve_row`] decided.
pub(crate) enum AfterFirst {
    /// The row is solved (or invalid).
    Done(RowOutcome),
    /// More passes over the row are needed.
    More(Rest),
}

/// The passes a row still needs after its first ([`Rest::finish`] runs them).
pub(crate) struct Rest {
    eps: f64,
    short: bool,
    step: Step,
}

enum Step {
    /// `delta` must be rescaled (its powers leave `T`'s range).
    Rescale(i32),
    /// The answer lies below the first bracket (the first pass's split there).
    Below(Split),
    /// Every movable element saturates.
    Saturated,
    /// The answer lies above the first bracket: the Newton start at its upper end.
    Above((f64, f64, u64, f64)),
}

/// The verdict of the first, validating pass's sums `first` over a row of `n` elements
/// split at `bracket` (from [`bracket_at`]).
pub(crate) fn after_first<T: Real, P: Power>(
    first: FirstSums,
    eps: f64,
    pw: P,
    (eta_lo, eta_hi): (T, T),
    n: usize,
) -> AfterFirst {
    let target = pw.pow64(eps);
    let more = |step| {
        AfterFirst::More(Rest {
            eps,
            short: is_short(n),
            step,
        })
    };
    if first.bad > 0 {
        return AfterFirst::Done(RowOutcome::invalid());
    }
    if eps == 0.0 || first.amax == 0.0 {
        return AfterFirst::Done(RowOutcome::eta(0.0, 0, false));
    }
    if let Some(k) = delta_rescale::<T, P>(first.amax, pw) {
        return more(Step::Rescale(k));
    }
    let split = Split::of(&first, eta_lo, eta_hi, pw);
    match split.locate(target) {
        Located::Below => more(Step::Below(split)),
        // The answer follows from the candidates alone.
        Located::Inside => {
            match safeguard::select(first.cands, first.c_lo, first.m_hi, target, pw) {
                Some(t) => AfterFirst::Done(RowOutcome::eta(pw.root64(t), 0, false)),
                None => more(Step::Saturated),
            }
        }
        Located::Above(start) => more(Step::Above(start)),
    }
}

impl Rest {
    /// The remaining passes over `row` (the row the first pass read, with `delta` stored).
    pub(crate) fn finish<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
        self,
        row: &Row<'_, T, L, H>,
        pw: P,
        opts: &Options,
        par: bool,
    ) -> RowOutcome {
        let target = pw.pow64(self.eps);
        match self.step {
            Step::Rescale(k) => solve_rescaled(row, self.eps, pw, opts, par, k),
            Step::Below(split) => below_guess(row, &split, target, pw, opts, par, self.short),
            Step::Saturated => saturated(row, target, pw, 0, false, par),
            // Short rows: the first bracket was empty at `t = 0`, or the hint was too low.
            Step::Above(start) if self.short => {
                above_first_bracket(row, target, pw, opts, par, start)
            }
            // A missed estimate: Newton from the bracket's upper end. (A bracketed pass here
            // did not pay on long rows: the Newton adversary got 3% slower.)
            Step::Above(start) => newton(row, target, pw, opts, par, start, 0),
        }
    }
}

/// Hints passed from row to row within a group of short rows (see [`solve_row`]): the
/// previous row's `t` per unit of target size (`eps^p`), or that it was saturated (its
/// `eps` out of reach, as every row's is for a `p` large enough), as long as every hint of
/// the group so far was good. Rows in one batch are usually alike (one `eps`, similar images and
/// noise), so the hint's bracket holds most answers and those rows are read once; a row it
/// missed by more than a factor of two turns hints off for the rest of the group (its rows
/// may differ in scale, such as gradients of different sizes, where each miss costs a
/// pass), a nearer miss (sampling noise, which a large `p` amplifies) costs one pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hints {
    t_per_target: f64,
    saturated: bool,
    on: bool,
}

impl Default for Hints {
    fn default() -> Self {
        Hints {
            t_per_target: 0.0,
            saturated: false,
            on: true,
        }
    }
}

impl Hints {
    /// The hint for a row of size `eps` (0: none).
    pub(crate) fn next<P: Power>(&self, pw: P, eps: f64) -> f64 {
        if !self.on {
            0.0
        } else if self.saturated {
            EXPECT_SATURATED
        } else {
            let hint = self.t_per_target * pw.pow64(eps);
            if hint.is_finite() {
                hint
            } else {
                0.0
            }
        }
    }

    /// Takes note of a row solved with `hint` (from [`Hints::next`]).
    pub(crate) fn record<P: Power>(&mut self, pw: P, eps: f64, hint: f64, out: &RowOutcome) {
        let target = pw.pow64(eps);
        self.saturated = out.saturated && !out.invalid;
        // The safeguard's answers are exact too: a batch of alike hard rows (the Newton
        // adversary) pays for the safeguard on the first row of each group only.
        let exact = !(out.saturated || out.invalid);
        // A miss by less than a factor of two (rows alike but for sampling noise, which a
        // large `p` amplifies) keeps hints on: the next pass starts next to the answer.
        let t = pw.pow64(out.eta);
        let near = exact && hint.is_finite() && t >= 0.5 * hint && t <= 2.0 * hint;
        if hint > 0.0 && out.passes > 0 && !near {
            self.on = false;
        }
        let ratio = t / target;
        self.t_per_target = if exact && t > 0.0 && ratio.is_finite() {
            ratio
        } else {
            0.0
        };
    }
}

/// How far above the Newton step from the first pass the second pass's bracket reaches,
/// as a ratio of `t`. Newton from the first pass undershoots by the size clipping takes
/// away (`t*` is 1.0-1.3 times the step for perturbations of 1-20% of the range per
/// element); 1.5 holds the answer for those with a few percent of the elements inside.
const SECOND_BRACKET_RATIO: f64 = 1.5;

/// The first pass's split of a row at a bracket of `t`, and the sizes `g` at its ends.
struct Split {
    g_lo: f64,
    g_hi: f64,
    /// `t` at the bracket's lower end, and the weight free there (`g`'s slope above it).
    t_lo: f64,
    m_lo: f64,
    /// The Newton start at the upper end: `(sum c, sum w, saturated count, t)`.
    above: (f64, f64, u64, f64),
}

/// Where the target size lies relative to a [`Split`]'s bracket.
enum Located {
    Below,
    Inside,
    Above((f64, f64, u64, f64)),
}

impl Split {
    fn of<T: Real, P: Power>(first: &FirstSums, eta_lo: T, eta_hi: T, pw: P) -> Split {
        let (t_lo, t_hi) = (pw.pow64(eta_lo.as_f64()), pw.pow64(eta_hi.as_f64()));
        let (w_in, c_in) = first
            .cands
            .iter()
            .fold((0.0, 0.0), |(w, c), k| (w + k.w, c + k.c));
        // At or above the bracket every candidate saturates at its upper end.
        let nsat_hi = first.nsat_lo + first.cands.len() as u64;
        Split {
            g_lo: first.c_lo + t_lo * (first.m_hi + w_in),
            g_hi: first.c_lo + c_in + t_hi * first.m_hi,
            t_lo,
            m_lo: first.m_hi + w_in,
            above: (first.c_lo + c_in, first.m_hi, nsat_hi, t_hi),
        }
    }

    fn locate(&self, target: f64) -> Located {
        if target < self.g_lo {
            Located::Below
        } else if target < self.g_hi {
            Located::Inside
        } else {
            Located::Above(self.above)
        }
    }
}

/// The answer lies below a guess's bracket (a hint or an estimate that was too high). `g`
/// is concave with `g(0) = 0`, so the chord from the origin to the bracket's lower end lies
/// below it and the tangent there above it: the answer lies in
/// `[t_lo - (g_lo - target) / m_lo, target t_lo / g_lo]`. When that is narrow (the guess
/// was close), one pass split at it finds the answer; otherwise, or when rounding puts the
/// answer outside, the row goes on as one without an estimate ([`below_bracket`]).
fn below_guess<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    split: &Split,
    target: f64,
    pw: P,
    opts: &Options,
    par: bool,
    short: bool,
) -> RowOutcome {
    let (t_lo, g_lo, m_lo) = (split.t_lo, split.g_lo, split.m_lo);
    let t_hi = target * t_lo / g_lo;
    let t_below = if m_lo > 0.0 {
        t_lo - (g_lo - target) / m_lo
    } else {
        0.0
    };
    if !(t_hi.is_finite() && t_below >= GUESS_RATIOS[0] * t_hi && opts.max_newton_passes > 0) {
        return below_bracket(row, target, pw, opts, par, short);
    }
    let [eta_lo, eta_hi] = [t_below, t_hi].map(|v| T::of_f64(pw.root64(v)));
    let second = row_pass_first(row, pw, (eta_lo, eta_hi), false, par);
    let out = match Split::of(&second, eta_lo, eta_hi, pw).locate(target) {
        Located::Below => below_bracket(row, target, pw, opts, par, short),
        Located::Inside => inside_bracket(row, second, target, pw, par),
        Located::Above(start) => newton(row, target, pw, opts, par, start, 0),
    };
    RowOutcome {
        passes: out.passes + 1,
        ..out
    }
}

/// The answer lies below the first bracket: the sums at `t = 0` (one more pass), then as a
/// row without an estimate: Newton from there, or for a short row the bracketed pass of
/// [`above_first_bracket`].
fn below_bracket<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    target: f64,
    pw: P,
    opts: &Options,
    par: bool,
    short: bool,
) -> RowOutcome {
    let zero = row_pass_first(row, pw, (T::zero(), T::zero()), false, par);
    let start = (zero.c_lo, zero.m_hi, zero.nsat_lo, 0.0);
    let out = if short {
        above_first_bracket(row, target, pw, opts, par, start)
    } else {
        newton(row, target, pw, opts, par, start, 0)
    };
    RowOutcome {
        passes: out.passes + 1,
        ..out
    }
}

/// The answer lies inside a pass's bracket: it follows from the candidates alone.
fn inside_bracket<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    split: FirstSums,
    target: f64,
    pw: P,
    par: bool,
) -> RowOutcome {
    match safeguard::select(split.cands, split.c_lo, split.m_hi, target, pw) {
        Some(t) => RowOutcome::eta(pw.root64(t), 0, false),
        None => saturated(row, target, pw, 0, false, par),
    }
}

/// The answer lies above a short row's first bracket (empty at `t = 0`, or around a hint
/// that was too low). The next pass brackets the Newton step from there, which is a lower
/// bound of the answer, up to [`SECOND_BRACKET_RATIO`] times it: most rows end there,
/// without the Newton pass that only confirms the last step. Above that bracket, Newton
/// goes on from its upper end.
fn above_first_bracket<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    target: f64,
    pw: P,
    opts: &Options,
    par: bool,
    start: (f64, f64, u64, f64),
) -> RowOutcome {
    let (c, m, _, t) = start;
    if opts.max_newton_passes == 0 || m <= 0.0 {
        return newton(row, target, pw, opts, par, start, 0);
    }
    let t_step = ((target - c) / m).max(t);
    let [eta_lo, eta_hi] = [t_step, SECOND_BRACKET_RATIO * t_step].map(|v| T::of_f64(pw.root64(v)));
    if !eta_hi.is_finite() {
        return newton(row, target, pw, opts, par, start, 0);
    }
    let second = row_pass_first(row, pw, (eta_lo, eta_hi), false, par);
    match Split::of(&second, eta_lo, eta_hi, pw).locate(target) {
        // Only by rounding (the step is a lower bound): plain Newton from the old start.
        Located::Below => newton(row, target, pw, opts, par, start, 1),
        Located::Inside => RowOutcome {
            passes: 1,
            ..inside_bracket(row, second, target, pw, par)
        },
        Located::Above(start) => newton(row, target, pw, opts, par, start, 1),
    }
}

/// The exponent `k` such that `2^k` brings the largest `|delta_i|` into `[0.5, 1)`, when its `p`-th
/// power lies outside `2^-POW_RANGE ..= 2^POW_RANGE` (the sums of `|delta_i|^p` in `T` would
/// overflow, or underflow to zero).
fn delta_rescale<T: Real, P: Power>(amax: f64, pw: P) -> Option<i32> {
    let w = pw.pow64(amax);
    let limit = 2f64.powi(T::POW_RANGE);
    if (1.0 / limit..=limit).contains(&w) {
        return None;
    }
    // amax = m * 2^e with m in [1, 2): scale by 2^-(e + 1) (none for a row already scaled
    // so, whose pow range is as good as p allows)
    let k = -(amax.log2().floor() as i32 + 1);
    (k != 0).then_some(k)
}

/// Solves the row on an `f64` copy with `delta` scaled by `2^k` (a power of two, so the
/// copy is exact for `f32` rows; for `f64` rows it loses only elements `2^-1000` below the
/// largest, whose share of the size is below precision). The clipped size at `eta` for the
/// copy equals the size at `eta * 2^k` for the row, so the answer scales back exactly.
/// A saturated answer (`eps` out of reach) is taken from the row itself: it depends on the
/// smallest deltas, which the copy may have lost.
fn solve_rescaled<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: f64,
    pw: P,
    opts: &Options,
    par: bool,
    k: i32,
) -> RowOutcome {
    let (a1, a2) = pow2_steps(k);
    let d: Vec<f64> = row.d.iter().map(|&v| v.as_f64() * a1 * a2).collect();
    let x: Vec<f64> = row.x.iter().map(|&v| v.as_f64()).collect();
    let side = |s: &dyn Fn(usize) -> T| (0..row.len()).map(|i| s(i).as_f64()).collect();
    let (lo, hi): (Vec<f64>, Vec<f64>) = (side(&|i| row.lo.at(i)), side(&|i| row.hi.at(i)));
    let copy = Row {
        x: &x,
        d: &d,
        lo: SliceSide(&lo[..]),
        hi: SliceSide(&hi[..]),
    };
    let out = solve_row(&copy, eps, pw, opts, par, 0.0);
    if out.saturated {
        return RowOutcome {
            passes: out.passes,
            ..saturated(row, pw.pow64(eps), pw, out.passes, out.safeguard, par)
        };
    }
    RowOutcome {
        eta: out.eta * a1 * a2,
        eta_parts: Some((out.eta, k)),
        ..out
    }
}

/// Newton / variable fixing from the lower bound `t` whose pass gave `(c, m, nsat)`, after
/// `passes_done` passes (counted against [`Options::max_newton_passes`]).
fn newton<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    target: f64,
    pw: P,
    opts: &Options,
    par: bool,
    start: (f64, f64, u64, f64),
    passes_done: u32,
) -> RowOutcome {
    let (mut c, mut m, mut nsat, mut t) = start;
    let mut passes = passes_done;
    loop {
        if m <= 0.0 {
            return saturated(row, target, pw, passes, false, par);
        }
        let t_new = ((target - c) / m).max(t);
        if passes >= opts.max_newton_passes {
            return finish_with_safeguard(row, target, pw, t, passes, par);
        }
        let eta = pw.root64(t_new);
        if !T::of_f64(eta).is_finite() {
            // A step past the range of T (a tiny last weight): a pass at eta = inf would
            // compare `room <= inf * 0` (NaN) for zero deltas and could stop on a wrong
            // count, so the exact safeguard finishes from the last finite iterate.
            // Found by the fuzzer (rust/fuzz/corpus/scale/regress-newton-overflow).
            return finish_with_safeguard(row, target, pw, t, passes, par);
        }
        // An empty bracket at eta: the plain Newton sums, through the split kernels.
        let e = T::of_f64(eta);
        let sums = row_pass_first(row, pw, (e, e), false, par);
        passes += 1;
        if sums.nsat_lo == nsat {
            return RowOutcome::eta(eta, passes, false);
        }
        (c, m, nsat, t) = (sums.c_lo, sums.m_hi, sums.nsat_lo, t_new);
    }
}

/// Hands the elements still free at `t` to the radix select.
///
/// Its first level reads the row itself instead of a list of every free element: one pass
/// bins the free elements by the top bits of their key (`sum w`, `sum c` per bin, eight bins
/// per binade), a second collects only the bin where `g` crosses the target. A list of all
/// free elements (the adversary's whole background) cost more than the Newton passes
/// before it.
fn finish_with_safeguard<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    target: f64,
    pw: P,
    t: f64,
    passes: u32,
    par: bool,
) -> RowOutcome {
    let eta_t = T::of_f64(pw.root64(t));
    let (mut sw, mut sc) = take_bin_tables();
    let mut bins = Bins::new(&mut sw, &mut sc);
    let FreeBins {
        c_base,
        e_lo,
        e_hi,
        key_hi,
    } = row_bin_free(row, pw, eta_t, MANTISSA_BITS, &mut bins);
    bins.flush();
    let answer = if e_lo > e_hi {
        safeguard::select(Vec::new(), c_base, 0.0, target, pw)
    } else {
        let base = (e_lo as u64) << MANTISSA_BITS;
        let range = (base, key_hi, MANTISSA_BITS);
        match crossing(
            &mut sw[e_lo..=e_hi],
            &sc[e_lo..=e_hi],
            range,
            (c_base, 0.0),
            target,
            pw,
        ) {
            Crossing::In {
                bucket,
                c_below,
                m_above,
            } => {
                let keep = row_collect_bin(row, pw, eta_t, MANTISSA_BITS, e_lo + bucket);
                safeguard::select(keep, c_below, m_above, target, pw)
            }
            Crossing::Above { .. } => None,
        }
    };
    if e_lo <= e_hi {
        sw[e_lo..=e_hi].fill(0.0);
        sc[e_lo..=e_hi].fill(0.0);
    }
    BIN_TABLES.with(|t| *t.borrow_mut() = (sw, sc));
    match answer {
        Some(t_final) => RowOutcome::eta(pw.root64(t_final.max(t)), passes, true),
        None => saturated(row, target, pw, passes, true, par),
    }
}

/// The bins of the safeguard's first level: the bits of a non-negative `f64` key above
/// `MANTISSA_BITS` (its exponent and top three mantissa bits, eight bins per binade), and
/// their number.
const MANTISSA_BITS: u32 = 49;
const BINS: usize = 1 << (63 - MANTISSA_BITS);

thread_local! {
    /// This thread's bin tables (`sum w`, `sum c`), all zero between uses: zeroing 2 x 128
    /// KiB per row cost more than the safeguard's work on rows of a few thousand elements.
    /// Each use clears only the bins it touched.
    static BIN_TABLES: RefCell<(Vec<f64>, Vec<f64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Takes this thread's zeroed bin tables (fresh ones if another use on this thread holds
/// them, or a panic lost them).
fn take_bin_tables() -> (Vec<f64>, Vec<f64>) {
    let (sw, sc) = BIN_TABLES.with(|t| std::mem::take(&mut *t.borrow_mut()));
    if sw.len() == BINS && sc.len() == BINS {
        (sw, sc)
    } else {
        (vec![0f64; BINS], vec![0f64; BINS])
    }
}

/// Every movable element saturates: the smallest eta reaching the largest size.
fn saturated<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    target: f64,
    pw: P,
    passes: u32,
    safeguard: bool,
    par: bool,
) -> RowOutcome {
    let sums = row_pass_sat(row, pw, false, par);
    saturated_of::<T>(&sums, target, passes, safeguard)
}

/// The first pass of a row expected to saturate ([`EXPECT_SATURATED`]): validates the row
/// and sums the caps of every movable element (what [`saturated`] sums). A target at or
/// above that largest size is out of reach, and the row is solved in this one pass;
/// otherwise the row is solved as one without a guess (one pass more).
fn saturated_first<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: f64,
    target: f64,
    pw: P,
    opts: &Options,
    par: bool,
) -> RowOutcome {
    let sums = row_pass_sat(row, pw, true, par);
    if sums.bad > 0 {
        return RowOutcome::invalid();
    }
    if sums.amax == 0.0 {
        return RowOutcome::eta(0.0, 0, false);
    }
    // Deltas whose powers leave T's range take the rescaled path, which needs the pass. A
    // zero total with moving elements (rooms whose powers underflow T, or no room at all)
    // takes it too, so that the verdict is the one the row gets without a hint.
    if target >= sums.c_total
        && sums.c_total > 0.0
        && delta_rescale::<T, P>(sums.amax, pw).is_none()
    {
        return saturated_of::<T>(&sums, target, 0, false);
    }
    let out = solve_from(row, eps, pw, opts, par, 0.0);
    RowOutcome {
        passes: out.passes + 1,
        ..out
    }
}

/// The saturated outcome from the sums of a saturating pass.
fn saturated_of<T: Real>(sums: &SatSums, target: f64, passes: u32, safeguard: bool) -> RowOutcome {
    RowOutcome {
        eta: sums.key_max,
        passes,
        safeguard,
        unreachable: target > sums.c_total * (1.0 + reach_slack::<T>()),
        saturated: true,
        invalid: false,
        // Past `f64`'s range only for subnormal deltas; an infinite eta saturates the same
        // elements (all that move).
        eta_parts: None,
    }
}

/// Solves one row for `p = inf`: `eta = eps / max{|delta_i| : s_i >= eps}`.
pub(crate) fn solve_row_inf<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: f64,
    par: bool,
) -> RowOutcome {
    let sums = row_pass_inf(row, T::of_f64(eps), par);
    if sums.bad > 0 {
        return RowOutcome::invalid();
    }
    if eps == 0.0 || sums.nmov == 0 {
        return RowOutcome::eta(0.0, 0, false);
    }
    if sums.amax > 0.0 {
        let (eta, eta_parts) = quotient(eps, sums.amax);
        return RowOutcome {
            eta_parts,
            ..RowOutcome::eta(eta, 0, false)
        };
    }
    // Unreachable: the largest room, reached first by the fastest of its elements.
    let (s_max, a_best) = (sums.s_max, sums.a_at_s_max);
    let (eta, eta_parts) = if s_max > 0.0 {
        quotient(s_max, a_best)
    } else {
        (0.0, None)
    };
    RowOutcome {
        eta,
        passes: 0,
        safeguard: false,
        unreachable: eps > s_max * (1.0 + reach_slack::<T>()),
        saturated: true,
        invalid: false,
        eta_parts,
    }
}

/// `num / den` (both positive and finite) and, when `den` is subnormal, the quotient as
/// `(m, k)` with `m * 2^k` exact (the quotient itself may overflow `f64`).
fn quotient(num: f64, den: f64) -> (f64, Option<(f64, i32)>) {
    if den.is_normal() {
        return (num / den, None);
    }
    // Scaling a subnormal by a power of two is exact; 2^600 makes any of them normal.
    const K: i32 = 600;
    let m = num / (den * 2f64.powi(K));
    (m * 2f64.powi(K), Some((m, K)))
}
