use std::time::Instant;
fn main() {
    let dir = std::env::var("VOCAB").unwrap();
    for name in ["llama-bpe", "gemma-4", "command-r"] {
        let t = Instant::now();
        let f = bitnet_gguf::GgufFile::open(format!("{dir}/ggml-vocab-{name}.gguf")).unwrap();
        let parse = t.elapsed();
        let t = Instant::now();
        let _tok = bitnet_tokenizers::Tokenizer::from_gguf_file(&f).unwrap();
        let build = t.elapsed();
        println!("{name:<14} gguf parse {parse:>10.2?} build {build:>10.2?}");
    }
}
