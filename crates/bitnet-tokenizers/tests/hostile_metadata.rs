//! Broken and hostile tokenizer metadata: every fault is a typed error naming the problem,
//! never a panic, and hostile ids or text never crash encoding or decoding.

mod common;

use bitnet_gguf::{GgufError, MetadataValue};
use bitnet_tokenizers::{MergeProblem, Tokenizer, TokenizerError, TokenizerKind};
use common::{gguf, tiny_bpe, tiny_spm, with, without, Pairs};

fn load(pairs: Pairs) -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_gguf_file(&gguf(pairs))
}

fn load_err(pairs: Pairs) -> TokenizerError {
    load(pairs).expect_err("broken metadata must be refused")
}

#[test]
fn the_tiny_vocabularies_are_valid() {
    let bpe = load(tiny_bpe()).unwrap();
    assert_eq!(bpe.kind(), TokenizerKind::Bpe);
    let ids = bpe.encode("hello world", false, false).unwrap();
    assert_eq!(bpe.decode(&ids).unwrap(), "hello world");
    assert_eq!(ids.len(), 2);
    let spm = load(tiny_spm()).unwrap();
    assert_eq!(spm.kind(), TokenizerKind::Spm);
    assert_eq!(
        spm.decode(&spm.encode("hi", false, false).unwrap())
            .unwrap(),
        "hi"
    );
}

#[test]
fn a_missing_file_is_an_io_error() {
    let err = Tokenizer::from_gguf("/nonexistent/model.gguf").unwrap_err();
    assert!(
        matches!(err, TokenizerError::Gguf(GgufError::Io { .. })),
        "{err}"
    );
}

#[test]
fn the_tokenizer_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
}

#[test]
fn missing_model_or_tokens_are_named() {
    assert!(matches!(
        load_err(without(tiny_bpe(), "tokenizer.ggml.model")),
        TokenizerError::MissingKey {
            key: "tokenizer.ggml.model"
        }
    ));
    assert!(matches!(
        load_err(without(tiny_bpe(), "tokenizer.ggml.tokens")),
        TokenizerError::MissingKey {
            key: "tokenizer.ggml.tokens"
        }
    ));
    assert!(matches!(
        load_err(without(tiny_bpe(), "tokenizer.ggml.merges")),
        TokenizerError::MissingKey {
            key: "tokenizer.ggml.merges"
        }
    ));
}

#[test]
fn tokens_of_the_wrong_type_are_a_gguf_error() {
    let err = load_err(with(tiny_bpe(), "tokenizer.ggml.tokens", vec![1u32, 2, 3]));
    assert!(
        matches!(&err, TokenizerError::Gguf(GgufError::WrongType { key, .. }) if key == "tokenizer.ggml.tokens"),
        "{err}"
    );
}

#[test]
fn empty_vocab_is_refused() {
    let empty: Vec<&str> = Vec::new();
    let pairs = with(
        without(
            without(tiny_spm(), "tokenizer.ggml.scores"),
            "tokenizer.ggml.token_type",
        ),
        "tokenizer.ggml.tokens",
        empty,
    );
    assert!(matches!(load_err(pairs), TokenizerError::EmptyVocab));
}

#[test]
fn per_token_arrays_must_match_the_token_count() {
    let err = load_err(with(tiny_spm(), "tokenizer.ggml.scores", vec![0.0f32; 3]));
    assert!(
        matches!(
            err,
            TokenizerError::LengthMismatch {
                key: "tokenizer.ggml.scores",
                len: 3,
                n_tokens: 264
            }
        ),
        "{err}"
    );
    let err = load_err(with(
        tiny_spm(),
        "tokenizer.ggml.token_type",
        vec![1i32; 300],
    ));
    assert!(
        matches!(
            err,
            TokenizerError::LengthMismatch {
                key: "tokenizer.ggml.token_type",
                len: 300,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn broken_merges_name_the_entry_and_the_problem() {
    let bad = |merge: &str| {
        let mut merges = vec!["h e", "l l"];
        merges.push(merge);
        load_err(with(tiny_bpe(), "tokenizer.ggml.merges", merges))
    };
    let err = bad("hello");
    assert!(
        matches!(
            &err,
            TokenizerError::BadMerge {
                index: 2,
                problem: MergeProblem::SpaceCount { spaces: 0 },
                ..
            }
        ),
        "{err}"
    );
    let err = bad("h e l");
    assert!(
        matches!(
            &err,
            TokenizerError::BadMerge {
                problem: MergeProblem::SpaceCount { spaces: 2 },
                ..
            }
        ),
        "{err}"
    );
    let err = bad("h zz");
    assert!(
        matches!(&err, TokenizerError::BadMerge { problem: MergeProblem::UnknownToken { side: "right", text }, .. } if text == "zz"),
        "{err}"
    );
    let err = bad(" h");
    assert!(
        matches!(
            &err,
            TokenizerError::BadMerge {
                problem: MergeProblem::UnknownToken { side: "left", .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("tokenizer.ggml.merges[2]"),
        "{err}"
    );
}

#[test]
fn duplicate_token_texts_are_refused() {
    let mut tokens: Vec<String> = (b'!'..=b'~').map(|b| char::from(b).to_string()).collect();
    tokens.push("a".into());
    let n = tokens.len();
    let pairs = with(
        with(
            without(tiny_bpe(), "tokenizer.ggml.merges"),
            "tokenizer.ggml.merges",
            Vec::<&str>::new(),
        ),
        "tokenizer.ggml.tokens",
        MetadataValue::string_array(tokens),
    );
    let pairs = with(pairs, "tokenizer.ggml.token_type", vec![1i32; n]);
    let err = load_err(pairs);
    assert!(
        matches!(&err, TokenizerError::DuplicateToken { text, .. } if text == "a"),
        "{err}"
    );
}

#[test]
fn unsupported_model_and_pre_tokenizer_are_named() {
    for model in ["t5", "rwkv", "no-such-model"] {
        let err = load_err(with(tiny_bpe(), "tokenizer.ggml.model", model));
        assert!(
            matches!(&err, TokenizerError::UnsupportedModel { model: m } if m == model),
            "{err}"
        );
    }
    let err = load_err(with(tiny_bpe(), "tokenizer.ggml.pre", "tekken"));
    assert!(
        matches!(&err, TokenizerError::UnsupportedPreTokenizer { pre } if pre == "tekken"),
        "{err}"
    );
    let err = load_err(with(tiny_bpe(), "tokenizer.ggml.pre", "no-such-pre"));
    assert!(
        matches!(&err, TokenizerError::UnknownPreTokenizer { pre } if pre == "no-such-pre"),
        "{err}"
    );
}

#[test]
fn out_of_range_ids_are_errors_in_decode() {
    let tok = load(tiny_bpe()).unwrap();
    let n = tok.n_vocab() as u32;
    for id in [n, n + 1, u32::MAX, i32::MAX as u32] {
        assert!(matches!(
            tok.decode(&[0, id]),
            Err(TokenizerError::TokenOutOfRange { id: got, n_vocab }) if got == id && n_vocab == n as usize
        ));
        assert!(tok.token_to_piece(id, true).is_err());
        assert!(!tok.is_eog(id));
        assert_eq!(tok.token_text(id), None);
    }
}

#[test]
fn out_of_range_special_ids_in_metadata_fall_back_like_llama_cpp() {
    // llama.cpp warns and keeps the default id when the metadata id is out of range.
    let tok = load(with(tiny_spm(), "tokenizer.ggml.bos_token_id", u32::MAX)).unwrap();
    assert_eq!(tok.bos(), Some(1));
    // The BPE default (11) is in range here; a vocabulary smaller than that has no BOS.
    let tok = load(with(
        tiny_bpe(),
        "tokenizer.ggml.bos_token_id",
        1_000_000u32,
    ))
    .unwrap();
    assert_eq!(tok.bos(), Some(11));
    // A negative id does not fit a token id: a typed error, as llama.cpp refuses the type.
    let err = load_err(with(tiny_bpe(), "tokenizer.ggml.eos_token_id", -1i32));
    assert!(
        matches!(err, TokenizerError::Gguf(GgufError::WrongType { .. })),
        "{err}"
    );
}

#[test]
fn add_special_without_the_token_is_an_error() {
    let pairs = with(
        without(
            without(tiny_bpe(), "tokenizer.ggml.bos_token_id"),
            "tokenizer.ggml.pre",
        ),
        "tokenizer.ggml.pre",
        "chatglm-bpe", // llama.cpp drops the BOS default for this pre-tokenizer
    );
    let tok = load(pairs).unwrap().with_add_bos(true);
    assert_eq!(tok.bos(), None);
    assert!(matches!(
        tok.encode("hello", true, false),
        Err(TokenizerError::MissingSpecialToken { which: "BOS" })
    ));
    assert_eq!(tok.encode("hello", false, false).unwrap().len(), 1);
}

#[test]
fn spm_without_byte_tokens_reports_the_byte() {
    let tokens = vec!["<unk>", "<s>", "</s>", "▁", "h", "i"];
    let pairs = with(
        without(
            without(tiny_spm(), "tokenizer.ggml.scores"),
            "tokenizer.ggml.token_type",
        ),
        "tokenizer.ggml.tokens",
        tokens,
    );
    let tok = load(pairs).unwrap();
    assert!(tok.encode("hi", false, false).is_ok());
    assert!(matches!(
        tok.encode("hé", false, false),
        Err(TokenizerError::NoByteToken { byte: 0xC3 })
    ));
}

#[test]
fn hostile_scores_and_types_do_not_panic() {
    let mut scores = vec![f32::NAN; 264];
    scores[263] = f32::INFINITY;
    scores[262] = -0.0;
    let tok = load(with(tiny_spm(), "tokenizer.ggml.scores", scores)).unwrap();
    let ids = tok.encode("hi hi hih", true, true).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), "<s> hi hi hih");
    // Unknown token types are "undefined": kept, never rendered.
    let tok = load(with(
        tiny_spm(),
        "tokenizer.ggml.token_type",
        vec![99i32; 264],
    ))
    .unwrap();
    let ids = tok.encode("hi", false, false).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), "");
}

#[test]
fn hostile_text_does_not_panic() {
    let bpe = load(tiny_bpe()).unwrap();
    let spm = load(tiny_spm()).unwrap();
    let long_ws = " ".repeat(5000) + "x";
    let texts = [
        "",
        "\0",
        "\u{301}\u{301}",
        "\u{FFFD}",
        "<|bos|><|bos|><|eos|",
        "\r\n\r\n  \t",
        "'''s'S",
        long_ws.as_str(),
        "😀🦙\u{10FFFF}",
    ];
    for text in texts {
        for tok in [&bpe, &spm] {
            for (add, parse) in [(false, false), (true, true)] {
                let ids = tok.encode(text, add, parse).unwrap();
                tok.decode_bytes(&ids).unwrap();
            }
        }
    }
}
