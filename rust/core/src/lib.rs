//! Exact clipping-aware rescaling.
//!
//! Given `x` in a box `[lower, upper]`, a direction `delta` and a size `eps`, find the scale
//! `eta >= 0` with `||clip(x + eta * delta, lower, upper) - x||_p = eps`, for any real `p > 0`
//! or `p = inf`, per vector of a batch. Linear time on typical data (variable fixing on
//! `t = eta^p`), `O(n)` per level of a radix-select safeguard in the worst case, parallel over
//! vectors and inside long vectors, bitwise deterministic for any thread count.
//!
//! This crate has no Python in it; `clipresc-py` binds it.

// The shared test helpers (`tests/common`) name the crate, also from its unit tests.
#[cfg(test)]
extern crate self as clipresc_core;

mod adversary;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod batch;
mod bounds;
mod error;
mod fastpow;
// `multiversion!` (AVX2+FMA dispatch of the lane loops) is also used by `vjp`
#[macro_use]
mod kernel;
mod keystream;
mod noise;
mod norm;
mod par;
mod project;
mod real;
mod safeguard;
mod simd;
#[cfg(target_arch = "x86_64")]
mod simd_kernels;
mod solve;
mod visit;
// before `vjp`, which uses its macro
#[macro_use]
mod vjp_simd;
mod vjp;
mod ziggurat;

pub use adversary::newton_adversary;
pub use batch::{perturb, scale, solve_stats, Batch, Eps, Summary, STREAM_MIN_BYTES};
pub use bounds::Bound;
pub use error::CoreError;
pub use noise::{noise, sample, Distribution, NoiseBatch, NoiseSpec, Seed, NOISE_BLOCK};
pub use norm::Norm;
pub use project::{
    project, project_row_searches, project_vjp, project_vjp_given, project_with_multipliers,
    ProjectBatch, ProjectGrads, ProjectNorm,
};
pub use real::Real;
pub use solve::{Options, RowOutcome};
pub use vjp::{perturb_vjp, perturb_vjp_in_place, scale_vjp, vjp, Cotangent, Grads};
