//! The paths users call, position by position against each reference (features `crossval`
//! and `integration-tests`): a prompt split into batches of 1, 7, 64 and fewer than the
//! prompt; `eval_last` (the output head on the last position only); the generation API's
//! per-step logits, greedy and seeded sampling; a cache reused across prompts that share a
//! prefix, rewound to it. One model per reference (TQ2_0 on llama.cpp, I2_S on bitnet.cpp,
//! IQ2_BN on ik_llama.cpp), deterministic settings, every comparison bit-exact.
//!
//! A reference is not always invariant to how a prompt is split into batches; where it is
//! not, the case runs the reference with the same split as ours and says so.
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

use std::path::PathBuf;

use bitnet_crossval::cases::{builtin_models, ModelSource, LONG};
use bitnet_crossval::logits_compare::max_abs_diff;
use bitnet_crossval::runner::reference_or_skip;
use bitnet_inference::{GenerateOptions, SamplingParams, Session, SessionConfig};
use bitnet_models::{Model, Numerics, Reference as EngineRef};
use bitnet_sys::{RefSession, Reference, SessionConfig as RefConfig};

/// Context of every session here.
const N_CTX: u32 = 512;
/// Prompt length: the first tokens of the long prompt.
const N_PROMPT: usize = 80;
/// Tokens generated in the generation-API cases.
const N_GENERATE: usize = 16;

struct Setup {
    reference: Reference,
    path: PathBuf,
    model: Model,
    prompt: Vec<u32>,
}

/// The model file of built-in case `id`, loaded by us, and the first [`N_PROMPT`] tokens of
/// the long prompt (the reference's tokenization). `None` (printed) only when the reference
/// is unavailable under `CROSSVAL_ALLOW_CPP_FAIL=1`.
fn setup(id: &str) -> Option<Setup> {
    let case = builtin_models()
        .into_iter()
        .find(|m| m.id() == id)
        .unwrap_or_else(|| panic!("no built-in model {id}"));
    let ModelSource::Fixture(spec) = &case.source else {
        panic!("{id} is not a fixture")
    };
    let path = bitnet_fixtures::fixture(spec).unwrap_or_else(|e| panic!("{id}: {e}"));
    let mut r = reference_session(case.reference, &path, N_CTX)?;
    let mut prompt = r.tokenize(LONG.text, true, false).expect("tokenize");
    assert!(prompt.len() >= N_PROMPT, "{id}: {} tokens", prompt.len());
    prompt.truncate(N_PROMPT);
    let model = Model::load(&path).expect("load");
    Some(Setup {
        reference: case.reference,
        path,
        model,
        prompt,
    })
}

/// The deterministic reference session with logical batch (= micro-batch) `n_batch`.
fn reference_session(which: Reference, path: &std::path::Path, n_batch: u32) -> Option<RefSession> {
    let mut config = RefConfig::deterministic(which, N_CTX);
    config.n_batch = n_batch;
    reference_or_skip(which, path, &config, "generation_path")
}

fn ours(s: &Setup, n_batch: usize) -> Session<'_> {
    let mut config = SessionConfig::new(N_CTX as usize);
    config.n_batch = n_batch;
    config.threads = Some(1);
    config.numerics = Numerics::for_reference(match s.reference {
        Reference::LlamaCpp => EngineRef::LlamaCpp,
        Reference::IkLlamaCpp => EngineRef::IkLlamaCpp,
        Reference::BitnetCpp => EngineRef::BitnetCpp,
    });
    Session::new(&s.model, &config).expect("session")
}

fn rows(flat: Vec<f32>, n_vocab: usize) -> Vec<Vec<f32>> {
    flat.chunks_exact(n_vocab).map(<[f32]>::to_vec).collect()
}

/// Fails at the first row that is not bit-identical.
fn assert_same_rows(what: &str, ours: &[Vec<f32>], theirs: &[Vec<f32>]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: row counts");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let d = max_abs_diff(a, b);
        assert!(
            a.len() == b.len() && d == 0.0,
            "{what}: row {i} differs (max |Δ| {d:e})"
        );
    }
}

const MODELS: [&str; 3] = [
    "bitnet-tiny-tq2_0-folded-s0@llama_cpp",
    "bitnet-tiny-i2_s-folded-s0@bitnet_cpp",
    "bitnet-b158-tiny-iq2_bn-folded-s0@ik_llama_cpp",
];

#[test_log::test]
fn the_models_are_built_in() {
    for id in MODELS {
        assert!(builtin_models().iter().any(|m| m.id() == id), "{id}");
    }
}

/// The prompt in batches of `n_batch` on both sides: every row bit-identical to the
/// reference run with the same split; whether the reference itself is invariant to the
/// split is printed.
#[test_log::test(rstest::rstest)]
fn prompt_split_into_batches(
    #[values(MODELS[0], MODELS[1], MODELS[2])] id: &str,
    #[values(1, 7, 64, N_PROMPT - 1)] n_batch: usize,
) {
    let Some(s) = setup(id) else { return };
    let Some(mut whole) = reference_session(s.reference, &s.path, N_CTX) else {
        return;
    };
    let Some(mut split) = reference_session(s.reference, &s.path, n_batch as u32) else {
        return;
    };
    let theirs_whole = whole.eval_and_get_logits(&s.prompt, 0).expect("reference");
    let theirs = split.eval_and_get_logits(&s.prompt, 0).expect("reference");
    let invariant = theirs == theirs_whole;
    println!(
        "{id}: {} is {}invariant to batches of {n_batch}{}",
        s.reference,
        if invariant { "" } else { "not " },
        if invariant {
            ""
        } else {
            "; the case follows its split"
        }
    );
    let mut session = ours(&s, n_batch);
    let n_vocab = session.n_vocab();
    let ours_rows = rows(session.eval(&s.prompt).expect("engine"), n_vocab);
    assert_same_rows(&format!("{id}, batches of {n_batch}"), &ours_rows, &theirs);
}

/// `eval_last` (the head on the last position only, chunked by `n_batch`) and `decode`.
#[test_log::test(rstest::rstest)]
fn eval_last_and_decode(#[values(MODELS[0], MODELS[1], MODELS[2])] id: &str) {
    let Some(s) = setup(id) else { return };
    let Some(mut r) = reference_session(s.reference, &s.path, N_CTX) else {
        return;
    };
    let theirs = r.eval_and_get_logits(&s.prompt, 0).expect("reference");
    let next = r
        .eval_and_get_logits(&[s.prompt[1]], N_PROMPT as u32)
        .expect("reference");
    let mut session = ours(&s, N_CTX as usize);
    let last = session.eval_last(&s.prompt).expect("eval_last").to_vec();
    assert_same_rows(&format!("{id} eval_last"), &[last], &theirs[N_PROMPT - 1..]);
    let stepped = session.decode(s.prompt[1]).expect("decode").to_vec();
    assert_same_rows(&format!("{id} decode"), &[stepped], &next);
}

/// The generation API: greedy generation's tokens and per-step logits are the reference's
/// greedy generation; a seeded sampled generation's per-step logits are the reference's on
/// the same tokens.
#[test_log::test(rstest::rstest)]
fn generation_api_per_step(#[values(MODELS[0], MODELS[1], MODELS[2])] id: &str) {
    let Some(s) = setup(id) else { return };
    let Some(mut r) = reference_session(s.reference, &s.path, N_CTX) else {
        return;
    };
    let mut session = ours(&s, N_CTX as usize);
    let mut steps: Vec<Vec<f32>> = Vec::new();
    let mut opts = GenerateOptions::greedy(N_GENERATE);
    opts.stop_at_eos = false;
    let gen = session
        .generate_with(&s.prompt, &opts, |_, logits| steps.push(logits.to_vec()))
        .expect("generate");
    let theirs = r.generate_greedy(&s.prompt, N_GENERATE).expect("reference");
    assert_eq!(gen.tokens, theirs.tokens, "{id}: greedy tokens");
    assert_same_rows(&format!("{id} greedy steps"), &steps, &theirs.logits);

    session.reset();
    steps.clear();
    opts.sampling = SamplingParams::with_temperature(0.8, 42);
    let sampled = session
        .generate_with(&s.prompt, &opts, |_, logits| steps.push(logits.to_vec()))
        .expect("generate");
    // The reference, teacher-forced on the sampled tokens: its last prompt row, then one
    // row per fed token.
    r.reset().expect("reset");
    let mut theirs = r.eval_and_get_logits(&s.prompt, 0).expect("reference");
    let mut expected = vec![theirs.pop().expect("a row")];
    for (i, &t) in sampled.tokens[..sampled.tokens.len() - 1]
        .iter()
        .enumerate()
    {
        let pos = (N_PROMPT + i) as u32;
        expected.extend(r.eval_and_get_logits(&[t], pos).expect("reference step"));
    }
    assert_same_rows(&format!("{id} sampled steps"), &steps, &expected);
}

/// A cache reused across two prompts that share a prefix: evaluate A, rewind to the shared
/// prefix, evaluate B's rest; on both sides, and equal to evaluating B from scratch.
#[test_log::test(rstest::rstest)]
fn prefix_reuse_and_rewind(#[values(MODELS[0], MODELS[1], MODELS[2])] id: &str) {
    const SHARED: usize = 50;
    let Some(s) = setup(id) else { return };
    let Some(mut r) = reference_session(s.reference, &s.path, N_CTX) else {
        return;
    };
    let a = &s.prompt;
    let mut b: Vec<u32> = s.prompt[..SHARED].to_vec();
    b.extend(s.prompt[..N_PROMPT - SHARED].iter().rev());
    let mut session = ours(&s, N_CTX as usize);
    let n_vocab = session.n_vocab();

    session.eval(a).expect("engine A");
    session.truncate(SHARED).expect("rewind");
    let ours_rest = rows(session.eval(&b[SHARED..]).expect("engine B rest"), n_vocab);
    r.eval_and_get_logits(a, 0).expect("reference A");
    let theirs_rest = r
        .eval_and_get_logits(&b[SHARED..], SHARED as u32)
        .expect("reference B rest (drops the cache past the prefix)");
    assert_same_rows(&format!("{id} reused prefix"), &ours_rest, &theirs_rest);

    session.reset();
    let fresh = rows(session.eval(&b).expect("engine B"), n_vocab);
    assert_same_rows(
        &format!("{id} reused prefix vs fresh"),
        &ours_rest,
        &fresh[SHARED..],
    );
}
