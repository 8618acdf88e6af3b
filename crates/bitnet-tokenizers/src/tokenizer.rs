//! The public tokenizer: special-token partitioning, then the model, then decoding.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use crate::decoder::{DecodeOptions, Decoder};
use crate::error::TokenizerError;
use crate::model::bpe::Bpe;
use crate::model::spm;
use crate::model::wpm::Wpm;
use crate::pre_tokenizer::PreTokenizer;
use crate::special::{Fragment, SpecialTokens};
use crate::vocab::{TokenAttr, Vocab};

/// Which of llama.cpp's vocabulary types the tokenizer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenizerKind {
    /// SentencePiece BPE with scores and byte fallback (`tokenizer.ggml.model = llama`).
    Spm,
    /// BPE with merge ranks (`gpt2`: byte-level; `gemma4`: raw UTF-8).
    Bpe,
    /// WordPiece (`bert`).
    Wpm,
}

#[derive(Debug, Clone)]
pub(crate) enum Model {
    Spm,
    Bpe(Bpe),
    Wpm(Wpm),
}

/// Special-token ids after defaults and metadata; `None` where the vocabulary has none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpecialIds {
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) eot: Option<u32>,
    pub(crate) unk: Option<u32>,
    pub(crate) sep: Option<u32>,
}

/// A tokenizer built from a GGUF file's `tokenizer.ggml.*` metadata that produces the same
/// token ids as llama.cpp's `llama_tokenize` and the same bytes as `llama_detokenize`.
///
/// ```no_run
/// use bitnet_tokenizers::Tokenizer;
///
/// # fn main() -> Result<(), bitnet_tokenizers::TokenizerError> {
/// let tok = Tokenizer::from_gguf("model.gguf")?;
/// let ids = tok.encode("<|begin_of_text|>Hello", false, true)?;
/// assert_eq!(tok.decode(&ids)?, "<|begin_of_text|>Hello");
/// # Ok(()) }
/// ```
///
/// Cloning copies the vocabulary (use an `Arc` to share one tokenizer between threads).
#[derive(Clone)]
pub struct Tokenizer {
    pub(crate) kind: TokenizerKind,
    pub(crate) pre: Option<PreTokenizer>,
    pub(crate) vocab: Vocab,
    pub(crate) model: Model,
    pub(crate) special_tokens: SpecialTokens,
    pub(crate) ids: SpecialIds,
    pub(crate) eog: BTreeSet<u32>,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    /// SPM: a space is prepended to text that starts the input or follows a special token.
    pub(crate) add_space_prefix: bool,
    /// BPE: spaces become `▁` before pre-tokenization (Gemma 4).
    pub(crate) escape_whitespaces: bool,
    pub(crate) decoder: Decoder,
}

/// Summarises: the vocabulary can have hundreds of thousands of entries.
impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("pre", &self.pre)
            .field("n_vocab", &self.vocab.len())
            .field("bos", &self.ids.bos)
            .field("eos", &self.ids.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish()
    }
}

impl Tokenizer {
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// The pre-tokenizer family (BPE vocabularies only).
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        self.pre
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// Beginning-of-sequence token (for WordPiece, the `[CLS]` token).
    pub fn bos(&self) -> Option<u32> {
        self.ids.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.ids.eos
    }

    /// End-of-turn token (from metadata, or recognised by text as llama.cpp does).
    pub fn eot(&self) -> Option<u32> {
        self.ids.eot
    }

    /// Unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.ids.unk
    }

    /// Whether generation should stop at this token (EOS, EOT, EOM and the tokens llama.cpp
    /// recognises as ending generation).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Whether `encode` with `add_special` prepends BOS (SPM and BPE).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode` with `add_special` appends EOS (SPM and BPE).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Overrides `tokenizer.ggml.add_bos_token` (and the per-type default).
    pub fn with_add_bos(mut self, add_bos: bool) -> Tokenizer {
        self.add_bos = add_bos;
        self
    }

    /// Overrides `tokenizer.ggml.add_eos_token` (and the per-type default).
    pub fn with_add_eos(mut self, add_eos: bool) -> Tokenizer {
        self.add_eos = add_eos;
        self
    }

    /// The text of a token as stored in the vocabulary (GPT-2 byte characters, `▁`, ...).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.text(id)
    }

    /// The id of the token with exactly this vocabulary text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// A token's attributes.
    pub fn token_attr(&self, id: u32) -> Option<TokenAttr> {
        self.vocab.attr(id)
    }

    /// Tokenizes `text` as llama.cpp's `llama_tokenize(text, add_special, parse_special)`.
    ///
    /// `add_special` adds BOS/EOS as the vocabulary asks (`add_bos`/`add_eos`; for
    /// WordPiece always `[CLS]` … `[SEP]`). `parse_special` turns the text of control tokens
    /// (`<|begin_of_text|>`) into those tokens; user-defined tokens are always recognised.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let fragments = self
            .special_tokens
            .partition(&self.vocab, text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let required =
            |id: Option<u32>, which| id.ok_or(TokenizerError::MissingSpecialToken { which });
        let (add_bos, add_eos) = match self.kind {
            TokenizerKind::Wpm => (add_special, false),
            _ => (add_special && self.add_bos, add_special && self.add_eos),
        };
        if add_bos {
            out.push(required(self.ids.bos, "BOS")?);
        }
        // SPM prefixes a space to text at the start and after each special token.
        let mut after_special = true;
        for fragment in &fragments {
            match fragment {
                Fragment::Token(id) => {
                    out.push(*id);
                    after_special = true;
                }
                Fragment::Text(range) => {
                    let piece = text.get(range.clone()).unwrap_or_default();
                    self.tokenize_text(piece, after_special, &mut out)?;
                    after_special = false;
                }
            }
        }
        if add_eos {
            out.push(required(self.ids.eos, "EOS")?);
        }
        if self.kind == TokenizerKind::Wpm && add_special {
            out.push(required(self.ids.sep, "SEP")?);
        }
        Ok(out)
    }

    /// Runs the model over one fragment of raw text.
    fn tokenize_text(
        &self,
        piece: &str,
        after_special: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        const ESCAPED_SPACE: &str = "\u{2581}";
        match &self.model {
            Model::Spm => {
                let prefix = if self.add_space_prefix && after_special {
                    ESCAPED_SPACE
                } else {
                    ""
                };
                let escaped = format!("{prefix}{}", piece.replace(' ', ESCAPED_SPACE));
                spm::tokenize(&self.vocab, &escaped, out)
            }
            Model::Bpe(bpe) => {
                if self.escape_whitespaces {
                    bpe.tokenize(&self.vocab, &piece.replace(' ', ESCAPED_SPACE), out);
                } else {
                    bpe.tokenize(&self.vocab, piece, out);
                }
                Ok(())
            }
            Model::Wpm(wpm) => wpm.tokenize(&self.vocab, piece, out),
        }
    }

    /// Decodes to text, rendering special tokens (see [`DecodeOptions::default`]). Bytes
    /// that do not form valid UTF-8 (a sequence cut between tokens) become U+FFFD; use
    /// [`Tokenizer::decode_bytes`] to keep them.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// Decodes to raw bytes, rendering special tokens.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        self.detokenize(ids, DecodeOptions::default())
    }

    /// llama.cpp's `llama_detokenize(ids, remove_special, unparse_special)`.
    pub fn detokenize(
        &self,
        ids: &[u32],
        options: DecodeOptions,
    ) -> Result<Vec<u8>, TokenizerError> {
        self.decoder.detokenize(
            &self.vocab,
            ids,
            (self.ids.bos, self.ids.eos),
            (self.add_bos, self.add_eos),
            options,
        )
    }

    /// One token's bytes, as llama.cpp's `llama_token_to_piece(id, lstrip = 0, special)`:
    /// control and unknown tokens are empty unless `special`.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Result<Cow<'_, [u8]>, TokenizerError> {
        self.decoder.piece(&self.vocab, id, special)
    }
}
