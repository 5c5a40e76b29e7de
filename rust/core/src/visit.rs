//! The one monomorphisation of the core over the norm (`p = 1`, `p = 2`, any other finite
//! `p`, `p = inf`) and the kinds of the two bounds (a scalar, or an array per row): solve,
//! noise and VJP each describe their per-row work once, as a [`RowJob`], and [`visit`]
//! instantiates it for the call's case, so the hot loops see constants and plain slices.

use crate::bounds::{Bound, ScalarSide, Side, SideAccess, SliceSide};
use crate::norm::{Norm, PAny, Power, P1, P2};
use crate::real::Real;

/// Where the rows of a batch find one side of their box.
pub(crate) trait Sides<T: Real>: Copy + Send + Sync {
    /// The side of one row.
    type Row: SideAccess<T>;
    /// The side of row `r`.
    fn row(&self, r: usize) -> Self::Row;
}

/// One scalar for every row.
#[derive(Clone, Copy)]
pub(crate) struct ScalarSides<T>(T);

impl<T: Real> Sides<T> for ScalarSides<T> {
    type Row = ScalarSide<T>;
    #[inline(always)]
    fn row(&self, _r: usize) -> ScalarSide<T> {
        ScalarSide(self.0)
    }
}

/// An array bound (shared by the rows or one per row) over rows of `n` elements.
#[derive(Clone, Copy)]
pub(crate) struct ArraySides<'a, T> {
    bound: Bound<'a, T>,
    n: usize,
}

impl<'a, T: Real> Sides<T> for ArraySides<'a, T> {
    type Row = SliceSide<'a, T>;
    #[inline(always)]
    fn row(&self, r: usize) -> SliceSide<'a, T> {
        match self.bound.row(r, self.n) {
            Side::Slice(s) => SliceSide(s),
            Side::Scalar(_) => unreachable!("scalar bounds take ScalarSides"),
        }
    }
}

/// Per-row work over a batch, written once for every norm and kind of bound.
pub(crate) trait RowJob<T: Real> {
    type Out;
    /// Runs the job with the norm's power (`None`: `p = inf`) and the bounds' sides.
    fn run<P: Power, L: Sides<T>, H: Sides<T>>(self, pw: Option<P>, lo: L, hi: H) -> Self::Out;
}

/// Runs `job` monomorphised for `norm` and the kinds of `lower` and `upper` (rows of `n`).
pub(crate) fn visit<T: Real, J: RowJob<T>>(
    norm: Norm,
    lower: Bound<'_, T>,
    upper: Bound<'_, T>,
    n: usize,
    job: J,
) -> J::Out {
    match norm {
        Norm::Inf => with_sides(None::<P1>, lower, upper, n, job),
        Norm::P(1.0) => with_sides(Some(P1), lower, upper, n, job),
        Norm::P(2.0) => with_sides(Some(P2), lower, upper, n, job),
        Norm::P(p) => with_sides(Some(PAny(p)), lower, upper, n, job),
    }
}

fn with_sides<T: Real, P: Power, J: RowJob<T>>(
    pw: Option<P>,
    lower: Bound<'_, T>,
    upper: Bound<'_, T>,
    n: usize,
    job: J,
) -> J::Out {
    let array = |bound| ArraySides { bound, n };
    match (lower, upper) {
        (Bound::Scalar(l), Bound::Scalar(h)) => job.run(pw, ScalarSides(l), ScalarSides(h)),
        (Bound::Scalar(l), hb) => job.run(pw, ScalarSides(l), array(hb)),
        (lb, Bound::Scalar(h)) => job.run(pw, array(lb), ScalarSides(h)),
        (lb, hb) => job.run(pw, array(lb), array(hb)),
    }
}
