//! Every engine against the BitNet definition (features `crossval` and
//! `integration-tests`): for each built-in model, our engine under each reference's numerics
//! and each reference that runs it evaluate the same sequence
//! (`bitnet_crossval::definition::check`), and their logits are compared with the f64
//! definition forward under both activation variants. The table (mean / p99 / max KL, top-1
//! same, top-5 overlap, bound, verdict) is printed and written to
//! `target/crossval/definition.json`; a row outside its bound fails, naming the engine.
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

use bitnet_crossval::cases::{builtin_models, ModelSource, N_CTX};
use bitnet_crossval::definition::check::{
    check_model, model_path, record_rows, table, CheckError, ModelCheck, Row, Verdict,
};
use bitnet_crossval::definition::Activations;
use bitnet_crossval::runner::skip_allowed;
use bitnet_sys::Reference;

/// The built-in model sources, each with the references the matrix runs it on.
fn sources() -> Vec<(ModelSource, Vec<Reference>)> {
    let mut out: Vec<(ModelSource, Vec<Reference>)> = Vec::new();
    for m in builtin_models() {
        match out.iter_mut().find(|(s, _)| *s == m.source) {
            Some((_, refs)) => refs.push(m.reference),
            None => out.push((m.source, vec![m.reference])),
        }
    }
    out
}

/// The rows of one model source, or why it could not be checked.
fn check_source(
    source: &ModelSource,
    references: &[Reference],
    skipped: &mut Vec<String>,
) -> Result<Vec<Row>, String> {
    let id = source.id();
    let path = match model_path(source) {
        Ok(p) => p,
        Err(e @ CheckError::Unavailable { .. }) if skip_allowed() => {
            skipped.push(format!("{id}: {e}"));
            return Ok(Vec::new());
        }
        Err(e) => return Err(format!("{id}: {e}")),
    };
    let check = ModelCheck {
        id,
        references: references.iter().map(|&r| (r, path.clone())).collect(),
        path,
        n_ctx: N_CTX,
    };
    let mut checked = check_model(&check, skip_allowed())?;
    skipped.append(&mut checked.skipped);
    Ok(checked.rows)
}

#[test_log::test]
fn every_engine_is_within_its_bound_of_the_definition() {
    let (mut rows, mut errors, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for (source, references) in sources() {
        match check_source(&source, &references, &mut skipped) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => errors.push(e),
        }
    }
    println!("{}", table(&rows));
    record_rows("definition", &rows).expect("write target/crossval/definition.*");
    println!("definition table: target/crossval/definition.{{txt,json}}");
    for (i, s) in skipped.iter().enumerate() {
        bitnet_crossval::report::record_skip(&format!("definition_{i}"), "-", s)
            .expect("record the skip in target/crossval");
    }
    for r in &rows {
        match r.verdict {
            Verdict::Pass => {}
            Verdict::Fail => errors.push(r.message.clone().unwrap_or_default()),
            Verdict::Unbounded => errors.push(format!(
                "{} on {} ({} {}): no bound measured for this arch, format and variant",
                r.engine,
                r.model,
                r.arch.name(),
                r.format
            )),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // Every built-in (model, reference) pair produced both engines' rows under both variants.
    if skipped.is_empty() {
        let expected = builtin_models().len() * 2 * Activations::ALL.len();
        assert_eq!(rows.len(), expected, "rows of the definition table");
    }
}
