//! `noise_into` (fused seeded noise at an exact size) and `sample_into` (the raw noise).

use clipresc_core::{noise, sample, Distribution, NoiseBatch, NoiseSpec, Options, Real, Seed};
use numpy::{Element, PyReadwriteArray1, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::dtype::{per_dtype, Dtype};
use crate::errors::detached;
use crate::solve::{summary_tuple, Call};

fn spec_of(distribution: &str, seed: &Bound<'_, PyBytes>, row_offset: u64) -> PyResult<NoiseSpec> {
    let distribution = Distribution::from_name(distribution).ok_or_else(|| {
        PyValueError::new_err(format!(
            "distribution must be one of 'gaussian', 'uniform', 'laplace', 'rademacher'; \
             got {distribution:?}"
        ))
    })?;
    let key: [u8; 32] = seed
        .as_bytes()
        .try_into()
        .map_err(|_| PyValueError::new_err("seed must be 32 bytes"))?;
    Ok(NoiseSpec {
        distribution,
        seed: Seed(key),
        row_offset,
    })
}

fn noise_typed<T: Element + Real>(
    py: Python<'_>,
    call: Call<'_, T>,
    spec: NoiseSpec,
    y_out: &Bound<'_, PyAny>,
    eta_out: &Bound<'_, PyAny>,
) -> PyResult<(usize, i64)> {
    let mut y: PyReadwriteArray2<'_, T> = y_out
        .extract()
        .map_err(|_| PyTypeError::new_err("y_out must be a writable 2-D array of x's dtype"))?;
    let mut eta: PyReadwriteArray1<'_, T> = eta_out
        .extract()
        .map_err(|_| PyTypeError::new_err("eta_out must be a writable 1-D array of x's dtype"))?;
    let (y, eta) = (y.as_slice_mut()?, eta.as_slice_mut()?);
    call.with_batch(|b| {
        let nb = NoiseBatch {
            x: b.x,
            rows: b.rows,
            n: b.n,
            lower: b.lower,
            upper: b.upper,
            eps: b.eps,
            norm: b.norm,
            spec,
        };
        detached(py, || noise(&nb, &Options::default(), y, eta))
    })
    .map(summary_tuple)
}

/// Draws noise and writes `clip(x + eta * noise)` of exact size `eps` per row into `y_out`
/// (and the scales into `eta_out`), fused; row `r` uses noise stream `row_offset + r`.
///
/// Returns `(unreachable_rows, first_unreachable_row or -1)`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn noise_into(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    lower: &Bound<'_, PyAny>,
    upper: &Bound<'_, PyAny>,
    eps: &Bound<'_, PyAny>,
    p: f64,
    distribution: &str,
    seed: &Bound<'_, PyBytes>,
    row_offset: u64,
    y_out: &Bound<'_, PyAny>,
    eta_out: &Bound<'_, PyAny>,
) -> PyResult<(usize, i64)> {
    let spec = spec_of(distribution, seed, row_offset)?;
    // `x` doubles as the direction argument of `Call`: the noise replaces it in the core.
    per_dtype!(Dtype::of_x(x)?, T => {
        noise_typed(py, Call::<T>::new(x, x, lower, upper, eps, p)?, spec, y_out, eta_out)
    })
}

fn sample_typed<T: Element + Real>(
    py: Python<'_>,
    mut out: PyReadwriteArray2<'_, T>,
    spec: NoiseSpec,
) -> PyResult<()> {
    let (rows, n) = (out.shape()[0], out.shape()[1]);
    let out = out.as_slice_mut()?;
    detached(py, || sample(&spec, rows, n, out))
}

/// Writes the raw noise that `noise_into` rescales into the `(rows, n)` array `out`.
#[pyfunction]
pub(crate) fn sample_into(
    py: Python<'_>,
    distribution: &str,
    seed: &Bound<'_, PyBytes>,
    row_offset: u64,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let spec = spec_of(distribution, seed, row_offset)?;
    let dtype = if out.extract::<PyReadwriteArray2<'_, f32>>().is_ok() {
        Dtype::F32
    } else if out.extract::<PyReadwriteArray2<'_, f64>>().is_ok() {
        Dtype::F64
    } else {
        return Err(PyTypeError::new_err(
            "out must be a writable 2-D float32 or float64 array",
        ));
    };
    per_dtype!(dtype, T => sample_typed::<T>(py, out.extract()?, spec))
}
