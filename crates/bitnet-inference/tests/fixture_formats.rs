//! Format equivalence on the synthetic BitNet fixtures (`bitnet-fixtures`): one spec is one
//! model, stored in every weight format, so formats that encode the same numbers must give
//! the same logits. Needs the llama-bpe vocabulary (`make setup`); without it the tests
//! say so and fail.

use bitnet_fixtures::{fixture, Arch, FixtureSpec, ScaleStyle, WeightFormat};
use bitnet_inference::{Session, SessionConfig};
use bitnet_models::{Model, Numerics, Reference};

/// F32 weights vs the same ternary weights in a quantized format: the quantized path rounds
/// every matmul input to 8 bits (Q8_K / I8_S / Q8_K64) and the F32 path does not, so the
/// logits move by the propagated activation rounding: measured max|Δ| 0.50 (TQ2_0), 0.62
/// (I2_S), 0.52 (IQ2_BN) on logits up to ~15.5 in magnitude (3.3-4.0%), cosine ≥ 0.9993.
/// The fixtures are deterministic; the bound is 5% of the largest |logit|, cosine ≥ 0.999.
const QUANTIZED_VS_F32_MAX_REL: f32 = 0.05;
const QUANTIZED_VS_F32_MIN_COSINE: f64 = 0.999;

/// Arbitrary ids inside the fixtures' 128256-token vocabulary (BOS first); format
/// equivalence holds for any input.
const TOKENS: [u32; 8] = [128000, 791, 6864, 315, 9822, 374, 12366, 11];

fn logits(arch: Arch, format: WeightFormat, scales: ScaleStyle, numerics: Numerics) -> Vec<f32> {
    let spec = FixtureSpec::tiny(arch, format).with_scales(scales);
    let path = fixture(&spec).unwrap_or_else(|e| panic!("fixture {}: {e}", spec.id()));
    let model = Model::load(&path).unwrap_or_else(|e| panic!("{}: {e}", spec.id()));
    let mut cfg = SessionConfig::new(64);
    cfg.numerics = numerics;
    Session::new(&model, &cfg).unwrap().eval(&TOKENS).unwrap()
}

fn compare(a: &[f32], b: &[f32]) -> (f32, f32, f64) {
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let amax = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    (d, amax, dot / (na * nb))
}

#[test]
fn tq1_0_and_tq2_0_give_identical_logits() {
    let upstream = Numerics::for_reference(Reference::LlamaCpp);
    for scales in ScaleStyle::ALL {
        let a = logits(Arch::Bitnet, WeightFormat::TQ1_0, scales, upstream);
        let b = logits(Arch::Bitnet, WeightFormat::TQ2_0, scales, upstream);
        assert_eq!(
            a, b,
            "{scales:?}: same trits, same f16 scales, same Q8_K activations"
        );
    }
}

#[test]
fn quantized_formats_stay_close_to_f32() {
    let cases = [
        (Arch::Bitnet, WeightFormat::TQ2_0, Reference::LlamaCpp),
        (Arch::Bitnet, WeightFormat::I2_S, Reference::BitnetCpp),
        (
            Arch::BitnetB158,
            WeightFormat::IQ2_BN,
            Reference::IkLlamaCpp,
        ),
    ];
    for (arch, format, reference) in cases {
        let numerics = Numerics::for_reference(reference);
        let f32_logits = logits(arch, WeightFormat::F32, ScaleStyle::Folded, numerics);
        let q = logits(arch, format, ScaleStyle::Folded, numerics);
        let (d, amax, cos) = compare(&q, &f32_logits);
        eprintln!("{arch:?} {format:?} vs F32: max|Δ| = {d}, max|logit| = {amax}, cosine {cos}");
        assert!(
            d <= QUANTIZED_VS_F32_MAX_REL * amax,
            "{format:?}: {d} vs {amax}"
        );
        assert!(
            cos >= QUANTIZED_VS_F32_MIN_COSINE,
            "{format:?}: cosine {cos}"
        );
    }
}

/// Every fixture format, under the numerics of the reference that runs it: the prompt in one
/// batch and token by token give bit-identical logits (every logit is one dot product over
/// the same cache in the same order, whatever the batch).
#[test]
fn prefill_equals_token_by_token_in_every_fixture_format() {
    let cases = [
        (Arch::Bitnet, WeightFormat::F32, Reference::LlamaCpp),
        (Arch::Bitnet, WeightFormat::F16, Reference::LlamaCpp),
        (Arch::Bitnet, WeightFormat::TQ1_0, Reference::LlamaCpp),
        (Arch::Bitnet, WeightFormat::TQ2_0, Reference::LlamaCpp),
        (Arch::Bitnet, WeightFormat::I2_S, Reference::BitnetCpp),
        (
            Arch::BitnetB158,
            WeightFormat::IQ2_BN,
            Reference::IkLlamaCpp,
        ),
    ];
    for (arch, format, reference) in cases {
        let spec = FixtureSpec::tiny(arch, format);
        let path = fixture(&spec).unwrap_or_else(|e| panic!("fixture {}: {e}", spec.id()));
        let model = Model::load(&path).unwrap_or_else(|e| panic!("{}: {e}", spec.id()));
        let mut cfg = SessionConfig::new(64);
        cfg.numerics = Numerics::for_reference(reference);
        let mut s = Session::new(&model, &cfg).unwrap();
        let batched = s.eval(&TOKENS).unwrap();
        s.reset();
        let mut stepped = Vec::with_capacity(batched.len());
        for &t in &TOKENS {
            stepped.extend(s.eval(&[t]).unwrap());
        }
        let first = batched
            .iter()
            .zip(&stepped)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(
            first,
            None,
            "{}: batched vs stepped logits differ",
            spec.id()
        );
    }
}

/// The fast mode's Q8_0 head against the file's F16 head on the same model: only the
/// head's weights and its activations are rounded to 8 bits, so the logits move by about
/// a Q8_0 step of the head's dot products. Measured on the tiny TQ2_0 fixture: max|Δ|
/// 0.114 on logits up to 15.24 (0.75%), cosine 0.99997. The bounds (2%, 0.9999) leave
/// room for other seeds and still fail a head read from the wrong rows or scaled wrongly
/// (max|Δ| of the order of the logits).
const Q8_0_HEAD_MAX_REL: f32 = 0.02;
const Q8_0_HEAD_MIN_COSINE: f64 = 0.9999;

#[test]
fn a_q8_0_head_stays_close_to_the_float_head() {
    let spec = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0);
    let path = fixture(&spec).unwrap_or_else(|e| panic!("fixture {}: {e}", spec.id()));
    let cfg = SessionConfig::new(64);
    let exact = Model::load(&path).unwrap();
    let want = Session::new(&exact, &cfg).unwrap().eval(&TOKENS).unwrap();
    let mut fast = Model::load(&path).unwrap();
    assert!(!fast.head_is_quantized());
    fast.quantize_head().unwrap();
    assert!(fast.head_is_quantized());
    let got = Session::new(&fast, &cfg).unwrap().eval(&TOKENS).unwrap();
    let (d, amax, cos) = compare(&got, &want);
    println!("Q8_0 head: max|Δ| {d} of max|logit| {amax}, cosine {cos}");
    assert!(got != want, "the head was not replaced");
    assert!(
        d <= Q8_0_HEAD_MAX_REL * amax,
        "max|Δ| {d} > {Q8_0_HEAD_MAX_REL} × {amax}"
    );
    assert!(cos >= Q8_0_HEAD_MIN_COSINE, "cosine {cos}");
}

/// Only a float head can be quantized: a Q8_0 one is refused by name, and the model is
/// left as it was.
#[test]
fn quantizing_an_already_quantized_head_is_an_error() {
    let spec = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0)
        .with_embedding(bitnet_fixtures::EmbeddingType::Q8_0);
    let path = fixture(&spec).unwrap_or_else(|e| panic!("fixture {}: {e}", spec.id()));
    let mut model = Model::load(&path).unwrap();
    let err = model.quantize_head().unwrap_err().to_string();
    assert!(err.contains("token_embd.weight"), "{err}");
    assert!(err.contains("only F32, F16 and BF16 heads"), "{err}");
    assert!(!model.head_is_quantized());
}
