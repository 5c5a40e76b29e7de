//! Fuzz harness: decodes arbitrary bytes into a call of the core and checks the invariant.
//!
//! The invariant, for every input: the call returns the typed error the input deserves
//! (exactly: variant, count and first index), or the input is valid and every row's `eta`
//! is finite, non-negative, no larger than the saturating `eta`, and gives a clipped size
//! equal to `eps` (or, when `eps` is out of reach, the largest reachable size) to the
//! tolerance of the data type. `perturb` must also write exactly `clip(x + eta * delta)`,
//! agree bitwise with `scale`, and give the same bits in a one-thread pool.
//!
//! The full invariant applies to the rows inside the range the core computes exactly (see
//! [`well_scaled`]: no overflow or underflow of `|delta|^p`, `room^p`, `eps^p`, `eta^p`). The
//! other rows get a weak one: no panic, the right error, `eta` neither NaN nor negative, and
//! finite whenever the saturating `eta` is representable; `y` still bitwise
//! `clip(x + eta * delta)` unless `eta` is beyond the type's range (see [`check_perturb`]).
//! `CLIPRESC_FUZZ_STRICT=1` applies the full invariant everywhere (it fails today where
//! `eta` lies outside the type's range or sizes near `f64`'s limits, see the README's
//! "Reliability").
//!
//! This file uses nothing but `clipresc_core` and `std` because it is shared three ways: the
//! cargo-fuzz targets (`fuzz_targets/*.rs`) and the stable driver (`src/bin/fuzz_stable.rs`)
//! use it as the `clipresc_fuzz::harness` module, and the core's corpus replay test
//! (`rust/core/tests/fuzz_corpus.rs`) includes it with `#[path]`.
//!
//! Decoding never fails: bytes past the end of the input come from a generator seeded by the
//! input, so short inputs still make whole cases, and most inputs are valid (the box is drawn
//! first and `x` inside it); a per-case "chaos" switch lets raw bit patterns (NaN, infinities,
//! values outside the box, bad `eps`, wrong buffer lengths) in.
//!
//! To fuzz a new core entry point: add its name to [`TARGETS`], a `check_*` function here
//! that decodes with [`Input`] / [`decode`] and checks its own invariant, a two-line file in
//! `fuzz_targets/` and a `[[bin]]` entry in `rust/fuzz/Cargo.toml`.

use std::fmt::Write as _;

use clipresc_core::{
    noise, perturb, sample, scale, solve_stats, vjp, Batch, Bound, CoreError, Cotangent,
    Distribution, Eps, Grads, NoiseBatch, NoiseSpec, Norm, Options, Real, RowOutcome, Seed,
    Summary,
};
use clipresc_core::{project, ProjectBatch, ProjectNorm};

/// The fuzz targets, by name (each has a file in `fuzz_targets/` and a corpus directory).
pub const TARGETS: [&str; 5] = ["scale", "perturb", "vjp", "noise", "project"];

/// Runs target `name` on one input: `Ok(features)` when the invariant holds, else a report.
///
/// The features are small numbers describing which paths the input took (error variant,
/// data type, kind of `p` and bounds, reachability, safeguard); the stable driver keeps an
/// input when it shows a feature it has not seen.
pub fn run(name: &str, data: &[u8]) -> Result<Vec<u32>, String> {
    match name {
        "scale" => check_solve(data, Op::Scale),
        "perturb" => check_solve(data, Op::Perturb),
        "vjp" => check_vjp(data),
        "noise" => check_noise(data),
        "project" => check_project(data),
        _ => Err(format!("unknown fuzz target {name:?}")),
    }
}

/// Which core entry point a case calls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Scale,
    Perturb,
}

// ---------------------------------------------------------------------------- decoding

/// The bytes of one input, then a generator seeded by them.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    state: u64,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ data.len() as u64;
        for &b in data {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Input {
            data,
            pos: 0,
            state: h | 1,
        }
    }

    pub fn byte(&mut self) -> u8 {
        if let Some(&b) = self.data.get(self.pos) {
            self.pos += 1;
            return b;
        }
        // xorshift64* once the input is used up
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for v in &mut b {
            *v = self.byte();
        }
        u64::from_le_bytes(b)
    }

    /// A fraction in `[0, 1]`.
    pub fn unit(&mut self) -> f64 {
        f64::from(self.u16()) / 65535.0
    }

    /// A fraction in `[0, 1)`.
    fn mantissa(&mut self) -> f64 {
        f64::from(self.u16()) / 65536.0
    }

    /// Whether the input is used up (later values come from the generator).
    pub fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// The element types, with what decoding needs beyond [`Real`].
pub trait FuzzReal: Real {
    /// Exponent range: smallest subnormal, smallest normal, largest.
    const EXP: (i32, i32, i32);
    fn from_raw(bits: u64) -> Self;
    fn to_raw(self) -> u64;
    /// The next value towards +inf (for finite values).
    fn next_up(self) -> Self;
    /// The next value towards -inf (for finite values).
    fn next_down(self) -> Self {
        let v: Self = (-self).next_up();
        -v
    }
}

impl FuzzReal for f32 {
    const EXP: (i32, i32, i32) = (-149, -126, 127);
    fn from_raw(bits: u64) -> Self {
        f32::from_bits(bits as u32)
    }
    fn to_raw(self) -> u64 {
        u64::from(self.to_bits())
    }
    fn next_up(self) -> Self {
        if self == 0.0 {
            f32::from_bits(1)
        } else if self > 0.0 {
            f32::from_bits(self.to_bits() + 1)
        } else {
            f32::from_bits(self.to_bits() - 1)
        }
    }
}

impl FuzzReal for f64 {
    const EXP: (i32, i32, i32) = (-1074, -1022, 1023);
    fn from_raw(bits: u64) -> Self {
        f64::from_bits(bits)
    }
    fn to_raw(self) -> u64 {
        self.to_bits()
    }
    fn next_up(self) -> Self {
        if self == 0.0 {
            f64::from_bits(1)
        } else if self > 0.0 {
            f64::from_bits(self.to_bits() + 1)
        } else {
            f64::from_bits(self.to_bits() - 1)
        }
    }
}

/// Special values of `T`: zeros, units, the subnormal range, the largest values, the
/// infinities and NaN (`finite_only` leaves out the last three).
fn special<T: FuzzReal>(k: u8, finite_only: bool) -> T {
    let table: [T; 16] = [
        T::zero(),
        -T::zero(),
        T::one(),
        -T::one(),
        T::of_f64(0.5),
        T::min_positive_value(),
        -T::min_positive_value(),
        T::from_raw(1),
        T::min_positive_value().next_down(),
        T::max_value(),
        -T::max_value(),
        T::epsilon(),
        T::one().next_down(),
        T::infinity(),
        T::neg_infinity(),
        T::nan(),
    ];
    let n = if finite_only { 13 } else { 16 };
    table[usize::from(k) % n]
}

/// Ranges of binary exponents for the magnitudes of one case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Regime {
    Normal,
    Wide,
    Tiny,
    Huge,
    Spread,
}

impl Regime {
    fn of(b: u8) -> Regime {
        match b % 8 {
            0 => Regime::Wide,
            1 => Regime::Tiny,
            2 => Regime::Huge,
            3 => Regime::Spread,
            _ => Regime::Normal,
        }
    }

    fn exponents<T: FuzzReal>(self) -> (i32, i32) {
        let (sub, norm, max) = T::EXP;
        match self {
            Regime::Normal => (-3, 3),
            Regime::Wide => (norm, max),
            Regime::Tiny => (sub, norm + 20),
            Regime::Huge => (max - 24, max),
            Regime::Spread => (-30, 6),
        }
    }
}

/// A positive finite magnitude `(1 + f) 2^e` with `e` in the regime's range.
fn magnitude<T: FuzzReal>(inp: &mut Input<'_>, regime: Regime) -> T {
    let (lo, hi) = regime.exponents::<T>();
    let span = (hi - lo + 1) as u32;
    let e = lo + (u32::from(inp.u16()) % span) as i32;
    let v = (1.0 + inp.mantissa()) * pow2(e);
    let t = T::of_f64(v);
    if t.is_infinite() {
        T::max_value()
    } else if t == T::zero() {
        T::from_raw(1)
    } else {
        t
    }
}

/// `2^e` for any `e` in `[-1074, 1023]` (exact, no overflow in the intermediate steps).
fn pow2(e: i32) -> f64 {
    if e < -1000 {
        2f64.powi(e + 100) * 2f64.powi(-100)
    } else {
        2f64.powi(e)
    }
}

/// One side of the box as decoded (the core's [`Bound`] borrows from it).
#[derive(Clone, Debug)]
pub enum Side<T> {
    Scalar(T),
    Shared(Vec<T>),
    Full(Vec<T>),
}

impl<T: FuzzReal> Side<T> {
    fn at(&self, r: usize, j: usize, n: usize) -> T {
        match self {
            Side::Scalar(v) => *v,
            Side::Shared(v) => v.get(j).copied().unwrap_or(T::nan()),
            Side::Full(v) => v.get(r * n + j).copied().unwrap_or(T::nan()),
        }
    }

    fn bound(&self) -> Bound<'_, T> {
        match self {
            Side::Scalar(v) => Bound::Scalar(*v),
            Side::Shared(v) => Bound::Shared(v),
            Side::Full(v) => Bound::Full(v),
        }
    }

    fn kind(&self) -> u32 {
        match self {
            Side::Scalar(v) if v.is_infinite() => 0,
            Side::Scalar(_) => 1,
            Side::Shared(_) => 2,
            Side::Full(_) => 3,
        }
    }
}

/// The eps argument as decoded.
#[derive(Clone, Debug)]
pub enum EpsArg {
    Scalar(f64),
    PerRow(Vec<f64>),
}

impl EpsArg {
    /// The core's view of it.
    fn core(&self) -> Eps<'_> {
        match self {
            EpsArg::Scalar(e) => Eps::Scalar(*e),
            EpsArg::PerRow(v) => Eps::PerRow(v),
        }
    }
}

/// One decoded call of the core.
#[derive(Clone, Debug)]
pub struct Case<T> {
    pub rows: usize,
    pub n: usize,
    pub x: Vec<T>,
    pub delta: Vec<T>,
    pub lower: Side<T>,
    pub upper: Side<T>,
    pub eps: EpsArg,
    pub p: f64,
    pub max_newton_passes: u32,
    pub eta_len: usize,
    pub y_len: usize,
    pub chaos: bool,
    pub regime: Regime,
}

impl<T: FuzzReal> Case<T> {
    /// The core's batch over this case's arrays.
    fn batch(&self, norm: Norm) -> Batch<'_, T> {
        Batch {
            x: &self.x,
            delta: &self.delta,
            rows: self.rows,
            n: self.n,
            lower: self.lower.bound(),
            upper: self.upper.bound(),
            eps: self.eps.core(),
            norm,
        }
    }

    fn options(&self) -> Options {
        Options {
            max_newton_passes: self.max_newton_passes,
        }
    }

    /// Row `r` alone, as a batch of one row (`r < rows`, arrays of the right lengths).
    fn row(&self, r: usize) -> Case<T> {
        let (a, b) = (r * self.n, (r + 1) * self.n);
        let side = |s: &Side<T>| match s {
            Side::Full(v) => Side::Full(v[a..b].to_vec()),
            other => other.clone(),
        };
        Case {
            rows: 1,
            x: self.x[a..b].to_vec(),
            delta: self.delta[a..b].to_vec(),
            lower: side(&self.lower),
            upper: side(&self.upper),
            eps: match &self.eps {
                EpsArg::Scalar(e) => EpsArg::Scalar(*e),
                EpsArg::PerRow(v) => EpsArg::PerRow(vec![v[r]]),
            },
            eta_len: 1,
            y_len: self.n,
            ..self.clone()
        }
    }
}

const LONG_ROWS: [usize; 6] = [
    1023,
    1024,
    1025,
    3 * 1024 + 17,
    65 * 1024 + 5,
    4 * 65536 + 3,
];

/// Decodes a case (never fails). `p` may be invalid (the caller checks `Norm::new`).
pub fn decode<T: FuzzReal>(inp: &mut Input<'_>) -> Case<T> {
    let flags = inp.byte();
    let chaos = flags & 0b11 == 0;
    let regime = Regime::of(inp.byte());
    let p = decode_p(inp);
    let rows = usize::from(inp.byte() % 5);
    let nb = inp.byte();
    let n = if nb >= 254 {
        // long rows (chunk edges, parallel blocks, rows split across threads) now and then
        let k = usize::from(inp.byte()) % LONG_ROWS.len();
        if rows > 2 {
            LONG_ROWS[k % 4]
        } else {
            LONG_ROWS[k]
        }
    } else {
        usize::from(nb % 41)
    };
    let total = rows * n;
    // the box: lower first, upper above it (unless chaos says otherwise)
    let (lk, hk) = (inp.byte() % 4, inp.byte() % 4);
    let lower = decode_side(inp, lk, rows, n, None, chaos, regime);
    let upper = decode_side(inp, hk, rows, n, Some(&lower), chaos, regime);
    // x inside the box, delta anywhere
    let zero_row = inp.byte();
    let mut x = Vec::with_capacity(total);
    let mut delta = Vec::with_capacity(total);
    for r in 0..rows {
        let zero = rows > 1 && usize::from(zero_row) % 8 == r;
        for j in 0..n {
            let (lo, hi) = (lower.at(r, j, n), upper.at(r, j, n));
            x.push(decode_x(inp, lo, hi, chaos, regime));
            delta.push(if zero {
                T::zero()
            } else {
                decode_delta(inp, chaos, regime)
            });
        }
    }
    let opts_b = inp.byte();
    let max_newton_passes = match opts_b % 8 {
        0 => 0,
        1 => 1,
        2 => 3,
        3 => 64,
        _ => Options::default().max_newton_passes,
    };
    let (mut eta_len, mut y_len) = (rows, total);
    let lens = inp.byte();
    if chaos && lens.is_multiple_of(8) {
        eta_len = rows + 1;
    }
    if chaos && lens % 8 == 1 {
        y_len = total.saturating_sub(1);
    }
    let mut case = Case {
        rows,
        n,
        x,
        delta,
        lower,
        upper,
        eps: EpsArg::Scalar(0.0),
        p,
        max_newton_passes,
        eta_len,
        y_len,
        chaos,
        regime,
    };
    case.eps = decode_eps(inp, &case);
    case
}

fn decode_p(inp: &mut Input<'_>) -> f64 {
    const TABLE: [f64; 7] = [0.5, 1.0, 2.0, 3.0, f64::INFINITY, 0.7, 1.5];
    let k = inp.byte();
    match k % 16 {
        0..=6 => TABLE[usize::from(k % 16)],
        7..=10 => 0.25 + 7.75 * inp.unit(),
        11 => f64::from_bits(inp.u64()),
        12 => {
            [0.0, -1.0, f64::NAN, f64::NEG_INFINITY, -0.0, 1e-300, 1e300][usize::from(k / 16) % 7]
        }
        13 => 0.1 + 99.9 * inp.unit(),
        14 => 2.0,
        _ => 1.0,
    }
}

/// One side of the box. `below` is the lower side when decoding the upper one.
fn decode_side<T: FuzzReal>(
    inp: &mut Input<'_>,
    kind: u8,
    rows: usize,
    n: usize,
    below: Option<&Side<T>>,
    chaos: bool,
    regime: Regime,
) -> Side<T> {
    // the largest lower value each upper value must stay above
    let floor = |r: Option<usize>, j: Option<usize>| -> T {
        below.map_or(T::neg_infinity(), |lo| side_max(lo, rows, n, r, j))
    };
    let value = |inp: &mut Input<'_>, fl: T| -> T {
        let sel = inp.byte();
        if chaos && sel % 16 == 15 {
            return T::from_raw(inp.u64());
        }
        if chaos && sel % 16 == 14 {
            return special(inp.byte(), false);
        }
        if below.is_none() {
            return match sel % 8 {
                0 | 1 => T::zero(),
                2 => -T::one(),
                3 => T::neg_infinity(),
                4 => -magnitude::<T>(inp, regime),
                5 => magnitude::<T>(inp, regime),
                6 => special(inp.byte(), true),
                _ => T::of_f64(-inp.unit()),
            };
        }
        if fl.is_nan() {
            return T::nan();
        }
        let width = match sel % 8 {
            0 | 1 => T::one(),
            2 => T::zero(),
            3 => T::infinity(),
            4 => magnitude::<T>(inp, regime),
            5 => T::from_raw(1),
            6 => T::max_value(),
            _ => T::of_f64(inp.unit()),
        };
        if fl == T::neg_infinity() {
            return if width.is_infinite() {
                T::infinity()
            } else {
                width
            };
        }
        let v = fl + width;
        if v.is_nan() {
            T::infinity()
        } else {
            v
        }
    };
    match kind {
        0 | 3 => Side::Scalar(value(inp, floor(None, None))),
        1 => Side::Shared((0..n).map(|j| value(inp, floor(None, Some(j)))).collect()),
        _ => Side::Full(
            (0..rows * n)
                .map(|i| value(inp, floor(Some(i / n.max(1)), Some(i % n.max(1)))))
                .collect(),
        ),
    }
}

/// The largest value of a side over row `r` (all rows if `None`) and column `j` (all if
/// `None`); NaN if any of them is NaN.
fn side_max<T: FuzzReal>(
    side: &Side<T>,
    rows: usize,
    n: usize,
    r: Option<usize>,
    j: Option<usize>,
) -> T {
    let fold = |it: &mut dyn Iterator<Item = T>| {
        it.fold(T::neg_infinity(), |m, v| {
            if m.is_nan() || v.is_nan() {
                T::nan()
            } else if v > m {
                v
            } else {
                m
            }
        })
    };
    match (side, r, j) {
        (Side::Scalar(v), _, _) => *v,
        (Side::Shared(v), _, Some(j)) => v.get(j).copied().unwrap_or(T::nan()),
        (Side::Shared(v), _, None) => fold(&mut v.iter().copied()),
        (Side::Full(v), Some(r), Some(j)) => v.get(r * n + j).copied().unwrap_or(T::nan()),
        (Side::Full(v), None, Some(j)) => {
            fold(&mut (0..rows).filter_map(|rr| v.get(rr * n + j).copied()))
        }
        (Side::Full(v), _, _) => fold(&mut v.iter().copied()),
    }
}

fn decode_x<T: FuzzReal>(inp: &mut Input<'_>, lo: T, hi: T, chaos: bool, regime: Regime) -> T {
    let sel = inp.byte();
    if chaos && sel % 32 == 31 {
        return T::from_raw(inp.u64());
    }
    if chaos && sel % 32 == 30 {
        return special(inp.byte(), false);
    }
    let (fl, fh) = (lo.is_finite(), hi.is_finite());
    let v = match sel % 8 {
        0 if fl => lo,
        1 if fh => hi,
        2 if fl && lo < hi => lo.next_up(),
        3 if fh && lo < hi => hi.next_down(),
        _ => {
            if fl && fh {
                let f = inp.unit();
                T::of_f64(lo.as_f64() * (1.0 - f) + hi.as_f64() * f)
            } else if fl {
                lo + magnitude::<T>(inp, regime)
            } else if fh {
                hi - magnitude::<T>(inp, regime)
            } else if sel & 1 == 0 {
                magnitude::<T>(inp, regime)
            } else {
                -magnitude::<T>(inp, regime)
            }
        }
    };
    // keep x in the box (rounding) unless a NaN bound makes that impossible anyway
    let v = if v.is_infinite() { T::max_value() } else { v };
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

fn decode_delta<T: FuzzReal>(inp: &mut Input<'_>, chaos: bool, regime: Regime) -> T {
    let sel = inp.byte();
    match sel % 32 {
        0..=2 => T::zero(),
        3 => -T::zero(),
        4 => special(inp.byte(), !chaos),
        5 if chaos => T::from_raw(inp.u64()),
        s if s % 2 == 0 => magnitude(inp, regime),
        _ => -magnitude::<T>(inp, regime),
    }
}

fn decode_eps<T: FuzzReal>(inp: &mut Input<'_>, case: &Case<T>) -> EpsArg {
    let mode = inp.byte();
    let p = case.p;
    let value = |inp: &mut Input<'_>, r: usize| -> f64 {
        let reference = if r < case.rows && !p.is_nan() && p > 0.0 {
            row_ref(case, r).smax
        } else {
            1.0
        };
        let base = if reference.is_finite() && reference > 0.0 {
            reference
        } else {
            magnitude::<f64>(inp, Regime::Normal)
        };
        let sel = inp.byte();
        match sel % 16 {
            0 => 0.0,
            1 => -0.0,
            2 => base,
            3 => base * (1.0 + 2f64.powi(-20)),
            4 => base * (1.0 - 2f64.powi(-20)),
            5 => base * (1.0 + 3.0 * inp.unit()),
            6 => base * 2f64.powi(-i32::from(inp.byte())),
            7 => magnitude::<f64>(inp, case.regime),
            8 if case.chaos => f64::from_bits(inp.u64()),
            9 if case.chaos => [f64::NAN, -1.0, f64::INFINITY, -f64::MIN_POSITIVE, f64::MAX]
                [usize::from(inp.byte()) % 5],
            _ => base * inp.unit(),
        }
    };
    if mode.is_multiple_of(2) {
        EpsArg::Scalar(value(inp, 0))
    } else {
        let len = if case.chaos && mode % 16 == 1 {
            case.rows + 1
        } else {
            case.rows
        };
        EpsArg::PerRow((0..len).map(|r| value(inp, r)).collect())
    }
}

// ---------------------------------------------------------------------------- reference

/// What the checks need to know about one row, computed in `f64` from the `T` values.
#[derive(Clone, Copy, Debug, Default)]
pub struct RowRef {
    /// Some element has `delta != 0`.
    pub movable: bool,
    /// The largest reachable size (infinite when a movable element has infinite room).
    pub smax: f64,
    /// The smallest `eta` reaching `smax` (infinite when `smax` is).
    pub eta_sat: f64,
}

/// `(|delta|, room)` of the movable elements of row `r`.
fn movers<T: FuzzReal>(case: &Case<T>, r: usize) -> Vec<(f64, f64)> {
    let n = case.n;
    (0..n)
        .filter_map(|j| {
            let i = r * n + j;
            let (x, d) = (case.x[i], case.delta[i]);
            if d == T::zero() {
                return None;
            }
            let (lo, hi) = (case.lower.at(r, j, n), case.upper.at(r, j, n));
            // the room exactly as the core computes it, in T
            let s = if d > T::zero() { hi - x } else { x - lo };
            Some((d.abs().as_f64(), s.as_f64()))
        })
        .collect()
}

fn row_ref<T: FuzzReal>(case: &Case<T>, r: usize) -> RowRef {
    let m = movers(case, r);
    if m.is_empty() {
        return RowRef::default();
    }
    let p = case.p;
    let smax = if p.is_infinite() {
        m.iter().map(|e| e.1).fold(0.0, f64::max)
    } else {
        lp_size(m.iter().map(|e| e.1), p)
    };
    let eta_sat = if p.is_infinite() {
        // the largest room, reached first by the largest |delta| having it
        let best_a = m
            .iter()
            .filter(|e| e.1 == smax)
            .map(|e| e.0)
            .fold(0.0, f64::max);
        smax / best_a
    } else {
        m.iter().map(|e| e.1 / e.0).fold(0.0, f64::max)
    };
    RowRef {
        movable: true,
        smax,
        eta_sat,
    }
}

/// `(sum v^p)^(1/p)` of non-negative values, scaled so nothing overflows or underflows.
fn lp_size(values: impl Iterator<Item = f64> + Clone, p: f64) -> f64 {
    ln_lp(values.map(f64::ln), p).exp()
}

/// `ln (sum v^p)^(1/p)` from the `ln v` (a log-sum-exp: with a small `p`, values far below
/// the range of `f64` still count, as they do in the core's `t = eta^p` domain).
fn ln_lp(logs: impl Iterator<Item = f64> + Clone, p: f64) -> f64 {
    let lmax = logs.clone().fold(f64::NEG_INFINITY, f64::max);
    if !lmax.is_finite() || p.is_infinite() {
        return lmax;
    }
    let sum: f64 = logs.map(|l| (p * (l - lmax)).exp()).sum();
    lmax + sum.ln() / p
}

/// The clipped size of row `r` moved by `eta`, in exact arithmetic on the `T` values
/// (each element moves `min(eta |delta|, room)`; computed with logarithms, so movements
/// below the range of `f64` still count).
fn size_at(m: &[(f64, f64)], eta: f64, p: f64) -> f64 {
    let le = eta.ln();
    ln_lp(m.iter().map(|&(a, s)| (le + a.ln()).min(s.ln())), p).exp()
}

/// Tolerances of one data type: `tol_t` relative on `eps^p` (backward error of the sums),
/// `r` relative on eta (its own rounding), `margin` relative on `eps^p` around the largest
/// size where reachable or not depends on rounding.
fn tolerances<T: FuzzReal>() -> (f64, f64, f64) {
    if T::EPS > 1e-10 {
        (1e-4, 4.0 * T::EPS, 1e-3)
    } else {
        (1e-10, 16.0 * T::EPS, 1e-8)
    }
}

// ---------------------------------------------------------------------------- checks

fn feature(parts: &[u32]) -> u32 {
    let mut h = 0x811c_9dc5u32;
    for &p in parts {
        h = (h ^ p).wrapping_mul(0x0100_0193);
    }
    h
}

fn check_solve(data: &[u8], op: Op) -> Result<Vec<u32>, String> {
    let mut inp = Input::new(data);
    if inp.byte() & 1 == 0 {
        check_case::<f32>(&mut inp, op)
    } else {
        check_case::<f64>(&mut inp, op)
    }
}

fn error_code(e: &CoreError) -> u32 {
    match e {
        CoreError::NonFinite { arg: "x", .. } => 1,
        CoreError::NonFinite { .. } => 2,
        CoreError::OutOfBounds { .. } => 3,
        CoreError::BadEps { .. } => 4,
        CoreError::Length { .. } => 5,
    }
}

fn check_case<T: FuzzReal>(inp: &mut Input<'_>, op: Op) -> Result<Vec<u32>, String> {
    let case = decode::<T>(inp);
    check_decoded(&case, op).map(|c| c.features)
}

/// What checking one decoded call found (the outputs, for further checks by the callers).
pub struct Checked<T> {
    pub features: Vec<u32>,
    /// `None` when `p` is invalid (the core was not called).
    pub result: Option<Result<Summary, CoreError>>,
    pub eta: Vec<T>,
    pub y: Vec<T>,
    /// Per row: whether the full invariant applied (the row is in the exact range).
    pub full: Vec<bool>,
}

/// Calls `op` on a decoded case and checks the invariant.
pub fn check_decoded<T: FuzzReal>(case: &Case<T>, op: Op) -> Result<Checked<T>, String> {
    let dt = u32::from(T::EPS < 1e-10);
    let pk = match case.p {
        1.0 => 0,
        2.0 => 1,
        p if p.is_infinite() => 2,
        p if p < 1.0 => 3,
        _ => 4,
    };
    let base = [
        dt,
        pk,
        case.lower.kind() * 4 + case.upper.kind(),
        case.regime as u32,
    ];
    let Some(norm) = Norm::new(case.p) else {
        if !(case.p.is_nan() || case.p <= 0.0) {
            return Err(format!("Norm::new rejected a valid p = {:?}", case.p));
        }
        return Ok(Checked {
            features: vec![feature(&[100, dt])],
            result: None,
            eta: Vec::new(),
            y: Vec::new(),
            full: Vec::new(),
        });
    };
    if let Norm::P(p) = norm {
        if !(p > 0.0 && p.is_finite()) {
            return Err(format!("Norm::new({:?}) gave {norm:?}", case.p));
        }
    }
    let (batch, opts) = (case.batch(norm), case.options());
    let expected = expected_error(case, op);
    let mut eta = vec![T::nan(); case.eta_len];
    let mut y = vec![T::nan(); case.y_len];
    let got = match op {
        Op::Scale => scale(&batch, &opts, &mut eta),
        Op::Perturb => perturb(&batch, &opts, &mut y, &mut eta),
    };
    let describe = || describe_case(case);
    let summary = match (got, expected) {
        (Err(g), Some(e)) if g == e => {
            let code = error_code(&g);
            return Ok(Checked {
                features: vec![
                    feature(&[6, dt, code, base[1]]),
                    feature(&[7, dt, code, base[2]]),
                ],
                result: Some(Err(g)),
                eta,
                y,
                full: Vec::new(),
            });
        }
        (Err(g), Some(e)) => {
            return Err(format!(
                "wrong error: got {g:?}, expected {e:?}\n{}",
                describe()
            ))
        }
        (Err(g), None) => return Err(format!("error {g:?} on a valid input\n{}", describe())),
        (Ok(_), Some(e)) => {
            return Err(format!("no error; expected {e:?}\n{}", describe()));
        }
        (Ok(s), None) => s,
    };
    // per-row diagnostics must agree with the results bitwise
    let stats = solve_stats(&batch, &opts).map_err(|e| {
        format!(
            "solve_stats failed with {e:?} after success\n{}",
            describe()
        )
    })?;
    let mut features = Vec::new();
    let (mut flags, mut full) = (Vec::with_capacity(case.rows), Vec::with_capacity(case.rows));
    for r in 0..case.rows {
        let (cls, flagged, checked) = check_row(case, r, eta[r], &stats[r])
            .map_err(|m| format!("row {r}: {m}\n{}", describe()))?;
        flags.push(flagged);
        full.push(checked);
        let passes = match stats[r].passes {
            p @ 0..=3 => p,
            4..=8 => 4,
            _ => 5,
        };
        let sg = u32::from(stats[r].safeguard);
        let (dt, pk, bk, rg) = (base[0], base[1], base[2], base[3]);
        features.extend([
            feature(&[1, dt, pk, cls]),
            feature(&[2, dt, bk, cls]),
            feature(&[3, dt, rg, cls]),
            feature(&[4, dt, pk, passes, sg]),
            feature(&[5, dt, cls, u32::from(case.chaos), u32::from(case.n > 64)]),
        ]);
    }
    check_summary(&summary, &flags).map_err(|m| format!("{m}\n{}", describe()))?;
    if op == Op::Perturb {
        check_perturb(case, &eta, &y, &full).map_err(|m| format!("{m}\n{}", describe()))?;
        // scale gives the same eta bits
        let mut eta2 = vec![T::nan(); case.rows];
        scale(&batch, &opts, &mut eta2)
            .map_err(|e| format!("scale failed with {e:?} where perturb succeeded"))?;
        if !same_bits(&eta, &eta2) {
            return Err(format!("scale and perturb disagree on eta\n{}", describe()));
        }
        // and one thread gives the same bits as the global pool
        if let Some(pool) = single_thread_pool() {
            let (mut y1, mut eta1) = (vec![T::nan(); case.y_len], vec![T::nan(); case.rows]);
            pool.install(|| perturb(&batch, &opts, &mut y1, &mut eta1))
                .map_err(|e| format!("one-thread perturb failed with {e:?}"))?;
            if !same_bits(&eta, &eta1) || !same_bits(&y, &y1) {
                return Err(format!("thread count changed the bits\n{}", describe()));
            }
        }
    }
    Ok(Checked {
        features,
        result: Some(Ok(summary)),
        eta,
        y,
        full,
    })
}

/// A rayon pool of one thread, to compare with the global pool.
fn single_thread_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok())
        .as_ref()
}

fn same_bits<T: FuzzReal>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(u, v)| u.to_raw() == v.to_raw())
}

/// The first error of the core's argument checks that come before its value checks, in its
/// order: the lengths of `arrays` (`(arg, expected, got)`), of the bounds and of `eps`, then
/// the values of `eps`.
fn expected_argument_error<T: FuzzReal>(
    case: &Case<T>,
    arrays: &[(&'static str, usize, usize)],
) -> Option<CoreError> {
    let (rows, n) = (case.rows, case.n);
    let total = rows * n;
    let len =
        |arg, expected, got| (expected != got).then_some(CoreError::Length { arg, expected, got });
    for &(arg, expected, got) in arrays {
        if let Some(e) = len(arg, expected, got) {
            return Some(e);
        }
    }
    for (arg, side) in [("lower", &case.lower), ("upper", &case.upper)] {
        let e = match side {
            Side::Scalar(_) => None,
            Side::Shared(v) => len(arg, n, v.len()),
            Side::Full(v) => len(arg, total, v.len()),
        };
        if e.is_some() {
            return e;
        }
    }
    let eps: Vec<f64> = match &case.eps {
        EpsArg::Scalar(e) => vec![*e],
        EpsArg::PerRow(v) => {
            if let Some(e) = len("eps", rows, v.len()) {
                return Some(e);
            }
            v.clone()
        }
    };
    for (what, bad) in [
        (
            "negative or NaN",
            &(|e: f64| e.is_nan() || e < 0.0) as &dyn Fn(f64) -> bool,
        ),
        ("infinite", &|e: f64| e.is_infinite()),
    ] {
        let hits: Vec<usize> = (0..eps.len()).filter(|&r| bad(eps[r])).collect();
        if let Some(&first) = hits.first() {
            return Some(CoreError::BadEps {
                what,
                count: hits.len(),
                first,
            });
        }
    }
    None
}

/// The error the core must report for this input, replaying its order of checks.
pub fn expected_error<T: FuzzReal>(case: &Case<T>, op: Op) -> Option<CoreError> {
    let (rows, n) = (case.rows, case.n);
    let total = rows * n;
    let arrays = [
        ("eta", rows, case.eta_len),
        ("x", total, case.x.len()),
        ("delta", total, case.delta.len()),
    ];
    if let Some(e) = expected_argument_error(case, &arrays) {
        return Some(e);
    }
    if op == Op::Perturb && case.y_len != total {
        return Some(CoreError::Length {
            arg: "out",
            expected: total,
            got: case.y_len,
        });
    }
    let mut found = [(0usize, usize::MAX); 3];
    for r in 0..rows {
        for j in 0..n {
            let i = r * n + j;
            let (x, d) = (case.x[i], case.delta[i]);
            let (lo, hi) = (case.lower.at(r, j, n), case.upper.at(r, j, n));
            let k = if !x.is_finite() {
                Some(0)
            } else if !(x >= lo && x <= hi) {
                Some(2)
            } else {
                None
            };
            if let Some(k) = k {
                found[k].0 += 1;
                found[k].1 = found[k].1.min(i);
            }
            if !d.is_finite() {
                found[1].0 += 1;
                found[1].1 = found[1].1.min(i);
            }
        }
    }
    found_error(found, "delta")
}

/// The core's value error from the tallies `(count, first index)` of non-finite `x`,
/// non-finite `second` (the direction or the target) and `x` outside the box, in its order.
fn found_error(found: [(usize, usize); 3], second: &'static str) -> Option<CoreError> {
    match found {
        [(count, first), _, _] if count > 0 => Some(CoreError::NonFinite {
            arg: "x",
            count,
            first,
        }),
        [_, (count, first), _] if count > 0 => Some(CoreError::NonFinite {
            arg: second,
            count,
            first,
        }),
        [_, _, (count, first)] if count > 0 => Some(CoreError::OutOfBounds { count, first }),
        _ => None,
    }
}

fn eps_of<T>(case: &Case<T>, r: usize) -> f64 {
    match &case.eps {
        EpsArg::Scalar(e) => *e,
        EpsArg::PerRow(v) => v[r],
    }
}

/// Whether every check applies to all rows (`CLIPRESC_FUZZ_STRICT=1`), or only to the rows
/// inside the range the core handles exactly (see [`well_scaled`]).
pub fn strict() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRICT.get_or_init(|| std::env::var("CLIPRESC_FUZZ_STRICT").is_ok_and(|v| v == "1"))
}

/// Whether row `r` lies in the range where the core's arithmetic is exact to rounding.
///
/// The core computes `|delta_i|^p` and `room_i^p` in `T` and `eps^p`, `eta^p` in `f64`, with
/// no rescaling, so the full invariant needs: `1/64 <= p <= 256` (or `inf`); every
/// `|delta_i|`, finite nonzero room, `eps` and their `p`-th powers normal numbers of `T`; the
/// bounds on the answer (`eps / ||delta||_p` from below; the saturating eta, or `eps` over the
/// norm of the deltas with infinite room, from above) normal in `T` and their `p`-th powers
/// normal in `f64`, as is the largest movement `eta * max|delta_i|`; all with a factor 2^24
/// to spare at both ends. Outside it values overflow to infinity or lose their precision to
/// underflow, and only the weak invariant is checked (unless [`strict`]).
pub fn well_scaled<T: FuzzReal>(case: &Case<T>, r: usize, eps: f64, rr: &RowRef) -> bool {
    let (_, norm_exp, max_exp) = T::EXP;
    let t_range = (f64::from(norm_exp + 24), f64::from(max_exp - 24));
    let f64_range = (f64::from(-1022 + 24), f64::from(1023 - 24));
    let p = if case.p.is_infinite() { 1.0 } else { case.p };
    if !(1.0 / 64.0..=256.0).contains(&p) {
        return false;
    }
    let within = |e: f64, (lo, hi): (f64, f64)| e >= lo && e <= hi;
    // v and v^p (checked through log2, nothing overflows here) in the given ranges
    let ok = |v: f64, pow_range: (f64, f64)| {
        v > 0.0 && within(v.log2(), t_range) && within(p * v.log2(), pow_range)
    };
    let m = movers(case, r);
    let rooms_ok = m
        .iter()
        .all(|&(a, s)| ok(a, t_range) && (s == 0.0 || s.is_infinite() || ok(s, t_range)));
    if !rooms_ok || !(eps == 0.0 || ok(eps, f64_range)) {
        return false;
    }
    if eps == 0.0 || m.is_empty() {
        return true;
    }
    let pn = case.p;
    let eta_lo = eps / lp_size(m.iter().map(|e| e.0), pn);
    let inf_room = lp_size(m.iter().filter(|e| e.1.is_infinite()).map(|e| e.0), pn);
    let mut eta_hi = if inf_room > 0.0 {
        eps / inf_room
    } else {
        f64::INFINITY
    };
    if rr.eta_sat.is_finite() {
        eta_hi = eta_hi.min(rr.eta_sat);
    }
    let a_max = m.iter().map(|e| e.0).fold(0.0, f64::max);
    ok(eta_lo, f64_range) && ok(eta_hi, f64_range) && ok(eta_hi * a_max, f64_range)
}

/// Whether none of the `p`-th powers the core forms for row `r` overflows (`|delta_i|^p`,
/// finite `room_i^p` in `T`; `eps^p` and the saturating `eta^p` in `f64`).
fn no_overflow<T: FuzzReal>(case: &Case<T>, r: usize, eps: f64, eta_sat: f64) -> bool {
    let p = if case.p.is_infinite() { 1.0 } else { case.p };
    let (_, _, max_exp) = T::EXP;
    let fits = |v: f64, e: i32| v == 0.0 || v.is_infinite() || p * v.log2() < f64::from(e);
    movers(case, r)
        .iter()
        .all(|&(a, s)| fits(a, max_exp) && fits(s, max_exp))
        && fits(eps, 1023)
        && fits(eta_sat, 1023)
}

/// Checks row `r`; returns a class (for the features), whether the row must / may be
/// reported unreachable (`Some(true)` must, `Some(false)` must not, `None` either), and
/// whether the full invariant applied.
fn check_row<T: FuzzReal>(
    case: &Case<T>,
    r: usize,
    eta_t: T,
    stats: &RowOutcome,
) -> Result<(u32, Option<bool>, bool), String> {
    let eta = eta_t.as_f64();
    if eta_t.to_raw() != T::of_f64(stats.eta).to_raw() {
        return Err(format!(
            "eta {eta_t:?} differs from solve_stats' {:?}",
            stats.eta
        ));
    }
    if eta.is_nan() || eta < 0.0 || stats.eta.is_nan() || stats.eta < 0.0 {
        return Err(format!(
            "eta {eta_t:?} (f64 {:?}) is NaN or negative",
            stats.eta
        ));
    }
    let eps = eps_of(case, r);
    let rr = row_ref(case, r);
    if eps == 0.0 || !rr.movable {
        if eta != 0.0 {
            return Err(format!(
                "eta {eta:?} != 0 for eps {eps:?} / no movable element"
            ));
        }
        return Ok((0, Some(false), true));
    }
    let (tol_t, rel, margin) = tolerances::<T>();
    if !strict() && !well_scaled(case, r, eps, &rr) {
        // weak invariant: a finite eta whenever T can represent the saturating one
        let sat_fits = rr.eta_sat.is_finite() && rr.eta_sat <= T::max_value().as_f64();
        if sat_fits && no_overflow(case, r, eps, rr.eta_sat) && !eta.is_finite() {
            return Err(format!(
                "eta {eta_t:?} (f64 {:?}) not finite though the saturating eta {:?} is \
                 (out-of-range row)",
                stats.eta, rr.eta_sat
            ));
        }
        return Ok((4, None, false));
    }
    if !eta.is_finite() || !stats.eta.is_finite() {
        return Err(format!("eta {eta_t:?} (f64 {:?}) is not finite", stats.eta));
    }
    let m = movers(case, r);
    let p = case.p;
    // compare in the p-th power domain with logarithms: nothing overflows
    let lratio = |a: f64, b: f64| {
        if p.is_infinite() {
            (a / b).ln()
        } else {
            p * (a / b).ln()
        }
    };
    let e64 = stats.eta;
    if rr.eta_sat.is_finite() && e64 > rr.eta_sat * (1.0 + rel) {
        return Err(format!(
            "eta {e64:?} beyond the saturating eta {:?}",
            rr.eta_sat
        ));
    }
    let (cls, flag) = if rr.smax.is_infinite() || lratio(eps, rr.smax) <= -margin {
        // reachable: the size at eta*(1 -+ rel) brackets eps (to tol_t on eps^p)
        let lo = size_at(&m, e64 * (1.0 - rel), p);
        let hi = size_at(&m, e64 * (1.0 + rel), p);
        if lratio(lo, eps) > tol_t || lratio(hi, eps) < -tol_t {
            return Err(format!(
                "size at eta {e64:?} is {:?} for eps {eps:?} (sizes at eta -+ {rel:e}: {lo:?}, \
                 {hi:?}; largest {:?}, p {p:?})",
                size_at(&m, e64, p),
                rr.smax
            ));
        }
        (1, Some(false))
    } else if lratio(eps, rr.smax) >= margin {
        // unreachable: the saturating eta
        if (e64 - rr.eta_sat).abs() > rel * rr.eta_sat {
            return Err(format!(
                "eps {eps:?} is above the largest size {:?} but eta {e64:?} != saturating {:?}",
                rr.smax, rr.eta_sat
            ));
        }
        (2, Some(true))
    } else {
        // ambiguous: somewhere between the two answers
        let hi = size_at(&m, e64 * (1.0 + rel), p);
        if lratio(hi, eps.min(rr.smax)) < -tol_t - margin {
            return Err(format!(
                "size {hi:?} at eta {e64:?} too small for eps {eps:?} ~ largest size {:?}",
                rr.smax
            ));
        }
        (3, None)
    };
    if stats.unreachable != flag.unwrap_or(stats.unreachable) {
        return Err(format!(
            "unreachable flag {} but eps {eps:?} vs largest size {:?}",
            stats.unreachable, rr.smax
        ));
    }
    Ok((cls, flag, true))
}

fn check_summary(s: &Summary, flags: &[Option<bool>]) -> Result<(), String> {
    let must = flags.iter().filter(|f| **f == Some(true)).count();
    let may = flags.iter().filter(|f| f.is_none()).count();
    if s.unreachable_rows < must || s.unreachable_rows > must + may {
        return Err(format!(
            "summary counts {} unreachable rows; expected {must} (+ up to {may} borderline)",
            s.unreachable_rows
        ));
    }
    match s.first_unreachable {
        None if s.unreachable_rows == 0 => Ok(()),
        Some(r) if r < flags.len() && flags[r] != Some(false) => {
            if flags[..r].contains(&Some(true)) {
                Err(format!("first unreachable row {r} is not the first"))
            } else {
                Ok(())
            }
        }
        other => Err(format!(
            "first unreachable row {other:?} with {} unreachable rows",
            s.unreachable_rows
        )),
    }
}

/// `y` is bitwise `clip(x + eta * delta)` in `T`; in the rows the full invariant covers
/// (`full`), `y` also lies in the box and equals `x` where `delta == 0`. A row whose `eta`
/// is beyond `T`'s normal range (inf, subnormal, or rounded to zero) is applied in `f64`
/// with the exact eta, which `scale` cannot return: there `y` lies in the box, moved along
/// `delta` (not at all where `delta == 0`).
fn check_perturb<T: FuzzReal>(
    case: &Case<T>,
    eta: &[T],
    y: &[T],
    full: &[bool],
) -> Result<(), String> {
    let n = case.n;
    for r in 0..case.rows {
        let wide = !eta[r].is_normal();
        for j in 0..n {
            let i = r * n + j;
            let (x, d) = (case.x[i], case.delta[i]);
            let (lo, hi) = (case.lower.at(r, j, n), case.upper.at(r, j, n));
            if wide {
                let got = y[i];
                let along = if d > T::zero() {
                    got >= x
                } else if d < T::zero() {
                    got <= x
                } else {
                    got == x
                };
                if !(got >= lo && got <= hi && along) {
                    return Err(format!(
                        "y[{i}] = {got:?} outside [{lo:?}, {hi:?}] or not moved along delta \
                         (x {x:?}, delta {d:?}, eta {:?} beyond the type's range)",
                        eta[r]
                    ));
                }
                continue;
            }
            let want = (x + eta[r] * d).max(lo).min(hi);
            let got = y[i];
            if got.to_raw() != want.to_raw() {
                return Err(format!(
                    "y[{i}] = {got:?}, expected clip(x + eta * delta) = {want:?} \
                     (x {x:?}, delta {d:?}, eta {:?})",
                    eta[r]
                ));
            }
            if full[r] && (!(got >= lo && got <= hi) || (d == T::zero() && got != x)) {
                return Err(format!(
                    "y[{i}] = {got:?} outside [{lo:?}, {hi:?}] or moved"
                ));
            }
        }
    }
    Ok(())
}

/// The decoded case of an input in full (for `fuzz_stable show`).
pub fn describe(data: &[u8]) -> String {
    let mut inp = Input::new(data);
    if inp.byte() & 1 == 0 {
        describe_full(&decode::<f32>(&mut inp))
    } else {
        describe_full(&decode::<f64>(&mut inp))
    }
}

fn describe_full<T: FuzzReal>(case: &Case<T>) -> String {
    let mut s = describe_case(case);
    if case.x.len() > 48 {
        let _ = write!(
            s,
            "\n  x = {:?}\n  delta = {:?}\n  lower = {:?}\n  upper = {:?}",
            case.x, case.delta, case.lower, case.upper
        );
    }
    for r in 0..case.rows.min(8) {
        let _ = write!(s, "\n  row {r}: {:?}", row_ref(case, r));
    }
    s
}

/// A compact description of a case for failure reports (small cases in full).
pub fn describe_case<T: FuzzReal>(case: &Case<T>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "case: {} rows x {} ({}), p = {:?}, chaos = {}, regime = {:?}, newton passes = {}, \
         eta_len = {}, y_len = {}\n  eps = {:?}",
        case.rows,
        case.n,
        T::NAME,
        case.p,
        case.chaos,
        case.regime,
        case.max_newton_passes,
        case.eta_len,
        case.y_len,
        case.eps
    );
    if case.x.len() <= 48 {
        let _ = write!(
            s,
            "\n  x = {:?}\n  delta = {:?}\n  lower = {:?}\n  upper = {:?}",
            case.x, case.delta, case.lower, case.upper
        );
    } else {
        let _ = write!(
            s,
            "\n  lower = {:?}\n  upper = {:?}",
            short(&case.lower),
            short(&case.upper)
        );
    }
    s
}

fn short<T: FuzzReal>(side: &Side<T>) -> String {
    match side {
        Side::Scalar(v) => format!("Scalar({v:?})"),
        Side::Shared(v) => format!("Shared(len {})", v.len()),
        Side::Full(v) => format!("Full(len {})", v.len()),
    }
}

// ---------------------------------------------------------------------------- noise

/// `noise`: the case's `x`, box, `eps` and `p` with a decoded distribution, seed and row
/// offset. The invariant: `perturb` with `delta = sample(...)` satisfies the full invariant
/// above, and `noise` gives bitwise its result on each vector alone (or the same error), as
/// documented.
pub fn check_noise(data: &[u8]) -> Result<Vec<u32>, String> {
    let mut inp = Input::new(data);
    if inp.byte() & 1 == 0 {
        check_noise_typed::<f32>(&mut inp)
    } else {
        check_noise_typed::<f64>(&mut inp)
    }
}

fn check_noise_typed<T: FuzzReal>(inp: &mut Input<'_>) -> Result<Vec<u32>, String> {
    let mut case = decode::<T>(inp);
    let total = case.rows * case.n;
    (case.eta_len, case.y_len) = (case.rows, total);
    let dist = Distribution::ALL[usize::from(inp.byte()) % Distribution::ALL.len()];
    let spec = NoiseSpec {
        distribution: dist,
        seed: Seed::from_u64(inp.u64()),
        row_offset: inp.u64() >> (inp.byte() % 64),
    };
    let mut delta = vec![T::nan(); total];
    sample(&spec, case.rows, case.n, &mut delta).map_err(|e| format!("sample: {e:?}"))?;
    if let Some(i) = delta.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "sample drew a non-finite value at {i}: {:?}",
            delta[i]
        ));
    }
    case.delta = delta;
    let checked = check_decoded(&case, Op::Perturb)?;
    let Some(want) = checked.result else {
        return Ok(checked.features);
    };
    let norm = Norm::new(case.p).ok_or("p accepted by the forward check")?;
    let nb = NoiseBatch {
        x: &case.x,
        rows: case.rows,
        n: case.n,
        lower: case.lower.bound(),
        upper: case.upper.bound(),
        eps: case.eps.core(),
        norm,
        spec,
    };
    let opts = Options {
        max_newton_passes: case.max_newton_passes,
    };
    let (mut y, mut eta) = (vec![T::nan(); total], vec![T::nan(); case.rows]);
    let got = noise(&nb, &opts, &mut y, &mut eta);
    let same = match (&got, &want) {
        (Ok(g), Ok(_)) => {
            // each vector alone: `perturb` passes each answer on to the next vector of its
            // group as a starting estimate, `noise` does not (its output does not depend
            // on the batch), so only the vector alone has the same bits, and the same
            // verdict for an `eps` at the edge of reach (the batch's own verdicts are held
            // to the invariant above)
            let (mut y1, mut eta1) = (vec![T::nan(); total], vec![T::nan(); case.rows]);
            let mut alone = Summary::default();
            for r in 0..case.rows {
                let one = case.row(r);
                let (ys, es) = (&mut y1[r * case.n..(r + 1) * case.n], &mut eta1[r..=r]);
                let s = perturb(&one.batch(norm), &opts, ys, es)
                    .map_err(|e| format!("row {r}: {e:?}"))?;
                if s.unreachable_rows > 0 {
                    alone.unreachable_rows += 1;
                    alone.first_unreachable = alone.first_unreachable.or(Some(r));
                }
            }
            *g == alone && same_bits(&y, &y1) && same_bits(&eta, &eta1)
        }
        (Err(g), Err(w)) => g == w,
        _ => false,
    };
    if !same {
        return Err(format!(
            "noise differs from perturb(x, sample(...)) on each vector alone: {got:?} vs \
             {want:?}\n{}",
            describe_case(&case)
        ));
    }
    let mut f = checked.features;
    f.push(feature(&[91, dist as u32, u32::from(got.is_ok())]));
    Ok(f)
}

// ---------------------------------------------------------------------------- VJP

/// The VJPs: for a decoded case and cotangent, `vjp` reports the forward's error (or none),
/// its summary, finite cotangents, the same bits whether it solves or is given the forward's
/// `eta` (float64), and two identities that hold exactly for the closed form whatever the
/// saturated set is: scaling `delta` by `c` scales `eta` by `1/c` and leaves `y` unchanged,
/// so `sum_j delta_j deltabar_j` is `-sum_r etabar_r eta_r` (`scale`) or 0 (`perturb`); and
/// shifting `x` and both bounds together leaves `eta` unchanged and shifts `y`, so
/// `sum xbar + sum lowerbar + sum upperbar` is 0 (`scale`) or `sum ybar` (`perturb`), checked
/// when both bounds get cotangents (arrays) or are infinite.
pub fn check_vjp(data: &[u8]) -> Result<Vec<u32>, String> {
    let mut inp = Input::new(data);
    if inp.byte() & 1 == 0 {
        check_vjp_typed::<f32>(&mut inp)
    } else {
        check_vjp_typed::<f64>(&mut inp)
    }
}

fn cotangent_value<T: FuzzReal>(inp: &mut Input<'_>) -> T {
    match inp.byte() % 8 {
        0 => T::zero(),
        1 => T::one(),
        2 => -T::one(),
        _ => T::of_f64(4.0 * inp.unit() - 2.0),
    }
}

/// Whether the cotangents of row `r` are representable in `T`: a conservative bound (in
/// log2) on the closed form's terms, `eta / |d_i|` (delta), `(s_i / eta)^(p-1) / M` (x and the
/// bounds) and `(eps / eta)^(p-1) / M` (eps) with `M >= min |d_i|^p`, times what a cotangent
/// can bring (`sum |ybar_j d_j|`, `eta`), stays 2^24 below the largest value of `T`.
fn grads_in_range<T: FuzzReal>(case: &Case<T>, r: usize, eta: f64) -> bool {
    let m = movers(case, r);
    let eps = eps_of(case, r);
    let (_, norm_exp, max_exp) = T::EXP;
    let limit = f64::from(max_exp - 24);
    let l2 = |v: f64| v.log2();
    if m.is_empty() {
        return true;
    }
    if eps == 0.0 || eta == 0.0 {
        // only d eta / d eps = ||delta||_p^-1 over the elements with room
        let norm = lp_size(m.iter().filter(|e| e.1 > 0.0).map(|e| e.0), case.p);
        return norm == 0.0 || (norm.is_finite() && -l2(norm) <= limit);
    }
    let a_min = m.iter().map(|e| e.0).fold(f64::INFINITY, f64::min);
    let a_max = m.iter().map(|e| e.0).fold(0.0, f64::max);
    // the low side: the largest delta's cotangent (about eta / |d|) must not underflow
    let floor = f64::from(norm_exp + 24);
    if l2(eta) < floor || l2(eta) - l2(a_max) < floor {
        return false;
    }
    let p = case.p;
    let mut g = l2(eta) - l2(a_min);
    if p.is_infinite() {
        g = g.max(-l2(a_min));
    } else {
        let inv_m = -p * l2(a_min);
        let term = |v: f64| (p - 1.0) * (l2(v) - l2(eta)) + inv_m;
        g = g.max(term(eps));
        for &(_, s) in &m {
            if s > 0.0 && s.is_finite() {
                g = g.max(term(s));
            }
        }
    }
    let carry = l2(2.0 * case.n as f64 * a_max + 2.0).max(0.0) + l2(eta + 1.0).max(0.0);
    g.is_finite() && g + carry <= limit
}

// rows, elements and their cotangents are indexed together
#[allow(clippy::needless_range_loop)]
fn check_vjp_typed<T: FuzzReal>(inp: &mut Input<'_>) -> Result<Vec<u32>, String> {
    let mut case = decode::<T>(inp);
    let (rows, n) = (case.rows, case.n);
    let total = rows * n;
    (case.eta_len, case.y_len) = (rows, total);
    let of_y = inp.byte() & 1 == 1;
    let given_eta = inp.byte() & 1 == 1;
    let cot: Vec<T> = (0..if of_y { total } else { rows })
        .map(|_| cotangent_value(inp))
        .collect();
    let checked = check_decoded(&case, Op::Scale)?;
    let Some(forward) = checked.result else {
        return Ok(checked.features);
    };
    let norm = Norm::new(case.p).ok_or("p accepted by the forward check")?;
    let (batch, opts) = (case.batch(norm), case.options());
    let side_len = |side: &Side<T>| match side {
        Side::Scalar(_) => None,
        Side::Shared(_) => Some(n),
        Side::Full(_) => Some(total),
    };
    let run = |eta: Option<&[T]>| {
        let mut xg = vec![T::nan(); total];
        let mut dg = vec![T::nan(); total];
        let mut eg = vec![f64::NAN; rows];
        let mut lg = side_len(&case.lower).map(|k| vec![T::nan(); k]);
        let mut ug = side_len(&case.upper).map(|k| vec![T::nan(); k]);
        let grads = Grads {
            x: &mut xg,
            delta: &mut dg,
            eps: &mut eg,
            lower: lg.as_deref_mut(),
            upper: ug.as_deref_mut(),
        };
        let c = if of_y {
            Cotangent::Y(&cot)
        } else {
            Cotangent::Eta(&cot)
        };
        let res = vjp(&batch, &opts, eta, c, grads);
        (res, xg, dg, eg, lg, ug)
    };
    let describe = || describe_case(&case);
    let (res, xg, dg, eg, lg, ug) = run(None);
    let summary = match (res, &forward) {
        (Err(g), Err(w)) if &g == w => {
            return Ok(vec![feature(&[92, u32::from(of_y), error_code(&g)])]);
        }
        (Ok(s), Ok(w)) if &s == w => s,
        (res, _) => {
            return Err(format!(
                "vjp gave {res:?}, the forward {forward:?}\n{}",
                describe()
            ))
        }
    };
    let _ = summary;
    // rows whose forward is exact and whose cotangents T can hold
    let full: Vec<bool> = (0..rows)
        .map(|r| {
            let scaled = well_scaled(&case, r, eps_of(&case, r), &row_ref(&case, r));
            checked.full[r] && scaled && grads_in_range(&case, r, checked.eta[r].as_f64())
        })
        .collect();
    let all_full = full.iter().all(|&f| f);
    // finite cotangents in the rows the full invariant covers
    for r in 0..rows {
        if !full[r] {
            continue;
        }
        let row = r * n..(r + 1) * n;
        let bad = xg[row.clone()]
            .iter()
            .chain(&dg[row.clone()])
            .any(|v| !v.is_finite())
            || !eg[r].is_finite();
        if bad {
            return Err(format!("row {r}: non-finite cotangents\n{}", describe()));
        }
    }
    // the same bits when given the forward's eta (float64: the forward's eta is exact)
    if T::EPS < 1e-10 {
        let (res2, xg2, dg2, eg2, lg2, ug2) = run(Some(&checked.eta));
        res2.map_err(|e| format!("vjp with the forward's eta failed: {e:?}"))?;
        let eq_opt = |a: &Option<Vec<T>>, b: &Option<Vec<T>>| match (a, b) {
            (Some(a), Some(b)) => same_bits(a, b),
            (None, None) => true,
            _ => false,
        };
        let eps_same = eg.iter().zip(&eg2).all(|(a, b)| a.to_bits() == b.to_bits());
        let same = same_bits(&xg, &xg2)
            && same_bits(&dg, &dg2)
            && eps_same
            && eq_opt(&lg, &lg2)
            && eq_opt(&ug, &ug2);
        if !same {
            return Err(format!(
                "vjp differs when given the forward's eta\n{}",
                describe()
            ));
        }
    }
    let (_, rel, _) = tolerances::<T>();
    let tol = if T::EPS > 1e-10 { 1e-4 } else { 1e-9 };
    let close =
        |got: f64, want: f64, scale: f64| (got - want).abs() <= tol * scale + rel * want.abs();
    // delta scaling, per row
    for r in 0..rows {
        if !full[r] {
            continue;
        }
        // mag: the size of the terms before they cancel (perturb: eta * |ybar_j d_j| twice)
        let (mut sum, mut mag) = (0.0f64, 0.0f64);
        for j in r * n..(r + 1) * n {
            let t = case.delta[j].as_f64() * dg[j].as_f64();
            sum += t;
            mag += t.abs();
            let e = checked.eta[r].as_f64();
            if of_y && e > 0.0 {
                mag += 2.0 * e * (cot[j].as_f64() * case.delta[j].as_f64()).abs();
            }
        }
        let want = if of_y {
            0.0
        } else {
            -cot[r].as_f64() * checked.eta[r].as_f64()
        };
        if !close(sum, want, mag + want.abs()) {
            return Err(format!(
                "row {r}: sum delta * deltabar = {sum:?}, expected {want:?} (terms {mag:?})\n{}",
                describe()
            ));
        }
    }
    // translation, over the whole batch
    let side_ok = |side: &Side<T>| !matches!(side, Side::Scalar(v) if v.is_finite());
    let mut checked_shift = false;
    if all_full && rows > 0 && side_ok(&case.lower) && side_ok(&case.upper) {
        let parts = xg
            .iter()
            .chain(lg.iter().flatten())
            .chain(ug.iter().flatten())
            .map(|v| v.as_f64());
        let (sum, mag) = parts.fold((0.0, 0.0), |(s, m), v| (s + v, m + v.abs()));
        let want: f64 = if of_y {
            cot.iter().map(|v| v.as_f64()).sum()
        } else {
            0.0
        };
        if !close(sum, want, mag + want.abs()) {
            return Err(format!(
                "sum xbar + lowerbar + upperbar = {sum:?}, expected {want:?} (terms {mag:?})\n{}",
                describe()
            ));
        }
        checked_shift = true;
    }
    let mut f = checked.features;
    f.push(feature(&[
        93,
        u32::from(of_y),
        u32::from(given_eta),
        u32::from(checked_shift),
    ]));
    Ok(f)
}

// ---------------------------------------------------------------------------- projection

/// `project`: the case's `x` and box, `z = x + delta` (in `T`), `eps`, and `p` in {1, 2, inf}
/// (a decoded `p` outside them picks one). The invariant: the core reports exactly the error
/// the input deserves, else every row's `y` is finite and inside the box; and, for rows in a
/// moderate range (every magnitude within `2^+-LIM` or zero, see [`project_moderate`]):
/// `||y - x||_p <= eps` to the type's tolerance; `y = z` when `z` is inside the box and
/// strictly inside the ball; the ball is active (`||y - x||_p ~= eps`) when `clip(z)` lies
/// outside it; and `y` is optimal: `||y - z||_2` is no larger, to tolerance, than the
/// distance of an independent `f64` solution (the closed form for `p = inf`, bisection on
/// `t` in `clip(x + t d)` for `p = 2`, on the multiplier `lam` of `h(lam) = eps` for `p = 1`).
/// One thread gives the same bits as the global pool.
pub fn check_project(data: &[u8]) -> Result<Vec<u32>, String> {
    let mut inp = Input::new(data);
    if inp.byte() & 1 == 0 {
        check_project_typed::<f32>(&mut inp)
    } else {
        check_project_typed::<f64>(&mut inp)
    }
}

/// A norm of `project` for the decoded `p`: itself if it is 1, 2 or inf, else one chosen by
/// the next byte.
fn project_norm(p: f64, inp: &mut Input<'_>) -> (ProjectNorm, f64) {
    match ProjectNorm::new(p) {
        Some(norm) => (norm, p),
        None => [
            (ProjectNorm::L1, 1.0),
            (ProjectNorm::L2, 2.0),
            (ProjectNorm::Inf, f64::INFINITY),
        ][usize::from(inp.byte()) % 3],
    }
}

/// The error `project` must report, replaying its order of checks (lengths of `x`, `z`,
/// the output and the bounds; `eps`; then per element: `x` non-finite, else `z` non-finite,
/// else `x` outside its bounds).
fn project_expected_error<T: FuzzReal>(case: &Case<T>, z: &[T]) -> Option<CoreError> {
    let (rows, n) = (case.rows, case.n);
    let total = rows * n;
    let arrays = [
        ("x", total, case.x.len()),
        ("z", total, z.len()),
        ("out", total, case.y_len),
    ];
    if let Some(e) = expected_argument_error(case, &arrays) {
        return Some(e);
    }
    let mut found = [(0usize, usize::MAX); 3];
    for r in 0..rows {
        for j in 0..n {
            let i = r * n + j;
            let (lo, hi) = (case.lower.at(r, j, n), case.upper.at(r, j, n));
            let (x, zi) = (case.x[i], z[i]);
            let k = if !x.is_finite() {
                0
            } else if !zi.is_finite() {
                1
            } else if !(x >= lo && x <= hi) {
                2
            } else {
                continue;
            };
            found[k].0 += 1;
            found[k].1 = found[k].1.min(i);
        }
    }
    found_error(found, "z")
}

/// One row in `f64`: `x`, `z`, and the box.
struct ProjRow {
    x: Vec<f64>,
    z: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl ProjRow {
    fn of<T: FuzzReal>(case: &Case<T>, z: &[T], r: usize) -> ProjRow {
        let n = case.n;
        let f = |v: T| v.as_f64();
        ProjRow {
            x: (0..n).map(|j| f(case.x[r * n + j])).collect(),
            z: (0..n).map(|j| f(z[r * n + j])).collect(),
            lo: (0..n).map(|j| f(case.lower.at(r, j, n))).collect(),
            hi: (0..n).map(|j| f(case.upper.at(r, j, n))).collect(),
        }
    }

    fn clip(&self, j: usize, v: f64) -> f64 {
        v.max(self.lo[j]).min(self.hi[j])
    }
}

/// The `p`-size of a vector of magnitudes.
fn size_p(v: impl Iterator<Item = f64>, p: f64) -> f64 {
    if p == f64::INFINITY {
        v.fold(0.0, f64::max)
    } else if p == 1.0 {
        v.sum()
    } else {
        v.map(|a| a * a).sum::<f64>().sqrt()
    }
}

/// The projection of one row by an independent `f64` method (see [`check_project`]).
fn project_oracle(row: &ProjRow, eps: f64, p: f64) -> Vec<f64> {
    let n = row.x.len();
    let d: Vec<f64> = (0..n).map(|j| row.z[j] - row.x[j]).collect();
    if p == f64::INFINITY {
        return (0..n)
            .map(|j| row.clip(j, row.z[j].max(row.x[j] - eps).min(row.x[j] + eps)))
            .collect();
    }
    let bisect = |size: &dyn Fn(f64) -> f64, mut a: f64, mut b: f64, increasing: bool| {
        for _ in 0..200 {
            let m = 0.5 * (a + b);
            if m <= a || m >= b {
                break;
            }
            if (size(m) > eps) == increasing {
                b = m;
            } else {
                a = m;
            }
        }
        if increasing {
            a
        } else {
            b
        }
    };
    if p == 2.0 {
        let at =
            |t: f64| -> Vec<f64> { (0..n).map(|j| row.clip(j, row.x[j] + t * d[j])).collect() };
        let size = |t: f64| size_p(at(t).iter().zip(&row.x).map(|(y, x)| (y - x).abs()), 2.0);
        let t = if size(1.0) <= eps {
            1.0
        } else {
            bisect(&size, 0.0, 1.0, true)
        };
        return at(t);
    }
    // p = 1: y_j = x_j + sign(d_j) min(max(|d_j| - lam, 0), room_j)
    let room: Vec<f64> = (0..n)
        .map(|j| {
            if d[j] > 0.0 {
                row.hi[j] - row.x[j]
            } else {
                row.x[j] - row.lo[j]
            }
        })
        .collect();
    let at = |lam: f64| -> Vec<f64> {
        (0..n)
            .map(|j| row.x[j] + d[j].signum() * (d[j].abs() - lam).max(0.0).min(room[j]))
            .collect()
    };
    let h = |lam: f64| {
        (0..n)
            .map(|j| (d[j].abs() - lam).max(0.0).min(room[j]))
            .sum::<f64>()
    };
    let top = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let lam = if h(0.0) <= eps {
        0.0
    } else {
        bisect(&h, 0.0, top, false)
    };
    at(lam)
}

/// The exponent bound of the moderate range of `T` (see [`project_moderate`]).
const fn project_lim<T: FuzzReal>() -> i32 {
    if T::EXP.2 < 200 {
        30
    } else {
        200
    }
}

/// Whether every magnitude of the row (`x`, `z`, the finite bounds, `eps`) is zero or within
/// `2^+-LIM`: no overflow of squares and sums, no loss to subnormals, so the tolerances below
/// are the type's rounding.
fn project_moderate<T: FuzzReal>(row: &ProjRow, eps: f64) -> bool {
    let lim = 2f64.powi(project_lim::<T>());
    let ok = |v: f64| v == 0.0 || v.is_infinite() || (v.abs() <= lim && v.abs() >= 1.0 / lim);
    ok(eps)
        && eps.is_finite()
        && [&row.x, &row.z, &row.lo, &row.hi]
            .iter()
            .all(|v| v.iter().all(|&a| ok(a)))
}

/// How long one `project` call may take before the check reports that it does not return
/// (a linear-time pass: milliseconds here, seconds under valgrind).
const PROJECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// `project` on a copy of the case in a thread of its own, waited for up to
/// [`PROJECT_DEADLINE`]: a call that never returns fails the check instead of hanging the
/// run (the thread is left behind; the process reports and ends).
fn project_with_deadline<T: FuzzReal>(
    case: &Case<T>,
    z: &[T],
    norm: ProjectNorm,
) -> Result<(Result<(), CoreError>, Vec<T>), String> {
    let (owned, z) = (case.clone(), z.to_vec());
    let (send, recv) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let batch = ProjectBatch {
            x: &owned.x,
            z: &z,
            rows: owned.rows,
            n: owned.n,
            lower: owned.lower.bound(),
            upper: owned.upper.bound(),
            eps: match &owned.eps {
                EpsArg::Scalar(e) => Eps::Scalar(*e),
                EpsArg::PerRow(v) => Eps::PerRow(v),
            },
            norm,
        };
        let mut y = vec![T::nan(); owned.y_len];
        let res = project(&batch, &mut y);
        let _ = send.send((res, y)); // the receiver is gone only after a timeout
    });
    recv.recv_timeout(PROJECT_DEADLINE).map_err(|_| {
        format!(
            "project did not return within {} s (p = {:?})\n{}",
            PROJECT_DEADLINE.as_secs(),
            norm,
            describe_case(case)
        )
    })
}

fn check_project_typed<T: FuzzReal>(inp: &mut Input<'_>) -> Result<Vec<u32>, String> {
    let case = decode::<T>(inp);
    let (norm, p) = project_norm(case.p, inp);
    let z: Vec<T> = case
        .x
        .iter()
        .zip(&case.delta)
        .map(|(&x, &d)| x + d)
        .collect();
    let batch = ProjectBatch {
        x: &case.x,
        z: &z,
        rows: case.rows,
        n: case.n,
        lower: case.lower.bound(),
        upper: case.upper.bound(),
        eps: match &case.eps {
            EpsArg::Scalar(e) => Eps::Scalar(*e),
            EpsArg::PerRow(v) => Eps::PerRow(v),
        },
        norm,
    };
    let describe = || format!("project p = {p}, z = {z:?}\n{}", describe_case(&case));
    let (got, y) = project_with_deadline(&case, &z, norm)?;
    let want = project_expected_error(&case, &z);
    let dt = u32::from(T::EPS < 1e-10);
    let pk = match norm {
        ProjectNorm::L1 => 0,
        ProjectNorm::L2 => 1,
        ProjectNorm::Inf => 2,
    };
    let mut features = vec![feature(&[
        101,
        dt,
        pk,
        case.lower.kind(),
        case.upper.kind(),
        got.as_ref().err().map_or(0, error_code),
    ])];
    match (&got, &want) {
        (Err(g), Some(w)) if g == w => return Ok(features),
        (Ok(()), None) => {}
        _ => {
            return Err(format!(
                "project returned {got:?}, expected {want:?}\n{}",
                describe()
            ))
        }
    }
    let (tol, _, margin) = tolerances::<T>();
    let n = case.n;
    for r in 0..case.rows {
        let row = ProjRow::of(&case, &z, r);
        let eps = eps_of(&case, r);
        let yr: Vec<f64> = y[r * n..(r + 1) * n].iter().map(|v| v.as_f64()).collect();
        for (j, &yj) in yr.iter().enumerate() {
            if !(yj.is_finite() && yj >= row.lo[j] && yj <= row.hi[j]) {
                return Err(format!(
                    "row {r}: y[{j}] = {} is not finite inside [{}, {}]\n{}",
                    yj,
                    row.lo[j],
                    row.hi[j],
                    describe()
                ));
            }
        }
        if !(project_moderate::<T>(&row, eps) || strict()) {
            features.push(feature(&[102, dt, pk]));
            continue;
        }
        // rounding of one element of `y`, `x`, `z` in T (and the subnormal floor)
        let slack: Vec<f64> = (0..n)
            .map(|j| 4.0 * T::EPS * (row.x[j].abs() + row.z[j].abs() + yr[j].abs()) + 1e-300)
            .collect();
        let slack_p = size_p(slack.iter().copied(), p);
        let moved = size_p((0..n).map(|j| (yr[j] - row.x[j]).abs()), p);
        let fail = |what: &str| {
            Err(format!(
                "row {r} (eps {eps}, |y - x|_p {moved}): {what}\n{}",
                describe()
            ))
        };
        if moved > eps * (1.0 + tol) + slack_p {
            return fail("y outside the ball");
        }
        let dist_z = size_p((0..n).map(|j| (row.z[j] - row.x[j]).abs()), p);
        let z_in_box = (0..n).all(|j| row.z[j] >= row.lo[j] && row.z[j] <= row.hi[j]);
        let feasible = z_in_box && dist_z + slack_p < eps * (1.0 - margin);
        if feasible && (0..n).any(|j| (yr[j] - row.z[j]).abs() > slack[j]) {
            return fail("z is feasible but y differs from it");
        }
        let clip_size = size_p((0..n).map(|j| (row.clip(j, row.z[j]) - row.x[j]).abs()), p);
        let active = clip_size > eps * (1.0 + margin) + slack_p;
        if active && moved < eps * (1.0 - margin) - slack_p {
            return fail("clip(z) is outside the ball but y is strictly inside it");
        }
        let oracle = project_oracle(&row, eps, p);
        let dist = |v: &[f64]| size_p((0..n).map(|j| (v[j] - row.z[j]).abs()), 2.0);
        let (d_core, d_oracle) = (dist(&yr), dist(&oracle));
        // the oracle's point to rounding, and the core's to its size tolerance
        let scale = size_p(slack.iter().copied(), 2.0)
            + margin
                * (eps * (n as f64).sqrt()
                    + size_p(row.z.iter().zip(&row.x).map(|(a, b)| (a - b).abs()), 2.0));
        if d_core > d_oracle + scale {
            return fail(&format!(
                "not the closest point: |y - z| = {d_core}, the oracle's {d_oracle} (slack {scale})"
            ));
        }
        features.push(feature(&[
            103,
            dt,
            pk,
            u32::from(feasible),
            u32::from(active),
        ]));
    }
    if let Some(pool) = single_thread_pool() {
        let mut y1 = vec![T::nan(); case.y_len];
        pool.install(|| project(&batch, &mut y1))
            .map_err(|e| format!("one-thread project failed with {e:?}"))?;
        if !same_bits(&y, &y1) {
            return Err(format!("thread count changed the bits\n{}", describe()));
        }
    }
    Ok(features)
}
