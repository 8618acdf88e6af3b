//! The reference-defaults axis: each reference as users run it — its library's own default
//! model and context parameters, every core ([`SessionConfig::reference_defaults`]) — next
//! to our engine as users run it ([`EngineConfig::new`]: all cores, default numerics).
//!
//! Both see the sequence of the exact axis (the prompt, then the deterministic reference's
//! greedy tokens: teacher-forced), evaluated the way a generation runs it: the prompt in
//! one batch, then one token per step. The verdict uses llama-perplexity's KLD statistics
//! against the reference's defaults run: our engine passes when it sits inside the bound
//! for that reference (`tolerance::defaults_bound`), which was set from the reference's own
//! spread between its deterministic and default settings. That spread is measured and
//! reported again in every case, next to ours.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{
    cached, from_ref_error, rows, run_reference, setup_error, skip_allowed, Loaded, Setup,
    ALLOW_CPP_FAIL_ENV, MODELS,
};
use crate::cases::{ModelCase, Prompt};
use crate::kld::KldBound;
use crate::kld::{kld_stats, KldStats};
use crate::report::Status;
use crate::tolerance::{defaults_bound, DefaultsClass};
use bitnet_inference::{Session, SessionConfig as EngineConfig};
use bitnet_sys::{RefBuild, RefSession, SessionConfig};

/// One case of the axis.
#[derive(Debug, Clone, Serialize)]
pub struct DefaultsReport {
    pub case: String,
    pub model: String,
    pub reference: String,
    pub reference_version: String,
    /// The defaults build's version string (its own ISA, OpenMP and llamafile flags).
    pub defaults_reference_version: String,
    /// The deterministic (exact-axis) settings and the defaults, as the reference ran them.
    pub deterministic_settings: String,
    pub defaults_settings: String,
    /// Our engine's settings.
    pub engine_settings: String,
    pub prompt: String,
    pub positions: usize,
    /// The reference against itself: its deterministic run measured from its defaults run.
    pub reference_spread: Option<KldStats>,
    /// Our engine (default settings) measured from the reference's defaults run.
    pub engine: Option<KldStats>,
    /// The weight class the bound is chosen by, and the bound.
    pub class: Option<DefaultsClass>,
    pub bound: Option<KldBound>,
    pub status: Status,
    pub message: Option<String>,
}

/// The defaults run of `model` on `prompt`.
pub fn run_defaults_case(model: &ModelCase, prompt: &Prompt) -> DefaultsReport {
    let model_id = model.id();
    let mut report = DefaultsReport {
        case: format!("{}__{}__defaults", model_id.replace('@', "__"), prompt.id),
        model: model_id.clone(),
        reference: model.reference.name().to_owned(),
        reference_version: String::new(),
        defaults_reference_version: String::new(),
        deterministic_settings: format!(
            "{}; {}",
            SessionConfig::deterministic(model.reference, model.n_ctx).describe(model.reference),
            RefBuild::Deterministic.describe(model.reference)
        ),
        defaults_settings: SessionConfig::reference_defaults(model.n_ctx).describe(model.reference),
        engine_settings: engine_settings(model.n_ctx),
        prompt: prompt.id.to_owned(),
        positions: 0,
        reference_spread: None,
        engine: None,
        class: None,
        bound: None,
        status: Status::Fail,
        message: None,
    };
    match measure(model, &model_id, prompt, &mut report) {
        Ok(()) => {}
        Err(Setup::ReferenceUnavailable(m)) if skip_allowed() => {
            report.status = Status::Skipped;
            report.message = Some(format!("skipped ({ALLOW_CPP_FAIL_ENV}=1): {m}"));
        }
        Err(Setup::NotApplicable(m)) => {
            report.status = Status::NotApplicable;
            report.message = Some(format!("not applicable: {m}"));
        }
        Err(Setup::ReferenceUnavailable(m) | Setup::Error(m)) => {
            report.message = Some(format!("case {}: {m}", report.case));
        }
    }
    report
}

/// Both axes' settings, each reference once (for the top of `defaults.txt`; n_ctx and
/// n_batch are shown for a 512-position model, each case uses its model's).
pub fn axes_settings() -> String {
    const N_CTX: u32 = 512;
    let mut s = format!("settings (shown for n_ctx {N_CTX}; each case uses its model's n_ctx):\n");
    for r in bitnet_sys::Reference::ALL {
        let det = SessionConfig::deterministic(r, N_CTX).describe(r);
        let def = SessionConfig::reference_defaults(N_CTX).describe(r);
        s.push_str(&format!(
            "  {:<13} exact axis:    {det}; {}\n  {:<13} defaults axis: {def}\n",
            r.name(),
            RefBuild::Deterministic.describe(r),
            ""
        ));
    }
    s.push_str(&format!(
        "  {:<13} exact axis:    the reference's numerics (Numerics::for_reference), 1 thread\n  \
         {:<13} defaults axis: {}\n",
        "bitnet-rs",
        "",
        engine_settings(N_CTX)
    ));
    s
}

/// Our engine's settings on this axis.
fn engine_settings(n_ctx: u32) -> String {
    let config = EngineConfig::new(n_ctx as usize);
    format!(
        "bitnet-rs defaults: n_ctx {n_ctx}, n_batch {}, all cores, {:?}",
        config.n_batch, config.numerics
    )
}

fn measure(
    model: &ModelCase,
    model_id: &str,
    prompt: &Prompt,
    report: &mut DefaultsReport,
) -> Result<(), Setup> {
    let loaded = cached(&MODELS, model_id, || super::load(model))?;
    // The deterministic reference's run of the exact axis' sequence (not cached: by the
    // time this axis runs, the exact axis' cached runs of the model are gone).
    let run = run_reference(&loaded, model.reference, prompt)?;
    report.reference_version = loaded.reference_version.clone();
    let class = DefaultsClass::of(&loaded.facts);
    let bound = defaults_bound(class);
    report.class = Some(class);
    report.bound = Some(bound);
    let p = run.prompt_tokens.len();
    // The sequence: prompt, then all but the last of the deterministic run's greedy tokens
    // (the last one's row is never needed).
    let fed = &run.generated[..run.generated.len() - 1];
    let deterministic = &run.rows[..p + fed.len()];
    let (defaults, defaults_version) =
        reference_defaults_rows(&loaded, model, &run.prompt_tokens, fed)?;
    report.defaults_reference_version = defaults_version;
    let ours = engine_default_rows(&loaded, &run.prompt_tokens, fed)?;
    report.positions = deterministic.len();
    let spread = kld_stats(&defaults, deterministic).map_err(setup_error)?;
    let engine = kld_stats(&defaults, &ours).map_err(setup_error)?;
    // The reference against itself must sit inside the bound set from it: outside, the
    // reference changed (or the bound is stale), and the message names the reference.
    let reference_moved = bound.exceeded(&spread).map(|why| {
        format!(
            "{} (deterministic) against {} (defaults): {why} ({class:?} bound): the \
             reference's own spread left the bound measured from it; re-measure \
             tolerance::defaults_bound",
            model.reference, model.reference
        )
    });
    let verdict = reference_moved.or_else(|| {
        bound.exceeded(&engine).map(|why| {
            format!(
                "bitnet-rs (defaults) against {} (defaults): {why} ({class:?} bound); the \
             reference's own spread here: mean KL {:.3e}, p99 {:.3e}, max {:.3e}, top-1 {:.1}%",
                model.reference,
                spread.mean_kl,
                spread.p99_kl,
                spread.max_kl,
                100.0 * spread.top1_same
            )
        })
    });
    report.reference_spread = Some(spread);
    report.engine = Some(engine);
    report.status = if verdict.is_none() {
        Status::Pass
    } else {
        Status::Fail
    };
    report.message = verdict;
    Ok(())
}

/// The defaults sessions of the last [`KEEP_DEFAULT_SESSIONS`] models used (cases run model
/// by model, two at a time): each is a reference process holding a whole model, so older
/// ones are shut down.
static DEFAULT_SESSIONS: Mutex<Vec<(String, Arc<Mutex<RefSession>>)>> = Mutex::new(Vec::new());
const KEEP_DEFAULT_SESSIONS: usize = 2;

/// The defaults session of `model`, started on first use.
fn defaults_session(loaded: &Loaded, model: &ModelCase) -> Result<Arc<Mutex<RefSession>>, Setup> {
    let id = model.id();
    let lock = || DEFAULT_SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, s)) = lock().iter().find(|(k, _)| *k == id) {
        return Ok(Arc::clone(s));
    }
    let config = SessionConfig::reference_defaults(model.n_ctx);
    let session = RefSession::load(model.reference, &loaded.path, &config)
        .map(|s| Arc::new(Mutex::new(s)))
        .map_err(from_ref_error)?;
    let mut sessions = lock();
    sessions.push((id, Arc::clone(&session)));
    while sessions.len() > KEEP_DEFAULT_SESSIONS {
        sessions.remove(0);
    }
    Ok(session)
}

/// The reference's defaults build with its default settings: the prompt in one batch, then
/// `fed` one token per step; and the version string of the build that answered (the same
/// pin as the deterministic build's, which [`RefRunner::spawn_build`] checks).
///
/// [`RefRunner::spawn_build`]: bitnet_sys::RefRunner::spawn_build
fn reference_defaults_rows(
    loaded: &Loaded,
    model: &ModelCase,
    prompt: &[u32],
    fed: &[u32],
) -> Result<(Vec<Vec<f32>>, String), Setup> {
    let session = defaults_session(loaded, model)?;
    let mut r = session.lock().unwrap_or_else(|e| e.into_inner());
    r.reset().map_err(from_ref_error)?;
    let mut all = r.eval_and_get_logits(prompt, 0).map_err(from_ref_error)?;
    for (i, &t) in fed.iter().enumerate() {
        let pos = (prompt.len() + i) as u32;
        all.append(&mut r.eval_and_get_logits(&[t], pos).map_err(from_ref_error)?);
    }
    Ok((all, r.version().to_owned()))
}

/// Our engine with its defaults, the same way.
fn engine_default_rows(
    loaded: &Loaded,
    prompt: &[u32],
    fed: &[u32],
) -> Result<Vec<Vec<f32>>, Setup> {
    let config = EngineConfig::new(loaded.n_ctx as usize);
    let mut session = Session::new(&loaded.model, &config).map_err(setup_error)?;
    let n_vocab = session.n_vocab();
    let mut all = rows(session.eval(prompt).map_err(setup_error)?, n_vocab);
    for &t in fed {
        all.push(session.decode(t).map_err(setup_error)?.to_vec());
    }
    Ok(all)
}
