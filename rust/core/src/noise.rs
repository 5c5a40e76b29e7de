//! Seeded noise drawn inside the core and rescaled, fused, to an exact size after clipping.
//!
//! [`noise`] writes `y = clip(x + eta * n, lower, upper)` with `n` drawn from a
//! [`Distribution`] and `eta` chosen so that `||y - x||_p = eps` per row. Each row is done in
//! place in the output buffer: the noise is written into the row of `y`, the solver runs
//! with that row as `delta`, and the clip is applied over it. No full-size temporary exists.
//!
//! # The stream layout (what makes the noise reproducible)
//!
//! The generator is ChaCha8 (`rand_chacha`), a counter-based stream cipher: any position of
//! any stream can be reached in O(1). Element `j` of global row `r` is produced by the
//! generator keyed with the 32-byte [`Seed`], on stream (nonce) `r`, from the word position
//! `(j / NOISE_BLOCK) << 40`, drawing sequentially inside its block of [`NOISE_BLOCK`]
//! elements. The value of an element therefore depends only on the seed, its global row
//! index (`row_offset + r`), its index in the row and the distribution: never on the
//! thread count, on how a batch is split into calls, or on the row length.
//!
//! Sampling (see `ziggurat.rs`): Gaussian noise is a 256-layer ziggurat, uniform noise is
//! symmetric on `(-1, 1)` and exact in the element type; both take one word per element
//! (`u32` for `f32`, `u64` for `f64`, drawn in bulk), so the float32 and float64 noise of a
//! seed differ. Laplace is a random sign times `rand_distr`'s `Exp1` ziggurat, Rademacher a
//! random sign; their signs come one bit each from a `u64` drawn every 64 elements, and both
//! are computed in `f64`, so their float32 noise is the float64 noise rounded.

use std::convert::Infallible;

use crate::batch::{summarise, trivial_outcomes, Batch, Eps, Summary};
use crate::bounds::Bound;
use crate::error::CoreError;
use crate::kernel::{apply_row_in_place, apply_row_in_place_wide, needs_wide_apply, Row};
use crate::keystream;
use crate::norm::{Norm, Power};
use crate::par::{for_chunks, map_items, Plan};
use crate::real::Real;
use crate::solve::{solve_row, solve_row_inf, Options, RowOutcome};
use crate::visit::{visit, RowJob, Sides};
use crate::ziggurat;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, TryRng};
use rand_distr::{Distribution as RandDistribution, Exp1};

/// Elements per independently positioned stretch of a row's noise stream. Part of the
/// stream layout: changing it changes the noise of every seed.
pub const NOISE_BLOCK: usize = 1 << 16;
/// `log2` of the words reserved in the stream for one block (far more than a block uses).
const BLOCK_WORD_SHIFT: u32 = 40;
/// Where, inside a block's words, the Gaussian chunks' extra (rejection) words start, and
/// `log2` of the words reserved for each chunk there.
const EXTRA_REGION: u128 = 1 << 39;
const EXTRA_SHIFT: u32 = 24;

/// The distribution the noise is drawn from (its scale is irrelevant: `eta` rescales it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Standard normal.
    Gaussian,
    /// Uniform on `[-1, 1]`.
    Uniform,
    /// Laplace (double exponential) with unit scale.
    Laplace,
    /// `-1` or `+1` with equal probability (sign noise).
    Rademacher,
}

impl Distribution {
    /// All distributions, in documentation order.
    pub const ALL: [Distribution; 4] = [
        Distribution::Gaussian,
        Distribution::Uniform,
        Distribution::Laplace,
        Distribution::Rademacher,
    ];

    /// The distribution called `name` (`"gaussian"`, `"uniform"`, `"laplace"`,
    /// `"rademacher"`).
    ///
    /// ```
    /// use clipresc_core::Distribution;
    /// assert_eq!(Distribution::from_name("laplace"), Some(Distribution::Laplace));
    /// assert_eq!(Distribution::from_name("cauchy"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Distribution> {
        Distribution::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The lower-case name of the distribution.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Gaussian => "gaussian",
            Distribution::Uniform => "uniform",
            Distribution::Laplace => "laplace",
            Distribution::Rademacher => "rademacher",
        }
    }
}

/// The 32-byte key of the noise stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seed(pub [u8; 32]);

impl Seed {
    /// A key holding `seed` in little-endian order in its first 8 bytes, zeros elsewhere.
    ///
    /// ```
    /// use clipresc_core::Seed;
    /// assert_eq!(Seed::from_u64(1).0[..2], [1, 0]);
    /// ```
    pub fn from_u64(seed: u64) -> Seed {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        Seed(key)
    }
}

/// What [`noise`] and [`sample`] draw: the distribution, the key and the global index of the
/// first row of the batch (so that a batch processed in pieces gets the same noise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseSpec {
    pub distribution: Distribution,
    pub seed: Seed,
    /// Global index of row 0 of this batch; row `r` uses stream `row_offset + r`.
    pub row_offset: u64,
}

/// `rows` points of length `n` (row-major, contiguous) to add noise to.
#[derive(Clone, Copy, Debug)]
pub struct NoiseBatch<'a, T> {
    pub x: &'a [T],
    pub rows: usize,
    pub n: usize,
    pub lower: Bound<'a, T>,
    pub upper: Bound<'a, T>,
    pub eps: Eps<'a>,
    pub norm: Norm,
    pub spec: NoiseSpec,
}

impl<'a, T: Real> NoiseBatch<'a, T> {
    /// The same problem as a [`Batch`] whose `delta` is `x` itself, for the shared length,
    /// `eps` and input checks (a non-finite `delta` would be a non-finite `x`, which is
    /// reported first, so the diagnosis is the one for `x`).
    fn as_batch(&self) -> Batch<'a, T> {
        Batch {
            x: self.x,
            delta: self.x,
            rows: self.rows,
            n: self.n,
            lower: self.lower,
            upper: self.upper,
            eps: self.eps,
            norm: self.norm,
        }
    }
}

/// Words of the stream fetched at a time by [`BufRng`].
const BUF_WORDS: usize = 64;

/// ChaCha8 read in bulk: `fill_bytes` into a small buffer, served one little-endian `u64`
/// at a time. It yields exactly the words of the underlying stream, in order, at a fraction
/// of the per-call cost of `ChaCha8Rng::next_u64`; reading ahead is harmless because every
/// block of noise has its own generator.
struct BufRng {
    rng: ChaCha8Rng,
    buf: [u8; 8 * BUF_WORDS],
    pos: usize,
}

/// The generator of stream `stream` of `seed`, positioned at block `block`.
fn chacha_at_block(seed: &Seed, stream: u64, block: usize) -> ChaCha8Rng {
    keystream::rng_at(&seed.0, stream, (block as u128) << BLOCK_WORD_SHIFT)
}

impl BufRng {
    fn new(rng: ChaCha8Rng) -> BufRng {
        BufRng {
            rng,
            buf: [0; 8 * BUF_WORDS],
            pos: BUF_WORDS,
        }
    }

    #[inline(always)]
    fn word(&mut self) -> u64 {
        if self.pos == BUF_WORDS {
            self.refill();
        }
        let i = 8 * self.pos;
        self.pos += 1;
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.buf[i..i + 8]);
        u64::from_le_bytes(w)
    }

    #[inline(never)]
    fn refill(&mut self) {
        self.rng.fill_bytes(&mut self.buf);
        self.pos = 0;
    }
}

impl TryRng for BufRng {
    type Error = Infallible;

    #[inline(always)]
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.word() as u32)
    }

    #[inline(always)]
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.word())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for c in dst.chunks_mut(8) {
            let w = self.word().to_le_bytes();
            c.copy_from_slice(&w[..c.len()]);
        }
        Ok(())
    }
}

/// Draws one block of noise (at most [`NOISE_BLOCK`] elements) into `out`.
fn fill_block<T: Real>(dist: Distribution, seed: &Seed, stream: u64, block: usize, out: &mut [T]) {
    match dist {
        Distribution::Gaussian | Distribution::Uniform => {
            // Chunk c of the block reads its bulk words at a fixed place (2 u32 words per
            // element reserved) and the ziggurat's extra words from its own region, so an
            // element's value never depends on the length of the chunk it falls in.
            let base = (block as u128) << BLOCK_WORD_SHIFT;
            let mut extra = chacha_at_block(seed, stream, block);
            let mut buf = [0u32; ziggurat::CHUNK_WORDS];
            for (c, chunk) in out.chunks_mut(ziggurat::CHUNK).enumerate() {
                let words = &mut buf[..ziggurat::words_for::<T>(chunk.len())];
                let pos = base + (2 * ziggurat::CHUNK * c) as u128;
                keystream::fill(&seed.0, stream, pos, words);
                if dist == Distribution::Gaussian {
                    extra.set_word_pos(base + EXTRA_REGION + ((c as u128) << EXTRA_SHIFT));
                    ziggurat::gaussian_chunk(&mut extra, words, chunk);
                } else {
                    ziggurat::uniform_chunk(words, chunk);
                }
            }
        }
        Distribution::Laplace => {
            let mut rng = BufRng::new(chacha_at_block(seed, stream, block));
            for group in out.chunks_mut(64) {
                let signs = rng.next_u64();
                for (k, o) in group.iter_mut().enumerate() {
                    let e: f64 = Exp1.sample(&mut rng);
                    *o = T::of_f64(f64::from_bits(e.to_bits() | ((signs >> k) & 1) << 63));
                }
            }
        }
        Distribution::Rademacher => {
            let mut rng = BufRng::new(chacha_at_block(seed, stream, block));
            for group in out.chunks_mut(64) {
                let bits = rng.next_u64();
                for (k, o) in group.iter_mut().enumerate() {
                    *o = T::of_f64(((bits >> k) & 1) as f64 * 2.0 - 1.0);
                }
            }
        }
    }
}

/// Draws the noise of one row (global index `stream`), its blocks in parallel when `par`.
fn fill_row<T: Real>(dist: Distribution, seed: &Seed, stream: u64, out: &mut [T], par: bool) {
    for_chunks(par, out, NOISE_BLOCK, |bi, o| {
        fill_block(dist, seed, stream, bi, o)
    });
}

/// Writes the raw noise of `rows` rows of length `n` into `out` (row-major): exactly the
/// `n` that [`noise`] rescales, so `noise(x)` equals `perturb(x, delta = sample(...))`.
///
/// ```
/// use clipresc_core::{sample, Distribution, NoiseSpec, Seed};
/// let spec = NoiseSpec { distribution: Distribution::Rademacher, seed: Seed::from_u64(7),
///     row_offset: 0 };
/// let mut all = [0.0f32; 6];
/// sample(&spec, 3, 2, &mut all).unwrap();
/// assert!(all.iter().all(|v| v.abs() == 1.0));
/// // row 2 alone, drawn with row_offset 2, is the same
/// let mut last = [0.0f32; 2];
/// sample(&NoiseSpec { row_offset: 2, ..spec }, 1, 2, &mut last).unwrap();
/// assert_eq!(last, all[4..]);
/// ```
pub fn sample<T: Real>(
    spec: &NoiseSpec,
    rows: usize,
    n: usize,
    out: &mut [T],
) -> Result<(), CoreError> {
    check_len("out", rows * n, out.len())?;
    if n == 0 {
        return Ok(());
    }
    let plan = Plan::new(rows, n);
    for_chunks(plan.rows, out, n, |r, o| {
        let stream = spec.row_offset.wrapping_add(r as u64);
        fill_row(spec.distribution, &spec.seed, stream, o, plan.inner)
    });
    Ok(())
}

fn check_len(arg: &'static str, expected: usize, got: usize) -> Result<(), CoreError> {
    if got != expected {
        return Err(CoreError::Length { arg, expected, got });
    }
    Ok(())
}

/// Draws noise `n` and writes `y = clip(x + eta * n, lower, upper)` into `y_out` with the
/// per-row `eta` (into `eta_out`) that makes `||y - x||_p = eps`, fused and in place.
///
/// The noise is that of [`sample`] with the same spec, so the result is bitwise
/// `perturb(x, delta = sample(...))`, and it is the same for any thread count and however
/// a batch is split into calls (give each piece its `row_offset`).
///
/// ```
/// use clipresc_core::{noise, Bound, Distribution, Eps, NoiseBatch, NoiseSpec, Norm, Options,
///     Seed};
/// let x = [0.5f64; 8];
/// let spec = NoiseSpec { distribution: Distribution::Gaussian, seed: Seed::from_u64(0),
///     row_offset: 0 };
/// let b = NoiseBatch { x: &x, rows: 2, n: 4, lower: Bound::Scalar(0.0),
///     upper: Bound::Scalar(1.0), eps: Eps::Scalar(0.25), norm: Norm::P(2.0), spec };
/// let (mut y, mut eta) = ([0.0f64; 8], [0.0f64; 2]);
/// noise(&b, &Options::default(), &mut y, &mut eta).unwrap();
/// for r in 0..2 {
///     let size: f64 = (0..4).map(|j| (y[4 * r + j] - 0.5).powi(2)).sum::<f64>().sqrt();
///     assert!((size - 0.25).abs() < 1e-12);
/// }
/// ```
pub fn noise<T: Real>(
    b: &NoiseBatch<'_, T>,
    opts: &Options,
    y_out: &mut [T],
    eta_out: &mut [T],
) -> Result<Summary, CoreError> {
    let shadow = b.as_batch();
    shadow.check()?;
    check_len("out", b.x.len(), y_out.len())?;
    check_len("eta", b.rows, eta_out.len())?;
    let job = NoiseJob { b, opts, y: y_out };
    let outcomes = visit(b.norm, b.lower, b.upper, b.n, job);
    if outcomes.iter().any(|o| o.invalid) {
        return Err(shadow.diagnose());
    }
    Ok(summarise(&outcomes, eta_out))
}

/// Per row: noise into the row of `y`, solve with it as `delta`, clip in place.
struct NoiseJob<'j, 'a, T> {
    b: &'j NoiseBatch<'a, T>,
    opts: &'j Options,
    y: &'j mut [T],
}

impl<T: Real> RowJob<T> for NoiseJob<'_, '_, T> {
    type Out = Vec<RowOutcome>;

    fn run<P: Power, L: Sides<T>, H: Sides<T>>(self, pw: Option<P>, lo: L, hi: H) -> Self::Out {
        let (b, opts) = (self.b, self.opts);
        let n = b.n;
        if let Some(outcomes) = trivial_outcomes(b.rows, n) {
            return outcomes;
        }
        let plan = Plan::new(b.rows, n);
        let spec = &b.spec;
        let rows: Vec<(usize, &mut [T])> = self.y.chunks_mut(n).enumerate().collect();
        map_items(plan.rows, rows, |(r, yrow)| {
            let stream = spec.row_offset.wrapping_add(r as u64);
            fill_row(spec.distribution, &spec.seed, stream, yrow, plan.inner);
            let x = &b.x[r * n..(r + 1) * n];
            let (lo, hi) = (lo.row(r), hi.row(r));
            let out = {
                let row = Row {
                    x,
                    d: &*yrow,
                    lo,
                    hi,
                };
                match pw {
                    Some(pw) => solve_row(&row, b.eps.get(r), pw, opts, plan.inner, 0.0),
                    None => solve_row_inf(&row, b.eps.get(r), plan.inner),
                }
            };
            if !out.invalid {
                if needs_wide_apply::<T>(out.eta) {
                    let parts = out.eta_parts.unwrap_or((out.eta, 0));
                    apply_row_in_place_wide(x, lo, hi, parts, yrow);
                } else {
                    apply_row_in_place(x, lo, hi, T::of_f64(out.eta), yrow, plan.inner);
                }
            }
            out
        })
    }
}
