//! scratch: project timing. `projspeed P ROWS N REPS`
use clipresc_core::{project, Bound, Eps, ProjectBatch, ProjectNorm};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let p: f64 = a[1].parse().unwrap();
    let rows: usize = a[2].parse().unwrap();
    let n: usize = a[3].parse().unwrap();
    let reps: usize = a[4].parse().unwrap();
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut u = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let x: Vec<f32> = (0..rows * n).map(|_| u() as f32).collect();
    let z: Vec<f32> = x
        .iter()
        .map(|&v| {
            let g = (0..4).map(|_| u()).sum::<f64>() - 2.0;
            v + (0.05 * g * 1.73) as f32
        })
        .collect();
    let eps: Vec<f64> = (0..rows)
        .map(|r| {
            let mut t = 0.0f64;
            let mut m: f64 = 0.0;
            for i in r * n..(r + 1) * n {
                let c = (z[i].clamp(0.0, 1.0) - x[i]) as f64;
                t += if p == 1.0 { c.abs() } else { c * c };
                m = m.max(c.abs());
            }
            0.5 * if p == 1.0 {
                t
            } else if p == 2.0 {
                t.sqrt()
            } else {
                m
            }
        })
        .collect();
    let pb = ProjectBatch {
        x: &x,
        z: &z,
        rows,
        n,
        lower: Bound::Scalar(0.0),
        upper: Bound::Scalar(1.0),
        eps: Eps::PerRow(&eps),
        norm: ProjectNorm::new(p).unwrap(),
    };
    let mut y = vec![0.0f32; rows * n];
    let mut o = vec![0.0f32; rows * n];
    let (mut tp, mut tf) = (vec![], vec![]);
    for _ in 0..reps {
        let t = Instant::now();
        project(&pb, &mut y).unwrap();
        tp.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for i in 0..rows * n {
            o[i] = x[i] + z[i];
        }
        std::hint::black_box(&o);
        tf.push(t.elapsed().as_secs_f64());
    }
    tp.sort_by(|a, b| a.partial_cmp(b).unwrap());
    tf.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let ck: f64 = y.iter().map(|&v| v as f64).sum();
    println!(
        "p={p} {rows}x{n}: project {:.3} ms  floor {:.3} ms  ratio {:.2}  checksum {ck:.6}",
        tp[reps / 2] * 1e3,
        tf[reps / 2] * 1e3,
        tp[reps / 2] / tf[reps / 2]
    );
}
