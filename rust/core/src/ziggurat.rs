//! Fast, exact transforms of random words into Gaussian and uniform noise, a chunk at a time.
//!
//! Gaussian noise uses the ziggurat method (Marsaglia & Tsang 2000; 256 layers, the
//! constants of `rand_distr`) with the index, the sign and the magnitude taken from disjoint
//! bits of one word: a `u32` per element for `f32` output (8 index bits, 1 sign bit, 23
//! magnitude bits), a `u64` for `f64` (52 magnitude bits). A chunk's words are drawn in
//! bulk; a branch-free pass accepts the ~98.8% of candidates that fall inside their layer's
//! rectangle, and a second pass finishes the rest (wedges and the tail beyond `R`) with
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
/// Bytes of the word buffer a caller provides for one chunk.
pub(crate) const CHUNK_BYTES: usize = 8 * CHUNK;

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
        Tables {
            x,
            f: x.map(pdf),
            x32: x.map(|v| v as f32),
        }
    })
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
fn gaussian_f32(rng: &mut ChaCha8Rng, extra: &mut ChaCha8Rng, bytes: &mut [u8], out: &mut [f32]) {
    const SCALE: f32 = 1.0 / (1u32 << 23) as f32;
    let t = tables();
    let bytes = &mut bytes[..4 * out.len()];
    rng.fill_bytes(bytes);
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        let w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let x = ((w >> 9) as f32 + 0.5) * SCALE * t.x32[(w & 0xff) as usize];
        *o = f32::from_bits(x.to_bits() | ((w & 0x100) << 23));
    }
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        let i = b[0] as usize;
        if o.abs() >= t.x32[i + 1] {
            let sign = ((b[1] & 1) as u64) << 63;
            *o = slow(extra, (i, o.abs() as f64, sign), t) as f32;
        }
    }
}

/// float64: one little-endian `u64` per element: 8 index bits, 1 sign bit, 52 magnitude bits.
fn gaussian_f64(rng: &mut ChaCha8Rng, extra: &mut ChaCha8Rng, bytes: &mut [u8], out: &mut [f64]) {
    let t = tables();
    let bytes = &mut bytes[..8 * out.len()];
    rng.fill_bytes(bytes);
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let (_, x, sign) = candidate64(word(b), t);
        *o = with_sign(x, sign);
    }
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let c = candidate64(word(b), t);
        if c.1 >= t.x[c.0 + 1] {
            *o = slow(extra, c, t);
        }
    }
}

/// Standard normal noise into `out` (at most [`CHUNK`] elements): one word per element from
/// `rng`, the few further words the ziggurat needs from `extra` (in element order);
/// `bytes` is scratch space of [`CHUNK_BYTES`].
pub(crate) fn gaussian_chunk<T: Real>(
    rng: &mut ChaCha8Rng,
    extra: &mut ChaCha8Rng,
    bytes: &mut [u8],
    out: &mut [T],
) {
    if let Some(o) = cast_mut::<T, f32>(out) {
        gaussian_f32(rng, extra, bytes, o);
    } else if let Some(o) = cast_mut::<T, f64>(out) {
        gaussian_f64(rng, extra, bytes, o);
    } else {
        unreachable!("Real is implemented for f32 and f64 only");
    }
}

/// Uniform noise on `(-1, 1)` into `out` (at most [`CHUNK`] elements): a word `m` of `k`
/// bits (24 for f32 from a `u32`, 53 for f64 from a `u64`) maps to `(2m + 1 - 2^k) / 2^k`,
/// the odd multiples of `2^-k`: exact in the element type and symmetric about 0.
pub(crate) fn uniform_chunk<T: Real>(rng: &mut ChaCha8Rng, bytes: &mut [u8], out: &mut [T]) {
    if let Some(o) = cast_mut::<T, f32>(out) {
        const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
        let bytes = &mut bytes[..4 * o.len()];
        rng.fill_bytes(bytes);
        for (o, b) in o.iter_mut().zip(bytes.chunks_exact(4)) {
            let m = (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 8) as i32;
            *o = (2 * m + 1 - (1 << 24)) as f32 * SCALE;
        }
    } else if let Some(o) = cast_mut::<T, f64>(out) {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        let bytes = &mut bytes[..8 * o.len()];
        rng.fill_bytes(bytes);
        for (o, b) in o.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            let m = (u64::from_le_bytes(w) >> 11) as i64;
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
}
