//! XLA FFI handler for `clipresc.noise` under a JAX trace: draws the noise in the Rust core on
//! XLA's buffers, with the bits of the NumPy path for the same seed.
//!
//! Operands: `x` twice (the shared reader of `jax_ffi` takes a direction, which noise
//! replaces), `eps`, the array bounds, then the seeds: either the 8 `u32` words of each key
//! (`seed_is_key`, a static seed whose key Python derived) or one integer per key (a traced
//! seed, turned into NumPy's `SeedSequence(seed)` key here). One key per group of
//! consecutive rows: under `vmap` every mapped element gets its own key, and its rows use
//! streams `row_offset ..`, as a loop over the elements would.

use clipresc_core::{
    noise, Bound as CoreBound, Distribution, Eps, NoiseBatch, NoiseSpec, Options, Real, Seed,
};

use crate::jax_ffi::{
    advise_huge_pages, by_dtype, core_result, explain, handle, ret, Buf, Common, Fail, Frame,
};
use crate::seed_sequence::seed_key;
use crate::xla_ffi::{XLA_FFI_CallFrame, XLA_FFI_Error};

/// The keys of the seed operand, one per group of rows.
fn keys(buf: &Buf, is_key: bool) -> Result<Vec<Option<[u8; 32]>>, String> {
    // SAFETY: an input buffer of this call, read as the integer type its dtype names.
    let vals = unsafe { buf.ints("seed") }?;
    if is_key {
        if vals.len() % 8 != 0 {
            return Err("seed: key words not a multiple of 8".into());
        }
        return Ok(vals
            .chunks_exact(8)
            .map(|w| {
                let mut key = [0u8; 32];
                for (o, &v) in key.chunks_exact_mut(4).zip(w) {
                    o.copy_from_slice(&(v as u32).to_le_bytes());
                }
                Some(key)
            })
            .collect());
    }
    // a negative seed has no key: the NumPy path's message explains it
    Ok(vals
        .iter()
        .map(|&v| u64::try_from(v).ok().map(seed_key))
        .collect())
}

/// Rows `r0 .. r0 + rows` of a bound.
fn bound_rows<T: Real>(b: CoreBound<'_, T>, r0: usize, rows: usize, n: usize) -> CoreBound<'_, T> {
    match b {
        CoreBound::Full(v) => CoreBound::Full(&v[r0 * n..(r0 + rows) * n]),
        other => other,
    }
}

fn noise_typed<T: Real>(f: &Frame) -> Result<(), Fail> {
    // SAFETY: `f` is the decoded frame of the live call.
    let c = unsafe { Common::<T>::read(f) }?;
    let seed_buf = f
        .args
        .get(c.next)
        .ok_or_else(|| Fail::Call("missing seed operand".into()))?;
    let keys = keys(seed_buf, f.flag("seed_is_key")?)?;
    let (rows, n) = (c.shape.rows, c.shape.n);
    let groups = keys.len();
    if rows > 0 && (groups == 0 || rows % groups != 0) {
        return Err(Fail::Call(format!("{groups} seeds for {rows} rows")));
    }
    let per = rows.checked_div(groups).unwrap_or(0);
    let distribution = usize::try_from(f.int("distribution")?)
        .ok()
        .and_then(|i| Distribution::ALL.get(i).copied())
        .ok_or_else(|| Fail::Call("unknown distribution".into()))?;
    let row_offset = f.uint("row_offset")?;
    let (y_buf, eta_buf) = (ret(f, 0)?, ret(f, 1)?);
    y_buf.check::<T>("y")?;
    eta_buf.check::<T>("eta")?;
    if y_buf.len() != rows * n || eta_buf.len() != rows {
        return Err(Fail::Call("an output has the wrong size".into()));
    }
    // SAFETY: output buffers of this call of dtype `T`, distinct from each other.
    let (y, eta) = unsafe { (y_buf.slice_mut::<T>(), eta_buf.slice_mut::<T>()) };
    advise_huge_pages(y);
    let mut eps_rows = Vec::new();
    let batch = c.batch(&mut eps_rows)?;
    let opts = Options::default();
    for (g, key) in keys.iter().enumerate() {
        let r0 = g * per;
        let Some(key) = key else {
            return Err(Fail::Data(explain(f, "seed must be a non-negative int")));
        };
        let sub = NoiseBatch {
            x: &batch.x[r0 * n..(r0 + per) * n],
            rows: per,
            n,
            lower: bound_rows(batch.lower, r0, per, n),
            upper: bound_rows(batch.upper, r0, per, n),
            eps: match batch.eps {
                Eps::PerRow(e) => Eps::PerRow(&e[r0..r0 + per]),
                s => s,
            },
            norm: batch.norm,
            spec: NoiseSpec {
                distribution,
                seed: Seed(*key),
                row_offset,
            },
        };
        let res = noise(
            &sub,
            &opts,
            &mut y[r0 * n..(r0 + per) * n],
            &mut eta[r0..r0 + per],
        );
        core_result(f, res)?;
    }
    Ok(())
}

/// XLA handler: `clipresc.noise` (the rescaled noisy point and its scales `eta`).
///
/// # Safety
/// Called by XLA with a valid call frame.
pub(crate) unsafe extern "C" fn noise_handler(cf: *mut XLA_FFI_CallFrame) -> *mut XLA_FFI_Error {
    // SAFETY: XLA passes the call frame of this call.
    unsafe {
        handle(cf, |f, d| {
            by_dtype(d, || noise_typed::<f32>(f), || noise_typed::<f64>(f))
        })
    }
}
