//! The crate's one error type.

use bitnet_models::ModelError;

/// Everything that can go wrong in a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferenceError {
    /// Loading or running the model failed (names the tensor, key or position).
    #[error(transparent)]
    Model(#[from] ModelError),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("invalid sampling parameters: {0}")]
    InvalidSampling(String),

    #[error("no finite logit to sample from")]
    EmptyLogits,
}
