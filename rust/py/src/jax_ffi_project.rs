//! XLA FFI handlers for `clipresc.project` under a JAX trace on CPU: the projection and its
//! VJP, run by the Rust core on XLA's buffers (no copies, unlike `jax.pure_callback`).
//!
//! The operands are those of the `perturb` handlers (`jax_ffi`'s shared reader): `x`, `z` in
//! the place of the direction (vector axes trailing), `eps` unless it is a static attribute,
//! then the array bounds; the backward adds the cotangent of `y` and, when the forward's
//! residual is at hand, its multipliers. Outputs: `y` and each row's multiplier; for the
//! backward the cotangents of `x` and `z` and one cotangent of `eps` per row (the Python side
//! sums them to `eps`'s shape). Bounds get no gradient from the projection.
//!
//! The multipliers are `f64`, which XLA holds only with JAX's 64-bit types on: they travel
//! as two `uint32` words per row (the low, then the high half of the bits), so the backward
//! gets them bit for bit and searches no row again (`project_vjp_given`); its cotangents are
//! bitwise those of a backward that solves again.

use std::sync::atomic::{AtomicU64, Ordering};

use clipresc_core::{project_vjp, project_vjp_given, project_with_multipliers};
use clipresc_core::{Batch, CoreError, ProjectBatch, ProjectGrads, ProjectNorm, Real};

use crate::jax_ffi::{advise_huge_pages, by_dtype, explain, handle, ret, Buf, Common, Fail, Frame};
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

/// Writes each row's multiplier into the U32 output `buf` as (low, high) words of its bits.
fn write_mult(buf: &Buf, mult: &[f64]) -> Result<(), String> {
    // SAFETY: an output buffer of this call, aliased by no other slice.
    unsafe { buf.write_f64_words(mult, "multipliers") }
}

/// The multipliers [`write_mult`] wrote, from the U32 input `buf` (`rows` of them).
fn read_mult(buf: &Buf, rows: usize) -> Result<Vec<f64>, String> {
    // SAFETY: an input buffer of this call, read only.
    let mult = unsafe { buf.f64_words("multipliers") }?;
    if mult.len() != rows {
        return Err("the multipliers have the wrong size".into());
    }
    Ok(mult)
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
    let mut mult = vec![0.0f64; c.shape.rows];
    core_result(f, project_with_multipliers(&pb, y, &mut mult))?;
    Ok(write_mult(ret(f, 1)?, &mult)?)
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
    // the forward's multipliers, when the caller passes them after the cotangent
    let given = match f.args.get(c.next + 1) {
        Some(buf) => Some(read_mult(buf, rows)?),
        None => None,
    };
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
    let res = match &given {
        Some(m) => project_vjp_given(&pb, ybar, m, grads),
        None => project_vjp(&pb, ybar, grads),
    };
    core_result(f, res)?;
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
