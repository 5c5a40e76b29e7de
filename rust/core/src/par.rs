//! The one parallelism policy of the core (solve, noise and VJP all follow it): which
//! batches stay on the calling thread, when long rows are split into blocks run in
//! parallel, and how work items are handed to rayon's pool.
//!
//! Results never depend on this policy: the rows of a task, the blocks of a row and the
//! order in which partial results are combined are fixed by the batch's shape alone; the
//! policy only decides whether the pieces run on the pool or one after the other on the
//! calling thread, so results are bitwise the same for any thread count.
//!
//! Fork safety: rayon's global pool does not survive `fork` (the child inherits the pool's
//! state but none of its threads, so the first parallel call would wait forever). The
//! process that first hands work to the pool is recorded; any other process (a child forked
//! after that) runs everything on the calling thread.

use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use crate::kernel::BLOCK;

/// Batches smaller than this run on the calling thread (a few microseconds of work; waking
/// the rayon pool took 20-50 us here).
const PAR_MIN_ELEMENTS: usize = 1 << 16;

/// Rows at least this long are split into blocks processed in parallel when there are too
/// few rows to keep every thread busy.
const PAR_ROW_MIN: usize = 4 * BLOCK;

/// Hint groups never hold fewer elements than this (see [`hint_group_rows`]).
const HINT_GROUP_MIN_ELEMENTS: usize = 1 << 14;

/// Rows per hint group: rows solved in order by one task, each search starting from the
/// previous row's answer (the solver's and `p = 1` / `p = 2` projection's hints). Up to 16
/// rows, fewer when the batch would otherwise make fewer than `min_groups` groups to share
/// among threads, but never fewer than [`HINT_GROUP_MIN_ELEMENTS`] elements: a group's first
/// row has no hint and takes one to three more passes over its row, and with one row per
/// group (64 rows of 3072) every row paid for it, in tasks of a few microseconds each.
/// Fixed by the batch's shape alone, so results do not depend on the thread count.
pub(crate) fn hint_group_rows(rows: usize, n: usize, min_groups: usize) -> usize {
    let least = HINT_GROUP_MIN_ELEMENTS.div_ceil(n.max(1));
    (rows / min_groups.max(1)).max(least).clamp(1, 16)
}

/// The process that started the pool (0: none has yet).
static POOL_PID: AtomicU32 = AtomicU32::new(0);

/// Whether this process may use rayon's global pool: it is the one that started it (or
/// claims it now, before anything starts it). A child forked after the pool started is not.
fn pool_usable() -> bool {
    let pid = std::process::id();
    match POOL_PID.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(owner) => owner == pid,
    }
}

/// How one call's work runs: rows (or groups of rows) as parallel tasks, and blocks inside
/// long rows in parallel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// The batch is large enough to be worth the pool (and this process may use it).
    pub pool: bool,
    /// Tasks of rows run on the pool (else in order on the calling thread).
    pub rows: bool,
    /// Blocks of one long row run on the pool.
    pub inner: bool,
}

impl Plan {
    /// Everything on the calling thread.
    pub(crate) const SERIAL: Plan = Plan {
        pool: false,
        rows: false,
        inner: false,
    };

    /// The plan for `rows` rows of `n` elements.
    pub(crate) fn new(rows: usize, n: usize) -> Plan {
        // Waking the pool costs more than a small batch takes on one thread.
        if rows.saturating_mul(n) < PAR_MIN_ELEMENTS || !pool_usable() {
            return Plan::SERIAL;
        }
        Plan {
            pool: true,
            rows: rows > 1,
            inner: n >= PAR_ROW_MIN && rows < 2 * rayon::current_num_threads(),
        }
    }
}

/// `items.map(f)`, in order; on the pool when `par`.
pub(crate) fn map_items<I, R, F>(par: bool, items: Vec<I>, f: F) -> Vec<R>
where
    I: Send,
    R: Send,
    F: Fn(I) -> R + Sync + Send,
{
    if par && items.len() > 1 {
        items.into_par_iter().map(f).collect()
    } else {
        items.into_iter().map(f).collect()
    }
}

/// `(0..count).map(f)`, in order; on the pool when `par`.
pub(crate) fn map_range<R, F>(par: bool, count: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> R + Sync + Send,
{
    if par && count > 1 {
        (0..count).into_par_iter().map(f).collect()
    } else {
        (0..count).map(f).collect()
    }
}

/// `f(i, chunk)` for the consecutive chunks of `len` elements of `s`; on the pool when
/// `par`.
pub(crate) fn for_chunks<T, F>(par: bool, s: &mut [T], len: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    if par && s.len() > len {
        s.par_chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        s.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Folds `f(0), f(1), .., f(count - 1)` with `add` in index order (the parts computed on
/// the pool when `par`), so the result does not depend on how they ran.
pub(crate) fn fold_range<R, F, A>(par: bool, count: usize, zero: R, f: F, add: A) -> R
where
    R: Send,
    F: Fn(usize) -> R + Sync + Send,
    A: Fn(R, R) -> R,
{
    if par && count > 1 {
        let parts: Vec<R> = (0..count).into_par_iter().map(f).collect();
        parts.into_iter().fold(zero, add)
    } else {
        (0..count).map(f).fold(zero, add)
    }
}
