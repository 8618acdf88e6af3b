//! BitNet b1.58 and LLaMA-style models from GGUF: hyper-parameters, weight binding, the
//! forward pass (batched prefill and incremental decode over a preallocated KV cache) and
//! named intermediate capture.
//!
//! ```no_run
//! use bitnet_models::{Logits, Model, Numerics};
//!
//! # fn main() -> Result<(), bitnet_models::ModelError> {
//! let model = Model::load("model.gguf")?;
//! let mut state = model.new_state(512, 512, Numerics::default())?;
//! let logits = model.forward(&mut state, &[1, 2, 3], Logits::All, None)?;
//! assert_eq!(logits.len(), 3 * model.config().n_vocab);
//! # Ok(()) }
//! ```
//!
//! # Numerics
//!
//! The goal is to compute what a C++ reference computes, bit for bit. Per op, the default
//! ([`Numerics::default`], upstream llama.cpp's x86 AVX2+FMA build with llamafile off):
//! * matmuls: activations quantized to the weight format's `vec_dot_type` by the x86
//!   quantizer (table in `matmul`), dot products in ggml's AVX2 summation order
//!   (`bitnet-kernels`); F16 weights see f16-rounded activations;
//! * RMSNorm: squares rounded to f32, summed in f64, `(x · 1/sqrtf(mean + eps)) · w`;
//! * RoPE: `theta *= powf(base, -2/n_rot)` per pair, libm `cosf`/`sinf`, the rotation with
//!   GCC's FMA contraction (`fma(x0, cos, -(x1·sin))`, `fma(x0, sin, x1·cos)`);
//! * attention: `k·q` with ggml's F32 (or F16) dot, softmax of `kq · scale` with
//!   `ggml_v_expf` over chunks of 8 (chunk sums in f32, total in f64), `p · V` over the
//!   positions rounded up to 32 (ggml's padded cells weigh exactly 0);
//! * SiLU: `ggml_v_silu` on chunks of 8, libm `expf` on the tail.
//!
//! Where the references differ, [`Numerics`] says so explicitly ([`Numerics::for_reference`]).
//! Every output element is one dot product, so the thread count (rayon's pool) never
//! changes a result, and a prompt evaluated in one batch gives the same bits as token by
//! token.

mod config;
mod error;
mod kv_cache;
mod matmul;
mod model;
pub mod ops;
mod weights;

pub use config::{Arch, Config, FfnActivation};
pub use error::ModelError;
pub use kv_cache::{KvCache, KvType};
pub use matmul::Linear;
pub use model::{CaptureFn, Logits, Model, Numerics, Reference, State};
pub use weights::{Embedding, LayerWeights, Weights};
