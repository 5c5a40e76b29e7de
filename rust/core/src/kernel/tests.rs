//! The hand-written AVX2 and AVX-512 kernels against the generic lane loops (compiled for
//! the baseline CPU): the same sums, counts and candidates on every kind of chunk. Each
//! kernel set the CPU runs is tested on its own (on a CPU with AVX-512 the AVX2 kernels
//! too), besides the one the dispatch picks.

use super::apply::apply_chunk;
use super::dispatch::{apply_with, first_diff_with, first_with, Avx2, Avx512, Kernels};
use super::passes::{chunk_first, chunk_inf};
use super::*;
use crate::bounds::{ScalarSide, SliceSide};
use crate::norm::{PHalf, Power, P1, P2};
use crate::safeguard::Cand;

#[path = "../../tests/common/mod.rs"]
mod common;
use common::Rng;

/// Image-like data in [0, 1] (a quarter of it on the bounds), Gaussian-ish delta with
/// some zeros; `poison` puts a NaN, an infinity or an out-of-box `x` at one element.
fn data<T: Real>(n: usize, seed: u64, poison: Option<(usize, u8)>) -> (Vec<T>, Vec<T>) {
    let mut g = Rng(seed | 1);
    let x: Vec<f64> = (0..n)
        .map(|_| match (g.next() * 8.0) as u32 {
            0 => 0.0,
            1 => 1.0,
            _ => g.next(),
        })
        .collect();
    let d: Vec<f64> = (0..n)
        .map(|_| {
            let u = g.next();
            if u < 0.05 {
                0.0
            } else {
                (g.next() + g.next() + g.next() - 1.5) * 0.2
            }
        })
        .collect();
    let (mut x, mut d): (Vec<T>, Vec<T>) = (
        x.into_iter().map(T::of_f64).collect(),
        d.into_iter().map(T::of_f64).collect(),
    );
    if let Some((i, kind)) = poison {
        match kind {
            0 => d[i] = T::nan(),
            1 => d[i] = T::neg_infinity(),
            2 => x[i] = T::of_f64(1.5),
            _ => x[i] = T::nan(),
        }
    }
    (x, d)
}

fn sorted(c: &[Cand]) -> Vec<(f64, f64, f64)> {
    let mut v: Vec<_> = c.iter().map(|c| (c.key, c.w, c.c)).collect();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()) + f64::MIN_POSITIVE
}

fn compare<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    bracket: (T, T),
    validate: bool,
    what: &str,
) {
    let dispatched = row_pass_first(row, pw, bracket, validate, false);
    let mut hands = vec![("dispatched", dispatched)];
    if let Some(p2) = pw.kernel_k() {
        let b = (bracket.0.as_f64(), bracket.1.as_f64());
        let mut each = |name: &'static str, k: Option<FirstSums>| {
            if let Some(k) = k {
                hands.push((name, k));
            }
        };
        each(
            "avx2 f32",
            first_with::<Avx2, f32, _, _, _>(row, p2, b, validate, false),
        );
        each(
            "avx2 f64",
            first_with::<Avx2, f64, _, _, _>(row, p2, b, validate, false),
        );
        each(
            "avx512 f32",
            first_with::<Avx512, f32, _, _, _>(row, p2, b, validate, false),
        );
        each(
            "avx512 f64",
            first_with::<Avx512, f64, _, _, _>(row, p2, b, validate, false),
        );
        let kernel_sets = usize::from(<Avx2 as Kernels<f32>>::available())
            + usize::from(<Avx512 as Kernels<f32>>::available());
        assert_eq!(
            hands.len(),
            1 + kernel_sets,
            "{what}: one result per kernel set"
        );
    }
    for (name, hand) in hands {
        compare_one(row, pw, bracket, validate, &format!("{what} {name}"), hand);
    }
}

fn compare_one<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    bracket: (T, T),
    validate: bool,
    what: &str,
    hand: FirstSums,
) {
    let generic = if validate {
        chunk_first::<T, P, P, L, H, true>(row, pw, pw, bracket.0, bracket.1)
    } else {
        chunk_first::<T, P, P, L, H, false>(row, pw, pw, bracket.0, bracket.1)
    };
    assert_eq!(hand.bad != 0, generic.bad != 0, "{what}: invalid flag");
    if generic.bad != 0 {
        return;
    }
    // Lanes are summed in a different order (and f32 in f32 within a piece).
    let tol = 64.0 * T::EPS;
    assert_eq!(hand.nsat_lo, generic.nsat_lo, "{what}: saturated count");
    assert!(
        close(hand.c_lo, generic.c_lo, tol),
        "{what}: caps {} vs {}",
        hand.c_lo,
        generic.c_lo
    );
    assert!(
        close(hand.m_hi, generic.m_hi, tol),
        "{what}: weights {} vs {}",
        hand.m_hi,
        generic.m_hi
    );
    if validate {
        assert_eq!(hand.amax, generic.amax, "{what}: largest |delta|");
    }
    assert_eq!(
        sorted(&hand.cands),
        sorted(&generic.cands),
        "{what}: candidates"
    );
}

fn agree<T: Real>() {
    let lengths = [0usize, 1, 3, 4, 7, 8, 9, 15, 17, 31, 33, 1000, 1024, 1029];
    for (li, &n) in lengths.iter().enumerate() {
        for poison in [None, Some(0u8), Some(1), Some(2), Some(3)] {
            let at = poison.map(|k| (n.saturating_sub(1) * (li + 1) / lengths.len(), k));
            if n == 0 && at.is_some() {
                continue;
            }
            let (x, d) = data::<T>(n, 7 + li as u64, at);
            let (lo_v, hi_v) = (vec![T::zero(); n], vec![T::one(); n]);
            for bracket in [(0.5, 2.0), (1.0, 1.0), (0.0, 0.0), (3.0, 1e9)] {
                let b = (T::of_f64(bracket.0), T::of_f64(bracket.1));
                for validate in [true, false] {
                    if !validate && poison.is_some() {
                        continue;
                    }
                    let what = format!("{} n={n} {poison:?} {bracket:?} {validate}", T::NAME);
                    let scalar = Row {
                        x: &x,
                        d: &d,
                        lo: ScalarSide(T::zero()),
                        hi: ScalarSide(T::one()),
                    };
                    compare(&scalar, P2, b, validate, &format!("{what} p2 scalar"));
                    compare(&scalar, P1, b, validate, &format!("{what} p1 scalar"));
                    let one_sided = Row {
                        hi: ScalarSide(T::infinity()),
                        ..scalar
                    };
                    compare(&one_sided, P2, b, validate, &format!("{what} p2 one-sided"));
                    let slices = Row {
                        x: &x,
                        d: &d,
                        lo: SliceSide(&lo_v[..]),
                        hi: SliceSide(&hi_v[..]),
                    };
                    compare(&slices, P2, b, validate, &format!("{what} p2 slices"));
                    let mixed = Row {
                        x: &x,
                        d: &d,
                        lo: ScalarSide(T::zero()),
                        hi: SliceSide(&hi_v[..]),
                    };
                    compare(&mixed, P1, b, validate, &format!("{what} p1 mixed"));
                    compare(
                        &scalar,
                        PHalf::<1>,
                        b,
                        validate,
                        &format!("{what} p0.5 scalar"),
                    );
                    compare(
                        &slices,
                        PHalf::<3>,
                        b,
                        validate,
                        &format!("{what} p1.5 slices"),
                    );
                    compare(&mixed, PHalf::<6>, b, validate, &format!("{what} p3 mixed"));
                }
            }
        }
    }
}

#[test]
fn f32_kernels_agree_with_the_generic_loops() {
    agree::<f32>();
}

#[test]
fn f64_kernels_agree_with_the_generic_loops() {
    agree::<f64>();
}

/// `apply` against the scalar formula, bit for bit, streaming or not, at every
/// alignment of the output.
fn apply_matches<T: Real>() {
    for n in [0usize, 1, 5, 8, 13, 64, 1031] {
        let (x, d) = data::<T>(n, 99 + n as u64, None);
        let hi_v: Vec<T> = (0..n)
            .map(|i| T::of_f64(0.5 + (i % 3) as f64 * 0.25))
            .collect();
        let eta = T::of_f64(1.7);
        let expect: Vec<T> = (0..n)
            .map(|i| (x[i] + eta * d[i]).max(T::zero()).min(hi_v[i]))
            .collect();
        for stream in [false, true] {
            for shift in 0..4 {
                let mut buf = vec![T::nan(); n + shift];
                let row = Row {
                    x: &x,
                    d: &d,
                    lo: ScalarSide(T::zero()),
                    hi: SliceSide(&hi_v[..]),
                };
                let same = |buf: &[T]| {
                    buf[shift..]
                        .iter()
                        .zip(&expect)
                        .all(|(a, b)| a.to_f64().map(f64::to_bits) == b.to_f64().map(f64::to_bits))
                };
                apply_row(&row, eta, &mut buf[shift..], false, stream);
                assert!(
                    same(&buf),
                    "{} n={n} stream={stream} shift={shift}",
                    T::NAME
                );
                // each kernel set the CPU runs, on its own
                for k in 0..4 {
                    buf.fill(T::nan());
                    let out = &mut buf[shift..];
                    let (name, ran) = match k {
                        0 => (
                            "avx2",
                            apply_with::<Avx2, f32, _, _, _, false>(&row, eta, out, stream),
                        ),
                        1 => (
                            "avx2",
                            apply_with::<Avx2, f64, _, _, _, false>(&row, eta, out, stream),
                        ),
                        2 => (
                            "avx512",
                            apply_with::<Avx512, f32, _, _, _, false>(&row, eta, out, stream),
                        ),
                        _ => (
                            "avx512",
                            apply_with::<Avx512, f64, _, _, _, false>(&row, eta, out, stream),
                        ),
                    };
                    if ran {
                        assert!(
                            same(&buf),
                            "{} {name} n={n} stream={stream} shift={shift}",
                            T::NAME
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn apply_kernels_match_the_formula() {
    apply_matches::<f32>();
    apply_matches::<f64>();
}

/// The `p = inf` pass against a plain loop: the largest `|delta|` among elements with room at
/// least `eps`, the moving count, and the largest room with the largest `|delta|` having it
/// (rooms and deltas drawn from a few values, so that ties are common).
fn inf_pass_matches<T: Real>() {
    let mut g = Rng(12345);
    for n in [1usize, 5, 16, 17, 100, 1024, 1031] {
        for trial in 0..20 {
            let pick = |g: &mut Rng, vals: &[f64]| vals[(g.next() * vals.len() as f64) as usize];
            let x: Vec<T> = (0..n)
                .map(|_| T::of_f64(pick(&mut g, &[0.0, 0.25, 0.5, 0.75, 1.0])))
                .collect();
            let d: Vec<T> = (0..n)
                .map(|_| T::of_f64(pick(&mut g, &[-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])))
                .collect();
            let eps = T::of_f64(pick(&mut g, &[0.25, 0.5, 0.9]));
            let row = Row {
                x: &x,
                d: &d,
                lo: ScalarSide(T::zero()),
                hi: ScalarSide(T::one()),
            };
            let (mut amax, mut nmov, mut best) = (0f64, 0u64, (0f64, 0f64));
            for i in 0..n {
                let (a, s) = (
                    d[i].abs().as_f64(),
                    room(x[i], d[i], T::zero(), T::one()).as_f64(),
                );
                if a > 0.0 {
                    nmov += 1;
                    if s >= eps.as_f64() {
                        amax = amax.max(a);
                    }
                    if s > best.0 || (s == best.0 && a > best.1) {
                        best = (s, a);
                    }
                }
            }
            let what = format!("{} n={n} trial={trial}", T::NAME);
            for got in [chunk_inf(&row, eps), row_pass_inf(&row, eps, false)] {
                assert_eq!((got.amax, got.nmov, got.bad), (amax, nmov, 0), "{what}");
                assert_eq!((got.s_max, got.a_at_s_max), best, "{what}");
            }
        }
    }
}

#[test]
fn inf_pass_finds_the_largest_room_and_its_fastest_element() {
    inf_pass_matches::<f32>();
    inf_pass_matches::<f64>();
}

/// The bits of a first pass's sums, counts and candidates (in order).
type FirstBits = (u64, u64, u64, u64, u64, Vec<(u64, u64, u64)>);

/// The bits of a first pass's result, candidates in order.
fn first_bits(s: &FirstSums) -> FirstBits {
    let cands = s
        .cands
        .iter()
        .map(|c| (c.key.to_bits(), c.w.to_bits(), c.c.to_bits()))
        .collect();
    (
        s.c_lo.to_bits(),
        s.m_hi.to_bits(),
        s.nsat_lo,
        s.bad,
        s.amax.to_bits(),
        cands,
    )
}

/// `first_with` runs a kernel once over each block's whole chunks: bitwise the result of
/// running it on every chunk and adding in row order, whatever the row's length.
fn whole_chunks_match_chunk_by_chunk<K: Kernels<f32>>() {
    if !K::available() {
        return;
    }
    let lengths = [5, CHUNK, CHUNK + 5, 3 * CHUNK + 37, 3 * CHUNK + 700];
    let long = [BLOCK + 1500, 2 * BLOCK + 3, 2 * BLOCK + CHUNK];
    for (li, &n) in lengths.iter().chain(&long).enumerate() {
        let (x, d) = data::<f32>(n, 11 + li as u64, None);
        let hi_v = vec![1f32; n];
        let row = Row {
            x: &x,
            d: &d,
            lo: ScalarSide(0f32),
            hi: SliceSide(&hi_v[..]),
        };
        for (p2, bracket, validate) in [
            (4, (0.5, 2.0), true),
            (4, (1.0, 1.0), false),
            (2, (0.5, 2.0), true),
            (3, (0.5, 2.0), true),
        ] {
            let whole =
                first_with::<K, f32, _, _, _>(&row, p2, bracket, validate, false).expect("f32 row");
            let by_chunk = fold_chunks(&row, false, |r| {
                first_with::<K, f32, _, _, _>(r, p2, bracket, validate, false).expect("f32 row")
            });
            assert_eq!(
                first_bits(&whole),
                first_bits(&by_chunk),
                "n={n} p2={p2} {bracket:?} {validate}"
            );
            let split = bracket.0 < bracket.1;
            assert!(
                n < CHUNK || !split || !whole.cands.is_empty(),
                "n={n}: no candidates"
            );
        }
    }
}

#[test]
fn kernels_over_whole_chunks_match_chunk_by_chunk() {
    whole_chunks_match_chunk_by_chunk::<Avx2>();
    whole_chunks_match_chunk_by_chunk::<Avx512>();
}

/// `z = x + d` and the stored `delta = z - x` that the `DIFF` kernels must reproduce.
fn with_z<T: Real>(x: &[T], d: &[T]) -> (Vec<T>, Vec<T>) {
    let z: Vec<T> = x.iter().zip(d).map(|(&x, &d)| x + d).collect();
    let stored = x.iter().zip(&z).map(|(&x, &z)| z - x).collect();
    (z, stored)
}

/// The bits of a slice (NaNs compared by their bits too).
fn bits<T: Real>(v: &[T]) -> Vec<u64> {
    v.iter().map(|a| a.as_f64().to_bits()).collect()
}

/// The `DIFF` forms (`delta = z - x` formed in registers) give bitwise what their stored-
/// `delta` forms give, for each kernel set the CPU runs, every kind of side, invalid rows
/// (`z` NaN, `z - x` overflowing under open bounds) and rows longer than a block (in
/// parallel and not).
fn diff_matches_stored<T: Real>() {
    let lengths = [
        0usize,
        1,
        7,
        17,
        33,
        1000,
        1029,
        3 * CHUNK + 37,
        BLOCK + 1500,
    ];
    for (li, &n) in lengths.iter().enumerate() {
        for poison in [None, Some(0u8), Some(1), Some(2), Some(9)] {
            if n == 0 && poison.is_some() {
                continue;
            }
            let at = n.saturating_sub(1) * (li + 1) / lengths.len();
            let (mut x, d) = data::<T>(
                n,
                31 + li as u64,
                poison.filter(|&k| k < 9).map(|k| (at, k)),
            );
            let (mut z, mut stored) = with_z(&x, &d);
            if poison == Some(9) {
                // z - x overflows (only open bounds admit such x)
                x[at] = -T::max_value();
                z[at] = T::max_value();
                stored[at] = z[at] - x[at];
            }
            let (lo_v, hi_v) = (vec![T::zero(); n], vec![T::one(); n]);
            let open = (ScalarSide(T::neg_infinity()), ScalarSide(T::infinity()));
            macro_rules! check {
                ($lo:expr, $hi:expr, $what:expr) => {{
                    let (rd, rz) = (
                        Row {
                            x: &x,
                            d: &stored,
                            lo: $lo,
                            hi: $hi,
                        },
                        Row {
                            x: &x,
                            d: &z,
                            lo: $lo,
                            hi: $hi,
                        },
                    );
                    let what = format!("{} n={n} {poison:?} {}", T::NAME, $what);
                    for bracket in [(0.5, 2.0), (1.0, 1.0), (0.0, 0.0)] {
                        let b = (T::of_f64(bracket.0), T::of_f64(bracket.1));
                        for par in [false, true] {
                            let want = row_pass_first(&rd, P2, b, true, par);
                            let got = row_pass_first_diff(&rz, b, par).expect("x86_64 kernels");
                            assert_eq!(first_bits(&got), first_bits(&want), "{what} {bracket:?}");
                        }
                        let each = [
                            (
                                first_diff_with::<Avx2, f32, _, _, _>(&rz, bracket, false),
                                first_with::<Avx2, f32, _, _, _>(&rd, 4, bracket, true, false),
                            ),
                            (
                                first_diff_with::<Avx2, f64, _, _, _>(&rz, bracket, false),
                                first_with::<Avx2, f64, _, _, _>(&rd, 4, bracket, true, false),
                            ),
                            (
                                first_diff_with::<Avx512, f32, _, _, _>(&rz, bracket, false),
                                first_with::<Avx512, f32, _, _, _>(&rd, 4, bracket, true, false),
                            ),
                            (
                                first_diff_with::<Avx512, f64, _, _, _>(&rz, bracket, false),
                                first_with::<Avx512, f64, _, _, _>(&rd, 4, bracket, true, false),
                            ),
                        ];
                        for (k, (got, want)) in each.into_iter().enumerate() {
                            assert_eq!(got.is_some(), want.is_some(), "{what} set {k}");
                            if let (Some(g), Some(w)) = (got, want) {
                                assert_eq!(first_bits(&g), first_bits(&w), "{what} set {k}");
                            }
                        }
                    }
                    if poison.is_none() {
                        let eta = T::of_f64(0.37);
                        for stream in [false, true] {
                            let (mut want, mut got) = (vec![T::nan(); n], vec![T::nan(); n]);
                            apply_row(&rd, eta, &mut want, true, stream);
                            apply_row_diff(&rz, eta, &mut got, true, stream);
                            assert_eq!(bits(&got), bits(&want), "{what} apply {stream}");
                            apply_chunk::<_, _, _, true>(&rz, eta, &mut got);
                            assert_eq!(bits(&got), bits(&want), "{what} generic apply");
                            for k in 0..4 {
                                got.fill(T::nan());
                                let ran = match k {
                                    0 => apply_with::<Avx2, f32, _, _, _, true>(
                                        &rz, eta, &mut got, stream,
                                    ),
                                    1 => apply_with::<Avx2, f64, _, _, _, true>(
                                        &rz, eta, &mut got, stream,
                                    ),
                                    2 => apply_with::<Avx512, f32, _, _, _, true>(
                                        &rz, eta, &mut got, stream,
                                    ),
                                    _ => apply_with::<Avx512, f64, _, _, _, true>(
                                        &rz, eta, &mut got, stream,
                                    ),
                                };
                                if ran {
                                    assert_eq!(bits(&got), bits(&want), "{what} apply set {k}");
                                }
                            }
                        }
                    }
                }};
            }
            if poison != Some(9) {
                check!(ScalarSide(T::zero()), ScalarSide(T::one()), "scalar");
                check!(SliceSide(&lo_v[..]), SliceSide(&hi_v[..]), "slices");
                check!(ScalarSide(T::zero()), SliceSide(&hi_v[..]), "mixed");
            }
            check!(open.0, open.1, "open");
        }
    }
}

#[test]
fn diff_kernels_match_the_stored_delta() {
    diff_matches_stored::<f32>();
    diff_matches_stored::<f64>();
}

/// Elements whose validity turns on one comparison at the edge of the box, each alone in
/// a row of valid elements at several lane positions (the vector body and the tail), with
/// per-element bounds: every kernel flags exactly the invalid ones (x not finite, below
/// its lower or above its upper bound, a NaN anywhere), as the generic loops do and as
/// plain comparisons say. The kernels decide this from the rooms `x - lower` and `upper -
/// x` (see `Kernels::first`), so zeros of either sign, subnormal gaps, overflowing rooms
/// and infinite bounds are all here.
fn edges_flagged<T: Real>() {
    let (inf, max, tiny) = (T::infinity(), T::max_value(), T::min_positive_value());
    let sub = tiny * T::epsilon(); // the smallest subnormal
    let (one, zero, nan) = (T::one(), T::zero(), T::nan());
    let below_one = one - T::epsilon() / T::of_f64(2.0);
    // (x, lower, upper)
    let cases = [
        (one, one, one),
        (zero, zero, one),
        (-zero, zero, one),
        (zero, -one, -zero),
        (below_one, one, inf),
        (one, zero, below_one),
        (sub, sub + sub, one),
        (-sub, zero, one),
        (sub, zero, zero),
        (-sub, -sub, -sub),
        (max, -max, max),
        (-max, -max, max),
        (max, -inf, inf),
        (-max, -inf, -max),
        (inf, zero, inf),
        (-inf, -inf, zero),
        (inf, -inf, inf),
        (-inf, -inf, inf),
        (inf, zero, max),
        (zero, inf, inf),
        (zero, -inf, -inf),
        (nan, zero, one),
        (zero, nan, one),
        (zero, zero, nan),
        (one, one, zero),
        (zero, one, zero),
    ];
    for (ci, &(xe, le, he)) in cases.iter().enumerate() {
        let want = !(xe.is_finite() && xe >= le && xe <= he);
        for n in [40usize, 37] {
            for at in [0usize, 13, n - 1] {
                let (mut x, d) = data::<T>(n, 11 + ci as u64, None);
                let (mut lo, mut hi) = (vec![T::zero(); n], vec![T::one(); n]);
                (x[at], lo[at], hi[at]) = (xe, le, he);
                let row = Row {
                    x: &x,
                    d: &d,
                    lo: SliceSide(&lo[..]),
                    hi: SliceSide(&hi[..]),
                };
                let what = format!("{} case {ci} n={n} at {at}", T::NAME);
                let b = (T::of_f64(0.5), T::of_f64(2.0));
                let generic = chunk_first::<T, _, _, _, _, true>(&row, P2, P2, b.0, b.1);
                assert_eq!(generic.bad != 0, want, "{what}: generic loops");
                for bracket in [b, (T::zero(), T::zero())] {
                    compare(&row, P2, bracket, true, &what);
                    compare(&row, P1, bracket, true, &what);
                }
            }
        }
    }
}

#[test]
fn kernels_flag_exactly_the_elements_outside_their_box() {
    edges_flagged::<f32>();
    edges_flagged::<f64>();
}
