//! Quick timing of the core on the 64x3x224x224 f32 workload: `cargo run --release --example speed`.
#[path = "../tests/common/mod.rs"]
mod common;

use clipresc_core::{perturb, scale, Batch, Options};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let (rows, n) = (64usize, 3 * 224 * 224);
    let (x, d) = common::image_batch(rows, n);
    let mut o = vec![0f32; rows * n];
    let mut eta = vec![0f32; rows];
    let time = |f: &mut dyn FnMut()| {
        f();
        median(
            (0..15)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let floor = time(&mut || {
        use rayon::prelude::*;
        o.par_chunks_mut(n).enumerate().for_each(|(r, oc)| {
            for i in 0..n {
                oc[i] = x[r * n + i] + d[r * n + i];
            }
        })
    });
    println!("floor {:.2} ms", floor * 1e3);
    for p in [2.0, 1.0, f64::INFINITY] {
        let b = common::unit_box_batch((&x, &d), rows, n, 50.0 * 0.3, p);
        let ts = time(&mut || {
            scale(&b, &Options::default(), &mut eta).unwrap();
        });
        let tp = time(&mut || {
            perturb(&b, &Options::default(), &mut o, &mut eta).unwrap();
        });
        let st = clipresc_core::solve_stats(
            &Batch {
                rows: 4,
                x: &x[..4 * n],
                delta: &d[..4 * n],
                ..b
            },
            &Options::default(),
        )
        .unwrap();
        println!(
            "{:?}",
            st.iter()
                .map(|o| (o.passes, o.safeguard))
                .collect::<Vec<_>>()
        );
        println!("p={p}: scale {:.2}x perturb {:.2}x", ts / floor, tp / floor);
    }
}
