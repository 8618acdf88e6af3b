//! What a fixture is: architecture, shape, weight format, scale style and seed.

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
}

impl Shape {
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
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Shape::Tiny => "tiny",
            Shape::Full2B4T => "2b4t",
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

/// How the seven linear weights of every block are stored. `token_embd` is always F16 (the
/// tied output head, as in the real 2B-4T file) and norms and `.scale` tensors F32, so
/// every fixture holds the same model and only the linear weights' encoding differs.
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

/// One synthetic model. The weights depend only on `seed`, the shape and the tensor name:
/// every format, scale style and architecture of the same shape and seed holds the same
/// ternary matrices, norms and embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixtureSpec {
    pub arch: Arch,
    pub shape: Shape,
    pub format: WeightFormat,
    pub scales: ScaleStyle,
    pub seed: u64,
}

impl FixtureSpec {
    /// The tiny shape, folded scales, seed 0.
    pub fn tiny(arch: Arch, format: WeightFormat) -> Self {
        FixtureSpec {
            arch,
            shape: Shape::Tiny,
            format,
            scales: ScaleStyle::Folded,
            seed: 0,
        }
    }

    /// The full 2B-4T shape, folded scales, seed 0.
    pub fn full(arch: Arch, format: WeightFormat) -> Self {
        FixtureSpec {
            shape: Shape::Full2B4T,
            ..FixtureSpec::tiny(arch, format)
        }
    }

    pub fn with_scales(self, scales: ScaleStyle) -> Self {
        FixtureSpec { scales, ..self }
    }

    pub fn with_seed(self, seed: u64) -> Self {
        FixtureSpec { seed, ..self }
    }

    /// A readable, unique, dot-free name: `bitnet-tiny-tq2_0-folded-s0`,
    /// `bitnet-b158-2b4t-i2_s-folded-s0`. Used in file names and test case names.
    pub fn id(&self) -> String {
        format!(
            "{}-{}-{}-{}-s{}",
            self.arch.slug(),
            self.shape.slug(),
            self.format.ggml_type().name(),
            self.scales.slug(),
            self.seed
        )
    }

    /// Refuses combinations no reference could load.
    pub(crate) fn validate(&self) -> Result<(), FixtureError> {
        if self.arch == Arch::BitnetB158 && self.scales == ScaleStyle::Tensor {
            return Err(FixtureError::Unsupported {
                id: self.id(),
                reason: "bitnet-b1.58 has no .scale tensors (ik_llama.cpp's loader would \
                         refuse the extra tensors); use ScaleStyle::Folded",
            });
        }
        Ok(())
    }
}
