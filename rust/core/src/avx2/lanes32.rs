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

memory_ops! {
    set1: _mm256_set1_ps,
    setzero: _mm256_setzero_ps,
    loadu: _mm256_loadu_ps,
    storeu: _mm256_storeu_ps,
    stream: _mm256_stream_ps,
}

binary_ops! {
    add => _mm256_add_ps;
    sub => _mm256_sub_ps;
    mul => _mm256_mul_ps;
    and => _mm256_and_ps;
    or => _mm256_or_ps;
    max => _mm256_max_ps;
    min => _mm256_min_ps;
    /// `a > b` (false on NaN).
    gt => _mm256_cmp_ps::<_CMP_GT_OQ>;
    /// `a <= b` (false on NaN).
    le => _mm256_cmp_ps::<_CMP_LE_OQ>;
    /// `!(a <= b)` (true on NaN).
    nle => _mm256_cmp_ps::<_CMP_NLE_UQ>;
    /// `!(a < b)` (true on NaN).
    nlt => _mm256_cmp_ps::<_CMP_NLT_UQ>;
    /// `!(a >= b)` (true on NaN).
    nge => _mm256_cmp_ps::<_CMP_NGE_UQ>;
    /// Either is NaN.
    unord => _mm256_cmp_ps::<_CMP_UNORD_Q>;
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn abs(v: V) -> V {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
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
