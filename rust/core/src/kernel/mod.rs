//! The streaming work over one row: branch-free, fixed-width lanes the compiler vectorises,
//! partial sums combined in a fixed order so results never depend on the thread count.
//!
//! - `passes`: the solver's passes (the split first pass, the saturating pass, `p = inf`);
//! - `binning`: the radix-select safeguard's passes;
//! - `apply`: `y = clip(x + eta * delta, lower, upper)`;
//! - `dispatch`: picking the hand-written SIMD kernels (`crate::avx2`) for a row;
//! - here: the row, its chunking, and the AVX2 multiversioning of the generic lane loops.

use crate::bounds::SideAccess;
use crate::par;
use crate::real::Real;
use crate::simd::prefetch_ahead;

/// Elements summed in `T` lanes before the chunk's sum is added in `f64`.
pub const CHUNK: usize = 1024;
/// Elements per parallel work item inside one long row (a multiple of [`CHUNK`]).
pub const BLOCK: usize = 64 * CHUNK;
/// Lanes of the generic loops.
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
    par::fold_range(par, n.div_ceil(BLOCK), R::default(), block, |a, b| a + b)
}

/// [`fold_chunks`] for an `f` that sums its input in pieces of [`CHUNK`] elements itself
/// (adding each piece's sum to its totals in row order): `f` runs once on each block's
/// whole chunks and once on its last, partial chunk, which gives bitwise the result of
/// running it on every chunk and adding in row order, without the per-chunk calls.
pub(crate) fn fold_chunk_runs<'a, T, L, H, R, F>(row: &Row<'a, T, L, H>, par: bool, f: F) -> R
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
        let (start, end) = (bi * BLOCK, n.min((bi + 1) * BLOCK));
        // The partial chunk goes alone: `f` would add its tail to the last piece's sum
        // before adding that to its totals, where `fold_chunks` adds the chunk's sum whole.
        let split = start + (end - start) / CHUNK * CHUNK;
        let mut acc = R::default();
        if split > start {
            acc = acc + f(&row.sub(start, split));
        }
        if end > split {
            acc = acc + f(&row.sub(split, end));
        }
        acc
    };
    par::fold_range(par, n.div_ceil(BLOCK), R::default(), block, |a, b| a + b)
}

/// Runs `body(start, stretch)` over `out`, in parallel blocks of [`BLOCK`] elements when
/// `par` is set and the row is longer than one block, else once over the whole row.
fn for_blocks<T: Real>(out: &mut [T], par: bool, body: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.len() > BLOCK {
        par::for_chunks(par, out, BLOCK, |bi, o| body(bi * BLOCK, o));
    } else {
        body(0, out);
    }
}

/// Declares `$best`, which runs `$generic` compiled for AVX-512 (F, VL, BW, DQ) or for
/// AVX2+FMA when the CPU has them, and the baseline build otherwise. The compiled copies
/// live in a module named `$avx2`. All three are the same source: LLVM does not reassociate
/// floating-point operations nor contract them into FMAs, so they give bitwise the same
/// results.
macro_rules! multiversion {
    ($vis:vis $best:ident, $avx2:ident, $generic:ident,
     <$($g:ident: $bound:path),* $(; const $c:ident: bool)?>,
     ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[cfg(target_arch = "x86_64")]
        mod $avx2 {
            #[allow(unused_imports)]
            use super::*;

            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn avx2<$($g: $bound),* $(, const $c: bool)?>($($arg: $ty),*) -> $ret {
                $generic::<$($g),* $(, $c)?>($($arg),*)
            }

            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
            pub(super) unsafe fn avx512<$($g: $bound),* $(, const $c: bool)?>($($arg: $ty),*) -> $ret {
                $generic::<$($g),* $(, $c)?>($($arg),*)
            }
        }

        #[inline(always)]
        $vis fn $best<$($g: $bound),* $(, const $c: bool)?>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if crate::simd::has_avx512() {
                // SAFETY: `avx512` differs from `$generic` only in being compiled for
                // AVX-512 (F, VL, BW, DQ), AVX2, FMA and POPCNT, and `has_avx512` has checked
                // at run time that this CPU executes all of them; there are no other
                // preconditions.
                return unsafe { $avx2::avx512::<$($g),* $(, $c)?>($($arg),*) };
            }
            #[cfg(target_arch = "x86_64")]
            if crate::simd::has_avx2() {
                // SAFETY: `avx2` differs from `$generic` only in being compiled for AVX2
                // and FMA, and `has_avx2` has checked at run time that this CPU executes
                // both instruction sets; there are no other preconditions.
                return unsafe { $avx2::avx2::<$($g),* $(, $c)?>($($arg),*) };
            }
            $generic::<$($g),* $(, $c)?>($($arg),*)
        }
    };
}

mod apply;
mod binning;
#[cfg(target_arch = "x86_64")]
mod dispatch;
mod passes;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;

pub(crate) use apply::{
    apply_row, apply_row_diff, apply_row_in_place, apply_row_in_place_wide, apply_row_wide,
    needs_wide_apply,
};
pub(crate) use binning::{row_bin_free, row_collect_bin, FreeBins};
pub(crate) use passes::{
    row_pass_first, row_pass_first_diff, row_pass_inf, row_pass_sat, FirstSums, SatSums,
};

/// `2^k` as two factors, each within `f64`'s range: `2^k` itself may lie outside it
/// (subnormal f64 deltas), while `v * a1 * a2` scales `v` exactly in two steps.
pub(crate) fn pow2_steps(k: i32) -> (f64, f64) {
    (2f64.powi(k / 2), 2f64.powi(k - k / 2))
}
