//! Where the C++ references compute the same graph differently, as explicit settings
//! ([`Numerics`]), and which reference each set reproduces ([`Reference`]).

use crate::kv_cache::KvType;
use crate::ops::{FloatDot, NormOrder, Q8KRounding};

/// The C++ reference whose arithmetic a session reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reference {
    /// Upstream llama.cpp (x86 AVX2+FMA build, llamafile sgemm off).
    LlamaCpp,
    /// ik_llama.cpp.
    IkLlamaCpp,
    /// Microsoft bitnet.cpp.
    BitnetCpp,
}

/// Where the references compute the same graph differently, as explicit settings.
///
/// Everything else (rounding of activations per weight format, summation orders,
/// `ggml_v_expf` in softmax and SiLU, RoPE's FMA contraction, the f64 sums of RMSNorm) is
/// upstream llama.cpp's, which is also what the forks inherit from ggml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Numerics {
    /// KV cache element type: F32 for upstream parity, F16 for ik_llama.cpp and bitnet.cpp
    /// (which refuse an F32 V cache without flash attention).
    pub kv_type: KvType,
    /// RMSNorm's product order: ik_llama.cpp's fused norm multiplies the scale into the
    /// weight first.
    pub norm: NormOrder,
    /// Multiple the reference pads the attended KV length to with masked cells: 256 in
    /// upstream llama.cpp, 32 in ik_llama.cpp and bitnet.cpp. Masked cells weigh exactly 0
    /// and every pad keeps the real cells in the same SIMD lanes, so only the shape of the
    /// captured `kq`/`kq_soft_max` depends on it.
    pub kv_pad: usize,
    /// F32/F16 dot products (F32/F16 weights and attention): ggml's `vec_dot_*` or
    /// ik_llama.cpp's float GEMM.
    pub float_dot: FloatDot,
    /// Rounding of the Q8_K activations of TQ1_0/TQ2_0 weights (bitnet.cpp's is
    /// FMA-contracted).
    pub q8k: Q8KRounding,
}

impl Default for Numerics {
    /// Upstream llama.cpp's arithmetic.
    fn default() -> Numerics {
        Numerics {
            kv_type: KvType::F32,
            norm: NormOrder::ScaleThenWeight,
            kv_pad: 256,
            float_dot: FloatDot::Ggml,
            q8k: Q8KRounding::Ref,
        }
    }
}

impl Numerics {
    /// The settings that match `reference` as the parity suite runs it
    /// (`bitnet_sys::SessionConfig::deterministic`).
    pub fn for_reference(reference: Reference) -> Numerics {
        match reference {
            Reference::LlamaCpp => Numerics::default(),
            Reference::BitnetCpp => Numerics {
                kv_type: KvType::F16,
                kv_pad: 32,
                q8k: Q8KRounding::FmaContracted,
                ..Numerics::default()
            },
            Reference::IkLlamaCpp => Numerics {
                kv_type: KvType::F16,
                norm: NormOrder::WeightScaleFirst,
                kv_pad: 32,
                float_dot: FloatDot::IkGemm,
                q8k: Q8KRounding::Ref,
            },
        }
    }
}
