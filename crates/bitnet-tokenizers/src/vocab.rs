//! The vocabulary: token texts, scores and attributes, and text → id lookup.

use std::collections::HashMap;
use std::ops::{BitOr, BitOrAssign};

use bitnet_gguf::StringArray;

use crate::error::TokenizerError;

/// A token's attributes: llama.cpp's `llama_token_attr` bit set, derived from
/// `tokenizer.ggml.token_type` and adjusted at load the way llama.cpp adjusts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenAttr(u16);

impl TokenAttr {
    /// No attribute: `token_type` 0 (undefined) or a value llama.cpp does not know.
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    /// `token_type` 2: the unknown token (`<unk>`).
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    /// `token_type` 5, or a control token whose text contains "unused".
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    /// `token_type` 1: an ordinary piece of text.
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    /// `token_type` 3: a control token (`<s>`, `<|begin_of_text|>`), matched in text only
    /// when special tokens are parsed, and rendered only on request.
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    /// `token_type` 4: a user-defined token, always matched in text before the model runs.
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    /// `token_type` 6: a byte-fallback token (`<0xNN>`).
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);
    /// When matched in text, whitespace to its left is swallowed.
    pub const LSTRIP: TokenAttr = TokenAttr(1 << 7);
    /// When matched in text, whitespace to its right is swallowed.
    pub const RSTRIP: TokenAttr = TokenAttr(1 << 8);

    /// The attribute llama.cpp gives a `tokenizer.ggml.token_type` value.
    pub fn from_token_type(token_type: i32) -> TokenAttr {
        match token_type {
            1 => TokenAttr::NORMAL,
            2 => TokenAttr::UNKNOWN,
            3 => TokenAttr::CONTROL,
            4 => TokenAttr::USER_DEFINED,
            5 => TokenAttr::UNUSED,
            6 => TokenAttr::BYTE,
            _ => TokenAttr::UNDEFINED,
        }
    }

    /// Whether any bit of `other` is set.
    pub fn intersects(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }

    pub fn bits(self) -> u16 {
        self.0
    }

    pub(crate) fn with(self, other: TokenAttr, on: bool) -> TokenAttr {
        if on {
            TokenAttr(self.0 | other.0)
        } else {
            TokenAttr(self.0 & !other.0)
        }
    }
}

impl BitOr for TokenAttr {
    type Output = TokenAttr;
    fn bitor(self, rhs: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | rhs.0)
    }
}

impl BitOrAssign for TokenAttr {
    fn bitor_assign(&mut self, rhs: TokenAttr) {
        self.0 |= rhs.0;
    }
}

/// Token texts, scores and attributes by id, and the reverse text → id map.
#[derive(Debug, Clone)]
pub(crate) struct Vocab {
    texts: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<TokenAttr>,
    ids: HashMap<String, u32>,
    max_token_len: usize,
}

impl Vocab {
    /// Builds the vocabulary. `scores` and `types`, when given, must have one entry per
    /// token (checked by the caller). An empty text becomes `[EMPTY_<id>]`, as in llama.cpp,
    /// so that no token can match empty text.
    pub(crate) fn new(
        tokens: &StringArray,
        scores: Option<Vec<f32>>,
        types: Option<&[i32]>,
    ) -> Result<Vocab, TokenizerError> {
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if i32::try_from(n).is_err() {
            return Err(TokenizerError::TooManyTokens { n_tokens: n });
        }
        let mut texts = Vec::with_capacity(n);
        let mut ids = HashMap::with_capacity(n);
        let mut max_token_len = 0;
        for (i, text) in tokens.iter().enumerate() {
            // `n` fits in i32, so every index fits in u32.
            let id = i as u32;
            let text = if text.is_empty() {
                format!("[EMPTY_{id}]")
            } else {
                text.to_owned()
            };
            if let Some(&first_id) = ids.get(&text) {
                return Err(TokenizerError::DuplicateToken { id, first_id, text });
            }
            max_token_len = max_token_len.max(text.len());
            ids.insert(text.clone(), id);
            texts.push(text);
        }
        let attrs = match types {
            Some(types) => types
                .iter()
                .map(|&t| TokenAttr::from_token_type(t))
                .collect(),
            None => vec![TokenAttr::NORMAL; n],
        };
        Ok(Vocab {
            texts,
            scores: scores.unwrap_or_else(|| vec![0.0; n]),
            attrs,
            ids,
            max_token_len,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    pub(crate) fn text(&self, id: u32) -> Option<&str> {
        self.texts
            .get(usize::try_from(id).ok()?)
            .map(String::as_str)
    }

    pub(crate) fn attr(&self, id: u32) -> Option<TokenAttr> {
        self.attrs.get(usize::try_from(id).ok()?).copied()
    }

    pub(crate) fn attr_mut(&mut self, id: u32) -> Option<&mut TokenAttr> {
        self.attrs.get_mut(usize::try_from(id).ok()?)
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.scores.get(i))
            .copied()
            .unwrap_or(0.0)
    }

    /// Longest token text in bytes (bounds WordPiece's longest-match search).
    pub(crate) fn max_token_len(&self) -> usize {
        self.max_token_len
    }

    /// All (id, text) pairs in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.texts
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u32, t.as_str()))
    }

    /// The byte-fallback token for `byte` in an SPM-style vocabulary: `<0xNN>`, else the
    /// one-byte text itself (llama.cpp's `byte_to_token`).
    pub(crate) fn spm_byte_token(&self, byte: u8) -> Result<u32, TokenizerError> {
        self.id(&format!("<0x{byte:02X}>"))
            .or_else(|| {
                char::from_u32(u32::from(byte))
                    .filter(char::is_ascii)
                    .and_then(|c| self.id(c.encode_utf8(&mut [0; 4])))
            })
            .ok_or(TokenizerError::NoByteToken { byte })
    }
}

/// The byte a `<0xNN>` token stands for.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> StringArray {
        v.iter().collect()
    }

    #[test]
    fn empty_texts_are_renamed_and_duplicates_refused() {
        let v = Vocab::new(&strings(&["a", "", "b"]), None, None).unwrap();
        assert_eq!(v.text(1), Some("[EMPTY_1]"));
        assert_eq!(v.id("b"), Some(2));
        assert_eq!(v.id(""), None);
        assert!(matches!(
            Vocab::new(&strings(&["a", "b", "a"]), None, None),
            Err(TokenizerError::DuplicateToken {
                id: 2,
                first_id: 0,
                ..
            })
        ));
        assert!(matches!(
            Vocab::new(&StringArray::default(), None, None),
            Err(TokenizerError::EmptyVocab)
        ));
    }

    #[test]
    fn token_types_map_to_attributes() {
        let v = Vocab::new(&strings(&["a", "b", "c"]), None, Some(&[3, 4, 42])).unwrap();
        assert_eq!(v.attr(0), Some(TokenAttr::CONTROL));
        assert_eq!(v.attr(1), Some(TokenAttr::USER_DEFINED));
        assert_eq!(v.attr(2), Some(TokenAttr::UNDEFINED));
        assert_eq!(v.attr(3), None);
    }

    #[test]
    fn byte_tokens() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xff>"), Some(255));
        assert_eq!(parse_byte_token("<0x0A"), None);
        assert_eq!(parse_byte_token("<0x>"), None);
        let v = Vocab::new(&strings(&["<0x41>", "b"]), None, None).unwrap();
        assert_eq!(v.spm_byte_token(0x41).unwrap(), 0);
        assert_eq!(v.spm_byte_token(b'b').unwrap(), 1);
        assert!(matches!(
            v.spm_byte_token(0xC3),
            Err(TokenizerError::NoByteToken { byte: 0xC3 })
        ));
    }
}
