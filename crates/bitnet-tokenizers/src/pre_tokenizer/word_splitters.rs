//! The word splitters llama.cpp writes by hand in `unicode.cpp` instead of running a regex:
//! GPT-2's, LLaMA 3's (and its Qwen 2 / Qwen 3.5 variants), and newline runs. Each one
//! scans a piece left to right and, at every position, takes the first alternative of the
//! original regex that matches, exactly as those functions do (including their handling
//! of the piece's end, which acts like the end of the text).

use std::ops::Range;

use super::{PieceWriter, Split};
use crate::unicode::{flags, to_lower, CpFlags};

/// Positional access to one piece: outside the piece there is no character and no flags.
struct Window<'a> {
    text: &'a [char],
    piece: Range<usize>,
}

impl Window<'_> {
    fn char_at(&self, pos: usize) -> Option<char> {
        if self.piece.contains(&pos) {
            self.text.get(pos).copied()
        } else {
            None
        }
    }

    fn flags_at(&self, pos: usize) -> CpFlags {
        self.char_at(pos).map_or(CpFlags::NONE, flags)
    }

    fn is_cr_or_lf(&self, pos: usize) -> bool {
        matches!(self.char_at(pos), Some('\r' | '\n'))
    }

    /// Length of the English contraction starting at `pos` (`'s 't 're 've 'm 'll 'd`), if
    /// any; `fold` lowercases the letters first (LLaMA 3's `(?i:...)`).
    fn contraction_at(&self, pos: usize, fold: bool) -> Option<usize> {
        if self.char_at(pos) != Some('\'') || pos + 1 >= self.piece.end {
            return None;
        }
        let letter = |p: usize| self.char_at(p).map(|c| if fold { to_lower(c) } else { c });
        if matches!(letter(pos + 1), Some('s' | 't' | 'm' | 'd')) {
            return Some(2);
        }
        if pos + 2 < self.piece.end {
            if let (Some(a), Some(b)) = (letter(pos + 1), letter(pos + 2)) {
                if matches!((a, b), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                    return Some(3);
                }
            }
        }
        None
    }

    /// Whitespace run starting at `pos`: its length and the end of its last `\r`/`\n`.
    fn whitespace_run(&self, pos: usize) -> (usize, Option<usize>) {
        let mut n = 0;
        let mut last_newline_end = None;
        while self.flags_at(pos + n).is_whitespace() {
            if self.is_cr_or_lf(pos + n) {
                last_newline_end = Some(pos + n + 1);
            }
            n += 1;
        }
        (n, last_newline_end)
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
#[derive(Debug, Clone)]
pub(crate) struct Gpt2Words;

impl Split for Gpt2Words {
    fn split(&self, text: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>) {
        let w = Window {
            text,
            piece: piece.clone(),
        };
        let mut words = PieceWriter::new(piece.start, out);
        let mut pos = piece.start;
        while pos < piece.end {
            if let Some(len) = w.contraction_at(pos, false) {
                pos += words.end_at(pos + len);
                continue;
            }
            let space = w.char_at(pos) == Some(' ');
            // The class decision looks past an optional leading space.
            let mut f = if space {
                w.flags_at(pos + 1)
            } else {
                w.flags_at(pos)
            };
            let other =
                |f: CpFlags| !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.is_some();
            let run: Option<fn(CpFlags) -> bool> = if f.is_letter() {
                Some(CpFlags::is_letter)
            } else if f.is_number() {
                Some(CpFlags::is_number)
            } else if other(f) {
                Some(|f: CpFlags| {
                    !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.is_some()
                })
            } else {
                None
            };
            if let Some(in_run) = run {
                pos += usize::from(space);
                while in_run(f) {
                    pos += 1;
                    f = w.flags_at(pos);
                }
                words.end_at(pos);
                continue;
            }
            let (n, _) = w.whitespace_run(pos);
            if n > 1 && w.char_at(pos + n).is_some() {
                // \s+(?!\S): leave the last space to the word that follows.
                pos += n - 1;
                words.end_at(pos);
                continue;
            }
            if n > 0 {
                pos += n;
                words.end_at(pos);
                continue;
            }
            pos += 1;
            words.end_at(pos);
        }
    }
}

/// LLaMA 3's regex and its variants:
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
/// Qwen 2 takes numbers one digit at a time (`max_digits` 1); Qwen 3.5 also counts
/// combining marks as part of words (`marks_in_words`).
#[derive(Debug, Clone)]
pub(crate) struct Llama3Words {
    pub(crate) max_digits: usize,
    pub(crate) marks_in_words: bool,
}

impl Llama3Words {
    fn in_word(&self, f: CpFlags) -> bool {
        f.is_letter() || (self.marks_in_words && f.is_mark())
    }
}

impl Split for Llama3Words {
    fn split(&self, text: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>) {
        let w = Window {
            text,
            piece: piece.clone(),
        };
        let mut words = PieceWriter::new(piece.start, out);
        let mut pos = piece.start;
        while pos < piece.end {
            if let Some(len) = w.contraction_at(pos, true) {
                pos += words.end_at(pos + len);
                continue;
            }
            let f = w.flags_at(pos);

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(w.is_cr_or_lf(pos) || f.is_number())
                && (self.in_word(f) || self.in_word(w.flags_at(pos + 1)))
            {
                pos += 1;
                while self.in_word(w.flags_at(pos)) {
                    pos += 1;
                }
                words.end_at(pos);
                continue;
            }

            // \p{N}{1,max_digits}
            if f.is_number() {
                let mut group_start = pos;
                while w.flags_at(pos).is_number() {
                    pos += 1;
                    if pos - group_start >= self.max_digits {
                        words.end_at(pos);
                        group_start = pos;
                    }
                }
                words.end_at(pos);
                continue;
            }

            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`. llama.cpp tests the optional space's successor for
            // the class, but the current character for "is a character at all".
            let space = w.char_at(pos) == Some(' ');
            let mut f2 = if space { w.flags_at(pos + 1) } else { f };
            let other = |g: CpFlags| {
                !(g.is_whitespace() || self.in_word(g) || g.is_letter() || g.is_number())
            };
            if other(f2) && f.is_some() {
                pos += usize::from(space);
                while other(f2) && f2.is_some() {
                    pos += 1;
                    f2 = w.flags_at(pos);
                }
                while w.is_cr_or_lf(pos) {
                    pos += 1;
                }
                words.end_at(pos);
                continue;
            }

            let (n, last_newline_end) = w.whitespace_run(pos);
            // \s*[\r\n]+
            if let Some(end) = last_newline_end {
                pos = end;
                words.end_at(pos);
                continue;
            }
            // \s+(?!\S)
            if n > 1 && w.char_at(pos + n).is_some() {
                pos += n - 1;
                words.end_at(pos);
                continue;
            }
            // \s+
            if n > 0 {
                pos += n;
                words.end_at(pos);
                continue;
            }
            pos += 1;
            words.end_at(pos);
        }
    }
}

/// `[^\n]+|[\n]+`: alternating runs of newlines and of everything else.
#[derive(Debug, Clone)]
pub(crate) struct NewlineRuns;

impl Split for NewlineRuns {
    fn split(&self, text: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>) {
        let mut pos = piece.start;
        while pos < piece.end {
            let newline = text.get(pos) == Some(&'\n');
            let start = pos;
            while pos < piece.end && (text.get(pos) == Some(&'\n')) == newline {
                pos += 1;
            }
            out.push(start..pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &dyn Split, text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        s.split(&chars, 0..chars.len(), &mut out);
        out.into_iter().map(|r| chars[r].iter().collect()).collect()
    }

    #[test]
    fn llama3_contractions_fold_case_gpt2_does_not() {
        let l3 = Llama3Words {
            max_digits: 3,
            marks_in_words: false,
        };
        assert_eq!(split(&l3, "I'M"), ["I", "'M"]);
        assert_eq!(split(&Gpt2Words, "I'M"), ["I", "'", "M"]);
        assert_eq!(split(&Gpt2Words, "I'm"), ["I", "'m"]);
        // In GPT-2, "'M" is not a contraction: the quote starts a punctuation run.
        assert_eq!(split(&Gpt2Words, "x'Mx"), ["x", "'", "Mx"]);
    }

    #[test]
    fn llama3_words_take_one_leading_non_letter() {
        let l3 = Llama3Words {
            max_digits: 3,
            marks_in_words: false,
        };
        assert_eq!(
            split(&l3, "(hello) ..\n\nx"),
            ["(hello", ")", " ..\n\n", "x"]
        );
        assert_eq!(split(&l3, "a \n b"), ["a", " \n", " b"]);
    }

    #[test]
    fn qwen35_keeps_marks_in_words() {
        let q35 = Llama3Words {
            max_digits: 1,
            marks_in_words: true,
        };
        let q2 = Llama3Words {
            max_digits: 1,
            marks_in_words: false,
        };
        assert_eq!(split(&q35, "ab\u{301}c"), ["ab\u{301}c"]);
        assert_eq!(split(&q2, "ab\u{301}c"), ["ab", "\u{301}c"]);
    }

    #[test]
    fn newline_runs_alternate() {
        assert_eq!(
            split(&NewlineRuns, "a b\n\nc\n"),
            ["a b", "\n\n", "c", "\n"]
        );
    }
}
