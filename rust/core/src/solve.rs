//! Solving one row: Newton / variable fixing on `t = eta^p` from below, with the radix-select
//! safeguard after a bounded number of passes, and the closed form for `p = inf`.

use crate::bounds::SideAccess;
use crate::kernel::{row_pass, row_pass_inf, row_pass_sat, Row};
use crate::norm::{Power, P1};
use crate::real::Real;
use crate::safeguard::{self, Cand};

/// Tuning knobs of the solver.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Newton passes (after the validating pass) before the safeguard takes over.
    pub max_newton_passes: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_newton_passes: 8,
        }
    }
}

/// What solving one row found.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowOutcome {
    /// The scale `eta` (in `f64`).
    pub eta: f64,
    /// Newton passes over the row after the validating pass.
    pub passes: u32,
    /// Whether the safeguard finished the solve.
    pub safeguard: bool,
    /// Whether `eps` was above the largest reachable size (`eta` then saturates everything).
    pub unreachable: bool,
    /// Whether the row holds invalid values (non-finite, or `x` outside its box).
    pub invalid: bool,
}

impl RowOutcome {
    fn eta(eta: f64, passes: u32, safeguard: bool) -> Self {
        RowOutcome {
            eta,
            passes,
            safeguard,
            ..Default::default()
        }
    }
}

/// Relative slack when deciding that the target is exactly the largest reachable size.
fn reach_slack<T: Real>() -> f64 {
    64.0 * T::EPS
}

/// Solves one row for finite `p`.
pub(crate) fn solve_row<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: f64,
    pw: P,
    opts: &Options,
    par: bool,
) -> RowOutcome {
    let first = row_pass::<T, P, L, H, true>(row, pw, T::zero(), par);
    if first.bad > 0 {
        return RowOutcome {
            invalid: true,
            ..Default::default()
        };
    }
    if eps == 0.0 || first.nmov == 0 {
        return RowOutcome::eta(0.0, 0, false);
    }
    let target = pw.pow64(eps);
    let (mut c, mut m, mut nsat) = (first.c, first.m, first.nsat);
    let mut t = 0.0f64;
    let mut passes = 0u32;
    loop {
        if m <= 0.0 {
            return saturated(row, target, pw, passes, false, par);
        }
        let t_new = ((target - c) / m).max(t);
        if passes >= opts.max_newton_passes {
            return finish_with_safeguard(row, target, pw, t, passes, par);
        }
        let eta = pw.root64(t_new);
        let sums = row_pass::<T, P, L, H, false>(row, pw, T::of_f64(eta), par);
        passes += 1;
        if sums.nsat == nsat {
            return RowOutcome::eta(eta, passes, false);
        }
        (c, m, nsat, t) = (sums.c, sums.m, sums.nsat, t_new);
    }
}

/// Hands the elements still free at `t` to the radix select.
fn finish_with_safeguard<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    target: f64,
    pw: P,
    t: f64,
    passes: u32,
    par: bool,
) -> RowOutcome {
    let eta_t = T::of_f64(pw.root64(t));
    let mut cands = Vec::new();
    let mut c_base = 0.0f64;
    for i in 0..row.len() {
        let (a, s) = row.element(i);
        if a == T::zero() {
            continue;
        }
        let (a64, s64) = (a.as_f64(), s.as_f64());
        if s <= eta_t * a {
            c_base += pw.pow64(s64);
        } else {
            cands.push(Cand {
                key: s64 / a64,
                w: pw.pow64(a64),
                c: pw.pow64(s64),
            });
        }
    }
    match safeguard::select(cands, c_base, 0.0, target, pw) {
        Some(t_final) => RowOutcome::eta(pw.root64(t_final.max(t)), passes, true),
        None => saturated(row, target, pw, passes, true, par),
    }
}

/// Every movable element saturates: the smallest eta reaching the largest size.
fn saturated<T: Real, P: Power, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    target: f64,
    pw: P,
    passes: u32,
    safeguard: bool,
    par: bool,
) -> RowOutcome {
    let sums = row_pass_sat(row, pw, par);
    RowOutcome {
        eta: sums.key_max,
        passes,
        safeguard,
        unreachable: target > sums.c_total * (1.0 + reach_slack::<T>()),
        invalid: false,
    }
}

/// Solves one row for `p = inf`: `eta = eps / max{|delta_i| : s_i >= eps}`.
pub(crate) fn solve_row_inf<T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    eps: f64,
    par: bool,
) -> RowOutcome {
    let sums = row_pass_inf(row, T::of_f64(eps), par);
    if sums.bad > 0 {
        return RowOutcome {
            invalid: true,
            ..Default::default()
        };
    }
    if eps == 0.0 || sums.nmov == 0 {
        return RowOutcome::eta(0.0, 0, false);
    }
    if sums.amax > 0.0 {
        return RowOutcome::eta(eps / sums.amax, 0, false);
    }
    // Unreachable: the largest room, reached first by the fastest of its elements.
    let sums = row_pass_sat(row, P1, par);
    let (s_max, a_best) = (sums.s_max, sums.a_at_s_max);
    RowOutcome {
        eta: if s_max > 0.0 { s_max / a_best } else { 0.0 },
        passes: 0,
        safeguard: false,
        unreachable: eps > s_max * (1.0 + reach_slack::<T>()),
        invalid: false,
    }
}
