//! The safeguard that bounds the worst case: a radix select over the breakpoints.
//!
//! Breakpoints are ordered by `key_i = s_i / |delta_i|` whatever `p` is, and for non-negative
//! floats the order of the keys is the order of their bit patterns. Each level bins the
//! candidates by the top bits of `key - min_key` (about a quarter as many buckets as
//! candidates, between 64 and [`BUCKETS`], each holding `sum w` and `sum c`), finds the bucket
//! where `g` crosses the target, and keeps only that bucket. The bit range shrinks by a factor
//! of at least 2^5 per level, so there are at most thirteen levels for `f64` keys; each is
//! linear in the candidates it sees.

use crate::norm::Power;

/// The most buckets per level.
pub const BUCKETS: usize = 4096;
/// The fewest buckets per level.
const MIN_BUCKETS: usize = 64;
/// Below this many candidates, finish with plain variable fixing (at most `SMALL^2` work).
const SMALL: usize = 64;

/// An element not yet known to be saturated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand {
    /// `s_i / |delta_i|` (may be infinite: such an element never saturates).
    pub key: f64,
    /// `|delta_i|^p`.
    pub w: f64,
    /// `s_i^p`.
    pub c: f64,
}

impl Cand {
    /// The candidate of an element with `|delta_i| = a` and room `s_i = s` (both in `f64`).
    #[inline(always)]
    pub(crate) fn new<P: Power>(a: f64, s: f64, pw: P) -> Cand {
        Cand {
            key: s / a,
            w: pw.pow64(a),
            c: pw.pow64(s),
        }
    }
}

/// Solves `c_base + m_base * t + sum_cands min(t w_i, c_i) = target` for the smallest `t`.
///
/// `c_base` holds the caps of elements known to be saturated, `m_base` the weights of elements
/// known to stay unsaturated. Returns `None` when the target is above the largest reachable
/// value (every candidate saturated and `m_base == 0`).
pub(crate) fn select<P: Power>(
    mut cands: Vec<Cand>,
    mut c_base: f64,
    mut m_base: f64,
    target: f64,
    pw: P,
) -> Option<f64> {
    let mut sw = vec![0f64; BUCKETS];
    let mut sc = vec![0f64; BUCKETS];
    loop {
        if cands.len() <= SMALL {
            return fix_small(&cands, c_base, m_base, target, pw, usize::MAX);
        }
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for c in &cands {
            let b = c.key.to_bits();
            lo = lo.min(b);
            hi = hi.max(b);
        }
        if lo == hi {
            return fix_small(&cands, c_base, m_base, target, pw, usize::MAX);
        }
        // A few candidates per bucket: small tables stay in L1.
        let buckets = (cands.len() / 4)
            .next_power_of_two()
            .clamp(MIN_BUCKETS, BUCKETS);
        let range = hi - lo;
        let width = 64 - range.leading_zeros();
        let shift = width.saturating_sub(buckets.trailing_zeros());
        let nb = ((range >> shift) + 1) as usize;
        sw[..nb].fill(0.0);
        sc[..nb].fill(0.0);
        // Runs of candidates in one bucket are summed in registers first: adding each one
        // to the table would chain every add through a store and a reload of the same
        // slot (the adversary's background, tens of thousands of equal keys, spent half of
        // the select there).
        let (mut run_j, mut run_w, mut run_c) = (usize::MAX, 0.0, 0.0);
        for c in &cands {
            let j = ((c.key.to_bits() - lo) >> shift) as usize;
            if j != run_j {
                if run_j != usize::MAX {
                    sw[run_j] += run_w;
                    sc[run_j] += run_c;
                }
                (run_j, run_w, run_c) = (j, 0.0, 0.0);
            }
            run_w += c.w;
            run_c += c.c;
        }
        if run_j != usize::MAX {
            sw[run_j] += run_w;
            sc[run_j] += run_c;
        }
        // g at the upper edge of bucket j, with buckets <= j saturated and the rest not.
        // The weight above bucket j is a suffix sum, built back to front in place (no
        // cancellation): `sw[j]` becomes the weight of the buckets after j.
        let mut acc = m_base;
        for w in sw[..nb].iter_mut().rev() {
            let own = *w;
            *w = acc;
            acc += own;
        }
        // `c_below`: the caps of the buckets before j, summed front to back.
        let (mut c_below, mut found) = (c_base, None);
        for j in 0..nb {
            let c_le = c_below + sc[j];
            let edge_bits = (lo + (((j as u64) + 1) << shift) - 1).min(hi);
            let edge = f64::from_bits(edge_bits);
            let g = if sw[j] > 0.0 {
                c_le + pw.pow64(edge) * sw[j]
            } else {
                c_le
            };
            if g >= target {
                found = Some(j);
                break;
            }
            c_below = c_le;
        }
        let Some(j) = found else {
            // Every candidate saturates: the free weight outside decides.
            if m_base > 0.0 {
                return Some((target - c_below) / m_base);
            }
            return None;
        };
        // Buckets below j saturate, buckets above stay free: both sums are sums of
        // positive terms (no differences, so nothing cancels).
        (c_base, m_base) = (c_below, sw[j]);
        let keep: Vec<Cand> = cands
            .iter()
            .filter(|c| ((c.key.to_bits() - lo) >> shift) as usize == j)
            .copied()
            .collect();
        cands = keep;
    }
}

/// Variable fixing (Newton from below) on a small candidate set; after `max_passes` passes
/// it returns the current iterate, a lower bound of the answer.
pub(crate) fn fix_small<P: Power>(
    cands: &[Cand],
    c_base: f64,
    m_base: f64,
    target: f64,
    pw: P,
    max_passes: usize,
) -> Option<f64> {
    let w_all: f64 = m_base + cands.iter().map(|c| c.w).sum::<f64>();
    if w_all <= 0.0 {
        return if c_base >= target { Some(0.0) } else { None };
    }
    let mut t = ((target - c_base) / w_all).max(0.0);
    let mut nsat_prev = 0usize;
    for _ in 0..max_passes {
        let eta = pw.root64(t);
        let (mut c, mut m, mut nsat) = (c_base, m_base, 0usize);
        for k in cands {
            if k.key <= eta {
                c += k.c;
                nsat += 1;
            } else {
                m += k.w;
            }
        }
        if nsat == nsat_prev {
            return Some(t);
        }
        if m <= 0.0 {
            return None;
        }
        nsat_prev = nsat;
        t = t.max((target - c) / m);
    }
    Some(t)
}
