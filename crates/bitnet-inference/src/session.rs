//! Sessions: a model plus its KV cache, evaluated batch-wise or token by token.

use std::path::Path;

use bitnet_models::{CaptureFn, Logits, Model, Numerics, State};

use crate::sampling::{Sampler, SamplingParams};
use crate::InferenceError;

/// Environment variable giving the number of worker threads (else `RAYON_NUM_THREADS`, the
/// variable users of rayon-based engines know, else every CPU). Results never depend on it.
pub const THREADS_ENV: &str = "BITNET_THREADS";

/// Fallback thread-count variable, read when [`THREADS_ENV`] is unset.
pub const RAYON_THREADS_ENV: &str = "RAYON_NUM_THREADS";

/// How a session is created.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionConfig {
    /// Positions the KV cache holds.
    pub n_ctx: usize,
    /// Largest batch of one forward pass; longer prompts are split (results are identical
    /// either way).
    pub n_batch: usize,
    /// Which reference's arithmetic to follow (KV type, ...).
    pub numerics: Numerics,
    /// Threads of the session's pool; `None` reads [`THREADS_ENV`], then
    /// `RAYON_THREADS_ENV`, then uses every CPU.
    pub threads: Option<usize>,
}

impl SessionConfig {
    /// `n_ctx` positions, batches of up to 512, upstream llama.cpp numerics.
    pub fn new(n_ctx: usize) -> SessionConfig {
        SessionConfig {
            n_ctx,
            n_batch: 512,
            numerics: Numerics::default(),
            threads: None,
        }
    }
}

/// When generation stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop after emitting the model's EOS token (`tokenizer.ggml.eos_token_id`).
    pub stop_at_eos: bool,
}

impl GenerateOptions {
    /// Greedy decoding of up to `max_new_tokens`, stopping at EOS.
    pub fn greedy(max_new_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens,
            sampling: SamplingParams::greedy(),
            stop_at_eos: true,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The model emitted EOS (included in the tokens).
    Eos,
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The KV cache is full.
    ContextFull,
}

/// The result of [`Session::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated ids, not including the prompt.
    pub tokens: Vec<u32>,
    pub stop: StopReason,
}

/// A model with its run state (KV cache, scratch, thread pool).
#[derive(Debug)]
pub struct Session<'m> {
    model: &'m Model,
    state: State,
}

impl<'m> Session<'m> {
    /// Allocates the KV cache and scratch for `config`.
    pub fn new(model: &'m Model, config: &SessionConfig) -> Result<Session<'m>, InferenceError> {
        let threads = match config.threads {
            Some(n) => n,
            None => threads_from_env()?,
        };
        if threads == 0 {
            return Err(InferenceError::InvalidArgument(
                "thread count must be positive".into(),
            ));
        }
        let state = model.new_state(config.n_ctx, config.n_batch, config.numerics, threads)?;
        Ok(Session { model, state })
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Positions in the KV cache.
    pub fn n_past(&self) -> usize {
        self.state.n_past()
    }

    pub fn n_ctx(&self) -> usize {
        self.state.n_ctx()
    }

    /// Vocabulary size (length of one logits row).
    pub fn n_vocab(&self) -> usize {
        self.model.config().n_vocab
    }

    /// Clears the KV cache.
    pub fn reset(&mut self) {
        self.state.reset();
    }

    /// Keeps the first `n_past` positions of the KV cache.
    pub fn truncate(&mut self, n_past: usize) -> Result<(), InferenceError> {
        Ok(self.state.truncate(n_past)?)
    }

    /// Refuses an empty batch or one that would not fit in the context, before any of it
    /// is evaluated.
    fn check_fits(&self, n: usize) -> Result<(), InferenceError> {
        if n == 0 {
            return Err(InferenceError::InvalidArgument("eval of no tokens".into()));
        }
        let (start, n_ctx) = (self.n_past(), self.n_ctx());
        if start + n > n_ctx {
            return Err(bitnet_models::ModelError::ContextOverflow {
                start,
                end: start + n,
                n_ctx,
            }
            .into());
        }
        Ok(())
    }

    /// Evaluates `tokens` after the cached positions and returns the logits of every
    /// position, row-major `(tokens.len(), n_vocab)`.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>, InferenceError> {
        self.eval_with_capture(tokens, None)
    }

    /// [`Session::eval`] calling `hook` with every named intermediate (see
    /// [`bitnet_models::CaptureFn`]); batches longer than `n_batch` call it once per chunk.
    pub fn eval_with_capture(
        &mut self,
        tokens: &[u32],
        mut hook: Option<&mut CaptureFn<'_>>,
    ) -> Result<Vec<f32>, InferenceError> {
        self.check_fits(tokens.len())?;
        let nv = self.n_vocab();
        let mut out = Vec::with_capacity(tokens.len() * nv);
        for chunk in tokens.chunks(self.state.n_batch()) {
            let h = hook.as_deref_mut();
            let logits = self.model.forward(&mut self.state, chunk, Logits::All, h)?;
            out.extend_from_slice(logits);
        }
        Ok(out)
    }

    /// Evaluates `tokens` and returns only the last position's logits (prefill for
    /// generation; skips the output head for the other positions). Allocation-free.
    pub fn eval_last(&mut self, tokens: &[u32]) -> Result<&[f32], InferenceError> {
        self.check_fits(tokens.len())?;
        let n_batch = self.state.n_batch();
        // Every chunk but the one holding the last token; the KV cache is all they leave.
        let split = (tokens.len() - 1) / n_batch * n_batch;
        for chunk in tokens[..split].chunks(n_batch) {
            self.model
                .forward(&mut self.state, chunk, Logits::Last, None)?;
        }
        Ok(self
            .model
            .forward(&mut self.state, &tokens[split..], Logits::Last, None)?)
    }

    /// Decodes one token (incremental, reusing the KV cache) and returns its logits.
    pub fn decode(&mut self, token: u32) -> Result<&[f32], InferenceError> {
        self.eval_last(&[token])
    }

    /// Generates after `prompt` (evaluated from the current cache position): samples,
    /// feeds back, and stops at EOS, at `max_new_tokens` or when the context is full.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Generation, InferenceError> {
        self.generate_with(prompt, opts, |_, _| {})
    }

    /// [`Session::generate`], calling `on_token(token, logits)` with each generated token
    /// and the logits it was sampled from (for streaming, or to inspect every step).
    pub fn generate_with(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32, &[f32]),
    ) -> Result<Generation, InferenceError> {
        let mut sampler = Sampler::new(opts.sampling)?;
        let eos = self.model.config().eos_token_id;
        let mut tokens = Vec::with_capacity(opts.max_new_tokens);
        if opts.max_new_tokens == 0 {
            return Ok(Generation {
                tokens,
                stop: StopReason::MaxTokens,
            });
        }
        let logits = self.eval_last(prompt)?;
        let mut next = sampler.sample(logits)?;
        on_token(next, logits);
        loop {
            tokens.push(next);
            if opts.stop_at_eos && Some(next) == eos {
                return Ok(Generation {
                    tokens,
                    stop: StopReason::Eos,
                });
            }
            if tokens.len() >= opts.max_new_tokens {
                return Ok(Generation {
                    tokens,
                    stop: StopReason::MaxTokens,
                });
            }
            if self.n_past() >= self.n_ctx() {
                return Ok(Generation {
                    tokens,
                    stop: StopReason::ContextFull,
                });
            }
            let logits = self.decode(next)?;
            next = sampler.sample(logits)?;
            on_token(next, logits);
        }
    }
}

/// Loads `model_path` and returns the logits of every position of `tokens` evaluated as
/// one batch from an empty cache (context = `tokens.len()`), row-major
/// `(tokens.len(), n_vocab)`.
pub fn eval_logits_once(
    model_path: impl AsRef<Path>,
    tokens: &[u32],
) -> Result<Vec<f32>, InferenceError> {
    let model = Model::load(model_path)?;
    let n = tokens.len().max(1);
    let mut config = SessionConfig::new(n);
    config.n_batch = n;
    Session::new(&model, &config)?.eval(tokens)
}

/// The thread count from [`THREADS_ENV`], else [`RAYON_THREADS_ENV`], else every CPU.
fn threads_from_env() -> Result<usize, InferenceError> {
    for var in [THREADS_ENV, RAYON_THREADS_ENV] {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => {
                return v.trim().parse::<usize>().map_err(|_| {
                    InferenceError::InvalidArgument(format!("{var}={v:?} is not a count"))
                })
            }
            _ => {}
        }
    }
    Ok(std::thread::available_parallelism().map_or(1, usize::from))
}
