//! The goldens can catch a change that keeps every greedy id: a copy of a built-in fixture
//! whose final norm is scaled by 1 + 1e-3 (every logit moves by about a thousandth of
//! itself, every argmax stays) still passes its parity case — both sides move together —
//! but its golden view no longer matches the committed snapshot of the original case.
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

use std::path::Path;

use bitnet_crossval::cases::{builtin_models, Case, Mode, ModelCase, ModelSource, SHORT};
use bitnet_crossval::golden::GoldenView;
use bitnet_crossval::report::{CaseReport, Status};
use bitnet_crossval::runner::run_case;
use bitnet_fixtures::fixture;
use bitnet_gguf::{GgmlType, GgufFile, GgufWriter};

/// The built-in model perturbed here, and the factor its `output_norm.weight` gets.
const MODEL: &str = "bitnet-tiny-tq2_0-folded-s0@llama_cpp";
const NORM_FACTOR: f32 = 1.0 + 1e-3;

fn case_of(model: ModelCase) -> Case {
    Case {
        model,
        prompt: SHORT,
        n_tokens: 8,
        mode: Mode::TeacherForced,
    }
}

/// `input` with `output_norm.weight` (F32) multiplied by [`NORM_FACTOR`], written to `out`.
fn perturbed_copy(input: &Path, out: &Path) {
    let file = GgufFile::open(input).expect("open the fixture");
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata() {
        w.add_metadata(key.clone(), value.clone())
            .expect("metadata");
    }
    for t in file.tensors() {
        let data = file.tensor_data(t);
        if t.name == "output_norm.weight" {
            assert_eq!(t.ggml_type, GgmlType::F32, "output_norm type");
            let scaled: Vec<u8> = data
                .chunks_exact(4)
                .flat_map(|b| {
                    let x = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                    (x * NORM_FACTOR).to_le_bytes()
                })
                .collect();
            w.add_tensor_owned(t.name.clone(), t.ggml_type, &t.dims, scaled)
        } else {
            w.add_tensor(t.name.clone(), t.ggml_type, &t.dims, data)
        }
        .expect("tensor");
    }
    w.write_to(out).expect("write the perturbed copy");
}

/// The committed snapshot of `case` (`crossval/golden/<case>.snap`) as JSON.
fn committed_golden(case: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("golden/{case}.snap"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make golden`)", path.display()));
    // insta's header is a `---`-fenced block before the JSON.
    let body = text
        .splitn(3, "---\n")
        .nth(2)
        .unwrap_or_else(|| panic!("{}: no insta header", path.display()));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn golden_json(r: &CaseReport, as_case: &str) -> serde_json::Value {
    let mut view = GoldenView::of(r);
    view.case = as_case.to_owned();
    serde_json::to_value(view).expect("golden JSON")
}

#[test_log::test]
fn a_perturbation_that_keeps_every_greedy_id_turns_the_golden_red() {
    let original = builtin_models()
        .into_iter()
        .find(|m| m.id() == MODEL)
        .expect("built-in model");
    let ModelSource::Fixture(spec) = &original.source else {
        panic!("{MODEL} is not a fixture")
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("perturbed.gguf");
    perturbed_copy(&fixture(spec).expect("fixture"), &copy);
    let perturbed = ModelCase {
        source: ModelSource::User {
            path: copy,
            slug: "perturbed".into(),
        },
        ..original.clone()
    };

    let base = run_case(&case_of(original));
    let moved = run_case(&case_of(perturbed));
    for r in [&base, &moved] {
        assert_eq!(r.status, Status::Pass, "{}: {:?}", r.case, r.message);
    }
    // Both sides moved together: every greedy id is the same as before.
    assert_eq!(moved.prompt_tokens, base.prompt_tokens);
    assert_eq!(moved.reference_generated, base.reference_generated);
    assert_eq!(moved.rust_generated, base.rust_generated);

    // The committed golden describes the original run exactly...
    let committed = committed_golden(&base.case);
    assert_eq!(golden_json(&base, &base.case), committed, "{}", base.case);
    // ...and not the perturbed one: the reference's logits digest moved.
    let seen = golden_json(&moved, &base.case);
    assert_ne!(
        seen, committed,
        "the perturbation left the golden unchanged"
    );
    assert_ne!(
        seen["reference_logits_digest"], committed["reference_logits_digest"],
        "the logits digest must catch it"
    );
}
