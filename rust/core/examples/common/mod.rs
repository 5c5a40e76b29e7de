//! The synthetic workload the examples time: images in `[0, 1)` and a roughly Gaussian
//! direction, from a fixed xorshift stream (no RNG dependency, the same data every run).

/// `(x, delta)` of `rows * n` elements each.
pub fn images(rows: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut s = 88172645463325252u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let x: Vec<f32> = (0..rows * n).map(|_| next()).collect();
    // a sum of four uniforms, centred
    let d: Vec<f32> = (0..rows * n)
        .map(|_| (next() + next() + next() + next() - 2.0) * 1.7)
        .collect();
    (x, d)
}
