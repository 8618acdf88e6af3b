//! Special-token partitioning (llama.cpp's `tokenizer_st_partition`): before the model
//! sees any text, occurrences of special tokens are cut out of it and become token ids.
//!
//! Every control, user-defined and unknown token takes part, longest text first; control
//! and unknown tokens only when the caller asks to parse special tokens, user-defined ones
//! always. A token with `LSTRIP`/`RSTRIP` swallows the ASCII whitespace beside it.

use std::ops::Range;

use crate::vocab::{TokenAttr, Vocab};

/// A piece of the input: raw text still to tokenize, or a special token already found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

/// The special tokens in matching order.
#[derive(Debug, Clone)]
pub(crate) struct SpecialTokens {
    ids: Vec<u32>,
}

impl SpecialTokens {
    /// Control, user-defined and unknown tokens, longest text first. llama.cpp's sort is
    /// not stable, so equal lengths have no defined order there; here ties go by id.
    pub(crate) fn new(vocab: &Vocab) -> SpecialTokens {
        let mut ids: Vec<u32> = vocab
            .iter()
            .filter(|&(id, _)| {
                vocab.attr(id).is_some_and(|a| {
                    a.intersects(TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN)
                })
            })
            .map(|(id, _)| id)
            .collect();
        ids.sort_by_key(|&id| std::cmp::Reverse(vocab.text(id).map_or(0, str::len)));
        SpecialTokens { ids }
    }

    pub(crate) fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Splits `text` into raw-text and special-token fragments.
    pub(crate) fn partition(
        &self,
        vocab: &Vocab,
        text: &str,
        parse_special: bool,
    ) -> Vec<Fragment> {
        let mut fragments = vec![Fragment::Text(0..text.len())];
        if text.is_empty() {
            fragments.clear();
            return fragments;
        }
        let mut next = Vec::new();
        for &id in &self.ids {
            let (Some(needle), Some(attr)) = (vocab.text(id), vocab.attr(id)) else {
                continue;
            };
            if !parse_special && attr.intersects(TokenAttr::CONTROL | TokenAttr::UNKNOWN) {
                continue;
            }
            next.clear();
            for fragment in fragments.drain(..) {
                match fragment {
                    Fragment::Text(range) => split_on(text, range, needle, id, attr, &mut next),
                    token => next.push(token),
                }
            }
            std::mem::swap(&mut fragments, &mut next);
        }
        fragments
    }
}

/// Cuts every occurrence of `needle` out of `text[range]`.
fn split_on(
    text: &str,
    range: Range<usize>,
    needle: &str,
    id: u32,
    attr: TokenAttr,
    out: &mut Vec<Fragment>,
) {
    let bytes = text.as_bytes();
    let mut start = range.start;
    let end = range.end;
    while start < end {
        let Some(found) = text.get(start..end).and_then(|s| s.find(needle)) else {
            break;
        };
        let at = start + found;
        let mut left_end = at;
        if attr.intersects(TokenAttr::LSTRIP) {
            while left_end > start && bytes.get(left_end - 1).is_some_and(|&b| is_c_space(b)) {
                left_end -= 1;
            }
        }
        if left_end > start {
            out.push(Fragment::Text(start..left_end));
        }
        out.push(Fragment::Token(id));
        start = at + needle.len();
        if attr.intersects(TokenAttr::RSTRIP) {
            while start < end && bytes.get(start).is_some_and(|&b| is_c_space(b)) {
                start += 1;
            }
        }
    }
    if start < end {
        out.push(Fragment::Text(start..end));
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp uses for stripping.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[(&str, i32)]) -> Vocab {
        let texts: Vec<String> = tokens.iter().map(|(t, _)| t.to_string()).collect();
        let types: Vec<i32> = tokens.iter().map(|&(_, t)| t).collect();
        Vocab::new(&texts.iter().collect(), None, Some(&types)).unwrap()
    }

    fn show(text: &str, f: &[Fragment]) -> Vec<String> {
        f.iter()
            .map(|f| match f {
                Fragment::Text(r) => text[r.clone()].to_string(),
                Fragment::Token(id) => format!("#{id}"),
            })
            .collect()
    }

    #[test]
    fn control_tokens_only_when_parsing_special() {
        let v = vocab(&[("a", 1), ("<s>", 3), ("<u>", 4)]);
        let s = SpecialTokens::new(&v);
        let text = "x<s>y<u>z";
        assert_eq!(
            show(text, &s.partition(&v, text, true)),
            ["x", "#1", "y", "#2", "z"]
        );
        assert_eq!(
            show(text, &s.partition(&v, text, false)),
            ["x<s>y", "#2", "z"]
        );
        assert!(s.partition(&v, "", true).is_empty());
    }

    #[test]
    fn longer_tokens_win_and_strip_flags_eat_spaces() {
        let mut v = vocab(&[("<a>", 3), ("<a><a>", 3)]);
        if let Some(a) = v.attr_mut(0) {
            *a = TokenAttr::CONTROL | TokenAttr::RSTRIP | TokenAttr::LSTRIP;
        }
        let s = SpecialTokens::new(&v);
        let text = "<a><a> x <a>  \ty";
        assert_eq!(
            show(text, &s.partition(&v, text, true)),
            ["#1", " x", "#0", "y"]
        );
    }
}
