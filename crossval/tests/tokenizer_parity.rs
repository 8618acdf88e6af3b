//! Tokenizer parity against the three C++ references (features `crossval` and
//! `integration-tests`, the latter for `bitnet-tokenizers`).
//!
//! For every reference × every vocabulary of llama.cpp's vocab set (`ggml-vocab-*.gguf`,
//! loaded `vocab_only` in the reference):
//! - a vocabulary the reference refuses to load is recorded as unsupported by that reference
//!   (a property of the fork, not a pass of ours), and the loadable set must equal the
//!   reference's `*_LOADS` constant exactly, so a change either way is noticed;
//! - on a loadable pair our `encode` must give the reference's `llama_tokenize` ids for every
//!   `.inp` case (`add_special` and `parse_special` false, as test-tokenizer-0 runs them) and
//!   for every torture-corpus text under all four `add_special` × `parse_special` settings;
//! - the ids of each case, rendered piece by piece (`token_to_piece(id, special = true)`,
//!   what the runner's `Detokenize` concatenates), must give the reference's bytes; and our
//!   `decode` must give them too wherever the reference's rendering round-trips the input
//!   and `llama_detokenize`'s own rewrites (space cleaning, SPM prefix removal) cannot apply.
//!
//! Each test prints a table: reference × vocab → cases, identical ids, identical pieces,
//! decode checked/identical, first mismatch (text and both id lists).
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use bitnet_sys::{RefError, RefSession, Reference};
use bitnet_tokenizers::Tokenizer;

/// llama.cpp's vocab set (`make setup` caches it in `target/data/vocab`) minus
/// [`NOT_OURS`]: every vocabulary our tokenizer supports.
const VOCABS: &[&str] = &[
    "aquila",
    "baichuan",
    "bert-bge",
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gemma-4",
    "gpt-2",
    "gpt-neox",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

/// The rest of llama.cpp's vocab set: tokenizer models ours does not implement
/// (`nomic-bert-moe` is a T5/UGM vocabulary). Asserted refused, so support is noticed.
const NOT_OURS: &[&str] = &["nomic-bert-moe"];

/// Vocabularies upstream llama.cpp must load (measured: all of them).
const LLAMA_CPP_LOADS: &[&str] = VOCABS;

/// Vocabularies ik_llama.cpp must load (measured: all of them).
const IK_LLAMA_LOADS: &[&str] = VOCABS;

/// Vocabularies bitnet.cpp must load (measured). Its llama.cpp predates Gemma 4 and
/// Qwen3.5: it refuses `gemma-4` ("unknown model architecture: 'gemma4'") and `qwen35`
/// ("unknown pre-tokenizer type: 'qwen35'").
const BITNET_CPP_LOADS: &[&str] = &[
    "aquila",
    "baichuan",
    "bert-bge",
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gpt-2",
    "gpt-neox",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "refact",
    "starcoder",
];

/// A known, explained difference between a reference's ids and ours on specific cases of
/// one vocabulary. Only the ids may differ on a matching case (its pieces and decode are
/// still compared), and every entry must still match at least one differing case, so an
/// entry that stops applying fails the test and must be removed.
#[derive(Clone, Copy)]
struct KnownDifference {
    /// `None`: every reference (a defect of ours).
    reference: Option<Reference>,
    vocab: &'static str,
    /// Why the two differ (and who is right).
    cause: &'static str,
    /// The cases the difference can affect.
    applies: fn(&Case) -> bool,
}

/// Reference bugs and fork differences (measured on the pinned crates). Upstream llama.cpp
/// is what our tokenizer follows; it has no entry here.
const KNOWN_DIFFERENCES: &[KnownDifference] = &[
    KnownDifference {
        reference: Some(Reference::IkLlamaCpp),
        vocab: "bert-bge",
        cause: "ik_llama.cpp's WPM tokenizer does not lowercase: its unicode-data.cpp holds \
                unicode_map_lowercase as a std::unordered_map, which unicode_tolower \
                binary-searches (std::lower_bound) as if sorted, so most code points find no \
                mapping (upstream holds a sorted list). Any word with an uppercase letter then \
                misses the uncased BERT vocabulary and becomes [UNK] (100): ik fails \
                llama.cpp's own bert-bge vectors (\"Hello world\" -> [100, 2088], upstream and \
                ours [7592, 2088]). Like bitnet.cpp it also keeps nonspacing marks (no \
                strip_accents), which only the uppercase-bearing cases here contain",
        applies: |c| c.text.chars().any(char::is_uppercase) || has_nonspacing_mark(&c.text),
    },
    KnownDifference {
        reference: Some(Reference::BitnetCpp),
        vocab: "bert-bge",
        cause: "bitnet.cpp's older llama.cpp WPM preprocessing keeps nonspacing marks after \
                NFD (newer llama.cpp drops them when the vocabulary asks for strip_accents, \
                as BERT's does: `flags.is_accent_mark`), so a word \
                with a combining accent or a Devanagari virama becomes [UNK] \
                (\"cafe\\u{301}\" -> [100], upstream and ours \"cafe\" [7668])",
        applies: |c| has_nonspacing_mark(&c.text),
    },
    KnownDifference {
        reference: Some(Reference::BitnetCpp),
        vocab: "phi-3",
        cause: "phi-3's `</s>` (id 2) is typed USER_DEFINED in the GGUF; newer llama.cpp marks \
                end-of-generation tokens CONTROL, so without parse_special it is plain text, \
                while bitnet.cpp's older loader keeps it USER_DEFINED and always matches it",
        applies: |c| c.text.contains("</s>") && !c.parse_special,
    },
    KnownDifference {
        reference: Some(Reference::BitnetCpp),
        vocab: "qwen2",
        cause: "qwen2's `</s>` (id 128247) is typed NORMAL in the GGUF; newer llama.cpp \
                recognises it as an end-of-generation token and marks it CONTROL, so \
                parse_special matches it, while bitnet.cpp's older loader never treats it \
                as special (\"</s>\" -> [522, 82, 29])",
        applies: |c| c.text.contains("</s>") && c.parse_special,
    },
];

/// Whether `text` holds a nonspacing mark of the corpus: a combining diacritic
/// (U+0300..U+036F) or the Devanagari virama (U+094D).
fn has_nonspacing_mark(text: &str) -> bool {
    text.chars()
        .any(|ch| ('\u{300}'..='\u{36f}').contains(&ch) || ch == '\u{94d}')
}

/// The known difference explaining a mismatch of `reference` on `vocab`'s `case`, if any
fn known_difference(reference: Reference, vocab: &str, case: &Case) -> Option<KnownDifference> {
    KNOWN_DIFFERENCES.iter().copied().find(|d| {
        d.reference.is_none_or(|r| r == reference) && d.vocab == vocab && (d.applies)(case)
    })
}

/// The case separator of llama.cpp's `.inp` files.
const CASE_SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// Inputs chosen to stress pre-tokenizer regexes, normalisation, byte fallback and special
/// token matching (run with every `add_special` × `parse_special` combination).
fn torture_corpus() -> Vec<String> {
    let mut c: Vec<String> = [
        "",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "a",
        " a",
        "Hello world",
        " Hello world",
        "Hello World!  How's it going?\tFine.\n\nYes.",
        // Mixed scripts and combining marks.
        "English, Ελληνικά, Русский, עברית, العربية, हिन्दी, ไทย, 한국어, 日本語, 中文",
        "e\u{301}te\u{301} cafe\u{301} Zo\u{308}e n\u{303}o a\u{30a}\u{327}",
        "Z\u{351}\u{36b}\u{343}\u{36a}\u{302}\u{36b}a\u{33d}\u{34f}l\u{315}g\u{35c}o\u{358}",
        "ﬁ ﬀ ＡＢＣ １２３ ｶﾀｶﾅ Ⅻ ㎏ ① ²³",
        // Whitespace runs.
        "a          b",
        "a\t\t\t\tb\n\n\n\nc",
        "   leading and trailing   ",
        "\n\n\n",
        "\t \n \t\n",
        "line one\nline two\r\nline three\rline four",
        "                                                                                ",
        // Digits of many lengths.
        "1",
        "12",
        "123",
        "1234",
        "12345",
        "123456",
        "1234567",
        "12345678901234567890",
        "3.14159 2,718 1e-10 0x1F -42 +7 1/2 100%",
        "version 1.2.3-rc4, year 2024, phone 555-0123",
        // Special-token lookalikes (rendered as specials only with parse_special).
        "<|begin_of_text|>Hello<|end_of_text|>",
        "<s>Hello</s>",
        "<|endoftext|>",
        "<|im_start|>user\nHi<|im_end|>",
        "[CLS] hello [SEP] [MASK] [PAD] [UNK]",
        "<bos><start_of_turn>user\nhi<end_of_turn>",
        "<|begin_of_text|",
        "<|begin_of_text|><|begin_of_text|>",
        "< |begin_of_text| >",
        "<|eot_id|> <|start_header_id|>assistant<|end_header_id|>",
        "<unk><pad><mask>",
        "<|BEGIN_OF_TEXT|>",
        // Emoji, ZWJ sequences, flags, skin tones, variation selectors.
        "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 thumbs, 🇫🇷🇯🇵 flags",
        "❤️ ❤ ☺️ ✌🏿 🧑🏻‍💻 🫠",
        "😀😃😄😁😆😅🤣😂",
        // CJK and RTL.
        "我们的目标是让每个人都能使用人工智能。日本語のテキストも含みます。",
        "한국어 문장입니다. 띄어쓰기가 있습니다.",
        "مرحبا بالعالم! هذا نص عربي مع أرقام ١٢٣٤٥",
        "שלום עולם, זה טקסט בעברית",
        "mixed \u{202e}RTL override\u{202c} and \u{200f}marks\u{200e}",
        // Control and invisible characters.
        "a\u{0}b",
        "bell\u{7}back\u{8}esc\u{1b}[0m del\u{7f}",
        "zero\u{200b}width\u{200c}non\u{200d}joiner\u{feff}bom",
        "\u{1}\u{2}\u{3}\u{1f}",
        "soft\u{ad}hyphen nbsp\u{a0}here thin\u{2009}space ideographic\u{3000}space",
        // Code and punctuation.
        "fn main() {\n    println!(\"Hello, {}!\", name);\n}\n",
        "if (x != y && z >= 10) { return a->b[i++]; } // comment",
        "'s 're 've 'll 'm 't 'd 'S 'RE n't I'm you're",
        "...!!!???---___***///\\\\\\",
        "http://example.com/path?q=1&r=2#frag user@example.org",
        "$ € £ ¥ ₹ ₿ ° ± × ÷ ∞ ≠ ≤ ≥ √ ∑ ∫",
        // Byte-fallback territory.
        "\u{10ffff}\u{e000}\u{fffd}",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𓀀𓀁",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.push(paragraph());
    c
}

/// A paragraph of a little over 2 KB mixing prose, numbers, code, scripts and whitespace.
fn paragraph() -> String {
    let parts = [
        "The quick brown fox jumps over the lazy dog; meanwhile, 1234567 people watched. ",
        "Ölçü birimleri: 12 km, 3.5 kg, 100°C. ",
        "東京は日本の首都です。 ",
        "Он сказал: «Привет!» ",
        "   \t  indentation\n\n",
        "x = [i**2 for i in range(10)]  # squares\n",
        "👩‍🔬 tested it — twice… ",
        "<|endoftext|> is not special here unless parsed. ",
        "العربية ",
        "don't won't can't shan't ",
    ];
    let mut p = String::new();
    let mut i = 0;
    while p.len() < 2100 {
        p.push_str(parts[i % parts.len()]);
        i += 1;
    }
    p
}

/// One input and how it is tokenized.
#[derive(Debug, Clone)]
struct Case {
    text: String,
    add_special: bool,
    parse_special: bool,
    /// From the vocabulary's `.inp` file (else the torture corpus).
    from_inp: bool,
}

/// The vocabulary's `.inp` cases, split as llama.cpp's test-tokenizer-0 splits them, or
/// none when it ships no test vectors.
fn inp_cases(name: &str) -> Vec<String> {
    let path = bitnet_fixtures::vocab_path(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .with_extension("gguf.inp");
    let Ok(inp) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.split_once(CASE_SEPARATOR) {
            Some((case, tail)) => {
                out.push(case.to_owned());
                rest = tail;
            }
            None => {
                out.push(rest.to_owned());
                break;
            }
        }
    }
    out
}

fn cases(name: &str) -> Vec<Case> {
    let mut v: Vec<Case> = inp_cases(name)
        .into_iter()
        .map(|text| Case {
            text,
            add_special: false,
            parse_special: false,
            from_inp: true,
        })
        .collect();
    for text in torture_corpus() {
        for (add_special, parse_special) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            v.push(Case {
                text: text.clone(),
                add_special,
                parse_special,
                from_inp: false,
            });
        }
    }
    v
}

/// Our tokenizer of a vocabulary, loaded once per test binary.
fn ours(name: &str) -> Arc<Tokenizer> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Tokenizer>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    cache
        .entry(name.to_owned())
        .or_insert_with(|| {
            let path = bitnet_fixtures::vocab_path(name).unwrap_or_else(|e| panic!("{e}"));
            Arc::new(
                Tokenizer::from_gguf(&path)
                    .unwrap_or_else(|e| panic!("our tokenizer refuses {name}: {e}")),
            )
        })
        .clone()
}

/// Would llama.cpp's `clean_spaces` rewrite this text when decoding?
fn cleaning_applies(text: &str) -> bool {
    [" ?", " !", " .", " ,", " '", " n't"]
        .iter()
        .any(|p| text.contains(p))
}

/// Our rendering of `ids` piece by piece, as the runner's `Detokenize` builds it.
fn our_pieces(tok: &Tokenizer, ids: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    for &id in ids {
        out.extend_from_slice(
            &tok.token_to_piece(id, true)
                .unwrap_or_else(|e| panic!("token_to_piece({id}): {e}")),
        );
    }
    out
}

/// The outcome of one reference × vocabulary pair.
#[derive(Debug, Default)]
struct PairResult {
    /// Why the reference refused the vocabulary, if it did.
    unsupported: Option<String>,
    cases: usize,
    ids_identical: usize,
    /// Ids differing on a case a [`KnownDifference`] covers.
    ids_known: usize,
    /// The causes of the known differences met.
    causes: Vec<&'static str>,
    pieces_identical: usize,
    decode_checked: usize,
    decode_identical: usize,
    /// Every mismatch (the table shows the first; all are printed after it).
    mismatches: Vec<String>,
}

impl PairResult {
    fn passed(&self) -> bool {
        self.unsupported.is_some()
            || (self.ids_identical + self.ids_known == self.cases
                && self.pieces_identical == self.cases
                && self.decode_identical == self.decode_checked)
    }

    fn mismatch(&mut self, what: String) {
        self.mismatches.push(what);
    }
}

fn run_pair(reference: Reference, name: &str) -> PairResult {
    let path = bitnet_fixtures::vocab_path(name).unwrap_or_else(|e| panic!("{e}"));
    let mut session = match RefSession::load_vocab(reference, &path) {
        Ok(s) => s,
        Err(e @ (RefError::RunnerMissing { .. } | RefError::Spawn { .. })) => {
            panic!("{reference}: {e}")
        }
        Err(e) => {
            // The loader's own reason, from the runner's stderr, else the error's first line.
            let text = e.to_string();
            let why = text
                .lines()
                .rfind(|l| l.contains("error loading model"))
                .or_else(|| text.lines().next())
                .unwrap_or_default();
            return PairResult {
                unsupported: Some(why.trim().to_owned()),
                ..PairResult::default()
            };
        }
    };
    let tok = ours(name);
    let mut r = PairResult::default();
    for case in cases(name) {
        r.cases += 1;
        let label = format!(
            "{}{:?} (add_special {}, parse_special {})",
            if case.from_inp { ".inp " } else { "" },
            case.text,
            case.add_special,
            case.parse_special
        );
        let theirs = session
            .tokenize(&case.text, case.add_special, case.parse_special)
            .unwrap_or_else(|e| panic!("{reference} {name}: tokenize {label}: {e}"));
        let mine = tok
            .encode(&case.text, case.add_special, case.parse_special)
            .unwrap_or_else(|e| panic!("{name}: our encode {label}: {e}"));
        if mine == theirs {
            r.ids_identical += 1;
        } else if let Some(d) = known_difference(reference, name, &case) {
            r.ids_known += 1;
            if !r.causes.contains(&d.cause) {
                r.causes.push(d.cause);
            }
        } else {
            r.mismatch(format!(
                "ids of {label}\n      ours   {mine:?}\n      theirs {theirs:?}"
            ));
        }
        let rendered = session
            .detokenize_bytes(&theirs)
            .unwrap_or_else(|e| panic!("{reference} {name}: detokenize {label}: {e}"));
        let pieces = our_pieces(&tok, &theirs);
        if pieces == rendered {
            r.pieces_identical += 1;
        } else {
            r.mismatch(format!(
                "pieces of {label} (ids {theirs:?})\n      ours   {:?}\n      theirs {:?}",
                String::from_utf8_lossy(&pieces),
                String::from_utf8_lossy(&rendered)
            ));
        }
        // Our decode is llama_detokenize; where the reference's piece rendering gives the
        // input back and none of llama_detokenize's rewrites can apply, they must agree.
        if !case.add_special && rendered == case.text.as_bytes() && !cleaning_applies(&case.text) {
            r.decode_checked += 1;
            let decoded = tok
                .decode_bytes(&theirs)
                .unwrap_or_else(|e| panic!("{name}: our decode {label}: {e}"));
            if decoded == rendered {
                r.decode_identical += 1;
            } else {
                r.mismatch(format!(
                    "decode of {label} (ids {theirs:?})\n      ours   {:?}\n      theirs {:?}",
                    String::from_utf8_lossy(&decoded),
                    String::from_utf8_lossy(&rendered)
                ));
            }
        }
    }
    r
}

/// Runs every vocabulary against `reference`, prints the table, and asserts the support set
/// and 100% parity on every loadable pair.
fn check_reference(reference: Reference, must_load: &[&str]) {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<13} {:<15} {:>5} {:>7} {:>6} {:>9} {:>13}  first unexplained mismatch",
        "reference", "vocab", "cases", "ids ==", "known", "pieces ==", "decode ==/chk"
    );
    let mut details = String::new();
    let mut loaded = Vec::new();
    let mut failed = Vec::new();
    let mut causes_met = Vec::new();
    for &name in VOCABS {
        let r = run_pair(reference, name);
        match &r.unsupported {
            Some(why) => {
                let _ = writeln!(
                    table,
                    "{:<13} {:<15} unsupported by {reference}: {why}",
                    reference.name(),
                    name
                );
            }
            None => {
                loaded.push(name);
                let _ = writeln!(
                    table,
                    "{:<13} {:<15} {:>5} {:>7} {:>6} {:>9} {:>6}/{:<6}  {}",
                    reference.name(),
                    name,
                    r.cases,
                    r.ids_identical,
                    r.ids_known,
                    r.pieces_identical,
                    r.decode_identical,
                    r.decode_checked,
                    r.mismatches.first().map_or("-", String::as_str)
                );
                for m in r.mismatches.iter().skip(1) {
                    let _ = writeln!(details, "{reference} {name}: {m}");
                }
                for cause in &r.causes {
                    let _ = writeln!(details, "{reference} {name}: known difference: {cause}");
                }
                causes_met.extend(r.causes.iter().copied());
            }
        }
        if !r.passed() {
            failed.push(name);
        }
    }
    eprintln!("{table}\n{details}");
    let unexpected: Vec<_> = loaded.iter().filter(|n| !must_load.contains(n)).collect();
    let missing: Vec<_> = must_load.iter().filter(|n| !loaded.contains(n)).collect();
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "{reference}: support set changed: now loads {unexpected:?} (add to its constant), \
         no longer loads {missing:?}"
    );
    assert!(
        failed.is_empty(),
        "{reference}: tokenizer parity below 100% on {failed:?} (table above)"
    );
    let stale: Vec<_> = KNOWN_DIFFERENCES
        .iter()
        .filter(|d| d.reference.is_none_or(|r| r == reference))
        .filter(|d| !causes_met.contains(&d.cause))
        .map(|d| (d.vocab, d.cause))
        .collect();
    assert!(
        stale.is_empty(),
        "{reference}: known differences that no longer occur (remove them): {stale:?}"
    );
}

#[test_log::test]
fn llama_cpp_tokenizer_parity() {
    check_reference(Reference::LlamaCpp, LLAMA_CPP_LOADS);
}

#[test_log::test]
fn ik_llama_cpp_tokenizer_parity() {
    check_reference(Reference::IkLlamaCpp, IK_LLAMA_LOADS);
}

#[test_log::test]
fn bitnet_cpp_tokenizer_parity() {
    check_reference(Reference::BitnetCpp, BITNET_CPP_LOADS);
}

#[test_log::test]
fn the_vocabularies_left_out_are_the_ones_our_tokenizer_refuses() {
    for name in NOT_OURS {
        let path = bitnet_fixtures::vocab_path(name).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Tokenizer::from_gguf(&path).is_err(),
            "{name} now loads in our tokenizer: move it into VOCABS"
        );
    }
}

#[test_log::test]
fn a_vocab_only_session_tokenizes_but_refuses_eval() {
    let path = bitnet_fixtures::vocab_path("llama-bpe").unwrap_or_else(|e| panic!("{e}"));
    for reference in Reference::ALL {
        let mut s =
            RefSession::load_vocab(reference, &path).unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert!(s.is_vocab_only());
        assert_eq!(s.info().n_ctx, 0, "{reference}");
        let ids = s.tokenize("Hello world", false, false).unwrap();
        assert_eq!(
            ids,
            ours("llama-bpe")
                .encode("Hello world", false, false)
                .unwrap()
        );
        let err = s.eval(&ids, 0).unwrap_err();
        assert!(
            matches!(&err, RefError::InvalidArgument(m) if m.contains("vocabulary-only")),
            "{reference}: {err}"
        );
        // The runner refuses too, for a client that bypasses the session check.
        let err = s.reset().unwrap_err();
        assert!(err.to_string().contains("vocab_only"), "{reference}: {err}");
    }
}
