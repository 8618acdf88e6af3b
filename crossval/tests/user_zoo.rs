//! The user-model path on the shapes users have, in every CI run: each member of
//! `bitnet_fixtures::user_shape_zoo` (1 layer, MHA and MQA, head_dim 32 to 128, odd n_ff,
//! rope base 1e4 and 5e5, eps 1e-6, SPM vocabularies, `.scale` tensors, Q8_0 and TQ2_0
//! `token_embd`, a 64-token context; `bitnet` and `bitnet-b1.58`, every weight format) is
//! read as a user's file (`UserModel::read`), routed from the file alone, and run on one
//! case against every reference its route allows, bit-exact. `tests/user_models.rs` runs
//! the whole matrix on the files a user drops into `models/`; this is the cheap slice of it
//! that CI can afford.
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

use bitnet_crossval::cases::{Case, Mode, UserModel, LONG, SHORT};
use bitnet_crossval::report::{self, CaseReport, Status};
use bitnet_crossval::routing::Route;
use bitnet_crossval::runner::run_case;
use bitnet_fixtures::{fixture, user_shape_zoo, FixtureSpec};

/// The members' count, so that a member added to the zoo gets a case here too.
const ZOO_SIZE: usize = 10;

fn member(index: usize) -> (FixtureSpec, UserModel) {
    let spec = user_shape_zoo()
        .into_iter()
        .nth(index)
        .unwrap_or_else(|| panic!("the zoo has no member {index}"));
    let path = fixture(&spec).unwrap_or_else(|e| panic!("generating {}: {e}", spec.id()));
    let model = UserModel::read(path, spec.id());
    (spec, model)
}

/// Fails unless the case passed bit-exact (or was skipped under `CROSSVAL_ALLOW_CPP_FAIL=1`,
/// which is recorded as a skipped row).
fn assert_exact_pass(report: &CaseReport) {
    match report.status {
        Status::Pass => {
            let tolerance = report.tolerance.as_ref().expect("a pass has a tolerance");
            assert!(
                tolerance.exact,
                "{} ran under {} ({}): every zoo route must be exact",
                report.case, tolerance.name, tolerance.reason
            );
        }
        Status::Skipped => report::record_skip(
            &report.case,
            &report.reference,
            report.message.as_deref().unwrap_or_default(),
        )
        .expect("record the skip in target/crossval"),
        Status::Fail | Status::NotApplicable => panic!(
            "{}: {}",
            report.case,
            report.message.as_deref().unwrap_or("no message")
        ),
    }
}

#[test_log::test]
fn the_zoo_has_the_members_this_file_runs() {
    assert_eq!(user_shape_zoo().len(), ZOO_SIZE);
}

#[test_log::test(rstest::rstest)]
fn zoo_member_runs_exact_on_every_reference_its_file_allows(
    #[values(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)] index: usize,
) {
    let (spec, model) = member(index);
    if let Err(bad) = &model.facts {
        panic!(
            "zoo member {} does not read as a user model: {bad}",
            spec.id()
        );
    }
    let mut ran = 0;
    for (reference, route) in model.routes() {
        let Some(model_case) = model.case(reference, &route) else {
            let Route::NotApplicable(reason) = route else {
                unreachable!("only a not-applicable route has no case")
            };
            println!("{} on {reference}: not applicable: {reason}", spec.id());
            continue;
        };
        let case = Case {
            model: model_case,
            prompt: SHORT,
            n_tokens: 8,
            mode: Mode::TeacherForced,
        };
        let report = run_case(&case);
        println!("{} on {reference}: {:?}", spec.id(), report.status);
        assert_exact_pass(&report);
        ran += 1;
    }
    assert!(ran > 0, "no reference runs zoo member {}", spec.id());
}

/// A prompt longer than the model's own context is a not-applicable row, never a crash or
/// a truncation.
#[test_log::test]
fn a_prompt_past_the_models_context_is_not_applicable() {
    let short_context: Vec<(FixtureSpec, UserModel)> = (0..ZOO_SIZE)
        .map(member)
        .filter(|(_, m)| m.n_ctx() < 128)
        .collect();
    assert!(
        !short_context.is_empty(),
        "the zoo must keep a short-context member"
    );
    for (spec, model) in short_context {
        let (reference, route) = model
            .routes()
            .into_iter()
            .find(|(_, r)| !matches!(r, Route::NotApplicable(_)))
            .unwrap_or_else(|| panic!("no reference runs {}", spec.id()));
        let model_case = model.case(reference, &route).expect("a runnable route");
        let report = run_case(&Case {
            model: model_case,
            prompt: LONG,
            n_tokens: 1,
            mode: Mode::TeacherForced,
        });
        assert_eq!(
            report.status,
            Status::NotApplicable,
            "{}: {:?}",
            report.case,
            report.message
        );
        let message = report.message.unwrap_or_default();
        assert!(
            message.contains("> n_ctx 64"),
            "the row must give the context: {message}"
        );
    }
}
