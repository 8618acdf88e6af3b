//! The crate's one error type.

use std::path::PathBuf;

use bitnet_gguf::GgufError;
use bitnet_kernels::KernelError;

/// Everything that can go wrong locating data or generating a fixture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// Registry data that `make setup` fetches is not there.
    #[error("{what} not found at {}: run `make setup` (or point BITNET_DATA_DIR at the fetched data)", path.display())]
    DataMissing { what: &'static str, path: PathBuf },

    /// The vocabulary file is not the one fixtures are built on.
    #[error("vocabulary {}: {reason}", path.display())]
    BadVocab { path: PathBuf, reason: String },

    /// A combination of spec fields no reference could load.
    #[error("fixture {id}: {reason}")]
    Unsupported { id: String, reason: &'static str },

    /// Custom hyper-parameters no model can have (a zero size, `n_embd != n_head ·
    /// head_dim`, ...); `shape` is the would-be id part.
    #[error("shape {shape}: {reason}")]
    BadShape { shape: String, reason: String },

    /// A tensor name that is not in the fixture.
    #[error("fixture {id} has no tensor '{name}'")]
    UnknownTensor { id: String, name: String },

    /// A ternary weight was asked for by the name of a tensor that is not one.
    #[error("'{name}' is not a ternary linear weight")]
    NotTernary { name: String },

    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done: "creating", "writing", "renaming", ...
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {source}", path.display())]
    Gguf {
        path: PathBuf,
        #[source]
        source: GgufError,
    },

    #[error(transparent)]
    Kernel(#[from] KernelError),

    /// A generated file disagrees with its own plan (a bug in this crate or in the writer).
    #[error("fixture generation is inconsistent: {reason}")]
    Internal { reason: String },
}
