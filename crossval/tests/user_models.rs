//! The user's own models (`BITNET_GGUF`, `CROSSVAL_GGUF`, `models/*.gguf`), each routed from
//! the file itself to every reference that can run it (`bitnet_crossval::routing`), and run
//! over the whole prompt × token count × mode matrix: one test per case, named
//! `user_<model>__<reference>__<prompt>__n<k>__<mode>` (so `cargo test ... user_` selects
//! them).
//!
//! A (model, reference) pair that cannot run is a test of its own, reported as ignored with
//! `not applicable: <reason>`, and so is a prompt longer than the model's context; neither
//! passes nor fails. A file that cannot be read as a model, or a model no reference can run,
//! fails with one line naming the file and the reason, and the rest of the matrix runs.
//! Everything is recorded in `target/crossval/summary.{txt,json}` and `report.html`.

use std::collections::BTreeSet;

use bitnet_crossval::cases::{
    reference_id, user_models, Case, Mode, ModelCase, UserModel, N_CTX, PROMPTS, TOKEN_COUNTS,
};
use bitnet_crossval::definition::check::{check_model, record_rows, Checked, ModelCheck, Verdict};
use bitnet_crossval::definition::too_large_for_definition;
use bitnet_crossval::report::{self, CaseReport, Status};
use bitnet_crossval::routing::Route;
use bitnet_crossval::runner::{model_file, run_case, skip_allowed};
use bitnet_gguf::GgufFile;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
    // Diagnostics (reference start-up and log lines, conversions, fixture progress) as
    // `tracing` events on stderr, filtered by RUST_LOG (default: info).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env();
    let filter = filter.unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let args = Arguments::from_args();
    if let Err(e) = report::clear_shard() {
        eprintln!("user models: cannot write target/crossval: {e}");
        std::process::exit(1);
    }
    let models = user_models();
    if models.is_empty() {
        println!(
            "user models: none (add *.gguf files to models/, or set BITNET_GGUF or CROSSVAL_GGUF)"
        );
    }
    let mut trials = Vec::new();
    for m in &models {
        trials.extend(trials_of(m));
    }
    libtest_mimic::run(&args, trials).exit();
}

/// Records a case judged without the parity runner and turns it into the trial's outcome.
fn record_without_run(r: CaseReport) -> Result<Completion, Failed> {
    report::record(&r).map_err(|e| format!("write target/crossval reports: {e}"))?;
    let message = r.message.unwrap_or_default();
    match r.status {
        Status::Fail => Err(message.into()),
        Status::Pass => Ok(Completion::Completed),
        Status::Skipped | Status::NotApplicable => Ok(Completion::ignored_with(message)),
    }
}

/// Prints what the matrix does with one model, and returns its trials.
fn trials_of(m: &UserModel) -> Vec<Trial> {
    let model_id = format!("user_{}", m.slug);
    let facts = match &m.facts {
        Ok(f) => f,
        Err(bad) => {
            println!("user model {bad}");
            let r = CaseReport::without_run(
                format!("{model_id}__load"),
                model_id,
                "-",
                Status::Fail,
                format!("not a model bitnet-rs can read: {bad}"),
            );
            return vec![Trial::ignorable_test(r.case.clone(), move || {
                record_without_run(r)
            })];
        }
    };
    let c = &facts.config;
    println!(
        "user model {}: arch {}, weights {} (token_embd {}), {} layers, n_embd {}, n_ff {}, \
         heads {}/{} × {}, context {} (sessions use n_ctx {})",
        m.path.display(),
        c.arch,
        facts.format_name(),
        facts.embd_type.name(),
        c.n_layer,
        c.n_embd,
        c.n_ff,
        c.n_head,
        c.n_head_kv,
        c.head_dim,
        c.n_ctx_train,
        m.n_ctx()
    );
    let mut trials = Vec::new();
    let mut not_applicable = Vec::new();
    let mut runs = Vec::new();
    for (reference, route) in m.routes() {
        let how = match &route {
            Route::Direct => "runs the file as it is".to_string(),
            Route::Convert { to, .. } => {
                format!("runs it converted to {to} by its own llama_model_quantize")
            }
            Route::NotApplicable(reason) => format!("not applicable: {reason}"),
        };
        println!("  {reference}: {how}");
        let Some(model) = m.case(reference, &route) else {
            if let Route::NotApplicable(reason) = route {
                not_applicable.push(format!("{reference}: {reason}"));
                let r = CaseReport::without_run(
                    format!("{model_id}__{}__not_applicable", reference_id(reference)),
                    model_id.clone(),
                    reference.name(),
                    Status::NotApplicable,
                    format!("not applicable: {reason}"),
                );
                trials.push(Trial::ignorable_test(r.case.clone(), move || {
                    record_without_run(r)
                }));
            }
            continue;
        };
        runs.push(model.clone());
        for prompt in PROMPTS {
            for n_tokens in TOKEN_COUNTS {
                for mode in Mode::ALL {
                    let case = Case {
                        model: model.clone(),
                        prompt,
                        n_tokens,
                        mode,
                    };
                    trials.push(Trial::ignorable_test(case.id(), move || run(&case)));
                }
            }
        }
    }
    trials.push(definition_trial(m, &model_id, &runs));
    if not_applicable.len() == bitnet_sys::Reference::ALL.len() {
        let message = format!(
            "no reference can run {}: {}",
            m.path.display(),
            not_applicable.join("; ")
        );
        println!("user model {message}");
        let r = CaseReport::without_run(
            format!("{model_id}__no_reference"),
            model_id,
            "-",
            Status::Fail,
            message,
        );
        trials.push(Trial::ignorable_test(r.case.clone(), move || {
            record_without_run(r)
        }));
    }
    trials
}

/// One user case: runs, records, and maps the status to libtest's outcome.
fn run(case: &Case) -> Result<Completion, Failed> {
    let r = run_case(case);
    report::record(&r).map_err(|e| format!("write target/crossval reports: {e}"))?;
    println!("{}", report::table_row(&r.summary_row()));
    let message = r.message.unwrap_or_default();
    match r.status {
        Status::Pass => Ok(Completion::Completed),
        Status::Fail => Err(message.into()),
        Status::Skipped | Status::NotApplicable => Ok(Completion::ignored_with(message)),
    }
}

/// The definition check of one model (`user_<model>__definition`): the BitNet definition
/// against our engine and every reference that runs it, as `tests/definition.rs` does for
/// the built-in models. Rows go to `target/crossval/definition-user.{txt,json}`. A model
/// over [`bitnet_crossval::definition::MAX_DEFINITION_WEIGHTS`] is a not-applicable row saying so; a model whose arch,
/// format and variant have no measured bound gets its rows reported, not judged (ignored).
fn definition_trial(m: &UserModel, model_id: &str, runs: &[ModelCase]) -> Trial {
    let case = format!("{model_id}__definition");
    let without_run = |status, message: String| {
        let r = CaseReport::without_run(case.clone(), model_id.to_owned(), "-", status, message);
        Trial::ignorable_test(case.clone(), move || record_without_run(r))
    };
    let too_large = GgufFile::open(&m.path)
        .map_err(|e| e.to_string())
        .map(|f| too_large_for_definition(&f));
    match too_large {
        Err(e) => return without_run(Status::Fail, format!("definition check: {e}")),
        Ok(Some(reason)) => {
            return without_run(Status::NotApplicable, format!("not applicable: {reason}"))
        }
        Ok(None) => {}
    }
    let (path, n_ctx) = (m.path.clone(), m.n_ctx().min(N_CTX));
    let (model_id, runs) = (model_id.to_owned(), runs.to_vec());
    Trial::ignorable_test(case.clone(), move || {
        let references = runs
            .iter()
            .map(|c| {
                model_file(&c.source)
                    .map(|p| (c.reference, p))
                    .map_err(|e| format!("{}: {e}", c.reference))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let check = ModelCheck {
            id: model_id.clone(),
            path: path.clone(),
            references,
            n_ctx,
        };
        let (status, message) = match check_model(&check, skip_allowed()) {
            Err(e) => (Status::Fail, e),
            Ok(checked) => {
                record_rows("definition-user", &checked.rows)
                    .map_err(|e| format!("write target/crossval/definition-user.*: {e}"))?;
                verdict(&checked)
            }
        };
        record_without_run(CaseReport::without_run(
            case.clone(),
            model_id.clone(),
            "-",
            status,
            message,
        ))
    })
}

/// The outcome of a user model's definition rows.
fn verdict(checked: &Checked) -> (Status, String) {
    let failed: Vec<&str> = checked
        .rows
        .iter()
        .filter_map(|r| r.message.as_deref())
        .collect();
    let unbounded: BTreeSet<String> = checked
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Unbounded)
        .map(|r| format!("{} {} ({})", r.arch.name(), r.format, r.activations.name()))
        .collect();
    if !failed.is_empty() {
        (Status::Fail, failed.join("\n"))
    } else if !checked.skipped.is_empty() {
        (
            Status::Skipped,
            format!("skipped: {}", checked.skipped.join("; ")),
        )
    } else if !unbounded.is_empty() {
        let list: Vec<String> = unbounded.into_iter().collect();
        (
            Status::NotApplicable,
            format!(
                "definition rows reported in target/crossval/definition-user.txt, not judged: \
                 no bound has been measured for {}",
                list.join(", ")
            ),
        )
    } else {
        (
            Status::Pass,
            format!("{} definition rows inside their bounds", checked.rows.len()),
        )
    }
}
