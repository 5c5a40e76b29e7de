//! The AVX-512 lane operations on sixteen `f32` lanes (`__m512`, masks `__mmask16`) and the
//! kernels over them.

avx512_lanes! {
    E: f32, V: __m512, M: __mmask16, W: 16,
    set1: _mm512_set1_ps, setzero: _mm512_setzero_ps, loadu: _mm512_loadu_ps,
    storeu: _mm512_storeu_ps, stream: _mm512_stream_ps,
    sqrt: _mm512_sqrt_ps, add: _mm512_add_ps, sub: _mm512_sub_ps, mul: _mm512_mul_ps,
    max: _mm512_max_ps, min: _mm512_min_ps, cmp: _mm512_cmp_ps_mask, abs: _mm512_abs_ps,
    mask_add: _mm512_mask_add_ps, blend: _mm512_mask_blend_ps,
    compress: _mm512_maskz_compress_ps
}
