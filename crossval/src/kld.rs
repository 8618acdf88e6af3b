//! llama-perplexity's `--kl-divergence` statistics of an engine's logits against a
//! baseline's (the BitNet definition's in `crate::definition`, a reference's with its
//! defaults on the reference-defaults axis), over all positions: mean, 99th percentile and
//! maximum of KL(p_baseline ‖ p_engine), how often the top-1 token is the same, and how much
//! of the baseline's top 5 the engine's top 5 holds. The per-position numbers come from
//! [`crate::logits_compare::position_metrics`] with the baseline as the reference side.

use serde::Serialize;

use crate::logits_compare::{position_metrics, CompareError, TOP_K};

/// KL statistics of one engine on one token sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KldStats {
    /// Positions compared.
    pub positions: usize,
    /// Mean KL(p_definition ‖ p_engine), nats.
    pub mean_kl: f64,
    /// 99th percentile (linear interpolation between the two nearest ranks, as
    /// llama-perplexity computes it), nats.
    pub p99_kl: f64,
    pub max_kl: f64,
    /// The position of [`KldStats::max_kl`].
    pub max_kl_position: usize,
    /// Fraction of positions (0..=1) whose top-1 token is the definition's.
    pub top1_same: f64,
    /// Mean fraction (0..=1) of the definition's top 5 tokens found in the engine's top 5.
    pub top5_overlap: f64,
}

/// How far an engine may be from a baseline in these statistics: the reference-defaults
/// axis (`crate::tolerance::defaults_bound`) and the definition check
/// (`crate::definition::bounds`) both judge with it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KldBound {
    pub mean_kl: f64,
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Least fraction of positions with the same top-1 token.
    pub min_top1_same: f64,
    /// Least mean fraction of the reference's top 5 found in ours.
    pub min_top5_overlap: f64,
}

impl KldBound {
    /// `None` when `stats` are inside the bound, else the first statistic that crossed it.
    pub fn exceeded(&self, stats: &KldStats) -> Option<String> {
        let checks = [
            ("mean KL", stats.mean_kl, self.mean_kl, true),
            ("p99 KL", stats.p99_kl, self.p99_kl, true),
            ("max KL", stats.max_kl, self.max_kl, true),
            ("top-1 same", stats.top1_same, self.min_top1_same, false),
            (
                "top-5 overlap",
                stats.top5_overlap,
                self.min_top5_overlap,
                false,
            ),
        ];
        checks
            .into_iter()
            .find(|&(_, v, bound, upper)| if upper { v > bound } else { v < bound })
            .map(|(what, v, bound, upper)| {
                let at = if what == "max KL" {
                    format!(" at position {}", stats.max_kl_position)
                } else {
                    String::new()
                };
                format!(
                    "{what} {v:.3e}{at} {} bound {bound:.3e} ({:.1}×)",
                    if upper { ">" } else { "<" },
                    v / bound
                )
            })
    }
}

/// The statistics of `engine` against `definition`, position by position. Errors when the
/// sequences are empty, differ in length or vocabulary, or hold a non-finite logit
/// (`Rust` is the engine side, `Reference` the definition, in the error).
pub fn kld_stats(definition: &[Vec<f32>], engine: &[Vec<f32>]) -> Result<KldStats, CompareError> {
    if engine.len() != definition.len() {
        return Err(CompareError::LengthMismatch {
            rust: engine.len(),
            reference: definition.len(),
        });
    }
    if engine.is_empty() {
        return Err(CompareError::Empty);
    }
    let mut kl = Vec::with_capacity(engine.len());
    let (mut top1, mut top5) = (0usize, 0usize);
    for (position, (e, d)) in engine.iter().zip(definition).enumerate() {
        let m = position_metrics(position, e, d)?;
        kl.push(m.kl);
        top1 += usize::from(m.top1_agree);
        top5 += m.top5_overlap;
    }
    let n = kl.len();
    let (max_kl_position, max_kl) =
        kl.iter()
            .copied()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (i, v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            });
    let mean_kl = kl.iter().sum::<f64>() / n as f64;
    kl.sort_by(f64::total_cmp);
    // At most TOP_K of the definition's tokens can be found (fewer with a tiny vocabulary).
    let k = TOP_K.min(definition[0].len());
    Ok(KldStats {
        positions: n,
        mean_kl,
        p99_kl: percentile(&kl, 0.99),
        max_kl,
        max_kl_position,
        top1_same: top1 as f64 / n as f64,
        top5_overlap: top5 as f64 / (n * k) as f64,
    })
}

/// llama-perplexity's percentile of sorted values: `p = fraction·(n-1)`, linear between
/// ranks ⌊p⌋ and ⌊p⌋+1. `sorted` is non-empty.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let p = fraction * (sorted.len() - 1) as f64;
    let i = p as usize;
    let w = p - i as f64;
    let next = sorted[(i + 1).min(sorted.len() - 1)];
    (1.0 - w) * sorted[i] + w * next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_have_zero_divergence() {
        let rows = vec![vec![1.0f32, 2.0, 3.0, 0.5, -1.0, 4.0], vec![0.0; 6]];
        let s = kld_stats(&rows, &rows).expect("stats");
        assert_eq!(s.positions, 2);
        assert_eq!((s.mean_kl, s.p99_kl, s.max_kl), (0.0, 0.0, 0.0));
        assert_eq!((s.top1_same, s.top5_overlap), (1.0, 1.0));
    }

    #[test]
    fn statistics_of_known_values() {
        // Row 1: softmax([0, ln 3]) vs uniform, KL = 1/4 ln(1/2) + 3/4 ln(3/2); row 0 equal.
        let def = vec![vec![0.0f32, 0.0], vec![0.0, 3f32.ln()]];
        let eng = vec![vec![0.0f32, 0.0], vec![0.0, 0.0]];
        let s = kld_stats(&def, &eng).expect("stats");
        let kl = 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln();
        assert!((s.max_kl - kl).abs() < 1e-7, "{s:?}");
        assert_eq!(s.max_kl_position, 1);
        assert!((s.mean_kl - kl / 2.0).abs() < 1e-7, "{s:?}");
        assert!((s.p99_kl - 0.99 * kl).abs() < 1e-7, "{s:?}");
        // Ties keep the lower index: the engine's top-1 at row 1 is token 0, not 1.
        assert_eq!(s.top1_same, 0.5);
        assert_eq!(s.top5_overlap, 1.0);
    }

    #[test]
    fn a_bound_names_the_first_statistic_it_crosses() {
        let stats = KldStats {
            positions: 4,
            mean_kl: 1e-3,
            p99_kl: 4e-3,
            max_kl: 5e-3,
            max_kl_position: 3,
            top1_same: 0.5,
            top5_overlap: 0.9,
        };
        let bound = KldBound {
            mean_kl: 2e-3,
            p99_kl: 6e-3,
            max_kl: 6e-3,
            min_top1_same: 0.5,
            min_top5_overlap: 0.9,
        };
        assert_eq!(
            bound.exceeded(&stats),
            None,
            "equal to a bound is inside it"
        );
        let tight_max = KldBound {
            max_kl: 2.5e-3,
            ..bound
        };
        let msg = tight_max.exceeded(&stats).expect("max crossed");
        assert!(
            msg.starts_with("max KL 5.000e-3 at position 3 > bound"),
            "{msg}"
        );
        let tight_top1 = KldBound {
            min_top1_same: 0.75,
            ..bound
        };
        let msg = tight_top1.exceeded(&stats).expect("top-1 crossed");
        assert!(msg.starts_with("top-1 same 5.000e-1 < bound"), "{msg}");
    }

    #[test]
    fn percentile_interpolates_like_llama_perplexity() {
        let v: Vec<f64> = (0..101).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[1.0, 3.0], 0.5), 2.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(kld_stats(&[], &[]), Err(CompareError::Empty));
        assert!(matches!(
            kld_stats(&[vec![0.0]], &[]),
            Err(CompareError::LengthMismatch { .. })
        ));
        assert!(matches!(
            kld_stats(&[vec![0.0, 1.0]], &[vec![f32::NAN, 0.0]]),
            Err(CompareError::NonFinite { .. })
        ));
    }
}
