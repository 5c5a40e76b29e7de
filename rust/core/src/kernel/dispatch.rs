//! Picks the hand-written SIMD kernels for a row when its element type and the CPU allow:
//! those of `crate::avx512` where the CPU has AVX-512, else those of `crate::avx2`
//! (`None` / `false` when neither applies: the generic lane loops run).

use super::{fold_chunk_runs, FirstSums, Row};
use crate::bounds::SideAccess;
use crate::real::Real;
pub(super) use crate::simd_kernels::{Avx2, Avx512, Kernels};
use crate::simd_kernels::{Chunk, Elem, Side};

/// [`row_pass_first`] with the widest hand-written kernels of `E` the CPU runs, or `None`
/// when the row's elements are not `E` or the CPU has no such kernels. `k` is `2p` (see
/// [`Kernels::first`]).
pub(super) fn simd_first<E: Elem, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    k: u32,
    bracket: (f64, f64),
    validate: bool,
    par: bool,
) -> Option<FirstSums>
where
    Avx2: Kernels<E>,
    Avx512: Kernels<E>,
{
    if <Avx512 as Kernels<E>>::available() {
        first_with::<Avx512, E, T, L, H>(row, k, bracket, validate, par)
    } else {
        first_with::<Avx2, E, T, L, H>(row, k, bracket, validate, par)
    }
}

/// [`row_pass_first`] with the kernels `K`, or `None` when the row's elements are not `E`,
/// the CPU does not run `K` or `k` (`2p`) is not one of the kernels' powers.
pub(super) fn first_with<K: Kernels<E>, E: Elem, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &Row<'_, T, L, H>,
    k: u32,
    bracket: (f64, f64),
    validate: bool,
    par: bool,
) -> Option<FirstSums> {
    first_impl::<K, E, T, L, H, false>(row, k, bracket, validate, par)
}

/// [`simd_first`] for `p = 2`, validating, on a row whose `d` holds `z`: the kernels form
/// `delta = z - x` in registers (see `Kernels::first`'s `DIFF`).
pub(super) fn simd_first_diff<E: Elem, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row_xz: &Row<'_, T, L, H>,
    bracket: (f64, f64),
    par: bool,
) -> Option<FirstSums>
where
    Avx2: Kernels<E>,
    Avx512: Kernels<E>,
{
    if <Avx512 as Kernels<E>>::available() {
        first_diff_with::<Avx512, E, T, L, H>(row_xz, bracket, par)
    } else {
        first_diff_with::<Avx2, E, T, L, H>(row_xz, bracket, par)
    }
}

/// [`simd_first_diff`] with the kernels `K`.
pub(super) fn first_diff_with<
    K: Kernels<E>,
    E: Elem,
    T: Real,
    L: SideAccess<T>,
    H: SideAccess<T>,
>(
    row_xz: &Row<'_, T, L, H>,
    bracket: (f64, f64),
    par: bool,
) -> Option<FirstSums> {
    first_impl::<K, E, T, L, H, true>(row_xz, 4, bracket, true, par)
}

/// [`first_with`]; with `DIFF` only `k = 4` (`p = 2`) validating (the projection's first
/// pass).
fn first_impl<
    K: Kernels<E>,
    E: Elem,
    T: Real,
    L: SideAccess<T>,
    H: SideAccess<T>,
    const DIFF: bool,
>(
    row: &Row<'_, T, L, H>,
    k: u32,
    (eta_lo, eta_hi): (f64, f64),
    validate: bool,
    par: bool,
) -> Option<FirstSums> {
    if !K::available() || !matches!(k, 1 | 2 | 3 | 4 | 6) || (DIFF && !(k == 4 && validate)) {
        return None;
    }
    let whole = chunk_of::<E, T, L, H>(row)?;
    let (lo, hi) = (E::of_f64(eta_lo), E::of_f64(eta_hi));
    let check_x = validate && !(whole.lo.finite_scalar() && whole.hi.finite_scalar());
    let flags = (validate, check_x, lo != hi);
    let sides = (L::SLICE, H::SLICE);
    // The kernels sum in pieces of `CHUNK` elements (see `fold_chunk_runs`).
    Some(fold_chunk_runs(row, par, |r| {
        let c = chunk_of::<E, T, L, H>(r).expect("a sub-row keeps the kind of its row");
        // SAFETY: `K::available` returned true above, the kernels' only precondition.
        unsafe {
            // (`DIFF` only with `k = 4`, checked above: its other powers are never compiled)
            match (DIFF, k) {
                (true, _) => first_chunk::<K, E, 4, true>(c, (lo, hi), flags, sides),
                (false, 1) => first_chunk::<K, E, 1, false>(c, (lo, hi), flags, sides),
                (false, 2) => first_chunk::<K, E, 2, false>(c, (lo, hi), flags, sides),
                (false, 3) => first_chunk::<K, E, 3, false>(c, (lo, hi), flags, sides),
                (false, 4) => first_chunk::<K, E, 4, false>(c, (lo, hi), flags, sides),
                (false, _) => first_chunk::<K, E, 6, false>(c, (lo, hi), flags, sides),
            }
        }
    }))
}

/// `K::first` for `p = P / 2` and the run-time `(VALIDATE, CHECK_X, SPLIT)` and sides.
///
/// # Safety
/// `K::available()` returned true.
unsafe fn first_chunk<K: Kernels<E>, E: Elem, const P: u32, const DIFF: bool>(
    c: Chunk<'_, E>,
    (lo, hi): (E, E),
    flags: (bool, bool, bool),
    sides: (bool, bool),
) -> FirstSums {
    // SAFETY: the caller checked `K::available`, the kernels' only precondition.
    unsafe {
        // [P, VALIDATE, CHECK_X, SPLIT]; CHECK_X only when validating
        match flags {
            (true, false, false) => {
                with_sides!(
                    sides,
                    K::first,
                    [P, true, false, false],
                    [DIFF],
                    (c, lo, hi)
                )
            }
            (true, false, true) => {
                with_sides!(sides, K::first, [P, true, false, true], [DIFF], (c, lo, hi))
            }
            (true, true, false) => {
                with_sides!(sides, K::first, [P, true, true, false], [DIFF], (c, lo, hi))
            }
            (true, true, true) => {
                with_sides!(sides, K::first, [P, true, true, true], [DIFF], (c, lo, hi))
            }
            (false, _, false) => {
                with_sides!(
                    sides,
                    K::first,
                    [P, false, false, false],
                    [DIFF],
                    (c, lo, hi)
                )
            }
            (false, _, true) => with_sides!(
                sides,
                K::first,
                [P, false, false, true],
                [DIFF],
                (c, lo, hi)
            ),
        }
    }
}

/// Calls `f::<BEFORE.., LS, HS, AFTER..>(ARGS..)` for the run-time pair `sides = (LS, HS)`.
macro_rules! with_sides {
    ($sides:expr, $($f:ident)::+, [$($c:expr),*], ($($arg:expr),*)) => {
        with_sides!($sides, $($f)::+, [$($c),*], [], ($($arg),*))
    };
    ($sides:expr, $($f:ident)::+, [$($c:expr),*], [$($after:expr),*], ($($arg:expr),*)) => {
        match $sides {
            (false, false) => $($f)::+::<$($c,)* false, false $(, $after)*>($($arg),*),
            (false, true) => $($f)::+::<$($c,)* false, true $(, $after)*>($($arg),*),
            (true, false) => $($f)::+::<$($c,)* true, false $(, $after)*>($($arg),*),
            (true, true) => $($f)::+::<$($c,)* true, true $(, $after)*>($($arg),*),
        }
    };
}
use with_sides;

/// The row as `E` data: the case the hand-written kernels take.
#[inline(always)]
fn chunk_of<'r, E: Elem, T: Real, L: SideAccess<T>, H: SideAccess<T>>(
    row: &'r Row<'_, T, L, H>,
) -> Option<Chunk<'r, E>> {
    let side = |scalar: Option<T>, values: Option<&'r [T]>| match (scalar, values) {
        (Some(v), _) => Some(Side::Scalar(E::of_f64(v.as_f64()))),
        (None, Some(s)) => E::of(s).map(Side::Slice),
        (None, None) => None,
    };
    Some(Chunk {
        x: E::of(row.x)?,
        d: E::of(row.d)?,
        lo: side(row.lo.scalar(), row.lo.values())?,
        hi: side(row.hi.scalar(), row.hi.values())?,
    })
}

/// [`apply_row`]'s body with the widest hand-written kernel of `E` the CPU runs; `false`
/// (nothing written) when the row's elements are not `E` or the CPU has no such kernel.
/// With `DIFF`, `row.d` holds `z` and the kernel applies `delta = z - x`.
pub(super) fn simd_apply<E: Elem, T: Real, L: SideAccess<T>, H: SideAccess<T>, const DIFF: bool>(
    row: &Row<'_, T, L, H>,
    eta: T,
    out: &mut [T],
    stream: bool,
) -> bool
where
    Avx2: Kernels<E>,
    Avx512: Kernels<E>,
{
    if <Avx512 as Kernels<E>>::available() {
        apply_with::<Avx512, E, T, L, H, DIFF>(row, eta, out, stream)
    } else {
        apply_with::<Avx2, E, T, L, H, DIFF>(row, eta, out, stream)
    }
}

/// [`apply_row`]'s body with the kernel `K`; `false` (nothing written) when the row's
/// elements are not `E` or the CPU does not run `K`.
pub(super) fn apply_with<
    K: Kernels<E>,
    E: Elem,
    T: Real,
    L: SideAccess<T>,
    H: SideAccess<T>,
    const DIFF: bool,
>(
    row: &Row<'_, T, L, H>,
    eta: T,
    out: &mut [T],
    stream: bool,
) -> bool {
    if !K::available() {
        return false;
    }
    let (Some(c), Some(o)) = (chunk_of::<E, T, L, H>(row), E::of_mut(out)) else {
        return false;
    };
    let (sides, e) = ((L::SLICE, H::SLICE), E::of_f64(eta.as_f64()));
    // SAFETY: `K::available` returned true above, the kernel's only precondition.
    unsafe {
        if stream {
            with_sides!(sides, K::apply, [], [true, DIFF], (c, e, o))
        } else {
            with_sides!(sides, K::apply, [], [false, DIFF], (c, e, o))
        }
    }
    true
}
