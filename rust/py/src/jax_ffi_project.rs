//! XLA FFI handlers for `clipresc.project` under a JAX trace on CPU: the projection and its
//! VJP, run by the Rust core on XLA's buffers (no copies, unlike `jax.pure_callback`).
//!
//! The operands are those of the `perturb` handlers (`jax_ffi`'s shared reader): `x`, `z` in
//! the place of the direction (vector axes trailing), `eps` unless it is a static attribute,
//! then the array bounds; the backward adds the cotangent of `y`. Outputs: `y`; for the
//! backward the cotangents of `x` and `z` and one cotangent of `eps` per row (the Python side
//! sums them to `eps`'s shape). Bounds get no gradient from the projection.
//!
//! The backward reuses what the forward computed only through the core's public API: today
//! `project_vjp` finds each row's multiplier again (a linear-time pass, not a second call
//! from Python).

use std::sync::atomic::{AtomicU64, Ordering};

use clipresc_core::{project, project_vjp, CoreError, ProjectBatch, ProjectGrads, ProjectNorm};
use clipresc_core::{Batch, Real};

use crate::jax_ffi::{advise_huge_pages, by_dtype, explain, handle, ret, Common, Fail, Frame};
use crate::xla_ffi::{XLA_FFI_CallFrame, XLA_FFI_Error};

/// Forward and backward handler calls so far: lets the tests check that a jitted `project`
/// took the FFI path, not the callback.
static FORWARDS: AtomicU64 = AtomicU64::new(0);
static BACKWARDS: AtomicU64 = AtomicU64::new(0);

/// `batch` (with `z` in the direction's place) as the projection's batch.
fn project_batch<'a, T: Real>(b: &Batch<'a, T>, p: f64) -> Result<ProjectBatch<'a, T>, Fail> {
    let norm = ProjectNorm::new(p).ok_or_else(|| Fail::Call(format!("invalid p {p}")))?;
    Ok(ProjectBatch::of_batch(b, norm))
}

/// A core error as a handler failure: a size mismatch is a malformed call, anything else a
/// rejection of the data (explained by the NumPy path's message).
fn core_result(f: &Frame, res: Result<(), CoreError>) -> Result<(), Fail> {
    match res {
        Ok(()) => Ok(()),
        Err(e @ CoreError::Length { .. }) => Err(Fail::Call(e.to_string())),
        Err(e) => Err(Fail::Data(explain(f, &e.to_string()))),
    }
}

fn forward<T: Real>(f: &Frame) -> Result<(), Fail> {
    // SAFETY: `f` is the decoded frame of the live call.
    let c = unsafe { Common::<T>::read(f) }?;
    let y_buf = ret(f, 0)?;
    y_buf.check::<T>("y")?;
    if y_buf.len() != c.shape.rows * c.shape.n {
        return Err(Fail::Call("y has the wrong size".into()));
    }
    // SAFETY: the only output buffer of this call, of dtype `T` (checked).
    let y = unsafe { y_buf.slice_mut::<T>() };
    advise_huge_pages(y);
    let mut eps_rows = Vec::new();
    let batch = c.batch(&mut eps_rows)?;
    let pb = project_batch(&batch, f.float("p")?)?;
    FORWARDS.fetch_add(1, Ordering::Relaxed);
    core_result(f, project(&pb, y))
}

fn backward<T: Real>(f: &Frame) -> Result<(), Fail> {
    // SAFETY: `f` is the decoded frame of the live call.
    let c = unsafe { Common::<T>::read(f) }?;
    let (rows, n) = (c.shape.rows, c.shape.n);
    let cot_buf = f
        .args
        .get(c.next)
        .ok_or_else(|| Fail::Call("missing cotangent operand".into()))?;
    cot_buf.check::<T>("cotangent")?;
    let (gx_buf, gz_buf, ge_buf) = (ret(f, 0)?, ret(f, 1)?, ret(f, 2)?);
    gx_buf.check::<T>("x_grad")?;
    gz_buf.check::<T>("z_grad")?;
    if cot_buf.len() != rows * n
        || gx_buf.len() != rows * n
        || gz_buf.len() != rows * n
        || ge_buf.len() != rows
    {
        return Err(Fail::Call("a cotangent has the wrong size".into()));
    }
    // SAFETY: an input buffer of this call of dtype `T` (checked), read only.
    let ybar = unsafe { cot_buf.slice::<T>() };
    // SAFETY: output buffers of this call of dtype `T` (checked), distinct from each other
    // and from every input.
    let (gx, gz) = unsafe { (gx_buf.slice_mut::<T>(), gz_buf.slice_mut::<T>()) };
    advise_huge_pages(gx);
    advise_huge_pages(gz);
    let mut ge = vec![0.0f64; rows];
    let mut eps_rows = Vec::new();
    let batch = c.batch(&mut eps_rows)?;
    let pb = project_batch(&batch, f.float("p")?)?;
    BACKWARDS.fetch_add(1, Ordering::Relaxed);
    let grads = ProjectGrads {
        x: gx,
        z: gz,
        eps: &mut ge,
    };
    core_result(f, project_vjp(&pb, ybar, grads))?;
    // SAFETY: an output buffer of this call, written once, as its own dtype (F32 or F64).
    unsafe { ge_buf.write_f64(&ge, "eps_grad") }?;
    Ok(())
}

/// XLA handler: `clipresc.project`.
///
/// # Safety
/// Called by XLA with a valid call frame.
pub(crate) unsafe extern "C" fn project_handler(cf: *mut XLA_FFI_CallFrame) -> *mut XLA_FFI_Error {
    // SAFETY: XLA passes the call frame of this call.
    unsafe {
        handle(cf, |f, d| {
            by_dtype(d, || forward::<f32>(f), || forward::<f64>(f))
        })
    }
}

/// XLA handler: the VJP of `clipresc.project` (cotangents of `x`, `z` and per-row `eps`).
///
/// # Safety
/// Called by XLA with a valid call frame.
pub(crate) unsafe extern "C" fn project_vjp_handler(
    cf: *mut XLA_FFI_CallFrame,
) -> *mut XLA_FFI_Error {
    // SAFETY: XLA passes the call frame of this call.
    unsafe {
        handle(cf, |f, d| {
            by_dtype(d, || backward::<f32>(f), || backward::<f64>(f))
        })
    }
}

/// `(forward calls, backward calls)` of the projection handlers so far in this process.
#[pyo3::pyfunction]
pub(crate) fn jax_ffi_project_calls() -> (u64, u64) {
    (
        FORWARDS.load(Ordering::Relaxed),
        BACKWARDS.load(Ordering::Relaxed),
    )
}
