//! Property tests of the comparison math in `logits_compare`.

use bitnet_crossval::logits_compare::{
    compare_per_position_logits, compare_per_position_logits_with, cosine_similarity,
    kl_divergence, l2_distance, position_metrics, Tolerance,
};
use proptest::prelude::*;

/// Logit rows of a shared length (2..64) with values in a realistic range.
fn pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (2usize..64).prop_flat_map(|n| {
        (
            prop::collection::vec(-30.0f32..30.0, n),
            prop::collection::vec(-30.0f32..30.0, n),
        )
    })
}

/// Logits on a 1/1024 grid, so adding a grid-multiple shift is exact in f32.
fn grid_pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    let v = || (-30_720i32..30_720).prop_map(|k| k as f32 / 1024.0);
    (2usize..64)
        .prop_flat_map(move |n| (prop::collection::vec(v(), n), prop::collection::vec(v(), n)))
}

fn row(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-30.0f32..30.0, n)
}

/// A value from any magnitude class, including ±1e30, 1e-30 and subnormals.
fn extreme() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(1e30f32),
        Just(-1e30f32),
        Just(1e-30f32),
        Just(-1e-30f32),
        Just(f32::MAX),
        Just(f32::MIN),
        Just(f32::MIN_POSITIVE / 8.0),
        Just(0.0f32),
        prop::num::f32::NORMAL,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn identical_vectors_do_not_diverge(rows in prop::collection::vec(row(32), 1..6)) {
        let d = compare_per_position_logits(&rows, &rows).unwrap();
        prop_assert_eq!(d.first_divergence_token, None, "{:?}", d.divergence);
        for i in 0..rows.len() {
            prop_assert!((d.per_token_cosine_sim[i] - 1.0).abs() < 1e-12, "cos {}", d.per_token_cosine_sim[i]);
            prop_assert_eq!(d.per_token_l2_dist[i], 0.0);
            prop_assert_eq!(d.per_token_kl[i], 0.0);
            prop_assert!(d.per_token_top1_agree[i]);
            prop_assert_eq!(d.per_token_top5_overlap[i], 5);
        }
        prop_assert_eq!(d.max_absolute_diff, 0.0);
    }

    #[test]
    fn cosine_is_symmetric_bounded_and_scale_invariant((a, b) in pair(), k in 0.001f32..1000.0) {
        let c = cosine_similarity(&a, &b);
        prop_assert!((-1.0..=1.0).contains(&c), "cos {c}");
        prop_assert!((c - cosine_similarity(&b, &a)).abs() < 1e-12, "asymmetric");
        let scaled: Vec<f32> = a.iter().map(|x| x * k).collect();
        let cs = cosine_similarity(&scaled, &b);
        prop_assert!((c - cs).abs() < 1e-6, "cos {c} vs scaled {cs} (k = {k})");
    }

    #[test]
    fn l2_is_symmetric_and_satisfies_the_triangle_inequality((a, b) in pair(), seed in any::<u64>()) {
        let c: Vec<f32> = a.iter().enumerate().map(|(i, x)| x + ((seed >> (i % 60)) & 7) as f32 - 3.5).collect();
        prop_assert_eq!(l2_distance(&a, &b), l2_distance(&b, &a));
        let (ab, bc, ac) = (l2_distance(&a, &b), l2_distance(&b, &c), l2_distance(&a, &c));
        prop_assert!(ac <= ab + bc + 1e-9, "{ac} > {ab} + {bc}");
    }

    #[test]
    fn kl_is_nonnegative_and_zero_iff_softmaxes_match((a, b) in grid_pair(), k in -51_200i32..51_200) {
        let shift = k as f32 / 1024.0;
        let kl = kl_divergence(&a, &b);
        prop_assert!(kl >= 0.0, "kl {kl}");
        // Adding a constant to every logit leaves the softmax, hence KL, unchanged.
        let shifted: Vec<f32> = a.iter().map(|x| x + shift).collect();
        prop_assert!(kl_divergence(&shifted, &a) < 1e-9, "shift changed the softmax");
        let ks = kl_divergence(&shifted, &b);
        prop_assert!((kl - ks).abs() <= 1e-9 * kl.max(1.0), "kl {kl} vs shifted {ks}");
        // Distinct softmaxes (some logit differences differ) give KL > 0.
        let da: Vec<f32> = a.windows(2).map(|w| w[1] - w[0]).collect();
        let db: Vec<f32> = b.windows(2).map(|w| w[1] - w[0]).collect();
        if da.iter().zip(&db).any(|(x, y)| (x - y).abs() > 0.5) {
            prop_assert!(kl > 0.0, "different softmaxes but kl 0");
        }
    }

    #[test]
    fn a_perturbed_position_is_the_first_divergence_exactly_when_it_crosses(
        rows in prop::collection::vec(row(16), 2..8),
        at in any::<prop::sample::Index>(),
        index in any::<prop::sample::Index>(),
        delta in -4.0f32..4.0,
        max_abs in 0.0f32..3.0,
    ) {
        let at = at.index(rows.len());
        let mut ours = rows.clone();
        let i = index.index(16);
        ours[at][i] += delta;
        let actual = (f64::from(ours[at][i]) - f64::from(rows[at][i])).abs() as f32;
        let tol = Tolerance { min_cosine: -1.0, max_kl: f64::INFINITY, max_abs, near_tie_margin: f32::INFINITY };
        let d = compare_per_position_logits_with(&ours, &rows, &tol).unwrap();
        let expected = (actual > max_abs).then_some(at);
        prop_assert_eq!(d.first_divergence_token, expected, "Δ {} vs threshold {}", actual, max_abs);
    }

    #[test]
    fn extreme_magnitudes_give_finite_metrics(
        a in prop::collection::vec(extreme(), 2..40),
        b_seed in prop::collection::vec(extreme(), 40),
    ) {
        let b: Vec<f32> = b_seed[..a.len()].to_vec();
        let m = position_metrics(0, &a, &b).unwrap();
        prop_assert!(m.cosine.is_finite() && m.l2.is_finite() && m.kl.is_finite(), "{m:?}");
        prop_assert!(m.max_abs.is_finite() || m.max_abs == f32::INFINITY, "{m:?}");
        prop_assert!(m.kl >= 0.0);
    }
}
