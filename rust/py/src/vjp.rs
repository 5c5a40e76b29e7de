//! `scale_vjp_into` and `perturb_vjp_into`: the closed-form VJPs of the core.

use clipresc_core::{vjp, Cotangent, Grads, Options, Real};
use numpy::ndarray::IxDyn;
use numpy::{Element, PyReadonlyArray1, PyReadwriteArray1, PyReadwriteArrayDyn};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::buffers::{self, cotangent, optional, writable};
use crate::errors::detached;
use crate::solve::{batch_pyfunction, summary_tuple, Call};

/// The output buffers of one call, borrowed while holding the GIL.
struct Outs<'py, T: Element> {
    x: PyReadwriteArrayDyn<'py, T>,
    delta: PyReadwriteArrayDyn<'py, T>,
    eps: PyReadwriteArray1<'py, f64>,
    lower: Option<PyReadwriteArrayDyn<'py, T>>,
    upper: Option<PyReadwriteArrayDyn<'py, T>>,
}

#[allow(clippy::too_many_arguments)]
fn vjp_typed<T: Element + Real>(
    py: Python<'_>,
    call: Call<'_, T>,
    cot: &Bound<'_, PyAny>,
    is_y: bool,
    [x_grad, delta_grad, eps_grad]: [&Bound<'_, PyAny>; 3],
    lower_grad: Option<&Bound<'_, PyAny>>,
    upper_grad: Option<&Bound<'_, PyAny>>,
    eta: Option<&Bound<'_, PyAny>>,
) -> PyResult<(usize, i64)> {
    let what = if is_y { "ybar" } else { "etabar" };
    let cot = cotangent::<T, IxDyn>(cot, &format!("{what} must be an array"))?;
    let eta: Option<PyReadonlyArray1<'_, T>> = match eta {
        Some(e) if !e.is_none() => Some(
            e.extract()
                .map_err(|_| PyTypeError::new_err("eta must be a 1-D array of x's dtype"))?,
        ),
        _ => None,
    };
    let mut outs = Outs {
        x: writable(x_grad, "x_grad")?,
        delta: writable(delta_grad, "delta_grad")?,
        eps: buffers::eps_grad(eps_grad)?,
        lower: optional(lower_grad, "lower_grad")?,
        upper: optional(upper_grad, "upper_grad")?,
    };
    let cot_s = cot.as_slice()?;
    let eta_s = match &eta {
        Some(e) => Some(e.as_slice()?),
        None => None,
    };
    let grads = Grads {
        x: outs.x.as_slice_mut()?,
        delta: outs.delta.as_slice_mut()?,
        eps: outs.eps.as_slice_mut()?,
        lower: match outs.lower.as_mut() {
            Some(a) => Some(a.as_slice_mut()?),
            None => None,
        },
        upper: match outs.upper.as_mut() {
            Some(a) => Some(a.as_slice_mut()?),
            None => None,
        },
    };
    let cot = if is_y {
        Cotangent::Y(cot_s)
    } else {
        Cotangent::Eta(cot_s)
    };
    call.with_batch(|b| detached(py, || vjp(&b, &Options::default(), eta_s, cot, grads)))
        .map(summary_tuple)
}

/// Declares the VJP binding `$name` whose cotangent argument is `$cot` (of `y` when `$is_y`,
/// else of `eta`).
macro_rules! vjp_pyfunction {
    ($(#[$doc:meta])* $name:ident($cot:ident, $is_y:expr)) => {
        batch_pyfunction! {
            $(#[$doc])*
            #[pyo3(signature = (
                x, delta, lower, upper, eps, p, $cot, x_grad, delta_grad, eps_grad,
                lower_grad = None, upper_grad = None, eta = None
            ))]
            pub(crate) fn $name(
                py, x, delta, lower, upper, eps, p,
                $cot: &Bound<'_, PyAny>,
                x_grad: &Bound<'_, PyAny>,
                delta_grad: &Bound<'_, PyAny>,
                eps_grad: &Bound<'_, PyAny>,
                lower_grad: Option<&Bound<'_, PyAny>>,
                upper_grad: Option<&Bound<'_, PyAny>>,
                eta: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<(usize, i64)> {} |call| {
                let outs = [x_grad, delta_grad, eps_grad];
                vjp_typed(py, call, $cot, $is_y, outs, lower_grad, upper_grad, eta)
            }
        }
    };
}

vjp_pyfunction! {
    /// Cotangents of `scale` for `etabar` (one per row) of the `(rows, n)` arrays.
    ///
    /// Writes `x_grad`, `delta_grad` (`(rows, n)`, x's dtype), `eps_grad` (`(rows,)` float64)
    /// and, when given, `lower_grad` / `upper_grad` (the shape of the array bound: `(n,)`
    /// summed over the rows, or `(rows, n)`). `eta`, when given, is the forward's result and
    /// skips the solve. Returns `(unreachable_rows, first_unreachable_row or -1)` (`(0, -1)`
    /// when `eta` is given).
    scale_vjp_into(etabar, false)
}

vjp_pyfunction! {
    /// Cotangents of `perturb` for `ybar` (`(rows, n)`); outputs as in `scale_vjp_into`.
    perturb_vjp_into(ybar, true)
}
