//! The `clipresc._clipresc` extension module: takes NumPy views, releases the GIL, calls the
//! core, and maps core errors to Python exceptions in one place (`errors.rs`).
//!
//! Shapes, dtypes, axes and `eps` are normalised by the Python layer (`clipresc/_api.py`);
//! this module only sees C-contiguous `(rows, n)` arrays of one float dtype.

mod buffers;
mod dtype;
mod errors;
mod jax_ffi;
mod jax_ffi_noise;
mod jax_ffi_project;
mod noise;
mod project;
mod seed_sequence;
mod solve;
mod vjp;
mod xla_ffi;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
fn _clipresc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("InputError", m.py().get_type::<errors::InputError>())?;
    m.add_function(wrap_pyfunction!(solve::scale_into, m)?)?;
    m.add_function(wrap_pyfunction!(solve::perturb_into, m)?)?;
    m.add_function(wrap_pyfunction!(solve::solve_stats, m)?)?;
    m.add_function(wrap_pyfunction!(solve::newton_adversary, m)?)?;
    m.add_function(wrap_pyfunction!(vjp::scale_vjp_into, m)?)?;
    m.add_function(wrap_pyfunction!(vjp::perturb_vjp_into, m)?)?;
    m.add_function(wrap_pyfunction!(noise::noise_into, m)?)?;
    m.add_function(wrap_pyfunction!(project::project_into, m)?)?;
    m.add_function(wrap_pyfunction!(project::project_vjp_into, m)?)?;
    m.add_function(wrap_pyfunction!(project::project_searches, m)?)?;
    m.add_function(wrap_pyfunction!(noise::sample_into, m)?)?;
    jax_ffi::register(m)?;
    Ok(())
}
