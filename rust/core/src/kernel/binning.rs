//! The radix-select safeguard's passes: binning the free elements by their keys' bits,
//! and collecting the candidates of one bin.
// Explicit lane indices (`for k in 0..K`) are the shape the vectoriser needs.
#![allow(clippy::needless_range_loop)]

use super::Row;
use crate::bounds::SideAccess;
use crate::norm::Power;
use crate::real::Real;
use crate::safeguard::{Bins, Cand};

/// What the safeguard's binning pass found (see [`bin_free`]).
pub(crate) struct FreeBins {
    /// `sum c_i` over the moving elements saturated at `eta_t`, in element order.
    pub c_base: f64,
    /// The lowest and highest bin used (`e_lo > e_hi`: none).
    pub e_lo: usize,
    pub e_hi: usize,
    /// The bits of the largest key binned.
    pub key_hi: u64,
}

/// Feeds every moving element of a row to `visit(saturated, candidate)` in element order,
/// `saturated` meaning `s_i <= eta_t |delta_i|`. Keys and powers are computed eight
/// elements at a time (the division vectorises), then visited one by one.
#[inline(always)]
fn for_moving<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    eta_t: T,
    mut visit: impl FnMut(bool, Cand),
) {
    const K: usize = 8;
    let n = row.len();
    let mut base = 0;
    while base < n {
        let len = K.min(n - base);
        let r = row.sub(base, base + len);
        // `Cand::new`'s fields as separate arrays: an array of `Cand` vectorised worse (the
        // adversary took 6% longer).
        // The powers come after the lanes, in a loop of their own, so that for f32 data and
        // a p outside {1, 2} they vectorise too.
        let (mut key, mut w, mut c, mut kind) = ([0f64; K], [0f64; K], [0f64; K], [0u8; K]);
        let mut lane = |k: usize| {
            let (a, s) = r.element(k);
            let (a64, s64) = (a.as_f64(), s.as_f64());
            key[k] = s64 / a64;
            w[k] = a64;
            c[k] = s64;
            // 0: does not move, 1: saturated, 2: free
            kind[k] = ((a != T::zero()) as u8) << ((s <= eta_t * a) as u8 ^ 1);
        };
        if len == K {
            for k in 0..K {
                lane(k);
            }
        } else {
            for k in 0..len {
                lane(k);
            }
        }
        for k in 0..K {
            w[k] = pw.pow_widened::<T>(w[k]);
            c[k] = pw.pow_widened::<T>(c[k]);
        }
        for k in 0..len {
            if kind[k] != 0 {
                let cand = Cand {
                    key: key[k],
                    w: w[k],
                    c: c[k],
                };
                visit(kind[k] == 1, cand);
            }
        }
        base += len;
    }
}

/// The safeguard's binning pass over a row: the caps of the moving elements saturated at
/// `eta_t`, and each free element's candidate added to `bins` at its key's bits above
/// `shift`.
#[inline(always)]
fn bin_free<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    eta_t: T,
    shift: u32,
    bins: &mut Bins<'_>,
) -> FreeBins {
    let mut out = FreeBins {
        c_base: 0.0,
        e_lo: usize::MAX,
        e_hi: 0,
        key_hi: 0,
    };
    for_moving(row, pw, eta_t, |saturated, cand| {
        if saturated {
            out.c_base += cand.c;
        } else {
            let bits = cand.key.to_bits();
            let e = (bits >> shift) as usize;
            out.e_lo = out.e_lo.min(e);
            out.e_hi = out.e_hi.max(e);
            out.key_hi = out.key_hi.max(bits);
            bins.add(e, &cand);
        }
    });
    out
}

/// The candidates of the free elements in bin `bin` of [`bin_free`].
#[inline(always)]
fn collect_bin<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    pw: P,
    eta_t: T,
    shift: u32,
    bin: usize,
) -> Vec<Cand> {
    let mut keep = Vec::new();
    for_moving(row, pw, eta_t, |saturated, cand| {
        if !saturated && (cand.key.to_bits() >> shift) as usize == bin {
            keep.push(cand);
        }
    });
    keep
}

// `row_bin_free`: `bin_free`, compiled for AVX2 where the CPU has it (likewise below).
multiversion!(pub(crate) row_bin_free, bin_free_avx2, bin_free,
    <T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, pw: P, eta_t: T, shift: u32, bins: &mut Bins<'_>) -> FreeBins);
multiversion!(pub(crate) row_collect_bin, collect_bin_avx2, collect_bin,
    <T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>,
    (row: &Row<'_, T, L, H>, pw: P, eta_t: T, shift: u32, bin: usize) -> Vec<Cand>);
