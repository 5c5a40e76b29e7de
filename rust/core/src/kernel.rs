//! The streaming passes over one row: branch-free, fixed-width lanes the compiler vectorises,
//! partial sums combined in a fixed order so results never depend on the thread count.

use rayon::prelude::*;

use crate::bounds::SideAccess;
use crate::norm::Power;
use crate::real::Real;

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

#[inline(always)]
pub(crate) fn room<T: Real>(x: T, d: T, lo: T, hi: T) -> T {
    if d > T::zero() {
        hi - x
    } else {
        x - lo
    }
}

#[inline(always)]
fn is_bad<T: Real>(x: T, d: T, lo: T, hi: T) -> bool {
    !(x.is_finite() && d.is_finite() && x >= lo && x <= hi)
}

/// Sums of one Newton pass at a given `eta`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PassSums {
    /// `sum c_i` over saturated elements (`s_i <= eta |delta_i|`).
    pub c: f64,
    /// `sum w_i` over unsaturated elements.
    pub m: f64,
    /// Number of saturated elements (elements with zero delta and zero room included).
    pub nsat: u64,
    /// Number of elements with `delta_i != 0` (validating pass only).
    pub nmov: u64,
    /// Number of invalid elements (validating pass only).
    pub bad: u64,
}

impl PassSums {
    fn add(self, o: PassSums) -> PassSums {
        PassSums {
            c: self.c + o.c,
            m: self.m + o.m,
            nsat: self.nsat + o.nsat,
            nmov: self.nmov + o.nmov,
            bad: self.bad + o.bad,
        }
    }
}

/// One pass over at most [`CHUNK`] elements.
#[inline(always)]
fn chunk_pass<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>, const VALIDATE: bool>(
    row: &Row<'_, T, L, H>,
    pw: P,
    eta: T,
) -> PassSums {
    let n = row.len();
    let zero = T::zero();
    let mut ac = [zero; LANES];
    let mut am = [zero; LANES];
    let mut ns = [0u32; LANES];
    let mut nm = [0u32; LANES];
    let mut nb = [0u32; LANES];
    let mut lane = |k: usize, x: T, d: T, lo: T, hi: T| {
        let a = d.abs();
        let s = room(x, d, lo, hi);
        let sat = s <= eta * a;
        let c = pw.pow(s);
        let w = pw.pow(a);
        ac[k] = ac[k] + if sat { c } else { zero };
        am[k] = am[k] + if sat { zero } else { w };
        ns[k] += sat as u32;
        if VALIDATE {
            nm[k] += (a > zero) as u32;
            nb[k] += is_bad(x, d, lo, hi) as u32;
        }
    };
    let full = n / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        let xs = &row.x[base..base + LANES];
        let ds = &row.d[base..base + LANES];
        let lo = row.lo.sub(base, LANES);
        let hi = row.hi.sub(base, LANES);
        for k in 0..LANES {
            lane(k, xs[k], ds[k], lo.at(k), hi.at(k));
        }
    }
    for i in full..n {
        lane(i - full, row.x[i], row.d[i], row.lo.at(i), row.hi.at(i));
    }
    let mut out = PassSums::default();
    for k in 0..LANES {
        out.c += ac[k].as_f64();
        out.m += am[k].as_f64();
        out.nsat += ns[k] as u64;
        out.nmov += nm[k] as u64;
        out.bad += nb[k] as u64;
    }
    out
}

/// Runs `f` on every [`CHUNK`] of the row and adds the results in row order; blocks of
/// [`BLOCK`] elements run in parallel when `par` is set. The grouping is fixed by the row
/// length alone, so the result is bitwise the same for any thread count.
pub(crate) fn fold_chunks<'a, T, L, H, R, F>(row: &Row<'a, T, L, H>, par: bool, f: F) -> R
where
    T: Real,
    L: SideAccess<T>,
    H: SideAccess<T>,
    R: Copy + Default + Send,
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

impl std::ops::Add for PassSums {
    type Output = PassSums;
    fn add(self, o: PassSums) -> PassSums {
        PassSums::add(self, o)
    }
}

/// One Newton pass over the whole row at `eta` (validating every element when `VALIDATE`).
pub(crate) fn row_pass<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>, const VALIDATE: bool>(
    row: &Row<'_, T, L, H>,
    pw: P,
    eta: T,
    par: bool,
) -> PassSums {
    fold_chunks(row, par, |r| chunk_pass::<T, P, L, H, VALIDATE>(r, pw, eta))
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
    let n = row.len();
    let zero = T::zero();
    let mut am = [zero; LANES];
    let mut nm = [0u32; LANES];
    let mut nb = [0u32; LANES];
    let mut lane = |k: usize, x: T, d: T, lo: T, hi: T| {
        let a = d.abs();
        let s = room(x, d, lo, hi);
        let take = a > zero && s >= eps;
        am[k] = if take && a > am[k] { a } else { am[k] };
        nm[k] += (a > zero) as u32;
        nb[k] += is_bad(x, d, lo, hi) as u32;
    };
    let full = n / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        let xs = &row.x[base..base + LANES];
        let ds = &row.d[base..base + LANES];
        let lo = row.lo.sub(base, LANES);
        let hi = row.hi.sub(base, LANES);
        for k in 0..LANES {
            lane(k, xs[k], ds[k], lo.at(k), hi.at(k));
        }
    }
    for i in full..n {
        lane(i - full, row.x[i], row.d[i], row.lo.at(i), row.hi.at(i));
    }
    let mut out = InfSums::default();
    for k in 0..LANES {
        out.amax = out.amax.max(am[k].as_f64());
        out.nmov += nm[k] as u64;
        out.bad += nb[k] as u64;
    }
    out
}

pub(crate) fn row_pass_inf<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: T,
    par: bool,
) -> InfSums {
    fold_chunks(row, par, |r| chunk_inf(r, eps))
}

/// `y = clip(x + eta * delta, lower, upper)` for one row.
pub(crate) fn apply_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eta: T,
    out: &mut [T],
    par: bool,
) {
    let body = |start: usize, out: &mut [T]| {
        let r = row.sub(start, start + out.len());
        let (x, d) = (r.x, &r.d[..r.x.len()]);
        let out = &mut out[..x.len()];
        for i in 0..x.len() {
            let y = x[i] + eta * d[i];
            out[i] = y.max(r.lo.at(i)).min(r.hi.at(i));
        }
    };
    if par && out.len() > BLOCK {
        out.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(bi, o)| body(bi * BLOCK, o));
    } else {
        body(0, out);
    }
}
