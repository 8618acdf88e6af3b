//! Our engine as a protocol worker (`bitnet-bench-engine`), so the bench spawns, loads and
//! times it exactly like a reference runner.
//!
//! A [`Session`] borrows its [`Model`], so each loaded model lives on a thread of its own
//! that owns both and runs the requests sent to it; loading again ends that thread.

use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use bitnet_inference::{Session, SessionConfig};
use bitnet_models::{KvType, Model, Numerics, Reference};
use bitnet_sys::protocol::{EvalOutput, KvType as WireKv, LoadParams, ModelInfo, Timings};
use bitnet_sys::server::{time_bench, Backend, BenchSteps};

use crate::plan::{numerics_name, OURS};

/// A request for the model's thread.
type Job = Box<dyn FnOnce(&mut Session<'_>) + Send>;

/// The thread holding a loaded model and its session.
#[derive(Debug)]
struct Loaded {
    jobs: Sender<Job>,
    thread: JoinHandle<()>,
}

/// [`Backend`] over bitnet-rs: evaluation, reset and the `Bench` request; no tokenizer
/// (the bench sends ids) and no intermediate capture.
#[derive(Debug)]
pub struct EngineBackend {
    /// Whose arithmetic the sessions follow (the KV type comes from each load).
    numerics: Reference,
    /// The fast mode's Q8_0 head ([`bitnet_models::Model::quantize_head`]) instead of the
    /// file's float head.
    quantized_head: bool,
    loaded: Option<Loaded>,
}

impl EngineBackend {
    pub fn new(numerics: Reference, quantized_head: bool) -> EngineBackend {
        EngineBackend {
            numerics,
            quantized_head,
            loaded: None,
        }
    }

    /// Runs `f` on the model's thread and returns its result.
    fn with_session<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session<'_>) -> R + Send + 'static,
    ) -> Result<R, String> {
        let loaded = self.loaded.as_ref().ok_or("no model loaded")?;
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |s| {
            let _ = tx.send(f(s));
        });
        let gone = "the model's thread has ended (it panicked; see stderr)";
        loaded.jobs.send(job).map_err(|_| gone)?;
        rx.recv().map_err(|_| gone.to_string())
    }

    fn unload(&mut self) {
        if let Some(l) = self.loaded.take() {
            // Closing the queue ends the thread's loop.
            drop(l.jobs);
            let _ = l.thread.join();
        }
    }
}

impl Drop for EngineBackend {
    fn drop(&mut self) {
        self.unload();
    }
}

fn kv_type(params: &LoadParams) -> Result<KvType, String> {
    match (params.type_k, params.type_v) {
        (WireKv::F16, WireKv::F16) => Ok(KvType::F16),
        (WireKv::F32, WireKv::F32) => Ok(KvType::F32),
        (k, v) => Err(format!(
            "{OURS} keeps K and V in one type; asked for K {k:?} and V {v:?}"
        )),
    }
}

fn ids(tokens: &[i32]) -> Result<Vec<u32>, String> {
    tokens
        .iter()
        .map(|&t| u32::try_from(t).map_err(|_| format!("negative token id {t}")))
        .collect()
}

fn describe(model: &Model) -> String {
    let c = model.config();
    format!(
        "{OURS}: {} with {} layers, n_embd {}, n_ff {}, {} heads / {} KV heads, vocab {}",
        c.arch.name(),
        c.n_layer,
        c.n_embd,
        c.n_ff,
        c.n_head,
        c.n_head_kv,
        c.n_vocab
    )
}

/// Loads the model and creates its session on the calling thread, reports the result
/// through `ready`, then serves `jobs` until the queue closes.
fn serve_model(
    params: LoadParams,
    numerics: Numerics,
    quantized_head: bool,
    ready: Sender<Result<ModelInfo, String>>,
    jobs: mpsc::Receiver<Job>,
) {
    let loaded = Model::load(&params.model_path).and_then(|mut m| {
        if quantized_head {
            m.quantize_head()?;
        }
        Ok(m)
    });
    let model = match loaded {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "{OURS} could not load {}: {e}",
                params.model_path
            )));
            return;
        }
    };
    let config = SessionConfig {
        n_ctx: params.n_ctx as usize,
        n_batch: params.n_batch as usize,
        numerics,
        threads: Some(params.n_threads as usize),
    };
    let mut session = match Session::new(&model, &config) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("{OURS} could not create a session: {e}")));
            return;
        }
    };
    let c = model.config();
    let token = |t: Option<u32>| t.and_then(|t| i32::try_from(t).ok()).unwrap_or(-1);
    let info = ModelInfo {
        n_vocab: c.n_vocab as u32,
        n_ctx: session.n_ctx() as u32,
        bos: token(c.bos_token_id),
        eos: token(c.eos_token_id),
        description: describe(&model),
    };
    if ready.send(Ok(info)).is_err() {
        return;
    }
    for job in jobs {
        job(&mut session);
    }
}

impl Backend for EngineBackend {
    fn version(&self) -> String {
        format!(
            "{OURS} {} ({} numerics{})",
            env!("CARGO_PKG_VERSION"),
            numerics_name(self.numerics),
            if self.quantized_head {
                ", Q8_0 head"
            } else {
                ""
            }
        )
    }

    fn load(&mut self, params: &LoadParams) -> Result<ModelInfo, String> {
        self.unload();
        if params.vocab_only {
            return Err(format!("{OURS}'s bench worker loads whole models only"));
        }
        if !params.capture.is_empty() {
            return Err(format!(
                "{OURS}'s bench worker does not capture intermediates"
            ));
        }
        if params.n_ctx == 0 || params.n_batch == 0 || params.n_threads == 0 {
            return Err("n_ctx, n_batch and n_threads must be positive".into());
        }
        let numerics = Numerics {
            kv_type: kv_type(params)?,
            ..Numerics::for_reference(self.numerics)
        };
        let (ready_tx, ready) = mpsc::channel();
        let (jobs, jobs_rx) = mpsc::channel();
        let params = params.clone();
        let quantized_head = self.quantized_head;
        let thread = std::thread::Builder::new()
            .name("bitnet-rs model".into())
            .spawn(move || serve_model(params, numerics, quantized_head, ready_tx, jobs_rx))
            .map_err(|e| format!("could not start the model's thread: {e}"))?;
        let info = ready
            .recv()
            .map_err(|_| "the model's thread ended while loading (it panicked; see stderr)")?;
        self.loaded = Some(Loaded { jobs, thread });
        if info.is_err() {
            self.unload();
        }
        info
    }

    fn tokenize(&mut self, _: &str, _: bool, _: bool) -> Result<Vec<i32>, String> {
        Err(format!(
            "{OURS}'s bench worker takes token ids; tokenize is unsupported"
        ))
    }

    fn detokenize(&mut self, _: &[i32]) -> Result<Vec<u8>, String> {
        Err(format!(
            "{OURS}'s bench worker takes token ids; detokenize is unsupported"
        ))
    }

    fn eval(&mut self, tokens: &[i32], n_past: u32) -> Result<EvalOutput, String> {
        let tokens = ids(tokens)?;
        self.with_session(move |s| {
            if n_past as usize > s.n_past() {
                return Err(format!(
                    "n_past {n_past} is beyond the {} cached positions",
                    s.n_past()
                ));
            }
            s.truncate(n_past as usize).map_err(|e| e.to_string())?;
            let logits = s.eval(&tokens).map_err(|e| e.to_string())?;
            Ok(EvalOutput {
                n_vocab: s.n_vocab() as u32,
                logits,
                captured: Vec::new(),
            })
        })?
    }

    fn reset(&mut self) -> Result<(), String> {
        self.with_session(|s| s.reset())
    }

    fn bench(&mut self, prompt: &[i32], n_decode: u32) -> Result<Timings, String> {
        let prompt = prompt.to_vec();
        self.with_session(move |s| time_bench(&mut Steps(s), &prompt, n_decode))?
    }
}

/// The `Bench` steps over a session: [`Session::eval_last`] for the prompt (it splits by
/// `n_batch` and runs the head for the last position only) and [`Session::decode`].
struct Steps<'a, 'm>(&'a mut Session<'m>);

impl BenchSteps for Steps<'_, '_> {
    fn clear(&mut self) -> Result<(), String> {
        self.0.reset();
        Ok(())
    }

    fn prefill(&mut self, prompt: &[i32]) -> Result<&[f32], String> {
        let prompt = ids(prompt)?;
        self.0.eval_last(&prompt).map_err(|e| e.to_string())
    }

    fn step(&mut self, token: i32) -> Result<&[f32], String> {
        let token = u32::try_from(token).map_err(|_| format!("negative token id {token}"))?;
        self.0.decode(token).map_err(|e| e.to_string())
    }
}
