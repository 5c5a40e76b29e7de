//! The AVX2 lane operations on four `f64` lanes (`__m256d`) and the kernels over them.

avx2_lanes! {
    E: f64, V: __m256d, W: 4, words: 2, count: u64,
    set1: _mm256_set1_pd, setzero: _mm256_setzero_pd, loadu: _mm256_loadu_pd,
    storeu: _mm256_storeu_pd, stream: _mm256_stream_pd,
    sqrt: _mm256_sqrt_pd, add: _mm256_add_pd, sub: _mm256_sub_pd, mul: _mm256_mul_pd,
    and: _mm256_and_pd, or: _mm256_or_pd, max: _mm256_max_pd, min: _mm256_min_pd,
    cmp: _mm256_cmp_pd, andnot: _mm256_andnot_pd, blendv: _mm256_blendv_pd,
    movemask: _mm256_movemask_pd,
    count_sub: _mm256_sub_epi64, as_int: _mm256_castpd_si256, as_ps: _mm256_castpd_ps
}
