//! The safeguard that bounds the worst case: a radix select over the breakpoints.
//!
//! Breakpoints are ordered by `key_i = s_i / |delta_i|` whatever `p` is, and for non-negative
//! floats the order of the keys is the order of their bit patterns. Each level bins the
//! candidates by the top bits of `key - min_key` (about a quarter as many buckets as
//! candidates, between 64 and [`BUCKETS`], each holding `sum w` and `sum c`), finds the bucket
//! where `g` crosses the target, and keeps only that bucket. The bit range shrinks by a factor
//! of at least 2^5 per level, so there are at most thirteen levels for `f64` keys; each is
//! linear in the candidates it sees.

use std::cell::Cell;

use crate::norm::Power;
use crate::real::Real;

/// The most buckets per level.
pub const BUCKETS: usize = 4096;
/// The fewest buckets per level.
const MIN_BUCKETS: usize = 64;
/// Below this many candidates, finish with plain variable fixing (at most `SMALL^2` work).
const SMALL: usize = 64;
/// Up to this many candidates, first try [`NEWTON_PASSES`] passes of variable fixing.
const NEWTON_FIRST: usize = 1024;
const NEWTON_PASSES: usize = 6;

/// The most candidates whose buffer a thread keeps for its next row (1.5 MiB): larger sets
/// are rare (an adversarial row) and get a buffer of their own.
const MAX_SPARE: usize = 1 << 16;

thread_local! {
    /// Each thread's candidate buffer between rows: a row's first pass takes it
    /// ([`take_buffer`]) and [`select`] hands it back, so a batch of short rows allocates
    /// nothing per row (allocating and growing it cost about 5% of a 3072-element row).
    static SPARE: Cell<Vec<Cand>> = const { Cell::new(Vec::new()) };
}

/// An empty candidate buffer: this thread's spare one (with its capacity), or a new one.
pub(crate) fn take_buffer() -> Vec<Cand> {
    SPARE.with(Cell::take)
}

/// Keeps `cands`' allocation for this thread's next [`take_buffer`] (the larger of it and
/// the one kept, up to [`MAX_SPARE`] candidates).
fn give_back(mut cands: Vec<Cand>) {
    if cands.capacity() > MAX_SPARE {
        return;
    }
    cands.clear();
    SPARE.with(|spare| {
        let kept = spare.take();
        spare.set(if cands.capacity() >= kept.capacity() {
            cands
        } else {
            kept
        });
    });
}

/// An element not yet known to be saturated.
// `repr(C)`: `crate::avx2::cand_sums` loads groups of candidates as `f64` vectors
#[derive(Clone, Copy, Debug)]
#[repr(C)]
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

    /// [`Cand::new`] for `a` and `s` that are values of `T` widened to `f64`: the powers
    /// through [`Power::pow_widened`] (no libm call for `p` outside {1, 2}).
    #[inline(always)]
    pub(crate) fn widened<T: Real, P: Power>(a: f64, s: f64, pw: P) -> Cand {
        Cand {
            key: s / a,
            w: pw.pow_widened::<T>(a),
            c: pw.pow_widened::<T>(s),
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
    c_base: f64,
    m_base: f64,
    target: f64,
    pw: P,
) -> Option<f64> {
    let t = select_in(&mut cands, c_base, m_base, target, pw);
    give_back(cands);
    t
}

/// [`select`] on a buffer it may replace by a smaller one.
fn select_in<P: Power>(
    cands: &mut Vec<Cand>,
    mut c_base: f64,
    mut m_base: f64,
    target: f64,
    pw: P,
) -> Option<f64> {
    // Allocated at the first level that bins (small sets never do), sized for it: the
    // levels after it see fewer candidates, hence as many buckets or fewer.
    let (mut sw, mut sc) = (Vec::new(), Vec::new());
    let mut binned = false;
    loop {
        if cands.len() <= SMALL {
            return solved(fix_small(cands, c_base, m_base, target, pw, usize::MAX));
        }
        if cands.len() <= NEWTON_FIRST && !binned {
            // Typical brackets hold a few dozen to a few hundred candidates, which Newton
            // fixes in three or four passes; the limit keeps an adversarial set linear.
            if let Fixed::Solved(t) = fix_small(cands, c_base, m_base, target, pw, NEWTON_PASSES) {
                return t;
            }
        }
        binned = true;
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for c in cands.iter() {
            let b = c.key.to_bits();
            lo = lo.min(b);
            hi = hi.max(b);
        }
        if lo == hi {
            return solved(fix_small(cands, c_base, m_base, target, pw, usize::MAX));
        }
        // A few candidates per bucket: small tables stay in L1.
        let buckets = (cands.len() / 4)
            .next_power_of_two()
            .clamp(MIN_BUCKETS, BUCKETS);
        let range = hi - lo;
        let width = 64 - range.leading_zeros();
        let shift = width.saturating_sub(buckets.trailing_zeros());
        let nb = ((range >> shift) + 1) as usize;
        if sw.len() < nb {
            (sw, sc) = (vec![0f64; nb], vec![0f64; nb]);
        }
        sw[..nb].fill(0.0);
        sc[..nb].fill(0.0);
        let mut bins = Bins::new(&mut sw, &mut sc);
        for c in cands.iter() {
            bins.add(((c.key.to_bits() - lo) >> shift) as usize, c);
        }
        bins.flush();
        let j = match crossing(
            &mut sw[..nb],
            &sc[..nb],
            (lo, hi, shift),
            (c_base, m_base),
            target,
            pw,
        ) {
            Crossing::In {
                bucket,
                c_below,
                m_above,
            } => {
                (c_base, m_base) = (c_below, m_above);
                bucket
            }
            Crossing::Above { c_all } => {
                // Every candidate saturates: the free weight outside decides.
                return (m_base > 0.0).then(|| (target - c_all) / m_base);
            }
        };
        let keep: Vec<Cand> = cands
            .iter()
            .filter(|c| ((c.key.to_bits() - lo) >> shift) as usize == j)
            .copied()
            .collect();
        *cands = keep;
    }
}

/// The answer of a [`fix_small`] without a pass limit.
fn solved(f: Fixed) -> Option<f64> {
    match f {
        Fixed::Solved(t) => t,
        Fixed::Unfinished(_) => unreachable!("fix_small without a pass limit always finishes"),
    }
}

/// Adds candidates to bucket sums (`sum w`, `sum c`). Runs of candidates in one bucket are
/// summed in registers first: adding each to its slot would chain every add through a store
/// and a reload of that slot (the adversary's background, tens of thousands of equal keys,
/// spent half of the select there). Call [`Bins::flush`] when done.
pub(crate) struct Bins<'a> {
    sw: &'a mut [f64],
    sc: &'a mut [f64],
    run: Option<usize>,
    w: f64,
    c: f64,
}

impl<'a> Bins<'a> {
    pub(crate) fn new(sw: &'a mut [f64], sc: &'a mut [f64]) -> Self {
        Bins {
            sw,
            sc,
            run: None,
            w: 0.0,
            c: 0.0,
        }
    }

    #[inline(always)]
    pub(crate) fn add(&mut self, j: usize, cand: &Cand) {
        if self.run != Some(j) {
            self.flush();
            self.run = Some(j);
        }
        self.w += cand.w;
        self.c += cand.c;
    }

    pub(crate) fn flush(&mut self) {
        if let Some(j) = self.run.take() {
            self.sw[j] += self.w;
            self.sc[j] += self.c;
        }
        (self.w, self.c) = (0.0, 0.0);
    }
}

/// Where `g` crosses the target among buckets of keys (see [`crossing`]).
pub(crate) enum Crossing {
    /// In `bucket`: the buckets before it saturate (`c_below` holds their caps and the base),
    /// the ones after stay free (`m_above` holds their weights and the base).
    In {
        bucket: usize,
        c_below: f64,
        m_above: f64,
    },
    /// Above every bucket: all of them saturate (`c_all` holds their caps and the base).
    Above { c_all: f64 },
}

/// Finds the first bucket at whose upper edge `g` reaches `target`. Bucket `j` holds the keys
/// whose bits `b` have `(b - lo) >> shift == j` (`lo`: the bits at bucket 0's lower edge, at
/// most the smallest key's; `hi`: the largest key's bits), with `sum w` in `sw[j]` and `sum c`
/// in `sc[j]`; `base` is `(c_base, m_base)`. `sw` is overwritten with suffix sums.
pub(crate) fn crossing<P: Power>(
    sw: &mut [f64],
    sc: &[f64],
    (lo, hi, shift): (u64, u64, u32),
    (c_base, m_base): (f64, f64),
    target: f64,
    pw: P,
) -> Crossing {
    // The weight above bucket j is a suffix sum, built back to front in place (no
    // cancellation): `sw[j]` becomes the weight of the buckets after j.
    let mut acc = m_base;
    for w in sw.iter_mut().rev() {
        let own = *w;
        *w = acc;
        acc += own;
    }
    // `c_below`: the caps of the buckets before j, summed front to back.
    let mut c_below = c_base;
    for (j, (&w_above, &c_own)) in sw.iter().zip(sc).enumerate() {
        let c_le = c_below + c_own;
        let edge_bits = (lo + (((j as u64) + 1) << shift) - 1).min(hi);
        let edge = f64::from_bits(edge_bits);
        let g = if w_above > 0.0 {
            c_le + pw.pow64(edge) * w_above
        } else {
            c_le
        };
        if g >= target {
            // Buckets below j saturate, buckets above stay free: both sums are sums of
            // positive terms (no differences, so nothing cancels).
            return Crossing::In {
                bucket: j,
                c_below,
                m_above: w_above,
            };
        }
        c_below = c_le;
    }
    Crossing::Above { c_all: c_below }
}

/// The outcome of [`fix_small`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Fixed {
    /// The exact answer (`None`: above the largest reachable value).
    Solved(Option<f64>),
    /// The pass limit came first: the current iterate, a lower bound of the answer.
    Unfinished(f64),
}

/// Variable fixing (Newton from below) on a candidate set, at most `max_passes` passes over
/// it.
pub(crate) fn fix_small<P: Power>(
    cands: &[Cand],
    c_base: f64,
    m_base: f64,
    target: f64,
    pw: P,
    max_passes: usize,
) -> Fixed {
    let w_all: f64 = m_base + cands.iter().map(|c| c.w).sum::<f64>();
    if w_all <= 0.0 {
        return Fixed::Solved((c_base >= target).then_some(0.0));
    }
    let mut t = ((target - c_base) / w_all).max(0.0);
    let mut nsat_prev = 0usize;
    for _ in 0..max_passes {
        let (c, m, nsat) = sums_at(cands, pw.root64(t));
        let (c, m) = (c_base + c, m_base + m);
        if nsat == nsat_prev {
            return Fixed::Solved(Some(t));
        }
        if m <= 0.0 {
            return Fixed::Solved(None);
        }
        nsat_prev = nsat;
        t = t.max((target - c) / m);
    }
    Fixed::Unfinished(t)
}

/// `(sum c, sum w, count)` of the candidates saturated at `eta` (key <= eta) for the caps
/// and of the others for the weights, in four lanes (see [`CandLanes`]); whole groups of
/// four in AVX2 where the CPU has it, with bitwise the same sums.
fn sums_at(cands: &[Cand], eta: f64) -> (f64, f64, usize) {
    let (groups, rest) = cands.as_chunks::<4>();
    #[cfg(target_arch = "x86_64")]
    let mut lanes = if crate::simd::has_avx2() {
        // SAFETY: `has_avx2` has checked at run time that this CPU runs AVX2, the only
        // precondition of `cand_lanes`.
        unsafe { crate::avx2::cand_sums::cand_lanes(groups, eta) }
    } else {
        CandLanes::over(groups, eta)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let mut lanes = CandLanes::over(groups, eta);
    for (k, cand) in rest.iter().enumerate() {
        lanes.add(k, cand, eta);
    }
    lanes.total()
}

/// The four lanes of [`sums_at`]: lane `k` adds candidates `k`, `k + 4`, ... in order.
/// Branch-free: which side a candidate falls on is unpredictable, and one chain of
/// dependent adds would be as slow.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CandLanes {
    /// The caps of the saturated candidates.
    pub c: [f64; 4],
    /// The weights of the others.
    pub m: [f64; 4],
    /// How many saturated.
    pub n: [usize; 4],
}

impl CandLanes {
    /// The lanes over whole groups of four candidates.
    pub(crate) fn over(groups: &[[Cand; 4]], eta: f64) -> CandLanes {
        let mut lanes = CandLanes::default();
        for group in groups {
            for (k, cand) in group.iter().enumerate() {
                lanes.add(k, cand, eta);
            }
        }
        lanes
    }

    #[inline(always)]
    fn add(&mut self, k: usize, cand: &Cand, eta: f64) {
        // Selecting by bit masks: written as `if`, LLVM branches.
        let sat = cand.key <= eta;
        let mask = (sat as u64).wrapping_neg();
        self.c[k] += f64::from_bits(cand.c.to_bits() & mask);
        self.m[k] += f64::from_bits(cand.w.to_bits() & !mask);
        self.n[k] += sat as usize;
    }

    fn total(&self) -> (f64, f64, usize) {
        let (c, m) = (self.c, self.m);
        (
            (c[0] + c[1]) + (c[2] + c[3]),
            (m[0] + m[1]) + (m[2] + m[3]),
            self.n.iter().sum(),
        )
    }
}
