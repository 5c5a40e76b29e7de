//! The sums of [`crate::safeguard`]'s variable-fixing passes over its candidates in AVX2.
//!
//! The candidates are an array of `(key, w, c)` triples, which the compiler does not
//! vectorise. Here each group of four is loaded as three vectors and transposed by blends
//! and one permutation per field; the four `f64` lanes then add exactly as
//! [`CandLanes::add`]'s four lanes do (lane `k` takes candidates `k`, `k + 4`, ... in
//! order), so the sums are bitwise the same.

use std::arch::x86_64::*;

use crate::safeguard::{Cand, CandLanes};

/// [`CandLanes`] over `groups` (whole groups of four candidates) at `eta`.
///
/// # Safety
/// The CPU must run AVX2 ([`crate::simd::has_avx2`]).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn cand_lanes(groups: &[[Cand; 4]], eta: f64) -> CandLanes {
    let e = _mm256_set1_pd(eta);
    let (mut c, mut m) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut n = _mm256_setzero_si256();
    for g in groups {
        let p = g.as_ptr().cast::<f64>();
        // SAFETY: `Cand` is `repr(C)` with three `f64` fields and no padding, so a group
        // of four is twelve consecutive `f64` at `p`; each unaligned load reads four of them.
        let (a, b, t) = unsafe {
            (
                _mm256_loadu_pd(p),
                _mm256_loadu_pd(p.add(4)),
                _mm256_loadu_pd(p.add(8)),
            )
        };
        // a = [k0 w0 c0 k1], b = [w1 c1 k2 w2], t = [c2 k3 w3 c3]; blends keep positions:
        // w = [w1 w0 w3 w2] (candidates 1 0 3 2), and keys and caps are permuted to match
        let w = _mm256_blend_pd::<0b0100>(_mm256_blend_pd::<0b1001>(a, b), t);
        let k = _mm256_blend_pd::<0b0010>(_mm256_blend_pd::<0b0100>(a, b), t); // 0 3 2 1
        let k = _mm256_permute4x64_pd::<0b10_01_00_11>(k);
        let cap = _mm256_blend_pd::<0b1001>(_mm256_blend_pd::<0b0010>(a, b), t); // 2 1 0 3
        let cap = _mm256_permute4x64_pd::<0b00_11_10_01>(cap);
        // `key <= eta`, false for a NaN on either side, as the scalar comparison
        let sat = _mm256_cmp_pd::<_CMP_LE_OQ>(k, e);
        c = _mm256_add_pd(c, _mm256_and_pd(sat, cap));
        m = _mm256_add_pd(m, _mm256_andnot_pd(sat, w));
        n = _mm256_sub_epi64(n, _mm256_castpd_si256(sat)); // a set lane is -1
    }
    let (mut cs, mut ms, mut ns) = ([0f64; 4], [0f64; 4], [0i64; 4]);
    // SAFETY: each store writes four lanes into a local array of four.
    unsafe {
        _mm256_storeu_pd(cs.as_mut_ptr(), c);
        _mm256_storeu_pd(ms.as_mut_ptr(), m);
        _mm256_storeu_si256(ns.as_mut_ptr().cast(), n);
    }
    // vector lanes hold candidates 1 0 3 2 of each group
    const LANE_OF: [usize; 4] = [1, 0, 3, 2];
    CandLanes {
        c: LANE_OF.map(|j| cs[j]),
        m: LANE_OF.map(|j| ms[j]),
        n: LANE_OF.map(|j| ns[j] as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::cand_lanes;
    use crate::safeguard::{Cand, CandLanes};

    fn bits(l: &CandLanes) -> ([u64; 4], [u64; 4], [usize; 4]) {
        (l.c.map(f64::to_bits), l.m.map(f64::to_bits), l.n)
    }

    /// Against the scalar lanes, bit for bit: keys tied with `eta`, NaN, infinite and
    /// signed-zero fields, and the sizes around whole groups.
    #[test]
    fn avx2_lanes_match_the_scalar_lanes_bitwise() {
        assert!(
            crate::simd::has_avx2(),
            "this CPU lacks AVX2: the AVX2 candidate sums cannot be tested here"
        );
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut u = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let specials = [
            f64::NAN,
            f64::INFINITY,
            -0.0,
            0.0,
            1.0,
            f64::MIN_POSITIVE / 4.0,
        ];
        for len in [0usize, 1, 3, 4, 5, 8, 63, 64, 1001] {
            let cands: Vec<Cand> = (0..len)
                .map(|i| {
                    let special = specials[(i / 7) % specials.len()];
                    let pick = |v: f64| if i % 7 == 3 { special } else { v };
                    // half the keys on a grid of quarters, so that some equal eta
                    let key = if i % 2 == 0 {
                        (u() * 8.0).floor() / 4.0
                    } else {
                        u() * 2.0
                    };
                    Cand {
                        key: pick(key),
                        w: pick(u() * 1e3 - 1.0),
                        c: -pick(u() * 1e-3),
                    }
                })
                .collect();
            let (groups, _) = cands.as_chunks::<4>();
            for eta in [0.0, 0.5, 1.0, 1.3, f64::INFINITY, f64::NAN] {
                let want = CandLanes::over(groups, eta);
                // SAFETY: the assertion above found AVX2.
                let got = unsafe { cand_lanes(groups, eta) };
                assert_eq!(bits(&got), bits(&want), "{len} candidates, eta {eta}");
            }
        }
    }
}
