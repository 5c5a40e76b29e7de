//! Hand-written AVX2 kernels for the cases that dominate real use: `f32` or `f64` data,
//! `p = 1` or `p = 2`, each bound a scalar or one value per element. The generic lane loops
//! in `kernel` cover everything else; LLVM's vectoriser keeps their accumulators in
//! registers only for the simplest passes (it spilled the first pass to the stack, or fell
//! back to scalar code), so the split pass and the apply are written with intrinsics.
//!
//! The kernels are written once (`kernels!`, in `kernels.rs`) over a small set of vector
//! operations that `f32` (eight lanes of `__m256`) and `f64` (four lanes of `__m256d`)
//! each define in their own module.
//!
//! Same arithmetic as the generic kernels (no FMA: `x + eta * delta` must round like
//! NumPy's), lanes combined in a fixed order, so the results do not depend on the thread
//! count.

#[macro_use]
mod kernels;
mod lanes32;
mod lanes64;

use crate::kernel::FirstSums;
use crate::real::Real;

/// One side of the box over a chunk: a scalar, or one value per element.
#[derive(Clone, Copy)]
pub(crate) enum Side<'a, E> {
    Scalar(E),
    Slice(&'a [E]),
}

impl<E: Real> Side<'_, E> {
    /// The value at `i` (tails and the candidate list).
    #[inline]
    pub(crate) fn at(self, i: usize) -> E {
        match self {
            Side::Scalar(v) => v,
            Side::Slice(s) => s[i],
        }
    }

    /// Whether this side is one finite scalar.
    pub(crate) fn finite_scalar(self) -> bool {
        matches!(self, Side::Scalar(v) if v.is_finite())
    }
}

/// A chunk of a row and its bounds.
#[derive(Clone, Copy)]
pub(crate) struct Chunk<'a, E> {
    pub x: &'a [E],
    pub d: &'a [E],
    pub lo: Side<'a, E>,
    pub hi: Side<'a, E>,
}

/// An element type with AVX2 kernels.
pub(crate) trait Lanes: Real {
    /// `s` as a slice of `Self` when `T` is `Self`.
    fn of<T: Real>(s: &[T]) -> Option<&[Self]>;
    /// `s` as a mutable slice of `Self` when `T` is `Self`.
    fn of_mut<T: Real>(s: &mut [T]) -> Option<&mut [Self]>;

    /// A pass over a chunk split at the bracket `(eta_lo, eta_hi]` (see `FirstSums`).
    /// `VALIDATE`: the first pass, which also counts invalid elements and finds the largest
    /// `|delta|` (`CHECK_X` then also checks that `x` is finite, which the bounds check
    /// implies when both bounds are finite); a later pass over a valid row leaves `bad` and
    /// `amax` at zero. `SPLIT`: the bracket is not empty (`eta_lo < eta_hi`); with `eta_lo
    /// == eta_hi` nothing lies inside, so the pass skips the candidates and the second
    /// comparison. `LS` / `HS`: the lower / upper side holds one value per element.
    ///
    /// # Safety
    /// The CPU runs AVX2 and FMA instructions (`crate::simd::has_avx2`).
    unsafe fn first<
        const P2: bool,
        const VALIDATE: bool,
        const CHECK_X: bool,
        const SPLIT: bool,
        const LS: bool,
        const HS: bool,
    >(
        c: Chunk<'_, Self>,
        eta_lo: Self,
        eta_hi: Self,
    ) -> FirstSums;

    /// `y = min(max(x + eta * delta, lower), upper)` (no FMA: rounds like NumPy); `LS` /
    /// `HS` as in [`Lanes::first`]. `STREAM` writes with non-temporal stores: for outputs
    /// too large to stay in cache, the stores skip reading the destination lines first.
    ///
    /// # Safety
    /// The CPU runs AVX2 and FMA instructions (`crate::simd::has_avx2`).
    unsafe fn apply<const LS: bool, const HS: bool, const STREAM: bool>(
        c: Chunk<'_, Self>,
        eta: Self,
        out: &mut [Self],
    );
}

/// For each 8-bit lane mask, the 32-bit words of its set lanes in order (then zeros): the
/// permutation (`_mm256_permutevar8x32`) that packs those lanes to the front. A lane is
/// `words` 32-bit words wide (1 for `f32`, 2 for `f64`, whose masks use 4 bits).
const fn compress_table(words: usize) -> [[u32; 8]; 256] {
    let mut table = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut k, mut lane) = (0, 0);
        while lane < 8 / words {
            if (m >> lane) & 1 == 1 {
                let mut w = 0;
                while w < words {
                    table[m][k] = (lane * words + w) as u32;
                    k += 1;
                    w += 1;
                }
            }
            lane += 1;
        }
        m += 1;
    }
    table
}

/// The number of set lanes of each 8-bit lane mask.
static COUNT: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut m = 0;
    while m < 256 {
        table[m] = (m as u32).count_ones() as u8;
        m += 1;
    }
    table
};
