//! Runs parity cases: our engine and a reference on the same model and prompt.
//!
//! Every case of one (model, reference, prompt) shares one run of each side: the prompt is
//! evaluated as one batch, then [`MAX_NEW_TOKENS`] greedy tokens are decoded one at a time
//! (the same evaluation order on both sides, since batched and token-by-token logits may
//! legitimately differ in a reference). Cases slice that run by token count and mode.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use bitnet_inference::{Session, SessionConfig as EngineConfig};
use bitnet_models::{Model, Numerics};
use bitnet_sys::{argmax, RefError, RefRunner, RefSession, Reference, SessionConfig};
use bitnet_tokenizers::Tokenizer;
use sha2::{Digest, Sha256};

use crate::cases::{reference_id, Case, Mode, ModelCase, ModelSource, Prompt, MAX_NEW_TOKENS};
use crate::localize::{self, capture_patterns, OpTrace, Tensor};
use crate::logits_compare::{
    compare_per_position_logits_with, position_metrics, top_k, LogitsDivergence, Tolerance, TOP_K,
};
use crate::report::{CaseReport, Status};
use crate::routing::FileFacts;
use crate::tolerance::{self, ChosenTolerance};

mod defaults;
pub use defaults::{axes_settings, run_defaults_case, DefaultsReport};

/// `CROSSVAL_ALLOW_CPP_FAIL=1`: a reference that can't run becomes a visible skip instead
/// of a failure (the only opt-in that turns anything into a skip).
pub const ALLOW_CPP_FAIL_ENV: &str = "CROSSVAL_ALLOW_CPP_FAIL";

/// `BITNET_TRACE=1`: a passing case also re-evaluates its last compared position with
/// capture on and writes the per-op trace (`target/crossval/<case>.trace.json`, and a heat
/// map in the HTML report). Failing cases are always localised.
pub const TRACE_ENV: &str = "BITNET_TRACE";

/// The engine's numerics profile for a reference.
pub fn numerics_for(reference: Reference) -> Numerics {
    Numerics::for_reference(match reference {
        Reference::LlamaCpp => bitnet_models::Reference::LlamaCpp,
        Reference::IkLlamaCpp => bitnet_models::Reference::IkLlamaCpp,
        Reference::BitnetCpp => bitnet_models::Reference::BitnetCpp,
    })
}

/// A loaded model case: the file, our model and tokenizer, and the reference session.
struct Loaded {
    path: PathBuf,
    /// The file's facts (after any conversion: what the reference runs).
    facts: FileFacts,
    tolerance: ChosenTolerance,
    n_ctx: u32,
    model: Model,
    tokenizer: Tokenizer,
    reference: Mutex<RefSession>,
    reference_version: String,
    /// The reference session's runtime settings ([`SessionConfig::describe`]).
    reference_settings: String,
    /// A second reference session capturing [`capture_patterns`], started on the first
    /// localisation.
    capture: Mutex<Option<RefSession>>,
}

/// Both sides' run on one prompt.
struct PromptRun {
    prompt_tokens: Vec<u32>,
    /// Reference logits: prompt positions, then one row per decoded token.
    reference_rows: Vec<Vec<f32>>,
    reference_generated: Vec<u32>,
    /// Ours, fed the reference's tokens.
    forced_rows: Vec<Vec<f32>>,
    /// Ours, greedy on its own tokens.
    free_rows: Vec<Vec<f32>>,
    free_generated: Vec<u32>,
}

type Shared<T> = Arc<OnceLock<Result<Arc<T>, Setup>>>;

fn shared<T>(map: &Mutex<BTreeMap<String, Shared<T>>>, key: &str) -> Shared<T> {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(m.entry(key.to_owned()).or_default())
}

static MODELS: Mutex<BTreeMap<String, Shared<Loaded>>> = Mutex::new(BTreeMap::new());
static RUNS: Mutex<BTreeMap<String, Shared<PromptRun>>> = Mutex::new(BTreeMap::new());
/// Keys of [`RUNS`] in the order they were first asked for.
static RUN_ORDER: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// How many prompt runs stay cached: the cases of one run (3 token counts × 2 modes) are
/// consecutive in the matrix, and two run at a time, so 12 is every run still in use (one
/// model's six prompts per thread); a run of a 128k-vocabulary model on the long prompt
/// holds ~0.4 GB of logits, and keeping all of them took the suite past 14 GB.
const MAX_CACHED_RUNS: usize = 12;

/// The cached run of `key` (computed by `make` on first use); the oldest runs beyond
/// [`MAX_CACHED_RUNS`] are dropped (recomputed if asked for again).
fn cached_run(
    key: &str,
    make: impl FnOnce() -> Result<PromptRun, Setup>,
) -> Result<Arc<PromptRun>, Setup> {
    {
        let mut order = RUN_ORDER.lock().unwrap_or_else(|e| e.into_inner());
        if !order.iter().any(|k| k == key) {
            order.push(key.to_owned());
            let excess = order.len().saturating_sub(MAX_CACHED_RUNS);
            let mut runs = RUNS.lock().unwrap_or_else(|e| e.into_inner());
            for old in order.drain(..excess) {
                runs.remove(&old);
            }
        }
    }
    cached(&RUNS, key, make)
}

/// Why a case could not produce a comparison.
#[derive(Debug, Clone)]
enum Setup {
    /// The reference could not run at all (missing runner, spawn failure).
    ReferenceUnavailable(String),
    /// The case cannot run on this model, for the reason given (a prompt longer than the
    /// model's context): neither a pass nor a failure.
    NotApplicable(String),
    /// Anything else: a bug or bad data, always a failure.
    Error(String),
}

fn setup_error(e: impl std::fmt::Display) -> Setup {
    Setup::Error(e.to_string())
}

fn from_ref_error(e: RefError) -> Setup {
    match e {
        RefError::RunnerMissing { .. } | RefError::Spawn { .. } => {
            Setup::ReferenceUnavailable(e.to_string())
        }
        other => Setup::Error(other.to_string()),
    }
}

/// Why a model file could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The reference that converts the model is missing or could not start
    /// (`CROSSVAL_ALLOW_CPP_FAIL=1` may turn this into a visible skip).
    #[error("{reference} is unavailable: {source}")]
    ReferenceUnavailable {
        reference: Reference,
        #[source]
        source: RefError,
    },
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl From<ModelFileError> for Setup {
    fn from(e: ModelFileError) -> Setup {
        match e {
            ModelFileError::ReferenceUnavailable { .. } => {
                Setup::ReferenceUnavailable(e.to_string())
            }
            ModelFileError::Failed(m) => Setup::Error(m),
        }
    }
}

/// The model file of a case: a fixture generated on first use, SmolLM2, a user's file, or a
/// conversion by its reference, cached by input content and reference version (every
/// check that needs a built-in model's file goes through here).
pub fn model_file(source: &ModelSource) -> Result<PathBuf, ModelFileError> {
    let failed = |e: &dyn std::fmt::Display| ModelFileError::Failed(e.to_string());
    match source {
        ModelSource::Fixture(spec) => bitnet_fixtures::fixture(spec).map_err(|e| failed(&e)),
        ModelSource::SmolLm2 => bitnet_fixtures::smollm2_path().map_err(|e| failed(&e)),
        ModelSource::User { path, .. } => Ok(path.clone()),
        ModelSource::Converted {
            from,
            by,
            ftype,
            to,
        } => {
            let by_ref = |e: RefError| match e {
                RefError::RunnerMissing { .. } | RefError::Spawn { .. } => {
                    ModelFileError::ReferenceUnavailable {
                        reference: *by,
                        source: e,
                    }
                }
                other => ModelFileError::Failed(format!("{by}: {other}")),
            };
            let input = model_file(from)?;
            let mut runner = RefRunner::spawn(*by).map_err(by_ref)?;
            let output = conversion_path(&input, *by, runner.version(), to)?;
            if !output.is_file() {
                tracing::info!(
                    "converting {} to {to} with {by}'s llama_model_quantize (cached as {})",
                    input.display(),
                    output.display()
                );
                let tmp = output.with_extension(format!("tmp{}", std::process::id()));
                runner.convert_model(&input, &tmp, *ftype).map_err(by_ref)?;
                std::fs::rename(&tmp, &output).map_err(|e| failed(&e))?;
            }
            Ok(output)
        }
    }
}

/// Where a converted model is cached: `<fixture dir>/converted/<stem>-<content hash>-<reference>-
/// <version hash>.<to>.gguf`, so an edited input or another build of the reference never
/// reuses a stale conversion.
fn conversion_path(
    input: &std::path::Path,
    by: Reference,
    version: &str,
    to: &str,
) -> Result<PathBuf, ModelFileError> {
    use std::io::Read;
    let io = |e: std::io::Error| ModelFileError::Failed(format!("{}: {e}", input.display()));
    let mut file = std::fs::File::open(input).map_err(io)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > 256 << 20 {
        tracing::info!(
            "hashing {} ({:.1} GB) for the conversion cache",
            input.display(),
            size as f64 / 1e9
        );
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let content = hex(&hasher.finalize()[..8]);
    let version = hex(&Sha256::digest(version.as_bytes())[..4]);
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = bitnet_fixtures::fixture_dir().join("converted");
    std::fs::create_dir_all(&dir).map_err(io)?;
    Ok(dir.join(format!(
        "{stem}-{content}-{}-{version}.{to}.gguf",
        reference_id(by)
    )))
}

fn load(model: &ModelCase) -> Result<Loaded, Setup> {
    let path = model_file(&model.source)?;
    let facts = FileFacts::read(&path).map_err(setup_error)?;
    let ours = Model::load(&path).map_err(|e| Setup::Error(format!("bitnet-rs: {e}")))?;
    let tokenizer =
        Tokenizer::from_gguf(&path).map_err(|e| Setup::Error(format!("tokenizer: {e}")))?;
    let config = SessionConfig::deterministic(model.reference, model.n_ctx);
    let reference = RefSession::load(model.reference, &path, &config).map_err(from_ref_error)?;
    if reference.info().n_vocab as usize != ours.config().n_vocab {
        return Err(Setup::Error(format!(
            "vocab size {} in bitnet-rs but {} in {}",
            ours.config().n_vocab,
            reference.info().n_vocab,
            model.reference
        )));
    }
    Ok(Loaded {
        tolerance: tolerance::for_file(&facts, model.reference),
        facts,
        n_ctx: model.n_ctx,
        path,
        model: ours,
        tokenizer,
        reference_version: reference.version().to_owned(),
        reference_settings: config.describe(model.reference),
        reference: Mutex::new(reference),
        capture: Mutex::new(None),
    })
}

fn cached<T>(
    map: &Mutex<BTreeMap<String, Shared<T>>>,
    key: &str,
    make: impl FnOnce() -> Result<T, Setup>,
) -> Result<Arc<T>, Setup> {
    let cell = shared(map, key);
    cell.get_or_init(|| make().map(Arc::new)).clone()
}

fn rows(flat: Vec<f32>, n_vocab: usize) -> Vec<Vec<f32>> {
    flat.chunks_exact(n_vocab).map(<[f32]>::to_vec).collect()
}

fn greedy(row: &[f32]) -> Result<u32, Setup> {
    argmax(row)
        .map(|i| i as u32)
        .ok_or_else(|| Setup::Error("empty logits row".into()))
}

/// Our engine: the prompt in one batch, then `feed` (or, when `None`, our own greedy
/// choices) one token at a time; returns every row and the tokens chosen.
fn run_ours(
    loaded: &Loaded,
    reference: Reference,
    prompt: &[u32],
    feed: Option<&[u32]>,
) -> Result<(Vec<Vec<f32>>, Vec<u32>), Setup> {
    let mut config = EngineConfig::new(loaded.n_ctx as usize);
    config.numerics = numerics_for(reference);
    let mut session = Session::new(&loaded.model, &config).map_err(setup_error)?;
    let n_vocab = session.n_vocab();
    let mut all = rows(session.eval(prompt).map_err(setup_error)?, n_vocab);
    let mut chosen = Vec::with_capacity(MAX_NEW_TOKENS);
    for i in 0..MAX_NEW_TOKENS {
        let own = greedy(all.last().map(Vec::as_slice).unwrap_or_default())?;
        chosen.push(own);
        if i + 1 == MAX_NEW_TOKENS {
            break;
        }
        let next = feed.map_or(own, |f| f[i]);
        all.push(session.decode(next).map_err(setup_error)?.to_vec());
    }
    Ok((all, chosen))
}

/// The deterministic reference's side of a prompt: the prompt's tokens (checked against our
/// tokenizer), its rows (the prompt in one batch, then one per greedy step) and its greedy
/// tokens.
struct ReferenceRun {
    prompt_tokens: Vec<u32>,
    rows: Vec<Vec<f32>>,
    generated: Vec<u32>,
}

fn run_reference(
    loaded: &Loaded,
    reference: Reference,
    prompt: &Prompt,
) -> Result<ReferenceRun, Setup> {
    let text = prompt.text;
    let ours = loaded
        .tokenizer
        .encode(text, true, false)
        .map_err(|e| Setup::Error(format!("bitnet-rs tokenizer: {e}")))?;
    let mut r = loaded.reference.lock().unwrap_or_else(|e| e.into_inner());
    let theirs = r.tokenize(text, true, false).map_err(from_ref_error)?;
    if ours != theirs {
        let at = ours.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
        return Err(Setup::Error(format!(
            "tokenization differs at index {at}: bitnet-rs {:?} vs {reference} {:?} \
             (bitnet-rs {} ids, {reference} {} ids)",
            ours.get(at),
            theirs.get(at),
            ours.len(),
            theirs.len()
        )));
    }
    if ours.is_empty() {
        return Err(Setup::Error(format!(
            "prompt '{}' has no tokens",
            prompt.id
        )));
    }
    if ours.len() + MAX_NEW_TOKENS > loaded.n_ctx as usize {
        return Err(Setup::NotApplicable(format!(
            "prompt '{}' is {} tokens + {MAX_NEW_TOKENS} generated > n_ctx {}",
            prompt.id,
            ours.len(),
            loaded.n_ctx
        )));
    }
    r.reset().map_err(from_ref_error)?;
    let mut rows = r.eval_and_get_logits(&ours, 0).map_err(from_ref_error)?;
    let mut generated = Vec::with_capacity(MAX_NEW_TOKENS);
    for i in 0..MAX_NEW_TOKENS {
        let t = greedy(rows.last().map(Vec::as_slice).unwrap_or_default())?;
        generated.push(t);
        if i + 1 == MAX_NEW_TOKENS {
            break;
        }
        let pos = (ours.len() + i) as u32;
        let mut row = r.eval_and_get_logits(&[t], pos).map_err(from_ref_error)?;
        rows.append(&mut row);
    }
    Ok(ReferenceRun {
        prompt_tokens: ours,
        rows,
        generated,
    })
}

fn run_prompt(loaded: &Loaded, reference: Reference, prompt: &Prompt) -> Result<PromptRun, Setup> {
    let theirs = run_reference(loaded, reference, prompt)?;
    let (forced_rows, _) = run_ours(
        loaded,
        reference,
        &theirs.prompt_tokens,
        Some(&theirs.generated),
    )?;
    let (free_rows, free_generated) = run_ours(loaded, reference, &theirs.prompt_tokens, None)?;
    Ok(PromptRun {
        prompt_tokens: theirs.prompt_tokens,
        reference_rows: theirs.rows,
        reference_generated: theirs.generated,
        forced_rows,
        free_rows,
        free_generated,
    })
}

/// A reference session for a test outside the case matrix: started with `config`, or —
/// when its runner is missing or cannot start and `CROSSVAL_ALLOW_CPP_FAIL` allows it —
/// `None`, recorded as a skipped row named `<binary>_<test thread>`. Any other failure
/// panics, naming the reference.
pub fn reference_or_skip(
    which: Reference,
    path: &std::path::Path,
    config: &SessionConfig,
    binary: &str,
) -> Option<RefSession> {
    match RefSession::load(which, path, config) {
        Ok(s) => Some(s),
        Err(e @ (RefError::RunnerMissing { .. } | RefError::Spawn { .. })) if skip_allowed() => {
            let test = std::thread::current().name().unwrap_or("test").to_owned();
            crate::report::record_skip(&format!("{binary}_{test}"), which.name(), &e.to_string())
                .expect("record the skip in target/crossval");
            None
        }
        Err(e) => panic!("{which} reference unavailable: {e}"),
    }
}

/// Whether `CROSSVAL_ALLOW_CPP_FAIL` is set (non-empty, not `0`): a missing reference is
/// then a recorded skip instead of a failure.
pub fn skip_allowed() -> bool {
    std::env::var(ALLOW_CPP_FAIL_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn describe_top(loaded: &Loaded, top: &[(usize, f32)]) -> String {
    top.iter()
        .map(|&(id, logit)| {
            let piece = loaded
                .tokenizer
                .token_to_piece(id as u32, true)
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .unwrap_or_default();
            format!("{id} {piece:?} {logit:.4}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Drops everything cached for `model` (its loaded model, reference sessions and prompt
/// runs): for the cases that use a model once (long context, full shape), whose logits
/// and weights would otherwise stay in memory for the rest of the binary.
pub fn forget(model: &ModelCase) {
    let id = model.id();
    MODELS.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    let prefix = format!("{id}/");
    RUNS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|k, _| !k.starts_with(&prefix));
    RUN_ORDER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|k| !k.starts_with(&prefix));
}

/// Runs one case and returns its report; [`CaseReport::status`] says whether it passed.
pub fn run_case(case: &Case) -> CaseReport {
    let model_id = case.model.id();
    let mut report = CaseReport {
        prompt: case.prompt.id.to_owned(),
        mode: case.mode,
        n_tokens: case.n_tokens,
        message: None,
        ..CaseReport::without_run(
            case.id(),
            model_id.clone(),
            case.model.reference.name(),
            Status::Fail,
            String::new(),
        )
    };
    let result = cached(&MODELS, &model_id, || load(&case.model)).and_then(|loaded| {
        let key = format!("{model_id}/{}{}", case.prompt.id, fault_key());
        let run = cached_run(&key, || {
            run_prompt(&loaded, case.model.reference, &case.prompt)
        })?;
        Ok((loaded, run))
    });
    let (loaded, run) = match result {
        Ok(v) => v,
        Err(Setup::ReferenceUnavailable(m)) if skip_allowed() => {
            report.status = Status::Skipped;
            report.message = Some(format!("skipped ({ALLOW_CPP_FAIL_ENV}=1): {m}"));
            return report;
        }
        Err(Setup::NotApplicable(m)) => {
            report.status = Status::NotApplicable;
            report.message = Some(format!("not applicable: {m}"));
            return report;
        }
        Err(Setup::ReferenceUnavailable(m) | Setup::Error(m)) => {
            report.message = Some(format!("case {}: {m}", report.case));
            return report;
        }
    };
    report.format = loaded.facts.format_name();
    report.tolerance = Some(loaded.tolerance.clone());
    report.reference_version = loaded.reference_version.clone();
    report.reference_settings = loaded.reference_settings.clone();
    report.prompt_tokens = run.prompt_tokens.clone();
    // The reference's own rows of this case (its greedy path, whatever our side did).
    let rows = &run.reference_rows[..run.prompt_tokens.len() + case.n_tokens - 1];
    report.reference_top5 = rows
        .iter()
        .map(|r| top_k(r, TOP_K).iter().map(|&(i, _)| i as u32).collect())
        .collect();
    report.reference_logits_digest = logits_digest(rows);
    compare(case, &loaded, &run, &mut report);
    report
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`logits_digest`] rounds each logit to before hashing: fine enough that any change
/// of the reference's numbers moves it (logits are O(1) to O(10)), coarse enough that the
/// digest does not hang on the last bits of a libm call.
pub const LOGITS_DIGEST_PRECISION: f64 = 1e-4;

/// SHA-256 (first 16 hex digits) of the rows, each logit rounded to
/// [`LOGITS_DIGEST_PRECISION`] and hashed as a little-endian i64, row after row.
pub fn logits_digest(rows: &[Vec<f32>]) -> String {
    let mut h = Sha256::new();
    for row in rows {
        for &x in row {
            let q = (f64::from(x) / LOGITS_DIGEST_PRECISION).round() as i64;
            h.update(q.to_le_bytes());
        }
    }
    hex(&h.finalize()[..8])
}

fn compare(case: &Case, loaded: &Loaded, run: &PromptRun, report: &mut CaseReport) {
    let tol = loaded.tolerance.tolerance;
    let p = run.prompt_tokens.len();
    let n = case.n_tokens;
    report.reference_generated = run.reference_generated[..n].to_vec();
    // Rows up to the one that chose generated token n - 1.
    let mut upto = p + n - 1;
    let ours = match case.mode {
        Mode::TeacherForced => {
            report.rust_generated = run.forced_rows[p - 1..upto]
                .iter()
                .map(|r| argmax(r).unwrap_or(0) as u32)
                .collect();
            &run.forced_rows
        }
        Mode::FreeRunning => {
            report.rust_generated = run.free_generated[..n].to_vec();
            let mismatch = (0..n).find(|&k| run.free_generated[k] != run.reference_generated[k]);
            if let Some(k) = mismatch {
                // Rows after the mismatch saw different tokens: not comparable.
                upto = p + k;
                let margin = position_metrics(
                    p - 1 + k,
                    &run.free_rows[p - 1 + k],
                    &run.reference_rows[p - 1 + k],
                )
                .map(|m| m.ref_top1_margin)
                .unwrap_or(f32::INFINITY);
                report.mismatch_was_near_tie = Some(margin <= tol.near_tie_margin);
            }
            report.first_token_mismatch = mismatch;
            &run.free_rows
        }
    };
    let d = match compare_per_position_logits_with(&ours[..upto], &run.reference_rows[..upto], &tol)
    {
        Ok(d) => d,
        Err(e) => {
            report.message = Some(format!(
                "case {}: logits cannot be compared: {e}",
                report.case
            ));
            return;
        }
    };
    let mut failure = failure_message(case, loaded, &d, &tol, ours, &run.reference_rows, report);
    report.status = if failure.is_none() {
        Status::Pass
    } else {
        Status::Fail
    };
    // Localise a failure at its first diverging position; trace a pass on request.
    let at = match (&failure, &d.divergence) {
        (Some(_), Some(div)) => Some(div.position),
        (None, _) if trace_requested() => Some(upto - 1),
        _ => None,
    };
    if let Some(pos) = at {
        match localise(case.model.reference, loaded, run, pos) {
            Ok(trace) => {
                report.first_divergent_op = trace.first_divergent();
                if let Some(msg) = failure.as_mut() {
                    match &report.first_divergent_op {
                        Some(op) => msg.push_str(&format!("\n  {op}")),
                        None => msg.push_str(&format!(
                            "\n  no op at position {pos} crosses its NMSE threshold \
                             ({} ops compared)",
                            trace.ops.len()
                        )),
                    }
                }
                report.op_trace = Some(trace);
            }
            Err(e) => {
                if let Some(msg) = failure.as_mut() {
                    msg.push_str(&format!("\n  localisation failed: {e}"));
                }
            }
        }
    }
    report.message = failure;
    report.divergence = Some(d);
}

fn trace_requested() -> bool {
    std::env::var(TRACE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The injected fault, as part of the run cache key: a run under one fault is never reused
/// under another (or none).
#[cfg(feature = "fault-injection")]
fn fault_key() -> String {
    bitnet_models::fault::current()
        .map(|f| format!("/fault {f:?}"))
        .unwrap_or_default()
}

#[cfg(not(feature = "fault-injection"))]
fn fault_key() -> &'static str {
    ""
}

/// Re-evaluates row `position` of the case's run (prompt tokens, then the reference's
/// generated tokens, in the same evaluation order as the case: the prompt as one batch,
/// then one token per step) with capture on, on both sides, and compares every op's row.
fn localise(
    reference: Reference,
    loaded: &Loaded,
    run: &PromptRun,
    position: usize,
) -> Result<OpTrace, String> {
    let prompt = &run.prompt_tokens;
    let p = prompt.len();
    // The evaluation that produced row `position`: its tokens, where it starts, and the
    // row within it.
    let (batch, n_past, tok): (Vec<u32>, usize, usize) = if position < p {
        (prompt.clone(), 0, position)
    } else {
        let i = position - p;
        let t = *run
            .reference_generated
            .get(i)
            .ok_or_else(|| format!("no generated token for position {position}"))?;
        (vec![t], position, 0)
    };
    let before: Vec<u32> = prompt
        .iter()
        .chain(&run.reference_generated)
        .take(n_past)
        .copied()
        .collect();

    // Ours.
    let mut config = EngineConfig::new(loaded.n_ctx as usize);
    config.numerics = numerics_for(reference);
    let mut session = Session::new(&loaded.model, &config).map_err(|e| e.to_string())?;
    if n_past > 0 {
        session.eval(prompt).map_err(|e| e.to_string())?;
        for &t in &before[p..] {
            session.decode(t).map_err(|e| e.to_string())?;
        }
    }
    let mut ours: Vec<Tensor> = Vec::new();
    {
        let mut hook = |name: &str, shape: &[usize], data: &[f32]| {
            ours.push(Tensor {
                name: name.to_owned(),
                shape: shape.to_vec(),
                data: data.to_vec(),
            })
        };
        session
            .eval_with_capture(&batch, Some(&mut hook))
            .map_err(|e| e.to_string())?;
    }

    // Theirs, in a session of its own that captures.
    let mut slot = loaded.capture.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        let mut config = SessionConfig::deterministic(reference, loaded.n_ctx);
        config.capture = capture_patterns();
        *slot =
            Some(RefSession::load(reference, &loaded.path, &config).map_err(|e| e.to_string())?);
    }
    let r = slot.as_mut().ok_or("no capture session")?;
    r.reset().map_err(|e| e.to_string())?;
    if n_past > 0 {
        r.eval(prompt, 0).map_err(|e| e.to_string())?;
        for (j, &t) in before[p..].iter().enumerate() {
            r.eval(&[t], (p + j) as u32).map_err(|e| e.to_string())?;
        }
    }
    let out = r.eval(&batch, n_past as u32).map_err(|e| e.to_string())?;
    let theirs: Vec<Tensor> = out
        .captured
        .into_iter()
        .map(|t| Tensor {
            name: t.name,
            shape: t.ne.iter().map(|&n| n as usize).collect(),
            data: t.data,
        })
        .collect();
    let naming = match reference {
        Reference::LlamaCpp => localize::LLAMA_CPP,
        Reference::IkLlamaCpp => localize::IK_LLAMA_CPP,
        Reference::BitnetCpp => localize::BITNET_CPP,
    };
    Ok(localize::trace(
        naming,
        &ours,
        &theirs,
        tok,
        batch.len(),
        position,
    ))
}

/// A failure reads like a bug report: case, position, metric, value, threshold, and both
/// sides' top-5 tokens at that position.
fn failure_message(
    case: &Case,
    loaded: &Loaded,
    d: &LogitsDivergence,
    tol: &Tolerance,
    ours: &[Vec<f32>],
    theirs: &[Vec<f32>],
    report: &CaseReport,
) -> Option<String> {
    let mut msg = None;
    if let Some(div) = &d.divergence {
        let pos = div.position;
        msg = Some(format!(
            "case {case_id}: position {pos} ({kind}) diverged on {metric}: {value:.6e} vs threshold {thr:.6e}\n  \
             model {model} ({path}), reference {reference} [{version}], prompt '{prompt}', mode {mode:?}, {n} tokens\n  \
             bitnet-rs top-{TOP_K}: {ours_top}\n  reference top-{TOP_K}: {ref_top}\n  \
             at that position: max |Δ| {max_abs:.3e}, cosine {cos:.9}, KL {kl:.3e}",
            case_id = report.case,
            kind = if pos + 1 < report.prompt_tokens.len() { "prompt" } else { "generated" },
            metric = div.metric,
            value = div.value,
            thr = div.threshold,
            model = report.model,
            path = loaded.path.display(),
            reference = report.reference,
            version = report.reference_version,
            prompt = case.prompt.id,
            mode = case.mode,
            n = case.n_tokens,
            ours_top = describe_top(loaded, &top_k(&ours[pos], TOP_K)),
            ref_top = describe_top(loaded, &top_k(&theirs[pos], TOP_K)),
            max_abs = d.per_token_max_abs[pos],
            cos = d.per_token_cosine_sim[pos],
            kl = d.per_token_kl[pos],
        ));
    }
    if msg.is_none() && report.mismatch_was_near_tie == Some(false) {
        msg =
            Some(format!(
            "case {}: free-running generation chose token {:?} where {} chose {:?} at index {:?}, \
             and the reference's lead there exceeds the near-tie margin {}",
            report.case,
            report.first_token_mismatch.map(|k| report.rust_generated[k]),
            report.reference,
            report.first_token_mismatch.map(|k| report.reference_generated[k]),
            report.first_token_mismatch,
            tol.near_tie_margin
        ));
    }
    msg
}
