//! Bad user files: each gives one readable line naming the file and the reason, never a
//! panic (`bitnet_crossval::routing::FileFacts::read`, which the user-model harness runs on
//! every file before anything else).
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

use std::path::Path;

use bitnet_crossval::routing::FileFacts;
use bitnet_gguf::{GgmlType, GgufWriter};

/// A header with `arch` and one F32 `token_embd.weight` `{4, 8}`.
fn small_file(arch: &str) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", arch).expect("arch");
    w.add_tensor_owned("token_embd.weight", GgmlType::F32, &[4, 8], vec![0; 128])
        .expect("tensor");
    w.to_bytes()
}

fn reason_for(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    let err = FileFacts::read(&path).expect_err("a bad file must not read as a model");
    let line = err.to_string();
    assert!(
        line.starts_with(&path.display().to_string()),
        "the line must name the file: {line}"
    );
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    line
}

#[test_log::test]
fn wrong_magic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let line = reason_for(
        dir.path(),
        "magic.gguf",
        b"PK\x03\x04 this is a zip file, not a model",
    );
    assert!(line.to_lowercase().contains("magic"), "{line}");
}

#[test_log::test]
fn truncated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = small_file("bitnet");
    for cut in [0, 3, 10, 40, bytes.len() - 1] {
        reason_for(dir.path(), &format!("cut{cut}.gguf"), &bytes[..cut]);
    }
}

#[test_log::test]
fn unknown_arch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let line = reason_for(dir.path(), "mamba.gguf", &small_file("mamba"));
    assert!(line.contains("unsupported architecture 'mamba'"), "{line}");
}

#[test_log::test]
fn unknown_tensor_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = small_file("bitnet");
    // Tensor info: name, n_dims (u32), dims (2 × u64), then the type id (u32).
    let name = b"token_embd.weight";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("tensor name in the header")
        + name.len()
        + 4
        + 16;
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let line = reason_for(dir.path(), "type99.gguf", &bytes);
    assert!(line.contains("99"), "{line}");
}

#[test_log::test]
fn missing_hyper_parameters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let line = reason_for(dir.path(), "bare.gguf", &small_file("bitnet"));
    assert!(line.contains("bitnet.context_length"), "{line}");
}
