//! Inputs that once tokenized differently from llama.cpp, with the ids llama.cpp gives
//! (measured through the reference runners by `crossval/tests/tokenizer_parity.rs`).

mod common;

use bitnet_tokenizers::Tokenizer;
use common::vocab_path;

/// DeepSeek LLM's letter class contains U+212A KELVIN SIGN; an ASCII `K` in its place
/// made the class swallow ``[\]^_`{|}~`` and split `|>` into two tokens.
#[test]
fn deepseek_llm_letter_class_uses_the_kelvin_sign() {
    let tok = Tokenizer::from_gguf(vocab_path("deepseek-llm")).unwrap();
    assert_eq!(tok.encode("|>", false, false).unwrap(), vec![66325]);
}
