//! Fast, exact transforms of random words into Gaussian and uniform noise, a chunk at a time.
//!
//! Gaussian noise uses the ziggurat method (Marsaglia & Tsang 2000; 256 layers, the
//! constants of `rand_distr`) with the index, the sign and the magnitude taken from disjoint
//! bits of one word: a `u32` per element for `f32` output (8 index bits, 1 sign bit, 23
//! magnitude bits), a `u64` for `f64` (52 magnitude bits). The caller draws a chunk's words
//! in bulk (`keystream`); one pass accepts the ~98.8% of candidates that fall inside their
//! layer's rectangle (for `f32` eight at a time with AVX2, by an exact integer threshold per
//! layer) and finishes the rest (wedges and the tail beyond `R`) as it meets them, with
//! further `u64` words drawn, in element order, from a second generator (placed by the
//! caller). The result is exact (the standard normal distribution to the resolution of the
//! magnitude bits) and depends only on the words of the two generators.

use std::any::TypeId;
use std::sync::OnceLock;

use rand_chacha::ChaCha8Rng;
use rand_core::Rng;

use crate::real::Real;

/// Elements per chunk of words drawn in bulk.
pub(crate) const CHUNK: usize = 1024;
/// 32-bit words of the buffer a caller provides for one chunk.
pub(crate) const CHUNK_WORDS: usize = 2 * CHUNK;

/// Right edge of the base layer.
const R: f64 = 3.654_152_885_361_009;
/// Area of each layer.
const V: f64 = 4.928_673_233_99e-3;

fn pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp()
}

/// Layer edges `x[0] = V / f(R) > x[1] = R > ... > x[256] = 0`, `f(x[i])`, and the edges
/// rounded to float32 (the float32 path works on those layers).
struct Tables {
    x: [f64; 257],
    f: [f64; 257],
    x32: [f32; 257],
    /// `k32[i]`: the smallest 23-bit `m` whose float32 candidate in layer `i` is not inside
    /// the layer's rectangle (`2^23` when every one is).
    k32: [u32; 256],
    /// `x32[i]`'s bits in the low half and `k32[i]` in the high half, for one load of both
    /// (by the AVX2 sampler).
    #[cfg(target_arch = "x86_64")]
    pairs: [u64; 256],
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut x = [0.0f64; 257];
        x[0] = V / pdf(R);
        x[1] = R;
        for i in 1..255 {
            x[i + 1] = (-2.0 * (V / x[i] + pdf(x[i])).ln()).sqrt();
        }
        x[256] = 0.0;
        let x32 = x.map(|v| v as f32);
        let k32 = std::array::from_fn(|i| first_outside(&x32, i));
        Tables {
            x,
            f: x.map(pdf),
            x32,
            k32,
            #[cfg(target_arch = "x86_64")]
            pairs: std::array::from_fn(|i| x32[i].to_bits() as u64 | (k32[i] as u64) << 32),
        }
    })
}

/// The smallest `m < 2^23` with `candidate32(m, i) >= x32[i + 1]`, or `2^23` (binary search:
/// the candidate is non-decreasing in `m`).
fn first_outside(x32: &[f32; 257], i: usize) -> u32 {
    const SCALE: f32 = 1.0 / (1u32 << 23) as f32;
    let outside = |m: u32| (m as f32 + 0.5) * SCALE * x32[i] >= x32[i + 1];
    let (mut lo, mut hi) = (0u32, 1u32 << 23);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if outside(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// `out` as a slice of `U` when `T` is `U`.
fn cast_mut<T: 'static, U: 'static>(out: &mut [T]) -> Option<&mut [U]> {
    if TypeId::of::<T>() == TypeId::of::<U>() {
        // SAFETY: `T` and `U` are the same type, so the slice's layout and length are those
        // of a `[U]`, and the borrow is carried over unchanged.
        Some(unsafe { &mut *(out as *mut [T] as *mut [U]) })
    } else {
        None
    }
}

#[inline(always)]
fn with_sign(x: f64, sign: u64) -> f64 {
    f64::from_bits(x.to_bits() | sign)
}

/// A uniform number in `(0, 1)` from a word.
#[inline(always)]
fn open01(w: u64) -> f64 {
    ((w >> 11) as f64 + 0.5) * f64::powi(2.0, -53)
}

/// A float64 ziggurat candidate from a `u64`: layer, `|x|`, sign bit (at bit 63).
#[inline(always)]
fn candidate64(w: u64, t: &Tables) -> (usize, f64, u64) {
    const SCALE: f64 = 1.0 / (1u64 << 52) as f64;
    let i = (w & 0xff) as usize;
    let sign = ((w >> 8) & 1) << 63;
    let m = w >> 12;
    (i, (m as f64 + 0.5) * SCALE * t.x[i], sign)
}

/// Finishes a candidate that fell outside its layer's rectangle (wedge or tail), drawing
/// further words from `rng` as needed.
#[cold]
fn slow(rng: &mut ChaCha8Rng, cand: (usize, f64, u64), t: &Tables) -> f64 {
    let (mut i, mut x, mut sign) = cand;
    loop {
        if i == 0 {
            // The tail beyond R (Marsaglia 1964).
            loop {
                let a = -open01(rng.next_u64()).ln() / R;
                let b = -open01(rng.next_u64()).ln();
                if b + b >= a * a {
                    return with_sign(R + a, sign);
                }
            }
        }
        let u = open01(rng.next_u64());
        if t.f[i + 1] + (t.f[i] - t.f[i + 1]) * u < pdf(x) {
            return with_sign(x, sign);
        }
        (i, x, sign) = candidate64(rng.next_u64(), t);
        if x < t.x[i + 1] {
            return with_sign(x, sign);
        }
    }
}

/// float32: one little-endian `u32` per element: 8 index bits, 1 sign bit, 23 magnitude bits.
///
/// A candidate `x = ((m + 0.5) 2^-23) x32[i]` is accepted when `x < x32[i + 1]`; the tables'
/// `k32[i]` is the smallest `m` for which it is not, so the test is `m < k32[i]` (the float
/// product is monotone in `m`, so both tests agree on every word).
fn gaussian_f32(extra: &mut ChaCha8Rng, words: &[u32], out: &mut [f32]) {
    let t = tables();
    #[cfg(target_arch = "x86_64")]
    let done = if crate::simd::has_avx2() {
        // SAFETY: `has_avx2` checked at run time that this CPU executes AVX2.
        unsafe { avx2::gaussian_f32(extra, words, out, t) }
    } else {
        0
    };
    // elsewhere every element takes the scalar loop
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    gaussian_f32_scalar(extra, &words[done..], &mut out[done..], t);
}

fn gaussian_f32_scalar(extra: &mut ChaCha8Rng, words: &[u32], out: &mut [f32], t: &Tables) {
    for (o, &w) in out.iter_mut().zip(words) {
        let (i, m) = ((w & 0xff) as usize, w >> 9);
        let x = candidate32(m, i, t);
        *o = if m < t.k32[i] {
            f32::from_bits(x.to_bits() | ((w & 0x100) << 23))
        } else {
            reject32(extra, w, x, t)
        };
    }
}

/// The float32 candidate of magnitude bits `m` in layer `i`.
#[inline(always)]
fn candidate32(m: u32, i: usize, t: &Tables) -> f32 {
    const SCALE: f32 = 1.0 / (1u32 << 23) as f32;
    (m as f32 + 0.5) * SCALE * t.x32[i]
}

/// Finishes a float32 candidate `|x|` from word `w` that fell outside its rectangle.
#[cold]
fn reject32(extra: &mut ChaCha8Rng, w: u32, x: f32, t: &Tables) -> f32 {
    let sign = (((w >> 8) & 1) as u64) << 63;
    slow(extra, ((w & 0xff) as usize, x as f64, sign), t) as f32
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use rand_chacha::ChaCha8Rng;

    use super::{candidate32, reject32, Tables};

    /// The float32 Gaussian transform, eight words at a time (table look-ups by gather);
    /// returns how many leading elements of `out` it wrote (a multiple of eight). Rejected
    /// candidates are finished in element order, as the scalar loop does.
    ///
    /// # Safety
    /// The CPU must execute AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gaussian_f32(
        extra: &mut ChaCha8Rng,
        words: &[u32],
        out: &mut [f32],
        t: &Tables,
    ) -> usize {
        let scale = _mm256_set1_ps(1.0 / (1u32 << 23) as f32);
        let half = _mm256_set1_ps(0.5);
        let sign_bit = _mm256_set1_epi32(0x100);
        let groups = out.len().min(words.len()) / 8;
        for g in 0..groups {
            let wb: &[u32; 8] = words[8 * g..8 * g + 8].try_into().expect("8 words");
            let o: &mut [f32; 8] = (&mut out[8 * g..8 * g + 8]).try_into().expect("8 floats");
            // SAFETY: `wb` is 32 readable bytes and `o` 32 writable ones (`loadu`/`storeu`
            // need no alignment); every gather index is `w & 0xff` <= 255, inside the
            // 257-entry `x32` and 256-entry `k32` tables.
            let accepted = unsafe {
                let w = _mm256_loadu_si256(wb.as_ptr() as *const __m256i);
                let m = _mm256_srli_epi32::<9>(w);
                // One 64-bit load per lane fetches (x32[i], k32[i]); the shuffles split the
                // pairs into a vector of edges and one of thresholds, in lane order.
                let pair = |l: usize| t.pairs[(wb[l] & 0xff) as usize] as i64;
                let a = _mm256_castsi256_ps(_mm256_setr_epi64x(pair(0), pair(1), pair(2), pair(3)));
                let b = _mm256_castsi256_ps(_mm256_setr_epi64x(pair(4), pair(5), pair(6), pair(7)));
                let evens = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                let odds = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                let layer = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                    _mm256_castps_pd(evens),
                ));
                let k = _mm256_castpd_si256(_mm256_permute4x64_pd::<0b11_01_10_00>(
                    _mm256_castps_pd(odds),
                ));
                let x = _mm256_mul_ps(
                    _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(m), half), scale),
                    layer,
                );
                let sign = _mm256_slli_epi32::<23>(_mm256_and_si256(w, sign_bit));
                let y = _mm256_or_si256(_mm256_castps_si256(x), sign);
                _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, y);
                _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(k, m)))
            };
            if accepted != 0xff {
                for l in 0..8 {
                    if accepted & (1 << l) == 0 {
                        let w = wb[l];
                        let x = candidate32(w >> 9, (w & 0xff) as usize, t);
                        o[l] = reject32(extra, w, x, t);
                    }
                }
            }
        }
        8 * groups
    }
}

/// float64: one little-endian `u64` per element: 8 index bits, 1 sign bit, 52 magnitude bits.
fn gaussian_f64(extra: &mut ChaCha8Rng, words: &[u32], out: &mut [f64]) {
    let t = tables();
    for (o, w) in out.iter_mut().zip(words.chunks_exact(2)) {
        let c = candidate64(word64(w), t);
        *o = if c.1 < t.x[c.0 + 1] {
            with_sign(c.1, c.2)
        } else {
            slow(extra, c, t)
        };
    }
}

/// The `u64` of two consecutive words of the stream (low word first, as `next_u64`).
#[inline(always)]
fn word64(w: &[u32]) -> u64 {
    w[0] as u64 | (w[1] as u64) << 32
}

/// 32-bit words [`gaussian_chunk`] and [`uniform_chunk`] read for `len` elements of `T`.
pub(crate) fn words_for<T: Real>(len: usize) -> usize {
    std::mem::size_of::<T>() / 4 * len
}

/// Standard normal noise into `out` (at most [`CHUNK`] elements) from `words` (one per
/// element, [`words_for`] of them), drawing the few further words the ziggurat needs from
/// `extra` (in element order).
pub(crate) fn gaussian_chunk<T: Real>(extra: &mut ChaCha8Rng, words: &[u32], out: &mut [T]) {
    if let Some(o) = cast_mut::<T, f32>(out) {
        gaussian_f32(extra, words, o);
    } else if let Some(o) = cast_mut::<T, f64>(out) {
        gaussian_f64(extra, words, o);
    } else {
        unreachable!("Real is implemented for f32 and f64 only");
    }
}

/// Uniform noise on `(-1, 1)` into `out` (at most [`CHUNK`] elements): a word `m` of `k`
/// bits (24 for f32 from a `u32`, 53 for f64 from a `u64`) maps to `(2m + 1 - 2^k) / 2^k`,
/// the odd multiples of `2^-k`: exact in the element type and symmetric about 0.
pub(crate) fn uniform_chunk<T: Real>(words: &[u32], out: &mut [T]) {
    if let Some(o) = cast_mut::<T, f32>(out) {
        const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
        for (o, &w) in o.iter_mut().zip(words) {
            let m = (w >> 8) as i32;
            *o = (2 * m + 1 - (1 << 24)) as f32 * SCALE;
        }
    } else if let Some(o) = cast_mut::<T, f64>(out) {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        for (o, w) in o.iter_mut().zip(words.chunks_exact(2)) {
            let m = (word64(w) >> 11) as i64;
            *o = (2 * m + 1 - (1 << 53)) as f64 * SCALE;
        }
    } else {
        unreachable!("Real is implemented for f32 and f64 only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_a_ziggurat() {
        let t = tables();
        assert!((t.x[255] - 0.215_241_895_9).abs() < 1e-9, "{}", t.x[255]);
        for i in 1..256 {
            assert!(t.x[i] > t.x[i + 1]);
            // every layer has area V
            let area = t.x[i] * (t.f[i + 1] - t.f[i]);
            assert!((area - V).abs() < 1e-6 * V || i == 255, "layer {i}: {area}");
        }
    }

    #[test]
    fn thresholds_split_each_layer_where_the_float_test_does() {
        let t = tables();
        for i in 0..256 {
            let k = t.k32[i];
            let inside = |m: u32| candidate32(m, i, t) < t.x32[i + 1];
            if k > 0 {
                assert!(inside(k - 1), "layer {i}");
            }
            if k < 1 << 23 {
                assert!(!inside(k), "layer {i}");
                assert!(!inside((1 << 23) - 1), "layer {i}");
            }
            assert!(inside(0) == (k > 0), "layer {i}");
        }
    }

    /// The dispatched float32 transform (AVX2 where the CPU has it) against the scalar one on
    /// the same words: bitwise equal output and the same extra words consumed.
    #[test]
    fn vector_and_scalar_float32_transforms_agree() {
        use rand_core::SeedableRng;
        let mut src = ChaCha8Rng::from_seed([3; 32]);
        for len in [0usize, 7, 8, 1000, CHUNK] {
            let mut words: Vec<u32> = (0..len).map(|_| src.next_u32()).collect();
            // every layer, and the candidates on both sides of each layer's threshold
            for (j, w) in words.iter_mut().enumerate().take(len.min(512)) {
                let i = (j / 2) as u32;
                let k = tables().k32[i as usize].min((1 << 23) - 1);
                let m = if j % 2 == 0 { k.saturating_sub(1) } else { k };
                *w = (m << 9) | ((j as u32 & 4) << 6) | i;
            }
            let mut extra_a = ChaCha8Rng::from_seed([9; 32]);
            let mut extra_b = extra_a.clone();
            let (mut a, mut b) = (vec![0f32; len], vec![0f32; len]);
            gaussian_f32(&mut extra_a, &words, &mut a);
            gaussian_f32_scalar(&mut extra_b, &words, &mut b, tables());
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "len {len}");
            assert_eq!(extra_a.next_u64(), extra_b.next_u64(), "len {len}");
        }
    }
}
