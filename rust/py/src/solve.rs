//! `scale_into`, `perturb_into` and the solver diagnostics.

use clipresc_core::{
    newton_adversary as core_adversary, perturb, scale, solve_stats as core_stats, Batch,
    Bound as CoreBound, Eps, Norm, Options, Real, Summary,
};
use numpy::{
    Element, PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray1, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{catalogued, detached};

pub(crate) fn norm_of(p: f64) -> PyResult<Norm> {
    Norm::new(p).ok_or_else(|| Python::attach(|py| catalogued(py, "p_not_positive", (p,))))
}

fn shape_mismatch(py: Python<'_>, delta: &[usize], x: &[usize]) -> PyErr {
    let tuple = |s: &[usize]| PyTuple::new(py, s.iter().copied());
    match (tuple(delta), tuple(x)) {
        (Ok(d), Ok(x)) => catalogued(py, "shape_mismatch", (d, x)),
        (Err(e), _) | (_, Err(e)) => e,
    }
}

/// A bound as passed from Python: a float, a shared `(n,)` array or a full `(rows, n)` array.
pub(crate) enum BoundArg<'py, T: Element> {
    Scalar(f64),
    Shared(PyReadonlyArray1<'py, T>),
    Full(PyReadonlyArray2<'py, T>),
}

impl<'py, T: Element> BoundArg<'py, T> {
    fn extract(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Self> {
        if let Ok(v) = obj.extract::<f64>() {
            return Ok(BoundArg::Scalar(v));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, T>>() {
            return Ok(BoundArg::Shared(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, T>>() {
            return Ok(BoundArg::Full(a));
        }
        Err(PyTypeError::new_err(format!(
            "{name} must be a float or a 1-D/2-D array of x's dtype"
        )))
    }

    fn view(&self) -> PyResult<Bound2<'_, T>> {
        Ok(match self {
            BoundArg::Scalar(v) => Bound2::Scalar(*v),
            BoundArg::Shared(a) => Bound2::Shared(a.as_slice()?),
            BoundArg::Full(a) => Bound2::Full(a.as_slice()?),
        })
    }
}

enum Bound2<'a, T> {
    Scalar(f64),
    Shared(&'a [T]),
    Full(&'a [T]),
}

impl<'a, T: Real> Bound2<'a, T> {
    fn core(&self) -> CoreBound<'a, T> {
        match *self {
            Bound2::Scalar(v) => CoreBound::Scalar(T::of_f64(v)),
            Bound2::Shared(s) => CoreBound::Shared(s),
            Bound2::Full(s) => CoreBound::Full(s),
        }
    }
}

pub(crate) enum EpsArg<'py> {
    Scalar(f64),
    PerRow(PyReadonlyArray1<'py, f64>),
}

impl<'py> EpsArg<'py> {
    fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(v) = obj.extract::<f64>() {
            return Ok(EpsArg::Scalar(v));
        }
        Ok(EpsArg::PerRow(obj.extract().map_err(|_| {
            PyTypeError::new_err("eps must be a float or a 1-D float64 array")
        })?))
    }
}

/// Everything one call needs, extracted while holding the GIL.
pub(crate) struct Call<'py, T: Element> {
    x: PyReadonlyArray2<'py, T>,
    d: PyReadonlyArray2<'py, T>,
    lower: BoundArg<'py, T>,
    upper: BoundArg<'py, T>,
    eps: EpsArg<'py>,
    norm: Norm,
}

impl<'py, T: Element + Real> Call<'py, T> {
    pub(crate) fn new(
        x: &Bound<'py, PyAny>,
        delta: &Bound<'py, PyAny>,
        lower: &Bound<'py, PyAny>,
        upper: &Bound<'py, PyAny>,
        eps: &Bound<'py, PyAny>,
        p: f64,
    ) -> PyResult<Self> {
        let x: PyReadonlyArray2<'py, T> = x.extract()?;
        let d: PyReadonlyArray2<'py, T> = delta.extract().map_err(|_| {
            PyTypeError::new_err("delta must be a 2-D array of the same dtype as x")
        })?;
        if x.shape() != d.shape() {
            return Err(shape_mismatch(x.py(), d.shape(), x.shape()));
        }
        Ok(Call {
            x,
            d,
            lower: BoundArg::extract(lower, "lower")?,
            upper: BoundArg::extract(upper, "upper")?,
            eps: EpsArg::extract(eps)?,
            norm: norm_of(p)?,
        })
    }

    pub(crate) fn with_batch<R>(&self, f: impl FnOnce(Batch<'_, T>) -> PyResult<R>) -> PyResult<R> {
        let shape = self.x.shape();
        let (lo, hi) = (self.lower.view()?, self.upper.view()?);
        let batch = Batch {
            x: self.x.as_slice()?,
            delta: self.d.as_slice()?,
            rows: shape[0],
            n: shape[1],
            lower: lo.core(),
            upper: hi.core(),
            eps: match &self.eps {
                EpsArg::Scalar(e) => Eps::Scalar(*e),
                EpsArg::PerRow(a) => Eps::PerRow(a.as_slice()?),
            },
            norm: self.norm,
        };
        f(batch)
    }
}

/// Declares a `#[pyfunction]` over one batch: its leading arguments are the batch's
/// `(x, delta, lower, upper, eps, p)` (named by the caller), then its own; the body runs the
/// statements before the dtype dispatch, then `$body` with `$call`, the [`Call`] of x's
/// dtype `T`. Every batch binding extracts its arguments through this one rule.
macro_rules! batch_pyfunction {
    ($(#[$attr:meta])* $vis:vis fn $name:ident(
        $py:ident, $x:ident, $delta:ident, $lower:ident, $upper:ident, $eps:ident, $p:ident
        $(, $arg:ident: $ty:ty)* $(,)?
    ) -> $ret:ty { $($pre:stmt;)* } |$call:ident| $body:expr) => {
        #[pyfunction]
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(
            $py: Python<'_>,
            $x: &Bound<'_, PyAny>,
            $delta: &Bound<'_, PyAny>,
            $lower: &Bound<'_, PyAny>,
            $upper: &Bound<'_, PyAny>,
            $eps: &Bound<'_, PyAny>,
            $p: f64,
            $($arg: $ty),*
        ) -> $ret {
            $($pre;)*
            $crate::dtype::per_dtype!($crate::dtype::Dtype::of_x($x)?, T => {
                let $call = $crate::solve::Call::<T>::new($x, $delta, $lower, $upper, $eps, $p)?;
                $body
            })
        }
    };
}
pub(crate) use batch_pyfunction;

pub(crate) fn summary_tuple(s: Summary) -> (usize, i64) {
    (
        s.unreachable_rows,
        s.first_unreachable.map_or(-1, |r| r as i64),
    )
}

fn scale_typed<T: Element + Real>(
    py: Python<'_>,
    call: Call<'_, T>,
    eta_out: &Bound<'_, PyAny>,
) -> PyResult<(usize, i64)> {
    let mut eta: PyReadwriteArray1<'_, T> = eta_out.extract()?;
    let eta = eta.as_slice_mut()?;
    call.with_batch(|b| detached(py, || scale(&b, &Options::default(), eta)))
        .map(summary_tuple)
}

fn perturb_typed<T: Element + Real>(
    py: Python<'_>,
    call: Call<'_, T>,
    y_out: &Bound<'_, PyAny>,
    eta_out: &Bound<'_, PyAny>,
) -> PyResult<(usize, i64)> {
    let mut y: PyReadwriteArray2<'_, T> = y_out.extract()?;
    let mut eta: PyReadwriteArray1<'_, T> = eta_out.extract()?;
    let (y, eta) = (y.as_slice_mut()?, eta.as_slice_mut()?);
    call.with_batch(|b| detached(py, || perturb(&b, &Options::default(), y, eta)))
        .map(summary_tuple)
}

batch_pyfunction! {
    /// Writes the scale of every row of the `(rows, n)` arrays into `eta_out`.
    ///
    /// Returns `(unreachable_rows, first_unreachable_row or -1)`.
    pub(crate) fn scale_into(
        py, x, delta, lower, upper, eps, p, eta_out: &Bound<'_, PyAny>
    ) -> PyResult<(usize, i64)> {} |call| scale_typed(py, call, eta_out)
}

batch_pyfunction! {
    /// Writes `clip(x + eta * delta)` into `y_out` and the scales into `eta_out`, fused.
    ///
    /// Returns `(unreachable_rows, first_unreachable_row or -1)`.
    pub(crate) fn perturb_into(
        py, x, delta, lower, upper, eps, p, y_out: &Bound<'_, PyAny>, eta_out: &Bound<'_, PyAny>
    ) -> PyResult<(usize, i64)> {} |call| perturb_typed(py, call, y_out, eta_out)
}

/// Per-row `(eta, newton_passes, used_safeguard)` for float64 inputs with scalar bounds.
#[pyfunction]
#[pyo3(signature = (x, delta, eps, p, lower, upper, max_newton_passes = 4))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn solve_stats(
    py: Python<'_>,
    x: PyReadonlyArray2<'_, f64>,
    delta: PyReadonlyArray2<'_, f64>,
    eps: f64,
    p: f64,
    lower: f64,
    upper: f64,
    max_newton_passes: u32,
) -> PyResult<Vec<(f64, u32, bool)>> {
    if x.shape() != delta.shape() {
        return Err(shape_mismatch(py, delta.shape(), x.shape()));
    }
    let shape = x.shape();
    let batch = Batch {
        x: x.as_slice()?,
        delta: delta.as_slice()?,
        rows: shape[0],
        n: shape[1],
        lower: CoreBound::Scalar(lower),
        upper: CoreBound::Scalar(upper),
        eps: Eps::Scalar(eps),
        norm: norm_of(p)?,
    };
    let opts = Options { max_newton_passes };
    let out = detached(py, || core_stats(&batch, &opts))?;
    Ok(out
        .into_iter()
        .map(|o| (o.eta, o.passes, o.safeguard))
        .collect())
}

/// The Newton worst case: float64 `(x, delta, eps)` of length `n` in `[0, 1]`.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub(crate) fn newton_adversary<'py>(
    py: Python<'py>,
    n: usize,
    p: f64,
) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>, f64)> {
    if n < 2 {
        return Err(PyValueError::new_err("n must be at least 2"));
    }
    norm_of(p)?;
    let (x, d, eps, _) = core_adversary(n, p);
    Ok((PyArray1::from_vec(py, x), PyArray1::from_vec(py, d), eps))
}
