//! Encoding 10 KB takes milliseconds and loading a 128k vocabulary well under a second in
//! release builds. The bounds here are generous (unoptimised test builds on a shared
//! machine) and only catch algorithmic regressions: a quadratic merge loop or splitter
//! turns milliseconds into seconds.

mod common;

use std::time::{Duration, Instant};

use bitnet_tokenizers::Tokenizer;
use common::{read_cases, vocab_path};

/// Upper bound for encoding or decoding 10 KB in any build profile.
const MAX_10KB: Duration = Duration::from_secs(2);
/// Upper bound for loading the 128k-token LLaMA 3 vocabulary in any build profile.
const MAX_LOAD: Duration = Duration::from_secs(15);

/// About 10 KB of the vocabulary's own test inputs (mixed scripts, digits, whitespace).
fn ten_kb(name: &str) -> String {
    let joined: String = read_cases(name)
        .expect("test vectors")
        .into_iter()
        .map(|c| c.text)
        .collect();
    joined.chars().cycle().take(10_000).collect()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

#[test]
fn encoding_10kb_takes_milliseconds() {
    for name in [
        "llama-bpe",
        "llama-spm",
        "gemma-4",
        "bert-bge",
        "deepseek-llm",
    ] {
        let (tok, load) = timed(|| Tokenizer::from_gguf(vocab_path(name)).unwrap());
        assert!(load < MAX_LOAD, "loading {name} took {load:?}");
        let text = ten_kb(name);
        let (ids, encode) = timed(|| tok.encode(&text, false, true).unwrap());
        let (_, decode) = timed(|| tok.decode_bytes(&ids).unwrap());
        println!(
            "{name:<14} {} tokens ({} vocab): load {load:?}, encode 10 KB {encode:?}, decode {decode:?}",
            ids.len(),
            tok.n_vocab()
        );
        assert!(encode < MAX_10KB, "{name}: encoding 10 KB took {encode:?}");
        assert!(decode < MAX_10KB, "{name}: decoding took {decode:?}");
    }
}

#[test]
fn pathological_inputs_stay_fast() {
    let bpe = Tokenizer::from_gguf(vocab_path("llama-bpe")).unwrap();
    let spm = Tokenizer::from_gguf(vocab_path("llama-spm")).unwrap();
    let inputs = [
        ("one 10 KB word", "ab".repeat(5_000)),
        ("10 KB of spaces", " ".repeat(10_000)),
        ("10 KB of digits", "7".repeat(10_000)),
        ("10 KB of one emoji", "🦙".repeat(2_500)),
        (
            "10 KB of special-token prefixes",
            "<|begin_of".repeat(1_000),
        ),
    ];
    for (what, text) in &inputs {
        for (name, tok) in [("llama-bpe", &bpe), ("llama-spm", &spm)] {
            let (ids, took) = timed(|| tok.encode(text, false, true).unwrap());
            println!("{name:<10} {what:<32} {:>6} tokens in {took:?}", ids.len());
            assert!(took < MAX_10KB, "{name}: {what} took {took:?}");
        }
    }
}
