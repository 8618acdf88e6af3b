//! Deterministic synthetic BitNet models, and locators for the registry data.
//!
//! No real BitNet weights can be fetched here, so these fixtures are the models the parity
//! suite runs: seeded ternary weights stored as F32, F16, TQ1_0, TQ2_0, I2_S or IQ2_BN,
//! for the `bitnet` and `bitnet-b1.58` graphs, in a tiny shape (tests) and in
//! microsoft/bitnet-b1.58-2B-4T's shape (benchmarks), with the real LLaMA-3 BPE
//! vocabulary and an F16 tied embedding. One shape and seed is one model: every format,
//! scale style and architecture holds the same weights, so every engine can be run on the
//! same model.
//!
//! Users bring their own models in other shapes, so a spec can also have custom
//! dimensions ([`FixtureSpec::custom`]), the LLaMA-1/2 SentencePiece vocabulary
//! ([`Vocab::LlamaSpm`]) and a Q8_0 or TQ2_0 `token_embd` ([`EmbeddingType`]);
//! [`user_shape_zoo`] lists small fixtures covering the shapes that matter, and the
//! `write_fixture` example puts them (or the 2B-4T I2_S fixture) in `models/` as if a user
//! had.
//!
//! ```no_run
//! use bitnet_fixtures::{fixture, Arch, FixtureSpec, WeightFormat};
//!
//! # fn main() -> Result<(), bitnet_fixtures::FixtureError> {
//! let spec = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0);
//! let path = fixture(&spec)?; // target/fixtures/bitnet-tiny-tq2_0-folded-s0-<key>.gguf
//! let q = bitnet_fixtures::ternary_tensor(&spec, "blk.0.attn_q.weight")?;
//! assert_eq!(q.dims, [512, 512]);
//! # Ok(()) }
//! ```
//!
//! Files are generated on first use into `target/fixtures/` (or `$BITNET_FIXTURE_DIR`) and
//! reused afterwards; they are never committed. Generation needs the llama-bpe vocabulary
//! (and, for [`Vocab::LlamaSpm`], the llama-spm one) that `make setup` fetches; without it
//! every call fails with [`FixtureError::DataMissing`] saying so.
//!
//! Which reference loads which fixture (read from their loaders and type tables, and
//! checked by loading the tiny fixtures, and the 2B-4T ones marked ✓², in each runner):
//!
//! | reference | arch | loads and computes | refuses |
//! |---|---|---|---|
//! | upstream llama.cpp | `bitnet` | F32, F16, TQ1_0, TQ2_0 ✓²; `.scale` tensors optional, both styles | I2_S (type 36 is a removed type there), IQ2_BN (unknown type 135), arch `bitnet-b1.58` |
//! | bitnet.cpp | `bitnet` | I2_S ✓², TQ1_0, TQ2_0, F32, F16; both styles | IQ2_BN (aborts), arch `bitnet-b1.58` |
//! | ik_llama.cpp | `bitnet-b1.58` | IQ2_BN ✓², F16, F32 (also arch `bitnet` with IQ2_BN/F32, both styles) | TQ1_0, TQ2_0 (SIGFPE at load); `.scale` tensors (extra tensors are an error) |
//!
//! ik_llama.cpp *loads* an I2_S file but computes garbage; converting it with ik's
//! `llama_model_quantize` to IQ2_BN (ftype 137) gives tensors byte-identical to the IQ2_BN
//! fixture of the same spec.

#![forbid(unsafe_code)]

mod cache;
mod data;
mod error;
mod plan;
mod rng;
mod spec;
mod weights;
mod zoo;

pub use cache::{fixture, fixture_in, GENERATOR_VERSION};
pub use data::{
    data_dir, fixture_dir, smollm2_path, user_models, user_models_dir, vocab_path, DATA_DIR_ENV,
    FIXTURE_DIR_ENV, USER_MODEL_ENVS,
};
pub use error::FixtureError;
pub use plan::{plan, Plan, PlannedTensor, N_VOCAB};
pub use spec::{
    Arch, CustomShape, EmbeddingType, FixtureSpec, ScaleStyle, Shape, ShapeDims, Vocab,
    WeightFormat, MAX_CUSTOM_LAYERS, MAX_CUSTOM_WIDTH,
};
pub use weights::{tensor_f32, ternary_tensor, TernaryTensor};
pub use zoo::user_shape_zoo;
