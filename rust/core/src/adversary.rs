//! The input on which plain variable fixing is slowest: every Newton pass fixes one element.
//!
//! A chain of `K` elements with weights `w_k = 4^-k`, each breakpoint placed at 3/4 of the
//! Newton iterate that saturates it (so it saturates exactly on that pass and not before),
//! plus background elements with tiny weights and far breakpoints that never saturate but
//! are scanned on every pass. `K` is limited by the exponent range of `f32` (the weights
//! shrink geometrically), so the input is valid for `f32` and `f64` alike.

/// Builds `(x, delta, eps)` of length `n >= 2` in the box `[0, 1]` on which Newton from
/// below needs `K + 1` passes; `K` (returned last) is as large as the `f32` range allows.
///
/// ```
/// let (x, d, eps, k) = clipresc_core::newton_adversary(1000, 2.0);
/// assert_eq!((x.len(), d.len(), eps), (1000, 1000, 1.0));
/// assert!(k >= 30);
/// ```
pub fn newton_adversary(n: usize, p: f64) -> (Vec<f64>, Vec<f64>, f64, usize) {
    assert!(n >= 2, "the adversary needs at least two elements");
    let p = if p.is_finite() { p } else { 2.0 };
    let k_max = (((120.0 * p - 27.0) / 2.0).floor().clamp(1.0, 40.0)) as usize;
    let k = k_max.min(n - 1);
    let n_bg = n - k;
    let w: Vec<f64> = (1..=k).map(|i| 0.25f64.powi(i as i32)).collect();
    let w_bg = w[k - 1] * 1e-3 / n_bg as f64;
    // Chain element i saturates on Newton pass i + 1 (pass 0 is the validating pass at
    // t = 0). The free weight and the residual `target - sum of saturated caps` are tracked
    // as suffix sums and products, not differences, so nothing cancels.
    let mut free_w = vec![w_bg * n_bg as f64; k + 1];
    for i in (0..k).rev() {
        free_w[i] = free_w[i + 1] + w[i];
    }
    let target = 1.0f64;
    let mut residual = target;
    let mut room = Vec::with_capacity(k);
    for i in 0..k {
        let t_i = residual / free_w[i];
        let c_i = 0.75 * t_i * w[i];
        room.push(c_i.powf(1.0 / p));
        residual *= 1.0 - 0.75 * w[i] / free_w[i];
    }
    // Moving towards the lower bound 0 keeps the room `s = x` exact in any precision.
    // Background elements finally move by (residual / n_bg)^(1/p) each; a room of a thousand
    // times that keeps them free and their movement representable next to x.
    let bg_room = (1e3 * (residual / n_bg as f64).powf(1.0 / p)).min(1.0);
    let mut x = vec![bg_room; n];
    let mut d = vec![-w_bg.powf(1.0 / p); n];
    for i in 0..k {
        let pos = (i * n) / k;
        x[pos] = room[i];
        d[pos] = -w[i].powf(1.0 / p);
    }
    (x, d, target.powf(1.0 / p), k)
}
