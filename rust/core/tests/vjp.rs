//! The closed-form VJPs against central finite differences of the forward (float64), plus the
//! conventions at eps = 0 and for unreachable rows, shared-bound sums, f32, errors and
//! thread-count determinism.

use clipresc_core::{
    perturb, perturb_vjp, perturb_vjp_in_place, scale, scale_vjp, Batch, Bound, CoreError, Eps,
    Grads, Norm, Options,
};

mod common;
use common::Rng;

const PS: [f64; 5] = [0.7, 1.0, 2.0, 3.0, f64::INFINITY];

/// The kind of bound arrays a case uses.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Scalar,
    Shared,
    Full,
}

/// One problem in float64 with array bounds stored in full (rows * n) or shared (n) form.
#[derive(Clone, Debug)]
struct Case {
    x: Vec<f64>,
    d: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    eps: Vec<f64>,
    rows: usize,
    n: usize,
    p: f64,
    kind: Kind,
}

fn bound(v: &[f64], kind: Kind, scalar: f64) -> Bound<'_, f64> {
    match kind {
        Kind::Scalar => Bound::Scalar(scalar),
        Kind::Shared => Bound::Shared(v),
        Kind::Full => Bound::Full(v),
    }
}

impl Case {
    fn batch(&self) -> Batch<'_, f64> {
        Batch {
            x: &self.x,
            delta: &self.d,
            rows: self.rows,
            n: self.n,
            lower: bound(&self.lo, self.kind, 0.0),
            upper: bound(&self.hi, self.kind, 1.0),
            eps: Eps::PerRow(&self.eps),
            norm: Norm::new(self.p).unwrap(),
        }
    }

    fn eta(&self) -> Vec<f64> {
        let mut eta = vec![0.0; self.rows];
        scale(&self.batch(), &Options::default(), &mut eta).unwrap();
        eta
    }

    fn y(&self) -> Vec<f64> {
        let (mut y, mut eta) = (vec![0.0; self.rows * self.n], vec![0.0; self.rows]);
        perturb(&self.batch(), &Options::default(), &mut y, &mut eta).unwrap();
        y
    }

    /// The largest reachable size of row r.
    fn max_size(&self, r: usize) -> f64 {
        let sizes = (0..self.n).map(|j| {
            let i = r * self.n + j;
            let (lo, hi) = self.bounds_at(r, j);
            let d = self.d[i];
            if d > 0.0 {
                hi - self.x[i]
            } else if d < 0.0 {
                self.x[i] - lo
            } else {
                0.0
            }
        });
        if self.p.is_infinite() {
            sizes.fold(0.0, f64::max)
        } else {
            sizes
                .map(|s| s.powf(self.p))
                .sum::<f64>()
                .powf(1.0 / self.p)
        }
    }

    fn bounds_at(&self, r: usize, j: usize) -> (f64, f64) {
        match self.kind {
            Kind::Scalar => (0.0, 1.0),
            Kind::Shared => (self.lo[j], self.hi[j]),
            Kind::Full => (self.lo[r * self.n + j], self.hi[r * self.n + j]),
        }
    }
}

/// A random case: x inside its box, Gaussian directions, `eps = frac * largest size` per row.
fn random_case(rng: &mut Rng, rows: usize, n: usize, p: f64, kind: Kind, frac: f64) -> Case {
    let nb = match kind {
        Kind::Scalar => 0,
        Kind::Shared => n,
        Kind::Full => rows * n,
    };
    let lo: Vec<f64> = (0..nb).map(|_| -0.5 * rng.next()).collect();
    let hi: Vec<f64> = (0..nb).map(|_| 0.5 + 0.5 * rng.next()).collect();
    let mut c = Case {
        x: vec![0.0; rows * n],
        d: (0..rows * n).map(|_| rng.normal()).collect(),
        lo,
        hi,
        eps: vec![0.0; rows],
        rows,
        n,
        p,
        kind,
    };
    for r in 0..rows {
        for j in 0..n {
            let (lo, hi) = c.bounds_at(r, j);
            let (lo, hi) = (lo.max(0.0), hi.min(1.0)); // keep x off the bounds
            c.x[r * n + j] = lo + (hi - lo) * (0.05 + 0.9 * rng.next());
        }
    }
    for r in 0..rows {
        c.eps[r] = frac * c.max_size(r);
    }
    c
}

struct Out {
    x: Vec<f64>,
    d: Vec<f64>,
    eps: Vec<f64>,
    lo: Option<Vec<f64>>,
    hi: Option<Vec<f64>>,
}

fn run_vjp(c: &Case, etabar: Option<&[f64]>, ybar: Option<&[f64]>) -> Out {
    let total = c.rows * c.n;
    let nb = c.lo.len();
    let mut o = Out {
        x: vec![f64::NAN; total],
        d: vec![f64::NAN; total],
        eps: vec![f64::NAN; c.rows],
        lo: (c.kind != Kind::Scalar).then(|| vec![f64::NAN; nb]),
        hi: (c.kind != Kind::Scalar).then(|| vec![f64::NAN; nb]),
    };
    let grads = Grads {
        x: &mut o.x,
        delta: &mut o.d,
        eps: &mut o.eps,
        lower: o.lo.as_deref_mut(),
        upper: o.hi.as_deref_mut(),
    };
    let opts = Options::default();
    match (etabar, ybar) {
        (Some(e), None) => scale_vjp(&c.batch(), &opts, None, e, grads).unwrap(),
        (None, Some(y)) => perturb_vjp(&c.batch(), &opts, None, y, grads).unwrap(),
        _ => unreachable!(),
    };
    o
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(u, v)| u * v).sum()
}

/// Central difference of `f` with respect to every entry of the vector `field` picks.
fn central(c: &Case, field: fn(&mut Case) -> &mut Vec<f64>, f: &dyn Fn(&Case) -> f64) -> Vec<f64> {
    let mut c = c.clone();
    let len = field(&mut c).len();
    (0..len)
        .map(|i| {
            let v = field(&mut c)[i];
            let h = 1e-6 * v.abs().max(1e-2);
            field(&mut c)[i] = v + h;
            let up = f(&c);
            field(&mut c)[i] = v - h;
            let down = f(&c);
            field(&mut c)[i] = v;
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}[{i}]: closed form {g}, finite difference {w}"
        );
    }
}

/// A scalar function of the case (the dot product of an output with its cotangent).
type Objective<'f> = Box<dyn Fn(&Case) -> f64 + 'f>;

fn check_against_fd(c: &Case, rng: &mut Rng, tol: f64) {
    let etabar: Vec<f64> = (0..c.rows).map(|_| rng.normal()).collect();
    let ybar: Vec<f64> = (0..c.rows * c.n).map(|_| rng.normal()).collect();
    let fs: [(&str, Objective, Out); 2] = [
        (
            "scale",
            Box::new(|c: &Case| dot(&c.eta(), &etabar)),
            run_vjp(c, Some(&etabar), None),
        ),
        (
            "perturb",
            Box::new(|c: &Case| dot(&c.y(), &ybar)),
            run_vjp(c, None, Some(&ybar)),
        ),
    ];
    for (name, f, out) in fs.iter() {
        let ctx = format!("{name} p={} kind={:?}", c.p, c.kind);
        assert_close(
            &format!("{ctx} x"),
            &out.x,
            &central(c, |c| &mut c.x, f),
            tol,
        );
        assert_close(
            &format!("{ctx} delta"),
            &out.d,
            &central(c, |c| &mut c.d, f),
            tol,
        );
        assert_close(
            &format!("{ctx} eps"),
            &out.eps,
            &central(c, |c| &mut c.eps, f),
            tol,
        );
        if c.kind != Kind::Scalar {
            let lo = central(c, |c| &mut c.lo, f);
            let hi = central(c, |c| &mut c.hi, f);
            assert_close(&format!("{ctx} lower"), out.lo.as_ref().unwrap(), &lo, tol);
            assert_close(&format!("{ctx} upper"), out.hi.as_ref().unwrap(), &hi, tol);
        }
    }
}

#[test]
fn matches_central_differences_reachable() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for p in PS {
        for kind in [Kind::Scalar, Kind::Shared, Kind::Full] {
            for frac in [0.2, 0.6, 0.9] {
                let c = random_case(&mut rng, 3, 12, p, kind, frac);
                check_against_fd(&c, &mut rng, 1e-6);
            }
        }
    }
}

#[test]
fn matches_central_differences_unreachable() {
    // eta follows the element that saturates last: x_k, d_k and its bound get gradient,
    // eps none.
    let mut rng = Rng(0x0bad_cafe_dead_beef);
    for p in PS {
        for kind in [Kind::Scalar, Kind::Shared, Kind::Full] {
            let c = random_case(&mut rng, 3, 10, p, kind, 1.5);
            check_against_fd(&c, &mut rng, 1e-6);
            let out = run_vjp(&c, Some(&[1.0, 1.0, 1.0]), None);
            assert!(out.eps.iter().all(|&e| e == 0.0), "p={p}: {:?}", out.eps);
            for r in 0..c.rows {
                let nz = (0..c.n).filter(|&j| out.x[r * c.n + j] != 0.0).count();
                assert_eq!(nz, 1, "p={p}: one element carries eta");
            }
        }
    }
}

#[test]
fn finite_at_eps_zero() {
    // d eta / d eps at eps = 0 is the right derivative M^(-1/p) (1 / max|d| for p = inf),
    // where M sums |d_i|^p over the elements with room; nothing else moves eta.
    let mut rng = Rng(42);
    for p in PS {
        let mut c = random_case(&mut rng, 2, 9, p, Kind::Full, 0.5);
        c.eps = vec![0.0; 2];
        c.x[3] = c.hi[3]; // no room upwards: saturated from the start
        c.d[3] = c.d[3].abs() + 0.5;
        let out = run_vjp(&c, Some(&[1.0, 1.0]), None);
        for r in 0..c.rows {
            let h = 1e-7;
            let mut c2 = c.clone();
            c2.eps[r] = h;
            let right = c2.eta()[r] / h;
            assert!(out.eps[r].is_finite());
            assert!(
                (out.eps[r] - right).abs() <= 1e-6 * right,
                "p={p} row {r}: {} vs right difference {right}",
                out.eps[r]
            );
        }
        assert!(out.x.iter().chain(&out.d).all(|&v| v == 0.0));
        assert!(out
            .lo
            .unwrap()
            .iter()
            .chain(&out.hi.unwrap())
            .all(|&v| v == 0.0));
    }
}

#[test]
fn pinf_only_eps_and_the_arg_min_direction() {
    let mut rng = Rng(7);
    let c = random_case(&mut rng, 4, 16, f64::INFINITY, Kind::Full, 0.3);
    let out = run_vjp(&c, Some(&[1.0; 4]), None);
    assert!(out.x.iter().all(|&v| v == 0.0));
    assert!(out
        .lo
        .unwrap()
        .iter()
        .chain(&out.hi.unwrap())
        .all(|&v| v == 0.0));
    for r in 0..c.rows {
        let nz = (0..c.n).filter(|&j| out.d[r * c.n + j] != 0.0).count();
        assert_eq!(nz, 1);
        assert!(out.eps[r] > 0.0);
    }
}

#[test]
fn zero_directions_and_small_p_at_zero_room() {
    // d_j = 0: no gradient through eta, but perturb passes ybar_j to x_j and eta * ybar_j to
    // d_j. s_j = 0 with p < 1: contributes 0 instead of an infinite s^(p-1).
    let x = [0.5, 0.3, 1.0, 0.2];
    let d = [1.0, 0.0, 1.0, -2.0];
    let c = Case {
        x: x.to_vec(),
        d: d.to_vec(),
        lo: vec![],
        hi: vec![],
        eps: vec![0.4],
        rows: 1,
        n: 4,
        p: 0.5,
        kind: Kind::Scalar,
    };
    let eta = c.eta()[0];
    let ybar = [1.0, 2.0, 3.0, 4.0];
    let out = run_vjp(&c, None, Some(&ybar));
    assert!(out.x.iter().chain(&out.d).all(|v| v.is_finite()));
    // element 1 (d = 0) moves freely: its own cotangent only
    assert_eq!(out.x[1], 2.0);
    assert_eq!(out.d[1], 2.0 * eta);
    // element 2 sits on the upper bound from the start: its x gets no finite s^(p-1)
    let s = run_vjp(&c, Some(&[1.0]), None);
    assert_eq!(s.x[2], 0.0);
    assert_eq!(s.d[1], 0.0);
    let fd = central(&c, |c| &mut c.eps, &|c: &Case| c.eta()[0]);
    assert!((s.eps[0] - fd[0]).abs() < 1e-6 * fd[0].abs().max(1.0));
}

#[test]
fn f32_agrees_with_f64() {
    let mut rng = Rng(99);
    for p in PS {
        let c = random_case(&mut rng, 3, 40, p, Kind::Shared, 0.6);
        let ybar: Vec<f64> = (0..c.rows * c.n).map(|_| rng.normal()).collect();
        let want = run_vjp(&c, None, Some(&ybar));
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let (x, d, lo, hi, yb) = (f(&c.x), f(&c.d), f(&c.lo), f(&c.hi), f(&ybar));
        let batch = Batch {
            x: &x,
            delta: &d,
            rows: c.rows,
            n: c.n,
            lower: Bound::Shared(&lo),
            upper: Bound::Shared(&hi),
            eps: Eps::PerRow(&c.eps),
            norm: Norm::new(p).unwrap(),
        };
        let (mut xb, mut db, mut eb) = (vec![0f32; x.len()], vec![0f32; x.len()], vec![0.0; 3]);
        let (mut lb, mut ub) = (vec![0f32; c.n], vec![0f32; c.n]);
        let grads = Grads {
            x: &mut xb,
            delta: &mut db,
            eps: &mut eb,
            lower: Some(&mut lb),
            upper: Some(&mut ub),
        };
        perturb_vjp(&batch, &Options::default(), None, &yb, grads).unwrap();
        let g = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        assert_close("f32 x", &g(&xb), &want.x, 1e-4);
        assert_close("f32 delta", &g(&db), &want.d, 1e-4);
        assert_close("f32 eps", &eb, &want.eps, 1e-4);
        assert_close("f32 lower", &g(&lb), want.lo.as_ref().unwrap(), 1e-4);
        assert_close("f32 upper", &g(&ub), want.hi.as_ref().unwrap(), 1e-4);
    }
}

#[test]
fn given_eta_skips_the_solve_with_the_same_result() {
    let mut rng = Rng(5);
    let c = random_case(&mut rng, 4, 30, 2.0, Kind::Full, 0.5);
    let ybar: Vec<f64> = (0..c.rows * c.n).map(|_| rng.normal()).collect();
    let want = run_vjp(&c, None, Some(&ybar));
    let eta = c.eta();
    let (mut xb, mut db, mut eb) = (vec![0.0; 120], vec![0.0; 120], vec![0.0; 4]);
    let grads = Grads {
        x: &mut xb,
        delta: &mut db,
        eps: &mut eb,
        lower: None,
        upper: None,
    };
    perturb_vjp(&c.batch(), &Options::default(), Some(&eta), &ybar, grads).unwrap();
    assert_eq!(xb, want.x);
    assert_eq!(db, want.d);
    assert_eq!(eb, want.eps);
}

#[test]
fn errors() {
    let c = random_case(&mut Rng(3), 2, 4, 2.0, Kind::Full, 0.5);
    let (mut xb, mut db, mut eb) = (vec![0.0; 8], vec![0.0; 8], vec![0.0; 2]);
    let mut short = vec![0.0; 3];
    let grads = Grads {
        x: &mut xb,
        delta: &mut db,
        eps: &mut eb,
        lower: Some(&mut short),
        upper: None,
    };
    let err = scale_vjp(&c.batch(), &Options::default(), None, &[1.0, 1.0], grads).unwrap_err();
    assert_eq!(
        err,
        CoreError::Length {
            arg: "lower_grad",
            expected: 8,
            got: 3
        }
    );
    let mut bad = c.clone();
    bad.x[5] = f64::NAN;
    let grads = Grads {
        x: &mut xb,
        delta: &mut db,
        eps: &mut eb,
        lower: None,
        upper: None,
    };
    let err = scale_vjp(&bad.batch(), &Options::default(), None, &[1.0, 1.0], grads).unwrap_err();
    assert_eq!(
        err,
        CoreError::NonFinite {
            arg: "x",
            count: 1,
            first: 5
        }
    );
}

#[test]
fn bitwise_identical_for_any_thread_count() {
    // One long f32 row (split into parallel blocks) and many short rows with shared bounds.
    let mut rng = Rng(11);
    let long = random_case(&mut rng, 1, 300_000, 3.0, Kind::Full, 0.5);
    let many = random_case(&mut rng, 64, 5000, 2.0, Kind::Shared, 0.5);
    for c in [long, many] {
        let ybar: Vec<f32> = (0..c.rows * c.n).map(|_| rng.normal() as f32).collect();
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let (x, d, lo, hi) = (f(&c.x), f(&c.d), f(&c.lo), f(&c.hi));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let kind = |v| match c.kind {
                    Kind::Full => Bound::Full(v),
                    _ => Bound::Shared(v),
                };
                let batch = Batch {
                    x: &x,
                    delta: &d,
                    rows: c.rows,
                    n: c.n,
                    lower: kind(&lo),
                    upper: kind(&hi),
                    eps: Eps::PerRow(&c.eps),
                    norm: Norm::new(c.p).unwrap(),
                };
                let total = x.len();
                let (mut xb, mut db, mut eb) =
                    (vec![0f32; total], vec![0f32; total], vec![0.0; c.rows]);
                let (mut lb, mut ub) = (vec![0f32; lo.len()], vec![0f32; hi.len()]);
                let grads = Grads {
                    x: &mut xb,
                    delta: &mut db,
                    eps: &mut eb,
                    lower: Some(&mut lb),
                    upper: Some(&mut ub),
                };
                perturb_vjp(&batch, &Options::default(), None, &ybar, grads).unwrap();
                let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<u32>>();
                let ebits = eb.iter().map(|a| a.to_bits()).collect::<Vec<u64>>();
                (bits(&xb), bits(&db), ebits, bits(&lb), bits(&ub))
            })
        };
        let one = run(1);
        for threads in [2, 3, 8] {
            assert!(one == run(threads), "differs with {threads} threads");
        }
    }
}

/// The VJP with `ybar` given in the `x` output, and the usual one, on `ybar` (f32 or f64
/// bits, per output).
fn in_place_and_not<T: clipresc_core::Real>(
    batch: &Batch<'_, T>,
    ybar: &[T],
    nb: usize,
) -> [Vec<Vec<T>>; 2] {
    let run = |in_place: bool| {
        let total = ybar.len();
        let mut xb = if in_place {
            ybar.to_vec()
        } else {
            vec![T::of_f64(f64::NAN); total]
        };
        let mut db = vec![T::of_f64(f64::NAN); total];
        let mut eb = vec![f64::NAN; batch.rows];
        let (mut lb, mut ub) = (vec![T::of_f64(f64::NAN); nb], vec![T::of_f64(f64::NAN); nb]);
        let grads = Grads {
            x: &mut xb,
            delta: &mut db,
            eps: &mut eb,
            lower: (nb > 0).then_some(&mut lb[..]),
            upper: (nb > 0).then_some(&mut ub[..]),
        };
        let opts = Options::default();
        if in_place {
            perturb_vjp_in_place(batch, &opts, None, grads).unwrap();
        } else {
            perturb_vjp(batch, &opts, None, ybar, grads).unwrap();
        }
        let eb = eb.iter().map(|&v| T::of_f64(v)).collect();
        vec![xb, db, eb, lb, ub]
    };
    [run(false), run(true)]
}

#[test]
fn in_place_is_bitwise_the_out_of_place_result() {
    let mut rng = Rng(23);
    let bits = |v: &[Vec<f64>]| -> Vec<Vec<u64>> {
        v.iter()
            .map(|a| a.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    for p in PS {
        for kind in [Kind::Scalar, Kind::Shared, Kind::Full] {
            // reachable, unreachable, eps = 0
            for frac in [0.5, 1.5, 0.0] {
                let c = random_case(&mut rng, 7, 40, p, kind, frac);
                let ybar: Vec<f64> = (0..c.rows * c.n).map(|_| rng.normal()).collect();
                let [a, b] = in_place_and_not(&c.batch(), &ybar, c.lo.len());
                assert!(
                    bits(&a) == bits(&b),
                    "p {p}, {kind:?}, frac {frac}: in place differs"
                );
            }
        }
    }
    // f32, one long row split into parallel blocks, and many rows; several thread counts
    let long = random_case(&mut rng, 1, 300_000, 3.0, Kind::Full, 0.5);
    let many = random_case(&mut rng, 64, 5000, 2.0, Kind::Scalar, 0.5);
    for c in [long, many] {
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let (x, d, lo, hi) = (f(&c.x), f(&c.d), f(&c.lo), f(&c.hi));
        let ybar: Vec<f32> = (0..c.rows * c.n).map(|_| rng.normal() as f32).collect();
        let side = |v, scalar| match c.kind {
            Kind::Full => Bound::Full(v),
            _ => Bound::Scalar(scalar),
        };
        let batch = Batch {
            x: &x,
            delta: &d,
            rows: c.rows,
            n: c.n,
            lower: side(&lo, 0.0),
            upper: side(&hi, 1.0),
            eps: Eps::PerRow(&c.eps),
            norm: Norm::new(c.p).unwrap(),
        };
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let [a, b] = pool.install(|| in_place_and_not(&batch, &ybar, c.lo.len()));
            let bits = |v: &[Vec<f32>]| -> Vec<Vec<u32>> {
                v.iter()
                    .map(|a| a.iter().map(|x| x.to_bits()).collect())
                    .collect()
            };
            assert!(bits(&a) == bits(&b), "f32 with {threads} threads: differs");
        }
    }
}
