//! The reference-generic checks, run against every C++ reference (feature `crossval`):
//! each loads SmolLM2 (and the synthetic BitNet fixture it runs), tokenizes, evaluates the
//! prompt batched and token by token, continues it greedily, captures named intermediates,
//! refuses a truncated GGUF and turns a C++ assertion into an error, all without taking the
//! test binary down.
#![cfg(feature = "crossval")]

mod common;

use bitnet_crossval::logits_compare::{cosine_similarity, max_abs_diff};
use bitnet_fixtures::{Arch, FixtureSpec, WeightFormat};
use bitnet_sys::protocol::Request;
use bitnet_sys::{RefBuild, RefError, RefRunner, RefSession, Reference, SessionConfig};

use common::{
    assert_same_f32_bits, batched_and_stepped, load_smollm2, same_f32_bits, smollm2, ScratchDir,
    PROMPT, SMOLLM2_N_CTX, SMOLLM2_N_EMBD, SMOLLM2_N_LAYERS,
};

/// Largest batch ik_llama.cpp evaluates SmolLM2 (Q4_1 weights) with the kernels its
/// one-token steps use. From 32 tokens on, `MulMat::is_dequant_better` (iqk_mul_mat.cpp)
/// switches Q4_1 matmuls to an on-the-fly Q8_1_R8 repack (`iqk_convert_qX_1_q8_1_r8`) and its
/// own GEMM, and the logits move by up to 40 (measured: position 0 already differs by 9.0,
/// cosine as low as −0.85, top-1 changes at 15 of 33 positions; the one-token logits stay
/// within 1.4 of upstream's, cosine ≥ 0.992). Pinned in `reference_ik.rs`.
const IK_Q4_1_MAX_EXACT_BATCH: usize = 31;

/// A prompt long enough (33 tokens) for attention to span many positions and for a batch to
/// reach the sizes where kernels switch to batched paths.
const LONG_PROMPT: &str = "The capital of France is Paris. The capital of Germany is Berlin. \
    The capital of Italy is Rome. The capital of Spain is Madrid. The capital of Japan is";

/// SmolLM2's tokenization of [`PROMPT`] (no BOS: its vocab adds none), the same in every
/// reference.
const PROMPT_TOKENS: [u32; 5] = [504, 3575, 282, 4649, 314];

/// A binary in the runner's place that is another build — here another reference's runner —
/// is refused at the handshake, naming both builds.
#[test_log::test(rstest::rstest)]
#[case::ik_as_llama_cpp(Reference::IkLlamaCpp, Reference::LlamaCpp)]
#[case::llama_cpp_as_bitnet_cpp(Reference::LlamaCpp, Reference::BitnetCpp)]
fn a_runner_of_another_build_is_refused(#[case] actual: Reference, #[case] claimed: Reference) {
    let err = RefRunner::spawn_at(claimed, actual.runner_path()).unwrap_err();
    assert!(matches!(err, RefError::OtherBuild { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(claimed.pinned_build()), "{message}");
    assert!(message.contains(actual.pinned_build()), "{message}");
}

/// Each reference's two builds (`make refs`, `make refs-defaults`) answer with the same pin
/// and name their build; either one in the other's place is refused, naming the make target
/// that builds the one asked for.
#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::ik_llama_cpp(Reference::IkLlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn the_two_builds_name_themselves_and_are_not_interchangeable(#[case] r: Reference) {
    for build in [RefBuild::Deterministic, RefBuild::Defaults] {
        let runner = RefRunner::spawn_build(r, build).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(runner.build(), build, "{}", runner.version());
        assert!(
            runner.version().contains(r.pinned_build()),
            "{}",
            runner.version()
        );
    }
    let swapped = [
        (RefBuild::Deterministic, RefBuild::Defaults),
        (RefBuild::Defaults, RefBuild::Deterministic),
    ];
    for (wanted, found) in swapped {
        let err = RefRunner::spawn_build_at(r, wanted, r.runner_path_of(found)).unwrap_err();
        assert!(matches!(err, RefError::WrongBuild { .. }), "{err}");
        assert!(err.to_string().contains(wanted.make_target()), "{err}");
    }
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::ik_llama_cpp(Reference::IkLlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn loads_smollm2_and_tokenizes_the_prompt(#[case] r: Reference) {
    let mut s = load_smollm2(r, &[]);
    assert!(s.version().contains(r.name()), "{}", s.version());
    // The build this checkout pins (refs/<dir>/Cargo.lock), as the runner reports it.
    assert!(s.version().contains(r.pinned_build()), "{}", s.version());
    // Kernels every parity test assumes (docs/DESIGN.md §3.5): the AVX2 family, no -march=native.
    assert!(s.version().contains("AVX2"), "{}", s.version());
    assert_eq!(s.info().n_vocab, 49152, "{:?}", s.info());
    // Upstream llama.cpp pads the context to a multiple of 256.
    assert!(s.info().n_ctx >= SMOLLM2_N_CTX, "{:?}", s.info());
    let toks = s.tokenize(PROMPT, true, false).unwrap();
    eprintln!("{r}: tokens {toks:?}");
    assert_eq!(toks, PROMPT_TOKENS, "{r}");
    assert_eq!(s.detokenize(&toks).unwrap(), PROMPT, "{r}");
}

// Each case must be bit-identical: with one thread, no llamafile sgemm and no repacking,
// every matmul row goes through the same kernel whatever the batch size, and attention
// reduces in the same order. (Upstream llama.cpp with llamafile's sgemm on differed from
// position 4 on by up to ~0.7, attention ~1e-8 apart and amplified by the Q8_1 activation
// re-quantization; bitnet.cpp with tinyBLAS on by up to 1 logit. Both are off in the
// runners, refs/*/.cargo/config.toml and toolchain.cmake.)
#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp, usize::MAX)]
#[case::ik_llama_cpp(Reference::IkLlamaCpp, IK_Q4_1_MAX_EXACT_BATCH)]
#[case::bitnet_cpp(Reference::BitnetCpp, usize::MAX)]
fn batched_and_token_by_token_agree_bit_for_bit(#[case] r: Reference, #[case] max_batch: usize) {
    let mut s = load_smollm2(r, &[]);
    let mut toks = s.tokenize(LONG_PROMPT, true, false).unwrap();
    assert_eq!(toks.len(), 33, "{r}: {toks:?}");
    toks.truncate(max_batch);
    let run = batched_and_stepped(&mut s, &toks).unwrap();
    assert_eq!(run.batched.len(), toks.len(), "{r}: batched positions");
    assert_eq!(run.stepped.len(), toks.len(), "{r}: stepped positions");
    for (pos, (a, b)) in run.batched.iter().zip(&run.stepped).enumerate() {
        assert!(
            a.iter().chain(b).all(|v| v.is_finite()),
            "{r}: non-finite logits at position {pos}"
        );
        if let Err(e) = same_f32_bits(
            &format!("{r} position {pos} logits (batched vs stepped)"),
            a,
            b,
        ) {
            panic!(
                "{e}; max |Δ| {:e}, cosine {}",
                max_abs_diff(a, b),
                cosine_similarity(a, b)
            );
        }
    }
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::ik_llama_cpp(Reference::IkLlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn greedy_continuation_is_paris(#[case] r: Reference) {
    let mut s = load_smollm2(r, &[]);
    let toks = s.tokenize(PROMPT, true, false).unwrap();
    let gen = s.generate_greedy(&toks, 4).unwrap();
    let text = s.detokenize(&gen.tokens).unwrap();
    eprintln!("{r}: continuation {:?} = {text:?}", gen.tokens);
    assert!(text.starts_with(" Paris"), "{r}: {text:?}");
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::ik_llama_cpp(Reference::IkLlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn captures_named_intermediates(#[case] r: Reference) {
    let mut s = load_smollm2(r, &["attn_norm-0", "ffn_up-0", "l_out-*"]);
    let toks = s.tokenize(PROMPT, true, false).unwrap();
    let out = s.eval(&toks, 0).unwrap();
    let names: Vec<&str> = out.captured.iter().map(|t| t.name.as_str()).collect();
    eprintln!("{r}: captured {names:?}");
    let n = toks.len() as u64;
    let attn_norm = out.captured.iter().find(|t| t.name == "attn_norm-0");
    let attn_norm = attn_norm.unwrap_or_else(|| panic!("{r}: attn_norm-0 not captured"));
    assert_eq!(attn_norm.ne[..2], [SMOLLM2_N_EMBD, n], "{r}");
    assert_eq!(attn_norm.data.len() as u64, SMOLLM2_N_EMBD * n, "{r}");
    assert!(attn_norm.data.iter().all(|v| v.is_finite()), "{r}");
    // Every reference runs SmolLM2's FFN unfused, so ffn_up exists under its usual name.
    assert!(names.contains(&"ffn_up-0"), "{r}: {names:?}");
    let layers = names.iter().filter(|n| n.starts_with("l_out-")).count();
    assert_eq!(layers, SMOLLM2_N_LAYERS, "{r}: {names:?}");
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::ik_llama_cpp(Reference::IkLlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn a_truncated_gguf_is_an_error_not_a_dead_test_binary(#[case] r: Reference) {
    let dir = ScratchDir::new(&format!("truncated-{}", r.runner_name()));
    let p = dir.path().join("truncated.gguf");
    let mut data = std::fs::read(smollm2()).unwrap();
    data.truncate(data.len() / 3);
    std::fs::write(&p, &data).unwrap();
    let cfg = SessionConfig::deterministic(r, SMOLLM2_N_CTX);
    let err = RefSession::load(r, &p, &cfg).unwrap_err();
    eprintln!("{r}: {err}");
    assert!(
        matches!(err, RefError::Refused { .. } | RefError::Crashed { .. }),
        "{r}: {err}"
    );
}

/// ggml's Q8_K has no reference quantizer in `ggml_quantize_chunk`: upstream and bitnet.cpp
/// then assert on the size it did not write.
fn quantize_ref_q8_k() -> Request {
    Request::QuantizeRef {
        ty: 15,
        n_per_row: 256,
        x: common::values(256, 6),
    }
}

/// ik_llama.cpp's Q8_K64 activation quantizer asserts rows of at least 512.
fn quantize_cpu_short_q8_k64() -> Request {
    Request::QuantizeCpu {
        ty: 136,
        x: common::values(256, 6),
    }
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(
    Reference::LlamaCpp,
    quantize_ref_q8_k(),
    "GGML_ASSERT(result == nrows * row_size) failed"
)]
#[case::ik_llama_cpp(
    Reference::IkLlamaCpp,
    quantize_cpu_short_q8_k64(),
    "GGML_ASSERT(k >= 8*QK_IQ1BN) failed"
)]
#[case::bitnet_cpp(
    Reference::BitnetCpp,
    quantize_ref_q8_k(),
    "GGML_ASSERT(result == nrows * row_size) failed"
)]
fn a_cpp_assertion_surfaces_as_crashed_with_its_message(
    #[case] r: Reference,
    #[case] request: Request,
    #[case] message: &str,
) {
    let mut runner = RefRunner::spawn(r).expect("spawn");
    let err = runner.call(request).unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RefError::Crashed { .. }), "{r}: {err}");
    assert!(err.to_string().contains(message), "{r}: {err}");
    // The abort took the runner down, not this process: a new runner answers.
    drop(runner);
    let again = RefRunner::spawn(r).expect("respawn after the abort");
    assert!(again.version().contains(r.name()), "{}", again.version());
}

/// The same check on the synthetic BitNet model each reference runs in its own ternary
/// format: tokenize with the real LLaMA-3 vocabulary, then the prompt batched and token by
/// token must give bit-identical logits at every position.
#[test_log::test(rstest::rstest)]
#[case::llama_cpp_tq2_0(
    Reference::LlamaCpp,
    FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0)
)]
#[case::bitnet_cpp_i2_s(
    Reference::BitnetCpp,
    FixtureSpec::tiny(Arch::Bitnet, WeightFormat::I2_S)
)]
#[case::ik_llama_cpp_iq2_bn(
    Reference::IkLlamaCpp,
    FixtureSpec::tiny(Arch::BitnetB158, WeightFormat::IQ2_BN)
)]
fn a_synthetic_bitnet_fixture_agrees_batched_and_token_by_token(
    #[case] r: Reference,
    #[case] spec: FixtureSpec,
) {
    let path = bitnet_fixtures::fixture(&spec).unwrap_or_else(|e| panic!("{}: {e}", spec.id()));
    let cfg = SessionConfig::deterministic(r, 128);
    let mut s = RefSession::load(r, &path, &cfg)
        .unwrap_or_else(|e| panic!("{r}: loading {}: {e}", spec.id()));
    let toks = s.tokenize(LONG_PROMPT, true, false).unwrap();
    assert_eq!(toks[0], 128000, "{r}: the LLaMA-3 vocabulary adds BOS");
    let run = batched_and_stepped(&mut s, &toks).unwrap();
    assert_eq!(run.batched.len(), toks.len(), "{r}: batched positions");
    for (pos, (a, b)) in run.batched.iter().zip(&run.stepped).enumerate() {
        assert_same_f32_bits(
            &format!("{r} {} position {pos} (batched vs stepped)", spec.id()),
            a,
            b,
        );
    }
}
