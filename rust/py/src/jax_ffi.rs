//! XLA FFI handlers for JAX on CPU: `scale` / `perturb` (with the scales `eta` the backward
//! reuses) and their VJP, called by `jax.ffi.ffi_call` on XLA's buffers without copying.
//!
//! The Python side (`clipresc/frameworks/_jax_ffi.py`) registers the capsules that
//! [`jax_ffi_targets`] returns, so this crate needs no jaxlib to build and importing clipresc
//! needs no JAX. Operands arrive with the vector axes trailing (`nvec` of them); every axis
//! before them is a batch axis, vmapped axes included. `eps` holds one value, one per row, or
//! one per group of consecutive rows (a scalar `eps` under `vmap`); an array bound holds one
//! row shared by all rows (`n` values), one per row, or one per group of rows.
//!
//! Failures never unwind into XLA: a panic is caught and returned as an XLA error. When the
//! core rejects the data (NaN, `x` outside its bounds, bad `eps`, an unreachable size with
//! `unreachable="raise"`), the handler asks Python for the NumPy path's message on the same
//! data, so that users see one wording whatever path ran.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use clipresc_core::{
    perturb, perturb_vjp_in_place, scale, vjp, Batch, Bound as CoreBound, CoreError, Cotangent,
    Eps, Grads, Norm, Options, Real, Summary,
};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::jax_ffi_project as project;
use crate::xla_ffi::*;

/// Handler calls that solved (forward) and that ran a VJP: lets the tests check that the
/// backward reuses the forward's `eta` instead of solving again.
static SOLVES: AtomicU64 = AtomicU64::new(0);
static VJPS: AtomicU64 = AtomicU64::new(0);
/// Backward calls that got `x`'s cotangent in the incoming cotangent's buffer.
static IN_PLACE: AtomicU64 = AtomicU64::new(0);

/// Why a handler call failed.
pub(crate) enum Fail {
    /// Malformed call (a bug on the Python side or an unsupported jaxlib): the message.
    Call(String),
    /// The data was rejected: the message comes from the NumPy path.
    Data(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail::Call(s)
    }
}

/// A buffer of the call frame, borrowed for the duration of the call.
pub(crate) struct Buf {
    pub(crate) dtype: i32,
    data: *mut c_void,
    pub(crate) dims: Vec<usize>,
}

impl Buf {
    /// # Safety
    /// `ptr` must point to a valid `XLA_FFI_Buffer` for the duration of the call.
    unsafe fn read(ptr: *mut c_void) -> Result<Buf, String> {
        if ptr.is_null() {
            return Err("null buffer".into());
        }
        // SAFETY: the caller guarantees `ptr` is a live `XLA_FFI_Buffer`.
        let b = unsafe { &*(ptr as *const XLA_FFI_Buffer) };
        let rank = usize::try_from(b.rank).map_err(|_| "negative rank")?;
        let dims = if rank == 0 {
            Vec::new()
        } else {
            // SAFETY: XLA passes `rank` dimensions at `dims` (c_api.h: "length == rank").
            unsafe { std::slice::from_raw_parts(b.dims, rank) }
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| "negative dimension".to_string()))
                .collect::<Result<_, _>>()?
        };
        Ok(Buf {
            dtype: b.dtype,
            data: b.data,
            dims,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub(crate) fn check<T: Real>(&self, what: &str) -> Result<(), String> {
        if self.dtype != dtype_of::<T>() {
            return Err(format!(
                "{what}: dtype code {} where {} was expected",
                self.dtype,
                dtype_of::<T>()
            ));
        }
        Ok(())
    }

    /// The elements as a slice of `T`.
    ///
    /// # Safety
    /// The buffer must hold `len()` elements of `T` (its dtype was checked against `T`), live
    /// and not written by anyone else for `'a`.
    pub(crate) unsafe fn slice<'a, T: Real>(&self) -> &'a [T] {
        if self.len() == 0 || self.data.is_null() {
            return &[];
        }
        // SAFETY: guaranteed by the caller; the pointer is non-null and XLA aligns buffers
        // for their element type.
        unsafe { std::slice::from_raw_parts(self.data as *const T, self.len()) }
    }

    /// The elements as a mutable slice of `T`.
    ///
    /// # Safety
    /// As [`Buf::slice`], and the buffer must be an output that no other slice aliases.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut<'a, T: Real>(&self) -> &'a mut [T] {
        if self.len() == 0 || self.data.is_null() {
            return &mut [];
        }
        // SAFETY: guaranteed by the caller (an output buffer of `len()` elements of `T`,
        // aliased by nothing else).
        unsafe { std::slice::from_raw_parts_mut(self.data as *mut T, self.len()) }
    }

    /// The elements of an integer buffer (S32, S64, U32 or U64), widened.
    ///
    /// # Safety
    /// The buffer must be an input of this call, live for the call.
    pub(crate) unsafe fn ints(&self, what: &str) -> Result<Vec<i128>, String> {
        let n = self.len();
        if n == 0 || self.data.is_null() {
            return Ok(Vec::new());
        }
        macro_rules! read {
            ($t:ty) => {
                // SAFETY: the dtype says the buffer holds `n` values of this type (an input
                // buffer of the live call, aligned by XLA for its element type).
                unsafe { std::slice::from_raw_parts(self.data as *const $t, n) }
                    .iter()
                    .map(|&v| v as i128)
                    .collect()
            };
        }
        Ok(match self.dtype {
            DTYPE_S32 => read!(i32),
            DTYPE_S64 => read!(i64),
            DTYPE_U32 => read!(u32),
            DTYPE_U64 => read!(u64),
            d => return Err(format!("{what}: unsupported dtype code {d}")),
        })
    }

    /// The elements of a U32 buffer.
    ///
    /// # Safety
    /// As [`Buf::slice`].
    pub(crate) unsafe fn words<'a>(&self, what: &str) -> Result<&'a [u32], String> {
        if self.dtype != DTYPE_U32 {
            return Err(format!(
                "{what}: dtype code {} where U32 was expected",
                self.dtype
            ));
        }
        if self.len() == 0 || self.data.is_null() {
            return Ok(&[]);
        }
        // SAFETY: a U32 buffer (checked) of `len()` elements, aligned by XLA for `u32`;
        // the caller guarantees it is live and unwritten for `'a`.
        Ok(unsafe { std::slice::from_raw_parts(self.data as *const u32, self.len()) })
    }

    /// The `f64` values held as bit words in this U32 buffer: two words per value, the low
    /// half of the bits first (how float64 values reach a handler, and leave it, while JAX's
    /// 64-bit types are off).
    ///
    /// # Safety
    /// The buffer must be an input of this call, live and unwritten for the call.
    pub(crate) unsafe fn f64_words(&self, what: &str) -> Result<Vec<f64>, String> {
        // SAFETY: guaranteed by the caller.
        let words = unsafe { self.words(what) }?;
        if words.len() % 2 != 0 {
            return Err(format!("{what}: an odd number of float64 bit words"));
        }
        Ok(words
            .chunks_exact(2)
            .map(|w| f64::from_bits(u64::from(w[0]) | (u64::from(w[1]) << 32)))
            .collect())
    }

    /// Writes `vals` into this U32 output buffer as [`Buf::f64_words`] reads them.
    ///
    /// # Safety
    /// As [`Buf::words_mut`].
    pub(crate) unsafe fn write_f64_words(&self, vals: &[f64], what: &str) -> Result<(), String> {
        // SAFETY: guaranteed by the caller.
        let words = unsafe { self.words_mut(what) }?;
        if words.len() != 2 * vals.len() {
            return Err(format!(
                "{what}: {} words for {} values",
                words.len(),
                vals.len()
            ));
        }
        for (w, v) in words.chunks_exact_mut(2).zip(vals) {
            let bits = v.to_bits();
            (w[0], w[1]) = (bits as u32, (bits >> 32) as u32);
        }
        Ok(())
    }

    /// The elements of a U32 output buffer, for writing.
    ///
    /// # Safety
    /// As [`Buf::slice_mut`].
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn words_mut<'a>(&self, what: &str) -> Result<&'a mut [u32], String> {
        if self.dtype != DTYPE_U32 {
            return Err(format!(
                "{what}: dtype code {} where U32 was expected",
                self.dtype
            ));
        }
        if self.len() == 0 || self.data.is_null() {
            return Ok(&mut []);
        }
        // SAFETY: a U32 output buffer (checked) of `len()` elements, aligned by XLA for
        // `u32`, aliased by nothing else (the caller's guarantee).
        Ok(unsafe { std::slice::from_raw_parts_mut(self.data as *mut u32, self.len()) })
    }

    /// The elements as `f64` (F32 or F64 buffers).
    ///
    /// # Safety
    /// As [`Buf::slice`].
    unsafe fn to_f64(&self, what: &str) -> Result<Vec<f64>, String> {
        match self.dtype {
            // SAFETY: the dtype says the buffer holds `f32`s; the caller guarantees the rest.
            DTYPE_F32 => Ok(unsafe { self.slice::<f32>() }
                .iter()
                .map(|&v| v as f64)
                .collect()),
            // SAFETY: the dtype says the buffer holds `f64`s; the caller guarantees the rest.
            DTYPE_F64 => Ok(unsafe { self.slice::<f64>() }.to_vec()),
            d => Err(format!("{what}: unsupported dtype code {d}")),
        }
    }

    /// Writes `vals` (one per element) into this output buffer, in its F32 or F64 dtype.
    ///
    /// # Safety
    /// As [`Buf::slice_mut`].
    pub(crate) unsafe fn write_f64(&self, vals: &[f64], what: &str) -> Result<(), String> {
        if vals.len() != self.len() {
            return Err(format!("{what}: {} values for {}", vals.len(), self.len()));
        }
        match self.dtype {
            DTYPE_F32 => {
                // SAFETY: an `f32` output buffer, guaranteed by the caller.
                let out = unsafe { self.slice_mut::<f32>() };
                out.iter_mut().zip(vals).for_each(|(o, &v)| *o = v as f32);
            }
            DTYPE_F64 => {
                // SAFETY: an `f64` output buffer, guaranteed by the caller.
                unsafe { self.slice_mut::<f64>() }.copy_from_slice(vals);
            }
            d => return Err(format!("{what}: unsupported dtype code {d}")),
        }
        Ok(())
    }
}

/// Outputs at least this large get transparent huge pages, as NumPy gives its large arrays:
/// XLA hands the handlers fresh, untouched memory, and faulting it in 4 KiB pages costs about
/// as much as the whole solve.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// Asks the kernel for huge pages over `out` (an advice: the contents are not touched).
#[cfg(target_os = "linux")]
pub(crate) fn advise_huge_pages<T>(out: &mut [T]) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(out);
    if bytes < HUGE_PAGE_MIN_BYTES {
        return;
    }
    let start = out.as_mut_ptr() as usize;
    let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
    if hi > lo {
        // SAFETY: `[lo, hi)` lies inside `out`, memory this process owns and that stays
        // mapped for the call; MADV_HUGEPAGE only changes how the kernel backs the pages
        // (never their contents), and a failure leaves them as they were.
        unsafe { libc::madvise(lo as *mut c_void, hi - lo, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn advise_huge_pages<T>(_out: &mut [T]) {}

fn dtype_of<T: Real>() -> i32 {
    if std::mem::size_of::<T>() == 4 {
        DTYPE_F32
    } else {
        DTYPE_F64
    }
}

/// A scalar attribute, widened.
#[derive(Clone, Copy)]
enum Attr {
    Float(f64),
    Int(i64),
    Uint(u64),
}

/// The decoded call frame.
pub(crate) struct Frame {
    pub(crate) args: Vec<Buf>,
    rets: Vec<Buf>,
    attrs: HashMap<String, Attr>,
}

impl Frame {
    /// # Safety
    /// `cf` must be the live call frame XLA passed to the handler.
    unsafe fn read(cf: &XLA_FFI_CallFrame) -> Result<Frame, String> {
        let list = |size: i64, types: *mut i32, ptrs: *mut *mut c_void, what: &str| {
            let size = usize::try_from(size).map_err(|_| format!("negative {what} count"))?;
            let mut out = Vec::with_capacity(size);
            for i in 0..size {
                // SAFETY: XLA passes `size` types and pointers (c_api.h: "length == size").
                let (ty, ptr) = unsafe { (*types.add(i), *ptrs.add(i)) };
                if ty != 1 {
                    return Err(format!("{what} {i} is not a buffer (type {ty})"));
                }
                // SAFETY: a buffer-typed entry points to an `XLA_FFI_Buffer` of this call.
                out.push(unsafe { Buf::read(ptr) }?);
            }
            Ok::<_, String>(out)
        };
        let args = list(cf.args.size, cf.args.types, cf.args.args, "argument")?;
        let rets = list(cf.rets.size, cf.rets.types, cf.rets.rets, "result")?;
        let mut attrs = HashMap::new();
        let n = usize::try_from(cf.attrs.size).map_err(|_| "negative attribute count")?;
        for i in 0..n {
            // SAFETY: XLA passes `size` types, names and attributes (c_api.h).
            let (ty, name, attr) = unsafe {
                (
                    *cf.attrs.types.add(i),
                    &**cf.attrs.names.add(i),
                    *cf.attrs.attrs.add(i),
                )
            };
            // SAFETY: a byte span of this call: `len` bytes at `ptr`.
            let name = unsafe { std::slice::from_raw_parts(name.ptr as *const u8, name.len) };
            let name = String::from_utf8_lossy(name).into_owned();
            if ty != ATTR_SCALAR {
                return Err(format!("attribute {name} is not a scalar"));
            }
            // SAFETY: a scalar attribute points to an `XLA_FFI_Scalar` of this call.
            let s = unsafe { &*(attr as *const XLA_FFI_Scalar) };
            // SAFETY: `value` points to one value of the type `dtype` names.
            let v = unsafe {
                match s.dtype {
                    DTYPE_F64 => Attr::Float(*(s.value as *const f64)),
                    DTYPE_F32 => Attr::Float(*(s.value as *const f32) as f64),
                    DTYPE_S64 => Attr::Int(*(s.value as *const i64)),
                    DTYPE_S32 => Attr::Int(*(s.value as *const i32) as i64),
                    DTYPE_U64 => Attr::Uint(*(s.value as *const u64)),
                    d => return Err(format!("attribute {name}: unsupported dtype code {d}")),
                }
            };
            attrs.insert(name, v);
        }
        Ok(Frame { args, rets, attrs })
    }

    pub(crate) fn float(&self, name: &str) -> Result<f64, String> {
        match self.attrs.get(name) {
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f64),
            Some(Attr::Uint(v)) => Ok(*v as f64),
            None => Err(format!("missing attribute {name}")),
        }
    }

    pub(crate) fn uint(&self, name: &str) -> Result<u64, String> {
        match self.attrs.get(name) {
            Some(Attr::Uint(v)) => Ok(*v),
            Some(Attr::Int(v)) if *v >= 0 => Ok(*v as u64),
            _ => Err(format!("missing unsigned attribute {name}")),
        }
    }

    pub(crate) fn int(&self, name: &str) -> Result<i64, String> {
        match self.attrs.get(name) {
            Some(Attr::Int(v)) => Ok(*v),
            _ => Err(format!("missing integer attribute {name}")),
        }
    }

    pub(crate) fn flag(&self, name: &str) -> Result<bool, String> {
        Ok(self.int(name)? != 0)
    }
}

/// How the operands of one call fit the core: `rows` vectors of length `n`.
pub(crate) struct Shape {
    pub(crate) rows: usize,
    pub(crate) n: usize,
}

impl Shape {
    fn of(x: &Buf, nvec: i64) -> Result<Shape, String> {
        let nvec = usize::try_from(nvec).map_err(|_| "negative nvec")?;
        if nvec > x.dims.len() {
            return Err(format!("nvec {nvec} exceeds x's rank {}", x.dims.len()));
        }
        let split = x.dims.len() - nvec;
        Ok(Shape {
            rows: x.dims[..split].iter().product(),
            n: x.dims[split..].iter().product(),
        })
    }

    /// Rows per value of an operand holding `count` values of `width` elements each: `rows`
    /// for one shared value, 1 for one per row, else the size of each group of rows.
    fn group(&self, count: usize, width: usize, what: &str) -> Result<usize, String> {
        let values = count.checked_div(width).unwrap_or(1);
        if count == values * width && values > 0 && self.rows.is_multiple_of(values) {
            Ok(self.rows / values)
        } else if self.rows == 0 && count == 0 {
            Ok(1)
        } else {
            Err(format!(
                "{what}: {count} values do not fit {} rows of {}",
                self.rows, self.n
            ))
        }
    }
}

/// `eps` as the core takes it, with what is needed to reduce its cotangent.
struct EpsArg {
    values: Vec<f64>,
    group: usize,
}

impl EpsArg {
    /// A scalar `eps` given as an attribute (known when the caller traced the function).
    fn scalar(value: f64, shape: &Shape) -> EpsArg {
        EpsArg {
            values: vec![value],
            group: shape.rows.max(1),
        }
    }

    /// `eps` from its operand: F32 or F64 values, or U32 pairs holding the bits of F64
    /// values (low word first), which is how a float64 `eps` reaches the handler exactly
    /// while JAX's 64-bit types are off (see `exact_eps` in `frameworks/_jax_ffi.py`).
    fn new(buf: &Buf, shape: &Shape) -> Result<EpsArg, String> {
        let values = if buf.dtype == DTYPE_U32 {
            // SAFETY: an input buffer of this call, read only.
            unsafe { buf.f64_words("eps") }?
        } else {
            // SAFETY: an input buffer of this call, read as its own dtype.
            unsafe { buf.to_f64("eps") }?
        };
        let group = shape.group(values.len(), 1, "eps")?;
        Ok(EpsArg { values, group })
    }

    /// Borrowed values or, for groups of rows, one value per row in `owned`.
    fn core<'a>(&'a self, shape: &Shape, owned: &'a mut Vec<f64>) -> Eps<'a> {
        if self.values.len() == 1 {
            Eps::Scalar(self.values[0])
        } else if self.group == 1 {
            Eps::PerRow(&self.values)
        } else {
            *owned = (0..shape.rows)
                .map(|r| self.values[r / self.group])
                .collect();
            Eps::PerRow(owned)
        }
    }

    /// The cotangent of the per-row values, summed over each value's rows.
    fn reduce(&self, per_row: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.values.len()];
        for (r, g) in per_row.iter().enumerate() {
            out[r / self.group] += g;
        }
        out
    }
}

/// One side of the box as the core takes it.
enum Side<'a, T> {
    Scalar(f64),
    /// `n` values shared by every row.
    Shared(&'a [T]),
    /// One row per row.
    Full(&'a [T]),
    /// One row per group of `usize` rows, expanded into one row per row.
    Grouped(Vec<T>, usize),
}

impl<'a, T: Real> Side<'a, T> {
    /// # Safety
    /// `buf`, when given, must be an input buffer of this call.
    unsafe fn new(
        buf: Option<&Buf>,
        scalar: f64,
        shape: &Shape,
        what: &str,
    ) -> Result<Self, String> {
        let Some(buf) = buf else {
            return Ok(Side::Scalar(scalar));
        };
        buf.check::<T>(what)?;
        // SAFETY: an input buffer of this call whose dtype was checked to be `T`.
        let vals: &'a [T] = unsafe { buf.slice() };
        let group = shape.group(buf.len(), shape.n, what)?;
        Ok(if group == shape.rows {
            Side::Shared(vals)
        } else if group == 1 {
            Side::Full(vals)
        } else {
            let n = shape.n;
            let full = (0..shape.rows * n)
                .map(|i| vals[(i / n / group) * n + i % n])
                .collect();
            Side::Grouped(full, group)
        })
    }

    fn core(&self) -> CoreBound<'_, T> {
        match self {
            Side::Scalar(v) => CoreBound::Scalar(T::of_f64(*v)),
            Side::Shared(s) => CoreBound::Shared(s),
            Side::Full(s) => CoreBound::Full(s),
            Side::Grouped(v, _) => CoreBound::Full(v),
        }
    }
}

/// What every handler reads from the call frame.
pub(crate) struct Common<'a, T> {
    pub(crate) shape: Shape,
    x: &'a [T],
    d: &'a [T],
    eps: EpsArg,
    lower: Side<'a, T>,
    upper: Side<'a, T>,
    p: f64,
    /// Index of the next argument after the bounds.
    pub(crate) next: usize,
}

impl<'a, T: Real> Common<'a, T> {
    /// # Safety
    /// `f` must be the decoded frame of the live call.
    pub(crate) unsafe fn read(f: &'a Frame) -> Result<Self, String> {
        let arg = |i: usize| f.args.get(i).ok_or(format!("missing argument {i}"));
        let (x, d) = (arg(0)?, arg(1)?);
        x.check::<T>("x")?;
        d.check::<T>("delta")?;
        if x.len() != d.len() {
            return Err("x and delta differ in size".into());
        }
        let shape = Shape::of(x, f.int("nvec")?)?;
        // a static scalar eps comes as an attribute, else as the operand after delta
        let (eps, mut next) = if f.flag("eps_static")? {
            (EpsArg::scalar(f.float("eps")?, &shape), 2)
        } else {
            (EpsArg::new(arg(2)?, &shape)?, 3)
        };
        let mut side = |name: &str| -> Result<Side<'a, T>, String> {
            let buf = if f.flag(&format!("{name}_array"))? {
                next += 1;
                Some(arg(next - 1)?)
            } else {
                None
            };
            // SAFETY: `buf` is an input buffer of this call.
            unsafe { Side::new(buf, f.float(name)?, &shape, name) }
        };
        let lower = side("lower")?;
        let upper = side("upper")?;
        Ok(Common {
            // SAFETY: input buffers of this call whose dtypes were checked to be `T`.
            x: unsafe { x.slice() },
            // SAFETY: as above.
            d: unsafe { d.slice() },
            shape,
            eps,
            lower,
            upper,
            p: f.float("p")?,
            next,
        })
    }

    pub(crate) fn batch<'b>(&'b self, eps_rows: &'b mut Vec<f64>) -> Result<Batch<'b, T>, String> {
        Ok(Batch {
            x: self.x,
            delta: self.d,
            rows: self.shape.rows,
            n: self.shape.n,
            lower: self.lower.core(),
            upper: self.upper.core(),
            eps: self.eps.core(&self.shape, eps_rows),
            norm: Norm::new(self.p).ok_or(format!("invalid p {}", self.p))?,
        })
    }
}

pub(crate) fn ret(f: &Frame, i: usize) -> Result<&Buf, String> {
    f.rets.get(i).ok_or(format!("missing result {i}"))
}

pub(crate) fn core_result(f: &Frame, res: Result<Summary, CoreError>) -> Result<(), Fail> {
    match res {
        Ok(s) if s.unreachable_rows > 0 && f.flag("raise_unreachable")? => Err(Fail::Data(
            explain(f, "eps exceeds the largest reachable size"),
        )),
        Ok(_) => Ok(()),
        Err(e @ CoreError::Length { .. }) => Err(Fail::Call(e.to_string())),
        Err(e) => Err(Fail::Data(explain(f, &e.to_string()))),
    }
}

fn forward<T: Real>(f: &Frame) -> Result<(), Fail> {
    // SAFETY: `f` is the decoded frame of the live call.
    let c = unsafe { Common::<T>::read(f) }?;
    let perturbs = f.flag("perturb")?;
    let eta_buf = ret(f, usize::from(perturbs))?;
    eta_buf.check::<T>("eta")?;
    if eta_buf.len() != c.shape.rows {
        return Err(Fail::Call("eta has the wrong size".into()));
    }
    // SAFETY: an output buffer of this call of dtype `T`; outputs alias nothing.
    let eta = unsafe { eta_buf.slice_mut::<T>() };
    let mut eps_rows = Vec::new();
    let batch = c.batch(&mut eps_rows)?;
    let opts = Options::default();
    SOLVES.fetch_add(1, Ordering::Relaxed);
    let res = if perturbs {
        let y_buf = ret(f, 0)?;
        y_buf.check::<T>("y")?;
        if y_buf.len() != c.x.len() {
            return Err(Fail::Call("y has the wrong size".into()));
        }
        // SAFETY: an output buffer of this call of dtype `T`, distinct from `eta`'s.
        let y = unsafe { y_buf.slice_mut::<T>() };
        advise_huge_pages(y);
        perturb(&batch, &opts, y, eta)
    } else {
        scale(&batch, &opts, eta)
    };
    core_result(f, res)
}

fn backward<T: Real>(f: &Frame) -> Result<(), Fail> {
    // SAFETY: `f` is the decoded frame of the live call.
    let c = unsafe { Common::<T>::read(f) }?;
    let perturbs = f.flag("perturb")?;
    let arg = |i: usize| f.args.get(i).ok_or(format!("missing argument {i}"));
    let (eta_buf, cot_buf) = (arg(c.next)?, arg(c.next + 1)?);
    eta_buf.check::<T>("eta")?;
    cot_buf.check::<T>("cotangent")?;
    let (gx_buf, gd_buf) = (ret(f, 0)?, ret(f, 1)?);
    // XLA may hand `x`'s cotangent in the incoming cotangent's buffer (`input_output_aliases`;
    // it copies first where that buffer is still needed): then the core reads `ybar` there
    // and overwrites it. No other output may share an input's buffer.
    let in_place = perturbs && !cot_buf.data.is_null() && cot_buf.data == gx_buf.data;
    if in_place && cot_buf.len() != gx_buf.len() {
        return Err(Fail::Call("an aliased cotangent has the wrong size".into()));
    }
    let others_aliased = f.args[..c.next + 1]
        .iter()
        .any(|a| a.len() > 0 && (a.data == gx_buf.data || a.data == gd_buf.data));
    if others_aliased || (!in_place && cot_buf.len() > 0 && cot_buf.data == gd_buf.data) {
        return Err(Fail::Call("an output shares an input's buffer".into()));
    }
    // SAFETY: an input buffer of this call of dtype `T`.
    let eta = unsafe { eta_buf.slice::<T>() };
    // SAFETY: an input buffer of this call of dtype `T`, read only where it is not `gx`'s
    // buffer (in place it is never made a slice: `gx`'s mutable slice is its only view).
    let cot = (!in_place).then(|| unsafe { cot_buf.slice::<T>() });
    // no cotangent for a static eps (an attribute, not an operand)
    let ge_buf = if f.flag("eps_static")? {
        None
    } else {
        Some(ret(f, 2)?)
    };
    gx_buf.check::<T>("x_grad")?;
    gd_buf.check::<T>("delta_grad")?;
    if gx_buf.len() != c.x.len()
        || gd_buf.len() != c.x.len()
        || ge_buf.is_some_and(|b| b.len() != c.eps.values.len())
    {
        return Err(Fail::Call("a cotangent has the wrong size".into()));
    }
    let mut next_ret = 2 + usize::from(ge_buf.is_some());
    let mut side_out =
        |side: &Side<'_, T>, what: &str| -> Result<Option<(Vec<T>, usize)>, String> {
            if matches!(side, Side::Scalar(_)) {
                return Ok(None);
            }
            let buf = ret(f, next_ret)?;
            next_ret += 1;
            buf.check::<T>(what)?;
            let len = match side {
                Side::Shared(_) => c.shape.n,
                _ => c.shape.rows * c.shape.n,
            };
            Ok(Some((vec![T::of_f64(0.0); len], next_ret - 1)))
        };
    let mut lower_g = side_out(&c.lower, "lower_grad")?;
    let mut upper_g = side_out(&c.upper, "upper_grad")?;
    let mut eps_g = vec![0.0; c.shape.rows];
    let mut eps_rows = Vec::new();
    let batch = c.batch(&mut eps_rows)?;
    // SAFETY: output buffers of this call of dtype `T`, distinct from each other and from
    // every input read as a slice (checked above: only an in-place `cot`, never made a
    // slice, shares `gx`'s buffer).
    let (gx, gd) = unsafe { (gx_buf.slice_mut::<T>(), gd_buf.slice_mut::<T>()) };
    advise_huge_pages(gx);
    advise_huge_pages(gd);
    let grads = Grads {
        x: gx,
        delta: gd,
        eps: &mut eps_g,
        lower: lower_g.as_mut().map(|(v, _)| v.as_mut_slice()),
        upper: upper_g.as_mut().map(|(v, _)| v.as_mut_slice()),
    };
    VJPS.fetch_add(1, Ordering::Relaxed);
    let opts = Options::default();
    let res = match cot {
        None => {
            IN_PLACE.fetch_add(1, Ordering::Relaxed);
            perturb_vjp_in_place(&batch, &opts, Some(eta), grads)
        }
        Some(y) if perturbs => vjp(&batch, &opts, Some(eta), Cotangent::Y(y), grads),
        Some(e) => vjp(&batch, &opts, Some(eta), Cotangent::Eta(e), grads),
    };
    core_result(f, res)?;
    if let Some(ge_buf) = ge_buf {
        // SAFETY: an output buffer of this call, written once as its own dtype.
        unsafe { ge_buf.write_f64(&c.eps.reduce(&eps_g), "eps_grad") }?;
    }
    for (side, g) in [(&c.lower, lower_g), (&c.upper, upper_g)] {
        let Some((vals, i)) = g else { continue };
        let buf = &f.rets[i];
        // SAFETY: an output buffer of this call of dtype `T` (checked in `side_out`).
        let out = unsafe { buf.slice_mut::<T>() };
        match side {
            Side::Grouped(_, group) => {
                let n = c.shape.n;
                if out.len() * group != vals.len() {
                    return Err(Fail::Call("a bound's cotangent has the wrong size".into()));
                }
                out.iter_mut().for_each(|o| *o = T::of_f64(0.0));
                for (i, v) in vals.iter().enumerate() {
                    let o = &mut out[(i / n / group) * n + i % n];
                    *o = T::of_f64(o.as_f64() + v.as_f64());
                }
            }
            _ if out.len() == vals.len() => out.copy_from_slice(&vals),
            _ => return Err(Fail::Call("a bound's cotangent has the wrong size".into())),
        }
    }
    Ok(())
}

/// The NumPy path's message for the data of this call (Python's
/// `clipresc.frameworks._jax_ffi.explain`), or `fallback` if that fails.
pub(crate) fn explain(f: &Frame, fallback: &str) -> String {
    let run = || -> PyResult<String> {
        Python::attach(|py| {
            let arrays = PyList::empty(py);
            for b in &f.args {
                let a = match b.dtype {
                    // SAFETY: an input buffer of this call holding `f32`s.
                    DTYPE_F32 => PyArray1::from_slice(py, unsafe { b.slice::<f32>() })
                        .reshape(b.dims.clone())?
                        .into_any(),
                    // SAFETY: an input buffer of this call holding `f64`s.
                    DTYPE_F64 => PyArray1::from_slice(py, unsafe { b.slice::<f64>() })
                        .reshape(b.dims.clone())?
                        .into_any(),
                    // SAFETY: an input buffer of this call (seeds), read as its own dtype.
                    _ => match unsafe { b.ints("seed") } {
                        // (the sign is what a message can be about: clamp to i64)
                        Ok(v) => PyArray1::from_vec(
                            py,
                            v.iter()
                                .map(|&i| i.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
                                .collect(),
                        )
                        .reshape(b.dims.clone())?
                        .into_any(),
                        Err(_) => py.None().into_bound(py),
                    },
                };
                arrays.append(a)?;
            }
            let cfg = f.int("cfg").unwrap_or(-1);
            py.import("clipresc.frameworks._jax_ffi")?
                .call_method1("explain", (cfg, arrays.to_tuple()))?
                .extract()
        })
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(msg)) => msg,
        _ => format!("clipresc: {fallback}"),
    }
}

/// IEEE subnormals for the duration of a handler call: XLA runs its CPU threads with
/// subnormals flushed to zero, and the core must compute what the NumPy path computes, bit for
/// bit. Restores the caller's setting when dropped.
struct IeeeSubnormals {
    #[allow(dead_code)] // read only on the architectures handled below
    saved: u64,
}

impl IeeeSubnormals {
    #[cfg(target_arch = "x86_64")]
    fn enter() -> Self {
        const FTZ: u32 = 1 << 15;
        const DAZ: u32 = 1 << 6;
        let mut csr: u32 = 0;
        // SAFETY: `stmxcsr` stores the 32-bit SSE control/status register into `csr`, a live
        // local of that size; it touches nothing else.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags))
        };
        let ieee = csr & !(FTZ | DAZ);
        // SAFETY: loads the register's own value with only the flush-to-zero and
        // denormals-are-zero bits cleared: a valid setting (no reserved bits change).
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &ieee, options(nostack, preserves_flags, readonly))
        };
        IeeeSubnormals { saved: csr as u64 }
    }

    #[cfg(target_arch = "aarch64")]
    fn enter() -> Self {
        const FZ: u64 = 1 << 24;
        let fpcr: u64;
        // SAFETY: reads the floating-point control register into a local.
        unsafe {
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags))
        };
        // SAFETY: writes the register's own value with only the flush-to-zero bit cleared.
        unsafe {
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr & !FZ, options(nomem, nostack, preserves_flags))
        };
        IeeeSubnormals { saved: fpcr }
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn enter() -> Self {
        IeeeSubnormals { saved: 0 }
    }
}

impl Drop for IeeeSubnormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        {
            let csr = self.saved as u32;
            // SAFETY: restores the value `enter` read from the same register.
            unsafe {
                std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags, readonly))
            };
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: restores the value `enter` read from the same register.
        unsafe {
            std::arch::asm!("msr fpcr, {}", in(reg) self.saved, options(nomem, nostack, preserves_flags))
        };
    }
}

/// # Safety
/// `api` must be XLA's API table for this call.
unsafe fn make_error(api: *const XLA_FFI_Api, code: i32, msg: &str) -> *mut XLA_FFI_Error {
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    let mut args = XLA_FFI_Error_Create_Args {
        struct_size: std::mem::size_of::<XLA_FFI_Error_Create_Args>(),
        extension_start: std::ptr::null_mut(),
        message: msg.as_ptr(),
        errc: code,
    };
    // SAFETY: `api` is XLA's live API table (caller); `error_create` is its first function,
    // present since API version 0.1; XLA copies the message before this returns.
    unsafe {
        match api.as_ref().and_then(|a| a.error_create) {
            Some(create) => create(&mut args),
            // Nothing better can be done without the API: report failure as best we can.
            None => std::ptr::null_mut(),
        }
    }
}

/// The body of every handler: metadata query, stage check, dtype dispatch, error mapping.
///
/// # Safety
/// `cf` must be the call frame XLA passed to the handler.
pub(crate) unsafe fn handle(
    cf: *mut XLA_FFI_CallFrame,
    run: fn(&Frame, i32) -> Result<(), Fail>,
) -> *mut XLA_FFI_Error {
    // SAFETY: XLA passes a valid call frame (caller).
    let Some(cf) = (unsafe { cf.as_mut() }) else {
        return std::ptr::null_mut();
    };
    let ext = cf.extension_start;
    // SAFETY: a non-null extension pointer points to a live extension header.
    if !ext.is_null() && unsafe { (*ext).type_ } == EXTENSION_METADATA {
        // SAFETY: the metadata extension's header is its first field (c_api.h).
        let meta = unsafe { (*(ext as *mut XLA_FFI_Metadata_Extension)).metadata };
        // SAFETY: XLA passes a live metadata struct of `struct_size` bytes.
        if let Some(m) = unsafe { meta.as_mut() } {
            m.api_version = XLA_FFI_Api_Version {
                struct_size: std::mem::size_of::<XLA_FFI_Api_Version>(),
                extension_start: std::ptr::null_mut(),
                major_version: API_MAJOR,
                minor_version: API_MINOR,
            };
            m.traits = 0;
            let state_at = std::mem::size_of::<XLA_FFI_Metadata>();
            if m.struct_size >= state_at + 8 {
                // SAFETY: the struct is large enough for the `state_type_id` field that
                // newer headers put right after `traits` (checked by the layout test).
                unsafe { *((meta as *mut u8).add(state_at) as *mut i64) = 0 };
            }
        }
        return std::ptr::null_mut();
    }
    if cf.stage != 3 {
        return std::ptr::null_mut(); // only the execute stage does work
    }
    let api = cf.api;
    let res = catch_unwind(AssertUnwindSafe(|| {
        let _ieee = IeeeSubnormals::enter();
        // SAFETY: the call frame of the live call.
        let frame = unsafe { Frame::read(cf) }.map_err(Fail::Call)?;
        let dtype = frame.args.first().map_or(0, |b| b.dtype);
        run(&frame, dtype)
    }));
    let (code, msg) = match res {
        Ok(Ok(())) => return std::ptr::null_mut(),
        Ok(Err(Fail::Data(m))) => (ERROR_INVALID_ARGUMENT, m),
        Ok(Err(Fail::Call(m))) => (ERROR_INTERNAL, format!("clipresc FFI call: {m}")),
        Err(_) => (
            ERROR_INTERNAL,
            "internal error in the clipresc core (please report)".to_string(),
        ),
    };
    // SAFETY: `api` is the API table of this call.
    unsafe { make_error(api, code, &msg) }
}

pub(crate) fn by_dtype(
    dtype: i32,
    f32_fn: impl FnOnce() -> Result<(), Fail>,
    f64_fn: impl FnOnce() -> Result<(), Fail>,
) -> Result<(), Fail> {
    match dtype {
        DTYPE_F32 => f32_fn(),
        DTYPE_F64 => f64_fn(),
        d => Err(Fail::Call(format!("unsupported dtype code {d}"))),
    }
}

/// XLA handler: `scale` or `perturb` (attribute `perturb`) and the scales `eta`.
///
/// # Safety
/// Called by XLA with a valid call frame.
unsafe extern "C" fn forward_handler(cf: *mut XLA_FFI_CallFrame) -> *mut XLA_FFI_Error {
    // SAFETY: XLA passes the call frame of this call.
    unsafe {
        handle(cf, |f, d| {
            by_dtype(d, || forward::<f32>(f), || forward::<f64>(f))
        })
    }
}

/// XLA handler: the VJP of `scale` or `perturb`, given the forward's `eta`.
///
/// # Safety
/// Called by XLA with a valid call frame.
unsafe extern "C" fn backward_handler(cf: *mut XLA_FFI_CallFrame) -> *mut XLA_FFI_Error {
    // SAFETY: XLA passes the call frame of this call.
    unsafe {
        handle(cf, |f, d| {
            by_dtype(d, || backward::<f32>(f), || backward::<f64>(f))
        })
    }
}

pub(crate) fn capsule(py: Python<'_>, handler: XLA_FFI_Handler) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: a capsule around a function pointer (never freed, so no destructor), which is
    // what jaxlib's `register_ffi_target` reads back with `PyCapsule_GetPointer`.
    unsafe {
        let ptr = pyo3::ffi::PyCapsule_New(handler as *mut c_void, std::ptr::null(), None);
        Bound::from_owned_ptr_or_err(py, ptr)
    }
}

/// `{"forward": capsule, "backward": capsule}`: the XLA FFI handlers, to register with
/// `jax.ffi.register_ffi_target(name, capsule, platform="cpu")`.
#[pyfunction]
pub(crate) fn jax_ffi_targets(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("forward", capsule(py, forward_handler)?)?;
    d.set_item("backward", capsule(py, backward_handler)?)?;
    d.set_item("noise", capsule(py, crate::jax_ffi_noise::noise_handler)?)?;
    d.set_item("project", capsule(py, project::project_handler)?)?;
    d.set_item("project_vjp", capsule(py, project::project_vjp_handler)?)?;
    Ok(d)
}

/// `(forward calls, backward calls)` of the handlers so far in this process.
#[pyfunction]
pub(crate) fn jax_ffi_calls() -> (u64, u64) {
    (SOLVES.load(Ordering::Relaxed), VJPS.load(Ordering::Relaxed))
}

/// Backward calls so far in this process that ran in place (the incoming cotangent's buffer
/// was also `x`'s cotangent's).
#[pyfunction]
pub(crate) fn jax_ffi_in_place_calls() -> u64 {
    IN_PLACE.load(Ordering::Relaxed)
}

/// The mirrored C API: `((major, minor), {struct: (size, {field: offset})})`, for the test
/// against jaxlib's header. `XLA_FFI_Metadata` and `XLA_FFI_Api` are mirrored only up to the
/// fields used (their sizes are those of the mirror).
#[pyfunction]
#[allow(clippy::type_complexity)]
pub(crate) fn xla_ffi_layout() -> (
    (i32, i32),
    HashMap<&'static str, (usize, HashMap<&'static str, usize>)>,
) {
    let mut out: HashMap<_, _> = layout()
        .into_iter()
        .map(|(name, size, fields)| (name, (size, fields.into_iter().collect())))
        .collect();
    out.insert(
        "XLA_FFI_Api",
        (
            std::mem::size_of::<XLA_FFI_Api>(),
            api_offsets().into_iter().collect(),
        ),
    );
    ((API_MAJOR, API_MINOR), out)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(jax_ffi_targets, m)?)?;
    m.add_function(wrap_pyfunction!(jax_ffi_calls, m)?)?;
    m.add_function(wrap_pyfunction!(jax_ffi_in_place_calls, m)?)?;
    m.add_function(wrap_pyfunction!(project::jax_ffi_project_calls, m)?)?;
    m.add_function(wrap_pyfunction!(xla_ffi_layout, m)?)?;
    Ok(())
}
