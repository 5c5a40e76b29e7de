//! The one f32 / f64 dispatch of the binding: every entry point finds the element type of
//! its arrays once and runs its generic body for it through [`per_dtype!`].

use numpy::PyReadonlyArray2;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// The element types the core is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    F64,
}

impl Dtype {
    /// The element type of `x`, which must be a 2-D float32 or float64 array.
    pub(crate) fn of_x(x: &Bound<'_, PyAny>) -> PyResult<Dtype> {
        if x.extract::<PyReadonlyArray2<'_, f32>>().is_ok() {
            Ok(Dtype::F32)
        } else if x.extract::<PyReadonlyArray2<'_, f64>>().is_ok() {
            Ok(Dtype::F64)
        } else {
            Err(PyTypeError::new_err(
                "x must be a 2-D float32 or float64 NumPy array",
            ))
        }
    }
}

/// Evaluates `$body` with the type alias `$t` set to the element type of `$dtype` (a
/// [`Dtype`]): `per_dtype!(Dtype::of_x(x)?, T => run::<T>(..))`.
macro_rules! per_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::dtype::Dtype::F32 => {
                type $t = f32;
                $body
            }
            $crate::dtype::Dtype::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}
pub(crate) use per_dtype;
