//! `project` against independent oracles: bisection on the ball's multiplier `lam` with
//! compensated sums (p = 1, 2), Dykstra's alternating projections between the ball and the
//! box on tiny cases (a generic solver of the constrained problem), the variational
//! inequality `(z - y) . (w - y) <= 0` for feasible `w`, the VJP against central finite
//! differences, edge cases, errors, f32, and determinism over thread counts.

// Explicit indices over parallel slices read like the formulas they check.
#![allow(clippy::needless_range_loop)]

use clipresc_core::{
    project, project_vjp, project_vjp_given, project_with_multipliers, Bound, CoreError, Eps,
    ProjectBatch, ProjectGrads, ProjectNorm,
};

/// xorshift64*: a tiny deterministic generator so the tests need no extra crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

const NORMS: [ProjectNorm; 3] = [ProjectNorm::L1, ProjectNorm::L2, ProjectNorm::Inf];

/// Neumaier-compensated sum.
fn ksum(v: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for a in v {
        let t = s + a;
        c += if s.abs() >= a.abs() {
            (s - t) + a
        } else {
            (a - t) + s
        };
        s = t;
    }
    s + c
}

fn size(y: &[f64], x: &[f64], norm: ProjectNorm) -> f64 {
    let it = y.iter().zip(x).map(|(a, b)| (a - b).abs());
    match norm {
        ProjectNorm::L1 => ksum(it),
        ProjectNorm::L2 => ksum(it.map(|v| v * v)).sqrt(),
        ProjectNorm::Inf => it.fold(0.0, f64::max),
    }
}

/// The minimiser of `(y - z)^2 / 2 + lam * pen(y - x)` on `[lo, hi]`, per coordinate.
fn y_of_lam(x: &[f64], z: &[f64], lo: &[f64], hi: &[f64], lam: f64, norm: ProjectNorm) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let d = z[i] - x[i];
            let v = match norm {
                ProjectNorm::L1 => x[i] + d.signum() * (d.abs() - lam).max(0.0),
                ProjectNorm::L2 => x[i] + d / (1.0 + lam),
                ProjectNorm::Inf => unreachable!(),
            };
            v.clamp(lo[i], hi[i])
        })
        .collect()
}

/// Oracle: bisection on `lam` (the size of `y(lam)` is non-increasing in `lam`).
fn oracle(x: &[f64], z: &[f64], lo: &[f64], hi: &[f64], eps: f64, norm: ProjectNorm) -> Vec<f64> {
    if norm == ProjectNorm::Inf {
        return (0..x.len())
            .map(|i| z[i].clamp(lo[i].max(x[i] - eps), hi[i].min(x[i] + eps)))
            .collect();
    }
    let at = |lam: f64| y_of_lam(x, z, lo, hi, lam, norm);
    if size(&at(0.0), x, norm) <= eps {
        return at(0.0);
    }
    let (mut a, mut b) = (0.0f64, 1.0f64);
    while size(&at(b), x, norm) > eps {
        b *= 2.0;
    }
    for _ in 0..200 {
        let m = 0.5 * (a + b);
        if m <= a || m >= b {
            break;
        }
        if size(&at(m), x, norm) > eps {
            a = m;
        } else {
            b = m;
        }
    }
    at(0.5 * (a + b))
}

/// Euclidean projection onto the ball alone (p = 1 by sorting, as in Duchi et al. 2008).
fn ball(v: &[f64], x: &[f64], eps: f64, norm: ProjectNorm) -> Vec<f64> {
    let d: Vec<f64> = v.iter().zip(x).map(|(a, b)| a - b).collect();
    let moved: Vec<f64> = match norm {
        ProjectNorm::Inf => d.iter().map(|v| v.clamp(-eps, eps)).collect(),
        ProjectNorm::L2 => {
            let r = d.iter().map(|v| v * v).sum::<f64>().sqrt();
            let f = if r > eps { eps / r } else { 1.0 };
            d.iter().map(|v| v * f).collect()
        }
        ProjectNorm::L1 => {
            if d.iter().map(|v| v.abs()).sum::<f64>() <= eps {
                d.clone()
            } else {
                let mut u: Vec<f64> = d.iter().map(|v| v.abs()).collect();
                u.sort_by(|a, b| b.total_cmp(a));
                let (mut cum, mut theta) = (0.0, 0.0);
                for (k, &uk) in u.iter().enumerate() {
                    cum += uk;
                    let t = (cum - eps) / (k + 1) as f64;
                    if uk > t {
                        theta = t;
                    }
                }
                d.iter()
                    .map(|v| v.signum() * (v.abs() - theta).max(0.0))
                    .collect()
            }
        }
    };
    moved.iter().zip(x).map(|(m, b)| b + m).collect()
}

/// Dykstra's alternating projections: converges to the projection onto the intersection.
fn dykstra(x: &[f64], z: &[f64], lo: &[f64], hi: &[f64], eps: f64, norm: ProjectNorm) -> Vec<f64> {
    let n = x.len();
    let (mut y, mut p, mut q) = (z.to_vec(), vec![0.0; n], vec![0.0; n]);
    for _ in 0..200_000 {
        let a: Vec<f64> = (0..n).map(|i| y[i] + p[i]).collect();
        let yb = ball(&a, x, eps, norm);
        for i in 0..n {
            p[i] = a[i] - yb[i];
        }
        let c: Vec<f64> = (0..n).map(|i| yb[i] + q[i]).collect();
        let yc: Vec<f64> = (0..n).map(|i| c[i].clamp(lo[i], hi[i])).collect();
        for i in 0..n {
            q[i] = c[i] - yc[i];
        }
        y = yc;
    }
    y
}

struct Case {
    x: Vec<f64>,
    z: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    eps: Vec<f64>,
    rows: usize,
    n: usize,
}

/// Random rows: per-element bounds (some infinite), `x` inside, `z` anywhere near, some
/// coordinates of `z` equal to `x`, eps from tiny to larger than any reachable size.
fn case(rng: &mut Rng, rows: usize, n: usize) -> Case {
    let mut c = Case {
        x: vec![],
        z: vec![],
        lo: vec![],
        hi: vec![],
        eps: vec![],
        rows,
        n,
    };
    for _ in 0..rows {
        for _ in 0..n {
            let lo = if rng.next() < 0.1 {
                f64::NEG_INFINITY
            } else {
                -rng.next()
            };
            let hi = if rng.next() < 0.1 {
                f64::INFINITY
            } else {
                rng.next()
            };
            let lo_f = if lo.is_finite() { lo } else { -1.0 };
            let hi_f = if hi.is_finite() { hi } else { 1.0 };
            let x = lo_f + (hi_f - lo_f) * rng.next();
            let z = if rng.next() < 0.1 {
                x
            } else {
                x + 1.5 * rng.normal()
            };
            c.x.push(x);
            c.z.push(z);
            c.lo.push(lo);
            c.hi.push(hi);
        }
        c.eps.push(match (rng.next() * 4.0) as u32 {
            0 => 0.01 * rng.next(),
            1 => rng.next(),
            2 => n as f64 * rng.next(),
            _ => 4.0 * n as f64,
        });
    }
    c
}

fn batch<'a>(c: &'a Case, norm: ProjectNorm) -> ProjectBatch<'a, f64> {
    ProjectBatch {
        x: &c.x,
        z: &c.z,
        rows: c.rows,
        n: c.n,
        lower: Bound::Full(&c.lo),
        upper: Bound::Full(&c.hi),
        eps: Eps::PerRow(&c.eps),
        norm,
    }
}

fn run(c: &Case, norm: ProjectNorm) -> Vec<f64> {
    let mut y = vec![0.0; c.x.len()];
    project(&batch(c, norm), &mut y).unwrap();
    y
}

/// `f()` on a rayon pool of `threads` threads.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn rows_of<'a>(c: &'a Case, v: &'a [f64], r: usize) -> [&'a [f64]; 5] {
    let s = r * c.n..(r + 1) * c.n;
    [
        &c.x[s.clone()],
        &c.z[s.clone()],
        &c.lo[s.clone()],
        &c.hi[s.clone()],
        &v[s],
    ]
}

#[test]
fn matches_bisection_oracle() {
    let mut rng = Rng(0x9E3779B97F4A7C15);
    for &n in &[1usize, 2, 3, 7, 64, 1000] {
        let c = case(&mut rng, 40, n);
        for norm in NORMS {
            let y = run(&c, norm);
            for r in 0..c.rows {
                let [x, z, lo, hi, yr] = rows_of(&c, &y, r);
                let want = oracle(x, z, lo, hi, c.eps[r], norm);
                let scale = 1.0
                    + z.iter()
                        .zip(x)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                for i in 0..n {
                    assert!(
                        (yr[i] - want[i]).abs() <= 1e-9 * scale,
                        "{norm:?} n={n} row {r} elem {i}: {} vs {}",
                        yr[i],
                        want[i]
                    );
                    assert!(yr[i] >= lo[i] && yr[i] <= hi[i]);
                }
                assert!(size(yr, x, norm) <= c.eps[r] * (1.0 + 1e-12) + 1e-12);
            }
        }
    }
}

#[test]
fn matches_dykstra_on_tiny_cases() {
    let mut rng = Rng(0xD1B54A32D192ED03);
    for n in 1..=4usize {
        let c = case(&mut rng, 12, n);
        for norm in NORMS {
            let y = run(&c, norm);
            for r in 0..c.rows {
                let [x, z, lo, hi, yr] = rows_of(&c, &y, r);
                let want = dykstra(x, z, lo, hi, c.eps[r], norm);
                for i in 0..n {
                    assert!(
                        (yr[i] - want[i]).abs() <= 1e-6,
                        "{norm:?} n={n} row {r}: {yr:?} vs {want:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn variational_inequality_holds() {
    let mut rng = Rng(0xA0761D6478BD642F);
    let c = case(&mut rng, 20, 50);
    for norm in NORMS {
        let y = run(&c, norm);
        for r in 0..c.rows {
            let [x, z, lo, hi, yr] = rows_of(&c, &y, r);
            for _ in 0..50 {
                // a feasible w: a random point of the box, pulled into the ball
                let raw: Vec<f64> = (0..c.n)
                    .map(|i| {
                        let (l, h) = (lo[i].max(x[i] - 2.0), hi[i].min(x[i] + 2.0));
                        l + (h - l) * rng.next()
                    })
                    .collect();
                let s = size(&raw, x, norm);
                let f = if s > c.eps[r] { c.eps[r] / s } else { 1.0 };
                let w: Vec<f64> = (0..c.n).map(|i| x[i] + f * (raw[i] - x[i])).collect();
                let ip = ksum((0..c.n).map(|i| (z[i] - yr[i]) * (w[i] - yr[i])));
                assert!(ip <= 1e-9, "{norm:?} row {r}: (z - y).(w - y) = {ip}");
            }
        }
    }
}

#[test]
fn edge_cases() {
    let x = [0.2f64, 0.5, 1.0];
    let lo = [0.0; 3];
    let hi = [1.0; 3];
    let b = |z: &'static [f64], eps: f64, norm| ProjectBatch {
        x: &x,
        z,
        rows: 1,
        n: 3,
        lower: Bound::Shared(&lo),
        upper: Bound::Shared(&hi),
        eps: Eps::Scalar(eps),
        norm,
    };
    for norm in NORMS {
        let mut y = [9.0; 3];
        // eps = 0: y = x
        project(&b(&[3.0, -1.0, 0.25], 0.0, norm), &mut y).unwrap();
        assert_eq!(y, x);
        // z == x: y = x
        project(&b(&[0.2, 0.5, 1.0], 0.3, norm), &mut y).unwrap();
        assert_eq!(y, x);
        // clip(z) inside the ball: y = clip(z), bit for bit
        project(&b(&[0.25, 0.45, 7.0], 0.2, norm), &mut y).unwrap();
        assert_eq!(y, [0.25, 0.45, 1.0]);
    }
}

#[test]
fn errors_name_the_argument() {
    let x = [0.2f64, f64::NAN, 0.5, 2.0];
    let z = [0.0f64, 0.0, f64::INFINITY, 0.0];
    let mk = |x: &'static [f64], z: &'static [f64], eps| ProjectBatch {
        x,
        z,
        rows: 2,
        n: 2,
        lower: Bound::Scalar(0.0),
        upper: Bound::Scalar(1.0),
        eps,
        norm: ProjectNorm::L1,
    };
    let mut y = [0.0; 4];
    let xs: &'static [f64] = Box::leak(Box::new(x));
    let zs: &'static [f64] = Box::leak(Box::new(z));
    assert_eq!(
        project(&mk(xs, zs, Eps::Scalar(1.0)), &mut y),
        Err(CoreError::NonFinite {
            arg: "x",
            count: 1,
            first: 1
        })
    );
    let xs2: &'static [f64] = &[0.2, 0.3, 0.5, 2.0];
    assert_eq!(
        project(&mk(xs2, zs, Eps::Scalar(1.0)), &mut y),
        Err(CoreError::NonFinite {
            arg: "z",
            count: 1,
            first: 2
        })
    );
    let zs2: &'static [f64] = &[0.0; 4];
    assert_eq!(
        project(&mk(xs2, zs2, Eps::Scalar(1.0)), &mut y),
        Err(CoreError::OutOfBounds { count: 1, first: 3 })
    );
    let xs3: &'static [f64] = &[0.2, 0.3, 0.5, 0.7];
    assert!(matches!(
        project(&mk(xs3, zs2, Eps::PerRow(&[1.0, -1.0])), &mut y),
        Err(CoreError::BadEps { first: 1, .. })
    ));
    assert!(matches!(
        project(&mk(xs3, zs2, Eps::Scalar(1.0)), &mut y[..3]),
        Err(CoreError::Length { arg: "out", .. })
    ));
}

#[test]
fn float32_is_close_to_the_float64_oracle() {
    let mut rng = Rng(0x1234567);
    let c = case(&mut rng, 16, 300);
    let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let (x, z, lo, hi) = (f(&c.x), f(&c.z), f(&c.lo), f(&c.hi));
    // x rounded to f32 may leave its rounded bounds' interior only by rounding: clamp it
    let x: Vec<f32> = (0..x.len()).map(|i| x[i].clamp(lo[i], hi[i])).collect();
    for norm in NORMS {
        let b = ProjectBatch {
            x: &x,
            z: &z,
            rows: c.rows,
            n: c.n,
            lower: Bound::Full(&lo),
            upper: Bound::Full(&hi),
            eps: Eps::PerRow(&c.eps),
            norm,
        };
        let mut y = vec![0.0f32; x.len()];
        project(&b, &mut y).unwrap();
        let w = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let (x64, z64, lo64, hi64) = (w(&x), w(&z), w(&lo), w(&hi));
        for r in 0..c.rows {
            let s = r * c.n..(r + 1) * c.n;
            let want = oracle(
                &x64[s.clone()],
                &z64[s.clone()],
                &lo64[s.clone()],
                &hi64[s.clone()],
                c.eps[r],
                norm,
            );
            for (i, j) in s.enumerate() {
                let tol = 4e-6 * (1.0 + z64[j].abs() + x64[j].abs());
                assert!(
                    (y[j] as f64 - want[i]).abs() <= tol,
                    "{norm:?} {} vs {}",
                    y[j],
                    want[i]
                );
            }
        }
    }
}

#[test]
fn l1_worst_case_breakpoints_still_exact() {
    // many equal and nearly equal breakpoints, saturation everywhere at lam = 0
    let n = 5000;
    let x: Vec<f64> = (0..n)
        .map(|i| 0.5 + 0.4 * ((i % 7) as f64 / 7.0 - 0.5))
        .collect();
    let z: Vec<f64> = (0..n)
        .map(|i| x[i] + if i % 2 == 0 { 3.0 } else { -3.0 } * (1.0 + (i % 3) as f64 * 1e-12))
        .collect();
    let (lo, hi) = (vec![0.0; n], vec![1.0; n]);
    for eps in [1e-9, 1.0, 100.0, 1000.0, 2000.0] {
        let b = ProjectBatch {
            x: &x,
            z: &z,
            rows: 1,
            n,
            lower: Bound::Scalar(0.0),
            upper: Bound::Scalar(1.0),
            eps: Eps::Scalar(eps),
            norm: ProjectNorm::L1,
        };
        let mut y = vec![0.0; n];
        project(&b, &mut y).unwrap();
        let want = oracle(&x, &z, &lo, &hi, eps, ProjectNorm::L1);
        for i in 0..n {
            assert!((y[i] - want[i]).abs() < 1e-9, "eps {eps} elem {i}");
        }
    }
}

#[test]
fn vjp_matches_finite_differences() {
    let mut rng = Rng(0x51F15E);
    let c = case(&mut rng, 30, 9);
    for norm in NORMS {
        let n = c.n;
        let ybar: Vec<f64> = (0..c.x.len()).map(|_| rng.normal()).collect();
        let (mut gx, mut gz, mut ge) = (
            vec![0.0; c.x.len()],
            vec![0.0; c.x.len()],
            vec![0.0; c.rows],
        );
        project_vjp(
            &batch(&c, norm),
            &ybar,
            ProjectGrads {
                x: &mut gx,
                z: &mut gz,
                eps: &mut ge,
            },
        )
        .unwrap();
        let loss = |c: &Case| ksum(run(c, norm).iter().zip(&ybar).map(|(a, b)| a * b));
        let h = 1e-7;
        for r in 0..c.rows {
            // skip rows that sit within h of a kink: finite differences are meaningless there
            let fd = |which: usize, i: usize| {
                let mut p = Case {
                    x: c.x.clone(),
                    z: c.z.clone(),
                    lo: c.lo.clone(),
                    hi: c.hi.clone(),
                    eps: c.eps.clone(),
                    rows: c.rows,
                    n,
                };
                let mut m = Case {
                    x: c.x.clone(),
                    z: c.z.clone(),
                    lo: c.lo.clone(),
                    hi: c.hi.clone(),
                    eps: c.eps.clone(),
                    rows: c.rows,
                    n,
                };
                match which {
                    0 => {
                        p.x[i] += h;
                        m.x[i] -= h;
                    }
                    1 => {
                        p.z[i] += h;
                        m.z[i] -= h;
                    }
                    _ => {
                        p.eps[i] += h;
                        m.eps[i] = (m.eps[i] - h).max(0.0);
                    }
                }
                let valid =
                    |k: &Case| (0..k.x.len()).all(|j| k.x[j] >= k.lo[j] && k.x[j] <= k.hi[j]);
                if !valid(&p) || !valid(&m) || c.eps[r] < 2.0 * h {
                    return None;
                }
                let (lp, l0, lm) = (loss(&p), loss(&c), loss(&m));
                // a kink between the two sides: one-sided slopes disagree
                let (a, b) = ((lp - l0) / h, (l0 - lm) / h);
                if (a - b).abs() > 1e-4 * (1.0 + a.abs()) {
                    return None;
                }
                Some((lp - lm) / (2.0 * h))
            };
            let mut checked = 0;
            for j in 0..n {
                let i = r * n + j;
                for (which, got) in [(0, gx[i]), (1, gz[i])] {
                    if let Some(want) = fd(which, i) {
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{norm:?} row {r} {} {j}: {got} vs {want}",
                            ["x", "z"][which]
                        );
                        checked += 1;
                    }
                }
            }
            if let Some(want) = fd(2, r) {
                assert!(
                    (ge[r] - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{norm:?} row {r} eps: {} vs {want}",
                    ge[r]
                );
            }
            assert!(checked > 0 || n == 0);
        }
    }
}

#[test]
fn bitwise_identical_for_any_thread_count() {
    let mut rng = Rng(77);
    let c = case(&mut rng, 64, 2048);
    for norm in NORMS {
        let runs: Vec<Vec<u64>> = [1usize, 2, 3, 8]
            .iter()
            .map(|&t| {
                let y = on_threads(t, || run(&c, norm));
                y.iter().map(|v| v.to_bits()).collect()
            })
            .collect();
        assert!(runs.windows(2).all(|w| w[0] == w[1]), "{norm:?}");
    }
}

/// Rows alike (images of one distribution, sizes a few percent apart) run in groups where
/// each row's search starts from the previous row's answer: short rows in groups of up to
/// 16, long ones too (once there are 32 of them). Every row against the oracle, hinted ones
/// and the ones whose hint misses alike, with the same bits for any thread count.
#[test]
fn rows_in_groups_match_the_oracle_for_any_thread_count() {
    let mut rng = Rng(79);
    for (rows, n) in [(192usize, 96usize), (40, 8192)] {
        let mut c = case(&mut rng, rows, n);
        // an image-like box and PGD-like steps, so that neighbouring rows are alike
        for i in 0..rows * n {
            c.lo[i] = 0.0;
            c.hi[i] = 1.0;
            c.x[i] = rng.next();
            c.z[i] = c.x[i] + 0.05 * rng.normal();
        }
        for norm in NORMS {
            for r in 0..rows {
                let (x, z) = (&c.x[r * n..(r + 1) * n], &c.z[r * n..(r + 1) * n]);
                let moved: Vec<f64> = z.iter().map(|v| v.clamp(0.0, 1.0)).collect();
                // half the clipped step's size, times 1 +- 4% (one row in eight: +- 40%)
                let spread = if r % 8 == 5 { 0.8 } else { 0.08 };
                c.eps[r] = 0.5 * size(&moved, x, norm) * (1.0 + spread * (rng.next() - 0.5));
            }
            let runs: Vec<Vec<f64>> = [1usize, 2, 3]
                .iter()
                .map(|&t| on_threads(t, || run(&c, norm)))
                .collect();
            let bits = |y: &[f64]| y.iter().map(|v| v.to_bits()).collect::<Vec<u64>>();
            assert!(
                runs.windows(2).all(|w| bits(&w[0]) == bits(&w[1])),
                "{norm:?} {rows}x{n}"
            );
            for r in 0..rows {
                let [x, z, lo, hi, yr] = rows_of(&c, &runs[0], r);
                let want = oracle(x, z, lo, hi, c.eps[r], norm);
                for i in 0..n {
                    assert!(
                        (yr[i] - want[i]).abs() <= 1e-9,
                        "{norm:?} {rows}x{n} row {r} elem {i}: {} vs {}",
                        yr[i],
                        want[i]
                    );
                }
            }
        }
    }
}

/// Long rows run their passes in parallel blocks: the same bits for any thread count, for
/// every norm, with per-element bounds and with scalar ones.
#[test]
fn long_rows_bitwise_identical_for_any_thread_count() {
    let mut rng = Rng(78);
    let mut c = case(&mut rng, 2, 300_000);
    // sizes that the ball constrains (the generator's eps are mostly far from n)
    c.eps = vec![3_000.0, 40_000.0];
    for norm in NORMS {
        for scalar in [false, true] {
            let runs: Vec<Vec<u64>> = [1usize, 2, 3]
                .iter()
                .map(|&t| {
                    let mut b = batch(&c, norm);
                    let mut x = c.x.clone();
                    if scalar {
                        b.lower = Bound::Scalar(-1.0);
                        b.upper = Bound::Scalar(1.0);
                        // x inside the scalar box
                        x.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
                    }
                    let b = ProjectBatch { x: &x, ..b };
                    let mut y = vec![0.0; c.x.len()];
                    on_threads(t, || project(&b, &mut y).unwrap());
                    y.iter().map(|v| v.to_bits()).collect()
                })
                .collect();
            assert!(
                runs.windows(2).all(|w| w[0] == w[1]),
                "{norm:?} scalar {scalar}"
            );
        }
    }
}

/// The VJP given the forward's multipliers against the one that solves again: the same
/// bits for every norm, in f64 (per-element bounds, some infinite) and in f32 (scalar
/// bounds), over rows of every kind (inside the ball, on it, `eps = 0`, `z = x`); and the
/// multipliers' meaning checked against the oracle's size (`t` scales `d`, `lam` is where
/// the `p = 1` move stops).
#[test]
fn vjp_given_multipliers_matches_the_solving_vjp_bitwise() {
    let mut rng = Rng(91);
    for &(rows, n) in &[(40usize, 7usize), (12, 300), (3, 9000)] {
        let mut c = case(&mut rng, rows, n);
        c.eps[0] = 0.0;
        let s = c.n..2 * c.n;
        c.z[s.clone()].copy_from_slice(&c.x[s]);
        let g: Vec<f64> = (0..c.x.len()).map(|_| rng.normal()).collect();
        for norm in NORMS {
            let b = batch(&c, norm);
            let (mut y, mut m) = (vec![0.0; c.x.len()], vec![0.0; rows]);
            project_with_multipliers(&b, &mut y, &mut m).unwrap();
            assert_eq!(y, run(&c, norm), "{norm:?}: the same projection");
            let solve = vjp_bits(|gr| project_vjp(&b, &g, gr), c.x.len(), rows);
            let given = vjp_bits(|gr| project_vjp_given(&b, &g, &m, gr), c.x.len(), rows);
            assert!(solve == given, "{norm:?} rows {rows} n {n}");
            // NaN: unknown, solved again
            let nan = vec![f64::NAN; rows];
            let again = vjp_bits(|gr| project_vjp_given(&b, &g, &nan, gr), c.x.len(), rows);
            assert!(solve == again, "{norm:?} rows {rows} n {n} (NaN)");
            if norm == ProjectNorm::L2 {
                for r in 0..rows {
                    let [x, z, lo, hi, yr] = rows_of(&c, &y, r);
                    if c.eps[r] > 0.0 && m[r] > 0.0 && m[r] < 1.0 {
                        let want: Vec<f64> = (0..n)
                            .map(|i| (x[i] + m[r] * (z[i] - x[i])).clamp(lo[i], hi[i]))
                            .collect();
                        let err = size(&want, yr, ProjectNorm::Inf);
                        assert!(err <= 1e-12 * (1.0 + size(x, z, ProjectNorm::Inf)));
                    }
                }
            }
        }
        // f32, scalar bounds
        let x32: Vec<f32> = c.x.iter().map(|&v| v.clamp(-1.0, 1.0) as f32).collect();
        let z32: Vec<f32> = c.z.iter().map(|&v| v as f32).collect();
        let g32: Vec<f32> = g.iter().map(|&v| v as f32).collect();
        for norm in NORMS {
            let b = ProjectBatch {
                x: &x32,
                z: &z32,
                rows,
                n,
                lower: Bound::Scalar(-1.0f32),
                upper: Bound::Scalar(1.0f32),
                eps: Eps::PerRow(&c.eps),
                norm,
            };
            let (mut y, mut m) = (vec![0.0f32; x32.len()], vec![0.0; rows]);
            project_with_multipliers(&b, &mut y, &mut m).unwrap();
            let solve = vjp_bits(|gr| project_vjp(&b, &g32, gr), x32.len(), rows);
            let given = vjp_bits(|gr| project_vjp_given(&b, &g32, &m, gr), x32.len(), rows);
            assert!(solve == given, "f32 {norm:?} rows {rows} n {n}");
        }
    }
}

/// The cotangents' bits from a VJP call writing into fresh buffers.
fn vjp_bits<T: Copy + Default + Into<f64>>(
    call: impl FnOnce(ProjectGrads<'_, T>) -> Result<(), CoreError>,
    len: usize,
    rows: usize,
) -> Vec<u64> {
    let (mut gx, mut gz, mut ge) = (
        vec![T::default(); len],
        vec![T::default(); len],
        vec![0.0; rows],
    );
    let grads = ProjectGrads {
        x: &mut gx,
        z: &mut gz,
        eps: &mut ge,
    };
    call(grads).unwrap();
    let f = |v: T| Into::<f64>::into(v).to_bits();
    gx.iter()
        .map(|&v| f(v))
        .chain(gz.iter().map(|&v| f(v)))
        .chain(ge.iter().map(|v| v.to_bits()))
        .collect()
}

/// The multiplier-taking entry points refuse multipliers of the wrong length.
#[test]
fn multiplier_lengths_are_checked() {
    let (x, z) = ([0.5f64, 0.9], [2.0f64, 0.9]);
    let b = ProjectBatch {
        x: &x,
        z: &z,
        rows: 1,
        n: 2,
        lower: Bound::Scalar(0.0),
        upper: Bound::Scalar(1.0),
        eps: Eps::Scalar(0.25),
        norm: ProjectNorm::L1,
    };
    let mut y = [0.0; 2];
    let err = project_with_multipliers(&b, &mut y, &mut []).unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::Length {
                arg: "mult_out",
                ..
            }
        ),
        "{err:?}"
    );
    let (mut gx, mut gz, mut ge) = ([0.0; 2], [0.0; 2], [0.0]);
    let grads = ProjectGrads {
        x: &mut gx,
        z: &mut gz,
        eps: &mut ge,
    };
    let err = project_vjp_given(&b, &[1.0, 1.0], &[1.0, 2.0], grads).unwrap_err();
    assert!(
        matches!(err, CoreError::Length { arg: "mult", .. }),
        "{err:?}"
    );
}
