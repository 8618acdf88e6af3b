//! Per-format, per-reference tolerances of the parity suite.
//!
//! bitnet-rs reproduces each reference's arithmetic (activation quantizer, KV cache type,
//! summation orders, `ggml_v_expf`, RMSNorm's f64 sums, RoPE's theta recurrence), so on
//! every built-in model the expected difference is **zero**: each tolerance below is
//! [`Tolerance::EXACT`] unless its comment says why a model can't be bit-exact. A one-ulp
//! change anywhere before a matmul flips int8 activations and moves logits by ~1e-2..1,
//! far beyond any threshold here.

use bitnet_sys::Reference;

use crate::cases::{ModelCase, ModelSource};
use crate::logits_compare::Tolerance;

/// Ternary formats on upstream llama.cpp (TQ1_0, TQ2_0 with Q8_K activations) and F32/F16
/// weights: integer dots are exact and every float op follows ggml's order.
pub const LLAMA_CPP_BITNET: Tolerance = Tolerance::EXACT;

/// SmolLM2 (Q4_1 matrices with Q8_1 activations, Q8_0 tied head) on upstream llama.cpp.
pub const LLAMA_CPP_SMOLLM2: Tolerance = Tolerance::EXACT;

/// I2_S on bitnet.cpp: I8_S activations (FMA-rounded, see `bitnet_kernels::i8_s`), integer
/// Σcode·q with its 16-bit lane wrap, F16 KV cache.
pub const BITNET_CPP_I2_S: Tolerance = Tolerance::EXACT;

/// IQ2_BN on ik_llama.cpp: Q8_K64 activations, ik's GEMM epilogue, fused RMSNorm order,
/// F16 KV cache.
pub const IK_LLAMA_IQ2_BN: Tolerance = Tolerance::EXACT;

/// A user's model: any architecture and format the engine loads. Formats without an
/// exact match in the engine's numerics profile may differ by float reassociation, so
/// this accepts what rounding can do but not a wrong op: cosine ≥ 0.9999, KL ≤ 1e-4
/// nats, |Δ| ≤ 0.1, and the top-1 token unless the reference's lead is under 0.05.
pub const USER_MODEL: Tolerance = Tolerance {
    min_cosine: 0.9999,
    max_kl: 1e-4,
    max_abs: 0.1,
    near_tie_margin: 0.05,
};

/// The tolerance of a model case.
pub fn for_model(model: &ModelCase) -> Tolerance {
    match (&model.source, model.reference) {
        (ModelSource::User(_), _) => USER_MODEL,
        (ModelSource::SmolLm2, _) => LLAMA_CPP_SMOLLM2,
        (_, Reference::LlamaCpp) => LLAMA_CPP_BITNET,
        (_, Reference::BitnetCpp) => BITNET_CPP_I2_S,
        (_, Reference::IkLlamaCpp) => IK_LLAMA_IQ2_BN,
    }
}
