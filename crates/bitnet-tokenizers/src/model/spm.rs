//! SentencePiece BPE (`tokenizer.ggml.model = llama`), as llama.cpp's `llm_tokenizer_spm`:
//! start from single characters and repeatedly merge the adjacent pair whose concatenation
//! is the highest-scoring token; characters left without a token fall back to `<0xNN>`
//! byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::error::TokenizerError;
use crate::vocab::Vocab;

use super::Symbol;

/// A candidate merge of two adjacent symbols.
#[derive(Debug)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text, to recognise candidates made stale by other merges.
    size: usize,
}

impl Ord for Bigram {
    /// Highest score first; among equal scores, the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

/// Tokenizes `text` (spaces already escaped as `▁`) and appends the ids to `out`.
pub(crate) fn tokenize(
    vocab: &Vocab,
    text: &str,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    let mut symbols = Symbol::chars_of(text);
    let mut queue = BinaryHeap::new();
    let try_add = |symbols: &[Symbol],
                   queue: &mut BinaryHeap<Bigram>,
                   left: Option<usize>,
                   right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (Some(l), Some(r)) = (symbols.get(left), symbols.get(right)) else {
            return;
        };
        let Some(id) = text.get(l.start..r.start + r.len).and_then(|s| vocab.id(s)) else {
            return;
        };
        queue.push(Bigram {
            // -0.0 and 0.0 tie in llama.cpp's comparison, so they must here too.
            score: vocab.score(id) + 0.0,
            left,
            right,
            size: l.len + r.len,
        });
    };
    for i in 1..symbols.len() {
        try_add(&symbols, &mut queue, Some(i - 1), Some(i));
    }
    while let Some(bigram) = queue.pop() {
        let (Some(l), Some(r)) = (symbols.get(bigram.left), symbols.get(bigram.right)) else {
            continue;
        };
        if l.len == 0 || r.len == 0 || l.len + r.len != bigram.size {
            continue;
        }
        let right_next = r.next;
        let left_prev = l.prev;
        Symbol::merge(&mut symbols, bigram.left, bigram.right);
        try_add(&symbols, &mut queue, left_prev, Some(bigram.left));
        try_add(&symbols, &mut queue, Some(bigram.left), right_next);
    }
    for symbol in symbols.iter().filter(|s| s.len > 0) {
        let piece = text
            .get(symbol.start..symbol.start + symbol.len)
            .unwrap_or_default();
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => {
                for &byte in piece.as_bytes() {
                    out.push(vocab.spm_byte_token(byte)?);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[(&str, f32)]) -> Vocab {
        let texts: Vec<String> = tokens.iter().map(|(t, _)| t.to_string()).collect();
        let scores = tokens.iter().map(|&(_, s)| s).collect();
        let mut all = texts;
        all.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        let mut scores: Vec<f32> = scores;
        scores.resize(all.len(), 0.0);
        Vocab::new(&all.iter().collect(), Some(scores), None).unwrap()
    }

    #[test]
    fn best_scoring_merges_win() {
        let v = vocab(&[
            ("a", -1.0),
            ("b", -1.0),
            ("c", -1.0),
            ("ab", -5.0),
            ("bc", -2.0),
            ("abc", -3.0),
        ]);
        let mut out = Vec::new();
        tokenize(&v, "abc", &mut out).unwrap();
        // "bc" (-2) merges before "ab" (-5); then "a"+"bc" = "abc" exists.
        assert_eq!(out, [5]);
        out.clear();
        tokenize(&v, "ab", &mut out).unwrap();
        assert_eq!(out, [3]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let v = vocab(&[("a", -1.0)]);
        let mut out = Vec::new();
        tokenize(&v, "aé", &mut out).unwrap();
        let e_acute: Vec<u32> = "é".bytes().map(|b| 1 + u32::from(b)).collect();
        assert_eq!(out[0], 0);
        assert_eq!(&out[1..], &e_acute[..]);
    }
}
