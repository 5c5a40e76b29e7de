//! The norm exponent `p`, with fast paths for `p = 1` and `p = 2`.

use num_traits::Float;

use crate::real::Real;

/// Which norm measures the perturbation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Norm {
    /// `||v||_p = (sum |v_i|^p)^(1/p)` for a real `p > 0` (a quasi-norm for `p < 1`).
    P(f64),
    /// `||v||_inf = max |v_i|`.
    Inf,
}

impl Norm {
    /// Builds a norm from `p`, rejecting `p <= 0` and NaN.
    ///
    /// ```
    /// use clipresc_core::Norm;
    /// assert_eq!(Norm::new(f64::INFINITY), Some(Norm::Inf));
    /// assert_eq!(Norm::new(0.0), None);
    /// ```
    pub fn new(p: f64) -> Option<Norm> {
        if p.is_nan() || p <= 0.0 {
            None
        } else if p.is_infinite() {
            Some(Norm::Inf)
        } else {
            Some(Norm::P(p))
        }
    }
}

/// `v -> v^p` and `t -> t^(1/p)`, monomorphised so that `p = 1` and `p = 2` cost a
/// multiplication at most.
pub trait Power: Copy + Send + Sync {
    fn pow<T: Real>(self, v: T) -> T;
    fn pow64(self, v: f64) -> f64;
    /// [`Power::pow64`] of a value of `T` widened to `f64` (see [`Real::pow_widened`]).
    #[inline(always)]
    fn pow_widened<T: Real>(self, v: f64) -> f64 {
        self.pow64(v)
    }
    fn root64(self, t: f64) -> f64;
    /// `v -> v^(p-1)` (the VJP's derivative of the power).
    fn pow_m1(self, v: f64) -> f64;
    /// Whether `v^(p-1)` takes no rounding (`p` in {1, 2}), so that [`Power::pow_m1_in`]
    /// is as accurate in any type as in `f64`.
    const EXACT_M1: bool = false;
    /// [`Power::pow_m1`] in the arithmetic of `W` (through `f64` unless
    /// [`Power::EXACT_M1`]).
    #[inline(always)]
    fn pow_m1_in<W: Real>(self, v: W) -> W {
        W::of_f64(self.pow_m1(v.as_f64()))
    }
    /// Whether `p < 1`.
    fn below_one(self) -> bool {
        false
    }
    /// `2p` when the hand-written x86_64 kernels take it (`p` in {0.5, 1, 1.5, 2, 3}; their
    /// powers are [`PHalf`]'s).
    #[cfg(target_arch = "x86_64")]
    fn kernel_k(self) -> Option<u32> {
        None
    }
    /// `2p` when it is 1, 3 or 6 (`p` = 0.5, 1.5 or 3): the passes then raise to the power
    /// with [`PHalf`] (a square root and products) instead of logarithm and exponential.
    fn half_int(self) -> Option<u32> {
        None
    }
}

/// `p = 1`.
#[derive(Clone, Copy, Debug)]
pub struct P1;
/// `p = 2`.
#[derive(Clone, Copy, Debug)]
pub struct P2;
/// Any other finite `p > 0`.
#[derive(Clone, Copy, Debug)]
pub struct PAny(pub f64);

impl Power for P1 {
    #[cfg(target_arch = "x86_64")]
    fn kernel_k(self) -> Option<u32> {
        Some(2)
    }
    #[inline(always)]
    fn pow<T: Real>(self, v: T) -> T {
        v
    }
    #[inline(always)]
    fn pow64(self, v: f64) -> f64 {
        v
    }
    #[inline(always)]
    fn root64(self, t: f64) -> f64 {
        t
    }
    #[inline(always)]
    fn pow_m1(self, _v: f64) -> f64 {
        1.0
    }
    const EXACT_M1: bool = true;
    #[inline(always)]
    fn pow_m1_in<W: Real>(self, _v: W) -> W {
        W::one()
    }
}

impl Power for P2 {
    #[cfg(target_arch = "x86_64")]
    fn kernel_k(self) -> Option<u32> {
        Some(4)
    }
    #[inline(always)]
    fn pow<T: Real>(self, v: T) -> T {
        v * v
    }
    #[inline(always)]
    fn pow64(self, v: f64) -> f64 {
        v * v
    }
    #[inline(always)]
    fn root64(self, t: f64) -> f64 {
        t.sqrt()
    }
    #[inline(always)]
    fn pow_m1(self, v: f64) -> f64 {
        v
    }
    const EXACT_M1: bool = true;
    #[inline(always)]
    fn pow_m1_in<W: Real>(self, v: W) -> W {
        v
    }
}

/// `p = K / 2` for an odd `K` or `K = 6`: `v^p` as `sqrt(v)` (odd `K`) times `v` `K / 2`
/// times, each step correctly rounded, so within a few ulps of `v^p` in `T` itself (`f32`
/// lanes, sixteen to a 512-bit vector; `f64` without the `f64` logarithm and exponential
/// of [`PAny`]). Only the passes use it (see [`Power::half_int`]); the solver's other
/// powers stay [`PAny`]'s.
#[derive(Clone, Copy, Debug)]
pub struct PHalf<const K: u32>;

impl<const K: u32> PHalf<K> {
    #[inline(always)]
    pub(crate) fn of<F: Float>(v: F) -> F {
        let mut out = if K % 2 == 1 { v.sqrt() } else { v };
        let products = if K % 2 == 1 { K / 2 } else { K / 2 - 1 };
        for _ in 0..products {
            out = out * v;
        }
        out
    }
}

impl<const K: u32> Power for PHalf<K> {
    #[cfg(target_arch = "x86_64")]
    fn kernel_k(self) -> Option<u32> {
        Some(K)
    }
    #[inline(always)]
    fn pow<T: Real>(self, v: T) -> T {
        Self::of(v)
    }
    #[inline(always)]
    fn pow64(self, v: f64) -> f64 {
        Self::of(v)
    }
    #[inline(always)]
    fn root64(self, t: f64) -> f64 {
        t.powf(2.0 / f64::from(K))
    }
    #[inline(always)]
    fn pow_m1(self, v: f64) -> f64 {
        v.powf(f64::from(K) / 2.0 - 1.0)
    }
    fn below_one(self) -> bool {
        K < 2
    }
}

impl Power for PAny {
    #[cfg(target_arch = "x86_64")]
    fn kernel_k(self) -> Option<u32> {
        self.half_int()
    }
    fn half_int(self) -> Option<u32> {
        match self.0 {
            0.5 => Some(1),
            1.5 => Some(3),
            3.0 => Some(6),
            _ => None,
        }
    }
    #[inline(always)]
    fn pow<T: Real>(self, v: T) -> T {
        v.pow_any(self.0)
    }
    #[inline(always)]
    fn pow64(self, v: f64) -> f64 {
        v.powf(self.0)
    }
    #[inline(always)]
    fn pow_widened<T: Real>(self, v: f64) -> f64 {
        T::pow_widened(v, self.0)
    }
    #[inline(always)]
    fn root64(self, t: f64) -> f64 {
        t.powf(1.0 / self.0)
    }
    #[inline(always)]
    fn pow_m1(self, v: f64) -> f64 {
        v.powf(self.0 - 1.0)
    }
    fn below_one(self) -> bool {
        self.0 < 1.0
    }
}
