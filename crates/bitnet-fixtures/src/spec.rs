//! What a fixture is: architecture, shape, weight format, scale style, seed, vocabulary
//! and token-embedding type.

use bitnet_gguf::GgmlType;

use crate::FixtureError;

/// The model graph a fixture is written for (its `general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `bitnet`: upstream llama.cpp's and bitnet.cpp's graph (SiLU-gated FFN, optional
    /// per-matrix `.scale` tensors).
    Bitnet,
    /// `bitnet-b1.58`: microsoft/bitnet-b1.58-2B-4T as ik_llama.cpp runs it (squared-ReLU
    /// gated FFN; no `.scale` tensors).
    BitnetB158,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Bitnet, Arch::BitnetB158];

    /// The `general.architecture` string, also the prefix of the hyper-parameter keys.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Bitnet => "bitnet",
            Arch::BitnetB158 => "bitnet-b1.58",
        }
    }

    /// A dot-free name for fixture ids and test case names.
    fn slug(self) -> &'static str {
        match self {
            Arch::Bitnet => "bitnet",
            Arch::BitnetB158 => "bitnet-b158",
        }
    }
}

/// Model dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Small enough for unit and parity tests, large enough for every kernel's limits
    /// (ik_llama.cpp's IQ2_BN matmul aborts below K = 512; TQ rows are multiples of 256).
    Tiny,
    /// microsoft/bitnet-b1.58-2B-4T's dimensions, for benchmarks (~1.2 GB as I2_S).
    Full2B4T,
    /// Any other dimensions: the shapes users' own models come in (see
    /// [`crate::user_shape_zoo`]).
    Custom(CustomShape),
}

impl Shape {
    /// The named shapes.
    pub const ALL: [Shape; 2] = [Shape::Tiny, Shape::Full2B4T];

    /// The hyper-parameters written into the file (the vocabulary size comes from the
    /// vocabulary file).
    pub fn dims(self) -> ShapeDims {
        match self {
            Shape::Tiny => ShapeDims {
                n_ctx: 4096,
                n_embd: 512,
                n_layer: 4,
                n_ff: 1024,
                n_head: 8,
                n_head_kv: 2,
                head_dim: 64,
                rope_freq_base: 500_000.0,
                rms_eps: 1e-5,
            },
            Shape::Full2B4T => ShapeDims {
                n_ctx: 4096,
                n_embd: 2560,
                n_layer: 30,
                n_ff: 6912,
                n_head: 20,
                n_head_kv: 5,
                head_dim: 128,
                rope_freq_base: 500_000.0,
                rms_eps: 1e-5,
            },
            Shape::Custom(c) => c.dims(),
        }
    }

    /// `tiny`, `2b4t`, or every custom hyper-parameter (see [`CustomShape`]).
    fn slug(self) -> String {
        match self {
            Shape::Tiny => "tiny".into(),
            Shape::Full2B4T => "2b4t".into(),
            Shape::Custom(c) => slug_of(&c.dims()),
        }
    }
}

/// Hyper-parameters of a [`Shape`]. `n_embd == n_head · head_dim` (every loader's shape
/// check on `attn_q`/`attn_output` assumes it) and the rope dimension is `head_dim`
/// (ik_llama.cpp refuses anything else for `bitnet-b1.58`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeDims {
    /// `context_length` (metadata only: the training context).
    pub n_ctx: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_ff: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// Per-head width; also `rope.dimension_count`.
    pub head_dim: u32,
    pub rope_freq_base: f32,
    pub rms_eps: f32,
}

impl ShapeDims {
    /// Width of the K and V projections (`n_head_kv · head_dim`).
    pub fn n_embd_kv(&self) -> u32 {
        self.n_head_kv * self.head_dim
    }
}

/// Largest `n_embd` or `n_ff` of a custom shape: keeps every linear weight at most 2³²
/// weights and every size computation far from overflow (2B-4T's widest is 6912).
pub const MAX_CUSTOM_WIDTH: u32 = 1 << 16;

/// Most blocks of a custom shape (2B-4T has 30).
pub const MAX_CUSTOM_LAYERS: u32 = 1024;

/// Hyper-parameters of a [`Shape::Custom`], checked once by [`CustomShape::new`] and
/// stored so that specs stay `Copy + Eq + Hash` (the floats as their bit patterns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomShape {
    n_ctx: u32,
    n_embd: u32,
    n_layer: u32,
    n_ff: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    rope_freq_base_bits: u32,
    rms_eps_bits: u32,
}

impl CustomShape {
    /// Checks what every loader assumes: non-zero sizes, `n_embd == n_head · head_dim`,
    /// `n_head` a multiple of `n_head_kv` (GQA groups), an even `head_dim` (NEOX RoPE
    /// rotates pairs `i, i + head_dim/2`), finite positive `rope_freq_base` and `rms_eps`,
    /// and widths up to [`MAX_CUSTOM_WIDTH`], blocks up to [`MAX_CUSTOM_LAYERS`]. Whether
    /// the widths suit a weight format is checked with the rest of the spec.
    pub fn new(dims: ShapeDims) -> Result<CustomShape, FixtureError> {
        let bad = |reason: String| FixtureError::BadShape {
            shape: slug_of(&dims),
            reason,
        };
        let sizes = [
            ("n_ctx", dims.n_ctx),
            ("n_embd", dims.n_embd),
            ("n_layer", dims.n_layer),
            ("n_ff", dims.n_ff),
            ("n_head", dims.n_head),
            ("n_head_kv", dims.n_head_kv),
            ("head_dim", dims.head_dim),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(bad(format!("{name} is 0")));
        }
        for (name, value, max) in [
            ("n_embd", dims.n_embd, MAX_CUSTOM_WIDTH),
            ("n_ff", dims.n_ff, MAX_CUSTOM_WIDTH),
            ("n_layer", dims.n_layer, MAX_CUSTOM_LAYERS),
        ] {
            if value > max {
                return Err(bad(format!("{name} {value} is above the limit {max}")));
            }
        }
        if dims.n_head.checked_mul(dims.head_dim) != Some(dims.n_embd) {
            return Err(bad(format!(
                "n_embd {} is not n_head {} × head_dim {}",
                dims.n_embd, dims.n_head, dims.head_dim
            )));
        }
        if !dims.n_head.is_multiple_of(dims.n_head_kv) {
            return Err(bad(format!(
                "n_head {} is not a multiple of n_head_kv {}",
                dims.n_head, dims.n_head_kv
            )));
        }
        if !dims.head_dim.is_multiple_of(2) {
            return Err(bad(format!(
                "head_dim {} is odd: RoPE rotates pairs of dimensions",
                dims.head_dim
            )));
        }
        for (name, value) in [
            ("rope_freq_base", dims.rope_freq_base),
            ("rms_eps", dims.rms_eps),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(bad(format!("{name} {value} is not finite and positive")));
            }
        }
        Ok(CustomShape::unchecked(dims))
    }

    /// Stores `dims` without checking them, for constants that tests check;
    /// [`FixtureSpec`]'s validation checks them again before anything is generated.
    pub(crate) fn unchecked(dims: ShapeDims) -> CustomShape {
        CustomShape {
            n_ctx: dims.n_ctx,
            n_embd: dims.n_embd,
            n_layer: dims.n_layer,
            n_ff: dims.n_ff,
            n_head: dims.n_head,
            n_head_kv: dims.n_head_kv,
            head_dim: dims.head_dim,
            rope_freq_base_bits: dims.rope_freq_base.to_bits(),
            rms_eps_bits: dims.rms_eps.to_bits(),
        }
    }

    pub fn dims(&self) -> ShapeDims {
        ShapeDims {
            n_ctx: self.n_ctx,
            n_embd: self.n_embd,
            n_layer: self.n_layer,
            n_ff: self.n_ff,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            head_dim: self.head_dim,
            rope_freq_base: f32::from_bits(self.rope_freq_base_bits),
            rms_eps: f32::from_bits(self.rms_eps_bits),
        }
    }
}

/// A custom shape's part of fixture ids: every hyper-parameter, floats in shortest
/// round-trip exponent form with `.` written `p` (ids are dot-free), e.g.
/// `e512-l2-h8kv2-d64-ff1280-c4096-r1e4-eps1e-6`. Distinct dims give distinct slugs.
fn slug_of(d: &ShapeDims) -> String {
    let float = |x: f32| format!("{x:e}").replace('.', "p");
    format!(
        "e{}-l{}-h{}kv{}-d{}-ff{}-c{}-r{}-eps{}",
        d.n_embd,
        d.n_layer,
        d.n_head,
        d.n_head_kv,
        d.head_dim,
        d.n_ff,
        d.n_ctx,
        float(d.rope_freq_base),
        float(d.rms_eps)
    )
}

/// How the seven linear weights of every block are stored. `token_embd` is F16 by default
/// (the tied output head, as in the real 2B-4T file; see [`EmbeddingType`]) and norms and
/// `.scale` tensors F32, so fixtures that differ only in this hold the same model.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    TQ1_0,
    TQ2_0,
    I2_S,
    IQ2_BN,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 6] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::TQ1_0,
        WeightFormat::TQ2_0,
        WeightFormat::I2_S,
        WeightFormat::IQ2_BN,
    ];

    pub fn ggml_type(self) -> GgmlType {
        match self {
            WeightFormat::F32 => GgmlType::F32,
            WeightFormat::F16 => GgmlType::F16,
            WeightFormat::TQ1_0 => GgmlType::TQ1_0,
            WeightFormat::TQ2_0 => GgmlType::TQ2_0,
            WeightFormat::I2_S => GgmlType::I2_S,
            WeightFormat::IQ2_BN => GgmlType::IQ2_BN,
        }
    }

    /// `general.file_type`: the `LLAMA_FTYPE_*` of the reference that defines the format
    /// (ALL_F32 0, MOSTLY_F16 1, upstream TQ1_0 36 / TQ2_0 37, bitnet.cpp I2_S 40, ik
    /// IQ2_BN 137). Informational: no loader reads it to decide tensor types.
    pub fn file_type(self) -> u32 {
        match self {
            WeightFormat::F32 => 0,
            WeightFormat::F16 => 1,
            WeightFormat::TQ1_0 => 36,
            WeightFormat::TQ2_0 => 37,
            WeightFormat::I2_S => 40,
            WeightFormat::IQ2_BN => 137,
        }
    }

    /// What every row length (`n_embd` and `n_ff`) must be a multiple of for the encoder:
    /// TQ blocks hold 256 weights, I2_S blocks 128 (bitnet.cpp's x86 `QK_I2_S`), IQ2_BN
    /// blocks 64. The references may need more (ik_llama.cpp's IQ2_BN matmul: K >= 512,
    /// K/64 even); that is up to the spec's author.
    pub fn row_multiple(self) -> u32 {
        match self {
            WeightFormat::F32 | WeightFormat::F16 => 1,
            WeightFormat::TQ1_0 | WeightFormat::TQ2_0 => 256,
            WeightFormat::I2_S => 128,
            WeightFormat::IQ2_BN => 64,
        }
    }

    /// [`WeightFormat::row_multiple`] in words, for the error refusing a width.
    fn row_rule(self) -> &'static str {
        match self {
            WeightFormat::F32 | WeightFormat::F16 => "rows of any length are encodable",
            WeightFormat::TQ1_0 | WeightFormat::TQ2_0 => {
                "TQ1_0/TQ2_0 rows are 256-weight blocks: n_embd and n_ff must be multiples of 256"
            }
            WeightFormat::I2_S => {
                "I2_S rows are 128-weight blocks: n_embd and n_ff must be multiples of 128"
            }
            WeightFormat::IQ2_BN => {
                "IQ2_BN rows are 64-weight blocks: n_embd and n_ff must be multiples of 64"
            }
        }
    }
}

/// The vocabulary a fixture carries: its `tokenizer.*` keys are copied from the llama.cpp
/// vocabulary file, and `token_embd` has one row per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vocab {
    /// LLaMA-3 BPE (`ggml-vocab-llama-bpe.gguf`, 128256 tokens), as in bitnet-b1.58-2B-4T.
    LlamaBpe,
    /// LLaMA-1/2 SentencePiece (`ggml-vocab-llama-spm.gguf`, 32000 tokens), the tokenizer
    /// the earlier 1bitLLM bitnet_b1_58 models build on; its embedding is a quarter the
    /// size.
    LlamaSpm,
}

impl Vocab {
    pub const ALL: [Vocab; 2] = [Vocab::LlamaBpe, Vocab::LlamaSpm];

    /// The llama.cpp vocabulary name, as [`crate::vocab_path`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Vocab::LlamaBpe => "llama-bpe",
            Vocab::LlamaSpm => "llama-spm",
        }
    }

    /// Number of tokens (rows of `token_embd`); checked against the file when planning.
    pub fn n_tokens(self) -> u32 {
        match self {
            Vocab::LlamaBpe => crate::plan::N_VOCAB,
            Vocab::LlamaSpm => 32_000,
        }
    }
}

/// How `token_embd` (also the tied output head) is stored.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmbeddingType {
    /// As in the real 2B-4T file. The default: fixtures with it hold the same embedding
    /// whatever their weight format.
    F16,
    /// llama.cpp's common choice for tied heads (SmolLM2's file has it); needs
    /// `n_embd % 32 == 0`.
    Q8_0,
    /// Some BitNet conversions quantize everything, the embedding included; needs
    /// `n_embd % 256 == 0`. The F16 values are quantized with ggml's reference quantizer,
    /// so this is a lossy (ternary) copy of the F16 embedding.
    TQ2_0,
}

impl EmbeddingType {
    pub const ALL: [EmbeddingType; 3] = [
        EmbeddingType::F16,
        EmbeddingType::Q8_0,
        EmbeddingType::TQ2_0,
    ];

    pub fn ggml_type(self) -> GgmlType {
        match self {
            EmbeddingType::F16 => GgmlType::F16,
            EmbeddingType::Q8_0 => GgmlType::Q8_0,
            EmbeddingType::TQ2_0 => GgmlType::TQ2_0,
        }
    }
}

/// Where each linear weight's scale lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleStyle {
    /// The weights are stored as `s·t` (`t ∈ {-1, 0, 1}`), as in the real 2B-4T file.
    Folded,
    /// The weights are stored as `t` and `blk.N.<matrix>.scale` (F32, shape `{1}`) holds
    /// `s`; the graph multiplies the matmul output by it. `bitnet` only. Numerically not
    /// the same model as [`ScaleStyle::Folded`] once activations are quantized.
    Tensor,
}

impl ScaleStyle {
    pub const ALL: [ScaleStyle; 2] = [ScaleStyle::Folded, ScaleStyle::Tensor];

    fn slug(self) -> &'static str {
        match self {
            ScaleStyle::Folded => "folded",
            ScaleStyle::Tensor => "tensor",
        }
    }
}

/// One synthetic model. The weights depend only on `seed`, the dimensions and the tensor
/// name: every format, scale style and architecture of the same shape and seed holds the
/// same ternary matrices, norms and embeddings (with an [`EmbeddingType`] other than F16,
/// the embedding quantized). A smaller vocabulary keeps the first rows of the larger
/// one's embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixtureSpec {
    pub arch: Arch,
    pub shape: Shape,
    pub format: WeightFormat,
    pub scales: ScaleStyle,
    pub seed: u64,
    pub vocab: Vocab,
    pub embedding: EmbeddingType,
}

impl FixtureSpec {
    /// The tiny shape, folded scales, seed 0, llama-bpe vocabulary, F16 embedding.
    pub fn tiny(arch: Arch, format: WeightFormat) -> Self {
        FixtureSpec {
            arch,
            shape: Shape::Tiny,
            format,
            scales: ScaleStyle::Folded,
            seed: 0,
            vocab: Vocab::LlamaBpe,
            embedding: EmbeddingType::F16,
        }
    }

    /// The full 2B-4T shape, folded scales, seed 0.
    pub fn full(arch: Arch, format: WeightFormat) -> Self {
        FixtureSpec {
            shape: Shape::Full2B4T,
            ..FixtureSpec::tiny(arch, format)
        }
    }

    /// Custom dimensions (checked by [`CustomShape::new`]), folded scales, seed 0,
    /// llama-bpe vocabulary, F16 embedding.
    pub fn custom(arch: Arch, format: WeightFormat, dims: ShapeDims) -> Result<Self, FixtureError> {
        Ok(FixtureSpec {
            shape: Shape::Custom(CustomShape::new(dims)?),
            ..FixtureSpec::tiny(arch, format)
        })
    }

    pub fn with_scales(self, scales: ScaleStyle) -> Self {
        FixtureSpec { scales, ..self }
    }

    pub fn with_seed(self, seed: u64) -> Self {
        FixtureSpec { seed, ..self }
    }

    pub fn with_vocab(self, vocab: Vocab) -> Self {
        FixtureSpec { vocab, ..self }
    }

    pub fn with_embedding(self, embedding: EmbeddingType) -> Self {
        FixtureSpec { embedding, ..self }
    }

    /// A readable, unique, dot-free name: `bitnet-tiny-tq2_0-folded-s0`,
    /// `bitnet-b158-2b4t-i2_s-folded-s0`,
    /// `bitnet-e256-l1-h4kv4-d64-ff768-c4096-r1e4-eps1e-6-tq2_0-folded-s0-spm-embd_tq2_0`.
    /// A vocabulary or embedding type other than the defaults adds a suffix, so the
    /// default specs keep the ids (and cache files) they always had. Used in file names
    /// and test case names.
    pub fn id(&self) -> String {
        let mut id = format!(
            "{}-{}-{}-{}-s{}",
            self.arch.slug(),
            self.shape.slug(),
            self.format.ggml_type().name(),
            self.scales.slug(),
            self.seed
        );
        if self.vocab == Vocab::LlamaSpm {
            id.push_str("-spm");
        }
        if self.embedding != EmbeddingType::F16 {
            id.push_str("-embd_");
            id.push_str(self.embedding.ggml_type().name());
        }
        id
    }

    /// Refuses combinations no reference could load, and widths the formats cannot
    /// encode.
    pub(crate) fn validate(&self) -> Result<(), FixtureError> {
        let unsupported = |reason| FixtureError::Unsupported {
            id: self.id(),
            reason,
        };
        if self.arch == Arch::BitnetB158 && self.scales == ScaleStyle::Tensor {
            return Err(unsupported(
                "bitnet-b1.58 has no .scale tensors (ik_llama.cpp's loader would \
                 refuse the extra tensors); use ScaleStyle::Folded",
            ));
        }
        let d = self.shape.dims();
        if let Shape::Custom(_) = self.shape {
            CustomShape::new(d)?;
        }
        let m = self.format.row_multiple();
        if !d.n_embd.is_multiple_of(m) || !d.n_ff.is_multiple_of(m) {
            return Err(unsupported(self.format.row_rule()));
        }
        let embd = self.embedding.ggml_type();
        if embd.row_size(d.n_embd.into()).is_none() {
            return Err(unsupported(match self.embedding {
                EmbeddingType::TQ2_0 => "a TQ2_0 token_embd needs n_embd to be a multiple of 256",
                _ => "a Q8_0 token_embd needs n_embd to be a multiple of 32",
            }));
        }
        Ok(())
    }
}
