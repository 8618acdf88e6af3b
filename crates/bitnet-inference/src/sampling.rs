//! Token sampling: greedy, or seeded temperature / top-k / top-p.

use crate::InferenceError;

/// Seed of sampled generation (decimal u64).
pub const SEED_ENV: &str = "BITNET_SEED";
/// `1` makes sampling reproducible even when no seed is given: the seed becomes
/// [`DETERMINISTIC_SEED`].
pub const DETERMINISTIC_ENV: &str = "BITNET_DETERMINISTIC";
/// The seed `BITNET_DETERMINISTIC=1` implies when `BITNET_SEED` is unset.
pub const DETERMINISTIC_SEED: u64 = 42;

/// How the next token is picked from a logits row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 (or below) means greedy: the first index of the largest logit.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`
    /// (1.0 = all).
    pub top_p: f32,
    /// Seed of the sampler's random stream.
    pub seed: u64,
}

impl SamplingParams {
    /// Greedy decoding (deterministic, no randomness).
    pub fn greedy() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Seeded sampling with the given temperature, no truncation.
    pub fn with_temperature(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            seed,
        }
    }

    /// These parameters with the seed from the environment: `BITNET_SEED` if set, else
    /// [`DETERMINISTIC_SEED`] under `BITNET_DETERMINISTIC=1`, else the seed unchanged.
    pub fn from_env(self) -> Result<SamplingParams, InferenceError> {
        let seed = match std::env::var(SEED_ENV) {
            Ok(v) if !v.trim().is_empty() => v.trim().parse::<u64>().map_err(|_| {
                InferenceError::InvalidSampling(format!("{SEED_ENV}={v:?} is not a u64"))
            })?,
            _ if std::env::var(DETERMINISTIC_ENV).is_ok_and(|v| v.trim() == "1") => {
                DETERMINISTIC_SEED
            }
            _ => self.seed,
        };
        Ok(SamplingParams { seed, ..self })
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    fn validate(&self) -> Result<(), InferenceError> {
        if !self.temperature.is_finite() {
            return Err(InferenceError::InvalidSampling(format!(
                "temperature {} is not finite",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(InferenceError::InvalidSampling(format!(
                "top_p {} is not in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams::greedy()
    }
}

/// SplitMix64: a small, fast, well-distributed generator; the stream depends only on the
/// seed, so sampling is reproducible across runs and thread counts.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Index of the largest value, the first on ties (llama.cpp's greedy sampler's choice).
/// NaN never wins. `None` for an empty row.
pub fn argmax(logits: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if b >= x => {}
            _ => best = Some((i, x)),
        }
    }
    best.map(|(i, _)| i)
}

/// A sampler with its own random stream and a reusable candidate buffer (sized to the
/// vocabulary once, so sampling allocates nothing per token).
#[derive(Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// (token, probability) candidates, reused.
    cand: Vec<(u32, f32)>,
}

/// Leaves out the candidate buffer (a vocabulary's worth of entries).
impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("params", &self.params)
            .field("rng", &self.rng)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Sampler, InferenceError> {
        params.validate()?;
        Ok(Sampler {
            params,
            rng: Rng::new(params.seed),
            cand: Vec::new(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token from one logits row.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, InferenceError> {
        if self.params.is_greedy() {
            return argmax(logits)
                .map(|i| i as u32)
                .ok_or(InferenceError::EmptyLogits);
        }
        let p = self.params;
        let max = logits
            .iter()
            .copied()
            .filter(|x| !x.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return Err(InferenceError::EmptyLogits);
        }
        self.cand.clear();
        self.cand.reserve(logits.len());
        self.cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.is_nan())
                .map(|(i, &x)| (i as u32, ((x - max) / p.temperature).exp())),
        );
        // Most likely first; ties by token id so the order is total and reproducible.
        self.cand
            .sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 && p.top_k < self.cand.len() {
            self.cand.truncate(p.top_k);
        }
        let total: f64 = self.cand.iter().map(|c| f64::from(c.1)).sum();
        if p.top_p < 1.0 {
            let mut acc = 0.0f64;
            let mut keep = self.cand.len();
            for (i, c) in self.cand.iter().enumerate() {
                acc += f64::from(c.1) / total;
                if acc >= f64::from(p.top_p) {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep);
        }
        let total: f64 = self.cand.iter().map(|c| f64::from(c.1)).sum();
        let mut r = self.rng.next_f64() * total;
        for &(tok, w) in &self.cand {
            r -= f64::from(w);
            if r < 0.0 {
                return Ok(tok);
            }
        }
        self.cand
            .last()
            .map(|c| c.0)
            .ok_or(InferenceError::EmptyLogits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, -1.0, f32::NAN]), Some(1));
    }

    #[test]
    fn greedy_ignores_the_seed() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 0.9, 0.3]).unwrap(), 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let params = SamplingParams {
            temperature: 0.8,
            top_k: 5,
            top_p: 1.0,
            seed: 42,
        };
        let run = || {
            let mut s = Sampler::new(params).unwrap();
            (0..50)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let mut top: Vec<usize> = (0..100).collect();
        top.sort_by(|&x, &y| logits[y].total_cmp(&logits[x]));
        for t in &a {
            assert!(top[..5].contains(&(*t as usize)), "{t}");
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // One dominant token: top_p 0.5 must always pick it.
        let mut logits = vec![0.0f32; 10];
        logits[7] = 10.0;
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            seed: 1,
        })
        .unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&logits).unwrap(), 7);
        }
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let bad = SamplingParams {
            top_p: 0.0,
            ..SamplingParams::greedy()
        };
        assert!(Sampler::new(bad).is_err());
        assert!(Sampler::new(SamplingParams::with_temperature(f32::NAN, 0)).is_err());
    }
}
