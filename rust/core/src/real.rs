//! The element types the core is generic over (`f32` and `f64`).

use num_traits::Float;

/// A floating-point element type of the input arrays.
///
/// Accumulation always ends in `f64`; `LANE` is the element type used for short in-chunk
/// partial sums (the element type itself, so `f32` data is summed in fast `f32` lanes over
/// chunks of [`crate::kernel::CHUNK`] elements and the chunk sums are added in `f64`).
pub trait Real: Float + Send + Sync + Default + std::fmt::Debug + 'static {
    /// Machine epsilon as `f64`.
    const EPS: f64;
    /// The NumPy name of the type (for messages).
    const NAME: &'static str;
    /// `|delta|^p` stays within `2^-POW_RANGE ..= 2^POW_RANGE` for the largest `|delta|` of
    /// a row, or the row is solved on a copy of `delta` scaled by a power of two: sums of
    /// `|delta_i|^p` in `Self` would otherwise overflow or underflow.
    const POW_RANGE: i32;
    fn as_f64(self) -> f64;
    fn of_f64(v: f64) -> Self;
    /// `self^p` for `self >= 0` (or inf, NaN) and a finite `p > 0`.
    fn pow_any(self, p: f64) -> Self;
    /// `v^p` for a value `v` of this type widened to `f64`, accurate far below this type's
    /// precision (for `f32`: without a libm call, so that lane loops vectorise it).
    fn pow_widened(v: f64, p: f64) -> f64;
    /// The slice as `f32` when `Self` is `f32` (picks the hand-written `f32` kernels).
    fn f32s(s: &[Self]) -> Option<&[f32]>;
    /// The mutable slice as `f32` when `Self` is `f32`.
    fn f32s_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// The slice as `f64` when `Self` is `f64` (picks the hand-written `f64` kernels).
    fn f64s(s: &[Self]) -> Option<&[f64]>;
    /// The mutable slice as `f64` when `Self` is `f64`.
    fn f64s_mut(s: &mut [Self]) -> Option<&mut [f64]>;
}

impl Real for f32 {
    const EPS: f64 = f32::EPSILON as f64;
    const NAME: &'static str = "float32";
    const POW_RANGE: i32 = 60;
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn of_f64(v: f64) -> Self {
        v as f32
    }
    /// In `f32` arithmetic without a libm call (so that lane loops vectorise it, sixteen
    /// lanes to a 512-bit vector), within a few ulps (see `crate::fastpow::pow_f32`): the
    /// lane loops round their powers to `f32` and sum them in `f32` lanes.
    #[inline(always)]
    fn pow_any(self, p: f64) -> Self {
        crate::fastpow::pow_f32(self, crate::fastpow::SplitP::new(p))
    }
    #[inline(always)]
    fn pow_widened(v: f64, p: f64) -> f64 {
        crate::fastpow::pow(v, p)
    }
    #[inline(always)]
    fn f32s(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
    #[inline(always)]
    fn f32s_mut(s: &mut [f32]) -> Option<&mut [f32]> {
        Some(s)
    }
    #[inline(always)]
    fn f64s(_: &[f32]) -> Option<&[f64]> {
        None
    }
    #[inline(always)]
    fn f64s_mut(_: &mut [f32]) -> Option<&mut [f64]> {
        None
    }
}

impl Real for f64 {
    const EPS: f64 = f64::EPSILON;
    const NAME: &'static str = "float64";
    const POW_RANGE: i32 = 500;
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn of_f64(v: f64) -> Self {
        v
    }
    /// Without a libm call (so that lane loops vectorise it), within `3e-13` (see
    /// `crate::fastpow`).
    #[inline(always)]
    fn pow_any(self, p: f64) -> Self {
        crate::fastpow::pow(self, p)
    }
    #[inline(always)]
    fn pow_widened(v: f64, p: f64) -> f64 {
        crate::fastpow::pow(v, p)
    }
    #[inline(always)]
    fn f32s(_: &[f64]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn f32s_mut(_: &mut [f64]) -> Option<&mut [f32]> {
        None
    }
    #[inline(always)]
    fn f64s(s: &[f64]) -> Option<&[f64]> {
        Some(s)
    }
    #[inline(always)]
    fn f64s_mut(s: &mut [f64]) -> Option<&mut [f64]> {
        Some(s)
    }
}
