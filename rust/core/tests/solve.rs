//! The core against an independent oracle (bisection on the clipped size), plus the edge
//! cases, errors, the adversarial input and thread-count determinism.

use clipresc_core::{
    newton_adversary, perturb, scale, solve_stats, Batch, Bound, CoreError, Eps, Norm, Options,
    STREAM_MIN_BYTES,
};

mod common;
use common::{
    clipped_size, clipped_size_boxes, neumaier_sum, on_threads, oracle, oracle_boxes, Rng,
};

fn batch<'a>(x: &'a [f64], d: &'a [f64], rows: usize, eps: f64, p: f64) -> Batch<'a, f64> {
    Batch {
        x,
        delta: d,
        rows,
        n: x.len() / rows,
        lower: Bound::Scalar(0.0),
        upper: Bound::Scalar(1.0),
        eps: Eps::Scalar(eps),
        norm: Norm::new(p).unwrap(),
    }
}

fn random_case(rng: &mut Rng, n: usize, at_bounds: f64) -> (Vec<f64>, Vec<f64>) {
    let x = (0..n)
        .map(|_| {
            let u = rng.next();
            if u < at_bounds / 2.0 {
                0.0
            } else if u < at_bounds {
                1.0
            } else {
                rng.next()
            }
        })
        .collect();
    let d = (0..n).map(|_| rng.normal()).collect();
    (x, d)
}

#[test]
fn matches_bisection_oracle_for_many_p() {
    let mut rng = Rng(42);
    for &p in &[0.5, 0.7, 1.0, 1.5, 2.0, 3.0, f64::INFINITY] {
        for &(n, at_bounds) in &[(1usize, 0.0), (7, 0.3), (300, 0.0), (3000, 0.6)] {
            let (x, d) = random_case(&mut rng, n, at_bounds);
            let max_size = clipped_size(&x, &d, 0.0, 1.0, 1e12, p);
            let eps = 0.5 * max_size;
            let mut eta = [0.0];
            scale(&batch(&x, &d, 1, eps, p), &Options::default(), &mut eta).unwrap();
            let want = oracle(&x, &d, 0.0, 1.0, eps, p);
            let got_size = clipped_size(&x, &d, 0.0, 1.0, eta[0], p);
            assert!(
                (got_size - eps).abs() <= 1e-12 * eps,
                "p={p} n={n}: size {got_size} != eps {eps}"
            );
            assert!(
                (eta[0] - want).abs() <= 1e-9 * want,
                "p={p} n={n}: eta {} != oracle {want}",
                eta[0]
            );
        }
    }
}

#[test]
fn forced_safeguard_agrees_with_newton() {
    let mut rng = Rng(7);
    for &p in &[0.5, 1.0, 2.0, 3.0] {
        let (x, d) = random_case(&mut rng, 5000, 0.2);
        let b = batch(&x, &d, 1, 8.0, p);
        // Newton to the end (some of these rows need more passes than the default limit)
        let newton = solve_stats(
            &b,
            &Options {
                max_newton_passes: 64,
            },
        )
        .unwrap()[0];
        let forced = solve_stats(
            &b,
            &Options {
                max_newton_passes: 0,
            },
        )
        .unwrap()[0];
        assert!(!newton.safeguard && forced.safeguard);
        assert!(
            (newton.eta - forced.eta).abs() <= 1e-12 * newton.eta,
            "p={p}: {} vs {}",
            newton.eta,
            forced.eta
        );
    }
}

#[test]
fn adversary_needs_one_pass_per_element_without_safeguard() {
    for &p in &[0.5, 1.0, 2.0, 3.0] {
        let (x, d, eps, k) = newton_adversary(20_000, p);
        let b = batch(&x, &d, 1, eps, p);
        let plain = solve_stats(
            &b,
            &Options {
                max_newton_passes: 10_000,
            },
        )
        .unwrap()[0];
        assert_eq!(plain.passes as usize, k + 1, "p={p}");
        // A row too short for the subsample estimate: its second pass brackets the Newton
        // step up to 1.5 times it, which also holds the next chain element (the iterates
        // grow by 1.75 per pass), and saves one pass.
        let (xs, ds, eps_s, ks) = newton_adversary(5_000, p);
        let short = solve_stats(
            &batch(&xs, &ds, 1, eps_s, p),
            &Options {
                max_newton_passes: 10_000,
            },
        )
        .unwrap()[0];
        assert_eq!(short.passes as usize, ks, "p={p} short row");
        let size = clipped_size(&xs, &ds, 0.0, 1.0, short.eta, p);
        assert!(
            (size - eps_s).abs() <= 1e-12 * eps_s,
            "p={p}: short size {size}"
        );
        let guarded = solve_stats(&b, &Options::default()).unwrap()[0];
        assert!(
            guarded.safeguard && guarded.passes <= Options::default().max_newton_passes,
            "p={p}"
        );
        // The residual left for the last free weights is tiny by construction, so compare
        // sizes (well conditioned) rather than etas.
        for eta in [plain.eta, guarded.eta] {
            let size = clipped_size(&x, &d, 0.0, 1.0, eta, p);
            assert!((size - eps).abs() <= 1e-12 * eps, "p={p}: size {size}");
        }
    }
}

#[test]
fn adversary_in_f32_still_defeats_plain_newton() {
    let (x, d, eps, k) = newton_adversary(5_000, 2.0);
    let (x32, d32): (Vec<f32>, Vec<f32>) = (
        x.iter().map(|&v| v as f32).collect(),
        d.iter().map(|&v| v as f32).collect(),
    );
    let b = Batch {
        x: &x32,
        delta: &d32,
        rows: 1,
        n: x32.len(),
        lower: Bound::Scalar(0.0f32),
        upper: Bound::Scalar(1.0f32),
        eps: Eps::Scalar(eps),
        norm: Norm::P(2.0),
    };
    let plain = solve_stats(
        &b,
        &Options {
            max_newton_passes: 10_000,
        },
    )
    .unwrap()[0];
    // f32 rounding of the data breaks the chain after some 20 links (the residual shrinks
    // geometrically), still well past the point where the safeguard takes over.
    assert!(
        plain.passes > 12 && k >= 20,
        "{} passes, k = {k}",
        plain.passes
    );
    let guarded = solve_stats(&b, &Options::default()).unwrap()[0];
    assert!(guarded.safeguard);
    let x64: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
    let d64: Vec<f64> = d32.iter().map(|&v| v as f64).collect();
    let size = clipped_size(&x64, &d64, 0.0, 1.0, guarded.eta, 2.0);
    assert!((size - eps).abs() <= 1e-5 * eps, "size {size}");
}

#[test]
fn edge_cases() {
    let x = [0.5, 0.25, 1.0];
    let d = [1.0, -2.0, 0.5];
    let mut eta = [9.0];
    // eps = 0
    scale(&batch(&x, &d, 1, 0.0, 2.0), &Options::default(), &mut eta).unwrap();
    assert_eq!(eta[0], 0.0);
    // zero delta
    let z = [0.0; 3];
    let s = scale(&batch(&x, &z, 1, 1.0, 2.0), &Options::default(), &mut eta).unwrap();
    assert_eq!((eta[0], s.unreachable_rows), (0.0, 0));
    // unreachable: the largest room/|delta| among movable elements (0.5/1, 0.25/2)
    for p in [1.0, 2.0, 0.5] {
        let s = scale(&batch(&x, &d, 1, 10.0, p), &Options::default(), &mut eta).unwrap();
        assert_eq!(
            (eta[0], s.unreachable_rows, s.first_unreachable),
            (0.5, 1, Some(0))
        );
    }
    // p = inf: eta = eps / max{|d_i| : s_i >= eps}
    scale(
        &batch(&x, &d, 1, 0.2, f64::INFINITY),
        &Options::default(),
        &mut eta,
    )
    .unwrap();
    assert_eq!(eta[0], 0.2 / 2.0);
    scale(
        &batch(&x, &d, 1, 0.3, f64::INFINITY),
        &Options::default(),
        &mut eta,
    )
    .unwrap();
    assert_eq!(eta[0], 0.3);
    // p = inf unreachable: largest room 0.5 reached at eta 0.5
    let s = scale(
        &batch(&x, &d, 1, 0.9, f64::INFINITY),
        &Options::default(),
        &mut eta,
    )
    .unwrap();
    assert_eq!((eta[0], s.unreachable_rows), (0.5, 1));
    // a tie: eps exactly the size at a breakpoint (p = 1: 0.5 saturates at eta 0.5)
    scale(&batch(&x, &d, 1, 0.75, 1.0), &Options::default(), &mut eta).unwrap();
    assert!((eta[0] - 0.5).abs() < 1e-15);
}

#[test]
fn one_sided_and_per_element_bounds() {
    let x = [0.5, 2.0, 3.0];
    let d = [1.0, 1.0, -1.0];
    let lower = [0.0, 0.0, 2.5];
    let b = Batch {
        x: &x,
        delta: &d,
        rows: 1,
        n: 3,
        lower: Bound::Shared(&lower),
        upper: Bound::Scalar(f64::INFINITY),
        eps: Eps::Scalar(1.5),
        norm: Norm::P(1.0),
    };
    let (mut y, mut eta) = ([0.0; 3], [0.0]);
    perturb(&b, &Options::default(), &mut y, &mut eta).unwrap();
    // element 2 saturates after 0.5; the two free ones share the remaining 1.0
    assert!((eta[0] - 0.5).abs() < 1e-15, "{}", eta[0]);
    assert_eq!(y, [1.0, 2.5, 2.5]);
}

#[test]
fn errors_name_the_first_offender() {
    let x = [0.5, f64::NAN, 0.2, f64::INFINITY];
    let d = [1.0; 4];
    let mut eta = [0.0; 2];
    let e = scale(&batch(&x, &d, 2, 1.0, 2.0), &Options::default(), &mut eta).unwrap_err();
    assert_eq!(
        e,
        CoreError::NonFinite {
            arg: "x",
            count: 2,
            first: 1
        }
    );
    let x = [0.5, 0.5, 1.5, -0.1];
    let e = scale(&batch(&x, &d, 2, 1.0, 2.0), &Options::default(), &mut eta).unwrap_err();
    assert_eq!(e, CoreError::OutOfBounds { count: 2, first: 2 });
    let x = [0.5; 4];
    let d = [1.0, 1.0, 1.0, f64::NAN];
    let e = scale(&batch(&x, &d, 2, 1.0, 2.0), &Options::default(), &mut eta).unwrap_err();
    assert!(matches!(
        e,
        CoreError::NonFinite {
            arg: "delta",
            count: 1,
            first: 3
        }
    ));
    let d = [1.0; 4];
    let e = scale(&batch(&x, &d, 2, -1.0, 2.0), &Options::default(), &mut eta).unwrap_err();
    assert!(matches!(e, CoreError::BadEps { .. }));
    let e = scale(
        &batch(&x, &d, 2, 1.0, 2.0),
        &Options::default(),
        &mut [0.0; 3],
    )
    .unwrap_err();
    assert!(matches!(e, CoreError::Length { arg: "eta", .. }));
}

#[test]
fn bitwise_identical_for_any_thread_count() {
    let mut rng = Rng(3);
    let n = 700_001; // several parallel blocks and a ragged tail
    let (x, d) = random_case(&mut rng, n, 0.1);
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let d32: Vec<f32> = d.iter().map(|&v| v as f32).collect();
    let run = |threads: usize| {
        on_threads(threads, || {
            let b = Batch {
                x: &x32,
                delta: &d32,
                rows: 1,
                n,
                lower: Bound::Scalar(0.0f32),
                upper: Bound::Scalar(1.0f32),
                eps: Eps::Scalar(40.0),
                norm: Norm::P(2.0),
            };
            let (mut y, mut eta) = (vec![0f32; n], [0f32]);
            perturb(&b, &Options::default(), &mut y, &mut eta).unwrap();
            (
                eta[0].to_bits(),
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            )
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

/// Small batches run on the calling thread, larger ones on the pool: either way the same
/// bits as on a one-thread pool, every row exact, and the first row (which starts without
/// a hint, as a row alone does) bitwise that row solved alone. (Later rows start from the
/// previous row's answer, which can move their last bits.)
#[test]
fn batches_on_one_thread_or_the_pool_give_the_same_bits() {
    let mut rng = Rng(11);
    let n = 3072;
    for rows in [1usize, 5, 21, 22, 40] {
        let (x, d) = random_case(&mut rng, rows * n, 0.1);
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let d32: Vec<f32> = d.iter().map(|&v| v as f32).collect();
        let solve = |xs: &[f32], ds: &[f32], r: usize| {
            let b = Batch {
                x: xs,
                delta: ds,
                rows: r,
                n,
                lower: Bound::Scalar(0.0f32),
                upper: Bound::Scalar(1.0f32),
                eps: Eps::Scalar(12.0),
                norm: Norm::P(2.0),
            };
            let (mut y, mut eta) = (vec![0f32; r * n], vec![0f32; r]);
            perturb(&b, &Options::default(), &mut y, &mut eta).unwrap();
            (eta, y)
        };
        let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<u32>>();
        let (eta, y) = solve(&x32, &d32, rows);
        let (eta_one, y_one) = on_threads(1, || solve(&x32, &d32, rows));
        assert_eq!(bits(&eta), bits(&eta_one), "rows={rows}");
        assert_eq!(bits(&y), bits(&y_one), "rows={rows}");
        let (eta1, y1) = solve(&x32[..n], &d32[..n], 1);
        assert_eq!(eta[0].to_bits(), eta1[0].to_bits(), "rows={rows} row 0");
        assert_eq!(bits(&y[..n]), bits(&y1), "rows={rows} row 0");
        for r in 0..rows {
            let (xr, dr) = (&x[r * n..(r + 1) * n], &d[r * n..(r + 1) * n]);
            let x64: Vec<f64> = xr.iter().map(|&v| v as f32 as f64).collect();
            let d64: Vec<f64> = dr.iter().map(|&v| v as f32 as f64).collect();
            let size = clipped_size(&x64, &d64, 0.0, 1.0, eta[r] as f64, 2.0);
            assert!(
                (size - 12.0).abs() <= 1e-5 * 12.0,
                "rows={rows} row {r}: size {size}"
            );
        }
    }
}

/// Batches of at least `STREAM_MIN_BYTES` (odd row length, so rows start at every alignment
/// and end in a tail; `out` offset from its allocation): every element equals
/// `clip(x + eta * delta)` computed here in plain arithmetic of the element type, and the
/// clipped sizes are exact. f32 takes the non-temporal apply (scalar, shared and per-element
/// bounds); f64 takes the ordinary one at the same size.
#[test]
fn large_output_written_with_streaming_stores_is_exact() {
    let (rows, n) = (64usize, 150_531usize);
    assert!(rows * n * 4 >= STREAM_MIN_BYTES);
    let mut rng = Rng(42);
    let x: Vec<f64> = (0..rows * n).map(|_| 0.1 + 0.8 * rng.next()).collect();
    let d: Vec<f64> = (0..rows * n).map(|_| rng.normal()).collect();
    let shared_hi: Vec<f64> = (0..n).map(|j| 0.9 + 0.1 * (j % 3) as f64).collect();
    let full_lo: Vec<f64> = (0..rows * n)
        .map(|i| 0.1 * rng.next() * (i % 2) as f64)
        .collect();
    check_streamed::<f32>(&x, &d, rows, n, &shared_hi, &full_lo);
    check_streamed::<f64>(&x, &d, rows / 2, 2 * n, &shared_hi, &full_lo);
}

fn check_streamed<T>(x: &[f64], d: &[f64], rows: usize, n: usize, hi: &[f64], lo: &[f64])
where
    T: clipresc_core::Real + PartialEq + std::fmt::Debug,
{
    let cast = |v: &[f64]| v.iter().map(|&a| T::of_f64(a)).collect::<Vec<T>>();
    let (x, d) = (cast(x), cast(d));
    let shared_hi: Vec<T> = cast(hi).into_iter().cycle().take(n).collect();
    let full_lo = cast(lo);
    let kinds = [
        (Bound::Scalar(T::of_f64(0.0)), Bound::Scalar(T::of_f64(1.0))),
        (Bound::Scalar(T::of_f64(0.0)), Bound::Shared(&shared_hi)),
        (Bound::Full(&full_lo), Bound::Shared(&shared_hi)),
    ];
    let side = |b: &Bound<'_, T>, i: usize| match *b {
        Bound::Scalar(v) => v,
        Bound::Shared(s) => s[i % n],
        Bound::Full(s) => s[i],
    };
    for (lower, upper) in kinds {
        let b = Batch {
            x: &x,
            delta: &d,
            rows,
            n,
            lower,
            upper,
            eps: Eps::Scalar(40.0),
            norm: Norm::P(2.0),
        };
        let mut buf = vec![T::of_f64(0.0); rows * n + 1];
        let mut eta = vec![T::of_f64(0.0); rows];
        perturb(&b, &Options::default(), &mut buf[1..], &mut eta).unwrap();
        let y = &buf[1..];
        for (r, &e) in eta.iter().enumerate() {
            let mut sq = 0.0f64;
            for i in r * n..(r + 1) * n {
                let v = x[i] + e * d[i];
                let want = v.max(side(&lower, i)).min(side(&upper, i));
                assert_eq!(y[i], want, "{}, row {r}, element {i}", T::NAME);
                sq += (y[i].as_f64() - x[i].as_f64()).powi(2);
            }
            let size = sq.sqrt();
            assert!((size - 40.0).abs() < 40.0 * 1e-5, "row {r}: {size}");
        }
    }
}

/// A batch whose `x`, `delta` and output move fewer than `STREAM_MIN_BYTES` but whose
/// per-element bound arrays bring the bytes it moves above it: the non-temporal apply then
/// writes `y`, and every element must still be exactly `clip(x + eta * delta)` (rows of odd
/// length, `out` offset from its allocation, so the stores start at every alignment).
#[test]
fn per_element_bounds_stream_the_output_exactly() {
    let (rows, n) = (768usize, 3073usize);
    assert!(3 * rows * n * 4 < STREAM_MIN_BYTES && 5 * rows * n * 4 >= STREAM_MIN_BYTES);
    let mut rng = Rng(5);
    let lo: Vec<f32> = (0..rows * n).map(|_| (0.2 * rng.next()) as f32).collect();
    let hi: Vec<f32> = (0..rows * n)
        .map(|_| (0.8 + 0.2 * rng.next()) as f32)
        .collect();
    let x: Vec<f32> = (0..rows * n)
        .map(|i| lo[i] + (hi[i] - lo[i]) * rng.next() as f32)
        .map(|v| v.clamp(0.2, 0.8))
        .collect();
    let d: Vec<f32> = (0..rows * n).map(|_| rng.normal() as f32).collect();
    let b = Batch {
        x: &x,
        delta: &d,
        rows,
        n,
        lower: Bound::Full(&lo),
        upper: Bound::Full(&hi),
        eps: Eps::Scalar(8.0),
        norm: Norm::P(2.0),
    };
    let mut buf = vec![0f32; rows * n + 1];
    let mut eta = vec![0f32; rows];
    perturb(&b, &Options::default(), &mut buf[1..], &mut eta).unwrap();
    let y = &buf[1..];
    for (r, &e) in eta.iter().enumerate() {
        let mut sq = 0.0f64;
        for i in r * n..(r + 1) * n {
            assert_eq!(
                y[i],
                (x[i] + e * d[i]).max(lo[i]).min(hi[i]),
                "row {r}, element {i}"
            );
            sq += (f64::from(y[i]) - f64::from(x[i])).powi(2);
        }
        assert!(
            (sq.sqrt() - 8.0).abs() < 8.0 * 1e-5,
            "row {r}: {}",
            sq.sqrt()
        );
    }
}

/// The sides of a box as the core takes them, and as one f64 per element.
type BoxKind<'a> = (Bound<'a, f32>, Bound<'a, f32>, Vec<f64>, Vec<f64>);

/// The f32 kernels for p = 1 and 2 take bounds that are scalars or one value per element
/// (shared by every row or not), infinite entries included; rows of every length class
/// (shorter than one vector, ragged tails, long enough for the subsample estimate). Each
/// row's size after clipping must equal eps (1e-5, the f32 contract) at the eta the f64
/// bisection oracle finds, `y` must be exactly `clamp(x + eta * delta)`, and a NaN bound or
/// an infinite x inside an infinite box must be reported.
#[test]
fn f32_kernels_with_per_element_bounds_match_the_oracle() {
    let mut rng = Rng(7);
    for &n in &[5usize, 8, 17, 1000, 20_011] {
        let rows = 3;
        let total = rows * n;
        // Boxes of width 0 to 1 around [-0.5, 1.3]; some sides infinite; x in its box,
        // a fifth of it on a side.
        let lo: Vec<f64> = (0..total)
            .map(|i| {
                if i % 97 == 3 {
                    f64::NEG_INFINITY
                } else {
                    -0.5 + 0.8 * rng.next()
                }
            })
            .map(|v| v as f32 as f64)
            .collect();
        let hi: Vec<f64> = (0..total)
            .map(|i| {
                if i % 89 == 5 {
                    f64::INFINITY
                } else if i % 13 == 0 {
                    lo[i].max(0.0) // zero width where lo >= 0
                } else {
                    lo[i].max(-0.2) + rng.next()
                }
            })
            .map(|v| v as f32 as f64)
            .collect();
        let x: Vec<f64> = (0..total)
            .map(|i| {
                let (l, h) = (lo[i].max(-2.0), hi[i].min(3.0));
                let u = rng.next();
                let v = if u < 0.1 {
                    l
                } else if u < 0.2 {
                    h
                } else {
                    l + (h - l) * rng.next()
                };
                v as f32 as f64
            })
            .collect();
        let d: Vec<f64> = (0..total).map(|_| rng.normal() as f32 as f64).collect();
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let (x32, d32, lo32, hi32) = (f(&x), f(&d), f(&lo), f(&hi));
        let shared_lo: Vec<f32> = lo32[..n].to_vec();
        let shared_lo_rows: Vec<f64> = (0..total).map(|i| lo[i % n]).collect();
        // each kind: the two sides as the core takes them, and as f64 per element
        let kinds: [BoxKind<'_>; 4] = [
            (
                Bound::Full(&lo32),
                Bound::Full(&hi32),
                lo.clone(),
                hi.clone(),
            ),
            (
                Bound::Scalar(-0.6),
                Bound::Full(&hi32),
                vec![-0.6f32 as f64; total],
                hi.clone(),
            ),
            (
                Bound::Shared(&shared_lo),
                Bound::Scalar(f32::INFINITY),
                shared_lo_rows.clone(),
                vec![f64::INFINITY; total],
            ),
            (
                Bound::Full(&lo32),
                Bound::Scalar(2.0),
                lo.clone(),
                vec![2.0; total],
            ),
        ];
        for (kind, (lower, upper, lo_rows, hi_rows)) in kinds.into_iter().enumerate() {
            // x must lie in the box of this kind
            let xk: Vec<f64> = (0..total)
                .map(|i| x[i].clamp(lo_rows[i], hi_rows[i]))
                .collect();
            let xk32 = f(&xk);
            assert!(
                xk32.iter().zip(&xk).all(|(&a, &b)| a as f64 == b),
                "x not in f32"
            );
            for &p in &[1.0, 2.0] {
                let sl = |r: usize, v: &[f64]| v[r * n..(r + 1) * n].to_vec();
                let max: Vec<f64> = (0..rows)
                    .map(|r| {
                        let (xr, dr) = (sl(r, &xk), sl(r, &d));
                        clipped_size_boxes(&xr, &dr, &sl(r, &lo_rows), &sl(r, &hi_rows), 1e30, p)
                    })
                    .collect();
                let eps: Vec<f64> = max
                    .iter()
                    .enumerate()
                    .map(|(r, &m)| {
                        let m = if m.is_finite() {
                            m
                        } else {
                            3.0 * (n as f64).powf(1.0 / p)
                        };
                        m * [0.3, 0.8, 0.97][r]
                    })
                    .collect();
                let b = Batch {
                    x: &xk32,
                    delta: &d32,
                    rows,
                    n,
                    lower,
                    upper,
                    eps: Eps::PerRow(&eps),
                    norm: Norm::P(p),
                };
                let mut y = vec![0f32; total];
                let mut eta = vec![0f32; rows];
                perturb(&b, &Options::default(), &mut y, &mut eta).unwrap();
                for r in 0..rows {
                    let (xr, dr) = (sl(r, &xk), sl(r, &d));
                    let (lr, hr) = (sl(r, &lo_rows), sl(r, &hi_rows));
                    let e = eta[r] as f64;
                    let want = oracle_boxes(&xr, &dr, &lr, &hr, eps[r], p);
                    let size: f64 =
                        neumaier_sum((0..n).map(|j| (y[r * n + j] as f64 - xr[j]).abs().powf(p)))
                            .powf(1.0 / p);
                    let what = format!("n={n} kind={kind} p={p} row {r}");
                    assert!(
                        (size - eps[r]).abs() <= 1e-5 * eps[r],
                        "{what}: size {size} vs {}",
                        eps[r]
                    );
                    assert!(
                        (e - want).abs() <= 1e-4 * want,
                        "{what}: eta {e} vs oracle {want}"
                    );
                    for j in 0..n {
                        let i = r * n + j;
                        let v = xk32[i] + eta[r] * d32[i];
                        let yw = v.max(lo_rows[i] as f32).min(hi_rows[i] as f32);
                        assert_eq!(y[i], yw, "{what}: element {j}");
                    }
                }
            }
            // a NaN bound and an infinite x in an infinite box are invalid elements
            let mut bad_lo = lo32.clone();
            bad_lo[total - 2] = f32::NAN;
            let b = Batch {
                x: &x32,
                delta: &d32,
                rows,
                n,
                lower: Bound::Full(&bad_lo),
                upper: Bound::Full(&hi32),
                eps: Eps::Scalar(0.0),
                norm: Norm::P(2.0),
            };
            let mut eta = vec![0f32; rows];
            let e = scale(&b, &Options::default(), &mut eta).unwrap_err();
            assert!(
                matches!(e, CoreError::OutOfBounds { count: 1, first } if first == total - 2),
                "{e:?}"
            );
        }
        let inf_at = (0..total).find(|&i| hi[i].is_infinite()).unwrap();
        let mut xinf = x32.clone();
        xinf[inf_at] = f32::INFINITY;
        let b = Batch {
            x: &xinf,
            delta: &d32,
            rows,
            n,
            lower: Bound::Full(&lo32),
            upper: Bound::Full(&hi32),
            eps: Eps::Scalar(1.0),
            norm: Norm::P(1.0),
        };
        let mut eta = vec![0f32; rows];
        let e = scale(&b, &Options::default(), &mut eta).unwrap_err();
        assert!(
            matches!(e, CoreError::NonFinite { arg: "x", count: 1, first } if first == inf_at),
            "{e:?}"
        );
    }
}

/// Deltas whose `p`-th powers would overflow or underflow the element type (tiny gradients,
/// unnormalised noise) give the same exact sizes: eta scales as 1 / |delta|.
#[test]
fn extreme_delta_magnitudes_are_rescaled() {
    let mut rng = Rng(11);
    let n = 20_000;
    let (x, d) = random_case(&mut rng, n, 0.2);
    for &p in &[0.5, 1.0, 2.0, 3.0, 7.0] {
        let max_size = clipped_size(&x, &d, 0.0, 1.0, 1e300, p);
        let eps = 0.5 * max_size;
        let want = oracle(&x, &d, 0.0, 1.0, eps, p);
        for &k in &[-100, -60, -20, 20, 60, 100] {
            let factor = 2f64.powi(k);
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let d32: Vec<f32> = d.iter().map(|&v| (v * factor) as f32).collect();
            let b = Batch {
                x: &x32,
                delta: &d32,
                rows: 1,
                n,
                lower: Bound::Scalar(0.0f32),
                upper: Bound::Scalar(1.0f32),
                eps: Eps::Scalar(eps),
                norm: Norm::new(p).unwrap(),
            };
            let mut eta = [0f32];
            scale(&b, &Options::default(), &mut eta).unwrap();
            let got = eta[0] as f64 * factor;
            assert!(
                (got - want).abs() <= 1e-4 * want,
                "f32 p={p} 2^{k}: {got} vs {want}"
            );
        }
        for &k in &[-900, -400, 400, 900] {
            let factor = 2f64.powi(k);
            let ds: Vec<f64> = d.iter().map(|&v| v * factor).collect();
            let mut eta = [0f64];
            scale(&batch(&x, &ds, 1, eps, p), &Options::default(), &mut eta).unwrap();
            let got = eta[0] * factor;
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "f64 p={p} 2^{k}: {got} vs {want}"
            );
        }
    }
}

/// `perturb` on deltas so small (or large) that eta leaves the element type's range:
/// `eta * delta` is still applied exactly (in `f64`, with `delta` rescaled), and elements
/// whose delta is zero stay where they are. `scale` returns the out-of-range eta as inf (or
/// a subnormal). Checked element by element against the clipped point at the oracle's eta
/// for the same deltas scaled back to ordinary magnitudes (a power of two: exact).
#[test]
fn perturb_is_exact_when_eta_leaves_the_type_range() {
    fn check<T: clipresc_core::Real>(k: i32, p: f64, reachable: bool, tol: f64) {
        let mut rng = Rng(5 + k.unsigned_abs() as u64);
        let n = 300;
        let (x, d) = random_case(&mut rng, n, 0.2);
        // 2^k may lie outside f64's range: two exact steps
        let (f1, f2) = (2f64.powi(k / 2), 2f64.powi(k - k / 2));
        let xs: Vec<T> = x.iter().map(|&v| T::of_f64(v)).collect();
        let mut ds: Vec<T> = d.iter().map(|&v| T::of_f64(v * f1 * f2)).collect();
        for i in (0..n).step_by(7) {
            ds[i] = T::zero();
        }
        // the deltas as stored (subnormals keep few bits), brought back to ordinary sizes
        let du: Vec<f64> = ds.iter().map(|v| v.as_f64() / f1 / f2).collect();
        let xu: Vec<f64> = xs.iter().map(|v| v.as_f64()).collect();
        let max_size = clipped_size(&xu, &du, 0.0, 1.0, 1e300, p);
        let eps = if reachable { 0.5 } else { 2.0 } * max_size;
        let want = if reachable {
            oracle(&xu, &du, 0.0, 1.0, eps, p)
        } else if p.is_infinite() {
            // the largest room, reached first by the fastest of its elements
            let room = |i: usize| if du[i] > 0.0 { 1.0 - xu[i] } else { xu[i] };
            let moving = (0..n).filter(|&i| du[i] != 0.0);
            let s_max = moving.clone().map(room).fold(0.0, f64::max);
            moving
                .filter(|&i| room(i) == s_max)
                .map(|i| s_max / du[i].abs())
                .fold(f64::INFINITY, f64::min)
        } else {
            1e300
        };
        let b = Batch {
            x: &xs,
            delta: &ds,
            rows: 1,
            n,
            lower: Bound::Scalar(T::zero()),
            upper: Bound::Scalar(T::one()),
            eps: Eps::Scalar(eps),
            norm: Norm::new(p).unwrap(),
        };
        let (mut y, mut eta) = (vec![T::zero(); n], [T::zero()]);
        perturb(&b, &Options::default(), &mut y, &mut eta).unwrap();
        let what = format!("{} 2^{k} p={p} reachable={reachable}", T::NAME);
        let yu: Vec<f64> = y.iter().map(|v| v.as_f64()).collect();
        for i in 0..n {
            let exact = (xu[i] + want * du[i]).clamp(0.0, 1.0);
            assert!(
                (yu[i] - exact).abs() <= tol,
                "{what} [{i}]: {} vs {exact}",
                yu[i]
            );
            if ds[i] == T::zero() {
                assert_eq!(yu[i], xu[i], "{what} [{i}]: a zero delta moved");
            }
        }
        let moved: Vec<f64> = yu.iter().zip(&xu).map(|(a, b)| a - b).collect();
        let size = clipped_size(&vec![0.0; n], &moved, -1.0, 1.0, 1.0, p);
        let target = eps.min(max_size);
        assert!(
            (size - target).abs() <= 10.0 * tol * target,
            "{what}: size {size} vs {target}"
        );
        let eta_ok = if reachable {
            let e = eta[0].as_f64();
            e.is_infinite() || (e * f1 * f2 - want).abs() <= 1e3 * tol * want
        } else {
            true
        };
        assert!(eta_ok, "{what}: eta {:?}", eta[0]);
    }
    for p in [1.0, 2.0, 3.0, f64::INFINITY] {
        for reachable in [true, false] {
            // f32: subnormal deltas (eta past f32's range) and huge ones (eta subnormal)
            for k in [-140, -135, 124] {
                check::<f32>(k, p, reachable, 2e-6);
            }
            // f64: subnormal deltas (eta past f64's range) and huge ones
            for k in [-1062, -1040, 1020] {
                check::<f64>(k, p, reachable, 1e-12);
            }
        }
    }
}

/// Rows of 20000 elements whose subsample (the first 64 elements of each sixteenth) is
/// scaled by `sub_scale`: 1 keeps it typical, far from 1 makes its estimate miss.
fn subsample_case(rng: &mut Rng, sub_scale: f64) -> (Vec<f64>, Vec<f64>) {
    let n = 20_000;
    let (x, mut d) = random_case(rng, n, 0.1);
    for b in 0..16 {
        for v in &mut d[b * (n / 16)..b * (n / 16) + 64] {
            *v *= sub_scale;
        }
    }
    (x, d)
}

#[test]
fn every_way_out_of_the_first_pass_matches_the_oracle() {
    let mut rng = Rng(99);
    // (subsample scale, whether the first pass alone must solve the row)
    for &(sub_scale, one_pass) in &[(1.0, true), (1e-3, false), (1e3, false)] {
        for &p in &[1.0, 2.0, 3.0] {
            let (x, d) = subsample_case(&mut rng, sub_scale);
            let eps = 0.3 * clipped_size(&x, &d, 0.0, 1.0, 1e12, p);
            let want = oracle(&x, &d, 0.0, 1.0, eps, p);
            let got = solve_stats(&batch(&x, &d, 1, eps, p), &Options::default()).unwrap()[0];
            let size = clipped_size(&x, &d, 0.0, 1.0, got.eta, p);
            let case = format!("sub_scale={sub_scale} p={p}");
            assert!((size - eps).abs() <= 1e-12 * eps, "{case}: f64 size {size}");
            assert!((got.eta - want).abs() <= 1e-9 * want, "{case}: f64 eta");
            assert_eq!(got.passes == 0, one_pass, "{case}: {} passes", got.passes);
            // float32: the AVX2 kernels where the CPU has them
            let (x32, d32): (Vec<f32>, Vec<f32>) = (
                x.iter().map(|&v| v as f32).collect(),
                d.iter().map(|&v| v as f32).collect(),
            );
            let b32 = Batch {
                x: &x32,
                delta: &d32,
                rows: 1,
                n: x32.len(),
                lower: Bound::Scalar(0.0f32),
                upper: Bound::Scalar(1.0f32),
                eps: Eps::Scalar(eps),
                norm: Norm::new(p).unwrap(),
            };
            let got32 = solve_stats(&b32, &Options::default()).unwrap()[0];
            let (x64, d64): (Vec<f64>, Vec<f64>) = (
                x32.iter().map(|&v| v as f64).collect(),
                d32.iter().map(|&v| v as f64).collect(),
            );
            let size32 = clipped_size(&x64, &d64, 0.0, 1.0, got32.eta, p);
            assert!(
                (size32 - eps).abs() <= 1e-5 * eps,
                "{case}: f32 size {size32}"
            );
            assert_eq!(
                got32.passes == 0,
                one_pass,
                "{case}: f32 {} passes",
                got32.passes
            );
        }
    }
}

/// `rows` short rows of `n` f64 elements; row `r`'s delta is scaled by `scale(r)`.
fn short_rows(
    rng: &mut Rng,
    rows: usize,
    n: usize,
    scale: impl Fn(usize) -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let (x, mut d) = random_case(rng, rows * n, 0.2);
    for (r, row) in d.chunks_mut(n).enumerate() {
        let s = scale(r);
        row.iter_mut().for_each(|v| *v *= 0.05 * s);
    }
    (x, d)
}

/// Rows of a batch pass their answers to the next row as a starting guess (hint groups):
/// alike rows then take no pass after the first, every row stays exact, and the groups
/// do not depend on the thread count.
#[test]
fn alike_short_rows_solve_in_one_pass_from_the_previous_rows_answer() {
    let mut rng = Rng(21);
    let (rows, n) = (512, 3072);
    let (x, d) = short_rows(&mut rng, rows, n, |_| 1.0);
    for &p in &[1.0, 2.0, 3.0] {
        let eps = 0.3 * clipped_size(&x[..n], &d[..n], 0.0, 1.0, 1e12, p);
        let stats = solve_stats(&batch(&x, &d, rows, eps, p), &Options::default()).unwrap();
        let one_pass = stats.iter().filter(|o| o.passes == 0).count();
        // groups of 8 rows here (512 / 64): every row but the first of each group
        assert!(
            one_pass >= rows * 7 / 8,
            "p={p}: {one_pass} of {rows} rows in one pass"
        );
        // without hints (a batch of one row) a short row takes a second pass
        let alone = solve_stats(&batch(&x[..n], &d[..n], 1, eps, p), &Options::default()).unwrap();
        assert!(alone[0].passes >= 1, "p={p}");
        for (r, o) in stats.iter().enumerate() {
            let (xr, dr) = (&x[r * n..(r + 1) * n], &d[r * n..(r + 1) * n]);
            let size = clipped_size(xr, dr, 0.0, 1.0, o.eta, p);
            assert!(
                (size - eps).abs() <= 1e-12 * eps,
                "p={p} row {r}: size {size}"
            );
            let want = oracle(xr, dr, 0.0, 1.0, eps, p);
            assert!((o.eta - want).abs() <= 1e-9 * want, "p={p} row {r}: eta");
        }
    }
}

/// A small batch (64 rows of 3072, an attack's batch of CIFAR images) still runs in hint
/// groups of several rows: at most one row in six starts without a hint, and every row is
/// exact.
#[test]
fn small_batches_of_short_rows_still_pass_hints_on() {
    let mut rng = Rng(22);
    let (rows, n) = (64, 3072);
    let (x, d) = short_rows(&mut rng, rows, n, |_| 1.0);
    for &p in &[1.0, 2.0] {
        let eps = 0.3 * clipped_size(&x[..n], &d[..n], 0.0, 1.0, 1e12, p);
        let stats = solve_stats(&batch(&x, &d, rows, eps, p), &Options::default()).unwrap();
        let cold = stats.iter().filter(|o| o.passes > 0).count();
        assert!(
            cold <= rows / 6 + 1,
            "p={p}: {cold} of {rows} rows took a second pass"
        );
        for (r, o) in stats.iter().enumerate() {
            let (xr, dr) = (&x[r * n..(r + 1) * n], &d[r * n..(r + 1) * n]);
            let want = oracle(xr, dr, 0.0, 1.0, eps, p);
            assert!((o.eta - want).abs() <= 1e-9 * want, "p={p} row {r}: eta");
        }
    }
}

/// A row after one whose `eps` is out of reach starts with the saturating pass. When its
/// rooms are so small (float32 subnormals) that their squares underflow, that pass's total
/// is 0: the row must then be solved as it is alone, not reported out of reach.
#[test]
fn a_row_after_an_unreachable_one_keeps_its_verdict_when_its_rooms_underflow() {
    let n = 17;
    let room = f32::from_bits(1); // the smallest subnormal: every room is this
    let x = vec![0.0f32; 2 * n];
    let d = vec![1.0f32; 2 * n];
    let largest = (n as f64).sqrt() * room as f64; // the size with every element saturated
    let eps = [4.0 * largest, 0.05 * largest];
    let b = Batch {
        x: &x,
        delta: &d,
        rows: 2,
        n,
        lower: Bound::Scalar(0.0f32),
        upper: Bound::Scalar(room),
        eps: Eps::PerRow(&eps),
        norm: Norm::P(2.0),
    };
    let (mut y, mut eta) = (vec![0f32; 2 * n], vec![0f32; 2]);
    let s = perturb(&b, &Options::default(), &mut y, &mut eta).unwrap();
    assert_eq!(
        (s.unreachable_rows, s.first_unreachable),
        (1, Some(0)),
        "row 1 (eps 1/20 of the largest size) is within reach"
    );
    let alone = Batch {
        x: &x[n..],
        delta: &d[n..],
        rows: 1,
        eps: Eps::PerRow(&eps[1..]),
        ..b
    };
    let (mut y1, mut eta1) = (vec![0f32; n], vec![0f32; 1]);
    let s1 = perturb(&alone, &Options::default(), &mut y1, &mut eta1).unwrap();
    assert_eq!(s1.unreachable_rows, 0);
    assert_eq!(eta[1].to_bits(), eta1[0].to_bits());
}

/// Rows whose sizes differ by orders of magnitude (gradients of different samples): every
/// hint misses, each group turns its hints off after the first miss, and every row is exact.
#[test]
fn rows_of_different_scales_stay_exact_when_hints_miss() {
    let mut rng = Rng(23);
    let (rows, n) = (256, 2000);
    let (x, d) = short_rows(&mut rng, rows, n, |r| 10f64.powi((r % 7) as i32 - 3));
    for &p in &[1.0, 2.0] {
        let eps = 0.5;
        let stats = solve_stats(&batch(&x, &d, rows, eps, p), &Options::default()).unwrap();
        // at most the second row of each group tries a (missing) hint; the rest go as alone
        let extra = stats.iter().filter(|o| o.passes > 1).count();
        assert!(
            extra <= rows / 4 + 8,
            "p={p}: {extra} rows took more than two passes"
        );
        for (r, o) in stats.iter().enumerate() {
            let (xr, dr) = (&x[r * n..(r + 1) * n], &d[r * n..(r + 1) * n]);
            let want = oracle(xr, dr, 0.0, 1.0, eps, p);
            if o.saturated {
                assert!(clipped_size(xr, dr, 0.0, 1.0, 1e300, p) <= eps * (1.0 + 1e-12));
                continue;
            }
            let size = clipped_size(xr, dr, 0.0, 1.0, o.eta, p);
            assert!(
                (size - eps).abs() <= 1e-12 * eps,
                "p={p} row {r}: size {size}"
            );
            assert!((o.eta - want).abs() <= 1e-9 * want, "p={p} row {r}: eta");
        }
    }
}

/// Hint groups are fixed by the batch's shape: a batch of many short rows gives the same
/// bits on 1, 2 and 3 threads.
#[test]
fn hint_groups_are_bitwise_identical_for_any_thread_count() {
    let mut rng = Rng(25);
    let (rows, n) = (1000, 784);
    let (x, d) = short_rows(&mut rng, rows, n, |r| 1.0 + 0.01 * (r % 5) as f64);
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let d32: Vec<f32> = d.iter().map(|&v| v as f32).collect();
    let run = |threads: usize| {
        on_threads(threads, || {
            let b = Batch {
                x: &x32,
                delta: &d32,
                rows,
                n,
                lower: Bound::Scalar(0.0f32),
                upper: Bound::Scalar(1.0f32),
                eps: Eps::Scalar(1.5),
                norm: Norm::P(2.0),
            };
            let (mut y, mut eta) = (vec![0f32; rows * n], vec![0f32; rows]);
            perturb(&b, &Options::default(), &mut y, &mut eta).unwrap();
            let mut e64 = vec![0f64; rows];
            scale(
                &batch(&x, &d, rows, 1.5, 1.0),
                &Options::default(),
                &mut e64,
            )
            .unwrap();
            (
                eta.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                e64.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            )
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}
