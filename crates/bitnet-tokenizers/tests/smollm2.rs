//! A real model's tokenizer: SmolLM2-135M-Instruct (`gpt2` + `smollm` pre-tokenizer), the
//! small model the engine's end-to-end tests run.

mod common;

use bitnet_tokenizers::{PreTokenizer, Tokenizer};
use common::smollm2_path;

#[test]
fn smollm2_tokenizer_loads_and_round_trips() {
    let tok = Tokenizer::from_gguf(smollm2_path()).unwrap();
    assert_eq!(tok.pre_tokenizer(), Some(PreTokenizer::StarCoder));
    assert_eq!(tok.n_vocab(), 49_152);
    // The file sets add_bos_token = false; BOS/EOS are the ChatML markers.
    assert!(!tok.add_bos());
    assert_eq!(tok.token_text(1), Some("<|im_start|>"));
    assert_eq!(tok.token_text(2), Some("<|im_end|>"));

    let prompt = "The capital of France is";
    let ids = tok.encode(prompt, true, false).unwrap();
    let pieces: Vec<&str> = ids.iter().map(|&id| tok.token_text(id).unwrap()).collect();
    assert_eq!(pieces, ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]);
    assert_eq!(tok.decode(&ids).unwrap(), prompt);

    let chat = "<|im_start|>user\nHi<|im_end|>";
    let ids = tok.encode(chat, false, true).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert!(tok.is_eog(2));
    assert_eq!(tok.decode(&ids).unwrap(), chat);
}
