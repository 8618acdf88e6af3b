//! Properties over arbitrary text on real vocabularies: encoding never fails or panics,
//! and decoding gives the text back wherever llama.cpp's decoder is lossless.

mod common;

use std::sync::Arc;

use bitnet_tokenizers::Tokenizer;
use common::tokenizer;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn real(name: &str) -> Arc<Tokenizer> {
    tokenizer(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Text mixing the characters tokenizers treat specially: spaces and newlines, digits,
/// apostrophes, punctuation, combining marks, CJK, emoji, and any code point at all.
fn text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        " ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "123", "٣", "é", "e\u{301}", "中文", "🦙",
        "!?", "<|", "|>", "Hello", "world", "\u{A0}", "\u{3000}", "▁",
    ]);
    let piece = prop_oneof![
        pieces.prop_map(str::to_owned),
        any::<char>().prop_map(String::from),
        "[a-zA-Z]{1,8}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    // Integration tests have no lib.rs for proptest to find: name the regressions file.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/properties.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn byte_level_bpe_without_cleaning_round_trips(s in text()) {
        let tok = real("qwen2");
        let ids = tok.encode(&s, false, false).unwrap();
        prop_assert_eq!(tok.decode_bytes(&ids).unwrap(), s.as_bytes());
    }

    // SPM writes spaces as "▁", so a "▁" in the input decodes as a space (in llama.cpp too).
    #[test]
    fn spm_with_byte_fallback_round_trips(s in text().prop_filter("no ▁", |s| !s.contains('\u{2581}'))) {
        let tok = real("llama-spm");
        let ids = tok.encode(&s, false, false).unwrap();
        prop_assert_eq!(tok.decode_bytes(&ids).unwrap(), s.as_bytes());
    }

    #[test]
    fn parsing_special_tokens_never_fails(s in text(), add in any::<bool>()) {
        let tok = real("llama-bpe");
        let ids = tok.encode(&s, add, true).unwrap();
        prop_assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
        tok.decode_bytes(&ids).unwrap();
    }
}
