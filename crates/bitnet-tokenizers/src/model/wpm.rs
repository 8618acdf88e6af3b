//! WordPiece (`tokenizer.ggml.model = bert`), as llama.cpp's `llm_tokenizer_wpm_session`:
//! BERT's normalizer splits the text into words (whitespace separates, punctuation and CJK
//! characters stand alone, lowercasing and accent stripping optional), then each word,
//! prefixed with `▁`, is covered greedily by the longest matching tokens, or becomes the
//! unknown token as a whole.

use crate::error::TokenizerError;
use crate::unicode::{flags, nfd_first, to_lower};
use crate::vocab::Vocab;

/// BERT normalizer options (`tokenizer.ggml.normalizer.*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wpm {
    pub(crate) lowercase: bool,
    pub(crate) strip_accents: bool,
    pub(crate) unk: Option<u32>,
}

impl Wpm {
    pub(crate) fn tokenize(
        &self,
        vocab: &Vocab,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        for word in self.words(text) {
            let word = format!("\u{2581}{word}");
            let bytes = word.as_bytes();
            let n = bytes.len();
            let before = out.len();
            let mut i = 0;
            while i < n {
                let longest = (i + 1..=n.min(i + vocab.max_token_len() + 1))
                    .rev()
                    .find_map(|j| {
                        let piece = std::str::from_utf8(bytes.get(i..j)?).ok()?;
                        Some((j, vocab.id(piece)?))
                    });
                match longest {
                    Some((j, id)) => {
                        out.push(id);
                        i = j;
                    }
                    None => {
                        out.truncate(before);
                        break;
                    }
                }
            }
            if out.len() == before {
                out.push(
                    self.unk
                        .ok_or(TokenizerError::MissingSpecialToken { which: "unknown" })?,
                );
            }
        }
        Ok(())
    }

    /// BERT's basic tokenization into words.
    fn words(&self, text: &str) -> Vec<String> {
        let mut words = vec![String::new()];
        for c in text.chars() {
            let c = if self.strip_accents { nfd_first(c) } else { c };
            let f = flags(c);
            if f.is_whitespace() {
                if words.last().is_some_and(|w| !w.is_empty()) {
                    words.push(String::new());
                }
                continue;
            }
            if c == '\0' || c == char::REPLACEMENT_CHARACTER || f.is_control() {
                continue;
            }
            if self.strip_accents && f.is_mark() {
                continue;
            }
            let out = if self.lowercase { to_lower(c) } else { c };
            if f.is_punctuation() || (c.is_ascii() && f.is_symbol()) || is_chinese_char(c) {
                if words.last().is_some_and(|w| !w.is_empty()) {
                    words.push(String::new());
                }
                words.push(out.to_string());
                words.push(String::new());
            } else if let Some(last) = words.last_mut() {
                last.push(out);
            }
        }
        words.retain(|w| !w.is_empty());
        words
    }
}

/// The CJK ideograph blocks BERT isolates (including its 0x2B920 quirk, kept by llama.cpp).
fn is_chinese_char(c: char) -> bool {
    matches!(u32::from(c),
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_punctuation_and_fold_case_and_accents() {
        let wpm = Wpm {
            lowercase: true,
            strip_accents: true,
            unk: Some(0),
        };
        assert_eq!(
            wpm.words("Héllo, 世界!  x"),
            ["hello", ",", "世", "界", "!", "x"]
        );
    }

    #[test]
    fn longest_match_then_unknown_for_the_whole_word() {
        let texts: bitnet_gguf::StringArray = ["[UNK]", "▁hel", "lo", "▁x", "▁hello"]
            .into_iter()
            .collect();
        let vocab = Vocab::new(&texts, None, None).unwrap();
        let wpm = Wpm {
            lowercase: false,
            strip_accents: false,
            unk: Some(0),
        };
        let mut out = Vec::new();
        wpm.tokenize(&vocab, "hello x hellz", &mut out).unwrap();
        assert_eq!(out, [4, 3, 0]);
    }
}
