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

use bitnet_crossval::cases::{
    reference_id, user_models, Case, Mode, UserModel, PROMPTS, TOKEN_COUNTS,
};
use bitnet_crossval::report::{self, CaseReport, Status};
use bitnet_crossval::routing::Route;
use bitnet_crossval::runner::run_case;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
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

/// Records a case that did not run and turns it into the trial's outcome.
fn record_without_run(r: CaseReport) -> Result<Completion, Failed> {
    report::record(&r).map_err(|e| format!("write target/crossval reports: {e}"))?;
    let message = r.message.unwrap_or_default();
    match r.status {
        Status::Fail => Err(message.into()),
        _ => Ok(Completion::ignored_with(message)),
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
