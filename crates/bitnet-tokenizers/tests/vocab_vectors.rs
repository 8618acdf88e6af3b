//! llama.cpp's own tokenizer test vectors (`ggml-vocab-*.gguf` + `.inp`/`.out`, as its
//! test-tokenizer-0 runs them: `add_special = false`, `parse_special = false`), and the
//! decode round trip on the same inputs.

mod common;

use common::{read_cases, tokenizer, Case};

/// Every vocabulary llama.cpp ships, with the fewest cases we must pass: the floor is the
/// count reached when this table was last updated (every case, for all fifteen), so any
/// regression fails the test. `None`: llama.cpp ships no test vectors for it.
const VOCABS: &[(&str, Option<usize>)] = &[
    ("llama-bpe", Some(46)),
    ("llama-spm", Some(46)),
    ("gpt-2", Some(46)),
    ("bert-bge", Some(46)),
    ("command-r", Some(46)),
    ("deepseek-coder", Some(46)),
    ("deepseek-llm", Some(46)),
    ("falcon", Some(46)),
    ("gemma-4", Some(46)),
    ("mpt", Some(46)),
    ("phi-3", Some(46)),
    ("qwen2", Some(46)),
    ("qwen35", Some(50)),
    ("refact", Some(46)),
    ("starcoder", Some(46)),
    ("aquila", None),
    ("baichuan", None),
    ("gpt-neox", None),
    ("nomic-bert-moe", None),
];

/// The vocabularies the parity suite relies on: every case must pass whatever the table says.
const MUST_PASS_ALL: &[&str] = &["llama-bpe", "llama-spm", "gpt-2"];

struct Outcome {
    name: &'static str,
    pre: String,
    cases: usize,
    passed: usize,
    first_failure: Option<String>,
}

fn run_vocab(name: &'static str, cases: &[Case]) -> Result<Outcome, String> {
    let tok = tokenizer(name)?;
    let mut passed = 0;
    let mut first_failure = None;
    for case in cases {
        let got = tok
            .encode(&case.text, false, false)
            .map_err(|e| format!("{name}: encoding {:?}: {e}", case.text))?;
        if got == case.ids {
            passed += 1;
        } else if first_failure.is_none() {
            first_failure = Some(format!(
                "input {:?}\n    expected {:?}\n    got      {:?}",
                case.text, case.ids, got
            ));
        }
    }
    Ok(Outcome {
        name,
        pre: format!("{:?}/{:?}", tok.kind(), tok.pre_tokenizer()),
        cases: cases.len(),
        passed,
        first_failure,
    })
}

#[test]
fn llama_cpp_vocab_vectors() {
    let mut failures = Vec::new();
    println!(
        "{:<16} {:<28} {:>6} {:>7}",
        "vocab", "kind/pre", "cases", "passed"
    );
    for &(name, floor) in VOCABS {
        let Some(floor) = floor else {
            assert!(
                read_cases(name).is_none(),
                "{name} now ships test vectors: add a floor for it"
            );
            println!(
                "{name:<16} {:<28} {:>6} {:>7}",
                "(no test vectors)", "-", "-"
            );
            continue;
        };
        let cases = read_cases(name).unwrap_or_else(|| panic!("{name}: test vectors missing"));
        let outcome = match run_vocab(name, &cases) {
            Ok(o) => o,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        println!(
            "{:<16} {:<28} {:>6} {:>7}",
            outcome.name, outcome.pre, outcome.cases, outcome.passed
        );
        if let Some(f) = &outcome.first_failure {
            println!("    first failure: {f}");
        }
        let required = if MUST_PASS_ALL.contains(&name) {
            outcome.cases
        } else {
            floor
        };
        if outcome.passed < required {
            failures.push(format!(
                "{name}: {} of {} cases passed, {required} required; first failure: {}",
                outcome.passed,
                outcome.cases,
                outcome.first_failure.as_deref().unwrap_or("-")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "vocabularies below their floor:\n{}",
        failures.join("\n")
    );
}

/// How `decode(encode(x))` relates to `x` for a vocabulary, following what llama.cpp's
/// detokenizer does to the text.
#[derive(Debug, Clone, Copy)]
enum RoundTrip {
    /// Lossless: byte-level BPE without space cleaning, SPM with byte fallback.
    Exact,
    /// Lossless except where llama.cpp's `clean_spaces` rewrites `" ,"`, `" '"`, `" 's"`...
    ExactUnlessCleaned,
    /// WordPiece lowercases, strips accents and drops whitespace: no round trip.
    Lossy,
}

const ROUND_TRIPS: &[(&str, RoundTrip)] = &[
    ("llama-bpe", RoundTrip::ExactUnlessCleaned),
    ("llama-spm", RoundTrip::Exact),
    ("gpt-2", RoundTrip::ExactUnlessCleaned),
    ("bert-bge", RoundTrip::Lossy),
    ("command-r", RoundTrip::Exact),
    ("deepseek-coder", RoundTrip::Exact),
    ("deepseek-llm", RoundTrip::Exact),
    ("falcon", RoundTrip::ExactUnlessCleaned),
    ("gemma-4", RoundTrip::ExactUnlessCleaned),
    ("mpt", RoundTrip::ExactUnlessCleaned),
    ("phi-3", RoundTrip::Exact),
    ("qwen2", RoundTrip::Exact),
    ("qwen35", RoundTrip::Exact),
    ("refact", RoundTrip::ExactUnlessCleaned),
    ("starcoder", RoundTrip::ExactUnlessCleaned),
];

/// Would llama.cpp's `clean_spaces` change this text?
fn cleaning_applies(text: &str) -> bool {
    [" ?", " !", " .", " ,", " ' ", " 's", " 'm", " 're", " 've"]
        .iter()
        .any(|p| text.contains(p))
}

#[test]
fn decode_round_trips_where_llama_cpp_does() {
    let mut failures = Vec::new();
    for &(name, mode) in ROUND_TRIPS {
        let cases = read_cases(name).unwrap_or_else(|| panic!("{name}: test vectors missing"));
        let tok = tokenizer(name).unwrap_or_else(|e| panic!("{e}"));
        let (mut checked, mut excluded) = (0, 0);
        for case in &cases {
            let ids = tok.encode(&case.text, false, false).unwrap();
            let back = tok.decode_bytes(&ids).unwrap();
            let must_match = match mode {
                RoundTrip::Exact => true,
                RoundTrip::ExactUnlessCleaned => !cleaning_applies(&case.text),
                RoundTrip::Lossy => false,
            };
            if !must_match {
                excluded += 1;
                continue;
            }
            checked += 1;
            if back != case.text.as_bytes() {
                failures.push(format!(
                    "{name}: {:?} decoded to {:?}",
                    case.text,
                    String::from_utf8_lossy(&back)
                ));
            }
        }
        println!(
            "{name:<16} round trip checked on {checked} cases, {excluded} excluded ({mode:?})"
        );
    }
    assert!(
        failures.is_empty(),
        "round trip failures:\n{}",
        failures.join("\n")
    );
}
