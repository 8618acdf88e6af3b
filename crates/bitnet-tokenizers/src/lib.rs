//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`) that reproduce llama.cpp's
//! token ids exactly: SentencePiece BPE (`llama`), byte-level BPE (`gpt2`, with the
//! pre-tokenizers in [`PreTokenizer`]), Gemma 4's raw-UTF-8 BPE (`gemma4`) and WordPiece
//! (`bert`).
//!
//! ```no_run
//! use bitnet_tokenizers::Tokenizer;
//!
//! # fn main() -> Result<(), bitnet_tokenizers::TokenizerError> {
//! let tok = Tokenizer::from_gguf("ggml-model-i2_s.gguf")?;
//! let ids = tok.encode("Hello world", true, false)?; // BOS added as the model asks
//! assert_eq!(ids.first().copied(), tok.bos());
//! let text = tok.decode(&ids[1..])?;
//! assert_eq!(text, "Hello world");
//! # Ok(()) }
//! ```
//!
//! The pipeline has one module per stage, as in llama.cpp's `llama-vocab.cpp`:
//! `special` cuts special tokens out of the text (`tokenizer_st_partition`),
//! `pre_tokenizer` splits BPE text into words (`unicode_regex_split`), `model` merges or
//! matches (`llm_tokenizer_spm`/`_bpe`/`_wpm`), and `decoder` maps ids back to bytes
//! (`token_to_piece`, `detokenize`). `unicode` holds the character tables, generated from
//! the same Unicode version as llama.cpp's.
//!
//! Deliberate differences from llama.cpp: malformed metadata that llama.cpp accepts
//! silently or aborts on (merges that are not `"a b"` over known tokens, duplicate token
//! texts, per-token arrays of the wrong length) is a [`TokenizerError`]; a missing special
//! token that `add_special` needs is an error instead of an assertion failure.

#![forbid(unsafe_code)]

mod decoder;
mod error;
mod load;
mod model;
mod pre_tokenizer;
mod special;
mod tokenizer;
mod unicode;
mod vocab;

pub use decoder::DecodeOptions;
pub use error::{MergeProblem, TokenizerError};
pub use pre_tokenizer::PreTokenizer;
pub use tokenizer::{Tokenizer, TokenizerKind};
pub use vocab::TokenAttr;
