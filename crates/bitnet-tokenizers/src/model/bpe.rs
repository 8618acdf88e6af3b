//! Byte-level BPE (`tokenizer.ggml.model = gpt2`, and `gemma4`'s raw-UTF-8 variant), as
//! llama.cpp's `llm_tokenizer_bpe_session`: pre-tokenize into words, map each word's bytes
//! to GPT-2's printable characters, then repeatedly merge the adjacent pair with the lowest
//! merge rank.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use bitnet_gguf::StringArray;

use crate::error::{MergeProblem, TokenizerError};
use crate::pre_tokenizer::{PreConfig, PreTokenizer, PreTokenizerPasses};
use crate::unicode::byte_to_char;
use crate::vocab::Vocab;

use super::Symbol;

/// A candidate merge of two adjacent symbols. The derived order compares the rank first,
/// then the left index, so in a min-heap the lowest rank wins and ties go to the leftmost
/// pair (llama.cpp's `llm_bigram_bpe::comparator`). The lengths recognise candidates made
/// stale by another merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u32,
    left: usize,
    right: usize,
    left_len: usize,
    right_len: usize,
}

type Queue = BinaryHeap<Reverse<Candidate>>;

/// The BPE model: merge table and word splitting.
#[derive(Debug, Clone)]
pub(crate) struct Bpe {
    /// (left, right) token pair → rank (position in the merges list).
    merges: HashMap<(u32, u32), u32>,
    passes: PreTokenizerPasses,
    /// Words are GPT-2 byte-encoded (false for Gemma 4, which merges raw UTF-8).
    byte_encode: bool,
    /// A word that is itself a token is taken whole.
    ignore_merges: bool,
    /// Gemma 4 takes a run of newlines whole when it is a token.
    newline_words_whole: bool,
}

impl Bpe {
    /// Parses `tokenizer.ggml.merges`: each entry is two token texts separated by one space;
    /// its index is its rank (the first occurrence of a pair wins, as in llama.cpp).
    pub(crate) fn new(
        vocab: &Vocab,
        merges: &StringArray,
        config: &PreConfig,
    ) -> Result<Bpe, TokenizerError> {
        let mut table = HashMap::with_capacity(merges.len());
        for (index, merge) in merges.iter().enumerate() {
            let bad = |problem| TokenizerError::BadMerge {
                index,
                merge: merge.to_owned(),
                problem,
            };
            let spaces = merge.bytes().filter(|&b| b == b' ').count();
            let Some((left, right)) = merge.split_once(' ').filter(|_| spaces == 1) else {
                return Err(bad(MergeProblem::SpaceCount { spaces }));
            };
            let id_of = |side: &'static str, text: &str| {
                vocab.id(text).ok_or_else(|| {
                    bad(MergeProblem::UnknownToken {
                        side,
                        text: text.to_owned(),
                    })
                })
            };
            let pair = (id_of("left", left)?, id_of("right", right)?);
            let rank = u32::try_from(index).unwrap_or(u32::MAX);
            table.entry(pair).or_insert(rank);
        }
        Ok(Bpe {
            merges: table,
            passes: PreTokenizerPasses::new(config.pre),
            byte_encode: config.pre != PreTokenizer::Gemma4,
            ignore_merges: config.ignore_merges,
            newline_words_whole: config.pre == PreTokenizer::Gemma4,
        })
    }

    /// Tokenizes one fragment of raw text, appending ids to `out`.
    pub(crate) fn tokenize(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let chars: Vec<char> = text.chars().collect();
        let mut word = String::new();
        let mut utf8 = [0u8; 4];
        for range in self.passes.split(&chars) {
            word.clear();
            for &c in chars.get(range).unwrap_or_default() {
                if self.byte_encode {
                    word.extend(c.encode_utf8(&mut utf8).bytes().map(byte_to_char));
                } else {
                    word.push(c);
                }
            }
            self.tokenize_word(vocab, &word, out);
        }
    }

    fn tokenize_word(&self, vocab: &Vocab, word: &str, out: &mut Vec<u32>) {
        let whole = if self.ignore_merges
            || (self.newline_words_whole && word.bytes().all(|b| b == b'\n'))
        {
            vocab.id(word)
        } else {
            None
        };
        if let Some(id) = whole {
            out.push(id);
            return;
        }

        let mut symbols = Symbol::chars_of(word);
        let mut ids: Vec<Option<u32>> = symbols
            .iter()
            .map(|s| word.get(s.start..s.start + s.len).and_then(|t| vocab.id(t)))
            .collect();
        let mut queue = Queue::new();
        let try_add = |symbols: &[Symbol],
                       ids: &[Option<u32>],
                       queue: &mut Queue,
                       left: Option<usize>,
                       right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let (Some(Some(l)), Some(Some(r))) = (ids.get(left), ids.get(right)) else {
                return;
            };
            let Some(&rank) = self.merges.get(&(*l, *r)) else {
                return;
            };
            let (Some(ls), Some(rs)) = (symbols.get(left), symbols.get(right)) else {
                return;
            };
            queue.push(Reverse(Candidate {
                rank,
                left,
                right,
                left_len: ls.len,
                right_len: rs.len,
            }));
        };
        for i in 1..symbols.len() {
            try_add(&symbols, &ids, &mut queue, Some(i - 1), Some(i));
        }
        while let Some(Reverse(Candidate {
            left,
            right,
            left_len,
            right_len,
            ..
        })) = queue.pop()
        {
            let (Some(l), Some(r)) = (symbols.get(left), symbols.get(right)) else {
                continue;
            };
            // Stale when either side has been merged since (its length changed).
            if l.len == 0 || r.len == 0 || l.len != left_len || r.len != right_len {
                continue;
            }
            // The merged text need not be a token; then it can merge no further and
            // falls back to bytes at the end, as in llama.cpp.
            let merged = word.get(l.start..r.start + r.len).and_then(|t| vocab.id(t));
            let (left_prev, right_next) = (l.prev, r.next);
            Symbol::merge(&mut symbols, left, right);
            if let Some(slot) = ids.get_mut(left) {
                *slot = merged;
            }
            try_add(&symbols, &ids, &mut queue, left_prev, Some(left));
            try_add(&symbols, &ids, &mut queue, Some(left), right_next);
        }

        for (symbol, id) in symbols.iter().zip(&ids).filter(|(s, _)| s.len > 0) {
            match id {
                Some(id) => out.push(*id),
                None => {
                    let piece = word
                        .get(symbol.start..symbol.start + symbol.len)
                        .unwrap_or_default();
                    self.byte_fallback(vocab, piece, out);
                }
            }
        }
    }

    /// A merged piece that is not a token: llama.cpp looks each of its bytes up as a
    /// token. Byte-level vocabularies have no one-byte tokens for bytes ≥ 0x80, so those
    /// bytes vanish, as they do in llama.cpp; Gemma 4 uses `<0xNN>` tokens.
    fn byte_fallback(&self, vocab: &Vocab, piece: &str, out: &mut Vec<u32>) {
        for &byte in piece.as_bytes() {
            let id = if self.byte_encode {
                char::from_u32(u32::from(byte))
                    .filter(char::is_ascii)
                    .and_then(|c| vocab.id(c.encode_utf8(&mut [0; 4])))
            } else {
                vocab.id(&format!("<0x{byte:02X}>"))
            };
            out.extend(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> StringArray {
        v.iter().collect()
    }

    fn gpt2_config() -> PreConfig {
        PreConfig::for_name(Some("gpt-2")).unwrap()
    }

    #[test]
    fn merges_apply_in_rank_order() {
        let vocab = Vocab::new(&strings(&["a", "b", "c", "ab", "bc", "abc"]), None, None).unwrap();
        let bpe = Bpe::new(&vocab, &strings(&["b c", "a b", "a bc"]), &gpt2_config()).unwrap();
        let mut out = Vec::new();
        bpe.tokenize(&vocab, "abc", &mut out);
        assert_eq!(out, [5]);
        out.clear();
        let bpe = Bpe::new(&vocab, &strings(&["a b", "b c"]), &gpt2_config()).unwrap();
        bpe.tokenize(&vocab, "abc", &mut out);
        assert_eq!(out, [3, 2]);
    }

    #[test]
    fn words_are_byte_encoded() {
        let vocab = Vocab::new(&strings(&["Ġ", "a", "Ġa"]), None, None).unwrap();
        let bpe = Bpe::new(&vocab, &strings(&["Ġ a"]), &gpt2_config()).unwrap();
        let mut out = Vec::new();
        bpe.tokenize(&vocab, " a a", &mut out);
        assert_eq!(out, [2, 2]);
    }

    #[test]
    fn malformed_merges_are_refused() {
        let vocab = Vocab::new(&strings(&["a", "b"]), None, None).unwrap();
        let err = |m: &str| Bpe::new(&vocab, &strings(&[m]), &gpt2_config()).unwrap_err();
        assert!(matches!(
            err("ab"),
            TokenizerError::BadMerge {
                problem: MergeProblem::SpaceCount { spaces: 0 },
                ..
            }
        ));
        assert!(matches!(
            err("a b b"),
            TokenizerError::BadMerge {
                problem: MergeProblem::SpaceCount { spaces: 2 },
                ..
            }
        ));
        assert!(matches!(
            err("a c"),
            TokenizerError::BadMerge {
                problem: MergeProblem::UnknownToken { side: "right", .. },
                ..
            }
        ));
    }
}
