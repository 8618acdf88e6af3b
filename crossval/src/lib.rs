//! bitnet-crossval: per-token parity of bitnet-rs against the C++ references.
//!
//! The comparison math (`logits_compare`) and the parity suite land with the parity-suite
//! issue; this crate is the home of the `crossval` and `integration-tests` features.
