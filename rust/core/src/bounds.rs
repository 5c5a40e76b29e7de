//! Where the box `[lower, upper]` comes from: a scalar, one array shared by every vector, or
//! one array per vector.

use crate::real::Real;

/// One side of the box as the caller gave it, for a batch of `b` vectors of length `n`.
#[derive(Clone, Copy, Debug)]
pub enum Bound<'a, T> {
    /// The same value everywhere (may be infinite).
    Scalar(T),
    /// One value per vector element, shared by all vectors (`n` values).
    Shared(&'a [T]),
    /// One value per element of the batch (`b * n` values, row-major).
    Full(&'a [T]),
}

impl<'a, T: Real> Bound<'a, T> {
    /// This bound restricted to row `r` of a batch with rows of length `n`.
    pub(crate) fn row(&self, r: usize, n: usize) -> Side<'a, T> {
        match *self {
            Bound::Scalar(v) => Side::Scalar(v),
            Bound::Shared(s) => Side::Slice(s),
            Bound::Full(s) => Side::Slice(&s[r * n..(r + 1) * n]),
        }
    }

    /// Number of values this bound must hold, or `None` for a scalar.
    pub(crate) fn expected_len(&self, b: usize, n: usize) -> Option<(usize, usize)> {
        match self {
            Bound::Scalar(_) => None,
            Bound::Shared(s) => Some((s.len(), n)),
            Bound::Full(s) => Some((s.len(), b * n)),
        }
    }
}

/// One side of the box for one row.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Side<'a, T> {
    Scalar(T),
    Slice(&'a [T]),
}

impl<T: Real> Side<'_, T> {
    /// Value at `j` (error path only; the hot loops use [`SideAccess`]).
    pub(crate) fn at(&self, j: usize) -> T {
        match *self {
            Side::Scalar(v) => v,
            Side::Slice(s) => s[j],
        }
    }
}

/// Element access that the compiler can specialise: a scalar side costs nothing per element.
pub(crate) trait SideAccess<T: Real>: Copy + Send + Sync {
    /// Whether the side holds one value per element (else one scalar; read by the
    /// x86_64 dispatch to the hand-written kernels, like [`SideAccess::scalar`]).
    #[cfg(target_arch = "x86_64")]
    const SLICE: bool;
    /// The side restricted to `start..start + len`.
    fn sub(self, start: usize, len: usize) -> Self;
    /// Value at `i` of a side already restricted with [`SideAccess::sub`].
    fn at(self, i: usize) -> T;
    /// The value when the side is one scalar for the whole row.
    #[cfg(target_arch = "x86_64")]
    fn scalar(self) -> Option<T>;
    /// The values when the side holds one per element.
    fn values(&self) -> Option<&[T]>;
}

#[derive(Clone, Copy)]
pub(crate) struct ScalarSide<T>(pub T);

#[derive(Clone, Copy)]
pub(crate) struct SliceSide<'a, T>(pub &'a [T]);

impl<T: Real> SideAccess<T> for ScalarSide<T> {
    #[cfg(target_arch = "x86_64")]
    const SLICE: bool = false;
    #[inline(always)]
    fn sub(self, _start: usize, _len: usize) -> Self {
        self
    }
    #[inline(always)]
    fn at(self, _i: usize) -> T {
        self.0
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn scalar(self) -> Option<T> {
        Some(self.0)
    }
    #[inline(always)]
    fn values(&self) -> Option<&[T]> {
        None
    }
}

impl<T: Real> SideAccess<T> for SliceSide<'_, T> {
    #[cfg(target_arch = "x86_64")]
    const SLICE: bool = true;
    #[inline(always)]
    fn sub(self, start: usize, len: usize) -> Self {
        SliceSide(&self.0[start..start + len])
    }
    #[inline(always)]
    fn at(self, i: usize) -> T {
        self.0[i]
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn scalar(self) -> Option<T> {
        None
    }
    #[inline(always)]
    fn values(&self) -> Option<&[T]> {
        Some(self.0)
    }
}
