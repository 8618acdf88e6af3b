//! bitnet-crossval: per-token parity of bitnet-rs against the C++ references.
//!
//! [`logits_compare`] holds the comparison math; the parity suite itself lives in
//! `crossval/tests/` behind the `crossval` (C++ references) and `integration-tests`
//! (whole-model cases) features.

pub mod logits_compare;

pub use logits_compare::{
    compare_per_position_logits, compare_per_position_logits_with, CompareError, LogitsDivergence,
    Tolerance,
};
