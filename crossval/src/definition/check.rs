//! Every engine against the definition: our engine under each reference's numerics, and
//! each reference, on one token sequence per model, summarised as rows of the definition
//! table (`target/crossval/definition.json`).
//!
//! The sequence is a prompt evaluated as one batch, then a fixed continuation decoded one
//! token at a time (teacher-forced with the same tokens on every side), so the batched and
//! the incremental (KV cache) paths are both compared. The definition evaluates all of it
//! at once with a causal mask.

use std::path::{Path, PathBuf};

use bitnet_inference::{Session, SessionConfig as EngineConfig};
use bitnet_models::Model;
use bitnet_sys::{RefError, RefSession, Reference, SessionConfig};
use bitnet_tokenizers::Tokenizer;
use serde::Serialize;

use bitnet_gguf::{GgmlType, GgufFile};

use super::{bound_for, kld_stats, Activations, Arch, DefinitionBound, DefinitionModel, KldStats};
use crate::cases::{ModelSource, SHORT};
use crate::runner::{numerics_for, ModelFileError};

/// The prompt, evaluated as one batch (with BOS where the vocabulary adds it).
pub const PROMPT: &str = SHORT.text;

/// The continuation, decoded one token at a time after the prompt.
pub const CONTINUATION: &str =
    " Paris, which is also its largest city. The Seine runs through the middle of it.";

/// How many tokens of [`CONTINUATION`] are decoded.
pub const N_CONTINUATION: usize = 16;

/// The tokens every engine of a model evaluates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sequence {
    pub prompt: Vec<u32>,
    pub continuation: Vec<u32>,
}

impl Sequence {
    /// [`PROMPT`] and the first [`N_CONTINUATION`] tokens of [`CONTINUATION`] in this
    /// model's vocabulary.
    pub fn of(tokenizer: &Tokenizer) -> Result<Sequence, String> {
        let prompt = tokenizer
            .encode(PROMPT, true, false)
            .map_err(|e| format!("tokenizing the prompt: {e}"))?;
        let mut continuation = tokenizer
            .encode(CONTINUATION, false, false)
            .map_err(|e| format!("tokenizing the continuation: {e}"))?;
        continuation.truncate(N_CONTINUATION);
        if prompt.is_empty() || continuation.len() < N_CONTINUATION {
            return Err(format!(
                "the sequence needs a prompt and {N_CONTINUATION} continuation tokens, got {} \
                 and {}",
                prompt.len(),
                continuation.len()
            ));
        }
        Ok(Sequence {
            prompt,
            continuation,
        })
    }

    /// Prompt then continuation: position `i` holds token `i`.
    pub fn tokens(&self) -> Vec<u32> {
        [self.prompt.as_slice(), &self.continuation].concat()
    }
}

/// Who computed a row's logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// bitnet-rs under this reference's numerics (`bitnet_models::Numerics::for_reference`).
    BitnetRs(Reference),
    /// The reference itself, with the parity suite's deterministic settings.
    Reference(Reference),
}

impl Engine {
    /// `bitnet-rs (llama.cpp numerics)` or `llama.cpp`.
    pub fn name(self) -> String {
        match self {
            Engine::BitnetRs(r) => format!("bitnet-rs ({} numerics)", r.name()),
            Engine::Reference(r) => r.name().to_owned(),
        }
    }

    pub fn reference(self) -> Reference {
        match self {
            Engine::BitnetRs(r) | Engine::Reference(r) => r,
        }
    }
}

/// Why an engine's logits (or a model file) could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The reference's runner is missing or could not start (`CROSSVAL_ALLOW_CPP_FAIL=1`
    /// may turn this into a visible skip).
    #[error("{reference} is unavailable: {source}")]
    Unavailable {
        reference: Reference,
        #[source]
        source: RefError,
    },
    /// Anything else, with the side and the cause in the message.
    #[error("{0}")]
    Failed(String),
}

impl CheckError {
    fn from_ref(reference: Reference, e: RefError) -> CheckError {
        match e {
            RefError::RunnerMissing { .. } | RefError::Spawn { .. } => CheckError::Unavailable {
                reference,
                source: e,
            },
            other => CheckError::Failed(format!("{reference}: {other}")),
        }
    }
}

/// Our engine's logits on `seq` under `numerics`'s numerics: the prompt in one batch, then
/// the continuation one token at a time. Shape: (positions, n_vocab).
pub fn ours(
    model: &Model,
    numerics: Reference,
    seq: &Sequence,
    n_ctx: u32,
) -> Result<Vec<Vec<f32>>, CheckError> {
    let err = |e: bitnet_inference::InferenceError| CheckError::Failed(format!("bitnet-rs: {e}"));
    let mut config = EngineConfig::new(n_ctx as usize);
    config.numerics = numerics_for(numerics);
    let mut session = Session::new(model, &config).map_err(err)?;
    let n_vocab = session.n_vocab();
    let flat = session.eval(&seq.prompt).map_err(err)?;
    let mut rows: Vec<Vec<f32>> = flat.chunks_exact(n_vocab).map(<[f32]>::to_vec).collect();
    for &t in &seq.continuation {
        let row = session.decode(t).map_err(err)?;
        rows.push(row.to_vec());
    }
    Ok(rows)
}

/// `reference`'s logits on `seq` for the model at `path`, evaluated as [`ours`] does (the
/// reference's own tokenization is not consulted: every side gets the same ids).
/// Shape: (positions, n_vocab).
pub fn theirs(
    reference: Reference,
    path: &Path,
    seq: &Sequence,
    n_ctx: u32,
) -> Result<Vec<Vec<f32>>, CheckError> {
    let err = |e| CheckError::from_ref(reference, e);
    let config = SessionConfig::deterministic(reference, n_ctx);
    let mut session = RefSession::load(reference, path, &config).map_err(err)?;
    let mut rows = session.eval_and_get_logits(&seq.prompt, 0).map_err(err)?;
    for (i, &t) in seq.continuation.iter().enumerate() {
        let pos = (seq.prompt.len() + i) as u32;
        rows.append(&mut session.eval_and_get_logits(&[t], pos).map_err(err)?);
    }
    Ok(rows)
}

/// Whether a row is inside its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// No bound has been measured for the model's (arch, format, variant).
    Unbounded,
}

/// One engine × model × activation variant of the definition table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub engine: String,
    /// The reference whose numerics the row follows (the reference itself, or ours under
    /// its numerics).
    pub reference: &'static str,
    /// `true` for a reference's own logits, `false` for bitnet-rs.
    pub is_reference: bool,
    pub model: String,
    pub arch: Arch,
    pub format: String,
    pub activations: Activations,
    #[serde(flatten)]
    pub stats: KldStats,
    pub bound: Option<DefinitionBound>,
    pub verdict: Verdict,
    /// Why the row failed, naming the engine at fault.
    pub message: Option<String>,
}

impl Row {
    /// The row of `engine` on model `model_id` (of `arch`, block weights `weight_type`)
    /// under `act`, judged by its bound.
    pub fn new(
        engine: Engine,
        model_id: &str,
        (arch, weight_type): (Arch, GgmlType),
        act: Activations,
        stats: KldStats,
    ) -> Row {
        let bound = bound_for(arch, weight_type, act);
        let format = weight_type.name().to_owned();
        let (verdict, message) = match bound.map(|b| b.exceeded(&stats)) {
            None => (Verdict::Unbounded, None),
            Some(None) => (Verdict::Pass, None),
            Some(Some(why)) => {
                let who = match engine {
                    Engine::Reference(r) => format!(
                        "reference {} disagrees with the BitNet definition (not a bitnet-rs \
                         failure)",
                        r.name()
                    ),
                    Engine::BitnetRs(r) => format!(
                        "bitnet-rs (under {} numerics) disagrees with the BitNet definition",
                        r.name()
                    ),
                };
                let msg = format!(
                    "{who}: model {model_id} ({} {format}), {} activations: {why}",
                    arch.name(),
                    act.name()
                );
                (Verdict::Fail, Some(msg))
            }
        };
        Row {
            engine: engine.name(),
            reference: engine.reference().name(),
            is_reference: matches!(engine, Engine::Reference(_)),
            model: model_id.to_owned(),
            arch,
            format,
            activations: act,
            stats,
            bound,
            verdict,
            message,
        }
    }
}

/// The rows as a fixed-width table, one line each, with a header.
pub fn table(rows: &[Row]) -> String {
    let mut out = header();
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// The table's column names.
fn header() -> String {
    format!(
        "{:<32} {:<52} {:<11} {:>4} {:>10} {:>10} {:>10} {:>6} {:>6} {:>10} {:>10} {}",
        "engine",
        "model",
        "activations",
        "pos",
        "mean KL",
        "p99 KL",
        "max KL",
        "top1%",
        "top5%",
        "bound mean",
        "bound max",
        "verdict"
    )
}

/// One row of the table.
fn line(r: &Row) -> String {
    let (bm, bx) = r
        .bound
        .map_or((f64::NAN, f64::NAN), |b| (b.mean_kl, b.max_kl));
    format!(
        "{:<32} {:<52} {:<11} {:>4} {:>10.3e} {:>10.3e} {:>10.3e} {:>6.1} {:>6.1} {:>10.1e} \
         {:>10.1e} {:?}",
        r.engine,
        r.model,
        r.activations.name(),
        r.stats.positions,
        r.stats.mean_kl,
        r.stats.p99_kl,
        r.stats.max_kl,
        100.0 * r.stats.top1_same,
        100.0 * r.stats.top5_overlap,
        bm,
        bx,
        r.verdict
    )
}

/// One model to check against the definition.
#[derive(Debug, Clone)]
pub struct ModelCheck {
    /// How rows name the model.
    pub id: String,
    /// The file the definition and our engine read.
    pub path: PathBuf,
    /// Each reference that runs the model, with the file it runs (the same file, or the
    /// reference's own conversion of it: the ternary weights are the same).
    pub references: Vec<(Reference, PathBuf)>,
    /// The sessions' context (built-ins: [`crate::cases::N_CTX`]; a user model: its own, at most that).
    pub n_ctx: u32,
}

/// What [`check_model`] produced: the rows, and the engines it skipped (a reference that is
/// missing while `CROSSVAL_ALLOW_CPP_FAIL=1` allows it), each with its reason.
#[derive(Debug, Default)]
pub struct Checked {
    pub rows: Vec<Row>,
    pub skipped: Vec<String>,
}

/// Every engine on one model against the definition: the definition's logits under both
/// activation variants, then our engine under each reference's numerics and each reference,
/// on [`Sequence::of`] the model's vocabulary. A missing reference is skipped when
/// `skip_allowed`, else it is an error like any other, naming the model and the engine.
pub fn check_model(check: &ModelCheck, skip_allowed: bool) -> Result<Checked, String> {
    let id = &check.id;
    let started = std::time::Instant::now();
    let def = DefinitionModel::load(&check.path).map_err(|e| format!("{id}: definition: {e}"))?;
    let tokenizer =
        Tokenizer::from_gguf(&check.path).map_err(|e| format!("{id}: tokenizer: {e}"))?;
    let seq = Sequence::of(&tokenizer).map_err(|e| format!("{id}: {e}"))?;
    let tokens = seq.tokens();
    if tokens.len() > check.n_ctx as usize {
        return Err(format!(
            "{id}: the definition sequence has {} positions, past the context of {}",
            tokens.len(),
            check.n_ctx
        ));
    }
    let mut definition = Vec::new();
    for act in Activations::ALL {
        let logits = def
            .logits(&tokens, act)
            .map_err(|e| format!("{id}: definition ({}): {e}", act.name()))?;
        definition.push((act, logits));
    }
    let arch = def.arch();
    drop(def);
    let def_time = started.elapsed();
    // Our engine runs the file each reference runs (a reference's conversion has its own
    // activation quantizer); each file's block format picks the bound.
    let mut models: Vec<(&Path, Model, GgmlType)> = Vec::new();
    let mut out = Checked::default();
    for (r, path) in &check.references {
        let i = match models.iter().position(|(p, ..)| p == path) {
            Some(i) => i,
            None => {
                let model = Model::load(path).map_err(|e| format!("{id}: bitnet-rs: {e}"))?;
                let file = GgufFile::open(path).map_err(|e| format!("{id}: {e}"))?;
                let format = file.tensor("blk.0.attn_q.weight").map(|t| t.ggml_type);
                let format = format.ok_or_else(|| {
                    format!("{id}: {} has no blk.0.attn_q.weight", path.display())
                })?;
                models.push((path, model, format));
                models.len() - 1
            }
        };
        let (_, model, format) = &models[i];
        let facts = (arch, *format);
        for engine in [Engine::BitnetRs(*r), Engine::Reference(*r)] {
            let logits = match engine {
                Engine::BitnetRs(r) => ours(model, r, &seq, check.n_ctx),
                Engine::Reference(r) => theirs(r, path, &seq, check.n_ctx),
            };
            let logits = match logits {
                Ok(l) => l,
                Err(e @ CheckError::Unavailable { .. }) if skip_allowed => {
                    out.skipped.push(format!("{id} / {}: {e}", engine.name()));
                    continue;
                }
                Err(e) => return Err(format!("{id} / {}: {e}", engine.name())),
            };
            for (act, d) in &definition {
                let stats =
                    kld_stats(d, &logits).map_err(|e| format!("{id} / {}: {e}", engine.name()))?;
                out.rows.push(Row::new(engine, id, facts, *act, stats));
            }
        }
    }
    tracing::info!(
        "{id}: {} positions, definition {:.1} s, total {:.1} s",
        tokens.len(),
        def_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Records the rows as side table `name` of the reports (`crate::report::record_table_row`:
/// `<report dir>/<name>.{json,txt}`, repeated in `summary.txt` and `report.html`): the
/// built-in models' table is `definition`, the user models' `definition-user`.
pub fn record_rows(name: &str, rows: &[Row]) -> std::io::Result<()> {
    for r in rows {
        let key = format!("{}__{}__{}", r.model, r.engine, r.activations.name());
        crate::report::record_table_row(name, &header(), &key, r, line(r))?;
    }
    Ok(())
}

/// The file of a built-in model source ([`crate::runner::model_file`]: fixtures generated,
/// conversions cached as the parity suite caches them).
pub fn model_path(source: &ModelSource) -> Result<PathBuf, CheckError> {
    crate::runner::model_file(source).map_err(|e| match e {
        ModelFileError::ReferenceUnavailable { reference, source } => {
            CheckError::Unavailable { reference, source }
        }
        ModelFileError::Failed(m) => CheckError::Failed(m),
    })
}
