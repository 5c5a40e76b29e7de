//! Wall-clock timing of `perturb` with per-element bounds against its floors, interleaved
//! rounds, medians (a shared machine): `cargo run --release --example elem -- [small|image|mnist]
//! [P] [ROUNDS]`. Prints, per round set, the single-threaded `o = x + d` (the benchmark's
//! floor), then `scale` and `perturb` with scalar, per-channel (`_ch`, one shared row) and
//! per-element (`_el`) bounds, as ratios to the floor.
#[path = "../tests/common/mod.rs"]
mod common;

use clipresc_core::{perturb, scale, Batch, Bound, Real};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn run<T: Real>(rows: usize, n: usize, eps: f64, p: f64, rounds: usize, x: Vec<T>, d: Vec<T>) {
    let (lo, hi) = (vec![T::zero(); rows * n], vec![T::one(); rows * n]);
    let mut o = vec![T::zero(); rows * n];
    let mut eta = vec![T::zero(); rows];
    let b = common::unit_box_batch((&x, &d), rows, n, eps, p);
    let b_el = Batch {
        lower: Bound::Full(&lo),
        upper: Bound::Full(&hi),
        ..b
    };
    let opts = clipresc_core::Options::default();
    let (lo_ch, hi_ch) = (vec![T::zero(); n], vec![T::one(); n]);
    let b_ch = Batch {
        lower: Bound::Shared(&lo_ch),
        upper: Bound::Shared(&hi_ch),
        ..b
    };
    let names = [
        "floor 1t",
        "scale",
        "scale_el",
        "perturb",
        "perturb_ch",
        "perturb_el",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        for (k, t) in times.iter_mut().enumerate() {
            let t0 = Instant::now();
            match k {
                0 => {
                    for ((o, &x), &d) in o.iter_mut().zip(&x).zip(&d) {
                        *o = x + d;
                    }
                }
                1 => drop(scale(&b, &opts, &mut eta).unwrap()),
                2 => drop(scale(&b_el, &opts, &mut eta).unwrap()),
                3 => drop(perturb(&b, &opts, &mut o, &mut eta).unwrap()),
                4 => drop(perturb(&b_ch, &opts, &mut o, &mut eta).unwrap()),
                _ => drop(perturb(&b_el, &opts, &mut o, &mut eta).unwrap()),
            }
            t.push(t0.elapsed().as_secs_f64());
        }
    }
    let meds: Vec<f64> = times.into_iter().map(median).collect();
    print!("floor {:.3} ms:", meds[0] * 1e3);
    for (name, m) in names.iter().zip(&meds).skip(1) {
        print!(" {name} {:.2}x", m / meds[0]);
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("small", |s| s.as_str());
    let p: f64 = args.get(2).map_or(2.0, |s| s.parse().unwrap());
    let rounds: usize = args.get(3).map_or(21, |s| s.parse().unwrap());
    match kind {
        "image" => {
            let (x, d) = common::image_batch(64, 150528);
            run::<f32>(64, 150528, 50.0, p, rounds, x, d)
        }
        "mnist" => {
            let (x, d) = common::image_batch(4096, 784);
            let wide = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(f64::from).collect() };
            run::<f64>(4096, 784, 3.6, p, rounds, wide(x), wide(d))
        }
        _ => {
            let (x, d) = common::image_batch(1024, 3072);
            run::<f32>(1024, 3072, 10.0, p, rounds, x, d)
        }
    }
}
