//! The one place where core errors and panics become Python exceptions.

use std::panic::{catch_unwind, AssertUnwindSafe};

use clipresc_core::CoreError;
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

create_exception!(
    _clipresc,
    InputError,
    PyValueError,
    "Invalid input found by the core: args are (argument, problem, count, first flat index)."
);

/// The one place where core errors become Python exceptions.
pub(crate) fn to_py_err(e: CoreError) -> PyErr {
    match e {
        CoreError::NonFinite { arg, count, first } => {
            InputError::new_err((arg, "non-finite", count, first))
        }
        CoreError::OutOfBounds { count, first } => {
            InputError::new_err(("x", "outside bounds", count, first))
        }
        CoreError::BadEps { what, count, first } => {
            InputError::new_err(("eps", what, count, first))
        }
        e @ CoreError::Length { .. } => PyValueError::new_err(e.to_string()),
    }
}

/// Runs core work with the GIL released, turning a panic into a `RuntimeError`.
pub(crate) fn detached<R: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<R, CoreError> + Send,
) -> PyResult<R> {
    let res = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match res {
        Ok(r) => r.map_err(to_py_err),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(PyRuntimeError::new_err(format!(
                "internal error in the clipresc core (please report): {msg}"
            )))
        }
    }
}

/// The exception that `clipresc._errors.<name>(*args)` builds: the binding checks what a
/// direct caller can get wrong, but every user-facing text is written in `_errors.py` only.
pub(crate) fn catalogued<'py>(
    py: Python<'py>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyErr {
    match py
        .import("clipresc._errors")
        .and_then(|m| m.call_method1(name, args))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}
