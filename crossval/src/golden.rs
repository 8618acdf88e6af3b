//! The golden view of a case: what `crossval/golden/*.snap` records.
//!
//! Goldens must not change with the machine, the thread count or the SIMD path
//! (`BITNET_FORCE_SCALAR=1`), so they hold ids, positions and per-position metrics as
//! order-of-magnitude buckets, never raw floats: a change of bucket is a real change in
//! behaviour that someone must review.
//!
//! Because an exact case is snapshotted only when it passes, its divergence part is always
//! zero; what pins the numbers themselves is the reference side, which is deterministic
//! (fixed build, one thread): its fingerprint (the build it reports and the session
//! settings), its top-5 ids at every position, and a digest of its logits rounded to
//! [`crate::runner::LOGITS_DIGEST_PRECISION`]. A change that moves both sides together —
//! a reference upgrade, a fixture generator change — changes the digest even when no
//! greedy id moves.

use serde::Serialize;

use crate::report::{CaseReport, Status};

/// The decade a non-negative error falls in: `"0"` when exactly zero, else `"1e-7"` for
/// values in [1e-7, 1e-6), and so on.
pub fn bucket(v: f64) -> String {
    if v <= 0.0 {
        return "0".into();
    }
    format!("1e{}", v.log10().floor() as i32)
}

/// A run of consecutive positions `from..=to` with identical bucketed metrics (runs keep
/// snapshots of long prompts short: an exact case is a single run).
#[derive(Debug, PartialEq, Serialize)]
pub struct GoldenRun {
    pub from: usize,
    pub to: usize,
    pub top1_agree: bool,
    pub top5_overlap: usize,
    pub max_abs: String,
    pub one_minus_cosine: String,
    pub kl: String,
}

/// What a case's snapshot holds.
#[derive(Debug, Serialize)]
pub struct GoldenView {
    pub case: String,
    pub status: Status,
    /// The reference's version string (the build's pin, the library's own version, the ISA
    /// it was compiled for) and its session settings.
    pub reference: String,
    pub reference_settings: String,
    /// Token ids, space-separated (one line each keeps snapshots of long prompts short).
    pub prompt_tokens: String,
    pub reference_generated: String,
    pub rust_generated: String,
    pub first_divergence_token: Option<usize>,
    pub first_token_mismatch: Option<usize>,
    pub positions: Vec<GoldenRun>,
    /// Per position, the reference's top-5 ids, space-separated.
    pub reference_top5: Vec<String>,
    pub reference_logits_digest: String,
}

impl GoldenView {
    pub fn of(r: &CaseReport) -> GoldenView {
        let mut positions: Vec<GoldenRun> = Vec::new();
        if let Some(d) = &r.divergence {
            for i in 0..d.per_token_cosine_sim.len() {
                let run = GoldenRun {
                    from: i,
                    to: i,
                    top1_agree: d.per_token_top1_agree[i],
                    top5_overlap: d.per_token_top5_overlap[i],
                    max_abs: bucket(f64::from(d.per_token_max_abs[i])),
                    one_minus_cosine: bucket(1.0 - d.per_token_cosine_sim[i]),
                    kl: bucket(d.per_token_kl[i]),
                };
                match positions.last_mut() {
                    Some(last) if same_metrics(last, &run) => last.to = i,
                    _ => positions.push(run),
                }
            }
        }
        GoldenView {
            case: r.case.clone(),
            status: r.status,
            reference: r.reference_version.clone(),
            reference_settings: r.reference_settings.clone(),
            prompt_tokens: ids(&r.prompt_tokens),
            reference_generated: ids(&r.reference_generated),
            rust_generated: ids(&r.rust_generated),
            first_divergence_token: r.divergence.as_ref().and_then(|d| d.first_divergence_token),
            first_token_mismatch: r.first_token_mismatch,
            positions,
            reference_top5: r.reference_top5.iter().map(|t| ids(t)).collect(),
            reference_logits_digest: r.reference_logits_digest.clone(),
        }
    }
}

fn ids(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

fn same_metrics(a: &GoldenRun, b: &GoldenRun) -> bool {
    (
        a.top1_agree,
        a.top5_overlap,
        &a.max_abs,
        &a.one_minus_cosine,
        &a.kl,
    ) == (
        b.top1_agree,
        b.top5_overlap,
        &b.max_abs,
        &b.one_minus_cosine,
        &b.kl,
    )
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_are_decades() {
        assert_eq!(bucket(0.0), "0");
        assert_eq!(bucket(-1e-20), "0");
        assert_eq!(bucket(3e-7), "1e-7");
        assert_eq!(bucket(1.0), "1e0");
        assert_eq!(bucket(0.099), "1e-2");
    }
}
