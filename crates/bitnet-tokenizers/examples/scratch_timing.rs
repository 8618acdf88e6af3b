use std::time::Instant;
fn main() {
    let dir = std::env::var("VOCAB").unwrap();
    for name in ["llama-bpe", "gemma-4", "command-r", "llama-spm", "bert-bge", "deepseek-llm", "falcon"] {
        let t = Instant::now();
        let tok = bitnet_tokenizers::Tokenizer::from_gguf(format!("{dir}/ggml-vocab-{name}.gguf")).unwrap();
        let load = t.elapsed();
        let inp = std::fs::read_to_string(format!("{dir}/ggml-vocab-{name}.gguf.inp")).unwrap();
        let mut text = String::new();
        while text.len() < 10_000 { text.push_str(&inp); }
        let text: String = text.chars().take(10_000).collect();
        let t = Instant::now();
        let ids = tok.encode(&text, false, false).unwrap();
        let enc = t.elapsed();
        let t = Instant::now();
        let ids2 = tok.encode(&text, false, true).unwrap();
        let enc2 = t.elapsed();
        let t = Instant::now();
        let _ = tok.decode(&ids).unwrap();
        let dec = t.elapsed();
        println!("{name:<14} load {load:>10.2?} encode {enc:>10.2?} ({} ids) parse_special {enc2:>10.2?} ({}) decode {dec:>10.2?}", ids.len(), ids2.len());
    }
}
