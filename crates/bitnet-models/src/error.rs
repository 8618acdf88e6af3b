//! The crate's one error type.

use bitnet_gguf::{GgmlType, GgufError};
use bitnet_kernels::KernelError;

/// Everything that can go wrong loading a model or running it. Every variant names the
/// key, tensor or argument it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The container could not be read (I/O, malformed GGUF).
    #[error(transparent)]
    Gguf(#[from] GgufError),

    #[error("unsupported architecture '{arch}' (supported: bitnet, bitnet-b1.58, llama)")]
    UnsupportedArch { arch: String },

    #[error("required metadata key '{key}' is missing")]
    MissingKey { key: String },

    #[error("metadata key '{key}': {reason}")]
    InvalidKey { key: String, reason: String },

    #[error("required tensor '{name}' is missing")]
    MissingTensor { name: String },

    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    WrongShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },

    #[error("tensor '{name}' has type {ggml_type}, which {role} does not support")]
    UnsupportedType {
        name: String,
        ggml_type: GgmlType,
        role: &'static str,
    },

    #[error("tensor '{name}': {reason}")]
    InvalidTensor { name: String, reason: String },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("token id {token} at batch index {index} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange {
        token: u32,
        index: usize,
        n_vocab: usize,
    },

    #[error("positions {start}..{end} exceed the context of {n_ctx}")]
    ContextOverflow {
        start: usize,
        end: usize,
        n_ctx: usize,
    },

    /// A kernel refused its arguments; the model validated shapes at load, so this means a
    /// bug or a tensor the kernel cannot handle (named in the message).
    #[error("kernel error in '{tensor}': {source}")]
    Kernel {
        tensor: String,
        #[source]
        source: KernelError,
    },
}
