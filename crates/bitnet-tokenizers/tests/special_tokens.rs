//! Special tokens and BOS/EOS: parsing control-token text on request, user-defined tokens
//! always, and `add_bos`/`add_eos` from metadata, per-type defaults and overrides.

mod common;

use bitnet_tokenizers::{DecodeOptions, PreTokenizer, TokenAttr, Tokenizer, TokenizerKind};
use std::sync::Arc;

use common::{gguf, tiny_bpe, tiny_spm, tokenizer, with, without};

fn real(name: &str) -> Arc<Tokenizer> {
    tokenizer(name).unwrap_or_else(|e| panic!("{e}"))
}

fn llama_bpe() -> Arc<Tokenizer> {
    real("llama-bpe")
}

#[test]
fn llama_bpe_is_the_bitnet_2b_4t_tokenizer() {
    let tok = llama_bpe();
    assert_eq!(tok.kind(), TokenizerKind::Bpe);
    assert_eq!(tok.pre_tokenizer(), Some(PreTokenizer::Llama3));
    assert_eq!(tok.n_vocab(), 128_256);
    assert_eq!(tok.bos(), Some(128_000));
    assert_eq!(tok.eos(), Some(128_001));
    assert_eq!(tok.token_text(128_000), Some("<|begin_of_text|>"));
    assert_eq!(tok.token_id("<|eot_id|>"), Some(128_009));
    assert_eq!(tok.eot(), Some(128_009));
    assert!(tok.is_eog(128_001) && tok.is_eog(128_009) && !tok.is_eog(128_000));
    assert!(tok
        .token_attr(128_000)
        .unwrap()
        .intersects(TokenAttr::CONTROL));
}

#[test]
fn begin_of_text_is_parsed_only_when_asked() {
    let tok = llama_bpe();
    let text = "<|begin_of_text|>Hello";
    let parsed = tok.encode(text, false, true).unwrap();
    assert_eq!(parsed, [128_000, 9906]);

    let literal = tok.encode(text, false, false).unwrap();
    assert!(!literal.contains(&128_000), "{literal:?}");
    assert!(literal.len() > 2, "{literal:?}");
    assert_eq!(literal.last(), Some(&9906));
    // Both decode back to the same text: one as a control token, one as plain pieces.
    assert_eq!(tok.decode(&parsed).unwrap(), text);
    assert_eq!(tok.decode(&literal).unwrap(), text);
    // Without unparse_special the control token renders as nothing.
    let plain = DecodeOptions {
        unparse_special: false,
        ..DecodeOptions::default()
    };
    assert_eq!(tok.detokenize(&parsed, plain).unwrap(), b"Hello");
    assert_eq!(tok.token_to_piece(128_000, false).unwrap().as_ref(), b"");
    assert_eq!(
        tok.token_to_piece(128_000, true).unwrap().as_ref(),
        b"<|begin_of_text|>"
    );
}

#[test]
fn special_tokens_inside_text_split_it() {
    let tok = llama_bpe();
    let ids = tok
        .encode(
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
            false,
            true,
        )
        .unwrap();
    assert_eq!(ids.first(), Some(&128_006));
    assert!(ids.contains(&128_007));
    assert_eq!(ids.last(), Some(&128_009));
}

#[test]
fn llama_bpe_adds_bos_by_default_from_its_pre_tokenizer() {
    // The file has no add_bos_token key: llama.cpp's default for `llama-bpe` is to add BOS.
    let tok = llama_bpe();
    assert!(tok.add_bos() && !tok.add_eos());
    assert_eq!(tok.encode("Hello", true, false).unwrap(), [128_000, 9906]);
    assert_eq!(tok.encode("Hello", false, false).unwrap(), [9906]);
    assert_eq!(tok.encode("", true, false).unwrap(), [128_000]);
    let tok = Tokenizer::clone(&tok)
        .with_add_bos(false)
        .with_add_eos(true);
    assert_eq!(tok.encode("Hello", true, false).unwrap(), [9906, 128_001]);
    // remove_special drops the BOS/EOS the tokenizer adds.
    let tok = tok.with_add_bos(true);
    let ids = tok.encode("Hello", true, false).unwrap();
    assert_eq!(ids, [128_000, 9906, 128_001]);
    let opts = DecodeOptions {
        remove_special: true,
        unparse_special: true,
    };
    assert_eq!(tok.detokenize(&ids, opts).unwrap(), b"Hello");
}

#[test]
fn spm_and_gpt2_follow_their_metadata() {
    // llama-spm says add_bos_token = true; SPM also prefixes a space.
    let spm = real("llama-spm");
    assert!(spm.add_bos());
    let ids = spm.encode("Hello", true, false).unwrap();
    assert_eq!(ids, [1, 15043]);
    assert_eq!(spm.token_text(15043), Some("▁Hello"));
    // The leading space SPM added is removed again when decoding.
    assert_eq!(spm.decode(&ids[1..]).unwrap(), "Hello");
    // gpt-2 has no add_bos key and its type/pre default is not to add one.
    let gpt2 = real("gpt-2");
    assert!(!gpt2.add_bos());
    assert_eq!(gpt2.encode("Hello", true, false).unwrap(), [15496]);
}

#[test]
fn add_bos_and_eos_metadata_override_the_type_defaults() {
    let spm = |pairs| Tokenizer::from_gguf_file(&gguf(pairs)).unwrap();
    // SPM defaults: BOS yes, EOS no.
    let t = spm(tiny_spm());
    assert!(t.add_bos() && !t.add_eos());
    assert_eq!(t.encode("hi", true, false).unwrap(), [1, 263]);
    let t = spm(with(
        with(tiny_spm(), "tokenizer.ggml.add_bos_token", false),
        "tokenizer.ggml.add_eos_token",
        true,
    ));
    assert_eq!(t.encode("hi", true, false).unwrap(), [263, 2]);
    // add_space_prefix = false: no "▁" before the first word.
    let t = spm(with(tiny_spm(), "tokenizer.ggml.add_space_prefix", false));
    assert_eq!(t.encode("hi", false, false).unwrap(), [260, 261]);

    let bpe = |pairs| Tokenizer::from_gguf_file(&gguf(pairs)).unwrap();
    let bos = 104;
    // gpt-2 pre: no BOS unless the metadata asks.
    assert!(!bpe(tiny_bpe()).add_bos());
    let t = bpe(with(tiny_bpe(), "tokenizer.ggml.add_bos_token", true));
    assert_eq!(t.encode("hello", true, false).unwrap(), [bos, 98]);
    // llama3 pre: BOS by default, unless the metadata says no.
    let llama3 = with(
        without(tiny_bpe(), "tokenizer.ggml.pre"),
        "tokenizer.ggml.pre",
        "llama-bpe",
    );
    assert!(bpe(llama3.clone()).add_bos());
    assert!(!bpe(with(llama3, "tokenizer.ggml.add_bos_token", false)).add_bos());
}

#[test]
fn user_defined_tokens_are_matched_without_parse_special() {
    // deepseek-llm marks single characters like "ø" as user-defined: llama.cpp cuts them
    // out of the text before BPE even when special tokens are not parsed.
    let tok = real("deepseek-llm");
    let oslash = tok.token_id("ø").expect("ø is a token");
    assert!(tok
        .token_attr(oslash)
        .unwrap()
        .intersects(TokenAttr::USER_DEFINED));
    let ids = tok.encode("søster", false, false).unwrap();
    assert!(ids.contains(&oslash), "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), "søster");
}

#[test]
fn phi3_special_tokens_swallow_whitespace_after_them() {
    // llama.cpp sets RSTRIP on Phi-3's special tokens (by model name), so the whitespace
    // after "<|user|>" is dropped.
    let tok = real("phi-3");
    let user = tok.token_id("<|user|>").expect("<|user|> is a token");
    assert!(tok.token_attr(user).unwrap().intersects(TokenAttr::RSTRIP));
    let a = tok.encode("<|user|>\n  Hi", false, true).unwrap();
    let b = tok.encode("<|user|>Hi", false, true).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.first(), Some(&user));
}

#[test]
fn wordpiece_wraps_in_cls_and_sep() {
    let tok = real("bert-bge");
    assert_eq!(tok.kind(), TokenizerKind::Wpm);
    let ids = tok.encode("Hello world", true, false).unwrap();
    assert_eq!(ids.first(), Some(&101));
    assert_eq!(ids.last(), Some(&102));
    assert_eq!(
        tok.encode("Hello world", false, false).unwrap(),
        [7592, 2088]
    );
}

#[test]
fn a_token_can_end_inside_a_utf8_sequence() {
    // SPM byte fallback spells the llama emoji as four byte tokens.
    let tok = real("llama-spm");
    let ids = tok.encode("🦙", false, false).unwrap();
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&id| tok.token_to_piece(id, false).unwrap().into_owned())
        .collect();
    assert!(bytes.ends_with("🦙".as_bytes()), "{bytes:?}");
    let split = ids.len() - 2;
    let head = tok.decode_bytes(&ids[..split]).unwrap();
    let tail = tok.decode_bytes(&ids[split..]).unwrap();
    assert_eq!(
        [head.clone(), tail].concat(),
        tok.decode_bytes(&ids).unwrap()
    );
    // `decode` of the cut-off half replaces the incomplete sequence instead of failing.
    assert!(tok.decode(&ids[..split]).unwrap().ends_with('\u{FFFD}'));
    assert!(std::str::from_utf8(&head).is_err());
}
