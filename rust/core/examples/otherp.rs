//! Where the time goes for `p` outside {1, 2, inf} on the benchmark's workloads (x uniform
//! in [0, 1), delta standard normal, its `eps`): passes per row and time per element.
//! `cargo run --release --example otherp [-- WORKLOAD_SUBSTR [P]]`; WORKLOAD_SUBSTR `adv`:
//! `scale` on the Newton adversary (tiled) against `scale` on the typical rows, per element.
#[path = "../tests/common/mod.rs"]
mod common;

use clipresc_core::{
    newton_adversary, perturb, scale, solve_stats, Batch, Bound, Eps, Norm, Options, Real,
};
use common::Rng;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn run<T: Real>(name: &str, rows: usize, n: usize, eps: f64, ps: &[f64]) {
    let mut r = Rng(12345);
    let x: Vec<T> = (0..rows * n).map(|_| T::of_f64(r.next())).collect();
    let d: Vec<T> = (0..rows * n).map(|_| T::of_f64(r.normal())).collect();
    let mut o = vec![T::zero(); rows * n];
    let mut eta = vec![T::zero(); rows];
    let time = |f: &mut dyn FnMut()| {
        f();
        median(
            (0..7)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let floor = time(&mut || {
        for i in 0..o.len() {
            o[i] = x[i] + d[i];
        }
    });
    for &p in ps {
        let b = Batch {
            x: &x,
            delta: &d,
            rows,
            n,
            lower: Bound::Scalar(T::zero()),
            upper: Bound::Scalar(T::one()),
            eps: Eps::Scalar(eps),
            norm: Norm::new(p).unwrap(),
        };
        let st = solve_stats(&b, &Options::default()).unwrap();
        let mut hist = std::collections::BTreeMap::new();
        for s in &st {
            *hist
                .entry((s.passes, s.safeguard, s.saturated))
                .or_insert(0usize) += 1;
        }
        let tp = time(&mut || {
            perturb(&b, &Options::default(), &mut o, &mut eta).unwrap();
        });
        println!(
            "{name} p={p}: perturb {:.2} ms = {:.2}x serial floor, {:.2} ns/elem; (passes, safeguard, saturated) -> rows {:?}",
            tp * 1e3,
            tp / floor,
            tp * 1e9 / (rows * n) as f64,
            hist
        );
    }
}

/// `scale` on the adversary tiled to `rows` rows against `scale` on typical rows.
fn adversary<T: Real>(name: &str, rows: usize, n: usize, eps: f64, p: f64) {
    let (xa, da, eps_a, _) = newton_adversary(n, p);
    let tile = |v: &[f64]| -> Vec<T> {
        (0..rows)
            .flat_map(|_| v.iter().map(|&e| T::of_f64(e)))
            .collect()
    };
    let (xa, da) = (tile(&xa), tile(&da));
    let mut r = Rng(12345);
    let x: Vec<T> = (0..rows * n).map(|_| T::of_f64(r.next())).collect();
    let d: Vec<T> = (0..rows * n).map(|_| T::of_f64(r.normal())).collect();
    let mut eta = vec![T::zero(); rows];
    fn batch<'a, T: Real>(x: &'a [T], d: &'a [T], rows: usize, e: f64, p: f64) -> Batch<'a, T> {
        Batch {
            x,
            delta: d,
            rows,
            n: x.len() / rows,
            lower: Bound::Scalar(T::zero()),
            upper: Bound::Scalar(T::one()),
            eps: Eps::Scalar(e),
            norm: Norm::new(p).unwrap(),
        }
    }
    let (typ, adv) = (batch(&x, &d, rows, eps, p), batch(&xa, &da, rows, eps_a, p));
    let mut time = |b: &Batch<'_, T>| {
        median(
            (0..9)
                .map(|_| {
                    let t = Instant::now();
                    scale(b, &Options::default(), &mut eta).unwrap();
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let (tt, ta) = (time(&typ), time(&adv));
    let st = solve_stats(&adv, &Options::default()).unwrap();
    let mut hist = std::collections::BTreeMap::new();
    for s in &st {
        *hist.entry((s.passes, s.safeguard)).or_insert(0usize) += 1;
    }
    println!(
        "{name} p={p} adversary: {:.2}x typical scale ({:.2} vs {:.2} ms); (passes, safeguard) -> rows {hist:?}",
        ta / tt,
        ta * 1e3,
        tt * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pick = args.get(1).cloned().unwrap_or_default();
    if pick == "adv" {
        for p in [1.0, 2.0] {
            adversary::<f32>("64x3x224x224 f32", 64, 150528, 50.0, p);
            adversary::<f32>("1024x3x32x32 f32", 1024, 3072, 10.0, p);
            adversary::<f64>("4096x784 f64", 4096, 784, 3.6, p);
        }
        return;
    }
    let ps: Vec<f64> = match args.get(2) {
        Some(p) => vec![p.parse().unwrap()],
        None => vec![0.5, 1.5, 3.0, 2.0],
    };
    if "64x3x224x224 f32".contains(&pick) {
        run::<f32>("64x3x224x224 f32", 64, 150528, 50.0, &ps);
    }
    if "1024x3x32x32 f32".contains(&pick) {
        run::<f32>("1024x3x32x32 f32", 1024, 3072, 10.0, &ps);
    }
    if "4096x784 f64".contains(&pick) {
        run::<f64>("4096x784 f64", 4096, 784, 3.6, &ps);
    }
}
