//! Every engine against the BitNet definition (features `crossval` and
//! `integration-tests`): for each built-in model, our engine under each reference's numerics
//! and each reference that runs it evaluate the same sequence
//! (`bitnet_crossval::definition::check`), and their logits are compared with the f64
//! definition forward under both activation variants. The table (mean / p99 / max KL, top-1
//! same, top-5 overlap, bound, verdict) is printed and written to
//! `target/crossval/definition.json`; a row outside its bound fails, naming the engine.
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

use std::time::Instant;

use bitnet_crossval::cases::{builtin_models, ModelSource};
use bitnet_crossval::definition::check::{
    model_path, ours, table, theirs, write_json, CheckError, Engine, Row, Sequence, Verdict,
};
use bitnet_crossval::definition::{kld_stats, Activations, DefinitionModel};
use bitnet_crossval::runner::ALLOW_CPP_FAIL_ENV;
use bitnet_models::Model;
use bitnet_sys::Reference;
use bitnet_tokenizers::Tokenizer;

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

fn skip_allowed() -> bool {
    std::env::var(ALLOW_CPP_FAIL_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The rows of one model source, or why it could not be checked.
fn check_source(
    source: &ModelSource,
    references: &[Reference],
    skipped: &mut Vec<String>,
) -> Result<Vec<Row>, String> {
    let id = source.id();
    let started = Instant::now();
    let path = match model_path(source) {
        Ok(p) => p,
        Err(e @ CheckError::Unavailable { .. }) if skip_allowed() => {
            skipped.push(format!("{id}: {e}"));
            return Ok(Vec::new());
        }
        Err(e) => return Err(format!("{id}: {e}")),
    };
    let def = DefinitionModel::load(&path).map_err(|e| format!("{id}: definition: {e}"))?;
    let tokenizer = Tokenizer::from_gguf(&path).map_err(|e| format!("{id}: tokenizer: {e}"))?;
    let seq = Sequence::of(&tokenizer).map_err(|e| format!("{id}: {e}"))?;
    let tokens = seq.tokens();
    let mut definition = Vec::new();
    for act in Activations::ALL {
        let logits = def
            .logits(&tokens, act)
            .map_err(|e| format!("{id}: definition ({}): {e}", act.name()))?;
        definition.push((act, logits));
    }
    let facts = (def.arch(), def.weight_type());
    drop(def);
    let def_time = started.elapsed();
    let model = Model::load(&path).map_err(|e| format!("{id}: bitnet-rs: {e}"))?;
    let mut rows = Vec::new();
    for &r in references {
        for engine in [Engine::BitnetRs(r), Engine::Reference(r)] {
            let logits = match engine {
                Engine::BitnetRs(r) => ours(&model, r, &seq),
                Engine::Reference(r) => theirs(r, &path, &seq),
            };
            let logits = match logits {
                Ok(l) => l,
                Err(e @ CheckError::Unavailable { .. }) if skip_allowed() => {
                    skipped.push(format!("{id} / {}: {e}", engine.name()));
                    continue;
                }
                Err(e) => return Err(format!("{id} / {}: {e}", engine.name())),
            };
            for (act, d) in &definition {
                let stats =
                    kld_stats(d, &logits).map_err(|e| format!("{id} / {}: {e}", engine.name()))?;
                rows.push(Row::new(engine, &id, facts, *act, stats));
            }
        }
    }
    eprintln!(
        "definition: {id}: {} positions, definition {:.1} s, total {:.1} s",
        tokens.len(),
        def_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(rows)
}

#[test]
fn every_engine_is_within_its_bound_of_the_definition() {
    let (mut rows, mut errors, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for (source, references) in sources() {
        match check_source(&source, &references, &mut skipped) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => errors.push(e),
        }
    }
    println!("{}", table(&rows));
    let path = write_json(&rows).expect("write target/crossval/definition.json");
    println!("definition table: {}", path.display());
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
