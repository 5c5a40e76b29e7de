//! The VJP's lane loops give bitwise the same results whichever instruction set runs them,
//! and [`key_bound`] decides saturation exactly like comparing the key in `f64`.
use super::*;
use crate::bounds::{ScalarSide, SliceSide};
use crate::norm::{PAny, P2};

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
            let c = Consts::<T>::of(&info);
            let write = |f: &dyn Fn(&mut RowOut<'_, T>)| {
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
            };
            let want_w =
                write(&|o| write_range::<T, PAny, L, H, F<true, true>>(pw, row, &c, y, 0, o));
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
                            write_range_avx2::<T, PAny, L, H, F<true, true>>(pw, row, &c, y, 0, o)
                        }
                    });
                    for (a, b) in want_w.iter().zip(&got_w) {
                        same_bits(a, b);
                    }
                    checked += 1;
                }
                if crate::vjp_simd::has_avx512() {
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
                            write_range_avx512::<T, PAny, L, H, F<true, true>>(pw, row, &c, y, 0, o)
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

fn check_type<T: Real>() {
    for (n, seed) in [
        (1usize, 1u64),
        (7, 2),
        (64, 3),
        (300, 4),
        (3072, 5),
        (5000, 6),
    ] {
        let [x, d, y, lo, hi] = data::<T>(n, seed);
        let scalar = Row {
            x: &x,
            d: &d,
            lo: ScalarSide(T::zero()),
            hi: ScalarSide(T::one()),
        };
        check_row(&scalar, &y);
        let slices = Row {
            x: &x,
            d: &d,
            lo: SliceSide(&lo[..]),
            hi: SliceSide(&hi[..]),
        };
        check_row(&slices, &y);
    }
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
