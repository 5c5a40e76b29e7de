//! The streaming passes over one row: branch-free, fixed-width lanes the compiler vectorises,
//! partial sums combined in a fixed order so results never depend on the thread count.
// Explicit lane indices (`for k in 0..LANES`) are the shape the vectoriser needs.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::avx2::{Chunk, Lanes, Side};
use crate::bounds::SideAccess;
use crate::norm::Power;
use crate::real::Real;
use crate::safeguard::{Bins, Cand};
use crate::simd::prefetch_ahead;
use crate::solve::pow2_steps;

/// Elements summed in `T` lanes before the chunk's sum is added in `f64`.
pub const CHUNK: usize = 1024;
/// Elements per parallel work item inside one long row (a multiple of [`CHUNK`]).
pub const BLOCK: usize = 64 * CHUNK;
const LANES: usize = 16;

/// One row's data: `x`, `delta` and the two sides of its box.
#[derive(Clone, Copy)]
pub(crate) struct Row<'a, T, L, H> {
    pub x: &'a [T],
    pub d: &'a [T],
    pub lo: L,
    pub hi: H,
}

impl<'a, T: Real, L: SideAccess<T>, H: SideAccess<T>> Row<'a, T, L, H> {
    pub fn len(&self) -> usize {
        self.x.len()
    }

    fn sub(&self, start: usize, end: usize) -> Row<'a, T, L, H> {
        Row {
            x: &self.x[start..end],
            d: &self.d[start..end],
            lo: self.lo.sub(start, end - start),
            hi: self.hi.sub(start, end - start),
        }
    }

    /// `(|delta_i|, room to the bound in delta_i's direction)` for element `i`.
    #[inline(always)]
    pub fn element(&self, i: usize) -> (T, T) {
        let (x, d) = (self.x[i], self.d[i]);
        (d.abs(), room(x, d, self.lo.at(i), self.hi.at(i)))
    }
}

/// Prefetches the streams of `row` (x, delta and per-element bounds) ahead of element `i`.
#[inline(always)]
fn prefetch_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(row: &Row<'_, T, L, H>, i: usize) {
    prefetch_ahead(row.x, i);
    prefetch_ahead(row.d, i);
    for side in [row.lo.values(), row.hi.values()].into_iter().flatten() {
        prefetch_ahead(side, i);
    }
}

#[inline(always)]
pub(crate) fn room<T: Real>(x: T, d: T, lo: T, hi: T) -> T {
    if d > T::zero() {
        hi - x
    } else {
        x - lo
    }
}

/// Branch-free (non-short-circuit) so the lane loops stay vectorised.
#[inline(always)]
fn is_bad<T: Real>(x: T, d: T, lo: T, hi: T) -> u32 {
    let inf = T::infinity();
    let ok = (x.abs() < inf) & (d.abs() < inf) & (x >= lo) & (x <= hi);
    (!ok) as u32
}

/// Lane accumulators of the `p = inf` pass over a chunk.
struct InfLanes<T> {
    eps: T,
    amax: [T; LANES],
    nmov: [u32; LANES],
    bad: [u32; LANES],
}

impl<T: Real> InfLanes<T> {
    #[inline(always)]
    fn push(&mut self, k: usize, x: T, d: T, lo: T, hi: T) {
        let zero = T::zero();
        let a = d.abs();
        let s = room(x, d, lo, hi);
        // `max` of a select, not a conditional assignment: the latter becomes a masked
        // store, which keeps the lanes in memory and stalls every iteration.
        let take = (a > zero) & (s >= self.eps);
        self.amax[k] = self.amax[k].max(if take { a } else { zero });
        self.nmov[k] += (a > zero) as u32;
        self.bad[k] += is_bad(x, d, lo, hi);
    }

    #[inline(always)]
    fn finish(self) -> InfSums {
        let mut out = InfSums::default();
        for k in 0..LANES {
            out.amax = out.amax.max(self.amax[k].as_f64());
            out.nmov += self.nmov[k] as u64;
            out.bad += self.bad[k] as u64;
        }
        out
    }
}

/// Lane accumulators for the saturating `eta` (every movable element saturated): the
/// largest key `s_i / |delta_i|` and `sum s_i^p` over movable elements; for `p = inf` the
/// largest room and the largest `|delta_i|` among the elements having it.
struct SatLanes<T, P> {
    pw: P,
    key: [T; LANES],
    c: [T; LANES],
    smax: [T; LANES],
    a_at: [T; LANES],
    /// The rooms of the current block's moving elements (0 for the others), raised to
    /// the power p and added to `c` once the block is complete (see [`SatLanes::flush`]).
    pend: [T; LANES],
}

/// Sums of [`SatLanes`] over a row.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SatSums {
    pub key_max: f64,
    pub c_total: f64,
    pub s_max: f64,
    pub a_at_s_max: f64,
}

impl std::ops::Add for SatSums {
    type Output = SatSums;
    fn add(self, o: SatSums) -> SatSums {
        let (s_max, a_at_s_max) = best_room((self.s_max, self.a_at_s_max), (o.s_max, o.a_at_s_max));
        SatSums {
            key_max: self.key_max.max(o.key_max),
            c_total: self.c_total + o.c_total,
            s_max,
            a_at_s_max,
        }
    }
}

/// The larger room, and on a tie the larger `|delta|` (it reaches the room first).
#[inline(always)]
fn best_room<F: PartialOrd + Copy>(u: (F, F), v: (F, F)) -> (F, F) {
    let take_v = (v.0 > u.0) | ((v.0 == u.0) & (v.1 > u.1));
    if take_v {
        v
    } else {
        u
    }
}

impl<T: Real, P: Power> SatLanes<T, P> {
    #[inline(always)]
    fn new(pw: P) -> Self {
        let z = T::zero();
        SatLanes {
            pw,
            key: [z; LANES],
            c: [z; LANES],
            smax: [z; LANES],
            a_at: [z; LANES],
            pend: [z; LANES],
        }
    }

    /// Adds the powers of the pending rooms to `c`, in a loop of their own (so that a `p`
    /// outside {1, 2} vectorises too); `pow(0) = 0`, so flushing twice adds nothing.
    #[inline(always)]
    fn flush(&mut self) {
        for k in 0..LANES {
            self.c[k] = self.c[k] + self.pw.pow(self.pend[k]);
            self.pend[k] = T::zero();
        }
    }

    #[inline(always)]
    fn push(&mut self, k: usize, x: T, d: T, lo: T, hi: T) {
        let zero = T::zero();
        let a = d.abs();
        let s = room(x, d, lo, hi);
        let mov = a > zero;
        let key = s / a;
        self.key[k] = self.key[k].max(if mov { key } else { zero });
        // Immobile elements enter as (room 0, |delta| 0), which never wins.
        let s_in = if mov { s } else { zero };
        self.pend[k] = s_in;
        let (sm, am) = best_room((self.smax[k], self.a_at[k]), (s_in, a));
        self.smax[k] = sm;
        self.a_at[k] = am;
    }

    #[inline(always)]
    fn finish(mut self) -> SatSums {
        self.flush(); // a last, partial block
        let mut out = SatSums::default();
        for k in 0..LANES {
            out = out
                + SatSums {
                    key_max: self.key[k].as_f64(),
                    c_total: self.c[k].as_f64(),
                    s_max: self.smax[k].as_f64(),
                    a_at_s_max: self.a_at[k].as_f64(),
                };
        }
        out
    }
}

#[inline(always)]
fn chunk_sat<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
) -> SatSums {
    let mut lanes = SatLanes::<T, P>::new(pw);
    let n = row.len();
    let full = n / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        prefetch_row(row, base);
        let (xs, ds) = (&row.x[base..base + LANES], &row.d[base..base + LANES]);
        let (lo, hi) = (row.lo.sub(base, LANES), row.hi.sub(base, LANES));
        for k in 0..LANES {
            lanes.push(k, xs[k], ds[k], lo.at(k), hi.at(k));
        }
        lanes.flush();
    }
    for i in full..n {
        lanes.push(i - full, row.x[i], row.d[i], row.lo.at(i), row.hi.at(i));
    }
    lanes.finish()
}

/// The saturating quantities of a whole row (see [`SatLanes`]).
pub(crate) fn row_pass_sat<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    par: bool,
) -> SatSums {
    fold_chunks(row, par, |r| chunk_sat_best(r, pw))
}

/// Sums of the first, validating pass, split at the bracket `(eta_lo, eta_hi]`: elements
/// saturated at `eta_lo` enter by their caps, elements still free at `eta_hi` by their
/// weights, and the few whose breakpoint lies inside the bracket come back as candidates.
/// With the guesses around the subsample's estimate, the exact answer then follows from
/// the candidates alone, without a second pass over the row.
#[derive(Debug, Default)]
pub(crate) struct FirstSums {
    /// `sum c_i` over elements saturated at `eta_lo` (`s_i <= eta_lo |delta_i|`).
    pub c_lo: f64,
    /// `sum w_i` over elements free at `eta_hi` (`s_i > eta_hi |delta_i|`).
    pub m_hi: f64,
    /// Number of elements saturated at `eta_lo`.
    pub nsat_lo: u64,
    /// The valid elements between the two.
    pub cands: Vec<Cand>,
    /// Nonzero when the chunk holds invalid elements (the other fields are then
    /// meaningless).
    pub bad: u64,
    /// The largest `|delta_i|` (zero: nothing moves).
    pub amax: f64,
}

impl std::ops::Add for FirstSums {
    type Output = FirstSums;
    fn add(mut self, mut o: FirstSums) -> FirstSums {
        if self.cands.is_empty() {
            std::mem::swap(&mut self.cands, &mut o.cands);
        } else {
            self.cands.extend(o.cands);
        }
        FirstSums {
            c_lo: self.c_lo + o.c_lo,
            m_hi: self.m_hi + o.m_hi,
            nsat_lo: self.nsat_lo + o.nsat_lo,
            cands: self.cands,
            bad: self.bad + o.bad,
            amax: self.amax.max(o.amax),
        }
    }
}

#[inline(always)]
fn chunk_first<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>, const VALIDATE: bool>(
    row: &Row<'_, T, L, H>,
    pw: P,
    eta_lo: T,
    eta_hi: T,
) -> FirstSums {
    let zero = T::zero();
    let mut c_l = [zero; LANES];
    let mut m_l = [zero; LANES];
    let mut nsat = [0u32; LANES];
    let mut amax = [zero; LANES];
    let mut bad = [0u32; LANES];
    let mut cands = Vec::new();
    let n = row.len();
    let mut base = 0;
    while base < n {
        prefetch_row(row, base);
        let len = LANES.min(n - base);
        let r = row.sub(base, base + len);
        let mut inside = 0u32;
        // the value each lane raises to the power p (its room when saturated, else its
        // |delta|) and where the power goes: computed after the lanes, in a loop of its own,
        // so that a p outside {1, 2} vectorises too
        let mut base_v = [zero; LANES];
        let mut to_c = [false; LANES];
        let mut to_m = [false; LANES];
        let mut lane = |k: usize, x: T, d: T, lo: T, hi: T| {
            let a = d.abs();
            let s = room(x, d, lo, hi);
            let sat_lo = s <= eta_lo * a;
            let free_hi = s > eta_hi * a;
            let b = if VALIDATE { is_bad(x, d, lo, hi) } else { 0 };
            base_v[k] = if sat_lo { s } else { a };
            to_c[k] = sat_lo;
            to_m[k] = free_hi;
            nsat[k] += sat_lo as u32;
            if VALIDATE {
                amax[k] = if a > amax[k] { a } else { amax[k] };
                bad[k] |= b;
            }
            inside |= ((!sat_lo & !free_hi & (b == 0)) as u32) << k;
        };
        if len == LANES {
            let (xs, ds) = (&r.x[..LANES], &r.d[..LANES]);
            for k in 0..LANES {
                lane(k, xs[k], ds[k], r.lo.at(k), r.hi.at(k));
            }
        } else {
            for k in 0..len {
                lane(k, r.x[k], r.d[k], r.lo.at(k), r.hi.at(k));
            }
        }
        for k in 0..LANES {
            let v = pw.pow(base_v[k]);
            c_l[k] = c_l[k] + if to_c[k] { v } else { zero };
            m_l[k] = m_l[k] + if to_m[k] { v } else { zero };
        }
        while inside != 0 {
            let k = inside.trailing_zeros() as usize;
            inside &= inside - 1;
            let (a, s) = r.element(k);
            cands.push(Cand::new(a.as_f64(), s.as_f64(), pw));
        }
        base += len;
    }
    let mut out = FirstSums {
        cands,
        ..Default::default()
    };
    for k in 0..LANES {
        out.c_lo += c_l[k].as_f64();
        out.m_hi += m_l[k].as_f64();
        out.nsat_lo += nsat[k] as u64;
        out.bad += bad[k] as u64;
        out.amax = out.amax.max(amax[k].as_f64());
    }
    out
}

/// A pass over a row split at the bracket `(eta_lo, eta_hi]` (see [`FirstSums`]); with
/// `validate` (the first pass) it also validates the row and finds the largest `|delta|`.
pub(crate) fn row_pass_first<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    (eta_lo, eta_hi): (T, T),
    validate: bool,
    par: bool,
) -> FirstSums {
    #[cfg(target_arch = "x86_64")]
    if let Some(p2) = pw.is_p2() {
        let bracket = (eta_lo.as_f64(), eta_hi.as_f64());
        let sums = avx2_first::<f32, _, _, _>(row, p2, bracket, validate, par)
            .or_else(|| avx2_first::<f64, _, _, _>(row, p2, bracket, validate, par));
        if let Some(sums) = sums {
            return sums;
        }
    }
    if validate {
        fold_chunks(row, par, |r| {
            chunk_first_best::<T, P, L, H, true>(r, pw, eta_lo, eta_hi)
        })
    } else {
        fold_chunks(row, par, |r| {
            chunk_first_best::<T, P, L, H, false>(r, pw, eta_lo, eta_hi)
        })
    }
}

/// [`row_pass_first`] with the AVX2 kernels of `E`, or `None` when the row's elements are
/// not `E` or the CPU lacks AVX2.
#[cfg(target_arch = "x86_64")]
fn avx2_first<E: Lanes, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
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
#[cfg(target_arch = "x86_64")]
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
#[cfg(target_arch = "x86_64")]
use with_sides;

/// The row as `E` data on a CPU with AVX2 and FMA: the case the hand-written kernels of
/// `avx2` take.
#[cfg(target_arch = "x86_64")]
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

/// Runs `f` on every [`CHUNK`] of the row and adds the results in row order; blocks of
/// [`BLOCK`] elements run in parallel when `par` is set. The grouping is fixed by the row
/// length alone, so the result is bitwise the same for any thread count.
pub(crate) fn fold_chunks<'a, T, L, H, R, F>(row: &Row<'a, T, L, H>, par: bool, f: F) -> R
where
    T: Real,
    L: SideAccess<T>,
    H: SideAccess<T>,
    R: Default + Send,
    F: Fn(&Row<'a, T, L, H>) -> R + Sync,
    R: std::ops::Add<Output = R>,
{
    let n = row.len();
    let block = |bi: usize| {
        let end = n.min((bi + 1) * BLOCK);
        let mut acc = R::default();
        let mut start = bi * BLOCK;
        while start < end {
            let ce = end.min(start + CHUNK);
            acc = acc + f(&row.sub(start, ce));
            start = ce;
        }
        acc
    };
    let nblocks = n.div_ceil(BLOCK);
    if par && nblocks > 1 {
        let parts: Vec<R> = (0..nblocks).into_par_iter().map(block).collect();
        parts.into_iter().fold(R::default(), |a, b| a + b)
    } else {
        (0..nblocks).map(block).fold(R::default(), |a, b| a + b)
    }
}

/// What the safeguard's binning pass found (see [`bin_free`]).
pub(crate) struct FreeBins {
    /// `sum c_i` over the moving elements saturated at `eta_t`, in element order.
    pub c_base: f64,
    /// The lowest and highest bin used (`e_lo > e_hi`: none).
    pub e_lo: usize,
    pub e_hi: usize,
    /// The bits of the largest key binned.
    pub key_hi: u64,
}

/// Feeds every moving element of a row to `visit(saturated, candidate)` in element order,
/// `saturated` meaning `s_i <= eta_t |delta_i|`. Keys and powers are computed eight
/// elements at a time (the division vectorises), then visited one by one.
#[inline(always)]
fn for_moving<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    eta_t: T,
    mut visit: impl FnMut(bool, Cand),
) {
    const K: usize = 8;
    let n = row.len();
    let mut base = 0;
    while base < n {
        let len = K.min(n - base);
        let r = row.sub(base, base + len);
        // `Cand::new`'s fields as separate arrays: an array of `Cand` vectorised worse (the
        // adversary took 6% longer).
        // The powers come after the lanes, in a loop of their own, so that for f32 data and
        // a p outside {1, 2} they vectorise too.
        let (mut key, mut w, mut c, mut kind) = ([0f64; K], [0f64; K], [0f64; K], [0u8; K]);
        let mut lane = |k: usize| {
            let (a, s) = r.element(k);
            let (a64, s64) = (a.as_f64(), s.as_f64());
            key[k] = s64 / a64;
            w[k] = a64;
            c[k] = s64;
            // 0: does not move, 1: saturated, 2: free
            kind[k] = ((a != T::zero()) as u8) << ((s <= eta_t * a) as u8 ^ 1);
        };
        if len == K {
            for k in 0..K {
                lane(k);
            }
        } else {
            for k in 0..len {
                lane(k);
            }
        }
        for k in 0..K {
            w[k] = pw.pow_widened::<T>(w[k]);
            c[k] = pw.pow_widened::<T>(c[k]);
        }
        for k in 0..len {
            if kind[k] != 0 {
                let cand = Cand {
                    key: key[k],
                    w: w[k],
                    c: c[k],
                };
                visit(kind[k] == 1, cand);
            }
        }
        base += len;
    }
}

/// The safeguard's binning pass over a row: the caps of the moving elements saturated at
/// `eta_t`, and each free element's candidate added to `bins` at its key's bits above
/// `shift`.
#[inline(always)]
fn bin_free<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    eta_t: T,
    shift: u32,
    bins: &mut Bins<'_>,
) -> FreeBins {
    let mut out = FreeBins {
        c_base: 0.0,
        e_lo: usize::MAX,
        e_hi: 0,
        key_hi: 0,
    };
    for_moving(row, pw, eta_t, |saturated, cand| {
        if saturated {
            out.c_base += cand.c;
        } else {
            let bits = cand.key.to_bits();
            let e = (bits >> shift) as usize;
            out.e_lo = out.e_lo.min(e);
            out.e_hi = out.e_hi.max(e);
            out.key_hi = out.key_hi.max(bits);
            bins.add(e, &cand);
        }
    });
    out
}

/// The candidates of the free elements in bin `bin` of [`bin_free`].
#[inline(always)]
fn collect_bin<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    eta_t: T,
    shift: u32,
    bin: usize,
) -> Vec<Cand> {
    let mut keep = Vec::new();
    for_moving(row, pw, eta_t, |saturated, cand| {
        if !saturated && (cand.key.to_bits() >> shift) as usize == bin {
            keep.push(cand);
        }
    });
    keep
}

/// For `p = inf`: the largest `|delta_i|` among elements with room `s_i >= eps`, the number of
/// movable elements and the number of invalid elements, in one validating pass.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InfSums {
    pub amax: f64,
    pub nmov: u64,
    pub bad: u64,
}

impl std::ops::Add for InfSums {
    type Output = InfSums;
    fn add(self, o: InfSums) -> InfSums {
        InfSums {
            amax: self.amax.max(o.amax),
            nmov: self.nmov + o.nmov,
            bad: self.bad + o.bad,
        }
    }
}

#[inline(always)]
fn chunk_inf<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: T,
) -> InfSums {
    // Whole lane blocks are folded by value (fresh arrays each step), which lets LLVM keep
    // the accumulators in registers; the ragged tail goes through `InfLanes`.
    let n = row.len();
    let full = n / LANES * LANES;
    let zero = T::zero();
    let (mut am, mut nm, mut nb) = ([zero; LANES], [0u32; LANES], [0u32; LANES]);
    for (base, (xs, ds)) in (0..full).step_by(LANES).zip(
        row.x[..full]
            .chunks_exact(LANES)
            .zip(row.d[..full].chunks_exact(LANES)),
    ) {
        prefetch_row(row, base);
        let lo = row.lo.sub(base, LANES);
        let hi = row.hi.sub(base, LANES);
        let (am1, nm1, nb1) = (am, nm, nb);
        am = std::array::from_fn(|k| {
            let (a, s) = (ds[k].abs(), room(xs[k], ds[k], lo.at(k), hi.at(k)));
            am1[k].max(if (a > zero) & (s >= eps) { a } else { zero })
        });
        nm = std::array::from_fn(|k| nm1[k] + (ds[k] != zero) as u32);
        nb = std::array::from_fn(|k| nb1[k] | is_bad(xs[k], ds[k], lo.at(k), hi.at(k)));
    }
    let mut lanes = InfLanes {
        eps,
        amax: am,
        nmov: nm,
        bad: nb,
    };
    for i in full..n {
        lanes.push(i - full, row.x[i], row.d[i], row.lo.at(i), row.hi.at(i));
    }
    lanes.finish()
}

pub(crate) fn row_pass_inf<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: T,
    par: bool,
) -> InfSums {
    fold_chunks(row, par, |r| chunk_inf_best(r, eps))
}

/// `y = clip(x + eta * delta, lower, upper)` over one stretch of a row.
#[inline(always)]
fn apply_chunk<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eta: T,
    out: &mut [T],
) {
    let (x, d) = (row.x, &row.d[..row.x.len()]);
    let out = &mut out[..x.len()];
    for base in (0..x.len()).step_by(LANES) {
        prefetch_row(row, base);
        for i in base..(base + LANES).min(x.len()) {
            let y = x[i] + eta * d[i];
            out[i] = y.max(row.lo.at(i)).min(row.hi.at(i));
        }
    }
}

/// `y = clip(x + eta * delta, lower, upper)` for one row; `stream` asks for non-temporal
/// stores (an output too large for the cache).
pub(crate) fn apply_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eta: T,
    out: &mut [T],
    par: bool,
    stream: bool,
) {
    let body = |start: usize, out: &mut [T]| {
        let sub = row.sub(start, start + out.len());
        #[cfg(target_arch = "x86_64")]
        if avx2_apply::<f32, _, _, _>(&sub, eta, &mut *out, stream)
            || avx2_apply::<f64, _, _, _>(&sub, eta, &mut *out, stream)
        {
            return;
        }
        apply_chunk_best(&sub, eta, out);
    };
    for_blocks(out, par, body);
}

/// [`apply_row`]'s body with the AVX2 kernel of `E`; `false` (nothing written) when the
/// row's elements are not `E` or the CPU lacks AVX2.
#[cfg(target_arch = "x86_64")]
fn avx2_apply<E: Lanes, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
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

/// Whether a row's `eta` must be applied by [`apply_row_wide`]: it lies outside the normal
/// range of `T` (beyond it, `eta * delta` in `T` would overflow, or lose bits as a
/// subnormal), or outside `f64`'s (`eta_parts` holds it then).
pub(crate) fn needs_wide_apply<T: Real>(eta: f64) -> bool {
    eta != 0.0 && !T::of_f64(eta).is_normal()
}

/// `clip(x + eta * d, lo, hi)` in `f64`, rounded once to `T`.
#[inline]
fn clip_wide<T: Real>(x: T, d: f64, eta: f64, lo: T, hi: T) -> T {
    let y = x.as_f64() + eta * d;
    if y.is_nan() {
        // An infinite eta (beyond f64) times a zero delta: the element does not move.
        return x;
    }
    T::of_f64(y.max(lo.as_f64()).min(hi.as_f64()))
}

/// `y = clip(x + eta * delta, lower, upper)` for a row whose `eta = m * 2^k` lies outside
/// the range [`apply_row`] handles ([`needs_wide_apply`]): computed in `f64` with `delta`
/// scaled by `2^k` (exact for the deltas that made eta so large or small). A rare path
/// (subnormal or near-overflow deltas), so one plain loop.
pub(crate) fn apply_row_wide<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    (m, k): (f64, i32),
    out: &mut [T],
) {
    let (a1, a2) = pow2_steps(k);
    for (i, o) in out.iter_mut().enumerate().take(row.len()) {
        let d = row.d[i].as_f64() * a1 * a2;
        *o = clip_wide(row.x[i], d, m, row.lo.at(i), row.hi.at(i));
    }
}

/// [`apply_row_wide`] for a row whose `delta` is `y` itself (the noise path).
pub(crate) fn apply_row_in_place_wide<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    x: &[T],
    lo: L,
    hi: H,
    (m, k): (f64, i32),
    y: &mut [T],
) {
    let (a1, a2) = pow2_steps(k);
    for (i, (v, &xi)) in y.iter_mut().zip(x).enumerate() {
        *v = clip_wide(xi, v.as_f64() * a1 * a2, m, lo.at(i), hi.at(i));
    }
}

/// Runs `body(start, stretch)` over `out`, in parallel blocks of [`BLOCK`] elements when
/// `par` is set and the row is longer than one block, else once over the whole row.
fn for_blocks<T: Real>(out: &mut [T], par: bool, body: impl Fn(usize, &mut [T]) + Sync) {
    if par && out.len() > BLOCK {
        out.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(bi, o)| body(bi * BLOCK, o));
    } else {
        body(0, out);
    }
}

/// `y = clip(x + eta * y, lower, upper)` over one stretch of a row, in place (the same
/// arithmetic as [`apply_chunk`], so the results agree bitwise).
#[inline(always)]
fn apply_chunk_in_place<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    x: &[T],
    lo: L,
    hi: H,
    eta: T,
    y: &mut [T],
) {
    let x = &x[..y.len()];
    for base in (0..y.len()).step_by(LANES) {
        prefetch_ahead(x, base);
        prefetch_ahead(y, base);
        for side in [lo.values(), hi.values()].into_iter().flatten() {
            prefetch_ahead(side, base);
        }
        for i in base..(base + LANES).min(y.len()) {
            let v = x[i] + eta * y[i];
            y[i] = v.max(lo.at(i)).min(hi.at(i));
        }
    }
}

/// `y = clip(x + eta * y, lower, upper)` for one row whose `delta` is `y` itself (the noise
/// path, which draws `delta` into the output).
pub(crate) fn apply_row_in_place<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    x: &[T],
    lo: L,
    hi: H,
    eta: T,
    y: &mut [T],
    par: bool,
) {
    let body = |start: usize, y: &mut [T]| {
        let len = y.len();
        let (lo, hi) = (lo.sub(start, len), hi.sub(start, len));
        apply_chunk_in_place_best(&x[start..start + len], lo, hi, eta, y);
    };
    for_blocks(y, par, body);
}

/// Declares `$best`, which runs `$generic` compiled for AVX2+FMA when the CPU has them and
/// the baseline build otherwise.
macro_rules! multiversion {
    ($vis:vis $best:ident, $avx2:ident, $generic:ident,
     <$($g:ident: $bound:path),* $(; const $c:ident: bool)?>,
     ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2<$($g: $bound),* $(, const $c: bool)?>($($arg: $ty),*) -> $ret {
            $generic::<$($g),* $(, $c)?>($($arg),*)
        }

        #[inline(always)]
        $vis fn $best<$($g: $bound),* $(, const $c: bool)?>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if crate::simd::has_avx2() {
                // SAFETY: `$avx2` differs from `$generic` only in being compiled for AVX2
                // and FMA, and `has_avx2` has checked at run time that this CPU executes
                // both instruction sets; there are no other preconditions.
                return unsafe { $avx2::<$($g),* $(, $c)?>($($arg),*) };
            }
            $generic::<$($g),* $(, $c)?>($($arg),*)
        }
    };
}

// `row_bin_free`: `bin_free`, compiled for AVX2 where the CPU has it (likewise below).
multiversion!(pub(crate) row_bin_free, bin_free_avx2, bin_free,
    <T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, pw: P, eta_t: T, shift: u32, bins: &mut Bins<'_>) -> FreeBins);
multiversion!(pub(crate) row_collect_bin, collect_bin_avx2, collect_bin,
    <T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, pw: P, eta_t: T, shift: u32, bin: usize) -> Vec<Cand>);
multiversion!(chunk_inf_best, chunk_inf_avx2, chunk_inf,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, eps: T) -> InfSums);
multiversion!(apply_chunk_best, apply_chunk_avx2, apply_chunk,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, eta: T, out: &mut [T]) -> ());
multiversion!(apply_chunk_in_place_best, apply_chunk_in_place_avx2, apply_chunk_in_place,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>>,
    (x: &[T], lo: L, hi: H, eta: T, y: &mut [T]) -> ());
multiversion!(chunk_sat_best, chunk_sat_avx2, chunk_sat,
    <T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, pw: P) -> SatSums);
multiversion!(chunk_first_best, chunk_first_avx2, chunk_first,
    <T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>; const VALIDATE: bool>,
    (row: &Row<'_, T, L, H>, pw: P, eta_lo: T, eta_hi: T) -> FirstSums);

/// The hand-written AVX2 kernels against the generic lane loops (compiled for the baseline
/// CPU): the same sums, counts and candidates on every kind of chunk.
#[cfg(all(test, target_arch = "x86_64"))]
mod avx2_agreement {
    use super::*;
    use crate::bounds::{ScalarSide, SliceSide};
    use crate::norm::{P1, P2};

    /// A small deterministic generator (xorshift64*), uniform in `[0, 1)`.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Image-like data in [0, 1] (a quarter of it on the bounds), Gaussian-ish delta with
    /// some zeros; `poison` puts a NaN, an infinity or an out-of-box `x` at one element.
    fn data<T: Real>(n: usize, seed: u64, poison: Option<(usize, u8)>) -> (Vec<T>, Vec<T>) {
        let mut g = Gen(seed | 1);
        let x: Vec<f64> = (0..n)
            .map(|_| match (g.next() * 8.0) as u32 {
                0 => 0.0,
                1 => 1.0,
                _ => g.next(),
            })
            .collect();
        let d: Vec<f64> = (0..n)
            .map(|_| {
                let u = g.next();
                if u < 0.05 {
                    0.0
                } else {
                    (g.next() + g.next() + g.next() - 1.5) * 0.2
                }
            })
            .collect();
        let (mut x, mut d): (Vec<T>, Vec<T>) = (
            x.into_iter().map(T::of_f64).collect(),
            d.into_iter().map(T::of_f64).collect(),
        );
        if let Some((i, kind)) = poison {
            match kind {
                0 => d[i] = T::nan(),
                1 => d[i] = T::neg_infinity(),
                2 => x[i] = T::of_f64(1.5),
                _ => x[i] = T::nan(),
            }
        }
        (x, d)
    }

    fn sorted(c: &[Cand]) -> Vec<(f64, f64, f64)> {
        let mut v: Vec<_> = c.iter().map(|c| (c.key, c.w, c.c)).collect();
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        v
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * a.abs().max(b.abs()) + f64::MIN_POSITIVE
    }

    fn compare<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
        row: &Row<'_, T, L, H>,
        pw: P,
        bracket: (T, T),
        validate: bool,
        what: &str,
    ) {
        let hand = row_pass_first(row, pw, bracket, validate, false);
        let generic = if validate {
            chunk_first::<T, P, L, H, true>(row, pw, bracket.0, bracket.1)
        } else {
            chunk_first::<T, P, L, H, false>(row, pw, bracket.0, bracket.1)
        };
        assert_eq!(hand.bad != 0, generic.bad != 0, "{what}: invalid flag");
        if generic.bad != 0 {
            return;
        }
        // Lanes are summed in a different order (and f32 in f32 within a piece).
        let tol = 64.0 * T::EPS;
        assert_eq!(hand.nsat_lo, generic.nsat_lo, "{what}: saturated count");
        assert!(
            close(hand.c_lo, generic.c_lo, tol),
            "{what}: caps {} vs {}",
            hand.c_lo,
            generic.c_lo
        );
        assert!(
            close(hand.m_hi, generic.m_hi, tol),
            "{what}: weights {} vs {}",
            hand.m_hi,
            generic.m_hi
        );
        if validate {
            assert_eq!(hand.amax, generic.amax, "{what}: largest |delta|");
        }
        assert_eq!(
            sorted(&hand.cands),
            sorted(&generic.cands),
            "{what}: candidates"
        );
    }

    fn agree<T: Real>() {
        let lengths = [0usize, 1, 3, 4, 7, 8, 9, 15, 17, 31, 33, 1000, 1024, 1029];
        for (li, &n) in lengths.iter().enumerate() {
            for poison in [None, Some(0u8), Some(1), Some(2), Some(3)] {
                let at = poison.map(|k| (n.saturating_sub(1) * (li + 1) / lengths.len(), k));
                if n == 0 && at.is_some() {
                    continue;
                }
                let (x, d) = data::<T>(n, 7 + li as u64, at);
                let (lo_v, hi_v) = (vec![T::zero(); n], vec![T::one(); n]);
                for bracket in [(0.5, 2.0), (1.0, 1.0), (0.0, 0.0), (3.0, 1e9)] {
                    let b = (T::of_f64(bracket.0), T::of_f64(bracket.1));
                    for validate in [true, false] {
                        if !validate && poison.is_some() {
                            continue;
                        }
                        let what = format!("{} n={n} {poison:?} {bracket:?} {validate}", T::NAME);
                        let scalar = Row {
                            x: &x,
                            d: &d,
                            lo: ScalarSide(T::zero()),
                            hi: ScalarSide(T::one()),
                        };
                        compare(&scalar, P2, b, validate, &format!("{what} p2 scalar"));
                        compare(&scalar, P1, b, validate, &format!("{what} p1 scalar"));
                        let one_sided = Row {
                            hi: ScalarSide(T::infinity()),
                            ..scalar
                        };
                        compare(&one_sided, P2, b, validate, &format!("{what} p2 one-sided"));
                        let slices = Row {
                            x: &x,
                            d: &d,
                            lo: SliceSide(&lo_v[..]),
                            hi: SliceSide(&hi_v[..]),
                        };
                        compare(&slices, P2, b, validate, &format!("{what} p2 slices"));
                        let mixed = Row {
                            x: &x,
                            d: &d,
                            lo: ScalarSide(T::zero()),
                            hi: SliceSide(&hi_v[..]),
                        };
                        compare(&mixed, P1, b, validate, &format!("{what} p1 mixed"));
                    }
                }
            }
        }
    }

    #[test]
    fn f32_kernels_agree_with_the_generic_loops() {
        agree::<f32>();
    }

    #[test]
    fn f64_kernels_agree_with_the_generic_loops() {
        agree::<f64>();
    }

    /// `apply` against the scalar formula, bit for bit, streaming or not, at every
    /// alignment of the output.
    fn apply_matches<T: Real>() {
        for n in [0usize, 1, 5, 8, 13, 64, 1031] {
            let (x, d) = data::<T>(n, 99 + n as u64, None);
            let hi_v: Vec<T> = (0..n)
                .map(|i| T::of_f64(0.5 + (i % 3) as f64 * 0.25))
                .collect();
            let eta = T::of_f64(1.7);
            let expect: Vec<T> = (0..n)
                .map(|i| (x[i] + eta * d[i]).max(T::zero()).min(hi_v[i]))
                .collect();
            for stream in [false, true] {
                for shift in 0..4 {
                    let mut buf = vec![T::nan(); n + shift];
                    let row = Row {
                        x: &x,
                        d: &d,
                        lo: ScalarSide(T::zero()),
                        hi: SliceSide(&hi_v[..]),
                    };
                    apply_row(&row, eta, &mut buf[shift..], false, stream);
                    let same = buf[shift..]
                        .iter()
                        .zip(&expect)
                        .all(|(a, b)| a.to_f64().map(f64::to_bits) == b.to_f64().map(f64::to_bits));
                    assert!(same, "{} n={n} stream={stream} shift={shift}", T::NAME);
                }
            }
        }
    }

    #[test]
    fn apply_kernels_match_the_formula() {
        apply_matches::<f32>();
        apply_matches::<f64>();
    }
}
