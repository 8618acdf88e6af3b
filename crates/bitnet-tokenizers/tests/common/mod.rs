//! Shared helpers for the behaviour suites: locating llama.cpp's vocabulary test data and
//! reading its `.inp`/`.out` vector files.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

use std::path::PathBuf;

/// The separator between cases in a `.gguf.inp` file (llama.cpp's test-tokenizer-0).
const CASE_SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// `$BITNET_DATA_DIR/vocab`, or `<workspace>/target/data/vocab`. Panics — failing the test,
/// never skipping it — when the folder is missing.
pub fn vocab_dir() -> PathBuf {
    let data = std::env::var_os("BITNET_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/data")
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
                    .map(|t| t.parse().unwrap_or_else(|e| panic!("{name}: bad id {t:?}: {e}")))
                    .collect(),
            })
            .collect(),
    )
}
