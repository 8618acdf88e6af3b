//! How far an engine may be from the definition, per (arch, weight format, activation
//! variant), set from measurement.
//!
//! Measured on the sequence of [`super::check`] (the short prompt as one batch, then 16
//! continuation tokens one at a time: 21–22 positions) with the tiny fixtures (4 layers,
//! n_embd 512, LLaMA-3 vocabulary) and SmolLM2. Every reference and our engine under its
//! numerics give bit-identical logits on every built-in model, so each number below is
//! both. All of it is deterministic (integer kernels, fixed summation orders, f64 with
//! correctly rounded basic operations), so the margins need not absorb run-to-run noise;
//! they absorb legitimate changes of rounding, and stay below what the injected mistakes
//! of `tests/definition_mutations.rs` reach. The tightest of those is the RMS epsilon ×10
//! (its numbers are quoted with each bound); SiLU for ReLU², the other RoPE style, a
//! skipped sub-norm, the attention scale ×√2 and a KV position off by one all reach a mean
//! KL of 0.45 or more, 40× above every quantized bound and 10⁴× above the float ones.
//!
//! Quantized formats sit near the noise of re-quantizing activations (docs/DESIGN.md §3.3: a tiny
//! float difference before a quantizer moves a value by a whole step), so their bounds are
//! about 1.3× their measurement; float formats (no activation quantizer in any engine)
//! agree with the exact definition to ~1e-6 and get ~3×.

use bitnet_gguf::GgmlType;
use serde::Serialize;

use super::{Activations, Arch};
use crate::kld::KldBound;

/// A definition bound: the largest mean and maximum KL(p_definition ‖ p_engine), in nats.
/// The 99th percentile is bounded by the maximum; top-1 and top-5 are not bounded (the
/// synthetic fixtures' nearly flat distributions flip them on rounding alone).
pub type DefinitionBound = KldBound;

/// The bounds of one (arch, format) under each activation variant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VariantBounds {
    pub exact: DefinitionBound,
    pub int8_absmax: DefinitionBound,
}

const fn bound(mean_kl: f64, max_kl: f64) -> DefinitionBound {
    KldBound {
        mean_kl,
        p99_kl: max_kl,
        max_kl,
        min_top1_same: 0.0,
        min_top5_overlap: 0.0,
    }
}

/// `bitnet`, F32 weights (F16 head). Measured mean / max KL: exact 1.86e-7 / 2.24e-7
/// (llama.cpp), 1.64e-6 / 3.17e-6 (bitnet.cpp: its F16 KV cache); int8 absmax 5.45e-3 /
/// 6.97e-3, 5.46e-3 / 6.95e-3. Epsilon ×10 (llama.cpp): exact 3.31e-3 / 6.53e-3, 660× the
/// exact bound.
pub const BITNET_F32: VariantBounds = VariantBounds {
    exact: bound(5e-6, 1e-5),
    int8_absmax: bound(7e-3, 9e-3),
};

/// `bitnet`, F16 weights. Measured: exact 2.72e-6 / 3.96e-6 (llama.cpp), 3.74e-6 / 5.88e-6
/// (bitnet.cpp); int8 absmax 5.46e-3 / 6.93e-3, 5.47e-3 / 6.95e-3.
pub const BITNET_F16: VariantBounds = VariantBounds {
    exact: bound(1e-5, 2e-5),
    int8_absmax: bound(7e-3, 9e-3),
};

/// `bitnet`, TQ1_0 or TQ2_0 weights (Q8_K activations per 256; TQ1_0 and TQ2_0 measure the
/// same, with or without `.scale` tensors). Measured: exact 3.73e-3 / 4.75e-3 (llama.cpp),
/// 3.71e-3 / 4.92e-3 (bitnet.cpp); int8 absmax 7.40e-3 / 9.77e-3, 7.62e-3 / 1.07e-2.
/// Epsilon ×10 (llama.cpp, TQ2_0): exact 6.55e-3 / 1.02e-2, int8 absmax 1.07e-2 / 1.45e-2.
pub const BITNET_TQ: VariantBounds = VariantBounds {
    exact: bound(5e-3, 7e-3),
    int8_absmax: bound(1e-2, 1.4e-2),
};

/// `bitnet`, I2_S weights (I8_S activations: the paper's per-token absmax). Measured
/// (bitnet.cpp): exact 5.35e-3 / 7.70e-3; int8 absmax 4.35e-3 / 5.92e-3. Epsilon ×10:
/// exact 9.19e-3 / 1.62e-2, int8 absmax 1.02e-2 / 1.42e-2.
pub const BITNET_I2_S: VariantBounds = VariantBounds {
    exact: bound(7e-3, 1e-2),
    int8_absmax: bound(6e-3, 8e-3),
};

/// `bitnet-b1.58`, IQ2_BN weights (Q8_K64 activations; direct and converted from I2_S
/// measure the same). Measured (ik_llama.cpp): exact 3.76e-3 / 5.45e-3; int8 absmax
/// 9.36e-3 / 1.28e-2. Epsilon ×10: exact 7.61e-3 / 1.54e-2, int8 absmax 1.29e-2 / 1.73e-2.
pub const BITNET_B158_IQ2_BN: VariantBounds = VariantBounds {
    exact: bound(5e-3, 7.5e-3),
    int8_absmax: bound(1.2e-2, 1.7e-2),
};

/// `llama`, Q4_1 weights (SmolLM2-135M; Q8_1 activations per 32). Measured (llama.cpp):
/// exact 3.19e-3 / 9.52e-3; int8 absmax 8.44e-2 / 4.28e-1 (per-token absmax is far from
/// per-32 quantization on a model trained without it, whose activations have outliers: the
/// exact variant is the check here).
pub const LLAMA_Q4_1: VariantBounds = VariantBounds {
    exact: bound(5e-3, 1.5e-2),
    int8_absmax: bound(0.12, 0.6),
};

/// The bounds for a model of `arch` whose block weights are `weight_type`, or `None` when
/// no such model has been measured.
pub fn bounds_for(arch: Arch, weight_type: GgmlType) -> Option<VariantBounds> {
    match (arch, weight_type) {
        (Arch::Bitnet, GgmlType::F32) => Some(BITNET_F32),
        (Arch::Bitnet, GgmlType::F16) => Some(BITNET_F16),
        (Arch::Bitnet, GgmlType::TQ1_0 | GgmlType::TQ2_0) => Some(BITNET_TQ),
        (Arch::Bitnet, GgmlType::I2_S) => Some(BITNET_I2_S),
        (Arch::BitnetB158, GgmlType::IQ2_BN) => Some(BITNET_B158_IQ2_BN),
        (Arch::Llama, GgmlType::Q4_1) => Some(LLAMA_Q4_1),
        _ => None,
    }
}

/// The bound for a model of `arch` whose block weights are `weight_type`, under `act`.
pub fn bound_for(arch: Arch, weight_type: GgmlType, act: Activations) -> Option<DefinitionBound> {
    bounds_for(arch, weight_type).map(|b| match act {
        Activations::Exact => b.exact,
        Activations::Int8Absmax => b.int8_absmax,
    })
}
