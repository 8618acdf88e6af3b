//! The per-token parity suite: every built-in model × prompt × token count × mode against
//! each reference that runs it (features `crossval` and `integration-tests`). User models
//! run in `tests/user_models.rs`.
//!
//! Each case checks tokenization parity, then compares every position's logits (prompt in
//! one batch, then one token at a time on both sides) under the model's tolerance
//! (`bitnet_crossval::tolerance`), writes `target/crossval/<case>.json` and the summary
//! files, and snapshots its bucketed divergence into `crossval/golden/`.
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

use bitnet_crossval::cases::ModelSource;
use bitnet_crossval::cases::{
    builtin_models, Case, Mode, ModelCase, Prompt, CODE, LONG, PROMPTS, SHORT, SINGLE_TOKEN,
    TOKEN_COUNTS, UNICODE, WHITESPACE,
};
use bitnet_crossval::golden::GoldenView;
use bitnet_crossval::report::{self, CaseReport, Status};
use bitnet_crossval::routing::{route, FileFacts, Route};
use bitnet_crossval::runner::run_case;
use rstest::rstest;

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

#[rstest]
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

#[test]
fn every_builtin_model_is_in_the_matrix() {
    let source = include_str!("per_token_parity.rs");
    for m in builtin_models() {
        assert!(
            source.contains(&format!("model(\"{}\")", m.id())),
            "built-in model {} has no rstest value in `parity`",
            m.id()
        );
    }
    assert_eq!(TOKEN_COUNTS, [1, 8, 32]);
    assert_eq!(PROMPTS.len(), 6);
}

/// The built-in matrix and user models are routed by the same rules: each built-in model's
/// file is routed to the reference the matrix runs it on, in the same way (as it is, or
/// through the reference's converter).
#[test]
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
