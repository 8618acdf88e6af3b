//! The definition forward on tiny hand-built files.

use bitnet_gguf::{GgmlType, GgufFile, GgufWriter};

use super::*;

const N_EMBD: usize = 8;
const N_HEAD: usize = 2;
const N_HEAD_KV: usize = 1;
const HEAD_DIM: usize = 4;
const N_FF: usize = 12;
const N_LAYER: usize = 2;
const N_VOCAB: usize = 10;

/// Deterministic values in [-1, 1) (a 64-bit LCG's top bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` ternary weights times `s`.
    fn ternary(&mut self, n: usize, s: f32) -> Vec<f32> {
        (0..n).map(|_| (self.next() * 1.5).round() * s).collect()
    }
}

/// A `arch` model with F32 tensors; `skip` names a tensor left out.
fn model_file(arch: &str, skip: Option<&str>) -> GgufFile {
    let mut w = GgufWriter::new();
    let meta: [(&str, u32); 6] = [
        ("context_length", 64),
        ("embedding_length", N_EMBD as u32),
        ("block_count", N_LAYER as u32),
        ("feed_forward_length", N_FF as u32),
        ("attention.head_count", N_HEAD as u32),
        ("attention.head_count_kv", N_HEAD_KV as u32),
    ];
    w.add_metadata("general.architecture", arch).expect("arch");
    for (k, v) in meta {
        w.add_metadata(format!("{arch}.{k}"), v).expect("key");
    }
    w.add_metadata(format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5f32)
        .expect("eps");
    w.add_metadata(format!("{arch}.rope.freq_base"), 10_000f32)
        .expect("rope");
    let mut rng = Lcg(7);
    let mut tensors: Vec<(String, Vec<u64>, Vec<f32>)> = Vec::new();
    let mut norm = |name: String, n: usize, rng: &mut Lcg| {
        let v = (0..n).map(|_| 1.0 + 0.2 * rng.next()).collect();
        tensors.push((name, vec![n as u64], v));
    };
    norm("output_norm.weight".into(), N_EMBD, &mut rng);
    let (nq, nkv) = (N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM);
    let mut mats = vec![(
        "token_embd.weight".to_string(),
        N_VOCAB,
        N_EMBD,
        (0..N_VOCAB * N_EMBD)
            .map(|_| rng.next())
            .collect::<Vec<_>>(),
    )];
    for i in 0..N_LAYER {
        for (n, k) in [
            ("attn_norm", N_EMBD),
            ("ffn_norm", N_EMBD),
            ("attn_sub_norm", nq),
            ("ffn_sub_norm", N_FF),
        ] {
            norm(format!("blk.{i}.{n}.weight"), k, &mut rng);
        }
        for (n, rows, cols) in [
            ("attn_q", nq, N_EMBD),
            ("attn_k", nkv, N_EMBD),
            ("attn_v", nkv, N_EMBD),
            ("attn_output", N_EMBD, nq),
            ("ffn_gate", N_FF, N_EMBD),
            ("ffn_up", N_FF, N_EMBD),
            ("ffn_down", N_EMBD, N_FF),
        ] {
            let v = rng.ternary(rows * cols, 0.5);
            mats.push((format!("blk.{i}.{n}.weight"), rows, cols, v));
        }
    }
    for (name, rows, cols, v) in mats {
        tensors.push((name, vec![cols as u64, rows as u64], v));
    }
    for (name, dims, v) in tensors {
        if Some(name.as_str()) == skip {
            continue;
        }
        w.add_tensor_owned(
            name,
            GgmlType::F32,
            &dims,
            bytemuck::cast_slice(&v).to_vec(),
        )
        .expect("tensor");
    }
    let mut bytes = Vec::new();
    w.write_into(&mut bytes).expect("write");
    GgufFile::from_bytes(bytes).expect("read back")
}

fn model(arch: &str) -> DefinitionModel {
    DefinitionModel::from_gguf(&model_file(arch, None)).expect("definition model")
}

#[test]
fn one_row_of_vocabulary_size_per_token() {
    for arch in ["bitnet", "bitnet-b1.58", "llama"] {
        let m = model(arch);
        assert_eq!((m.n_vocab(), m.n_layer()), (N_VOCAB, N_LAYER));
        assert_eq!(m.weight_type(), GgmlType::F32);
        for act in Activations::ALL {
            let l = m.logits(&[1, 2, 3, 4, 5], act).expect("logits");
            assert_eq!(l.len(), 5);
            assert!(l.iter().all(|r| r.len() == N_VOCAB));
        }
    }
}

/// Position i sees tokens 0..=i only: changing later tokens leaves its logits bit-identical,
/// changing an earlier one does not.
#[test]
fn attention_is_causal() {
    let m = model("bitnet-b1.58");
    for act in Activations::ALL {
        let a = m.logits(&[3, 1, 4, 1, 5, 9], act).expect("logits");
        let b = m.logits(&[3, 1, 4, 2, 6, 5], act).expect("logits");
        assert_eq!(
            a[..3],
            b[..3],
            "{act:?}: positions 0..3 must not see later tokens"
        );
        assert_ne!(a[3], b[3]);
        let c = m.logits(&[7, 1, 4, 1, 5, 9], act).expect("logits");
        assert!(
            (1..6).all(|i| a[i] != c[i]),
            "{act:?}: every position sees token 0"
        );
    }
}

/// A sequence's first position equals the same token evaluated alone (RoPE is the identity
/// at position 0, and nothing else depends on the length).
#[test]
fn first_position_is_the_token_alone() {
    let m = model("bitnet");
    let seq = m.logits(&[4, 8, 2], Activations::Exact).expect("logits");
    let one = m.logits(&[4], Activations::Exact).expect("logits");
    assert_eq!(seq[0], one[0]);
}

#[test]
fn the_gate_follows_the_architecture() {
    // The same tensors under `bitnet` (SiLU) and `bitnet-b1.58` (ReLU²) differ.
    let tokens = [1, 2, 3];
    let silu = model("bitnet")
        .logits(&tokens, Activations::Exact)
        .expect("logits");
    let relu2 = model("bitnet-b1.58")
        .logits(&tokens, Activations::Exact)
        .expect("logits");
    assert_ne!(silu, relu2);
    assert_eq!(Arch::BitnetB158.gate(-2.0), 0.0);
    assert_eq!(Arch::BitnetB158.gate(3.0), 9.0);
    assert!((Arch::Bitnet.gate(1.0) - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-15);
}

#[test]
fn int8_absmax_rounds_per_token() {
    // s = 127 / 2: 2 → 127, -1 → -63.5 → -64 (half to even), 0.5 → 31.75 → 32.
    let s = 127.0 / 2.0;
    assert_eq!(
        int8_absmax(&[2.0, -1.0, 0.5]),
        vec![127.0 / s, -64.0 / s, 32.0 / s]
    );
    assert_eq!(int8_absmax(&[0.0, 0.0]), vec![0.0, 0.0]);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let m = model("bitnet");
    assert!(matches!(
        m.logits(&[], Activations::Exact),
        Err(DefinitionError::EmptyInput)
    ));
    assert!(matches!(
        m.logits(&[1, N_VOCAB as u32], Activations::Exact),
        Err(DefinitionError::TokenOutOfRange { index: 1, .. })
    ));
    assert!(matches!(
        DefinitionModel::from_gguf(&model_file("gpt2", None)),
        Err(DefinitionError::UnsupportedArch { .. })
    ));
    match DefinitionModel::from_gguf(&model_file("bitnet", Some("blk.1.ffn_sub_norm.weight"))) {
        Err(DefinitionError::MissingTensor { name }) => {
            assert_eq!(name, "blk.1.ffn_sub_norm.weight")
        }
        other => panic!("expected a missing tensor, got {other:?}"),
    }
}

#[test]
fn small_models_fit_the_size_limit() {
    assert_eq!(too_large_for_definition(&model_file("bitnet", None)), None);
}
