//! Hyper-parameters read from GGUF metadata, per architecture.

use bitnet_gguf::{GgufError, GgufFile};

use crate::ops::RopeStyle;
use crate::ModelError;

/// A model architecture this crate can run (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Upstream llama.cpp's `bitnet` graph (`llm_build_bitnet`): NEOX RoPE, sub-norms after
    /// attention and the gated SiLU FFN, optional F32 `{1}`-shaped `.scale` tensors, output
    /// always tied to `token_embd`.
    Bitnet,
    /// `bitnet-b1.58` (BitNet b1.58 2B-4T, ik_llama.cpp's `build_bitnet_158`): NEOX RoPE,
    /// sub-norms, squared-ReLU gated FFN, output tied unless `output.weight` exists.
    BitnetB158,
    /// `llama` (`llm_build_llama`, e.g. SmolLM2): normal RoPE, SiLU gated FFN, no sub-norms,
    /// output tied unless `output.weight` exists.
    Llama,
}

impl Arch {
    /// Parses `general.architecture`.
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "bitnet" => Some(Arch::Bitnet),
            "bitnet-b1.58" => Some(Arch::BitnetB158),
            "llama" => Some(Arch::Llama),
            _ => None,
        }
    }

    /// The GGUF name, also the prefix of the architecture's metadata keys.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Bitnet => "bitnet",
            Arch::BitnetB158 => "bitnet-b1.58",
            Arch::Llama => "llama",
        }
    }

    /// How this architecture rotates Q and K (llama.cpp's `llama_model_rope_type`).
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Normal,
            Arch::Bitnet | Arch::BitnetB158 => RopeStyle::Neox,
        }
    }

    /// Whether the graph has `attn_sub_norm` and `ffn_sub_norm`.
    pub fn has_sub_norms(self) -> bool {
        matches!(self, Arch::Bitnet | Arch::BitnetB158)
    }

    /// Whether a separate `output.weight` head may exist (upstream's `bitnet` always ties).
    pub fn allows_output_head(self) -> bool {
        matches!(self, Arch::BitnetB158 | Arch::Llama)
    }

    /// Whether `blk.N.*.scale` tensors may multiply matmul outputs.
    pub fn allows_scale_tensors(self) -> bool {
        matches!(self, Arch::Bitnet)
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The gate activation of the FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FfnActivation {
    /// `silu(gate) · up` (`ggml_swiglu_split`).
    Silu,
    /// `relu(gate)² · up`.
    ReluSqr,
}

/// Hyper-parameters of a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: Arch,
    /// Vocabulary size (`token_embd` rows).
    pub n_vocab: usize,
    /// Training context (`{arch}.context_length`).
    pub n_ctx_train: usize,
    /// Model width (`{arch}.embedding_length`).
    pub n_embd: usize,
    /// Transformer blocks (`{arch}.block_count`).
    pub n_layer: usize,
    /// FFN width (`{arch}.feed_forward_length`).
    pub n_ff: usize,
    /// Query heads (`{arch}.attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`{arch}.attention.head_count_kv`, default `n_head`).
    pub n_head_kv: usize,
    /// Per-head width of Q/K/V (`{arch}.attention.key_length`, default `n_embd / n_head`).
    pub head_dim: usize,
    /// Rotated dimensions per head (`{arch}.rope.dimension_count`, default `head_dim`).
    pub n_rot: usize,
    /// RoPE base (`{arch}.rope.freq_base`, default 10000).
    pub rope_freq_base: f32,
    /// RoPE position scale (1 / `{arch}.rope.scaling.factor` for linear scaling, else 1).
    pub rope_freq_scale: f32,
    /// RMSNorm epsilon (`{arch}.attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    pub ffn_activation: FfnActivation,
    /// `tokenizer.ggml.bos_token_id`, if present.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`, if present.
    pub eos_token_id: Option<u32>,
}

impl Config {
    /// Width of the K (and V) projection: `n_head_kv · head_dim`.
    pub fn n_embd_kv(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Width of the Q projection and attention output: `n_head · head_dim`.
    pub fn n_embd_q(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// The hyper-parameters of an opened file, without binding (or reading) any weight:
    /// the architecture is checked first (so an unsupported model is reported as such), then
    /// `n_vocab` from `token_embd`'s shape and the keys. [`crate::Model::from_gguf`] starts
    /// here.
    pub fn read(file: &GgufFile) -> Result<Config, ModelError> {
        let arch = file.get_str("general.architecture").map_err(|e| match e {
            bitnet_gguf::GgufError::MissingKey { key } => ModelError::MissingKey { key },
            e => ModelError::Gguf(e),
        })?;
        if Arch::from_name(arch).is_none() {
            return Err(ModelError::UnsupportedArch {
                arch: arch.to_owned(),
            });
        }
        Config::from_gguf(file, vocab_size(file)?)
    }

    /// Reads and checks the hyper-parameters; `n_vocab` comes from `token_embd`'s shape,
    /// which the weight loader validates against everything else.
    pub(crate) fn from_gguf(file: &GgufFile, n_vocab: usize) -> Result<Config, ModelError> {
        let arch_name = file.get_str("general.architecture").map_err(key_err)?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| ModelError::UnsupportedArch {
            arch: arch_name.to_owned(),
        })?;
        let key = |k: &str| format!("{}.{k}", arch.name());
        let req = |k: &str| -> Result<usize, ModelError> {
            let name = key(k);
            let v = file.get_u64(&name).map_err(key_err)?;
            positive(&name, v)
        };
        let opt = |k: &str| -> Result<Option<usize>, ModelError> {
            let name = key(k);
            file.get_u64_opt(&name)
                .map_err(key_err)?
                .map(|v| positive(&name, v))
                .transpose()
        };

        let n_ctx_train = req("context_length")?;
        let n_embd = req("embedding_length")?;
        let n_layer = req("block_count")?;
        let n_ff = req("feed_forward_length")?;
        let n_head = req("attention.head_count")?;
        let n_head_kv = opt("attention.head_count_kv")?.unwrap_or(n_head);
        let rms_key = key("attention.layer_norm_rms_epsilon");
        let rms_eps = file.get_f32(&rms_key).map_err(key_err)?;
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(invalid(
                &rms_key,
                format!("{rms_eps} is not a finite eps >= 0"),
            ));
        }

        if n_head % n_head_kv != 0 {
            return Err(invalid(
                &key("attention.head_count_kv"),
                format!("{n_head_kv} does not divide head_count {n_head}"),
            ));
        }
        let head_dim = match opt("attention.key_length")? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(invalid(
                    &key("attention.head_count"),
                    format!("{n_head} does not divide embedding_length {n_embd}"),
                ))
            }
        };
        if let Some(v) = opt("attention.value_length")? {
            if v != head_dim {
                return Err(invalid(
                    &key("attention.value_length"),
                    format!("{v} differs from key_length {head_dim} (unsupported)"),
                ));
            }
        }
        let n_rot = opt("rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(invalid(
                &key("rope.dimension_count"),
                format!("{n_rot} must be even and at most the head size {head_dim}"),
            ));
        }
        let freq_key = key("rope.freq_base");
        let rope_freq_base = file
            .get_f32_opt(&freq_key)
            .map_err(key_err)?
            .unwrap_or(10000.0);
        if !(rope_freq_base.is_finite() && rope_freq_base > 0.0) {
            return Err(invalid(
                &freq_key,
                format!("{rope_freq_base} is not positive"),
            ));
        }
        let rope_freq_scale = rope_scale(file, arch)?;

        let ffn_activation = match arch {
            Arch::BitnetB158 => FfnActivation::ReluSqr,
            Arch::Bitnet | Arch::Llama => FfnActivation::Silu,
        };
        let token = |k: &str| file.get_u32_opt(k).map_err(key_err);
        Ok(Config {
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rope_freq_base,
            rope_freq_scale,
            rms_eps,
            ffn_activation,
            bos_token_id: token("tokenizer.ggml.bos_token_id")?,
            eos_token_id: token("tokenizer.ggml.eos_token_id")?,
        })
    }
}

/// `rope.scaling.type` none or linear (`freq_scale = 1/factor`); YaRN and LongRoPE are
/// refused rather than silently run unscaled.
fn rope_scale(file: &GgufFile, arch: Arch) -> Result<f32, ModelError> {
    let type_key = format!("{arch}.rope.scaling.type");
    let factor_key = format!("{arch}.rope.scaling.factor");
    let kind = file.get_str_opt(&type_key).map_err(key_err)?;
    let factor = file.get_f32_opt(&factor_key).map_err(key_err)?;
    match (kind, factor) {
        (None | Some("none"), _) | (Some("linear"), None) => Ok(1.0),
        (Some("linear"), Some(f)) if f == 0.0 || f == 1.0 => Ok(1.0),
        (Some("linear"), Some(f)) if f.is_finite() && f > 0.0 => Ok(1.0 / f),
        (Some("linear"), Some(f)) => Err(invalid(&factor_key, format!("{f} is not positive"))),
        (Some(other), _) => Err(invalid(
            &type_key,
            format!("rope scaling '{other}' is not supported (only none and linear)"),
        )),
    }
}

fn positive(key: &str, v: u64) -> Result<usize, ModelError> {
    match usize::try_from(v) {
        Ok(n) if n > 0 && v <= u64::from(u32::MAX) => Ok(n),
        _ => Err(invalid(key, format!("{v} is not a positive 32-bit count"))),
    }
}

fn invalid(key: &str, reason: String) -> ModelError {
    ModelError::InvalidKey {
        key: key.to_owned(),
        reason,
    }
}

/// A missing key becomes [`ModelError::MissingKey`]; other metadata errors stay GGUF errors.
fn key_err(e: GgufError) -> ModelError {
    match e {
        GgufError::MissingKey { key } => ModelError::MissingKey { key },
        other => ModelError::Gguf(other),
    }
}

/// Reads `n_vocab` from `token_embd.weight` (`[n_embd, n_vocab]`), before the rest of the
/// hyper-parameters are known.
pub(crate) fn vocab_size(file: &GgufFile) -> Result<usize, ModelError> {
    let info = file
        .tensor("token_embd.weight")
        .ok_or_else(|| ModelError::MissingTensor {
            name: "token_embd.weight".into(),
        })?;
    match info.dims.as_slice() {
        [_, v] | [_, v, 1] | [_, v, 1, 1] if *v > 0 && *v <= u64::from(u32::MAX) => Ok(*v as usize),
        _ => Err(ModelError::InvalidTensor {
            name: info.name.clone(),
            reason: format!("shape {:?} is not [n_embd, n_vocab]", info.dims),
        }),
    }
}
