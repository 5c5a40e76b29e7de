//! The AVX2 lane operations on eight `f32` lanes (`__m256`) and the kernels over them.

avx2_lanes! {
    E: f32, V: __m256, W: 8, words: 1, count: u32,
    set1: _mm256_set1_ps, setzero: _mm256_setzero_ps, loadu: _mm256_loadu_ps,
    storeu: _mm256_storeu_ps, stream: _mm256_stream_ps,
    sqrt: _mm256_sqrt_ps, add: _mm256_add_ps, sub: _mm256_sub_ps, mul: _mm256_mul_ps,
    and: _mm256_and_ps, or: _mm256_or_ps, max: _mm256_max_ps, min: _mm256_min_ps,
    cmp: _mm256_cmp_ps, andnot: _mm256_andnot_ps, blendv: _mm256_blendv_ps,
    movemask: _mm256_movemask_ps,
    count_sub: _mm256_sub_epi32, as_int: _mm256_castps_si256, as_ps: super::same
}
