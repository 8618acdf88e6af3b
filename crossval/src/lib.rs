//! bitnet-crossval: per-token parity of bitnet-rs against the C++ references.
//!
//! [`logits_compare`] holds the comparison math. With the `crossval` (C++ references) and
//! `integration-tests` (whole models) features, the parity suite's pieces are here too:
//! the case matrix ([`cases`]), which reference runs which file ([`routing`]), per-model
//! tolerances ([`tolerance`]), the case runner
//! ([`runner`]), reports ([`report`]) and the golden view ([`golden`]); the suite itself is
//! `crossval/tests/per_token_parity.rs`. [`localize`] finds the first divergent op of a
//! failing case from both sides' captured intermediates.

#![forbid(unsafe_code)]

pub mod logits_compare;

#[cfg(all(feature = "crossval", feature = "integration-tests"))]
pub mod cases;
#[cfg(feature = "integration-tests")]
pub mod definition;
#[cfg(all(feature = "crossval", feature = "integration-tests"))]
pub mod golden;
pub mod kld;
pub mod localize;
#[cfg(all(feature = "crossval", feature = "integration-tests"))]
pub mod report;
#[cfg(all(feature = "crossval", feature = "integration-tests"))]
pub mod routing;
#[cfg(all(feature = "crossval", feature = "integration-tests"))]
pub mod runner;
#[cfg(all(feature = "crossval", feature = "integration-tests"))]
pub mod tolerance;

pub use logits_compare::{
    compare_per_position_logits, compare_per_position_logits_with, CompareError, LogitsDivergence,
    Tolerance,
};
