//! Tokenizer timings (`make bench`, or `cargo bench -p bitnet-tokenizers`): vocabulary
//! load, encoding and decoding 10 KB of each vocabulary's own test inputs, and
//! pathological inputs (one long word, runs of spaces/digits/emoji, special-token
//! prefixes) that a quadratic merge loop or splitter would turn from milliseconds into
//! seconds. Numbers are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bitnet_tokenizers::Tokenizer;
use common::{read_cases, vocab_path};

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

fn encoding_10kb() {
    for name in [
        "llama-bpe",
        "llama-spm",
        "gemma-4",
        "bert-bge",
        "deepseek-llm",
    ] {
        let (tok, load) = timed(|| Tokenizer::from_gguf(vocab_path(name)).unwrap());
        let text = ten_kb(name);
        let (ids, encode) = timed(|| tok.encode(&text, false, true).unwrap());
        let (_, decode) = timed(|| tok.decode_bytes(&ids).unwrap());
        println!(
            "{name:<14} {} tokens ({} vocab): load {load:?}, encode 10 KB {encode:?}, decode {decode:?}",
            ids.len(),
            tok.n_vocab()
        );
    }
}

fn pathological_inputs() {
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
        }
    }
}

fn main() {
    encoding_10kb();
    pathological_inputs();
}
