//! Repeated core calls for `perf stat` (cycles are steadier than wall time on a busy
//! machine): `cargo run --release --example kern -- scale 2 20`.
use clipresc_core::{perturb, scale, Batch, Bound, Eps, Norm, Options};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("scale", |s| s.as_str()).to_string();
    let p: f64 = args.get(2).map_or(2.0, |s| s.parse().unwrap());
    let reps: usize = args.get(3).map_or(20, |s| s.parse().unwrap());
    let (rows, n) = match args.get(4).map(|s| s.as_str()) {
        Some("small") => (1024usize, 3 * 32 * 32),
        _ => (64usize, 3 * 224 * 224),
    };
    let mut s = 88172645463325252u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let x: Vec<f32> = (0..rows * n).map(|_| next()).collect();
    // roughly Gaussian: sum of four uniforms, centred
    let d: Vec<f32> = (0..rows * n)
        .map(|_| (next() + next() + next() + next() - 2.0) * 1.7)
        .collect();
    let mut o = vec![0f32; rows * n];
    let mut eta = vec![0f32; rows];
    let eps = if p.is_infinite() {
        0.3
    } else {
        50.0 * (n as f64 / 150528.0).sqrt()
    };
    let b = Batch {
        x: &x,
        delta: &d,
        rows,
        n,
        lower: Bound::Scalar(0.0),
        upper: Bound::Scalar(1.0),
        eps: Eps::Scalar(eps),
        norm: Norm::new(p).unwrap(),
    };
    for _ in 0..reps {
        match what.as_str() {
            "scale" => drop(scale(&b, &Options::default(), &mut eta).unwrap()),
            "perturb" => drop(perturb(&b, &Options::default(), &mut o, &mut eta).unwrap()),
            _ => {
                for i in 0..o.len() {
                    o[i] = x[i] + d[i];
                }
            }
        }
    }
    println!("{}", eta[0]);
}
