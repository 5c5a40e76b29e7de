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
    let w_total = w.iter().sum::<f64>() + w_bg * n_bg as f64;
    let target = 1.0f64;
    // Chain element i saturates on Newton pass i + 1 (pass 0 is the validating pass at t = 0).
    let (mut c_sat, mut w_sat) = (0.0f64, 0.0f64);
    let mut room = Vec::with_capacity(k);
    for &wi in &w {
        let t_i = (target - c_sat) / (w_total - w_sat);
        let c_i = 0.75 * t_i * wi;
        room.push(c_i.powf(1.0 / p));
        c_sat += c_i;
        w_sat += wi;
    }
    // Moving towards the lower bound 0 keeps the room `s = x` exact in any precision.
    let mut x = vec![1.0f64; n];
    let mut d = vec![-w_bg.powf(1.0 / p); n];
    for i in 0..k {
        let pos = (i * n) / k;
        x[pos] = room[i];
        d[pos] = -w[i].powf(1.0 / p);
    }
    (x, d, target.powf(1.0 / p), k)
}
