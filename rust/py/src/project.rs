//! `project_into` and `project_vjp_into`: the exact projection onto the ball and the box.

use clipresc_core::{
    project, project_row_searches, project_vjp, project_vjp_given, project_with_multipliers,
    ProjectBatch, ProjectGrads, ProjectNorm, Real,
};
use numpy::ndarray::Ix2;
use numpy::{Element, PyReadonlyArray1, PyReadwriteArray1, PyReadwriteArray2};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::buffers::{cotangent, eps_grad, writable};
use crate::errors::{catalogued, detached};
use crate::solve::{batch_pyfunction, Call};

fn norm_of(py: Python<'_>, p: f64) -> PyResult<ProjectNorm> {
    ProjectNorm::new(p).ok_or_else(|| catalogued(py, "project_p", (p,)))
}

fn project_typed<T: Element + Real>(
    py: Python<'_>,
    call: Call<'_, T>,
    norm: ProjectNorm,
    y_out: &Bound<'_, PyAny>,
    mult_out: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let mut y: PyReadwriteArray2<'_, T> = y_out
        .extract()
        .map_err(|_| PyTypeError::new_err("y_out must be a writable 2-D array of x's dtype"))?;
    let mut mult: Option<PyReadwriteArray1<'_, f64>> =
        match mult_out {
            Some(m) if !m.is_none() => Some(m.extract().map_err(|_| {
                PyTypeError::new_err("mult_out must be a writable 1-D float64 array")
            })?),
            _ => None,
        };
    let y = y.as_slice_mut()?;
    let mult = match mult.as_mut() {
        Some(m) => Some(m.as_slice_mut()?),
        None => None,
    };
    call.with_batch(|b| {
        let pb = ProjectBatch::of_batch(&b, norm);
        detached(py, || match mult {
            Some(m) => project_with_multipliers(&pb, y, m),
            None => project(&pb, y),
        })
    })
}

batch_pyfunction! {
    /// Writes the projection of every row of `z` onto its ball around `x` and the box into
    /// `y_out`, for `(rows, n)` arrays of one float dtype and `p` in {1, 2, inf}; and when
    /// given, each row's multiplier into `mult_out` (`(rows,)` float64), which
    /// `project_vjp_into` takes back so as not to search again.
    #[pyo3(signature = (x, z, lower, upper, eps, p, y_out, mult_out = None))]
    pub(crate) fn project_into(
        py, x, z, lower, upper, eps, p,
        y_out: &Bound<'_, PyAny>,
        mult_out: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let norm = norm_of(py, p)?;
    } |call| project_typed(py, call, norm, y_out, mult_out)
}

/// Rows whose multiplier the core has searched for so far in this process (`p = 1` and
/// `p = 2` forwards, and VJPs not given the forward's multipliers): lets the tests check
/// that a backward given them searches nothing.
#[pyfunction]
pub(crate) fn project_searches() -> usize {
    project_row_searches()
}

#[allow(clippy::too_many_arguments)]
fn vjp_typed<T: Element + Real>(
    py: Python<'_>,
    call: Call<'_, T>,
    norm: ProjectNorm,
    ybar: &Bound<'_, PyAny>,
    x_grad: &Bound<'_, PyAny>,
    z_grad: &Bound<'_, PyAny>,
    eps_grad_obj: &Bound<'_, PyAny>,
    mult: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let ybar = cotangent::<T, Ix2>(ybar, "ybar must be a 2-D array")?;
    let mult: Option<PyReadonlyArray1<'_, f64>> = match mult {
        Some(m) if !m.is_none() => Some(
            m.extract()
                .map_err(|_| PyTypeError::new_err("mult must be a 1-D float64 array"))?,
        ),
        _ => None,
    };
    let mult = match &mult {
        Some(m) => Some(m.as_slice()?),
        None => None,
    };
    let mut gx = writable::<T, Ix2>(x_grad, "x_grad")?;
    let mut gz = writable::<T, Ix2>(z_grad, "z_grad")?;
    let mut ge = eps_grad(eps_grad_obj)?;
    let ybar = ybar.as_slice()?;
    let grads = ProjectGrads {
        x: gx.as_slice_mut()?,
        z: gz.as_slice_mut()?,
        eps: ge.as_slice_mut()?,
    };
    call.with_batch(|b| {
        let pb = ProjectBatch::of_batch(&b, norm);
        detached(py, || match mult {
            Some(m) => project_vjp_given(&pb, ybar, m, grads),
            None => project_vjp(&pb, ybar, grads),
        })
    })
}

batch_pyfunction! {
    /// Cotangents of `project_into` for `ybar` (`(rows, n)`): writes `x_grad`, `z_grad`
    /// (`(rows, n)`, x's dtype) and `eps_grad` (`(rows,)` float64). `mult`, when given, is
    /// the forward's `mult_out` (a NaN: unknown): no row with a known multiplier is searched
    /// again, and the cotangents are bitwise those found without it.
    #[pyo3(signature = (x, z, lower, upper, eps, p, ybar, x_grad, z_grad, eps_grad, mult = None))]
    pub(crate) fn project_vjp_into(
        py, x, z, lower, upper, eps, p,
        ybar: &Bound<'_, PyAny>,
        x_grad: &Bound<'_, PyAny>,
        z_grad: &Bound<'_, PyAny>,
        eps_grad: &Bound<'_, PyAny>,
        mult: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let norm = norm_of(py, p)?;
    } |call| vjp_typed(py, call, norm, ybar, x_grad, z_grad, eps_grad, mult)
}
