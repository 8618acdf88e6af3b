//! The weights: how each tensor's values are drawn, and how they are encoded per format.
//!
//! Statistics (chosen so that logits are neither flat nor one-hot):
//! - linear weights `s·t`, `t ∈ {-1, 0, 1}` each with probability 1/3, and a per-tensor
//!   `s = f16(u / sqrt(2/3 · K))`, `u` uniform in [0.75, 1.25): outputs of unit-RMS inputs
//!   have RMS ≈ u. `s` is exactly representable in f16, so every format stores `s·t`
//!   exactly: F16 as is, TQ1_0/TQ2_0 as block scale `d = f16(amax) = s` (0 for an all-zero
//!   block), I2_S as tensor scale `max|w| = s` and IQ2_BN as row scale `max|w| = s` (0 for
//!   an all-zero row). Every tensor has at least one non-zero trit, so the I2_S scale is `s`;
//! - norm weights `1 + 0.05·n` (n ≈ N(0, 1)), except `output_norm`, whose gain sets the
//!   logit spread (see [`output_norm_gain`]);
//! - `token_embd` ≈ N(0, 0.05²), rounded to f16; with a quantized [`EmbeddingType`], those
//!   f16 values quantized row by row with ggml's reference quantizer.

use bitnet_gguf::GgmlType;
use bitnet_kernels::q8_k::QK_K;
use bitnet_kernels::{i2_s, iq2_bn, q8_0, tq1_0, tq2_0};
use half::f16;

use crate::plan::{tensors, Content, PlannedTensor};
use crate::rng::SplitMix64;
use crate::spec::{EmbeddingType, FixtureSpec, ScaleStyle};
use crate::FixtureError;

/// Standard deviation of the token embedding (and, tied, of the output head).
const EMBEDDING_STD: f64 = 0.05;

/// Standard deviation of the noise around a norm weight's gain.
const NORM_NOISE_STD: f64 = 0.05;

/// Aimed-for standard deviation of the logits: a unit-RMS hidden state times the output
/// norm's gain, dotted with N(0, 0.05²) embedding rows. About 3 keeps the softmax entropy
/// well away from both 0 and ln(128256) ≈ 11.8.
const TARGET_LOGIT_STD: f64 = 3.0;

/// The per-tensor scale factor `u` is uniform in [SCALE_SPREAD_MIN, SCALE_SPREAD_MAX).
const SCALE_SPREAD_MIN: f64 = 0.75;
const SCALE_SPREAD_MAX: f64 = 1.25;

/// Fraction of non-zero trits, which sets the RMS of a ternary row.
const NONZERO_FRACTION: f64 = 2.0 / 3.0;

/// The mean of `output_norm.weight`: `TARGET_LOGIT_STD / (EMBEDDING_STD · sqrt(n_embd))`
/// (2.65 for the tiny shape, 1.19 for 2B-4T).
fn output_norm_gain(n_embd: u64) -> f64 {
    TARGET_LOGIT_STD / (EMBEDDING_STD * (n_embd as f64).sqrt())
}

/// One ternary linear weight: `n` rows of `k` trits and its scale.
#[derive(Debug, Clone, PartialEq)]
pub struct TernaryTensor {
    /// `{k, n}` in ggml order: `n` rows (outputs) of `k` weights (inputs).
    pub dims: [u64; 2],
    /// Row-major trits in {-1, 0, 1}, `k · n` of them.
    pub trits: Vec<i8>,
    /// The scale `s` (exact in f16, positive). The weight is `s · t`: folded into the
    /// stored values with [`ScaleStyle::Folded`], in the `.scale` tensor with
    /// [`ScaleStyle::Tensor`].
    pub scale: f32,
}

impl TernaryTensor {
    /// The effective weights `s · t` (exact in f32 and f16).
    pub fn to_f32(&self) -> Vec<f32> {
        self.trits
            .iter()
            .map(|&t| f32::from(t) * self.scale)
            .collect()
    }
}

/// The ternary weight `name` (`blk.N.attn_q.weight`, ...) of `spec`'s model. The same for
/// every format, scale style and architecture of one shape and seed.
pub fn ternary_tensor(spec: &FixtureSpec, name: &str) -> Result<TernaryTensor, FixtureError> {
    let t = find(spec, name)?;
    match (&t.content, t.dims.as_slice()) {
        (Content::Linear, &[k, n]) => Ok(ternary(spec.seed, name, [k, n])),
        _ => Err(FixtureError::NotTernary {
            name: name.to_owned(),
        }),
    }
}

/// The values of tensor `name` as `spec`'s file stores them, as f32: what dequantizing it
/// gives in every format (`s·t` or `t` for linear weights, `[s]` for a `.scale`, the
/// dequantized embedding with a quantized [`EmbeddingType`]). The embedding is
/// n_vocab × n_embd values (1.3 GB for the 2B-4T shape).
pub fn tensor_f32(spec: &FixtureSpec, name: &str) -> Result<Vec<f32>, FixtureError> {
    let t = &find(spec, name)?;
    Ok(match &t.content {
        Content::Embedding => match spec.embedding {
            EmbeddingType::F16 => embedding(spec.seed, t).map(f16::to_f32).collect(),
            EmbeddingType::Q8_0 | EmbeddingType::TQ2_0 => {
                decode_rows(t.ggml_type, &encode_embedding(spec, t)?)?
            }
        },
        Content::Norm => norm(spec.seed, t, 1.0),
        Content::OutputNorm => norm(spec.seed, t, output_norm_gain(t.dims[0])),
        Content::Linear => linear_f32(spec, t),
        Content::Scale { weight, k } => vec![linear_scale(spec.seed, weight, *k)],
    })
}

/// The bytes of tensor `t` of `spec`'s file.
pub(crate) fn encode(spec: &FixtureSpec, t: &PlannedTensor) -> Result<Vec<u8>, FixtureError> {
    let bytes = match &t.content {
        Content::Embedding => encode_embedding(spec, t)?,
        Content::Norm => f32_bytes(&norm(spec.seed, t, 1.0)),
        Content::OutputNorm => f32_bytes(&norm(spec.seed, t, output_norm_gain(t.dims[0]))),
        Content::Linear => encode_rows(t.ggml_type, &linear_f32(spec, t), t.dims[0])?,
        Content::Scale { weight, k } => f32_bytes(&[linear_scale(spec.seed, weight, *k)]),
    };
    if bytes.len() as u64 != t.size {
        return Err(FixtureError::Internal {
            reason: format!(
                "{} encodes to {} bytes, its plan says {}",
                t.name,
                bytes.len(),
                t.size
            ),
        });
    }
    Ok(bytes)
}

/// The embedding's bytes, straight from the generator: the 2B-4T embedding is 657 MB as
/// F16 and is never held twice; quantized types are encoded one row at a time.
fn encode_embedding(spec: &FixtureSpec, t: &PlannedTensor) -> Result<Vec<u8>, FixtureError> {
    let mut out = Vec::with_capacity(t.size as usize);
    let mut values = embedding(spec.seed, t);
    match spec.embedding {
        EmbeddingType::F16 => values.for_each(|h| out.extend_from_slice(&h.to_le_bytes())),
        EmbeddingType::Q8_0 | EmbeddingType::TQ2_0 => {
            let k = t.dims[0];
            let mut row = Vec::with_capacity(k as usize);
            for _ in 0..t.dims[1] {
                row.clear();
                row.extend(values.by_ref().take(k as usize).map(f16::to_f32));
                out.extend_from_slice(&encode_rows(t.ggml_type, &row, k)?);
            }
        }
    }
    Ok(out)
}

fn find(spec: &FixtureSpec, name: &str) -> Result<PlannedTensor, FixtureError> {
    tensors(spec)?
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| FixtureError::UnknownTensor {
            id: spec.id(),
            name: name.to_owned(),
        })
}

fn linear_f32(spec: &FixtureSpec, t: &PlannedTensor) -> Vec<f32> {
    let w = ternary(spec.seed, &t.name, [t.dims[0], t.dims[1]]);
    match spec.scales {
        ScaleStyle::Folded => w.to_f32(),
        ScaleStyle::Tensor => w.trits.iter().map(|&x| f32::from(x)).collect(),
    }
}

/// The scale is the first draw of the weight's stream, so it can be had without the trits.
fn draw_scale(rng: &mut SplitMix64, k: u64) -> f32 {
    let base = 1.0 / (NONZERO_FRACTION * k as f64).sqrt();
    let u = SCALE_SPREAD_MIN + (SCALE_SPREAD_MAX - SCALE_SPREAD_MIN) * rng.uniform();
    f16::from_f64(base * u).to_f32()
}

fn linear_scale(seed: u64, weight: &str, k: u64) -> f32 {
    draw_scale(&mut SplitMix64::for_tensor(seed, weight), k)
}

fn ternary(seed: u64, name: &str, dims: [u64; 2]) -> TernaryTensor {
    let mut rng = SplitMix64::for_tensor(seed, name);
    let scale = draw_scale(&mut rng, dims[0]);
    let mut trits = vec![0i8; (dims[0] * dims[1]) as usize];
    rng.fill_trits(&mut trits);
    // I2_S stores max|w| over the tensor as its scale: it must be s.
    if trits.iter().all(|&t| t == 0) {
        if let Some(first) = trits.first_mut() {
            *first = 1;
        }
    }
    TernaryTensor { dims, trits, scale }
}

fn norm(seed: u64, t: &PlannedTensor, gain: f64) -> Vec<f32> {
    let mut rng = SplitMix64::for_tensor(seed, &t.name);
    (0..t.dims[0])
        .map(|_| (gain * (1.0 + NORM_NOISE_STD * rng.std_normal())) as f32)
        .collect()
}

fn embedding(seed: u64, t: &PlannedTensor) -> impl Iterator<Item = f16> {
    let mut rng = SplitMix64::for_tensor(seed, &t.name);
    let n: u64 = t.dims.iter().product();
    (0..n).map(move |_| f16::from_f64(EMBEDDING_STD * rng.std_normal()))
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Encodes a row-major matrix with rows of `k` values as `ggml_type`, with the reference
/// quantizers.
fn encode_rows(ggml_type: GgmlType, values: &[f32], k: u64) -> Result<Vec<u8>, FixtureError> {
    let k = k as usize;
    Ok(match ggml_type {
        GgmlType::F32 => f32_bytes(values),
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => {
            let mut blocks = vec![bytemuck::Zeroable::zeroed(); values.len() / q8_0::QK8_0];
            q8_0::quantize_row_q8_0_ref(values, &mut blocks)?;
            bytemuck::cast_slice::<q8_0::BlockQ8_0, u8>(&blocks).to_vec()
        }
        GgmlType::TQ1_0 => {
            let mut blocks = vec![bytemuck::Zeroable::zeroed(); values.len() / 256];
            tq1_0::quantize_row_tq1_0_ref(values, &mut blocks)?;
            bytemuck::cast_slice::<tq1_0::BlockTQ1_0, u8>(&blocks).to_vec()
        }
        GgmlType::TQ2_0 => {
            let mut blocks = vec![bytemuck::Zeroable::zeroed(); values.len() / 256];
            tq2_0::quantize_row_tq2_0_ref(values, &mut blocks)?;
            bytemuck::cast_slice::<tq2_0::BlockTQ2_0, u8>(&blocks).to_vec()
        }
        GgmlType::I2_S => {
            let mut out = vec![0u8; values.len() / 4 + i2_s::I2S_SCALE_TAIL_BYTES];
            i2_s::quantize_i2_s_ref(values, k, &mut out)?;
            out
        }
        GgmlType::IQ2_BN => {
            let row = iq2_bn::iq2_bn_row_size(k)?;
            let mut out = vec![0u8; values.len() / k * row];
            for (x, y) in values.chunks_exact(k).zip(out.chunks_exact_mut(row)) {
                iq2_bn::quantize_row_iq2_bn_ref(x, y)?;
            }
            out
        }
        other => return Err(unencodable(other)),
    })
}

/// Decodes the bytes of a quantized embedding (whole blocks, any alignment).
fn decode_rows(ggml_type: GgmlType, bytes: &[u8]) -> Result<Vec<f32>, FixtureError> {
    match ggml_type {
        GgmlType::Q8_0 => {
            let blocks: Vec<q8_0::BlockQ8_0> = pod_blocks(bytes)?;
            let mut out = vec![0f32; blocks.len() * q8_0::QK8_0];
            q8_0::dequantize_row_q8_0(&blocks, &mut out)?;
            Ok(out)
        }
        GgmlType::TQ2_0 => {
            let blocks: Vec<tq2_0::BlockTQ2_0> = pod_blocks(bytes)?;
            let mut out = vec![0f32; blocks.len() * QK_K];
            tq2_0::dequantize_row_tq2_0(&blocks, &mut out)?;
            Ok(out)
        }
        other => Err(unencodable(other)),
    }
}

/// Copies whole blocks out of `bytes` (which need not be aligned for `T`).
fn pod_blocks<T: bytemuck::Pod>(bytes: &[u8]) -> Result<Vec<T>, FixtureError> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size) {
        return Err(FixtureError::Internal {
            reason: format!("{} bytes are not whole {size}-byte blocks", bytes.len()),
        });
    }
    let mut blocks = vec![T::zeroed(); bytes.len() / size];
    bytemuck::cast_slice_mut::<T, u8>(&mut blocks).copy_from_slice(bytes);
    Ok(blocks)
}

/// A planned type the generator cannot encode (or decode): a bug in the plan.
fn unencodable(ggml_type: GgmlType) -> FixtureError {
    FixtureError::Internal {
        reason: format!("the generator has no codec for {ggml_type}"),
    }
}
