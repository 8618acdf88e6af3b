//! Pre-tokenization: splitting text into words before BPE merges, as llama.cpp's
//! `unicode_regex_split` does for each `tokenizer.ggml.pre`.
//!
//! llama.cpp runs a list of regexes one after another; each one refines every piece left
//! by the previous one, keeping both its matches and the text between them as pieces. A
//! few regexes have hand-written implementations in `unicode.cpp` (GPT-2, LLaMA 3,
//! Qwen 2/3.5, newline runs); the rest run through `std::regex` over a "collapsed" copy of
//! the text in which each non-ASCII code point is replaced by one byte per category. Each
//! pass here is a hand-written splitter with the same leftmost-match semantics: the
//! `word_splitters` module follows llama.cpp's hand-written ones, `class_splitters` the
//! simple `std::regex` patterns the supported pre-tokenizers use.

mod class_splitters;
mod word_splitters;

use std::ops::Range;

use crate::error::TokenizerError;
use class_splitters::{CharClass, ClassSplit};
use word_splitters::{Gpt2Words, Llama3Words, NewlineRuns};

/// One pass over the pieces left by the previous pass: `split` appends the sub-pieces of
/// `piece` (indices into `text`, in order, together covering `piece`) to `out`.
pub(crate) trait Split {
    fn split(&self, text: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>);
}

/// The pre-tokenizer families this crate implements. Each covers every
/// `tokenizer.ggml.pre` value for which llama.cpp uses the same splitting passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PreTokenizer {
    /// `default` (or no `tokenizer.ggml.pre`): punctuation runs, GPT-2 words, digit runs,
    /// ASCII digit triples.
    Default,
    /// `gpt-2`, `mpt`, `olmo`, `jais`, `phi-2`, `exaone4`, `trillion`, ...: the GPT-2 regex.
    Gpt2,
    /// `llama-bpe`/`llama3`, `dbrx`, `smaug-bpe`, `chatglm-bpe`, `glm4`, `falcon3`, ...:
    /// the LLaMA 3 regex (numbers in groups of up to three).
    Llama3,
    /// `qwen2`, `stablelm2`, `hunyuan`, `grok-2`, `megrez`, `solar-open`, ...: the LLaMA 3
    /// regex with single digits.
    Qwen2,
    /// `qwen35`: Qwen 2 with combining marks kept inside words.
    Qwen35,
    /// `starcoder`, `refact`, `command-r`, `smollm`, `codeshell`, `exaone`, `minerva-7b`,
    /// `mellum2`: single digits, then the GPT-2 regex.
    StarCoder,
    /// `falcon`: punctuation runs, the GPT-2 regex, ASCII digit triples.
    Falcon,
    /// `deepseek-llm`.
    DeepseekLlm,
    /// `deepseek-coder`.
    DeepseekCoder,
    /// `bloom`, `poro-chat`, `gpt3-finnish`: an optional space and a run of anything but
    /// whitespace and sentence punctuation.
    Bloom,
    /// `viking`: `Bloom`, then single digits.
    Viking,
    /// `laguna`: newline runs, then the Qwen 2 regex.
    Laguna,
    /// `gemma4` (the `gemma4` tokenizer model): newline runs only, on raw UTF-8 with spaces
    /// escaped as `▁`.
    Gemma4,
}

/// What a `tokenizer.ggml.pre` value selects besides the splitting passes: the flags
/// llama.cpp sets per pre-tokenizer in `llama_vocab::impl::load`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreConfig {
    pub(crate) pre: PreTokenizer,
    /// A word that is itself a token is taken whole, without merges.
    pub(crate) ignore_merges: bool,
    /// llama.cpp turns BOS on by default for this pre-tokenizer.
    pub(crate) add_bos: bool,
    /// Whether detokenization applies llama.cpp's `clean_spaces` passes.
    pub(crate) clean_spaces: bool,
    /// Spaces are escaped as `▁` before pre-tokenization (SPM-style BPE).
    pub(crate) escape_whitespaces: bool,
    /// llama.cpp drops the BOS default (`chatglm-bpe`, `glm4`, `glm5`).
    pub(crate) no_bos: bool,
}

/// `tokenizer.ggml.pre` values llama.cpp accepts whose splitting this crate does not
/// implement (they need lookahead-heavy regexes or custom code not ported yet).
const KNOWN_UNSUPPORTED: &[&str] = &[
    "minicpm5",
    "deepseek-v3",
    "spark2_5",
    "youtu",
    "jais-2",
    "mmbert",
    "sarvam-moe",
    "whitespace",
    "tekken",
    "exaone-moe",
    "chameleon",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "granite-embed-multi-97m",
    "tiny_aya",
    "cohere2moe",
    "superbpe",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "seed-coder",
    "hunyuan-dense",
    "hy_v4",
    "joyai-llm",
    "kimi-k2",
    "ufakzeka",
    "afmoe",
    "minimax-m2",
];

impl PreConfig {
    /// The configuration for a BPE vocabulary's `tokenizer.ggml.pre` (`None` when absent,
    /// which llama.cpp treats as `default`).
    pub(crate) fn for_name(name: Option<&str>) -> Result<PreConfig, TokenizerError> {
        use PreTokenizer as P;
        let base = |pre| PreConfig {
            pre,
            ignore_merges: false,
            add_bos: false,
            clean_spaces: true,
            escape_whitespaces: false,
            no_bos: false,
        };
        let name = name.unwrap_or("default");
        let config = match name {
            "default" => base(P::Default),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => PreConfig {
                ignore_merges: true,
                add_bos: true,
                ..base(P::Llama3)
            },
            "dbrx" | "smaug-bpe" => base(P::Llama3),
            "chatglm-bpe" => PreConfig {
                no_bos: true,
                ..base(P::Llama3)
            },
            "glm4" | "glm5" => PreConfig {
                no_bos: true,
                ignore_merges: true,
                ..base(P::Llama3)
            },
            "deepseek-llm" => PreConfig {
                clean_spaces: false,
                ..base(P::DeepseekLlm)
            },
            "deepseek-coder" => PreConfig {
                clean_spaces: false,
                ..base(P::DeepseekCoder)
            },
            "falcon" => base(P::Falcon),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en"
            | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "exaone4" => base(P::Gpt2),
            "trillion" | "granite-docling" => PreConfig {
                clean_spaces: false,
                ..base(P::Gpt2)
            },
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                base(P::StarCoder)
            }
            "command-r" | "smollm" => PreConfig {
                clean_spaces: false,
                ..base(P::StarCoder)
            },
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "grok-2"
            | "solar-open" => PreConfig {
                clean_spaces: false,
                ..base(P::Qwen2)
            },
            "stablelm2" | "megrez" => base(P::Qwen2),
            "qwen35" => PreConfig {
                clean_spaces: false,
                ..base(P::Qwen35)
            },
            "bloom" | "gpt3-finnish" => base(P::Bloom),
            "poro-chat" => PreConfig {
                clean_spaces: false,
                ..base(P::Bloom)
            },
            "viking" => PreConfig {
                clean_spaces: false,
                ..base(P::Viking)
            },
            "laguna" => PreConfig {
                clean_spaces: false,
                ..base(P::Laguna)
            },
            "gemma4" | "granite-embed-multi-311m" => PreConfig {
                escape_whitespaces: true,
                ..base(P::Gemma4)
            },
            other if KNOWN_UNSUPPORTED.contains(&other) => {
                return Err(TokenizerError::UnsupportedPreTokenizer {
                    pre: other.to_owned(),
                })
            }
            other => {
                return Err(TokenizerError::UnknownPreTokenizer {
                    pre: other.to_owned(),
                })
            }
        };
        Ok(config)
    }
}

/// One splitting pass.
#[derive(Debug, Clone)]
enum Pass {
    Gpt2(Gpt2Words),
    Llama3(Llama3Words),
    Newlines(NewlineRuns),
    Class(ClassSplit),
}

impl Split for Pass {
    fn split(&self, text: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>) {
        match self {
            Pass::Gpt2(s) => s.split(text, piece, out),
            Pass::Llama3(s) => s.split(text, piece, out),
            Pass::Newlines(s) => s.split(text, piece, out),
            Pass::Class(s) => s.split(text, piece, out),
        }
    }
}

/// A pre-tokenizer's passes, in order.
#[derive(Debug, Clone)]
pub(crate) struct PreTokenizerPasses {
    passes: Vec<Pass>,
}

impl PreTokenizerPasses {
    pub(crate) fn new(pre: PreTokenizer) -> PreTokenizerPasses {
        use CharClass as C;
        use ClassSplit as S;
        let gpt2 = || Pass::Gpt2(Gpt2Words);
        let llama3 = |max_digits, marks_in_words| {
            Pass::Llama3(Llama3Words {
                max_digits,
                marks_in_words,
            })
        };
        let class = Pass::Class;
        let newlines = || Pass::Newlines(NewlineRuns);
        let passes = match pre {
            PreTokenizer::Default => vec![
                class(S::Runs(C::PunctuationAnd(b"$+<=>^~|"))),
                gpt2(),
                class(S::Runs(C::Numbers)),
                class(S::AsciiDigitTriples),
            ],
            PreTokenizer::Gpt2 => vec![gpt2()],
            PreTokenizer::Llama3 => vec![llama3(3, false)],
            PreTokenizer::Qwen2 => vec![llama3(1, false)],
            PreTokenizer::Qwen35 => vec![llama3(1, true)],
            PreTokenizer::StarCoder => vec![class(S::Singles(C::Numbers)), gpt2()],
            PreTokenizer::Falcon => vec![
                class(S::Runs(C::PunctuationAnd(b"$+<=>^~|`"))),
                gpt2(),
                class(S::AsciiDigitTriples),
            ],
            PreTokenizer::DeepseekLlm => vec![
                class(S::Singles(C::CarriageReturnOrNewline)),
                class(S::SpaceThenRun(C::DeepseekLetters)),
                class(S::SpaceThenRun(C::DeepseekPunctuation)),
                class(S::TrailingWhitespace),
                class(S::Runs(C::Cjk)),
                class(S::Runs(C::Numbers)),
            ],
            PreTokenizer::DeepseekCoder => vec![
                class(S::Singles(C::CarriageReturnOrNewline)),
                class(S::SpaceThenRun(C::Letters)),
                class(S::SpaceThenRun(C::PunctuationAnd(b""))),
                class(S::Runs(C::Cjk)),
                class(S::Singles(C::Numbers)),
            ],
            PreTokenizer::Bloom => vec![class(S::LiteralSpaceThenRun(C::NotBloomSeparator))],
            PreTokenizer::Viking => vec![
                class(S::LiteralSpaceThenRun(C::NotBloomSeparator)),
                class(S::Singles(C::Numbers)),
            ],
            PreTokenizer::Laguna => vec![newlines(), llama3(1, false)],
            PreTokenizer::Gemma4 => vec![newlines()],
        };
        PreTokenizerPasses { passes }
    }

    /// Splits `text` into words (as code point ranges), running every pass over the pieces
    /// of the previous one.
    pub(crate) fn split(&self, text: &[char]) -> Vec<Range<usize>> {
        let mut pieces = Vec::with_capacity(text.len() / 2);
        pieces.push(0..text.len());
        let mut next = Vec::with_capacity(text.len() / 2);
        for pass in &self.passes {
            next.clear();
            for piece in pieces.drain(..) {
                if !piece.is_empty() {
                    pass.split(text, piece, &mut next);
                }
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        pieces.retain(|r| !r.is_empty());
        pieces
    }
}

/// Emits pieces the way llama.cpp's splitters do: each call to `end_at` closes the piece
/// running from the previous end, and empty pieces are dropped.
pub(crate) struct PieceWriter<'a> {
    prev_end: usize,
    out: &'a mut Vec<Range<usize>>,
}

impl<'a> PieceWriter<'a> {
    pub(crate) fn new(start: usize, out: &'a mut Vec<Range<usize>>) -> Self {
        PieceWriter {
            prev_end: start,
            out,
        }
    }

    /// Closes the piece `prev_end..end`, returning its length.
    pub(crate) fn end_at(&mut self, end: usize) -> usize {
        let len = end.saturating_sub(self.prev_end);
        if len > 0 {
            self.out.push(self.prev_end..end);
        }
        self.prev_end = self.prev_end.max(end);
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        PreTokenizerPasses::new(pre)
            .split(&chars)
            .into_iter()
            .map(|r| chars[r].iter().collect())
            .collect()
    }

    #[test]
    fn llama3_splits_like_the_regex() {
        assert_eq!(
            words(PreTokenizer::Llama3, "Hello world's 12345  x\n\n y"),
            ["Hello", " world", "'s", " ", "123", "45", " ", " x", "\n\n", " y"]
        );
        assert_eq!(words(PreTokenizer::Qwen2, "123"), ["1", "2", "3"]);
    }

    #[test]
    fn gpt2_keeps_a_space_for_the_next_word() {
        assert_eq!(
            words(PreTokenizer::Gpt2, "a  b!! 3'll"),
            ["a", " ", " b", "!!", " 3", "'ll"]
        );
    }

    #[test]
    fn default_isolates_punctuation_then_digit_triples() {
        assert_eq!(
            words(PreTokenizer::Default, "x=1234567;"),
            ["x", "=", "123", "456", "7", ";"]
        );
    }

    #[test]
    fn pre_names_map_to_families_and_flags() {
        let c = PreConfig::for_name(Some("llama-bpe")).unwrap();
        assert_eq!(c.pre, PreTokenizer::Llama3);
        assert!(c.ignore_merges && c.add_bos && c.clean_spaces);
        assert_eq!(
            PreConfig::for_name(None).unwrap().pre,
            PreTokenizer::Default
        );
        let c = PreConfig::for_name(Some("smollm")).unwrap();
        assert_eq!(c.pre, PreTokenizer::StarCoder);
        assert!(!c.clean_spaces);
        assert!(matches!(
            PreConfig::for_name(Some("tekken")),
            Err(TokenizerError::UnsupportedPreTokenizer { .. })
        ));
        assert!(matches!(
            PreConfig::for_name(Some("no-such-pre")),
            Err(TokenizerError::UnknownPreTokenizer { .. })
        ));
    }
}
