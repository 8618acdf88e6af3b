//! Activation rows for the quantizers' property tests: each ISA must write its scalar
//! oracle's bytes for ordinary rows, rows of any finite magnitude, and rows with a few
//! non-finite values in them.

use proptest::prelude::*;

/// Any finite magnitude (normal, subnormal, zero) and the extremes a row can hold. One huge
/// value sets the scale of its whole row or block.
pub(crate) fn any_magnitude() -> BoxedStrategy<f32> {
    prop_oneof![
        prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO,
        prop::sample::select(vec![0.0, -0.0, 1e-40, -1e-40, 3e38, -3e38]),
    ]
    .boxed()
}

/// `rows` with up to `most` of their values replaced by ±inf or NaN: few enough that
/// most rows (or blocks) stay finite and take the vector path.
pub(crate) fn with_non_finite(
    rows: impl Strategy<Value = Vec<f32>>,
    most: usize,
) -> impl Strategy<Value = Vec<f32>> {
    let special = prop::sample::select(vec![f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
    (
        rows,
        prop::collection::vec((any::<prop::sample::Index>(), special), 0..=most),
    )
        .prop_map(|(mut x, put)| {
            if !x.is_empty() {
                for (i, v) in put {
                    let i = i.index(x.len());
                    x[i] = v;
                }
            }
            x
        })
}
