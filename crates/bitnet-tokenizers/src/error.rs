//! The crate's one error type.

use bitnet_gguf::GgufError;

/// Everything that can go wrong building a tokenizer from GGUF metadata, encoding or
/// decoding. Each variant names the key, token or value at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The GGUF file could not be read, or a tokenizer key has the wrong type.
    #[error(transparent)]
    Gguf(#[from] GgufError),

    /// A key the tokenizer cannot be built without is absent (e.g. `tokenizer.ggml.tokens`,
    /// or `tokenizer.ggml.merges` for a BPE vocabulary).
    #[error("missing metadata key '{key}'")]
    MissingKey { key: &'static str },

    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error("unsupported tokenizer.ggml.model '{model}' (supported: llama, gpt2, bert, gemma4)")]
    UnsupportedModel { model: String },

    /// `tokenizer.ggml.pre` names a pre-tokenizer llama.cpp knows but this crate does not
    /// implement yet.
    #[error("unsupported tokenizer.ggml.pre '{pre}': llama.cpp knows it, this crate does not implement it")]
    UnsupportedPreTokenizer { pre: String },

    /// `tokenizer.ggml.pre` names a pre-tokenizer llama.cpp does not know either.
    #[error("unknown tokenizer.ggml.pre '{pre}'")]
    UnknownPreTokenizer { pre: String },

    /// `tokenizer.ggml.tokens` is an empty array.
    #[error("tokenizer.ggml.tokens is empty")]
    EmptyVocab,

    /// More tokens than a llama.cpp token id (`i32`) can address.
    #[error("tokenizer.ggml.tokens has {n_tokens} entries, more than token ids can address")]
    TooManyTokens { n_tokens: usize },

    /// A per-token array (`scores`, `token_type`) does not have one entry per token.
    #[error("{key} has {len} entries but tokenizer.ggml.tokens has {n_tokens}")]
    LengthMismatch {
        key: &'static str,
        len: usize,
        n_tokens: usize,
    },

    /// Two tokens have the same text, so text → id is ambiguous (llama.cpp aborts on this).
    #[error("token {id} has the same text as token {first_id}: {text:?}")]
    DuplicateToken {
        id: u32,
        first_id: u32,
        text: String,
    },

    /// A `tokenizer.ggml.merges` entry is malformed or refers to text that is not a token.
    #[error("tokenizer.ggml.merges[{index}] = {merge:?}: {problem}")]
    BadMerge {
        index: usize,
        merge: String,
        problem: MergeProblem,
    },

    /// A token id (in `decode`, or one a caller passed) is not in the vocabulary.
    #[error("token id {id} is out of range (vocabulary has {n_vocab} tokens)")]
    TokenOutOfRange { id: u32, n_vocab: usize },

    /// Encoding with `add_special` needs a special token the vocabulary does not define.
    #[error("the vocabulary has no {which} token, but add_special asked for one")]
    MissingSpecialToken { which: &'static str },

    /// SPM byte fallback needs a token for this byte (`<0xNN>`), and the vocabulary has none.
    #[error("the vocabulary has no byte-fallback token for byte 0x{byte:02X}")]
    NoByteToken { byte: u8 },
}

/// Why a merge rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeProblem {
    /// A merge is `"left right"`: exactly one space separating two non-empty token texts.
    #[error("expected exactly one space between two tokens, found {spaces}")]
    SpaceCount { spaces: usize },

    /// One side of the merge is not a token of the vocabulary.
    #[error("{side} part {text:?} is not in the vocabulary")]
    UnknownToken { side: &'static str, text: String },
}
