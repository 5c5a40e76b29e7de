//! The vector operations on eight `f32` lanes (`__m256`) and the kernels over them.
// Explicit lane indices mirror the generic kernels.
#![allow(clippy::needless_range_loop)]

type E = f32;
type V = __m256;
const W: usize = 8;

/// See [`super::compress_table`].
static COMPRESS: [[u32; 8]; 256] = super::compress_table(1);

fn of_slice<T: Real>(s: &[T]) -> Option<&[E]> {
    T::f32s(s)
}

fn of_slice_mut<T: Real>(s: &mut [T]) -> Option<&mut [E]> {
    T::f32s_mut(s)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn splat(v: E) -> V {
    _mm256_set1_ps(v)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn zero() -> V {
    _mm256_setzero_ps()
}

/// Loads `W` elements (`s` must hold exactly `W`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load(s: &[E]) -> V {
    let s: &[E; W] = s.try_into().expect("W elements");
    // SAFETY: `s` is `W` initialised floats (32 readable bytes); `loadu` has no alignment
    // requirement.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn store(o: &mut [E; W], v: V) {
    // SAFETY: `o` is `W` floats (32 writable bytes); `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) }
}

/// Stores `v` with a non-temporal hint.
///
/// # Safety
/// `o` is 32-byte aligned.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn stream_store(o: &mut [E; W], v: V) {
    // SAFETY: `o` is `W` writable floats (32 bytes), aligned by the caller's contract.
    unsafe { _mm256_stream_ps(o.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn to_lanes(v: V) -> [E; W] {
    let mut out = [0.0; W];
    store(&mut out, v);
    out
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn add(a: V, b: V) -> V {
    _mm256_add_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn sub(a: V, b: V) -> V {
    _mm256_sub_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn mul(a: V, b: V) -> V {
    _mm256_mul_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn and(a: V, b: V) -> V {
    _mm256_and_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn or(a: V, b: V) -> V {
    _mm256_or_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn max(a: V, b: V) -> V {
    _mm256_max_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn min(a: V, b: V) -> V {
    _mm256_min_ps(a, b)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn abs(v: V) -> V {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// `a > b` (false on NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gt(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_GT_OQ>(a, b)
}

/// `a <= b` (false on NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn le(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_LE_OQ>(a, b)
}

/// `!(a <= b)` (true on NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn nle(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_NLE_UQ>(a, b)
}

/// `!(a < b)` (true on NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn nlt(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_NLT_UQ>(a, b)
}

/// `!(a >= b)` (true on NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn nge(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_NGE_UQ>(a, b)
}

/// Either is NaN.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn unord(a: V, b: V) -> V {
    _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b)
}

/// `mask ? b : a`, lane by lane.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn blend(a: V, b: V, mask: V) -> V {
    _mm256_blendv_ps(a, b, mask)
}

/// Bit `k` set where lane `k` of the mask is set.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn mask_bits(mask: V) -> usize {
    _mm256_movemask_ps(mask) as usize
}

/// Adds one to each counter whose lane of `mask` is set (a set lane is -1 as an integer).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn count_add(acc: __m256i, mask: V) -> __m256i {
    _mm256_sub_epi32(acc, _mm256_castps_si256(mask))
}

/// The sum of the counters.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn count_total(acc: __m256i) -> u64 {
    let mut ns = [0u32; W];
    // SAFETY: `ns` is eight u32 (32 writable bytes); `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(ns.as_mut_ptr().cast(), acc) };
    ns.iter().map(|&v| u64::from(v)).sum()
}

/// Stores the lanes of `v` set in `inside` (a [`mask_bits`] value) packed to the front of
/// `dst`; the slots after them get arbitrary lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn compress_into(dst: &mut [MaybeUninit<E>; W], v: V, inside: usize) {
    let perm: &[u32; 8] = &COMPRESS[inside];
    // SAFETY: `perm` is eight u32 (32 readable bytes) and `dst` eight floats (32 writable
    // bytes); `loadu` and `storeu` have no alignment requirement.
    unsafe {
        let perm = _mm256_loadu_si256(perm.as_ptr().cast());
        _mm256_storeu_ps(dst.as_mut_ptr().cast(), _mm256_permutevar8x32_ps(v, perm));
    }
}

kernels!();
