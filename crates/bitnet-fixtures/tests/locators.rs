//! Data locators and the "run `make setup`" failure. These tests change environment
//! variables, so they live in their own binary, in one test function (no other thread
//! reads the environment meanwhile).

mod common;

use std::fs;
use std::path::PathBuf;

use bitnet_fixtures::{
    data_dir, fixture, plan, smollm2_path, user_models, vocab_path, Arch, FixtureError,
    FixtureSpec, WeightFormat, DATA_DIR_ENV, USER_MODEL_ENVS,
};
use common::must;

#[test]
fn locators_follow_the_environment_and_missing_data_says_run_make_setup() {
    let saved: Vec<(&str, Option<std::ffi::OsString>)> = [DATA_DIR_ENV]
        .into_iter()
        .chain(USER_MODEL_ENVS)
        .map(|k| (k, std::env::var_os(k)))
        .collect();

    // The real data (fetched by `make setup`) is where the locators say.
    let vocab = must(vocab_path("llama-bpe"));
    assert!(vocab.starts_with(data_dir()), "{}", vocab.display());
    assert!(must(smollm2_path()).is_file());

    // An empty data directory: every locator and generator fails with the setup hint.
    let empty = tempfile::tempdir().unwrap();
    std::env::set_var(DATA_DIR_ENV, empty.path());
    assert_eq!(data_dir(), empty.path());
    let spec = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::F32);
    let errors = [
        vocab_path("llama-bpe").unwrap_err(),
        smollm2_path().unwrap_err(),
        plan(&spec).unwrap_err(),
        fixture(&spec).unwrap_err(),
    ];
    for e in errors {
        assert!(matches!(e, FixtureError::DataMissing { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("run `make setup`"), "{msg}");
        assert!(msg.contains(&empty.path().display().to_string()), "{msg}");
    }

    // BITNET_GGUF and CROSSVAL_GGUF name extra models; either one, each once.
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.gguf");
    let b = dir.path().join("b.gguf");
    fs::write(&a, b"").unwrap();
    std::env::set_var("BITNET_GGUF", &a);
    std::env::remove_var("CROSSVAL_GGUF");
    assert_eq!(user_models().first(), Some(&a));
    std::env::set_var("CROSSVAL_GGUF", &a);
    assert_eq!(user_models().iter().filter(|p| **p == a).count(), 1);
    std::env::remove_var("BITNET_GGUF");
    std::env::set_var("CROSSVAL_GGUF", &b);
    // A missing file is still listed, so the case fails loudly where it is loaded.
    assert_eq!(user_models().first(), Some(&b));
    std::env::remove_var("CROSSVAL_GGUF");
    assert!(!user_models().contains(&b));
    let models_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    assert!(user_models()
        .iter()
        .all(|p| p.starts_with(&models_dir) && p.extension().is_some_and(|e| e == "gguf")));

    for (k, v) in saved {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
}
