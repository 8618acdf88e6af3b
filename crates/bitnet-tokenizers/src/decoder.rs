//! Decoding: token ids back to bytes, with llama.cpp's `token_to_piece` and `detokenize`
//! semantics (piece per token by attribute, SPM's leading-space removal, and the
//! `clean_spaces` passes BPE vocabularies apply by default).

use std::borrow::Cow;

use crate::error::TokenizerError;
use crate::unicode::char_to_byte;
use crate::vocab::{parse_byte_token, TokenAttr, Vocab};
use crate::TokenizerKind;

/// Options of [`crate::Tokenizer::detokenize`], as llama.cpp's `llama_detokenize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Drop a leading BOS and a trailing EOS when the vocabulary adds them.
    pub remove_special: bool,
    /// Render control and unknown tokens as their text (otherwise they decode to nothing).
    pub unparse_special: bool,
}

impl Default for DecodeOptions {
    /// What `decode` uses: every token rendered, nothing removed (llama.cpp's
    /// `common_detokenize` default).
    fn default() -> Self {
        DecodeOptions {
            remove_special: false,
            unparse_special: true,
        }
    }
}

/// The decoding-relevant part of the tokenizer configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decoder {
    pub(crate) kind: TokenizerKind,
    /// BPE pieces hold `▁` for spaces rather than GPT-2 byte characters (Gemma 4).
    pub(crate) escaped_whitespace: bool,
    pub(crate) add_space_prefix: bool,
    pub(crate) clean_spaces: bool,
}

impl Decoder {
    /// The bytes of one token (llama.cpp's `token_to_piece` with no stripping).
    pub(crate) fn piece<'v>(
        &self,
        vocab: &'v Vocab,
        id: u32,
        special: bool,
    ) -> Result<Cow<'v, [u8]>, TokenizerError> {
        let out_of_range = || TokenizerError::TokenOutOfRange {
            id,
            n_vocab: vocab.len(),
        };
        let attr = vocab.attr(id).ok_or_else(out_of_range)?;
        let text = vocab.text(id).ok_or_else(out_of_range)?;
        let shown_raw = TokenAttr::UNKNOWN | TokenAttr::CONTROL;
        if !special && attr.intersects(shown_raw) {
            return Ok(Cow::Borrowed(&[]));
        }
        if attr.intersects(shown_raw | TokenAttr::USER_DEFINED) {
            return Ok(Cow::Borrowed(text.as_bytes()));
        }
        if attr.intersects(TokenAttr::NORMAL) {
            let byte_level = self.kind == TokenizerKind::Bpe && !self.escaped_whitespace;
            return Ok(Cow::Owned(if byte_level {
                decode_byte_level(text)
            } else {
                text.replace('\u{2581}', " ").into_bytes()
            }));
        }
        if attr.intersects(TokenAttr::BYTE) {
            // A malformed byte token decodes as its text rather than as garbage.
            return Ok(match parse_byte_token(text) {
                Some(b) => Cow::Owned(vec![b]),
                None => Cow::Borrowed(text.as_bytes()),
            });
        }
        // Unused and undefined tokens render as nothing, like control tokens.
        Ok(Cow::Borrowed(&[]))
    }

    /// llama.cpp's `detokenize`.
    pub(crate) fn detokenize(
        &self,
        vocab: &Vocab,
        mut ids: &[u32],
        bos_eos: (Option<u32>, Option<u32>),
        add_bos_eos: (bool, bool),
        options: DecodeOptions,
    ) -> Result<Vec<u8>, TokenizerError> {
        let (bos, eos) = bos_eos;
        let (add_bos, add_eos) = add_bos_eos;
        let mut remove_space = self.add_space_prefix;
        if options.remove_special && add_bos {
            if let (Some(&first), Some(bos)) = (ids.first(), bos) {
                if first == bos {
                    remove_space = false;
                    ids = ids.get(1..).unwrap_or_default();
                }
            }
        }
        if options.remove_special && add_eos {
            if let (Some((&last, rest)), Some(eos)) = (ids.split_last(), eos) {
                if last == eos {
                    ids = rest;
                }
            }
        }
        let mut out = Vec::new();
        for &id in ids {
            let piece = self.piece(vocab, id, options.unparse_special)?;
            let piece = match piece.split_first() {
                Some((b' ', rest)) if remove_space => rest,
                _ => &piece[..],
            };
            out.extend_from_slice(piece);
            remove_space = false;
        }
        if self.clean_spaces {
            out = clean_spaces(out);
        }
        Ok(out)
    }
}

/// A byte-level BPE token's bytes: each character stands for one byte. A character
/// outside the table is rendered as llama.cpp renders it, `[UNK_BYTE_0x<hex><text>]`.
fn decode_byte_level(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// llama.cpp's `clean_up_tokenization_spaces`: drop the space before `? ! . ,`, around a
/// lone `'`, and before the contractions `'s 'm 're 've`.
fn clean_spaces(text: Vec<u8>) -> Vec<u8> {
    // Each pass reads the previous pass's output and compares neighbours in it.
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text.get(i - 1) == Some(&b' ') && matches!(x, b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(x);
    }

    let mut src = out;
    let mut out: Vec<u8> = Vec::with_capacity(src.len());
    let mut i = 0;
    while let Some(&x) = src.get(i) {
        let lone_quote =
            i > 0 && x == b'\'' && src.get(i - 1) == Some(&b' ') && src.get(i + 1) == Some(&b' ');
        if lone_quote {
            out.pop();
            out.push(x);
            // llama.cpp overwrites the following space with NUL and skips it, so the next
            // character no longer sees a space before it.
            if let Some(next) = src.get_mut(i + 1) {
                *next = 0;
            }
            i += 2;
            continue;
        }
        out.push(x);
        i += 1;
    }

    let src = out;
    let mut out: Vec<u8> = Vec::with_capacity(src.len());
    for (i, &x) in src.iter().enumerate() {
        if i > 0 && src.get(i - 1) == Some(&b' ') && x == b'\'' {
            let x1 = src.get(i + 1).copied();
            let x2 = src.get(i + 2).copied();
            let drop_space = matches!(
                (x1, x2),
                (Some(b's' | b'm'), _) | (Some(b'r' | b'v'), Some(b'e'))
            );
            if drop_space {
                out.pop();
            }
        }
        out.push(x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        String::from_utf8(clean_spaces(s.as_bytes().to_vec())).unwrap()
    }

    #[test]
    fn clean_spaces_follows_llama_cpp() {
        assert_eq!(clean("Hello , world !"), "Hello, world!");
        assert_eq!(clean("a  ."), "a .");
        assert_eq!(clean("rock ' n ' roll"), "rock'n'roll");
        assert_eq!(
            clean("it 's we 're I 'd they 'll"),
            "it's we're I 'd they 'll"
        );
        assert_eq!(clean(" '"), " '");
        assert_eq!(clean(""), "");
    }

    #[test]
    fn byte_level_pieces_map_back_to_bytes() {
        assert_eq!(decode_byte_level("Ġhi"), b" hi");
        assert_eq!(decode_byte_level("ĊĊ"), b"\n\n");
        assert_eq!(
            decode_byte_level("a\u{400}"),
            b"a[UNK_BYTE_0xd080a\xd0\x80]"
        );
    }
}
