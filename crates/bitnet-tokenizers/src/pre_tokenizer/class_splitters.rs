//! The `std::regex` patterns of the supported pre-tokenizers, written as splitters over a
//! character class. Every one of them is a class run, a single class character, an
//! optional space before a class run, three ASCII digits, or trailing whitespace, so a
//! leftmost scan reproduces `std::regex_iterator` exactly.
//!
//! llama.cpp does not run these regexes on the text itself: a pattern using `\p{..}`
//! sees the "collapsed" text (one byte per category for non-ASCII code points, see
//! [`crate::unicode::collapsed`]), and any other pattern sees the code points with non-ASCII
//! whitespace replaced by `\x0B`. Each class below answers for the view its pattern sees.

use std::ops::Range;
use std::sync::OnceLock;

use super::{PieceWriter, Split};
use crate::unicode::{collapsed, is_whitespace, Collapsed};

/// ASCII characters llama.cpp's collapsed `\p{P}` matches: `!-#%-*,-/:-;?-@[-]_{}`.
const ASCII_PUNCTUATION: &[u8] = b"!\"#%&'()*,-./:;?@[\\]_{}";

/// DeepSeek LLM's letter class, from its `tokenizer.json` (as llama.cpp carries it).
const DEEPSEEK_LETTERS: &str = "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃";

/// DeepSeek LLM's punctuation class.
const DEEPSEEK_PUNCTUATION: &str = "!-/:-~！-／：-～‘-‟　-。";

/// The CJK class both DeepSeek pre-tokenizers isolate.
const CJK: &str = "一-龥ࠀ-一가-퟿";

/// BLOOM's separators: `[^(\s|.,!?…。，、।۔،)]` excludes these and whitespace.
const BLOOM_SEPARATORS: &str = "(|.,!?…。，、।۔،)";

/// A set of code points, each answering for the view of the text its pattern sees.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CharClass {
    /// Collapsed `\p{N}`.
    Numbers,
    /// Collapsed `\p{L}`.
    Letters,
    /// Collapsed `[\p{P}...]`: punctuation plus the listed ASCII characters.
    PunctuationAnd(&'static [u8]),
    /// `[\r\n]`.
    CarriageReturnOrNewline,
    DeepseekLetters,
    DeepseekPunctuation,
    Cjk,
    /// Anything but whitespace and BLOOM's separators.
    NotBloomSeparator,
}

impl CharClass {
    fn contains(self, c: char) -> bool {
        match self {
            CharClass::Numbers => match collapsed(c) {
                Collapsed::Ascii(b) => b.is_ascii_digit(),
                v => v == Collapsed::Number,
            },
            CharClass::Letters => match collapsed(c) {
                Collapsed::Ascii(b) => b.is_ascii_alphabetic(),
                v => v == Collapsed::Letter,
            },
            CharClass::PunctuationAnd(extra) => match collapsed(c) {
                Collapsed::Ascii(b) => ASCII_PUNCTUATION.contains(&b) || extra.contains(&b),
                v => v == Collapsed::Punctuation,
            },
            CharClass::CarriageReturnOrNewline => matches!(c, '\r' | '\n'),
            CharClass::DeepseekLetters => in_ranges(ranges(&DEEPSEEK_LETTERS_SET), c),
            CharClass::DeepseekPunctuation => in_ranges(ranges(&DEEPSEEK_PUNCTUATION_SET), c),
            CharClass::Cjk => in_ranges(ranges(&CJK_SET), c),
            CharClass::NotBloomSeparator => {
                !is_whitespace(c) && !in_ranges(ranges(&BLOOM_SEPARATORS_SET), c)
            }
        }
    }
}

static DEEPSEEK_LETTERS_SET: ClassRanges = ClassRanges::new(DEEPSEEK_LETTERS);
static DEEPSEEK_PUNCTUATION_SET: ClassRanges = ClassRanges::new(DEEPSEEK_PUNCTUATION);
static CJK_SET: ClassRanges = ClassRanges::new(CJK);
static BLOOM_SEPARATORS_SET: ClassRanges = ClassRanges::new(BLOOM_SEPARATORS);

/// A bracket-expression body (`a-z` ranges and single characters), parsed on first use.
struct ClassRanges {
    body: &'static str,
    parsed: OnceLock<Vec<(char, char)>>,
}

impl ClassRanges {
    const fn new(body: &'static str) -> Self {
        ClassRanges {
            body,
            parsed: OnceLock::new(),
        }
    }
}

fn ranges(set: &ClassRanges) -> &[(char, char)] {
    set.parsed.get_or_init(|| parse_class_body(set.body))
}

fn parse_class_body(body: &str) -> Vec<(char, char)> {
    let chars: Vec<char> = body.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&end)) => {
                out.push((c, end));
                i += 3;
            }
            _ => {
                out.push((c, c));
                i += 1;
            }
        }
    }
    out
}

/// A wide-character regex sees non-ASCII whitespace as `\x0B`, so such a code point is in
/// a class only if `\x0B` is.
fn in_ranges(ranges: &[(char, char)], c: char) -> bool {
    let seen = if !c.is_ascii() && is_whitespace(c) {
        '\x0B'
    } else {
        c
    };
    ranges.iter().any(|&(lo, hi)| lo <= seen && seen <= hi)
}

/// One regex pass, as a splitter: matches and the gaps between them become pieces.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClassSplit {
    /// `[class]`: each class character alone.
    Singles(CharClass),
    /// `[class]+`.
    Runs(CharClass),
    /// `\s?[class]+`.
    SpaceThenRun(CharClass),
    /// ` ?[class]+` (a literal space).
    LiteralSpaceThenRun(CharClass),
    /// `[0-9][0-9][0-9]`.
    AsciiDigitTriples,
    /// `\s+$`: the whitespace ending the piece.
    TrailingWhitespace,
}

impl ClassSplit {
    /// The end of the leftmost-longest match starting at `pos`, if one starts there.
    fn match_at(self, text: &[char], pos: usize, end: usize) -> Option<usize> {
        let at = |p: usize| if p < end { text.get(p).copied() } else { None };
        let run_end = |class: CharClass, mut p: usize| {
            while at(p).is_some_and(|c| class.contains(c)) {
                p += 1;
            }
            p
        };
        let c = at(pos)?;
        match self {
            ClassSplit::Singles(class) => class.contains(c).then_some(pos + 1),
            ClassSplit::Runs(class) => class.contains(c).then(|| run_end(class, pos)),
            ClassSplit::SpaceThenRun(class) | ClassSplit::LiteralSpaceThenRun(class) => {
                let prefix = match self {
                    ClassSplit::SpaceThenRun(_) => is_whitespace(c),
                    _ => c == ' ',
                };
                // Greedy optional prefix first; without it, the run must start here.
                if prefix && at(pos + 1).is_some_and(|n| class.contains(n)) {
                    Some(run_end(class, pos + 1))
                } else if class.contains(c) {
                    Some(run_end(class, pos))
                } else {
                    None
                }
            }
            ClassSplit::AsciiDigitTriples => (pos..pos + 3)
                .all(|p| at(p).is_some_and(|c| c.is_ascii_digit()))
                .then_some(pos + 3),
            // Handled whole in `split`: it has one match per piece at most.
            ClassSplit::TrailingWhitespace => None,
        }
    }
}

impl Split for ClassSplit {
    fn split(&self, text: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>) {
        let mut pieces = PieceWriter::new(piece.start, out);
        if let ClassSplit::TrailingWhitespace = self {
            // The leftmost match of `\s+$` starts where the piece's trailing whitespace does.
            let body = text.get(piece.clone()).unwrap_or_default();
            let trailing = body.iter().rev().take_while(|&&c| is_whitespace(c)).count();
            pieces.end_at(piece.end - trailing);
            pieces.end_at(piece.end);
            return;
        }
        let mut pos = piece.start;
        while pos < piece.end {
            match self.match_at(text, pos, piece.end) {
                Some(match_end) => {
                    pieces.end_at(pos);
                    pieces.end_at(match_end);
                    pos = match_end;
                }
                None => pos += 1,
            }
        }
        pieces.end_at(piece.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: ClassSplit, text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        s.split(&chars, 0..chars.len(), &mut out);
        out.into_iter().map(|r| chars[r].iter().collect()).collect()
    }

    #[test]
    fn class_bodies_parse_ranges_and_singles() {
        assert_eq!(
            parse_class_body("a-cxA-Z"),
            [('a', 'c'), ('x', 'x'), ('A', 'Z')]
        );
        assert!(CharClass::Cjk.contains('中'));
        assert!(CharClass::DeepseekLetters.contains('é'));
        assert!(!CharClass::DeepseekLetters.contains('中'));
        // U+3000 is whitespace, which the wide regex sees as \x0B: not in the class.
        assert!(!CharClass::DeepseekPunctuation.contains('\u{3000}'));
        assert!(CharClass::DeepseekPunctuation.contains('。'));
    }

    #[test]
    fn matches_and_gaps_become_pieces() {
        assert_eq!(
            split(ClassSplit::Singles(CharClass::Numbers), "ab12c"),
            ["ab", "1", "2", "c"]
        );
        assert_eq!(
            split(ClassSplit::Runs(CharClass::PunctuationAnd(b"$")), "a$!b"),
            ["a", "$!", "b"]
        );
        assert_eq!(
            split(ClassSplit::SpaceThenRun(CharClass::Letters), "1 ab  cd"),
            ["1", " ab", " ", " cd"]
        );
        assert_eq!(
            split(ClassSplit::AsciiDigitTriples, "12345678"),
            ["123", "456", "78"]
        );
        assert_eq!(
            split(ClassSplit::TrailingWhitespace, "a b  "),
            ["a b", "  "]
        );
        assert_eq!(
            split(
                ClassSplit::LiteralSpaceThenRun(CharClass::NotBloomSeparator),
                "hi there, you"
            ),
            ["hi", " there", ",", " you"]
        );
    }
}
