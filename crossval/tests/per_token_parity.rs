//! The per-token parity suite: every built-in model × prompt × token count × mode against
//! each reference that runs it (features `crossval` and `integration-tests`). User models
//! run in `tests/user_models.rs`.
//!
//! Each case checks tokenization parity, then compares every position's logits (prompt in
//! one batch, then one token at a time on both sides) under the model's tolerance
//! (`bitnet_crossval::tolerance`), writes `target/crossval/<case>.json` and the summary
//! files, and snapshots its bucketed divergence into `crossval/golden/`.
//!
//! The reference-defaults axis runs here too (`reference_defaults`): every built-in model ×
//! prompt, teacher-forced, each reference with its own library defaults and every core
//! against our engine with its defaults (`bitnet_crossval::runner::run_defaults_case`),
//! judged with llama-perplexity's KLD statistics inside the references' own measured spread
//! (`tolerance::defaults_bound`). It shares this binary so that it reuses the exact axis'
//! deterministic reference runs. Rows go to `target/crossval/defaults.{json,txt}`;
//! `make crossval` prints that table after the summary.
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

use bitnet_crossval::cases::ModelSource;
use bitnet_crossval::cases::{
    builtin_models, full_shape_models, long_context_models, Case, Mode, ModelCase, Prompt, CODE,
    LONG, LONG_CONTEXT, PROMPTS, SHORT, SINGLE_TOKEN, TOKEN_COUNTS, UNICODE, WHITESPACE,
};
use bitnet_crossval::golden::GoldenView;
use bitnet_crossval::kld::KldStats;
use bitnet_crossval::report::{self, CaseReport, Status};
use bitnet_crossval::routing::{route, FileFacts, Route};
use bitnet_crossval::runner::{axes_settings, forget, run_case, run_defaults_case, DefaultsReport};

/// The built-in model case with this id (ids are listed by `builtin_models`).
fn model(id: &str) -> ModelCase {
    builtin_models()
        .into_iter()
        .find(|m| m.id() == id)
        .unwrap_or_else(|| panic!("no built-in model case {id}"))
}

fn check(case: &Case) -> CaseReport {
    let report = run_case(case);
    report::record(&report).expect("write target/crossval reports");
    println!("{}", report::table_row(&report.summary_row()));
    match report.status {
        Status::Fail | Status::NotApplicable => panic!(
            "{}",
            report
                .message
                .as_deref()
                .unwrap_or("failed without a message")
        ),
        Status::Skipped => {
            // Only CROSSVAL_ALLOW_CPP_FAIL=1 gets here; say so loudly, record no golden.
            eprintln!(
                "SKIPPED {}: {}",
                report.case,
                report.message.as_deref().unwrap_or("")
            );
        }
        Status::Pass => {
            let tolerance = report
                .tolerance
                .as_ref()
                .expect("a passing case has a tolerance");
            assert!(
                tolerance.exact,
                "built-in case {} ran under {} ({}): every built-in model must be bit-exact",
                report.case, tolerance.name, tolerance.reason
            );
            let mut settings = insta::Settings::clone_current();
            settings.set_snapshot_path("../golden");
            settings.set_prepend_module_to_snapshot(false);
            settings.bind(|| {
                insta::assert_json_snapshot!(report.case.clone(), GoldenView::of(&report))
            });
        }
    }
    report
}

#[test_log::test(rstest::rstest)]
fn parity(
    #[values(
        model("bitnet-tiny-f32-folded-s0@llama_cpp"),
        model("bitnet-tiny-f16-folded-s0@llama_cpp"),
        model("bitnet-tiny-tq1_0-folded-s0@llama_cpp"),
        model("bitnet-tiny-tq2_0-folded-s0@llama_cpp"),
        model("bitnet-tiny-tq2_0-tensor-s0@llama_cpp"),
        model("bitnet-tiny-f32-folded-s0@bitnet_cpp"),
        model("bitnet-tiny-f16-folded-s0@bitnet_cpp"),
        model("bitnet-tiny-tq1_0-folded-s0@bitnet_cpp"),
        model("bitnet-tiny-tq2_0-folded-s0@bitnet_cpp"),
        model("smollm2-135m-q4_1@llama_cpp"),
        model("bitnet-tiny-i2_s-folded-s0@bitnet_cpp"),
        model("bitnet-b158-tiny-iq2_bn-folded-s0@ik_llama_cpp"),
        model("bitnet-b158-tiny-i2_s-folded-s0-to-iq2_bn@ik_llama_cpp")
    )]
    model: ModelCase,
    #[values(SHORT, LONG, CODE, UNICODE, WHITESPACE, SINGLE_TOKEN)] prompt: Prompt,
    #[values(1, 8, 32)] n_tokens: usize,
    #[values(Mode::TeacherForced, Mode::FreeRunning)] mode: Mode,
) {
    check(&Case {
        model,
        prompt,
        n_tokens,
        mode,
    });
}

/// Past 2048 positions on every reference: [`LONG_CONTEXT`] (2,000+ prompt tokens) and 32
/// teacher-forced tokens, every position compared, exact. A prompt past a model's context
/// is a not-applicable row (`tests/user_zoo.rs` checks that); our engine refuses positions
/// past its context with a typed error (`bitnet-inference`'s session tests).
#[test_log::test(rstest::rstest)]
fn long_context(
    #[values(
        "bitnet-tiny-tq2_0-folded-s0-spm-ctx4096@llama_cpp",
        "bitnet-tiny-i2_s-folded-s0-spm-ctx4096@bitnet_cpp",
        "bitnet-b158-tiny-iq2_bn-folded-s0-spm-ctx4096@ik_llama_cpp"
    )]
    id: &str,
) {
    let model = long_context_models()
        .into_iter()
        .find(|m| m.id() == id)
        .unwrap_or_else(|| panic!("no long-context model case {id}"));
    let _forget = Forget(model.clone());
    let report = check(&Case {
        model,
        prompt: LONG_CONTEXT,
        n_tokens: 32,
        mode: Mode::TeacherForced,
    });
    if report.status == Status::Pass {
        let positions = report.prompt_tokens.len() + 31;
        assert!(positions >= 2048, "{id}: only {positions} positions");
    }
}

/// The full 2B-4T shape on every reference: the short prompt and 8 teacher-forced tokens,
/// every position compared, exact.
#[test_log::test(rstest::rstest)]
fn full_shape(
    #[values(
        "bitnet-2b4t-tq2_0-folded-s0@llama_cpp",
        "bitnet-2b4t-i2_s-folded-s0@bitnet_cpp",
        "bitnet-b158-2b4t-iq2_bn-folded-s0@ik_llama_cpp"
    )]
    id: &str,
) {
    let model = full_shape_models()
        .into_iter()
        .find(|m| m.id() == id)
        .unwrap_or_else(|| panic!("no full-shape model case {id}"));
    let _forget = Forget(model.clone());
    check(&Case {
        model,
        prompt: SHORT,
        n_tokens: 8,
        mode: Mode::TeacherForced,
    });
}

/// Drops the runner's caches of a model used by one case only (long context: 2,000+ rows of
/// logits per side; full shape: 2B-parameter models), when the case ends, pass or fail.
struct Forget(ModelCase);

impl Drop for Forget {
    fn drop(&mut self) {
        forget(&self.0);
    }
}

#[test_log::test]
fn every_builtin_model_is_in_the_matrix() {
    let source = include_str!("per_token_parity.rs");
    for m in builtin_models() {
        assert!(
            source.contains(&format!("model(\"{}\")", m.id())),
            "built-in model {} has no rstest value in `parity`",
            m.id()
        );
    }
    for m in long_context_models().into_iter().chain(full_shape_models()) {
        assert!(
            source.contains(&format!("\"{}\"", m.id())),
            "model case {} has no rstest value",
            m.id()
        );
    }
    assert_eq!(TOKEN_COUNTS, [1, 8, 32]);
    assert_eq!(PROMPTS.len(), 6);
}

/// The built-in matrix and user models are routed by the same rules: each built-in model's
/// file is routed to the reference the matrix runs it on, in the same way (as it is, or
/// through the reference's converter).
#[test_log::test]
fn routing_sends_each_builtin_model_to_its_reference() {
    for m in builtin_models() {
        let (source, expected) = match &m.source {
            ModelSource::Converted {
                from, ftype, to, ..
            } => (from.as_ref(), Route::Convert { ftype: *ftype, to }),
            other => (other, Route::Direct),
        };
        let path = match source {
            ModelSource::Fixture(spec) => bitnet_fixtures::fixture(spec),
            ModelSource::SmolLm2 => bitnet_fixtures::smollm2_path(),
            other => panic!("built-in model {} has source {other:?}", m.id()),
        }
        .unwrap_or_else(|e| panic!("{}: {e}", m.id()));
        let facts = FileFacts::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(route(&facts, m.reference), expected, "{}", m.id());
    }
}

// The reference-defaults axis.

/// The table's head: the settings of both axes, then the column names.
fn header() -> String {
    format!(
        "reference-defaults axis (teacher-forced; KL(p_ref_defaults || p), nats)\n{}{COLUMNS}",
        axes_settings()
    )
}

const COLUMNS: &str = "status model                                                reference     prompt         pos   ours: mean KL    p99 KL    max KL  top1%  top5%   ref det vs defaults: mean KL    max KL  top1%";

fn line(r: &DefaultsReport) -> String {
    let stats = |s: &Option<KldStats>| match s {
        Some(s) => format!(
            "{:>9.2e} {:>9.2e} {:>9.2e} {:>6.1} {:>6.1}",
            s.mean_kl,
            s.p99_kl,
            s.max_kl,
            100.0 * s.top1_same,
            100.0 * s.top5_overlap
        ),
        None => format!("{:>9} {:>9} {:>9} {:>6} {:>6}", "-", "-", "-", "-", "-"),
    };
    let note = r.message.as_deref().unwrap_or("");
    format!(
        "{:<6} {:<52} {:<13} {:<13} {:>5}   {}   {}  {note}",
        r.status.label(),
        r.model,
        r.reference,
        r.prompt,
        r.positions,
        stats(&r.engine),
        stats(&r.reference_spread)
    )
}

/// A built-in model case on the defaults axis (the same lookup as [`model`], named apart so
/// that `every_builtin_model_is_on_the_defaults_axis` can find this axis' list).
fn defaults_model(id: &str) -> ModelCase {
    model(id)
}

#[test_log::test(rstest::rstest)]
fn reference_defaults(
    #[values(
        defaults_model("bitnet-tiny-f32-folded-s0@llama_cpp"),
        defaults_model("bitnet-tiny-f16-folded-s0@llama_cpp"),
        defaults_model("bitnet-tiny-tq1_0-folded-s0@llama_cpp"),
        defaults_model("bitnet-tiny-tq2_0-folded-s0@llama_cpp"),
        defaults_model("bitnet-tiny-tq2_0-tensor-s0@llama_cpp"),
        defaults_model("bitnet-tiny-f32-folded-s0@bitnet_cpp"),
        defaults_model("bitnet-tiny-f16-folded-s0@bitnet_cpp"),
        defaults_model("bitnet-tiny-tq1_0-folded-s0@bitnet_cpp"),
        defaults_model("bitnet-tiny-tq2_0-folded-s0@bitnet_cpp"),
        defaults_model("smollm2-135m-q4_1@llama_cpp"),
        defaults_model("bitnet-tiny-i2_s-folded-s0@bitnet_cpp"),
        defaults_model("bitnet-b158-tiny-iq2_bn-folded-s0@ik_llama_cpp"),
        defaults_model("bitnet-b158-tiny-i2_s-folded-s0-to-iq2_bn@ik_llama_cpp")
    )]
    model: ModelCase,
    #[values(SHORT, LONG, CODE, UNICODE, WHITESPACE, SINGLE_TOKEN)] prompt: Prompt,
) {
    let r = run_defaults_case(&model, &prompt);
    let row = line(&r);
    println!("{row}");
    report::record_table_row("defaults", &header(), &r.case, &r, row)
        .expect("write target/crossval/defaults.*");
    match r.status {
        Status::Pass => {}
        Status::Skipped => report::record_skip(
            &r.case,
            &r.reference,
            r.message.as_deref().unwrap_or_default(),
        )
        .expect("record the skip in target/crossval"),
        Status::Fail | Status::NotApplicable => {
            panic!("{}", r.message.unwrap_or_else(|| "failed".into()))
        }
    }
}

#[test_log::test]
fn every_builtin_model_is_on_the_defaults_axis() {
    let source = include_str!("per_token_parity.rs");
    for m in builtin_models() {
        assert!(
            source.contains(&format!("defaults_model(\"{}\")", m.id())),
            "built-in model {} is not on the defaults axis",
            m.id()
        );
    }
}
