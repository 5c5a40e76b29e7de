//! NumPy's `SeedSequence(seed).generate_state(8, np.uint32)` for an integer `seed`: the key
//! of the core's noise stream that `clipresc._noise.seed_key` computes in Python, derived
//! here for seeds that reach an XLA FFI handler as traced integers (a step counter under
//! `jax.jit`). `tests/test_jax_ffi_noise.py` checks it against NumPy.

/// The constants of NumPy's `bit_generator.pyx` (`SeedSequence`, pool of 4 words).
const POOL: usize = 4;
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

/// The 32-byte key (8 little-endian `u32` words) of `SeedSequence(seed)`.
pub(crate) fn seed_key(seed: u64) -> [u8; 32] {
    // the entropy as NumPy splits an int: 32-bit words, least significant first, [0] for 0
    let mut entropy = vec![seed as u32];
    if seed >> 32 != 0 {
        entropy.push((seed >> 32) as u32);
    }
    let mut hash_const = INIT_A;
    let mut pool = [0u32; POOL];
    for (i, p) in pool.iter_mut().enumerate() {
        *p = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hash_const);
    }
    for src in 0..POOL {
        for dst in 0..POOL {
            if src != dst {
                let h = hashmix(pool[src], &mut hash_const);
                pool[dst] = mix(pool[dst], h);
            }
        }
    }
    // (a u64 has at most 2 words, never more than the pool: no remaining entropy to mix)
    let mut hash_b = INIT_B;
    let mut key = [0u8; 32];
    for (i, out) in key.chunks_exact_mut(4).enumerate() {
        let mut v = pool[i % POOL] ^ hash_b;
        hash_b = hash_b.wrapping_mul(MULT_B);
        v = v.wrapping_mul(hash_b);
        v ^= v >> XSHIFT;
        out.copy_from_slice(&v.to_le_bytes());
    }
    key
}
