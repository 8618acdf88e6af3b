//! Prefill and decode throughput of a GGUF model:
//! `cargo run --release -p bitnet-inference --example throughput -- model.gguf [n_prompt] [n_decode]`.
//! Token ids are synthetic (the engine takes ids; tokenization is not measured).

use std::time::Instant;

use bitnet_inference::{GenerateOptions, Session, SessionConfig};
use bitnet_models::Model;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: throughput MODEL.gguf [n_prompt] [n_decode]")?;
    let n_prompt: usize = args.next().map_or(Ok(128), |s| s.parse())?;
    let n_decode: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let model = Model::load(&path)?;
    let n_vocab = model.config().n_vocab as u32;
    let prompt: Vec<u32> = (0..n_prompt as u32)
        .map(|i| (i * 7919 + 13) % n_vocab)
        .collect();
    let mut session = Session::new(&model, &SessionConfig::new(n_prompt + n_decode + 1))?;

    let t = Instant::now();
    session.eval_last(&prompt)?;
    let prefill = t.elapsed().as_secs_f64();
    session.reset();
    let mut opts = GenerateOptions::greedy(n_decode);
    opts.stop_at_eos = false;
    let t = Instant::now();
    let gen = session.generate(&prompt, &opts)?;
    let total = t.elapsed().as_secs_f64();
    let decode = total - prefill;
    println!(
        "{path}: prefill {n_prompt} tokens {:.1} tok/s, decode {} tokens {:.1} tok/s (threads: {})",
        n_prompt as f64 / prefill,
        gen.tokens.len(),
        (gen.tokens.len() - 1) as f64 / decode,
        std::env::var(bitnet_inference::THREADS_ENV)
            .unwrap_or_else(|_| rayon::current_num_threads().to_string())
    );
    Ok(())
}
