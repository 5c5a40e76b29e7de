//! The VJP's lane loops give bitwise the same results whichever instruction set runs them,
//! and [`key_bound`] decides saturation exactly like comparing the key in `f64`.
use super::*;
use crate::bounds::{ScalarSide, SliceSide};
use crate::norm::{PAny, P1, P2};

/// Deterministic uniform numbers in `[0, 1)` (no dependency needed for test data).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `x` in `[0, 1]` (some on the bounds), `delta` of both signs (some zero), `ybar`, and
/// per-element bounds around `x`.
fn data<T: Real>(n: usize, seed: u64) -> [Vec<T>; 5] {
    let mut r = Lcg(seed);
    let mut v: [Vec<T>; 5] = Default::default();
    for i in 0..n {
        let x = match i % 17 {
            0 => 0.0,
            1 => 1.0,
            _ => r.next(),
        };
        let d = if i % 13 == 0 {
            0.0
        } else {
            2.0 * r.next() - 1.0
        };
        v[0].push(T::of_f64(x));
        v[1].push(T::of_f64(d));
        v[2].push(T::of_f64(2.0 * r.next() - 1.0));
        v[3].push(T::of_f64(x - r.next() * 0.5));
        v[4].push(T::of_f64(x + r.next() * 0.5));
    }
    v
}

/// Scales to try: typical ones, and one equal to an element's key (a tie).
fn etas<T: Real>(x: &[T], d: &[T]) -> Vec<f64> {
    let i = x.len() / 2;
    let k = (T::one() - x[i]) / d[i].abs();
    vec![0.0, 0.3, 0.7, 2.5, k.as_f64()]
}

fn same_acc(a: Acc, b: Acc) {
    assert_eq!(a.m.to_bits(), b.m.to_bits());
    assert_eq!(a.a_reach.to_bits(), b.a_reach.to_bits());
    assert_eq!(a.ebar.to_bits(), b.ebar.to_bits());
}

fn same_bits<T: Real>(a: &[T], b: &[T]) {
    for (i, (u, v)) in a.iter().zip(b).enumerate() {
        assert_eq!(u.as_f64().to_bits(), v.as_f64().to_bits(), "element {i}");
    }
}

/// Every version of the scans and the write pass against the generic loops, for one row
/// and one kind of bounds.
fn check_row<T: Real, L: SideAccess<T>, H: SideAccess<T>>(row: &Row<'_, T, L, H>, y: &[T]) {
    let n = row.len();
    for eta in etas(row.x, row.d) {
        for (pw, inf) in [(PAny(2.0), false), (PAny(1.5), false), (PAny(0.7), true)] {
            let want = (
                scan_finite::<T, PAny, L, H, true>(row, pw, eta, y, 0, n),
                scan_inf::<T, L, H, true>(row, eta, T::of_f64(0.3), y, 0, n),
                scan_finite::<T, P2, L, H, false>(row, P2, eta, y, 0, n),
            );
            let info = Info {
                eta,
                eb: 0.75,
                mode: if inf {
                    Mode::Zero
                } else {
                    Mode::Regular { inv_m: 0.5 }
                },
            };
            let c = Consts::<T, f64>::of(&info);
            let write = |f: &dyn Fn(&mut RowOut<'_, T>)| written(n, f);
            let want_w =
                write(&|o| write_range::<T, PAny, L, H, F<true, true>, f64>(pw, row, &c, y, 0, o));
            #[cfg(target_arch = "x86_64")]
            {
                let mut checked = 0;
                if crate::simd::has_avx2() {
                    // SAFETY: `has_avx2` confirmed that this CPU runs AVX2 and FMA.
                    let got = unsafe {
                        (
                            scan_finite_avx2::<T, PAny, L, H, true>(row, pw, eta, y, 0, n),
                            scan_inf_avx2::<T, L, H, true>(row, eta, T::of_f64(0.3), y, 0, n),
                            scan_finite_avx2::<T, P2, L, H, false>(row, P2, eta, y, 0, n),
                        )
                    };
                    same_acc(want.0, got.0);
                    same_acc(want.1, got.1);
                    same_acc(want.2, got.2);
                    let got_w = write(&|o| {
                        // SAFETY: as above.
                        unsafe {
                            write_range_avx2::<T, PAny, L, H, F<true, true>, f64>(
                                pw, row, &c, y, 0, o,
                            )
                        }
                    });
                    for (a, b) in want_w.iter().zip(&got_w) {
                        same_bits(a, b);
                    }
                    checked += 1;
                }
                if crate::simd::has_avx512() {
                    // SAFETY: `has_avx512` confirmed that this CPU runs the AVX-512 subsets
                    // (and AVX2, FMA) these versions are compiled for.
                    let got = unsafe {
                        (
                            scan_finite_avx512::<T, PAny, L, H, true>(row, pw, eta, y, 0, n),
                            scan_inf_avx512::<T, L, H, true>(row, eta, T::of_f64(0.3), y, 0, n),
                            scan_finite_avx512::<T, P2, L, H, false>(row, P2, eta, y, 0, n),
                        )
                    };
                    same_acc(want.0, got.0);
                    same_acc(want.1, got.1);
                    same_acc(want.2, got.2);
                    let got_w = write(&|o| {
                        // SAFETY: as above.
                        unsafe {
                            write_range_avx512::<T, PAny, L, H, F<true, true>, f64>(
                                pw, row, &c, y, 0, o,
                            )
                        }
                    });
                    for (a, b) in want_w.iter().zip(&got_w) {
                        same_bits(a, b);
                    }
                    checked += 1;
                }
                // the generic loops are what every other version is held to
                let _ = checked;
            }
        }
    }
}

/// Every row output of one write pass into fresh arrays: `[x, delta, lower, upper]`.
fn written<T: Real>(n: usize, f: &dyn Fn(&mut RowOut<'_, T>)) -> [Vec<T>; 4] {
    let (mut gx, mut gd) = (vec![T::zero(); n], vec![T::zero(); n]);
    let (mut gl, mut gh) = (vec![T::zero(); n], vec![T::zero(); n]);
    let mut o = RowOut {
        x: &mut gx,
        d: &mut gd,
        lo: Some(&mut gl),
        hi: Some(&mut gh),
    };
    f(&mut o);
    [gx, gd, gl, gh]
}

/// The write pass in `f32` arithmetic (what [`narrow`] picks for `f32` rows with `p` in
/// {1, 2}): every instruction set agrees with the generic loop bitwise; against the `f64`
/// arithmetic each cotangent is within 3 ulps of the largest term it sums (`|ybar eta|`,
/// `|cs v|`, `|cd v|`), and without the `eta` terms it is the same correctly rounded value.
fn check_narrow_row<L: SideAccess<f32>, H: SideAccess<f32>>(row: &Row<'_, f32, L, H>, y: &[f32]) {
    let n = row.len();
    for eta in etas(row.x, row.d) {
        // the forward hands the backward an `eta` of the data's type
        let eta = f64::from(eta as f32);
        for reg in [true, false] {
            let info = Info {
                eta,
                eb: -0.8125,
                mode: if reg {
                    Mode::Regular { inv_m: 0.375 }
                } else {
                    Mode::Zero
                },
            };
            if eta == 0.0 && reg {
                continue; // Mode::Regular has eta > 0
            }
            assert!(narrow::<f32, P2>(&info));
            let (cw, cn) = (Consts::<f32, f64>::of(&info), Consts::<f32, f32>::of(&info));
            let wide = written(n, &|o| {
                write_range::<f32, P2, L, H, F<true, true>, f64>(P2, row, &cw, y, 0, o)
            });
            let thin = written(n, &|o| {
                write_range::<f32, P2, L, H, F<true, true>, f32>(P2, row, &cn, y, 0, o)
            });
            for i in 0..n {
                let (x, d) = (row.x[i], row.d[i]);
                let (_, a, s) = classify(cw.thr, x, d, row.lo.at(i), row.hi.at(i));
                let big = (f64::from(y[i]).abs() * eta)
                    .max(f64::from(y[i]).abs())
                    .max(cw.cs.abs() * f64::from(s.max(a)) / eta.max(1e-30))
                    .max(cw.cd.abs() * f64::from(a));
                let ulp = big * f64::from(f32::EPSILON);
                for k in 0..4 {
                    let (w, t) = (f64::from(wide[k][i]), f64::from(thin[k][i]));
                    if reg {
                        assert!(
                            (w - t).abs() <= 3.0 * ulp,
                            "eta {eta} out {k} el {i}: {w} vs {t}"
                        );
                    } else {
                        assert_eq!(w.to_bits(), t.to_bits(), "eta {eta} out {k} el {i}");
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            {
                if crate::simd::has_avx2() {
                    // SAFETY: `has_avx2` confirmed that this CPU runs AVX2 and FMA.
                    let got = written(n, &|o| unsafe {
                        write_range_avx2::<f32, P2, L, H, F<true, true>, f32>(P2, row, &cn, y, 0, o)
                    });
                    for (a, b) in thin.iter().zip(&got) {
                        same_bits(a, b);
                    }
                }
                if crate::simd::has_avx512() {
                    // SAFETY: `has_avx512` confirmed that this CPU runs the AVX-512 subsets
                    // (and AVX2, FMA) these versions are compiled for.
                    let got = written(n, &|o| unsafe {
                        write_range_avx512::<f32, P2, L, H, F<true, true>, f32>(
                            P2, row, &cn, y, 0, o,
                        )
                    });
                    for (a, b) in thin.iter().zip(&got) {
                        same_bits(a, b);
                    }
                }
            }
        }
    }
}

#[test]
fn the_f32_write_pass_is_within_ulps_of_the_f64_one() {
    on_rows(&[(7, 12), (300, 13), (3072, 14)], &NarrowWithinUlps);
}

/// [`narrow`] keeps `f64` arithmetic for `f64` data, for `p` whose `v^(p-1)` rounds, and
/// for row constants near the ends of `f32`'s range.
#[test]
fn narrow_only_where_f32_arithmetic_is_safe() {
    let info = |eta: f64, eb: f64, inv_m: f64| Info {
        eta,
        eb,
        mode: Mode::Regular { inv_m },
    };
    assert!(narrow::<f32, P2>(&info(0.5, 1.0, 2.0)));
    assert!(narrow::<f32, P1>(&info(0.5, 1.0, 2.0)));
    assert!(!narrow::<f64, P2>(&info(0.5, 1.0, 2.0)));
    assert!(!narrow::<f32, PAny>(&info(0.5, 1.0, 2.0)));
    assert!(narrow::<f32, PAny>(&Info {
        eta: 0.5,
        eb: 1.0,
        mode: Mode::Zero
    }));
    assert!(!narrow::<f32, P2>(&info(1e-35, 1.0, 2.0)));
    assert!(!narrow::<f32, P2>(&info(0.5, 1e35, 2.0)));
    assert!(!narrow::<f32, P2>(&info(0.5, 1.0, 1e-35)));
    assert!(!narrow::<f32, P2>(&info(0.5, f64::INFINITY, 2.0)));
}

/// A check of one row (with its cotangent `y`), run by [`on_rows`] on each kind of bounds.
trait RowCheck<T: Real> {
    fn check<L: SideAccess<T>, H: SideAccess<T>>(&self, row: &Row<'_, T, L, H>, y: &[T]);
}

/// [`check_row`].
struct Bitwise;

impl<T: Real> RowCheck<T> for Bitwise {
    fn check<L: SideAccess<T>, H: SideAccess<T>>(&self, row: &Row<'_, T, L, H>, y: &[T]) {
        check_row(row, y);
    }
}

/// [`check_narrow_row`].
struct NarrowWithinUlps;

impl RowCheck<f32> for NarrowWithinUlps {
    fn check<L: SideAccess<f32>, H: SideAccess<f32>>(&self, row: &Row<'_, f32, L, H>, y: &[f32]) {
        check_narrow_row(row, y);
    }
}

/// `c` on the row of [`data`] for each `(n, seed)` of `cases`, once with the bounds (0, 1)
/// and once with per-element bounds.
fn on_rows<T: Real>(cases: &[(usize, u64)], c: &impl RowCheck<T>) {
    for &(n, seed) in cases {
        let [x, d, y, lo, hi] = data::<T>(n, seed);
        let scalar = Row {
            x: &x,
            d: &d,
            lo: ScalarSide(T::zero()),
            hi: ScalarSide(T::one()),
        };
        c.check(&scalar, &y);
        let slices = Row {
            x: &x,
            d: &d,
            lo: SliceSide(&lo[..]),
            hi: SliceSide(&hi[..]),
        };
        c.check(&slices, &y);
    }
}

fn check_type<T: Real>() {
    let cases = [(1, 1), (7, 2), (64, 3), (300, 4), (3072, 5), (5000, 6)];
    on_rows::<T>(&cases, &Bitwise);
}

#[test]
fn lane_loops_agree_bitwise_in_every_instruction_set_f32() {
    check_type::<f32>();
}

#[test]
fn lane_loops_agree_bitwise_in_every_instruction_set_f64() {
    check_type::<f64>();
}

/// `key <= key_bound(eta)` exactly when `key as f64 <= eta`, also at ties, at the
/// neighbours of `eta` in `f32`, beyond `f32`'s range, and for infinities and NaN.
#[test]
fn key_bound_decides_like_the_f64_comparison() {
    let mut r = Lcg(9);
    let mut etas = vec![
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::from(f32::MAX) * 2.0,
        -f64::from(f32::MAX) * 2.0,
        f64::from(f32::MAX),
        1e-45,
        1e-300,
    ];
    for _ in 0..2000 {
        let e = (r.next() * 40.0 - 20.0).exp2() * if r.next() < 0.1 { -1.0 } else { 1.0 };
        let f = e as f32;
        etas.extend([
            e,
            f64::from(f),
            f64::from(f.next_up()),
            f64::from(f.next_down()),
        ]);
    }
    for &eta in &etas {
        let thr = key_bound::<f32>(eta);
        let f = eta as f32;
        let keys = [
            f,
            f.next_up(),
            f.next_down(),
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            (r.next() * 4.0) as f32,
        ];
        for k in keys {
            assert_eq!(k <= thr, f64::from(k) <= eta, "key {k:e}, eta {eta:e}");
        }
        let thr64 = key_bound::<f64>(eta);
        for k in [eta, 0.0, 1.0, f64::INFINITY, f64::NAN] {
            assert_eq!(k <= thr64, k <= eta);
        }
    }
}
