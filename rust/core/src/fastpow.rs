//! `v^p` computed in `f64` without a libm call so that the lane loops can vectorise it (for
//! `p` outside {1, 2} the passes spent most of their time in `powf`). Relative error below
//! `3e-13` wherever the result is a normal `f64` (the rounding of `p ln v`, whose size is at
//! most about 745 there: far below the `f32` rounding the result goes through for `f32`
//! data, and below the `1e-12` per term the `f64` contract allows); `0^p = 0`,
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

/// `2^54`: brings any subnormal `f64` into the normal range.
const TWO_54: f64 = 18_014_398_509_481_984.0;

/// `ln(v)` for a positive, finite `v` (subnormals included).
#[inline(always)]
fn ln(v: f64) -> f64 {
    let sub = v < f64::MIN_POSITIVE;
    let bits = (if sub { v * TWO_54 } else { v }).to_bits();
    // v = m * 2^e with m in [sqrt(1/2), sqrt(2)): take the mantissa in [1, 2), halve it
    // (and bump e) when it is above sqrt(2)
    let m1 = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    let big = m1 > std::f64::consts::SQRT_2;
    let m = if big { m1 * 0.5 } else { m1 };
    let biased = f64::from_bits(INT_MAGIC_BITS | (bits >> 52)) - TWO_52;
    let bias = if sub { 1023.0 + 54.0 } else { 1023.0 };
    let e = (biased - bias) + if big { 1.0 } else { 0.0 };
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

/// `v^p` for `p > 0` and `v` zero, positive (subnormals included), inf or NaN.
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

/// `p` split for [`pow_f32`]: `hi` keeps the top 12 significant bits of `p` (so `hi * e` is
/// exact in `f32` for every exponent `e` of an `f32`), `lo` the next 24, `full` is `p` in
/// `f32`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SplitP {
    hi: f32,
    lo: f32,
    full: f32,
}

impl SplitP {
    #[inline(always)]
    pub(crate) fn new(p: f64) -> SplitP {
        let hi = f64::from_bits(p.to_bits() & !((1u64 << 41) - 1));
        SplitP {
            hi: hi as f32,
            lo: (p - hi) as f32,
            full: p as f32,
        }
    }
}

/// `2^23 * 1.5`: adding it rounds an `f32` of magnitude below `2^22` to an integer, which
/// lands in the low mantissa bits.
const ROUND_MAGIC_32: f32 = 12_582_912.0;
/// `2^23` with an integer `k < 2^23` or-ed into its mantissa reads as `2^23 + k`.
const INT_MAGIC_BITS_32: u32 = 0x4B00_0000;
const TWO_23: f32 = 8_388_608.0;
/// `2^24`: brings any subnormal `f32` into the normal range.
const TWO_24: f32 = 16_777_216.0;
/// `2 / ln 2 / (2k + 1)` for `k = 0..=4`: `log2 m = sum_k C_k s^(2k+1)`.
const LOG2_SERIES: [f32; 5] = [
    (2.0 / std::f64::consts::LN_2) as f32,
    (2.0 / std::f64::consts::LN_2 / 3.0) as f32,
    (2.0 / std::f64::consts::LN_2 / 5.0) as f32,
    (2.0 / std::f64::consts::LN_2 / 7.0) as f32,
    (2.0 / std::f64::consts::LN_2 / 9.0) as f32,
];
/// `ln(2)^k / k!` for `k = 0..=7`: `2^r = sum_k E_k r^k`.
const EXP2_SERIES: [f32; 8] = [
    1.0,
    std::f64::consts::LN_2 as f32,
    (0.240_226_506_959_100_7_f64) as f32,
    (0.055_504_108_664_821_58_f64) as f32,
    (0.009_618_129_107_628_477_f64) as f32,
    (0.001_333_355_814_642_844_3_f64) as f32,
    (0.000_154_035_303_933_816_1_f64) as f32,
    (0.000_015_252_733_804_059_84_f64) as f32,
];

/// `2^k` for an integer-valued `k` in `[-126, 127]` (exact).
#[inline(always)]
fn exp2i_32(k: f32) -> f32 {
    let t = k + ROUND_MAGIC_32;
    f32::from_bits(t.to_bits().wrapping_add(127) << 23)
}

/// `v^p` for an `f32` `v`, in `f32` arithmetic (sixteen lanes to a 512-bit vector, where
/// [`pow`] takes two vectors of eight): within a few `f32` ulps (relative error below
/// `2e-6` for `p` up to 20: the rounding of `p log2 m` grows with `p`), for `v` zero, positive (subnormals included), inf or NaN; results below the
/// `f32` range are 0 or subnormal, above it inf. `p` is [`SplitP::new`]'s split of a
/// finite `p > 0`.
///
/// `v = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`; `p log2 v = p_hi e + (p_lo e + p log2 m)`
/// where `p_hi e` is exact, so its integer part `n` is exact and the rest is small: the
/// rounding errors are those of a number below a few units, whatever `e` is.
#[inline(always)]
pub(crate) fn pow_f32(v: f32, p: SplitP) -> f32 {
    let sub = v < f32::MIN_POSITIVE;
    let bits = (if sub { v * TWO_24 } else { v }).to_bits();
    let m1 = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    let big = m1 > std::f32::consts::SQRT_2;
    let m = if big { m1 * 0.5 } else { m1 };
    let biased = f32::from_bits(INT_MAGIC_BITS_32 | ((bits >> 23) & 0xFF)) - TWO_23;
    let bias = if sub { 127.0 + 24.0 } else { 127.0 };
    let e = (biased - bias) + if big { 1.0 } else { 0.0 };
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut series = LOG2_SERIES[4];
    for k in (0..4).rev() {
        series = series * s2 + LOG2_SERIES[k];
    }
    let log2m = s * series;
    // p_hi e: exact (12 + 8 significant bits); its integer part and exact remainder
    let a = p.hi * e;
    let n1 = (a + ROUND_MAGIC_32) - ROUND_MAGIC_32;
    let y = (a - n1) + (p.lo * e + p.full * log2m);
    let n2 = (y + ROUND_MAGIC_32) - ROUND_MAGIC_32;
    let r = y - n2; // |r| <= 1/2
    let mut q = EXP2_SERIES[7];
    for k in (0..7).rev() {
        q = q * r + EXP2_SERIES[k];
    }
    // 2^(n1 + n2) in two factors, each within the normal range: results down to the
    // subnormal ones and up to the largest f32
    let n = n1 + n2;
    let h = ((n * 0.5) + ROUND_MAGIC_32) - ROUND_MAGIC_32; // n / 2 rounded
    let out = q * exp2i_32(h) * exp2i_32(n - h);
    if v.is_nan() | (v == f32::INFINITY) {
        v
    } else if v == 0.0 || n < -160.0 {
        0.0
    } else if n > 128.0 {
        f32::INFINITY
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{pow, pow_f32, SplitP};

    #[test]
    fn pow_f32_is_within_a_few_ulps() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for &p in &[0.3, 0.5, 0.7, 1.5, 2.5, 3.0, 4.0, 7.3, 20.0] {
            let sp = SplitP::new(p);
            let mut worst = 0.0f64;
            for _ in 0..50_000 {
                // any positive finite f32, subnormals included
                let v = f32::from_bits((next() as u32) & 0x7F7F_FFFF);
                let want = f64::from(v).powf(p);
                let got = f64::from(pow_f32(v, sp));
                if want < f64::from(f32::MIN_POSITIVE) {
                    // subnormal or zero: within the subnormal spacing (plus relative)
                    let spacing = f64::from(f32::from_bits(1));
                    assert!(
                        (got - want).abs() <= 2.0 * spacing + 1e-6 * want,
                        "{v}^{p}: {got} vs {want}"
                    );
                    continue;
                }
                if want > f64::from(f32::MAX) {
                    assert!(got > f64::from(f32::MAX) / 2.0, "{v}^{p}: {got} vs {want}");
                    continue;
                }
                worst = worst.max(((got - want) / want).abs());
            }
            assert!(worst < 2e-6, "p={p}: worst relative error {worst:e}");
        }
        let sp = SplitP::new(1.5);
        assert_eq!(pow_f32(0.0, sp), 0.0);
        assert_eq!(pow_f32(f32::INFINITY, sp), f32::INFINITY);
        assert!(pow_f32(f32::NAN, sp).is_nan());
        assert_eq!(pow_f32(1.0, sp), 1.0);
        assert_eq!(pow_f32(4.0, sp), 8.0);
    }

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
        // any positive finite f64, subnormals included (the f64 rows' powers)
        let mut worst = 0.0f64;
        for &p in &[0.3, 0.5, 0.7, 1.5, 2.5, 3.0, 4.0, 7.3, 20.0] {
            for _ in 0..20_000 {
                let v = f64::from_bits(next() & 0x7FEF_FFFF_FFFF_FFFF);
                let (want, got) = (v.powf(p), pow(v, p));
                if !(f64::MIN_POSITIVE * 4.0..=f64::MAX / 4.0).contains(&want) {
                    continue; // the result is not a normal f64
                }
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 3e-13, "f64: worst relative error {worst:e}");
        for &p in &[0.5, 3.0] {
            assert_eq!(pow(0.0, p), 0.0);
            let (sub, want) = (f64::MIN_POSITIVE / 4.0, (f64::MIN_POSITIVE / 4.0).powf(p));
            assert!((pow(sub, p) - want).abs() <= 3e-13 * want, "subnormal^{p}");
            assert_eq!(pow(f64::INFINITY, p), f64::INFINITY);
            assert!(pow(f64::NAN, p).is_nan());
            assert_eq!(pow(1.0, p), 1.0);
        }
    }
}
