//! The norm exponent `p`, with fast paths for `p = 1` and `p = 2`.

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
    /// Whether `p < 1`.
    fn below_one(self) -> bool {
        false
    }
    /// Whether this is `p = 2` (`Some(true)`) or `p = 1` (`Some(false)`): the cases with
    /// hand-written x86_64 kernels.
    #[cfg(target_arch = "x86_64")]
    fn is_p2(self) -> Option<bool> {
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
    fn is_p2(self) -> Option<bool> {
        Some(false)
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
}

impl Power for P2 {
    #[cfg(target_arch = "x86_64")]
    fn is_p2(self) -> Option<bool> {
        Some(true)
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
}

impl Power for PAny {
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
