//! Inference over [`bitnet_models`]: sessions (batched prefill, incremental decode,
//! `reset`/`truncate`), seeded sampling and generation.
//!
//! ```no_run
//! use bitnet_inference::{GenerateOptions, Session, SessionConfig};
//! use bitnet_models::Model;
//! use bitnet_tokenizers::Tokenizer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::load("model.gguf")?;
//! let tokenizer = Tokenizer::from_gguf("model.gguf")?; // the model's own vocabulary
//! let prompt = tokenizer.encode("The capital of France is", true, false)?;
//! let mut session = Session::new(&model, &SessionConfig::new(256))?;
//! let out = session.generate(&prompt, &GenerateOptions::greedy(16))?;
//! println!("{}", tokenizer.decode(&out.tokens)?);
//! # Ok(()) }
//! ```
//!
//! `examples/generate.rs` streams the text as it is generated (`Session::generate_with`)
//! and reports tokens/s.
//!
//! Determinism: every logit is computed by one thread (threads split matmul rows, never a
//! sum), so results are identical for any thread count (`BITNET_THREADS`, else
//! `RAYON_NUM_THREADS`) and for any batch split. Sampling draws from a seeded SplitMix64
//! stream: [`SamplingParams::from_env`] reads `BITNET_SEED`, and `BITNET_DETERMINISTIC=1`
//! fixes the seed (42) when none is given.

#![forbid(unsafe_code)]

mod error;
mod sampling;
mod session;

pub use error::InferenceError;
pub use sampling::{
    argmax, Rng, Sampler, SamplingParams, DETERMINISTIC_ENV, DETERMINISTIC_SEED, SEED_ENV,
};
pub use session::{
    eval_logits_once, GenerateOptions, Generation, Session, SessionConfig, StopReason, THREADS_ENV,
};
