//! Hand-written AVX-512 kernels beside the AVX2 ones of `crate::avx2`: the same two kernels
//! (the split first pass and the apply) for the same cases (`f32` or `f64` data, `p = 1` or
//! `p = 2`, each bound a scalar or one value per element), over 512-bit vectors with the
//! comparisons in mask registers: the elements inside the bracket are packed by
//! `vcompress`, and the masked adds need no `and` per accumulator.
//!
//! Picked at run time where the CPU has AVX-512 F, VL, BW and DQ (`crate::simd::has_avx512`),
//! else the AVX2 kernels run. The arithmetic is that of the generic lane loops (no FMA), the
//! lanes are combined in a fixed order, so results do not depend on the thread count; the
//! tests hold both kernel sets to the generic loops.

#[macro_use]
mod kernels;
mod lanes32;
mod lanes64;

use crate::avx2::Chunk;
use crate::kernel::FirstSums;
use crate::real::Real;

/// An element type with AVX-512 kernels (see [`crate::avx2::Lanes`], whose contracts these
/// share).
pub(crate) trait Lanes512: Real {
    /// See [`crate::avx2::Lanes::first`].
    ///
    /// # Safety
    /// The CPU runs AVX-512 F, VL, BW and DQ (`crate::simd::has_avx512`).
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

    /// See [`crate::avx2::Lanes::apply`].
    ///
    /// # Safety
    /// The CPU runs AVX-512 F, VL, BW and DQ (`crate::simd::has_avx512`).
    unsafe fn apply<const LS: bool, const HS: bool, const STREAM: bool>(
        c: Chunk<'_, Self>,
        eta: Self,
        out: &mut [Self],
    );
}
