//! The ChaCha8 keystream of `rand_chacha::ChaCha8Rng`, written straight into a buffer.
//!
//! [`fill`] produces exactly the words `ChaCha8Rng` would from the same key, stream and word
//! position. `rand_chacha` computes four blocks per call into its own buffer
//! and copies them out; with AVX2 this module computes eight blocks at once, one block per
//! 32-bit lane, and stores them in place, which is about twice the throughput. The
//! generator stays `rand_chacha`'s: the tests compare the two streams word for word.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Words in one ChaCha block.
#[cfg(target_arch = "x86_64")]
const BLOCK_WORDS: usize = 16;

/// The generator of `stream` of `key`, at 32-bit word `word_pos`.
pub(crate) fn rng_at(key: &[u8; 32], stream: u64, word_pos: u128) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::from_seed(*key);
    rng.set_stream(stream);
    rng.set_word_pos(word_pos);
    rng
}

/// Writes the keystream of `stream` of `key` from 32-bit word `word_pos` on into `out`.
///
/// The words are those of `next_u32` called `out.len()` times on
/// `rng_at(key, stream, word_pos)` (a `u64` of the stream is two of them, low word first).
pub(crate) fn fill(key: &[u8; 32], stream: u64, word_pos: u128, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    let done = if crate::simd::has_avx2() && word_pos.is_multiple_of(16) {
        let wide = out.len() / (8 * BLOCK_WORDS) * (8 * BLOCK_WORDS);
        // The block counter is 64 bits wide and wraps, as in rand_chacha.
        let block = (word_pos / 16) as u64;
        // SAFETY: `has_avx2` checked at run time that this CPU executes AVX2; `wide` is a
        // whole number of 8-block groups, as `blocks` requires.
        unsafe { avx2::blocks(key, stream, block, &mut out[..wide]) };
        wide
    } else {
        0
    };
    // elsewhere the whole stream comes from rand_chacha
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    if done < out.len() {
        let mut rng = rng_at(key, stream, word_pos + done as u128);
        for w in &mut out[done..] {
            *w = rng.next_u32();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BLOCK_WORDS;

    /// "expand 32-byte k"
    const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

    #[inline(always)]
    fn rotl<const L: i32, const R: i32>(v: __m256i) -> __m256i {
        // SAFETY: AVX2 shifts and or on registers; the callers run with AVX2 enabled.
        unsafe { _mm256_or_si256(_mm256_slli_epi32::<L>(v), _mm256_srli_epi32::<R>(v)) }
    }

    /// One ChaCha quarter round on lanes `a, b, c, d` of the state.
    #[inline(always)]
    fn quarter(
        v: &mut [__m256i; 16],
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        r16: __m256i,
        r8: __m256i,
    ) {
        // SAFETY: AVX2 integer ops on registers; the callers run with AVX2 enabled.
        unsafe {
            v[a] = _mm256_add_epi32(v[a], v[b]);
            v[d] = _mm256_shuffle_epi8(_mm256_xor_si256(v[d], v[a]), r16);
            v[c] = _mm256_add_epi32(v[c], v[d]);
            v[b] = rotl::<12, 20>(_mm256_xor_si256(v[b], v[c]));
            v[a] = _mm256_add_epi32(v[a], v[b]);
            v[d] = _mm256_shuffle_epi8(_mm256_xor_si256(v[d], v[a]), r8);
            v[c] = _mm256_add_epi32(v[c], v[d]);
            v[b] = rotl::<7, 25>(_mm256_xor_si256(v[b], v[c]));
        }
    }

    /// Transposes eight vectors of eight words: lane `l` of input `j` goes to lane `j` of
    /// output `l`.
    #[inline(always)]
    fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
        // SAFETY: AVX2 shuffles on registers; the callers run with AVX2 enabled.
        unsafe {
            let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
            let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
            let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
            let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
            let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
            let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
            let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
            let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
            let u0 = _mm256_unpacklo_epi64(t0, t2);
            let u1 = _mm256_unpackhi_epi64(t0, t2);
            let u2 = _mm256_unpacklo_epi64(t1, t3);
            let u3 = _mm256_unpackhi_epi64(t1, t3);
            let u4 = _mm256_unpacklo_epi64(t4, t6);
            let u5 = _mm256_unpackhi_epi64(t4, t6);
            let u6 = _mm256_unpacklo_epi64(t5, t7);
            let u7 = _mm256_unpackhi_epi64(t5, t7);
            [
                _mm256_permute2x128_si256::<0x20>(u0, u4),
                _mm256_permute2x128_si256::<0x20>(u1, u5),
                _mm256_permute2x128_si256::<0x20>(u2, u6),
                _mm256_permute2x128_si256::<0x20>(u3, u7),
                _mm256_permute2x128_si256::<0x31>(u0, u4),
                _mm256_permute2x128_si256::<0x31>(u1, u5),
                _mm256_permute2x128_si256::<0x31>(u2, u6),
                _mm256_permute2x128_si256::<0x31>(u3, u7),
            ]
        }
    }

    /// ChaCha8 blocks `block, block + 1, ...` of `stream` into `out`, eight at a time.
    ///
    /// # Safety
    /// The CPU must execute AVX2, and `out.len()` must be a multiple of 128.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn blocks(key: &[u8; 32], stream: u64, block: u64, out: &mut [u32]) {
        debug_assert_eq!(out.len() % (8 * BLOCK_WORDS), 0);
        let mut init = [_mm256_setzero_si256(); 16];
        for (i, s) in SIGMA.iter().enumerate() {
            init[i] = _mm256_set1_epi32(*s as i32);
        }
        for (i, k) in key.chunks_exact(4).enumerate() {
            init[4 + i] = _mm256_set1_epi32(u32::from_le_bytes([k[0], k[1], k[2], k[3]]) as i32);
        }
        init[14] = _mm256_set1_epi32(stream as u32 as i32);
        init[15] = _mm256_set1_epi32((stream >> 32) as u32 as i32);
        let r16 = _mm256_setr_epi8(
            2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11,
            8, 9, 14, 15, 12, 13,
        );
        let r8 = _mm256_setr_epi8(
            3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14, 3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9,
            10, 15, 12, 13, 14,
        );
        let mut ctr = block;
        for group in out.chunks_exact_mut(8 * BLOCK_WORDS) {
            let (mut lo, mut hi) = ([0i32; 8], [0i32; 8]);
            for l in 0..8 {
                let c = ctr.wrapping_add(l as u64);
                lo[l] = c as u32 as i32;
                hi[l] = (c >> 32) as u32 as i32;
            }
            ctr = ctr.wrapping_add(8);
            let mut s = init;
            s[12] = _mm256_setr_epi32(lo[0], lo[1], lo[2], lo[3], lo[4], lo[5], lo[6], lo[7]);
            s[13] = _mm256_setr_epi32(hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6], hi[7]);
            let mut v = s;
            for _ in 0..4 {
                quarter(&mut v, 0, 4, 8, 12, r16, r8);
                quarter(&mut v, 1, 5, 9, 13, r16, r8);
                quarter(&mut v, 2, 6, 10, 14, r16, r8);
                quarter(&mut v, 3, 7, 11, 15, r16, r8);
                quarter(&mut v, 0, 5, 10, 15, r16, r8);
                quarter(&mut v, 1, 6, 11, 12, r16, r8);
                quarter(&mut v, 2, 7, 8, 13, r16, r8);
                quarter(&mut v, 3, 4, 9, 14, r16, r8);
            }
            for i in 0..16 {
                v[i] = _mm256_add_epi32(v[i], s[i]);
            }
            let low = transpose8([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
            let high = transpose8([v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]]);
            for (l, dst) in group.chunks_exact_mut(BLOCK_WORDS).enumerate() {
                let p = dst.as_mut_ptr() as *mut __m256i;
                // SAFETY: `dst` is 16 writable words (64 bytes), so `p` and `p + 1` each
                // start 32 of those bytes; `storeu` has no alignment requirement. On x86 a
                // lane's bytes are its word in little-endian order, as in the stream.
                unsafe {
                    _mm256_storeu_si256(p, low[l]);
                    _mm256_storeu_si256(p.add(1), high[l]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(key: &[u8; 32], stream: u64, word_pos: u128, len: usize) -> Vec<u32> {
        let mut bytes = vec![0u8; 4 * len];
        rng_at(key, stream, word_pos).fill_bytes(&mut bytes);
        let words = bytes.chunks_exact(4);
        words
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn matches_rand_chacha() {
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        // aligned and unaligned starts, whole groups, tails, a counter that carries into
        // the high word and one that wraps around
        let cases: [(u64, u128, usize); 7] = [
            (0, 0, 128),
            (3, 16, 1024),
            (u64::MAX, 32 << 40, 1024 + 25),
            (7, 5, 250),
            (1, ((1u128 << 32) - 3) * 16, 256),
            (2, ((1u128 << 64) - 2) * 16, 256),
            (9, 160, 9),
        ];
        for (stream, pos, len) in cases {
            let mut got = vec![0u32; len];
            fill(&key, stream, pos, &mut got);
            assert_eq!(
                got,
                reference(&key, stream, pos, len),
                "{stream} {pos} {len}"
            );
        }
    }
}
