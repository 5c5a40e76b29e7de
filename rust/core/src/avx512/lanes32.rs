//! The vector operations on sixteen `f32` lanes (`__m512`, masks `__mmask16`) and the
//! kernels over them.

type E = f32;
type V = __m512;
type M = __mmask16;
const W: usize = 16;

ops512! {
    add -> V => _mm512_add_ps;
    sub -> V => _mm512_sub_ps;
    mul -> V => _mm512_mul_ps;
    max -> V => _mm512_max_ps;
    min -> V => _mm512_min_ps;
    /// `a > b` (false on NaN).
    gt -> M => _mm512_cmp_ps_mask::<_CMP_GT_OQ>;
    /// `a <= b` (false on NaN).
    le -> M => _mm512_cmp_ps_mask::<_CMP_LE_OQ>;
    /// `!(a <= b)` (true on NaN).
    nle -> M => _mm512_cmp_ps_mask::<_CMP_NLE_UQ>;
    /// `!(a < b)` (true on NaN).
    nlt -> M => _mm512_cmp_ps_mask::<_CMP_NLT_UQ>;
    /// `!(a >= b)` (true on NaN).
    nge -> M => _mm512_cmp_ps_mask::<_CMP_NGE_UQ>;
    /// Either is NaN.
    unord -> M => _mm512_cmp_ps_mask::<_CMP_UNORD_Q>;
}

#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
fn splat(v: E) -> V {
    _mm512_set1_ps(v)
}

#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
fn zero() -> V {
    _mm512_setzero_ps()
}

/// Loads `W` elements (`s` must hold exactly `W`).
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
fn load(s: &[E]) -> V {
    let s: &[E; W] = s.try_into().expect("W elements");
    // SAFETY: `s` is `W` initialised elements (64 readable bytes); `loadu` has no alignment
    // requirement.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
fn store(o: &mut [E; W], v: V) {
    // SAFETY: `o` is `W` elements (64 writable bytes); `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) }
}

/// Stores all `W` lanes of `v` into `W` slots that may be uninitialised.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
fn store_slots(o: &mut [MaybeUninit<E>; W], v: V) {
    // SAFETY: `o` is `W` slots of `E` (64 writable bytes; `MaybeUninit<E>` has the layout of
    // `E`); `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr().cast(), v) }
}

/// Stores `v` with a non-temporal hint.
///
/// # Safety
/// `o` is 64-byte aligned.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
unsafe fn stream_store(o: &mut [E; W], v: V) {
    // SAFETY: `o` is `W` writable elements (64 bytes), aligned by the caller's contract.
    unsafe { _mm512_stream_ps(o.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
fn to_lanes(v: V) -> [E; W] {
    let mut out = [0.0; W];
    store(&mut out, v);
    out
}

#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
fn abs(v: V) -> V {
    _mm512_abs_ps(v)
}

/// `acc + v` in the lanes of `m`, `acc` elsewhere.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
fn mask_add(acc: V, m: M, v: V) -> V {
    _mm512_mask_add_ps(acc, m, acc, v)
}

/// `m ? b : a`, lane by lane.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
fn blend(a: V, b: V, m: M) -> V {
    _mm512_mask_blend_ps(m, a, b)
}

/// The lanes of `v` set in `m`, packed to the front (zeros after them).
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,popcnt")]
fn compress(m: M, v: V) -> V {
    _mm512_maskz_compress_ps(m, v)
}

kernels512!();
