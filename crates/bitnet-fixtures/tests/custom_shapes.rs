//! Custom dimensions, vocabularies and embedding types: what they refuse, how they are
//! named, what they hold; and that the default fixtures did not change with them.

mod common;

use std::collections::HashSet;
use std::fs;

use bitnet_fixtures::{
    fixture, fixture_in, plan, tensor_f32, ternary_tensor, user_shape_zoo, Arch, CustomShape,
    EmbeddingType, FixtureError, FixtureSpec, ScaleStyle, Shape, ShapeDims, Vocab, WeightFormat,
    MAX_CUSTOM_WIDTH,
};
use bitnet_gguf::{GgmlType, GgufFile};
use bitnet_kernels::{q8_0, tq2_0};
use common::must;
use sha2::{Digest, Sha256};

/// sha256 of `FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0)`'s file, computed with
/// the generator as it was before custom shapes, vocabularies and embedding types were
/// added (and unchanged by them: GENERATOR_VERSION 1, llama-bpe from llama-cpp-python
/// 0.3.36). If this changes, every cached fixture and golden snapshot is stale.
const TINY_TQ2_0_SHA256: &str = "56985740f7c3758f4d3b342335e34bf57ab2ff6dea22094112e31277448b90fa";

/// Its cache file name from the same run (the key hashes the id, the version and the
/// vocabulary's size).
const TINY_TQ2_0_FILE: &str = "bitnet-tiny-tq2_0-folded-s0-6f4a76f6d049f1f7.gguf";

#[test]
fn the_default_tiny_fixture_is_byte_for_byte_what_it_was() {
    let spec = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0);
    assert_eq!(spec.vocab, Vocab::LlamaBpe);
    assert_eq!(spec.embedding, EmbeddingType::F16);
    let path = must(fixture(&spec));
    assert_eq!(path.file_name().unwrap().to_string_lossy(), TINY_TQ2_0_FILE);
    let digest = Sha256::digest(fs::read(&path).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, TINY_TQ2_0_SHA256, "{}", path.display());
}

fn tiny_dims() -> ShapeDims {
    Shape::Tiny.dims()
}

fn bad_shape(dims: ShapeDims) -> String {
    match CustomShape::new(dims) {
        Err(e @ FixtureError::BadShape { .. }) => e.to_string(),
        other => panic!("{dims:?} accepted or refused otherwise: {other:?}"),
    }
}

#[test]
fn custom_shapes_refuse_dims_no_model_has() {
    let t = tiny_dims();
    let cases: [(ShapeDims, &str); 8] = [
        (ShapeDims { n_layer: 0, ..t }, "n_layer is 0"),
        (ShapeDims { n_ctx: 0, ..t }, "n_ctx is 0"),
        (ShapeDims { n_head: 4, ..t }, "not n_head 4 × head_dim 64"),
        (
            ShapeDims { n_head_kv: 3, ..t },
            "not a multiple of n_head_kv 3",
        ),
        (
            ShapeDims {
                n_embd: 8 * 63,
                head_dim: 63,
                ..t
            },
            "head_dim 63 is odd",
        ),
        (
            ShapeDims {
                rms_eps: f32::NAN,
                ..t
            },
            "rms_eps NaN",
        ),
        (
            ShapeDims {
                rope_freq_base: -1.0,
                ..t
            },
            "rope_freq_base -1",
        ),
        (
            ShapeDims {
                n_ff: MAX_CUSTOM_WIDTH + 1,
                ..t
            },
            "n_ff 65537 is above the limit",
        ),
    ];
    for (dims, want) in cases {
        let msg = bad_shape(dims);
        assert!(msg.contains(want), "{msg:?} should say {want:?}");
        assert!(msg.starts_with("shape e"), "{msg}");
        assert!(matches!(
            FixtureSpec::custom(Arch::Bitnet, WeightFormat::F32, dims),
            Err(FixtureError::BadShape { .. })
        ));
    }
    // head_dim · n_head overflowing u32 is an error, not a panic.
    let huge = ShapeDims {
        n_head: u32::MAX,
        head_dim: 2,
        ..t
    };
    assert!(bad_shape(huge).contains("is not n_head"));
}

/// Widths a format or embedding type cannot encode are refused before anything is
/// written, naming the rule.
#[test]
fn specs_refuse_widths_their_formats_cannot_encode() {
    let dims = ShapeDims {
        n_embd: 384,
        n_head: 6,
        n_ff: 640,
        ..tiny_dims()
    };
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (WeightFormat::TQ2_0, EmbeddingType::F16, "multiples of 256"),
        (WeightFormat::TQ1_0, EmbeddingType::F16, "multiples of 256"),
        (WeightFormat::F16, EmbeddingType::TQ2_0, "TQ2_0 token_embd"),
    ];
    for (format, embedding, want) in cases {
        let spec = must(FixtureSpec::custom(Arch::Bitnet, format, dims)).with_embedding(embedding);
        let err = fixture_in(&spec, dir.path()).unwrap_err();
        assert!(
            matches!(err, FixtureError::Unsupported { .. }) && err.to_string().contains(want),
            "{}: {err}",
            spec.id()
        );
        assert!(plan(&spec).is_err());
    }
    // 3 heads of 64 and 1 KV head: 192-wide rows, 1.5 TQ or I2_S blocks, 3 IQ2_BN blocks.
    let narrow = ShapeDims {
        n_embd: 192,
        n_head: 3,
        n_head_kv: 1,
        ..tiny_dims()
    };
    let spec = must(FixtureSpec::custom(
        Arch::Bitnet,
        WeightFormat::I2_S,
        narrow,
    ));
    assert!(fixture_in(&spec, dir.path())
        .unwrap_err()
        .to_string()
        .contains("multiples of 128"));
    let spec = must(FixtureSpec::custom(
        Arch::Bitnet,
        WeightFormat::IQ2_BN,
        narrow,
    ))
    .with_embedding(EmbeddingType::Q8_0);
    assert!(
        fixture_in(&spec, dir.path()).is_ok(),
        "192 = 3 IQ2_BN blocks"
    );
    let spec = must(FixtureSpec::custom(
        Arch::BitnetB158,
        WeightFormat::F16,
        narrow,
    ))
    .with_scales(ScaleStyle::Tensor);
    assert!(fixture_in(&spec, dir.path())
        .unwrap_err()
        .to_string()
        .contains(".scale"));
    // Nothing but the one valid fixture was written.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn ids_name_the_new_fields_and_stay_unique() {
    let tiny = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0);
    assert_eq!(tiny.id(), "bitnet-tiny-tq2_0-folded-s0");
    assert_eq!(
        tiny.with_vocab(Vocab::LlamaSpm)
            .with_embedding(EmbeddingType::TQ2_0)
            .id(),
        "bitnet-tiny-tq2_0-folded-s0-spm-embd_tq2_0"
    );
    assert_eq!(
        tiny.with_embedding(EmbeddingType::Q8_0).id(),
        "bitnet-tiny-tq2_0-folded-s0-embd_q8_0"
    );
    let custom = must(FixtureSpec::custom(
        Arch::BitnetB158,
        WeightFormat::I2_S,
        ShapeDims {
            rms_eps: 1.5e-5,
            ..tiny_dims()
        },
    ));
    assert_eq!(
        custom.id(),
        "bitnet-b158-e512-l4-h8kv2-d64-ff1024-c4096-r5e5-eps1p5e-5-i2_s-folded-s0"
    );
    // Floats one ulp apart get different ids; the tiny dims as a custom shape are a
    // different fixture from `Shape::Tiny`.
    let next_ulp = f32::from_bits(1e-5f32.to_bits() + 1);
    let specs: Vec<FixtureSpec> = [1e-5, next_ulp]
        .into_iter()
        .map(|rms_eps| {
            must(FixtureSpec::custom(
                Arch::Bitnet,
                WeightFormat::F16,
                ShapeDims {
                    rms_eps,
                    ..tiny_dims()
                },
            ))
        })
        .chain([FixtureSpec::tiny(Arch::Bitnet, WeightFormat::F16)])
        .collect();
    let ids: HashSet<String> = specs.iter().map(FixtureSpec::id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    // Specs are still hashable keys.
    let keys: HashSet<FixtureSpec> = specs.into_iter().chain(user_shape_zoo()).collect();
    assert_eq!(keys.len(), 3 + user_shape_zoo().len());
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Weights depend on the dims, seed and tensor name only: the tiny dims as a custom shape
/// hold the tiny fixture's weights, and a smaller vocabulary the first rows of the larger
/// one's embedding.
#[test]
fn custom_shapes_and_vocabularies_keep_the_weights() {
    let tiny = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0);
    let custom = must(FixtureSpec::custom(
        Arch::Bitnet,
        WeightFormat::TQ2_0,
        tiny_dims(),
    ));
    for name in [
        "blk.2.ffn_down.weight",
        "blk.0.attn_norm.weight",
        "output_norm.weight",
    ] {
        assert_eq!(
            bits(&must(tensor_f32(&tiny, name))),
            bits(&must(tensor_f32(&custom, name))),
            "{name}"
        );
    }

    let small = ShapeDims {
        n_embd: 256,
        n_head: 4,
        n_layer: 1,
        ..tiny_dims()
    };
    let bpe = must(FixtureSpec::custom(Arch::Bitnet, WeightFormat::F16, small));
    let spm = bpe.with_vocab(Vocab::LlamaSpm);
    let e_bpe = must(tensor_f32(&bpe, "token_embd.weight"));
    let e_spm = must(tensor_f32(&spm, "token_embd.weight"));
    assert_eq!(e_bpe.len(), 256 * 128_256);
    assert_eq!(e_spm.len(), 256 * 32_000);
    assert_eq!(bits(&e_bpe[..e_spm.len()]), bits(&e_spm));
    let q = must(ternary_tensor(&spm, "blk.0.attn_k.weight"));
    assert_eq!(q.dims, [256, 128]);
}

/// A quantized `token_embd` stores the F16 embedding quantized with ggml's reference
/// quantizer, and `tensor_f32` gives exactly what decoding the file gives.
#[test]
fn quantized_embeddings_are_the_f16_embedding_quantized() {
    let dims = ShapeDims {
        n_embd: 256,
        n_head: 4,
        n_layer: 1,
        ..tiny_dims()
    };
    let f16_spec = must(FixtureSpec::custom(Arch::Bitnet, WeightFormat::TQ1_0, dims))
        .with_vocab(Vocab::LlamaSpm);
    let reference = must(tensor_f32(&f16_spec, "token_embd.weight"));
    let amax = reference.iter().fold(0f32, |m, x| m.max(x.abs()));
    for embedding in [EmbeddingType::Q8_0, EmbeddingType::TQ2_0] {
        let spec = f16_spec.with_embedding(embedding);
        let path = must(fixture(&spec));
        let file = GgufFile::open(&path).unwrap();
        let info = file.tensor("token_embd.weight").unwrap();
        assert_eq!(info.ggml_type, embedding.ggml_type());
        assert_eq!(info.dims, [256, 32_000]);
        let bytes = file.tensor_data(info);
        let mut decoded = vec![0f32; 256 * 32_000];
        match embedding {
            EmbeddingType::Q8_0 => {
                let blocks = pod_vec::<q8_0::BlockQ8_0>(bytes);
                q8_0::dequantize_row_q8_0(&blocks, &mut decoded).unwrap();
                // Rounding to 8 bits moves a value by at most half a step of its block.
                let worst = decoded
                    .iter()
                    .zip(&reference)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= amax / 127.0, "{worst} vs step {}", amax / 127.0);
            }
            EmbeddingType::TQ2_0 => {
                let blocks = pod_vec::<tq2_0::BlockTQ2_0>(bytes);
                tq2_0::dequantize_row_tq2_0(&blocks, &mut decoded).unwrap();
                for (b, v) in blocks.iter().zip(decoded.chunks_exact(256)) {
                    let d = b.d.to_f32();
                    assert!(v.iter().all(|&x| x == 0.0 || x.abs() == d));
                }
                let zeros = decoded.iter().filter(|&&x| x == 0.0).count();
                assert!(zeros > decoded.len() / 2 && zeros < decoded.len());
            }
            EmbeddingType::F16 => unreachable!(),
        }
        let api = must(tensor_f32(&spec, "token_embd.weight"));
        assert_eq!(bits(&api), bits(&decoded), "{}", spec.id());
        // Only the embedding differs from the F16-embedding fixture.
        let other = plan(&f16_spec).unwrap();
        let this = plan(&spec).unwrap();
        for (a, b) in this.tensors.iter().zip(&other.tensors).skip(1) {
            assert_eq!(
                (&a.name, a.ggml_type, &a.dims),
                (&b.name, b.ggml_type, &b.dims)
            );
        }
        assert_eq!(this.tensors[0].ggml_type, embedding.ggml_type());
        assert_ne!(this.tensors[0].ggml_type, GgmlType::F16);
    }
}

/// Copies bytes into a vector of `T` (the bytes need not be aligned for `T`).
fn pod_vec<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
    v
}
