//! The safeguard that bounds the worst case: a radix select over the breakpoints.
//!
//! Breakpoints are ordered by `key_i = s_i / |delta_i|` whatever `p` is, and for non-negative
//! floats the order of the keys is the order of their bit patterns. Each level bins the
//! candidates by the top bits of `key - min_key` (at most [`BUCKETS`] buckets holding
//! `sum w` and `sum c`), finds the bucket where `g` crosses the target, and keeps only that
//! bucket. The bit range shrinks by a factor of at least 2^11 per level, so there are at most
//! six levels for `f64` keys; each is linear in the candidates it sees.

use crate::norm::Power;

/// Buckets per level.
pub const BUCKETS: usize = 4096;
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
    let mut cnt = vec![0u32; BUCKETS];
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
        let range = hi - lo;
        let width = 64 - range.leading_zeros();
        let shift = width.saturating_sub(BUCKETS.trailing_zeros());
        let nb = ((range >> shift) + 1) as usize;
        cnt[..nb].fill(0);
        sw[..nb].fill(0.0);
        sc[..nb].fill(0.0);
        for c in &cands {
            let j = ((c.key.to_bits() - lo) >> shift) as usize;
            cnt[j] += 1;
            sw[j] += c.w;
            sc[j] += c.c;
        }
        // g at the upper edge of bucket j, with buckets <= j saturated and the rest not.
        // Suffix sums of the weights are built back to front (no cancellation).
        let mut w_above = vec![0f64; nb];
        let mut acc = m_base;
        for j in (0..nb).rev() {
            w_above[j] = acc;
            acc += sw[j];
        }
        let mut c_le = c_base;
        let mut found = None;
        for j in 0..nb {
            c_le += sc[j];
            let edge_bits = (lo + (((j as u64) + 1) << shift) - 1).min(hi);
            let edge = f64::from_bits(edge_bits);
            let g = if w_above[j] > 0.0 {
                c_le + pw.pow64(edge) * w_above[j]
            } else {
                c_le
            };
            if g >= target {
                found = Some(j);
                break;
            }
        }
        let Some(j) = found else {
            // Every candidate saturates: the free weight outside decides.
            if m_base > 0.0 {
                let c_all = c_base + sc[..nb].iter().sum::<f64>();
                return Some((target - c_all) / m_base);
            }
            return None;
        };
        // Buckets below j saturate, buckets above stay free; recompute the sums exactly
        // (not from the running differences) to avoid cancellation.
        let mut keep = Vec::with_capacity(cnt[j] as usize);
        let (mut add_c, mut add_w) = (0.0, 0.0);
        for c in &cands {
            let b = ((c.key.to_bits() - lo) >> shift) as usize;
            match b.cmp(&j) {
                std::cmp::Ordering::Less => add_c += c.c,
                std::cmp::Ordering::Greater => add_w += c.w,
                std::cmp::Ordering::Equal => keep.push(*c),
            }
        }
        c_base += add_c;
        m_base += add_w;
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
