//! Borrowing the caller's output and cotangent arrays, with one message per kind of misuse.

use numpy::ndarray::Dimension;
use numpy::{Element, PyReadonlyArray, PyReadwriteArray, PyReadwriteArray1};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// An output array of x's dtype (`D`: its number of dimensions), borrowed for writing.
pub(crate) fn writable<'py, T: Element, D: Dimension>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<PyReadwriteArray<'py, T, D>> {
    obj.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be a writable C-contiguous array of x's dtype"
        ))
    })
}

/// [`writable`] for an output that may be absent (`None` from Python too).
pub(crate) fn optional<'py, T: Element, D: Dimension>(
    obj: Option<&Bound<'py, PyAny>>,
    name: &str,
) -> PyResult<Option<PyReadwriteArray<'py, T, D>>> {
    match obj {
        Some(o) if !o.is_none() => writable(o, name).map(Some),
        _ => Ok(None),
    }
}

/// The cotangent of `eps`: one float64 per row, whatever x's dtype.
pub(crate) fn eps_grad<'py>(obj: &Bound<'py, PyAny>) -> PyResult<PyReadwriteArray1<'py, f64>> {
    obj.extract()
        .map_err(|_| PyTypeError::new_err("eps_grad must be a writable 1-D float64 array"))
}

/// An input cotangent of x's dtype; `what` names it and its expected shape in the message.
pub(crate) fn cotangent<'py, T: Element, D: Dimension>(
    obj: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<PyReadonlyArray<'py, T, D>> {
    obj.extract()
        .map_err(|_| PyTypeError::new_err(format!("{what} of x's dtype")))
}
