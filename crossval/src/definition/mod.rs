//! The BitNet definition as an oracle: the published computation, written for reading,
//! not speed, in f64.
//!
//! Bit-exact parity with a C++ reference proves that we copy it, bugs included. This module
//! is the third opinion: the forward pass of the BitNet b1.58 paper (and of the `llama`
//! graph it builds on) computed from the file's weights with nothing borrowed from the
//! engine except reading tensors (`bitnet-kernels`' scalar dequantizers). Per block:
//!
//! ```text
//! h = RMSNorm(x) · attn_norm
//! q, k, v = Wq·h, Wk·h, Wv·h                 (each times its `.scale`, if the file has one)
//! q, k = RoPE(q, pos), RoPE(k, pos)          (NEOX pairs (i, i + n_rot/2) for BitNet,
//!                                             normal pairs (2i, 2i+1) for llama)
//! a = softmax(q·kᵀ / √head_dim, causal) · v  (GQA: query head h reads KV head h / group)
//! a = RMSNorm(a) · attn_sub_norm             (BitNet only)
//! x = x + Wo·a
//! f = RMSNorm(x) · ffn_norm
//! m = act(Wgate·f) ⊙ (Wup·f)                 (act: ReLU² for bitnet-b1.58, SiLU otherwise)
//! m = RMSNorm(m) · ffn_sub_norm              (BitNet only)
//! x = x + Wdown·m
//! ```
//!
//! then `logits = W_out · (RMSNorm(x) · output_norm)`, with `W_out` = `output.weight` when
//! the file has one, else `token_embd` (tied). RMSNorm is `x / √(mean(x²) + eps)`.
//!
//! Two activation variants ([`Activations`]): exact, and the paper's int8 absmax
//! quantization of every activation entering a block's linear layer (per token:
//! `s = 127 / max|x|`, `q = clamp(round(x·s), -128, 127)`, the layer sees `q / s`).
//! The engines and references each quantize activations in their own way (Q8_K per 256,
//! I8_S per row, Q8_K64 per lane group, Q8_1 per 32); both variants bracket them.
//!
//! [`crate::kld`] holds llama-perplexity's KL-divergence statistics of an engine against the
//! definition, [`bounds`] the measured bound per (arch, format, variant), and (with the
//! `crossval` feature) [`check`] runs our engine and the references against it.

pub mod bounds;
#[cfg(feature = "crossval")]
pub mod check;
mod tensors;

use std::path::Path;

use bitnet_gguf::{GgmlType, GgufError, GgufFile};
use bitnet_kernels::KernelError;
use serde::Serialize;

use tensors::{matrix, vector, Matrix};

pub use crate::kld::{kld_stats, KldStats};
pub use bounds::{bound_for, DefinitionBound};

/// The most weights (all tensors' elements) a model may have for the definition check:
/// the forward holds every weight as f32 (4 bytes each) and multiplies each once per
/// position in f64, so this keeps it to ~2 GB and a few seconds per variant (SmolLM2-135M:
/// 0.8 s; the 2B-4T shape, 2.4 billion, would need ~10 GB and minutes).
pub const MAX_DEFINITION_WEIGHTS: u64 = 500_000_000;

/// `None` when `file` is small enough for the definition check, else the reason it is not
/// (for a report row that says so).
pub fn too_large_for_definition(file: &GgufFile) -> Option<String> {
    let n = file
        .tensors()
        .iter()
        .fold(0u64, |n, t| n.saturating_add(t.n_elements()));
    (n > MAX_DEFINITION_WEIGHTS).then(|| {
        format!(
            "{n} weights, over the definition check's limit of {MAX_DEFINITION_WEIGHTS} (the \
             f64 forward would take minutes and {} GB)",
            n.saturating_mul(4) / 1_000_000_000
        )
    })
}

/// How the activations entering each of a block's linear layers are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activations {
    /// f64 throughout.
    Exact,
    /// Quantized per token to int8 by absmax (`127 / max|x|`, round half to even, clamp to
    /// [-128, 127]) and dequantized, as in the BitNet b1.58 paper. The output head is not
    /// a ternary layer and sees exact activations.
    Int8Absmax,
}

impl Activations {
    pub const ALL: [Activations; 2] = [Activations::Exact, Activations::Int8Absmax];

    /// Short name for tables and ids.
    pub fn name(self) -> &'static str {
        match self {
            Activations::Exact => "exact",
            Activations::Int8Absmax => "int8_absmax",
        }
    }
}

/// What can make the definition refuse a file or an input. Each variant names its cause.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("architecture '{arch}' has no definition (bitnet, bitnet-b1.58 and llama do)")]
    UnsupportedArch { arch: String },
    #[error("required key '{key}' is missing")]
    MissingKey { key: String },
    #[error("key '{key}': {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("tensor '{name}' is missing")]
    MissingTensor { name: String },
    #[error("tensor '{tensor}' has dims {found:?}, expected {expected:?}")]
    Shape {
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor '{tensor}' has {found} bytes, expected {expected}")]
    Size {
        tensor: String,
        expected: usize,
        found: usize,
    },
    #[error("tensor '{tensor}' has type {ggml_type}, which the definition does not read")]
    UnsupportedType { tensor: String, ggml_type: GgmlType },
    #[error("tensor '{tensor}': {source}")]
    Dequantize {
        tensor: String,
        #[source]
        source: KernelError,
    },
    #[error("tensor '{tensor}' holds a non-finite value at element {index}")]
    NonFiniteWeight { tensor: String, index: usize },
    #[error("no tokens to evaluate")]
    EmptyInput,
    #[error("token {token} at index {index} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange {
        token: u32,
        index: usize,
        n_vocab: usize,
    },
    #[error("position {position}: logit {index} is not finite")]
    NonFiniteLogit { position: usize, index: usize },
}

/// The graphs the definition knows (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Arch {
    /// `bitnet`: NEOX RoPE, sub-norms, SiLU-gated FFN, optional `.scale` tensors.
    #[serde(rename = "bitnet")]
    Bitnet,
    /// `bitnet-b1.58` (BitNet b1.58 2B-4T): NEOX RoPE, sub-norms, ReLU²-gated FFN.
    #[serde(rename = "bitnet-b1.58")]
    BitnetB158,
    /// `llama`: normal RoPE (the GGUF conversion permutes Q and K for it), SwiGLU FFN, no
    /// sub-norms.
    #[serde(rename = "llama")]
    Llama,
}

impl Arch {
    fn from_name(name: &str) -> Option<Arch> {
        match name {
            "bitnet" => Some(Arch::Bitnet),
            "bitnet-b1.58" => Some(Arch::BitnetB158),
            "llama" => Some(Arch::Llama),
            _ => None,
        }
    }

    /// The GGUF name, also the prefix of its metadata keys.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Bitnet => "bitnet",
            Arch::BitnetB158 => "bitnet-b1.58",
            Arch::Llama => "llama",
        }
    }

    fn neox_rope(self) -> bool {
        matches!(self, Arch::Bitnet | Arch::BitnetB158)
    }

    fn has_sub_norms(self) -> bool {
        matches!(self, Arch::Bitnet | Arch::BitnetB158)
    }

    /// The FFN gate: `relu(g)²` for bitnet-b1.58, `silu(g) = g / (1 + e^-g)` otherwise.
    fn gate(self, g: f64) -> f64 {
        match self {
            Arch::BitnetB158 => g.max(0.0).powi(2),
            Arch::Bitnet | Arch::Llama => g / (1.0 + (-g).exp()),
        }
    }
}

/// Hyper-parameters, read from the metadata without any engine code.
#[derive(Debug, Clone, PartialEq)]
struct HParams {
    n_vocab: usize,
    n_embd: usize,
    n_ff: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    /// Rotated dimensions per head (even, at most `head_dim`).
    n_rot: usize,
    rope_base: f64,
    /// Positions are multiplied by this before rotating (1 / linear scaling factor).
    rope_scale: f64,
    rms_eps: f64,
}

/// A linear layer: `W · x`, times the `.scale` tensor when the file has one.
#[derive(Debug, Clone, PartialEq)]
struct Linear {
    w: Matrix,
    scale: Option<f64>,
}

impl Linear {
    /// The layer on every token, its input quantized first under
    /// [`Activations::Int8Absmax`]. Shapes: xs: (n_tok, cols) → (n_tok, rows).
    fn apply_all(&self, xs: &[Vec<f64>], act: Activations) -> Vec<Vec<f64>> {
        let mut ys = match act {
            Activations::Exact => self.w.mul_all(xs),
            Activations::Int8Absmax => {
                let q: Vec<Vec<f64>> = xs.iter().map(|x| int8_absmax(x)).collect();
                self.w.mul_all(&q)
            }
        };
        if let Some(s) = self.scale {
            ys.iter_mut().flatten().for_each(|v| *v *= s);
        }
        ys
    }
}

/// One transformer block's weights.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    attn_norm: Vec<f64>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    attn_sub_norm: Option<Vec<f64>>,
    wo: Linear,
    ffn_norm: Vec<f64>,
    ffn_gate: Linear,
    ffn_up: Linear,
    ffn_sub_norm: Option<Vec<f64>>,
    ffn_down: Linear,
}

/// A model file read for the definition forward: every weight expanded to f32 (exact, see
/// `tensors`), computed with in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionModel {
    arch: Arch,
    hp: HParams,
    /// The type of the blocks' linear weights (`blk.0.attn_q.weight`), i.e. the format.
    weight_type: GgmlType,
    /// (n_vocab, n_embd).
    token_embd: Matrix,
    /// `output.weight` (n_vocab, n_embd), or `None` when the head is tied to `token_embd`.
    output: Option<Matrix>,
    output_norm: Vec<f64>,
    blocks: Vec<Block>,
}

impl DefinitionModel {
    /// Reads the model at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<DefinitionModel, DefinitionError> {
        DefinitionModel::from_gguf(&GgufFile::open(path)?)
    }

    /// Reads an opened file: hyper-parameters, then every tensor the graph needs, each
    /// checked against its expected shape.
    pub fn from_gguf(file: &GgufFile) -> Result<DefinitionModel, DefinitionError> {
        let arch_name = file.get_str("general.architecture").map_err(key_err)?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| DefinitionError::UnsupportedArch {
            arch: arch_name.to_owned(),
        })?;
        let (hp, n_layer) = hparams(file, arch)?;
        let (d, nq, nkv, nff) = (
            hp.n_embd,
            hp.n_head * hp.head_dim,
            hp.n_head_kv * hp.head_dim,
            hp.n_ff,
        );
        let linear = |name: String, rows, cols| -> Result<Linear, DefinitionError> {
            let scale_name = format!("{}.scale", name.trim_end_matches(".weight"));
            let scale = match file.tensor(&scale_name) {
                Some(_) => Some(vector(file, &scale_name, 1)?[0]),
                None => None,
            };
            Ok(Linear {
                w: matrix(file, &name, rows, cols)?,
                scale,
            })
        };
        let sub_norm = |name: String, n| match arch.has_sub_norms() {
            true => vector(file, &name, n).map(Some),
            false => Ok(None),
        };
        let mut blocks = Vec::new();
        for i in 0..n_layer {
            let p = |t: &str| format!("blk.{i}.{t}.weight");
            blocks.push(Block {
                attn_norm: vector(file, &p("attn_norm"), d)?,
                wq: linear(p("attn_q"), nq, d)?,
                wk: linear(p("attn_k"), nkv, d)?,
                wv: linear(p("attn_v"), nkv, d)?,
                attn_sub_norm: sub_norm(p("attn_sub_norm"), nq)?,
                wo: linear(p("attn_output"), d, nq)?,
                ffn_norm: vector(file, &p("ffn_norm"), d)?,
                ffn_gate: linear(p("ffn_gate"), nff, d)?,
                ffn_up: linear(p("ffn_up"), nff, d)?,
                ffn_sub_norm: sub_norm(p("ffn_sub_norm"), nff)?,
                ffn_down: linear(p("ffn_down"), d, nff)?,
            });
        }
        let output = match file.tensor("output.weight") {
            Some(_) => Some(matrix(file, "output.weight", hp.n_vocab, d)?),
            None => None,
        };
        let weight_type = tensors::info(file, "blk.0.attn_q.weight", &[d, nq])?.ggml_type;
        Ok(DefinitionModel {
            arch,
            weight_type,
            token_embd: matrix(file, "token_embd.weight", hp.n_vocab, d)?,
            output,
            output_norm: vector(file, "output_norm.weight", d)?,
            hp,
            blocks,
        })
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The type of the blocks' linear weights: the model's format.
    pub fn weight_type(&self) -> GgmlType {
        self.weight_type
    }

    pub fn n_vocab(&self) -> usize {
        self.hp.n_vocab
    }

    pub fn n_layer(&self) -> usize {
        self.blocks.len()
    }

    /// The logits of every position of `tokens` (token `i` at position `i`, attending to
    /// positions `0..=i`), rounded to f32 only at the end. Shape: (n_tokens, n_vocab).
    pub fn logits(
        &self,
        tokens: &[u32],
        act: Activations,
    ) -> Result<Vec<Vec<f32>>, DefinitionError> {
        let hp = &self.hp;
        if tokens.is_empty() {
            return Err(DefinitionError::EmptyInput);
        }
        if let Some((index, &token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= hp.n_vocab)
        {
            return Err(DefinitionError::TokenOutOfRange {
                token,
                index,
                n_vocab: hp.n_vocab,
            });
        }
        let norm_all = |xs: &[Vec<f64>], w: &[f64]| -> Vec<Vec<f64>> {
            xs.iter().map(|x| rms_norm(x, w, hp.rms_eps)).collect()
        };
        // Shape: x: (n_tok, n_embd), the residual stream.
        let mut x: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| widen(self.token_embd.row(t as usize)))
            .collect();
        for b in &self.blocks {
            let h = norm_all(&x, &b.attn_norm);
            // Shapes: q: (n_tok, n_head·head_dim); k, v: (n_tok, n_head_kv·head_dim).
            let mut q = b.wq.apply_all(&h, act);
            let mut k = b.wk.apply_all(&h, act);
            let v = b.wv.apply_all(&h, act);
            for (pos, (qt, kt)) in q.iter_mut().zip(&mut k).enumerate() {
                self.rope(qt, pos);
                self.rope(kt, pos);
            }
            let mut a = self.causal_attention(&q, &k, &v);
            if let Some(w) = &b.attn_sub_norm {
                a = norm_all(&a, w);
            }
            add(&mut x, &b.wo.apply_all(&a, act));

            let f = norm_all(&x, &b.ffn_norm);
            // Shape: m: (n_tok, n_ff).
            let gate = b.ffn_gate.apply_all(&f, act);
            let up = b.ffn_up.apply_all(&f, act);
            let mut m: Vec<Vec<f64>> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| {
                    g.iter()
                        .zip(u)
                        .map(|(&g, &u)| self.arch.gate(g) * u)
                        .collect()
                })
                .collect();
            if let Some(w) = &b.ffn_sub_norm {
                m = norm_all(&m, w);
            }
            add(&mut x, &b.ffn_down.apply_all(&m, act));
        }
        let head = self.output.as_ref().unwrap_or(&self.token_embd);
        let logits = head.mul_all(&norm_all(&x, &self.output_norm));
        let mut out = Vec::with_capacity(logits.len());
        for (position, row) in logits.into_iter().enumerate() {
            let row: Vec<f32> = row.into_iter().map(|l| l as f32).collect();
            if let Some(index) = row.iter().position(|l| !l.is_finite()) {
                return Err(DefinitionError::NonFiniteLogit { position, index });
            }
            out.push(row);
        }
        Ok(out)
    }

    /// Rotates every head of `x` for position `pos`: pair `(i, i + n_rot/2)` (NEOX) or
    /// `(2i, 2i + 1)` (normal) by `θᵢ = pos · scale · base^(-2i / n_rot)`; dimensions past
    /// `n_rot` are left as they are. Shape: x: (heads, head_dim).
    fn rope(&self, x: &mut [f64], pos: usize) {
        let hp = &self.hp;
        let half = hp.n_rot / 2;
        for head in x.chunks_exact_mut(hp.head_dim) {
            for i in 0..half {
                let theta = pos as f64
                    * hp.rope_scale
                    * hp.rope_base.powf(-2.0 * i as f64 / hp.n_rot as f64);
                let (sin, cos) = theta.sin_cos();
                let (a, b) = if self.arch.neox_rope() {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }

    /// Causal grouped-query attention: query head `h` of token `t` attends to the keys and
    /// values of KV head `h / (n_head / n_head_kv)` at positions `0..=t`, with weights
    /// `softmax(q·k / √head_dim)`. Shapes: q: (n_tok, n_head·head_dim); k, v:
    /// (n_tok, n_head_kv·head_dim); result: (n_tok, n_head·head_dim).
    fn causal_attention(&self, q: &[Vec<f64>], k: &[Vec<f64>], v: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let hp = &self.hp;
        let hd = hp.head_dim;
        let group = hp.n_head / hp.n_head_kv;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut out = vec![vec![0.0f64; hp.n_head * hd]; q.len()];
        for (t, (qt, ot)) in q.iter().zip(&mut out).enumerate() {
            for (h, (qh, oh)) in qt.chunks_exact(hd).zip(ot.chunks_exact_mut(hd)).enumerate() {
                let kv = (h / group) * hd..(h / group + 1) * hd;
                // Shape: scores: (t + 1,), one per visible position.
                let scores: Vec<f64> = k[..=t]
                    .iter()
                    .map(|kj| dot64(qh, &kj[kv.clone()]) * scale)
                    .collect();
                for (p, vj) in softmax(&scores).iter().zip(&v[..=t]) {
                    for (o, &vv) in oh.iter_mut().zip(&vj[kv.clone()]) {
                        *o += p * vv;
                    }
                }
            }
        }
        out
    }
}

/// The hyper-parameters and the block count of `arch`'s keys (`{arch}.embedding_length`,
/// ...), with llama.cpp's documented defaults for the optional ones.
fn hparams(file: &GgufFile, arch: Arch) -> Result<(HParams, usize), DefinitionError> {
    let key = |k: &str| format!("{}.{k}", arch.name());
    let count = |k: &str, default: Option<usize>| -> Result<usize, DefinitionError> {
        let name = key(k);
        let v = match (file.get_u64(&name), default) {
            (Ok(v), _) => v,
            (Err(GgufError::MissingKey { .. }), Some(d)) => return Ok(d),
            (Err(e), _) => return Err(key_err(e)),
        };
        match u32::try_from(v) {
            Ok(n) if n > 0 => Ok(n as usize),
            _ => Err(invalid(
                &name,
                format!("{v} is not a positive 32-bit count"),
            )),
        }
    };
    let float = |k: &str, default: Option<f64>| -> Result<f64, DefinitionError> {
        let name = key(k);
        match (file.get_f64(&name), default) {
            (Ok(v), _) => Ok(v),
            (Err(GgufError::MissingKey { .. }), Some(d)) => Ok(d),
            (Err(e), _) => Err(key_err(e)),
        }
    };
    let n_embd = count("embedding_length", None)?;
    let n_layer = count("block_count", None)?;
    let n_ff = count("feed_forward_length", None)?;
    let n_head = count("attention.head_count", None)?;
    let n_head_kv = count("attention.head_count_kv", Some(n_head))?;
    if n_head % n_head_kv != 0 {
        return Err(invalid(
            &key("attention.head_count_kv"),
            format!("{n_head_kv} does not divide head_count {n_head}"),
        ));
    }
    let head_dim = count("attention.key_length", Some(n_embd / n_head))?;
    if head_dim == 0 {
        return Err(invalid(
            &key("attention.head_count"),
            format!("{n_head} heads leave no dimensions of embedding_length {n_embd}"),
        ));
    }
    let n_rot = count("rope.dimension_count", Some(head_dim))?;
    if n_rot > head_dim || n_rot % 2 != 0 {
        return Err(invalid(
            &key("rope.dimension_count"),
            format!("{n_rot} must be even and at most the head size {head_dim}"),
        ));
    }
    let rope_base = float("rope.freq_base", Some(10_000.0))?;
    let rms_eps = float("attention.layer_norm_rms_epsilon", None)?;
    for (k, v) in [
        ("rope.freq_base", rope_base),
        ("attention.layer_norm_rms_epsilon", rms_eps),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(invalid(&key(k), format!("{v} is not finite and >= 0")));
        }
    }
    let rope_scale = match file.get_str(&key("rope.scaling.type")) {
        Err(GgufError::MissingKey { .. }) => 1.0,
        Ok("none") => 1.0,
        Ok("linear") => match float("rope.scaling.factor", Some(1.0))? {
            f if f > 0.0 && f.is_finite() => 1.0 / f,
            f => {
                return Err(invalid(
                    &key("rope.scaling.factor"),
                    format!("{f} is not positive"),
                ))
            }
        },
        Ok(other) => {
            return Err(invalid(
                &key("rope.scaling.type"),
                format!("'{other}' scaling has no definition here (none and linear do)"),
            ))
        }
        Err(e) => return Err(key_err(e)),
    };
    let embd = file
        .tensor("token_embd.weight")
        .ok_or_else(|| DefinitionError::MissingTensor {
            name: "token_embd.weight".into(),
        })?;
    let n_vocab = match embd.dims.as_slice() {
        [e, v] if *e == n_embd as u64 && *v > 0 => usize::try_from(*v).map_err(|_| {
            invalid(
                "token_embd.weight",
                format!("{v} tokens do not fit in memory"),
            )
        })?,
        dims => {
            return Err(DefinitionError::Shape {
                tensor: "token_embd.weight".into(),
                expected: vec![n_embd as u64, 0],
                found: dims.to_vec(),
            })
        }
    };
    let hp = HParams {
        n_vocab,
        n_embd,
        n_ff,
        n_head,
        n_head_kv,
        head_dim,
        n_rot,
        rope_base,
        rope_scale,
        rms_eps,
    };
    Ok((hp, n_layer))
}

fn invalid(key: &str, reason: String) -> DefinitionError {
    DefinitionError::InvalidKey {
        key: key.to_owned(),
        reason,
    }
}

fn key_err(e: GgufError) -> DefinitionError {
    match e {
        GgufError::MissingKey { key } => DefinitionError::MissingKey { key },
        other => DefinitionError::Gguf(other),
    }
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// `x / √(mean(x²) + eps) · w`. Shapes: x, w: (n,).
fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let mean = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (mean + eps).sqrt();
    x.iter().zip(w).map(|(&v, &w)| v * r * w).collect()
}

/// Numerically stable softmax. Shape: (n,).
fn softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let e: Vec<f64> = x.iter().map(|&v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `x += y`, row by row. Shapes: (n_tok, n).
fn add(x: &mut [Vec<f64>], y: &[Vec<f64>]) {
    for (xr, yr) in x.iter_mut().zip(y) {
        xr.iter_mut().zip(yr).for_each(|(a, b)| *a += b);
    }
}

/// The BitNet b1.58 activation quantizer, round trip: per token `s = 127 / max|x|`,
/// `q = clamp(round_half_even(x·s), -128, 127)`, returns `q / s` (a zero row stays zero).
/// Shape: (n,).
pub fn int8_absmax(x: &[f64]) -> Vec<f64> {
    let amax = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        return x.to_vec();
    }
    let s = 127.0 / amax;
    x.iter()
        .map(|&v| (v * s).round_ties_even().clamp(-128.0, 127.0) / s)
        .collect()
}

#[cfg(test)]
mod tests;
