//! Position-by-position comparison of two logits sequences.
//!
//! All metrics are computed in f64 from f32 inputs, so every finite f32 (±3.4e38 down to
//! subnormals) gives finite metrics: squares of f32 values stay far inside f64's range,
//! and softmaxes are formed as stable log-softmaxes (`x - max - ln Σ exp(x - max)`).

use serde::Serialize;

/// How many top tokens [`PositionMetrics::top5_overlap`] looks at.
pub const TOP_K: usize = 5;

/// Errors that make a comparison meaningless. Each names the position at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    #[error("no positions to compare")]
    Empty,
    #[error("{rust} positions from bitnet-rs but {reference} from the reference")]
    LengthMismatch { rust: usize, reference: usize },
    #[error(
        "position {position}: vocab size {rust} from bitnet-rs but {reference} from the reference"
    )]
    VocabMismatch {
        position: usize,
        rust: usize,
        reference: usize,
    },
    #[error("position {position}: empty logits row")]
    EmptyVocab { position: usize },
    #[error("position {position}: {side} logit {index} is {value} (not finite)")]
    NonFinite {
        side: Side,
        position: usize,
        index: usize,
        value: f32,
    },
}

/// Which side of a comparison a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Rust,
    Reference,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Rust => "bitnet-rs",
            Side::Reference => "reference",
        })
    }
}

/// A metric a tolerance is checked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    CosineSimilarity,
    KlDivergence,
    MaxAbsDiff,
    Top1Disagreement,
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::CosineSimilarity => "cosine similarity",
            Metric::KlDivergence => "KL(p_ref||p_rust)",
            Metric::MaxAbsDiff => "max |Δlogit|",
            Metric::Top1Disagreement => "top-1 token (reference margin)",
        })
    }
}

/// Thresholds a position must stay within. A position diverges when any is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Lowest acceptable cosine similarity of the two logit vectors.
    pub min_cosine: f64,
    /// Highest acceptable KL(p_ref ‖ p_rust), in nats.
    pub max_kl: f64,
    /// Highest acceptable max |Δlogit|.
    pub max_abs: f32,
    /// A top-1 disagreement counts only when the reference's top-1 leads its runner-up by
    /// more than this (a smaller lead is a near-tie that rounding may flip).
    pub near_tie_margin: f32,
}

impl Tolerance {
    /// Bit-identical logits: the strictest setting, and the default.
    pub const EXACT: Tolerance = Tolerance {
        min_cosine: 1.0,
        max_kl: 0.0,
        max_abs: 0.0,
        near_tie_margin: 0.0,
    };
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance::EXACT
    }
}

/// The metrics of one position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionMetrics {
    pub cosine: f64,
    pub l2: f64,
    pub max_abs: f32,
    pub kl: f64,
    pub top1_agree: bool,
    /// How many of the reference's top-5 tokens are in ours.
    pub top5_overlap: usize,
    /// The reference's top-1 logit minus its second-best.
    pub ref_top1_margin: f32,
    pub rust_top5: Vec<(usize, f32)>,
    pub ref_top5: Vec<(usize, f32)>,
}

/// Where a comparison first crossed its tolerance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    pub position: usize,
    pub metric: Metric,
    pub value: f64,
    pub threshold: f64,
}

/// Per-position comparison of bitnet-rs logits against a reference's.
///
/// The first four field names are the ones users' scripts already read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogitsDivergence {
    pub first_divergence_token: Option<usize>,
    pub per_token_cosine_sim: Vec<f64>,
    pub per_token_l2_dist: Vec<f64>,
    pub max_absolute_diff: f32,
    pub per_token_max_abs: Vec<f32>,
    pub per_token_kl: Vec<f64>,
    pub per_token_top1_agree: Vec<bool>,
    pub per_token_top5_overlap: Vec<usize>,
    pub per_token_ref_top1_margin: Vec<f32>,
    /// The first crossing in detail (position, metric, value, threshold).
    pub divergence: Option<Divergence>,
    pub tolerance: Tolerance,
}

/// Compares with [`Tolerance::EXACT`]: any difference is a divergence.
pub fn compare_per_position_logits(
    rust: &[Vec<f32>],
    reference: &[Vec<f32>],
) -> Result<LogitsDivergence, CompareError> {
    compare_per_position_logits_with(rust, reference, &Tolerance::EXACT)
}

/// Compares `rust[i]` with `reference[i]` for every position `i` under `tol`.
pub fn compare_per_position_logits_with(
    rust: &[Vec<f32>],
    reference: &[Vec<f32>],
    tol: &Tolerance,
) -> Result<LogitsDivergence, CompareError> {
    if rust.len() != reference.len() {
        return Err(CompareError::LengthMismatch {
            rust: rust.len(),
            reference: reference.len(),
        });
    }
    if rust.is_empty() {
        return Err(CompareError::Empty);
    }
    let mut out = LogitsDivergence {
        first_divergence_token: None,
        per_token_cosine_sim: Vec::with_capacity(rust.len()),
        per_token_l2_dist: Vec::with_capacity(rust.len()),
        max_absolute_diff: 0.0,
        per_token_max_abs: Vec::with_capacity(rust.len()),
        per_token_kl: Vec::with_capacity(rust.len()),
        per_token_top1_agree: Vec::with_capacity(rust.len()),
        per_token_top5_overlap: Vec::with_capacity(rust.len()),
        per_token_ref_top1_margin: Vec::with_capacity(rust.len()),
        divergence: None,
        tolerance: *tol,
    };
    for (position, (r, x)) in rust.iter().zip(reference).enumerate() {
        let m = position_metrics(position, r, x)?;
        if out.divergence.is_none() {
            out.divergence = crossing(&m, tol).map(|(metric, value, threshold)| Divergence {
                position,
                metric,
                value,
                threshold,
            });
        }
        out.max_absolute_diff = out.max_absolute_diff.max(m.max_abs);
        out.per_token_cosine_sim.push(m.cosine);
        out.per_token_l2_dist.push(m.l2);
        out.per_token_max_abs.push(m.max_abs);
        out.per_token_kl.push(m.kl);
        out.per_token_top1_agree.push(m.top1_agree);
        out.per_token_top5_overlap.push(m.top5_overlap);
        out.per_token_ref_top1_margin.push(m.ref_top1_margin);
    }
    out.first_divergence_token = out.divergence.as_ref().map(|d| d.position);
    Ok(out)
}

/// The first tolerance `m` crosses, as (metric, value, threshold).
pub fn crossing(m: &PositionMetrics, tol: &Tolerance) -> Option<(Metric, f64, f64)> {
    if m.cosine < tol.min_cosine {
        return Some((Metric::CosineSimilarity, m.cosine, tol.min_cosine));
    }
    if m.kl > tol.max_kl {
        return Some((Metric::KlDivergence, m.kl, tol.max_kl));
    }
    if m.max_abs > tol.max_abs {
        return Some((
            Metric::MaxAbsDiff,
            f64::from(m.max_abs),
            f64::from(tol.max_abs),
        ));
    }
    if !m.top1_agree && m.ref_top1_margin > tol.near_tie_margin {
        return Some((
            Metric::Top1Disagreement,
            f64::from(m.ref_top1_margin),
            f64::from(tol.near_tie_margin),
        ));
    }
    None
}

fn check_finite(side: Side, position: usize, v: &[f32]) -> Result<(), CompareError> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(CompareError::NonFinite {
            side,
            position,
            index,
            value: v[index],
        }),
        None => Ok(()),
    }
}

/// All metrics of one position, after validating both rows.
pub fn position_metrics(
    position: usize,
    rust: &[f32],
    reference: &[f32],
) -> Result<PositionMetrics, CompareError> {
    if rust.len() != reference.len() {
        return Err(CompareError::VocabMismatch {
            position,
            rust: rust.len(),
            reference: reference.len(),
        });
    }
    if rust.is_empty() {
        return Err(CompareError::EmptyVocab { position });
    }
    check_finite(Side::Rust, position, rust)?;
    check_finite(Side::Reference, position, reference)?;
    let rust_top5 = top_k(rust, TOP_K);
    let ref_top5 = top_k(reference, TOP_K);
    let top5_overlap = ref_top5
        .iter()
        .filter(|(i, _)| rust_top5.iter().any(|(j, _)| i == j))
        .count();
    let ref_top1_margin = match ref_top5.as_slice() {
        [(_, a), (_, b), ..] => a - b,
        _ => f32::INFINITY,
    };
    Ok(PositionMetrics {
        cosine: cosine_similarity(rust, reference),
        l2: l2_distance(rust, reference),
        max_abs: max_abs_diff(rust, reference),
        kl: kl_divergence(reference, rust),
        top1_agree: rust_top5[0].0 == ref_top5[0].0,
        top5_overlap,
        ref_top1_margin,
        rust_top5,
        ref_top5,
    })
}

/// Largest `|a[i] - b[i]|` over the common length (0 for empty slices), formed in f64. A pair
/// that has no finite difference — a NaN on either side, or infinities — counts as an
/// infinite difference, so a NaN can never hide behind `f32::max` (which drops NaNs).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |m, (&x, &y)| {
        let d = (f64::from(x) - f64::from(y)).abs() as f32;
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    })
}

/// Cosine similarity in [-1, 1]. Two zero vectors are identical (1); a zero vector against
/// a non-zero one shares no direction (0). Each vector is scaled by its max |x| first so
/// that neither ±3.4e38 nor subnormals lose the result.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f64 {
    // Rounding in the norms can leave identical vectors a hair below 1.
    if a == b {
        return 1.0;
    }
    let scale = |v: &[f32]| v.iter().fold(0f64, |m, x| m.max(f64::from(x.abs())));
    let (sa, sb) = (scale(a), scale(b));
    match (sa == 0.0, sb == 0.0) {
        (true, true) => return 1.0,
        (true, false) | (false, true) => return 0.0,
        _ => {}
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x) / sa, f64::from(*y) / sb);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0)
}

/// Euclidean distance, accumulated in f64.
pub fn l2_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

/// Stable log-softmax in f64.
pub fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let lse = x
        .iter()
        .map(|&v| (f64::from(v) - max).exp())
        .sum::<f64>()
        .ln();
    x.iter().map(|&v| f64::from(v) - max - lse).collect()
}

/// KL(softmax(p) ‖ softmax(q)) in nats, ≥ 0 (rounding below zero is clamped).
pub fn kl_divergence(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter()
        .zip(&lq)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>()
        .max(0.0)
}

/// The `k` largest values with their indices, largest first; ties keep the lower index.
pub fn top_k(x: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (i, &v) in x.iter().enumerate() {
        if best.len() == k && best.last().is_some_and(|&(_, w)| v <= w) {
            continue;
        }
        let at = best.partition_point(|&(_, w)| w >= v);
        best.insert(at, (i, v));
        best.truncate(k);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_value_then_index() {
        assert_eq!(
            top_k(&[1.0, 3.0, 3.0, 2.0, -1.0, 5.0], 3),
            vec![(5, 5.0), (1, 3.0), (2, 3.0)]
        );
        assert_eq!(top_k(&[0.5], 5), vec![(0, 0.5)]);
    }

    #[test]
    fn known_values() {
        assert!((cosine_similarity(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-15);
        assert!((cosine_similarity(&[1.0, 1.0], &[-2.0, -2.0]) + 1.0).abs() < 1e-15);
        assert_eq!(l2_distance(&[0.0, 3.0], &[4.0, 0.0]), 5.0);
        // softmax([0, ln 3]) = [1/4, 3/4] against uniform: KL = 1/4 ln(1/2) + 3/4 ln(3/2).
        let kl = kl_divergence(&[0.0, 3f32.ln()], &[0.0, 0.0]);
        let expected = 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln();
        assert!((kl - expected).abs() < 1e-7, "{kl} vs {expected}");
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let v = vec![vec![0.0f32; 4]];
        assert_eq!(
            compare_per_position_logits(&[], &[]),
            Err(CompareError::Empty)
        );
        assert_eq!(
            compare_per_position_logits(&v, &[]),
            Err(CompareError::LengthMismatch {
                rust: 1,
                reference: 0
            })
        );
        assert_eq!(
            compare_per_position_logits(&v, &[vec![0.0; 5]]),
            Err(CompareError::VocabMismatch {
                position: 0,
                rust: 4,
                reference: 5
            })
        );
        assert_eq!(
            compare_per_position_logits(&[vec![]], &[vec![]]),
            Err(CompareError::EmptyVocab { position: 0 })
        );
        let nan = vec![vec![0.0, f32::NAN, 0.0, 0.0]];
        assert!(matches!(
            compare_per_position_logits(&v, &nan),
            Err(CompareError::NonFinite {
                side: Side::Reference,
                index: 1,
                ..
            })
        ));
        let inf = vec![vec![f32::NEG_INFINITY, 0.0, 0.0, 0.0]];
        assert!(matches!(
            compare_per_position_logits(&inf, &v),
            Err(CompareError::NonFinite {
                side: Side::Rust,
                index: 0,
                ..
            })
        ));
    }

    #[test]
    fn max_abs_diff_never_drops_a_nan() {
        assert_eq!(max_abs_diff(&[], &[]), 0.0);
        assert_eq!(max_abs_diff(&[1.0, -2.0], &[1.5, 2.0]), 4.0);
        assert_eq!(max_abs_diff(&[f32::NAN; 3], &[f32::NAN; 3]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[0.0, 1.0], &[0.0, f32::NAN]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[f32::NAN, 1.0], &[0.0, 1.0]), f32::INFINITY);
        assert_eq!(
            max_abs_diff(&[f32::INFINITY], &[f32::INFINITY]),
            f32::INFINITY
        );
    }

    #[test]
    fn a_near_tie_flip_is_not_a_top1_divergence() {
        let tol = Tolerance {
            min_cosine: 0.0,
            max_kl: f64::INFINITY,
            max_abs: f32::INFINITY,
            near_tie_margin: 0.01,
        };
        let reference = vec![vec![1.0, 1.005, -3.0]];
        let flipped = vec![vec![1.006, 1.0, -3.0]];
        let d = compare_per_position_logits_with(&flipped, &reference, &tol).unwrap();
        assert!(!d.per_token_top1_agree[0]);
        assert_eq!(d.first_divergence_token, None);
        let clear = vec![vec![2.0, 1.0, -3.0]];
        let far = vec![vec![1.0, 2.0, -3.0]];
        let d = compare_per_position_logits_with(&clear, &far, &tol).unwrap();
        assert_eq!(d.divergence.unwrap().metric, Metric::Top1Disagreement);
    }
}
