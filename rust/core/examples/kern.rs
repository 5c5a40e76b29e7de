//! Repeated core calls for `perf stat` (CPU time is steadier than wall time on a busy
//! machine): `cargo run --release --example kern -- MODE P REPS [small]` with MODE `scale`,
//! `perturb`, `noise` (Gaussian, fused) or `sample` (the raw Gaussian noise alone), or
//! `scale_el` / `perturb_el` (per-element bound arrays), `adv` (`scale` on the Newton
//! adversary, one per row; `KERN_PASSES` sets the Newton passes before the safeguard); any
//! other MODE times the plain `x + delta` loop. The fourth argument `small` times 1024 rows
//! of 3072 elements, `mnist` 4096 rows of 784 `f64` elements (`scale`, `perturb`,
//! `scale_el`, `perturb_el`); the default is 64 rows of 150528. `KERN_EPS` overrides the
//! size asked for (by default one that saturates p = 3 and above on image rows).
#[path = "../tests/common/mod.rs"]
mod common;

use clipresc_core::{
    noise, perturb, sample, scale, Batch, Bound, Distribution, NoiseBatch, NoiseSpec, Options, Seed,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("scale", |s| s.as_str()).to_string();
    let p: f64 = args.get(2).map_or(2.0, |s| s.parse().unwrap());
    let reps: usize = args.get(3).map_or(20, |s| s.parse().unwrap());
    let (rows, n) = match args.get(4).map(|s| s.as_str()) {
        Some("small") => (1024usize, 3 * 32 * 32),
        Some("mnist") => (4096usize, 784),
        _ => (64usize, 3 * 224 * 224),
    };
    if args.get(4).map(|s| s.as_str()) == Some("mnist") {
        let (x, d) = common::image_batch(rows, n);
        let wide = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(f64::from).collect() };
        return run_f64(&what, p, reps, rows, n, (wide(x), wide(d)));
    }
    let (x, d) = if what == "adv" {
        let (xa, da, _, _) = clipresc_core::newton_adversary(n, p);
        let tile = |v: &[f64]| -> Vec<f32> {
            (0..rows)
                .flat_map(|_| v.iter().map(|&e| e as f32))
                .collect()
        };
        (tile(&xa), tile(&da))
    } else {
        common::image_batch(rows, n)
    };
    let opts = Options {
        max_newton_passes: std::env::var("KERN_PASSES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Options::default().max_newton_passes),
    };
    let (lo_el, hi_el) = (vec![0f32; rows * n], vec![1f32; rows * n]);
    let mut o = vec![0f32; rows * n];
    let mut eta = vec![0f32; rows];
    let eps_env: Option<f64> = std::env::var("KERN_EPS").ok().and_then(|v| v.parse().ok());
    let eps = if let Some(e) = eps_env {
        e
    } else if what == "adv" {
        1.0
    } else if p.is_infinite() {
        0.3
    } else {
        50.0 * (n as f64 / 150528.0).sqrt()
    };
    let b = common::unit_box_batch((&x, &d), rows, n, eps, p);
    let b_el = Batch {
        lower: Bound::Full(&lo_el),
        upper: Bound::Full(&hi_el),
        ..b
    };
    let spec = NoiseSpec {
        distribution: Distribution::Gaussian,
        seed: Seed::from_u64(1),
        row_offset: 0,
    };
    let nb = NoiseBatch {
        x: &x,
        rows,
        n,
        lower: b.lower,
        upper: b.upper,
        eps: b.eps,
        norm: b.norm,
        spec,
    };
    for _ in 0..reps {
        match what.as_str() {
            "scale" | "adv" => drop(scale(&b, &opts, &mut eta).unwrap()),
            "perturb" => drop(perturb(&b, &Options::default(), &mut o, &mut eta).unwrap()),
            "noise" => drop(noise(&nb, &Options::default(), &mut o, &mut eta).unwrap()),
            "scale_el" => drop(scale(&b_el, &Options::default(), &mut eta).unwrap()),
            "perturb_el" => drop(perturb(&b_el, &Options::default(), &mut o, &mut eta).unwrap()),
            "sample" => sample(&spec, rows, n, &mut o).unwrap(),
            _ => {
                for i in 0..o.len() {
                    o[i] = x[i] + d[i];
                }
            }
        }
    }
    println!("{}", eta[0]);
}

/// The `f64` modes (`mnist`): eps 3.6 as in the benchmark.
fn run_f64(what: &str, p: f64, reps: usize, rows: usize, n: usize, (x, d): (Vec<f64>, Vec<f64>)) {
    let (lo_el, hi_el) = (vec![0f64; rows * n], vec![1f64; rows * n]);
    let mut o = vec![0f64; rows * n];
    let mut eta = vec![0f64; rows];
    let eps = if p.is_infinite() { 0.3 } else { 3.6 };
    let b = common::unit_box_batch((&x, &d), rows, n, eps, p);
    let b_el = Batch {
        lower: Bound::Full(&lo_el),
        upper: Bound::Full(&hi_el),
        ..b
    };
    let opts = Options::default();
    for _ in 0..reps {
        match what {
            "scale" => drop(scale(&b, &opts, &mut eta).unwrap()),
            "perturb" => drop(perturb(&b, &opts, &mut o, &mut eta).unwrap()),
            "scale_el" => drop(scale(&b_el, &opts, &mut eta).unwrap()),
            "perturb_el" => drop(perturb(&b_el, &opts, &mut o, &mut eta).unwrap()),
            _ => {
                for i in 0..o.len() {
                    o[i] = x[i] + d[i];
                }
            }
        }
    }
    println!("{}", eta[0]);
}
