//! The seeded generator: SplitMix64 and distributions built only from integer arithmetic
//! and correctly rounded IEEE operations, so a fixture's bytes are the same on every
//! machine and with every dependency version (no libm transcendentals, no `rand` stream
//! that could change between releases).

use sha2::{Digest, Sha256};

/// Domain separator for per-tensor seeds; changing it changes every fixture.
const SEED_DOMAIN: &[u8] = b"bitnet-fixtures/tensor-seed/v1";

/// Standard deviation of a uniform 16-bit integer, as a fraction of its range, times
/// sqrt(4): the Irwin-Hall sum of four has variance 4 · 65536² / 12.
const IRWIN_HALL4_STD: f64 = 65536.0 * 0.577_350_269_189_625_8; // 65536 · sqrt(4/12)

/// Sebastiano Vigna's SplitMix64: a 64-bit state, one multiply-xorshift finaliser per draw.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// The stream of tensor `name` in the model seeded with `seed`: independent of every
    /// other tensor, so one tensor can be regenerated without the rest.
    pub(crate) fn for_tensor(seed: u64, name: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(SEED_DOMAIN)
            .chain_update(seed.to_le_bytes())
            .chain_update(name.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        SplitMix64(u64::from_le_bytes(first))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Approximately N(0, 1): the Irwin-Hall sum of the four 16-bit lanes of one draw,
    /// centred and scaled (bounded at ±3.46, otherwise close to a normal).
    pub(crate) fn std_normal(&mut self) -> f64 {
        let r = self.next_u64();
        let sum: u64 = (0..4).map(|lane| (r >> (16 * lane)) & 0xFFFF).sum();
        (sum as f64 - 2.0 * 65535.0) / IRWIN_HALL4_STD
    }

    /// Fills `out` with trits in {-1, 0, 1}, each with probability 1/3: every byte of a
    /// draw below 255 gives `byte % 3 - 1` (255 is skipped so the three are equally likely).
    pub(crate) fn fill_trits(&mut self, out: &mut [i8]) {
        let mut i = 0;
        while i < out.len() {
            for byte in self.next_u64().to_le_bytes() {
                if byte == u8::MAX {
                    continue;
                }
                let Some(slot) = out.get_mut(i) else { break };
                *slot = (byte % 3) as i8 - 1;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_published_sequence() {
        // Vigna's reference splitmix64.c seeded with 1234567.
        let mut r = SplitMix64(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn distributions_have_the_intended_moments() {
        let mut r = SplitMix64::for_tensor(7, "t");
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.std_normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!(xs.iter().all(|x| x.abs() <= 3.47));

        let mut trits = vec![0i8; 300_000];
        r.fill_trits(&mut trits);
        for t in [-1i8, 0, 1] {
            let frac = trits.iter().filter(|&&x| x == t).count() as f64 / trits.len() as f64;
            assert!((frac - 1.0 / 3.0).abs() < 0.005, "trit {t}: {frac}");
        }
        let u: Vec<f64> = (0..10_000).map(|_| r.uniform()).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    }

    #[test]
    fn tensor_streams_differ_by_seed_and_name() {
        let a = SplitMix64::for_tensor(0, "a").next_u64();
        assert_eq!(a, SplitMix64::for_tensor(0, "a").next_u64());
        assert_ne!(a, SplitMix64::for_tensor(1, "a").next_u64());
        assert_ne!(a, SplitMix64::for_tensor(0, "b").next_u64());
    }
}
