//! The user-shape zoo: small fixtures in the shapes users' own models come in, so the
//! parity suite can show it handles them before a user's file does.

use crate::spec::{
    Arch, CustomShape, EmbeddingType, FixtureSpec, ScaleStyle, Shape, ShapeDims, Vocab,
    WeightFormat,
};

/// Ten small fixtures that between them cover: 1 block; MHA (`n_head_kv == n_head`) and
/// MQA (`n_head_kv == 1`); head_dim 32, 64, 96 and 128; `n_ff` not a power of two (640,
/// 768, 1000, 1280, 1536); rope base 1e4 and 5e5; rms eps 1e-6; the SPM vocabulary (and
/// the default BPE one); `.scale` tensors; a TQ2_0 and a Q8_0 `token_embd`; a
/// context_length of 64, which the long prompts of the matrix do not fit in. All use seed
/// 0 and at most 2 blocks; all but #5 the 32000-token SPM vocabulary, all but #10
/// n_embd <= 512, so the whole zoo is ~330 MB and a parity run over it takes minutes.
///
/// Which reference should load each, going by the table in the crate docs (the members
/// themselves have not yet been loaded in each runner); the widths respect every
/// reference's kernel limits: TQ rows are 256-weight blocks, I2_S 128, IQ2_BN 64, and
/// ik_llama.cpp's IQ2_BN matmul needs K >= 512 with K/64 even:
///
/// | # | arch | format | n_embd / layers / heads (kv) / head_dim / n_ff / ctx | rope, eps | vocab, embd | covers | loaded by |
/// |---|---|---|---|---|---|---|---|
/// | 1 | `bitnet` | TQ2_0 | 256 / 1 / 4 (4) / 64 / 768 / 4096 | 1e4, 1e-6 | spm, F16 | 1 block, MHA | llama.cpp, bitnet.cpp |
/// | 2 | `bitnet` | TQ1_0 | 256 / 2 / 8 (1) / 32 / 768 / 4096 | 5e5, 1e-5 | spm, Q8_0 | MQA, head_dim 32 | llama.cpp, bitnet.cpp |
/// | 3 | `bitnet` | TQ2_0, `.scale` | 512 / 2 / 4 (2) / 128 / 1280 / 4096 | 5e5, 1e-5 | spm, TQ2_0 | head_dim 128, TQ2_0 embedding | llama.cpp, bitnet.cpp |
/// | 4 | `bitnet` | F16 | 384 / 2 / 6 (2) / 64 / 1000 / 64 | 1e4, 1e-6 | spm, F16 | context 64, widths no block format allows | llama.cpp, bitnet.cpp |
/// | 5 | `bitnet` | I2_S | 256 / 1 / 2 (1) / 128 / 640 / 4096 | 5e5, 1e-5 | bpe, F16 | BPE vocabulary, MQA | bitnet.cpp |
/// | 6 | `bitnet` | I2_S, `.scale` | 512 / 2 / 16 (4) / 32 / 1536 / 4096 | 5e5, 1e-6 | spm, F16 | I2_S with `.scale` | bitnet.cpp |
/// | 7 | `bitnet-b1.58` | IQ2_BN | 512 / 1 / 8 (8) / 64 / 1280 / 4096 | 1e4, 1e-6 | spm, F16 | 1 block, MHA | ik_llama.cpp |
/// | 8 | `bitnet-b1.58` | IQ2_BN | 512 / 2 / 4 (1) / 128 / 768 / 64 | 5e5, 1e-5 | spm, F16 | MQA, head_dim 128, context 64 | ik_llama.cpp |
/// | 9 | `bitnet-b1.58` | I2_S | 512 / 2 / 16 (2) / 32 / 1536 / 4096 | 5e5, 1e-5 | spm, F16 | head_dim 32, 2B-4T's layout | ik_llama.cpp after converting to IQ2_BN |
/// | 10 | `bitnet` | TQ1_0 | 768 / 1 / 8 (8) / 96 / 2048 / 4096 | 1e4, 1e-5 | spm, F16 | head_dim 96 (1bitLLM/bitnet_b1_58-large's) | llama.cpp, bitnet.cpp |
///
/// Upstream llama.cpp has no I2_S, so bitnet.cpp alone checks #5 and #6; ik_llama.cpp
/// loads `bitnet-b1.58` I2_S files but computes garbage, so #9 runs there only as ik's own
/// IQ2_BN conversion of it (as the 2B-4T file does). Our engine loads every member.
/// Ids are the fixtures' [`FixtureSpec::id`]s (stable, and the file stems the
/// `write_fixture` example writes), in the order above.
pub fn user_shape_zoo() -> Vec<FixtureSpec> {
    use WeightFormat::{F16, I2_S, IQ2_BN, TQ1_0, TQ2_0};
    // Short names keep one member per line; dims(n_embd, n_layer, n_head, n_head_kv, n_ff,
    // n_ctx, rope_freq_base, rms_eps), in the table's order.
    let (bn, b158) = (Arch::Bitnet, Arch::BitnetB158);
    let (spm, bpe) = (Vocab::LlamaSpm, Vocab::LlamaBpe);
    vec![
        member(bn, TQ2_0, dims(256, 1, 4, 4, 768, 4096, 1e4, 1e-6), spm),
        member(bn, TQ1_0, dims(256, 2, 8, 1, 768, 4096, 5e5, 1e-5), spm)
            .with_embedding(EmbeddingType::Q8_0),
        member(bn, TQ2_0, dims(512, 2, 4, 2, 1280, 4096, 5e5, 1e-5), spm)
            .with_scales(ScaleStyle::Tensor)
            .with_embedding(EmbeddingType::TQ2_0),
        member(bn, F16, dims(384, 2, 6, 2, 1000, 64, 1e4, 1e-6), spm),
        member(bn, I2_S, dims(256, 1, 2, 1, 640, 4096, 5e5, 1e-5), bpe),
        member(bn, I2_S, dims(512, 2, 16, 4, 1536, 4096, 5e5, 1e-6), spm)
            .with_scales(ScaleStyle::Tensor),
        member(b158, IQ2_BN, dims(512, 1, 8, 8, 1280, 4096, 1e4, 1e-6), spm),
        member(b158, IQ2_BN, dims(512, 2, 4, 1, 768, 64, 5e5, 1e-5), spm),
        member(b158, I2_S, dims(512, 2, 16, 2, 1536, 4096, 5e5, 1e-5), spm),
        member(bn, TQ1_0, dims(768, 1, 8, 8, 2048, 4096, 1e4, 1e-5), spm),
    ]
}

/// `head_dim` is `n_embd / n_head`, as every loader assumes.
#[allow(clippy::too_many_arguments)]
fn dims(
    n_embd: u32,
    n_layer: u32,
    n_head: u32,
    n_head_kv: u32,
    n_ff: u32,
    n_ctx: u32,
    rope_freq_base: f32,
    rms_eps: f32,
) -> ShapeDims {
    ShapeDims {
        n_ctx,
        n_embd,
        n_layer,
        n_ff,
        n_head,
        n_head_kv,
        head_dim: n_embd / n_head,
        rope_freq_base,
        rms_eps,
    }
}

/// The zoo's dims are constants the tests check with [`CustomShape::new`]; storing them
/// unchecked keeps this function infallible, and [`FixtureSpec`]'s validation re-checks
/// custom dims before anything is generated, so a bad entry is an error, never a panic.
fn member(arch: Arch, format: WeightFormat, dims: ShapeDims, vocab: Vocab) -> FixtureSpec {
    FixtureSpec {
        shape: Shape::Custom(CustomShape::unchecked(dims)),
        ..FixtureSpec::tiny(arch, format).with_vocab(vocab)
    }
}
