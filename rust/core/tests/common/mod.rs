//! Helpers shared by the core's tests, its unit tests of the SIMD kernels and its examples:
//! a deterministic generator, synthetic data, the independent bisection oracle and thread
//! pools of a given size. Each user takes what it needs (`#[path]` for the unit tests and
//! examples), so some items go unused in each.
#![allow(dead_code)]

use clipresc_core::{Batch, Bound, Eps, Norm, Real};

/// xorshift64*: a tiny deterministic generator, independent of the code under test (the
/// tests need no extra crates).
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in `[0, 1)`.
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Points in `[0, 1]` with about a fifth of them exactly on a bound (saturation bites).
pub fn images<T: Real>(len: usize, seed: u64) -> Vec<T> {
    let mut r = Rng(seed.wrapping_mul(2654435761).wrapping_add(1));
    (0..len)
        .map(|_| {
            let u = r.next();
            T::of_f64(if u < 0.1 {
                0.0
            } else if u < 0.2 {
                1.0
            } else {
                r.next()
            })
        })
        .collect()
}

/// An image batch in `[0, 1]` and a roughly Gaussian direction (a centred sum of four
/// uniforms), `rows * n` elements each: the workload the examples time.
pub fn image_batch(rows: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let x = images::<f32>(rows * n, 1);
    let mut r = Rng(88172645463325252);
    let d = (0..rows * n)
        .map(|_| ((r.next() + r.next() + r.next() + r.next() - 2.0) * 1.7) as f32)
        .collect();
    (x, d)
}

/// Compensated summation, so the oracle's own rounding stays far below the tolerances.
pub fn neumaier_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut comp) = (0.0f64, 0.0f64);
    for v in values {
        let t = sum + v;
        comp += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    sum + comp
}

/// `||v||_p` of the moves `v`, compensated.
fn size_of(moved: impl Iterator<Item = f64>, p: f64) -> f64 {
    if p.is_infinite() {
        moved.fold(0.0, f64::max)
    } else {
        neumaier_sum(moved.map(|m| m.powf(p))).powf(1.0 / p)
    }
}

/// `||clip(x + eta d, lo, hi) - x||_p` with scalar bounds, in `f64`.
pub fn clipped_size(x: &[f64], d: &[f64], lo: f64, hi: f64, eta: f64, p: f64) -> f64 {
    let moved = x
        .iter()
        .zip(d)
        .map(|(&xi, &di)| ((xi + eta * di).clamp(lo, hi) - xi).abs());
    size_of(moved, p)
}

/// [`clipped_size`] with one `[lo_i, hi_i]` box per element.
pub fn clipped_size_boxes(x: &[f64], d: &[f64], lo: &[f64], hi: &[f64], eta: f64, p: f64) -> f64 {
    let moved = (0..x.len()).map(|i| ((x[i] + eta * d[i]).clamp(lo[i], hi[i]) - x[i]).abs());
    size_of(moved, p)
}

/// The smallest eta with `size(eta) >= eps`, for a nondecreasing `size`.
pub fn bisect(size: impl Fn(f64) -> f64, eps: f64) -> f64 {
    let mut hi_eta = 1.0;
    while size(hi_eta) < eps && hi_eta < 1e300 {
        hi_eta *= 2.0;
    }
    let mut lo_eta = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo_eta + hi_eta);
        if size(mid) < eps {
            lo_eta = mid;
        } else {
            hi_eta = mid;
        }
    }
    hi_eta
}

/// The smallest eta whose clipped size reaches eps, by bisection (independent of the core).
pub fn oracle(x: &[f64], d: &[f64], lo: f64, hi: f64, eps: f64, p: f64) -> f64 {
    bisect(|eta| clipped_size(x, d, lo, hi, eta, p), eps)
}

/// [`oracle`] with one box per element.
pub fn oracle_boxes(x: &[f64], d: &[f64], lo: &[f64], hi: &[f64], eps: f64, p: f64) -> f64 {
    bisect(|eta| clipped_size_boxes(x, d, lo, hi, eta, p), eps)
}

/// Runs `f` on a rayon pool of `threads` threads.
pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// The batch of `rows` vectors of length `n` in the box `[0, 1]`, one `eps` for all rows
/// (the examples' timing setup).
pub fn unit_box_batch<'a, T: Real>(
    (x, d): (&'a [T], &'a [T]),
    rows: usize,
    n: usize,
    eps: f64,
    p: f64,
) -> Batch<'a, T> {
    Batch {
        x,
        delta: d,
        rows,
        n,
        lower: Bound::Scalar(T::of_f64(0.0)),
        upper: Bound::Scalar(T::of_f64(1.0)),
        eps: Eps::Scalar(eps),
        norm: Norm::new(p).expect("a valid p"),
    }
}
