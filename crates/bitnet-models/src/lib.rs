//! BitNet b1.58 and LLaMA-style models from GGUF: hyper-parameters, weight binding, the
//! forward pass (batched prefill and incremental decode over a preallocated KV cache) and
//! named intermediate capture.
//!
//! ```no_run
//! use bitnet_models::{Logits, Model, Numerics};
//!
//! # fn main() -> Result<(), bitnet_models::ModelError> {
//! let model = Model::load("model.gguf")?;
//! // 512 positions, batches of up to 512 tokens, upstream llama.cpp's arithmetic, 2 threads.
//! let mut state = model.new_state(512, 512, Numerics::default(), 2)?;
//! let logits = model.forward(&mut state, &[1, 2, 3], Logits::All, None)?;
//! assert_eq!(logits.len(), 3 * model.config().n_vocab);
//! # Ok(()) }
//! ```
//!
//! # Numerics
//!
//! The goal is to compute what a C++ reference computes, bit for bit; the parity suite
//! (`crossval/tests/engine_vs_llama_cpp.rs`) measures max |Δ| = 0 on every logit against
//! all three references. Per op, as upstream llama.cpp's x86 AVX2+FMA build (llamafile
//! sgemm off) computes it, which is [`Numerics::default`]:
//! * matmuls: activations quantized to the weight format's `vec_dot_type` by the x86
//!   quantizer (table in `matmul.rs`), dot products in ggml's AVX2 summation order
//!   (`bitnet-kernels`); F16 weights see f16-rounded activations; `.scale` tensors multiply
//!   the output;
//! * RMSNorm: squares rounded to f32, summed in f64, `mean = (f32)(sum/n)`,
//!   `(x · 1/sqrtf(mean + eps)) · w`;
//! * RoPE: `theta *= powf(base, -2/n_rot)` per pair from `(f32)pos`, libm `cosf`/`sinf`,
//!   the rotation with GCC's FMA contraction (`fma(x0, cos, -(x1·sin))`,
//!   `fma(x0, sin, x1·cos)`, read off the compiled `rotate_pairs<float>`);
//! * attention: `k·q` with ggml's F32 (or F16, q rounded to f16) dot; softmax of
//!   `kq · scale` with `ggml_v_expf` over chunks of 8 (chunk sums in f32, total in f64,
//!   then `· (f32)(1/sum)`); `p · Vᵀ` over the positions rounded up to 32 (ggml's padded
//!   cells weigh exactly 0, so the real ones sit in the same SIMD lanes);
//! * SiLU gate: `ggml_v_silu` on chunks of 8, libm `expf` on the tail, times up;
//!   squared ReLU for `bitnet-b1.58`.
//!
//! Where the references differ, [`Numerics`] says so explicitly
//! ([`Numerics::for_reference`]):
//!
//! | setting | llama.cpp | bitnet.cpp | ik_llama.cpp |
//! |---|---|---|---|
//! | [`Numerics::kv_type`] | F32 | F16 | F16 |
//! | [`Numerics::norm`] | `(x·s)·w` | `(x·s)·w` | `(s·w)·x` (fused norm) |
//! | [`Numerics::float_dot`] | ggml `vec_dot` | ggml `vec_dot` | iqk float GEMM, F32 operand unrounded |
//! | [`Numerics::q8k`] (TQ1_0/TQ2_0 activations) | `nearest_int(iscale·x)` | FMA-contracted | (no TQ types) |
//! | [`Numerics::kv_pad`] (capture shapes only) | 256 | 32 | 32 |
//!
//! Every output element is one dot product, so the thread count (`bitnet_pool`) never
//! changes a result, and a prompt evaluated in one batch gives the same bits as token by
//! token (so do all three references as built here).

#![forbid(unsafe_code)]

mod config;
mod dequant;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod graph;
mod kv_cache;
mod matmul;
mod model;
mod numerics;
pub mod ops;
mod weights;

pub use config::{Arch, Config, FfnActivation};
pub use error::ModelError;
pub use kv_cache::KvType;
pub use matmul::Linear;
pub use model::{CaptureFn, Logits, Model, State};
pub use numerics::{Numerics, Reference};
pub use ops::{FloatDot, NormOrder, Q8KRounding, RopeStyle};
pub use weights::{Embedding, LayerWeights, Weights};
