//! The `Bench` request end to end on the tiny fixtures: our worker and each reference's
//! runner generate the same ids as a plain greedy generation over `Eval`, with the prompt
//! split into several batches (earlier chunks request no logits). Needs `make refs`.

use std::path::{Path, PathBuf};

use bitnet_bench::plan::{numerics_name, plan_of, OURS};
use bitnet_fixtures::{fixture, FixtureSpec};
use bitnet_sys::{KvType, RefRunner, RefSession, Reference, SessionConfig, SessionSettings};

const N_CTX: u32 = 64;
/// Smaller than the prompt, so the prompt takes three chunks.
const N_BATCH: u32 = 8;
const N_PROMPT: usize = 20;
const N_DECODE: u32 = 6;

fn config() -> SessionConfig {
    SessionConfig {
        n_ctx: N_CTX,
        n_threads: 2,
        n_batch: N_BATCH,
        type_k: KvType::F16,
        type_v: KvType::F16,
        capture: Vec::new(),
        settings: SessionSettings::Deterministic,
    }
}

fn ours(format: &str, model: &Path) -> RefSession {
    let numerics = plan_of(format).unwrap().numerics;
    let runner = RefRunner::spawn_program(
        OURS,
        PathBuf::from(env!("CARGO_BIN_EXE_bitnet-bench-engine")),
        &["--numerics".into(), numerics_name(numerics).into()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    RefSession::load_in(runner, model, &config()).unwrap_or_else(|e| panic!("{e}"))
}

/// Bench ids, and the ids of a greedy generation over `Eval` in the same session.
fn bench_and_generate(s: &mut RefSession) -> (Vec<u32>, Vec<u32>) {
    let info = s.info().clone();
    let prompt = bitnet_bench::plan::synthetic_prompt(info.bos as u32, info.n_vocab, N_PROMPT);
    let t = s.bench(&prompt, N_DECODE).unwrap_or_else(|e| panic!("{e}"));
    assert!(t.prefill_ns > 0 && t.decode_ns > 0, "{t:?}");
    let bench: Vec<u32> = t.tokens.iter().map(|&t| t as u32).collect();
    // generate_greedy starts from an empty cache whatever the bench left in it.
    let gen = s
        .generate_greedy(&prompt, N_DECODE as usize)
        .unwrap_or_else(|e| panic!("{e}"));
    (bench, gen.tokens)
}

fn check(format: &str, reference: Reference) {
    let plan = plan_of(format).unwrap();
    let model = fixture(&FixtureSpec::tiny(plan.arch, plan.format)).unwrap();

    let mut mine = ours(format, &model);
    assert!(mine.version().starts_with(OURS), "{}", mine.version());
    let (our_bench, our_gen) = bench_and_generate(&mut mine);
    assert_eq!(our_bench, our_gen, "{OURS} on {format}: bench vs generate");
    assert_eq!(our_bench.len(), N_DECODE as usize);

    let mut theirs =
        RefSession::load(reference, &model, &config()).unwrap_or_else(|e| panic!("{e}"));
    let (ref_bench, ref_gen) = bench_and_generate(&mut theirs);
    assert_eq!(
        ref_bench, ref_gen,
        "{reference} on {format}: bench vs generate"
    );
    assert_eq!(our_bench, ref_bench, "{OURS} vs {reference} on {format}");
}

#[test]
fn i2_s_on_bitnet_cpp() {
    check("i2_s", Reference::BitnetCpp);
}

#[test]
fn tq2_0_on_llama_cpp() {
    check("tq2_0", Reference::LlamaCpp);
}

#[test]
fn iq2_bn_on_ik_llama_cpp() {
    check("iq2_bn", Reference::IkLlamaCpp);
}

#[test]
fn our_worker_refuses_what_it_does_not_serve() {
    let plan = plan_of("tq2_0").unwrap();
    let model = fixture(&FixtureSpec::tiny(plan.arch, plan.format)).unwrap();
    let mut s = ours("tq2_0", &model);
    let err = s.tokenize("hello", true, false).unwrap_err().to_string();
    assert!(err.contains("tokenize is unsupported"), "{err}");
    assert!(s.pid() > 0);
    // Eval still serves every position's logits.
    let out = s.eval(&[1, 2, 3], 0).unwrap();
    assert_eq!(out.logits.len(), 3 * out.n_vocab as usize);
}
