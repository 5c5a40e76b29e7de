//! The solver's streaming passes over one row: the validating first pass split at a
//! bracket, the saturating pass and the `p = inf` pass.
// Explicit lane indices (`for k in 0..LANES`) are the shape the vectoriser needs.
#![allow(clippy::needless_range_loop)]

#[cfg(target_arch = "x86_64")]
use super::dispatch::{simd_first, simd_first_diff};
use super::{fold_chunks, is_bad, prefetch_row, room, Row, LANES};
use crate::bounds::SideAccess;
use crate::norm::{PHalf, Power};
use crate::real::Real;
use crate::safeguard::{self, Cand};

/// Lane accumulators of the `p = inf` pass over a chunk.
struct InfLanes<T> {
    eps: T,
    amax: [T; LANES],
    nmov: [u32; LANES],
    bad: [u32; LANES],
    smax: [T; LANES],
    a_at: [T; LANES],
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
        // Immobile elements enter as (room 0, |delta| 0), which never wins.
        let s_in = if a > zero { s } else { zero };
        (self.smax[k], self.a_at[k]) = best_room((self.smax[k], self.a_at[k]), (s_in, a));
    }

    #[inline(always)]
    fn finish(self) -> InfSums {
        let mut out = InfSums::default();
        for k in 0..LANES {
            out = out
                + InfSums {
                    amax: self.amax[k].as_f64(),
                    nmov: self.nmov[k] as u64,
                    bad: self.bad[k] as u64,
                    s_max: self.smax[k].as_f64(),
                    a_at_s_max: self.a_at[k].as_f64(),
                };
        }
        out
    }
}

/// Lane accumulators for the saturating `eta` of a finite `p` (every movable element
/// saturated): the largest key `s_i / |delta_i|` and `sum s_i^p` over movable elements;
/// with `VALIDATE` (a row's first pass) also the invalid elements and the largest
/// `|delta_i|`, as [`FirstSums`] has them.
struct SatLanes<T, P, const VALIDATE: bool> {
    pw: P,
    key: [T; LANES],
    c: [T; LANES],
    /// The rooms of the current block's moving elements (0 for the others), raised to
    /// the power p and added to `c` once the block is complete (see [`SatLanes::flush`]).
    pend: [T; LANES],
    amax: [T; LANES],
    bad: [u32; LANES],
}

/// Sums of [`SatLanes`] over a row.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SatSums {
    pub key_max: f64,
    pub c_total: f64,
    /// Nonzero when the row holds invalid elements (validating pass only).
    pub bad: u64,
    /// The largest `|delta_i|` (validating pass only).
    pub amax: f64,
}

impl std::ops::Add for SatSums {
    type Output = SatSums;
    fn add(self, o: SatSums) -> SatSums {
        SatSums {
            key_max: self.key_max.max(o.key_max),
            c_total: self.c_total + o.c_total,
            bad: self.bad + o.bad,
            amax: self.amax.max(o.amax),
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

impl<T: Real, P: Power, const VALIDATE: bool> SatLanes<T, P, VALIDATE> {
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
        self.pend[k] = if mov { s } else { zero };
        if VALIDATE {
            self.amax[k] = if a > self.amax[k] { a } else { self.amax[k] };
            self.bad[k] |= is_bad(x, d, lo, hi);
        }
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
                    bad: self.bad[k] as u64,
                    amax: self.amax[k].as_f64(),
                };
        }
        out
    }
}

#[inline(always)]
fn chunk_sat<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>, const VALIDATE: bool>(
    row: &Row<'_, T, L, H>,
    pw: P,
) -> SatSums {
    let n = row.len();
    let full = n / LANES * LANES;
    let zero = T::zero();
    // Plain local lanes (the same arithmetic as `SatLanes`, which takes the ragged tail):
    // through `SatLanes`'s fields LLVM kept half-width vectors and scalar code.
    let (mut key, mut c, mut amax) = ([zero; LANES], [zero; LANES], [zero; LANES]);
    let mut bad = [0u32; LANES];
    for (base, (xs, ds)) in (0..full).step_by(LANES).zip(
        row.x[..full]
            .chunks_exact(LANES)
            .zip(row.d[..full].chunks_exact(LANES)),
    ) {
        prefetch_row(row, base);
        let (lo, hi) = (row.lo.sub(base, LANES), row.hi.sub(base, LANES));
        let mut pend = [zero; LANES];
        for k in 0..LANES {
            let (x, d, l, h) = (xs[k], ds[k], lo.at(k), hi.at(k));
            let a = d.abs();
            let s = room(x, d, l, h);
            let mov = a > zero;
            let q = s / a;
            key[k] = key[k].max(if mov { q } else { zero });
            pend[k] = if mov { s } else { zero };
            if VALIDATE {
                amax[k] = if a > amax[k] { a } else { amax[k] };
                bad[k] |= is_bad(x, d, l, h);
            }
        }
        for k in 0..LANES {
            c[k] = c[k] + pw.pow(pend[k]);
        }
    }
    let mut lanes = SatLanes::<T, P, VALIDATE> {
        pw,
        key,
        c,
        pend: [zero; LANES],
        amax,
        bad,
    };
    for i in full..n {
        lanes.push(i - full, row.x[i], row.d[i], row.lo.at(i), row.hi.at(i));
    }
    lanes.finish()
}

/// The saturating quantities of a whole row (see [`SatLanes`]); with `validate` (the
/// row's first pass) also its invalid elements and largest `|delta_i|`.
pub(crate) fn row_pass_sat<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    validate: bool,
    par: bool,
) -> SatSums {
    match pw.half_int() {
        Some(1) => return sat_pass(row, PHalf::<1>, validate, par),
        Some(3) => return sat_pass(row, PHalf::<3>, validate, par),
        Some(6) => return sat_pass(row, PHalf::<6>, validate, par),
        _ => {}
    }
    sat_pass(row, pw, validate, par)
}

fn sat_pass<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    validate: bool,
    par: bool,
) -> SatSums {
    if validate {
        fold_chunks(row, par, |r| chunk_sat_best::<T, P, L, H, true>(r, pw))
    } else {
        fold_chunks(row, par, |r| chunk_sat_best::<T, P, L, H, false>(r, pw))
    }
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
pub(super) fn chunk_first<
    T: Real,
    Q: Power,
    P: Power,
    L: SideAccess<T>,
    H: SideAccess<T>,
    const VALIDATE: bool,
>(
    row: &Row<'_, T, L, H>,
    lanes: Q,
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
    let mut cands = safeguard::take_buffer();
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
            let v = lanes.pow(base_v[k]);
            c_l[k] = c_l[k] + if to_c[k] { v } else { zero };
            m_l[k] = m_l[k] + if to_m[k] { v } else { zero };
        }
        while inside != 0 {
            let k = inside.trailing_zeros() as usize;
            inside &= inside - 1;
            let (a, s) = r.element(k);
            cands.push(Cand::widened::<T, P>(a.as_f64(), s.as_f64(), pw));
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
    if let Some(k) = pw.kernel_k() {
        let bracket = (eta_lo.as_f64(), eta_hi.as_f64());
        let sums = simd_first::<f32, _, _, _>(row, k, bracket, validate, par)
            .or_else(|| simd_first::<f64, _, _, _>(row, k, bracket, validate, par));
        if let Some(sums) = sums {
            return sums;
        }
    }
    match pw.half_int() {
        Some(1) => return first_pass(row, PHalf::<1>, PHalf::<1>, (eta_lo, eta_hi), validate, par),
        Some(3) => return first_pass(row, PHalf::<3>, PHalf::<3>, (eta_lo, eta_hi), validate, par),
        Some(6) => return first_pass(row, PHalf::<6>, PHalf::<6>, (eta_lo, eta_hi), validate, par),
        _ => {}
    }
    first_pass(row, pw, pw, (eta_lo, eta_hi), validate, par)
}

/// [`row_pass_first`]'s generic lane loops, raising to the power with `lanes` (`pw` or a
/// faster form of it) and making the candidates with `pw`.
fn first_pass<T: Real, Q: Power, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    lanes: Q,
    pw: P,
    (eta_lo, eta_hi): (T, T),
    validate: bool,
    par: bool,
) -> FirstSums {
    if validate {
        fold_chunks(row, par, |r| {
            chunk_first_best::<T, Q, P, L, H, true>(r, lanes, pw, eta_lo, eta_hi)
        })
    } else {
        fold_chunks(row, par, |r| {
            chunk_first_best::<T, Q, P, L, H, false>(r, lanes, pw, eta_lo, eta_hi)
        })
    }
}

/// [`row_pass_first`] for `p = 2`, validating, over a row whose `d` holds `z`: the
/// hand-written kernels form `delta = z - x` in registers, so that the projection writes no
/// `delta` row. Bitwise the sums of [`row_pass_first`] on the row with `delta` stored;
/// `None` where no hand-written kernel runs the row (the caller stores `delta` then).
pub(crate) fn row_pass_first_diff<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row_xz: &Row<'_, T, L, H>,
    (eta_lo, eta_hi): (T, T),
    par: bool,
) -> Option<FirstSums> {
    #[cfg(target_arch = "x86_64")]
    {
        let bracket = (eta_lo.as_f64(), eta_hi.as_f64());
        simd_first_diff::<f32, _, _, _>(row_xz, bracket, par)
            .or_else(|| simd_first_diff::<f64, _, _, _>(row_xz, bracket, par))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (row_xz, eta_lo, eta_hi, par);
        None
    }
}

/// For `p = inf`: the largest `|delta_i|` among elements with room `s_i >= eps`, the number of
/// movable elements and the number of invalid elements, in one validating pass; and for an
/// `eps` out of reach, the largest room of a movable element and the largest `|delta_i|`
/// among the elements having it (as [`SatSums`] has them), so that no second pass is needed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InfSums {
    pub amax: f64,
    pub nmov: u64,
    pub bad: u64,
    pub s_max: f64,
    pub a_at_s_max: f64,
}

impl std::ops::Add for InfSums {
    type Output = InfSums;
    fn add(self, o: InfSums) -> InfSums {
        let (s_max, a_at_s_max) = best_room((self.s_max, self.a_at_s_max), (o.s_max, o.a_at_s_max));
        InfSums {
            amax: self.amax.max(o.amax),
            nmov: self.nmov + o.nmov,
            bad: self.bad + o.bad,
            s_max,
            a_at_s_max,
        }
    }
}

#[inline(always)]
pub(super) fn chunk_inf<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: T,
) -> InfSums {
    // Plain lane loops over whole lane blocks, each lane's update a select of values
    // (a conditional assignment would become a masked store); the ragged tail goes
    // through `InfLanes`.
    let n = row.len();
    let full = n / LANES * LANES;
    let zero = T::zero();
    let (mut am, mut nm, mut nb) = ([zero; LANES], [0u32; LANES], [0u32; LANES]);
    let (mut sm, mut aa) = ([zero; LANES], [zero; LANES]);
    for (base, (xs, ds)) in (0..full).step_by(LANES).zip(
        row.x[..full]
            .chunks_exact(LANES)
            .zip(row.d[..full].chunks_exact(LANES)),
    ) {
        prefetch_row(row, base);
        let lo = row.lo.sub(base, LANES);
        let hi = row.hi.sub(base, LANES);
        for k in 0..LANES {
            let (x, d, l, h) = (xs[k], ds[k], lo.at(k), hi.at(k));
            let (a, s) = (d.abs(), room(x, d, l, h));
            let mov = a > zero;
            am[k] = am[k].max(if mov & (s >= eps) { a } else { zero });
            nm[k] += mov as u32;
            nb[k] |= is_bad(x, d, l, h);
            // the largest room of a moving element, and the largest |delta| having it
            // (see `best_room`); immobile elements enter as (0, 0), which never wins
            let s_in = if mov { s } else { zero };
            let take = (s_in > sm[k]) | ((s_in == sm[k]) & (a > aa[k]));
            sm[k] = if take { s_in } else { sm[k] };
            aa[k] = if take { a } else { aa[k] };
        }
    }
    let mut lanes = InfLanes {
        eps,
        amax: am,
        nmov: nm,
        bad: nb,
        smax: sm,
        a_at: aa,
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

multiversion!(chunk_inf_best, chunk_inf_avx2, chunk_inf,
    <T: Real, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, eps: T) -> InfSums);
multiversion!(chunk_sat_best, chunk_sat_avx2, chunk_sat,
    <T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>; const VALIDATE: bool>,
    (row: &Row<'_, T, L, H>, pw: P) -> SatSums);
multiversion!(chunk_first_best, chunk_first_avx2, chunk_first,
    <T: Real, Q: Power, P: Power, L: SideAccess<T>, H: SideAccess<T>; const VALIDATE: bool>,
    (row: &Row<'_, T, L, H>, lanes: Q, pw: P, eta_lo: T, eta_hi: T) -> FirstSums);
