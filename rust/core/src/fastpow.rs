//! `v^p` for `f32` data, computed in `f64` without a libm call so that the lane loops can
//! vectorise it (for `p` outside {1, 2} the passes over `f32` rows spent most of their time
//! in `powf`). Relative error below `3e-13` wherever the result is a normal `f64` (the
//! rounding of `p ln v`; far below the `f32` rounding the result goes through); `0^p = 0`,
//! `inf^p = inf`, NaN stays NaN. Every step is arithmetic or a select on bit patterns (no
//! branch, no integer-to-float conversion, which AVX2 lacks for 64-bit integers).

/// ln 2 split in two: `LN2_HI` has its low 21 mantissa bits zero, so `n * LN2_HI` is exact
/// for every exponent `n` met here.
const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
const LOG2E: f64 = std::f64::consts::LOG2_E;
/// `1.5 * 2^52`: adding it rounds to an integer, which lands in the low mantissa bits.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;
/// `2^52` with an integer `k < 2^52` or-ed into its mantissa reads as `2^52 + k`.
const INT_MAGIC_BITS: u64 = 0x4330_0000_0000_0000;
const TWO_52: f64 = 4_503_599_627_370_496.0;
/// `1 / k!` for `k = 0..=13`.
const INV_FACTORIALS: [f64; 14] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40_320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
    1.0 / 39_916_800.0,
    1.0 / 479_001_600.0,
    1.0 / 6_227_020_800.0,
];

/// `ln(v)` for a positive, finite, normal `v`.
#[inline(always)]
fn ln(v: f64) -> f64 {
    let bits = v.to_bits();
    // v = m * 2^e with m in [sqrt(1/2), sqrt(2)): take the mantissa in [1, 2), halve it
    // (and bump e) when it is above sqrt(2)
    let m1 = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    let big = m1 > std::f64::consts::SQRT_2;
    let m = if big { m1 * 0.5 } else { m1 };
    let biased = f64::from_bits(INT_MAGIC_BITS | (bits >> 52)) - TWO_52;
    let e = biased - 1023.0 + if big { 1.0 } else { 0.0 };
    // ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716: the series to s^17 leaves a
    // relative error below 1e-16
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut series = 1.0 / 17.0;
    for k in (0..8).rev() {
        series = series * s2 + 1.0 / f64::from(2 * k + 1);
    }
    e * LN2_HI + (e * LN2_LO + 2.0 * s * series)
}

/// `exp(y)` for `y` in about `[-708, 709]`; 0 below, inf above.
#[inline(always)]
fn exp(y: f64) -> f64 {
    let t = y * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC; // round(y / ln 2)
    let r = (y - n * LN2_HI) - n * LN2_LO; // |r| <= 0.347
                                           // Taylor to r^13: relative error below 2e-16 on |r| <= 0.347
    let mut q = INV_FACTORIALS[13];
    for k in (0..13).rev() {
        q = q * r + INV_FACTORIALS[k];
    }
    // 2^n from n's bits (the low mantissa bits of t, two's complement): exact for n in
    // [-1022, 1023]; outside, the selects below take over
    let two_n = f64::from_bits(t.to_bits().wrapping_add(1023) << 52);
    let out = q * two_n;
    if y > 709.0 {
        f64::INFINITY
    } else if y < -708.0 {
        0.0
    } else {
        out
    }
}

/// `v^p` for `p > 0` and `v` zero, a positive normal `f64` (every `f32` value is), inf or
/// NaN.
#[inline(always)]
pub(crate) fn pow(v: f64, p: f64) -> f64 {
    let out = exp(p * ln(v));
    if v == 0.0 {
        0.0
    } else if v < f64::INFINITY {
        out
    } else {
        v // inf or NaN
    }
}

#[cfg(test)]
mod tests {
    use super::pow;

    #[test]
    fn matches_powf_on_f32_values() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut worst = 0.0f64;
        for &p in &[0.3, 0.5, 0.7, 1.5, 2.5, 3.0, 4.0, 7.3, 20.0] {
            for _ in 0..20_000 {
                // any positive finite f32, subnormals included
                let v = f64::from(f32::from_bits((next() as u32) & 0x7F7F_FFFF));
                let (want, got) = (v.powf(p), pow(v, p));
                if want < f64::MIN_POSITIVE * 4.0 {
                    assert!(got <= f64::MIN_POSITIVE * 8.0, "{v}^{p}: {got} vs {want}");
                    continue;
                }
                if want > f64::MAX / 4.0 {
                    assert!(got > f64::MAX / 8.0, "{v}^{p}: {got} vs {want}");
                    continue;
                }
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 3e-13, "worst relative error {worst:e}");
        for &p in &[0.5, 3.0] {
            assert_eq!(pow(0.0, p), 0.0);
            assert_eq!(pow(f64::INFINITY, p), f64::INFINITY);
            assert!(pow(f64::NAN, p).is_nan());
            assert_eq!(pow(1.0, p), 1.0);
        }
    }
}
