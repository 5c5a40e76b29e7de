//! The AVX-512 lane operations on eight `f64` lanes (`__m512d`, masks `__mmask8`) and the
//! kernels over them.

avx512_lanes! {
    E: f64, V: __m512d, M: __mmask8, W: 8,
    set1: _mm512_set1_pd, setzero: _mm512_setzero_pd, loadu: _mm512_loadu_pd,
    storeu: _mm512_storeu_pd, stream: _mm512_stream_pd,
    sqrt: _mm512_sqrt_pd, add: _mm512_add_pd, sub: _mm512_sub_pd, mul: _mm512_mul_pd,
    max: _mm512_max_pd, min: _mm512_min_pd, cmp: _mm512_cmp_pd_mask, abs: _mm512_abs_pd,
    mask_add: _mm512_mask_add_pd, blend: _mm512_mask_blend_pd,
    compress: _mm512_maskz_compress_pd
}
