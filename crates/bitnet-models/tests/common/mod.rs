//! Tiny synthetic GGUF models written with `GgufWriter`, for tests that need a model file
//! with a given architecture, weight format or defect.
#![allow(dead_code)]

use std::path::Path;

use bitnet_gguf::{GgmlType, GgufWriter, MetadataValue};
use bitnet_kernels::q8_0::{quantize_row_q8_0_ref, BlockQ8_0};
use bitnet_kernels::tq1_0::{quantize_row_tq1_0_ref, BlockTQ1_0};
use bitnet_kernels::tq2_0::{quantize_row_tq2_0_ref, BlockTQ2_0};
use bytemuck::Zeroable;

/// Shape and format of a tiny model.
#[derive(Debug, Clone)]
pub struct Tiny {
    pub arch: &'static str,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_layer: usize,
    pub n_vocab: usize,
    /// Format of the matmul weights (norms stay F32, the embedding F32).
    pub wtype: GgmlType,
    /// Add `blk.N.*.scale` tensors (arch `bitnet` only).
    pub scales: bool,
    pub seed: u64,
}

impl Tiny {
    pub fn new(arch: &'static str, wtype: GgmlType) -> Tiny {
        Tiny {
            arch,
            n_embd: 256,
            n_ff: 512,
            n_head: 4,
            n_head_kv: 2,
            n_layer: 2,
            n_vocab: 96,
            wtype,
            scales: false,
            seed: 7,
        }
    }
}

/// xorshift64*: deterministic values for weights.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// -1, 0 or +1, about a third each.
    pub fn trit(&mut self) -> f32 {
        (self.next() % 3) as f32 - 1.0
    }
}

/// One tensor to write: name, type, ggml dims, f32 values (converted at write time).
#[derive(Debug, Clone)]
pub struct T {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    pub values: Vec<f32>,
}

/// Encodes f32 values as `ty` (rows of `dims[0]`).
pub fn encode(ty: GgmlType, values: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F32 => bytemuck::cast_slice(values).to_vec(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => {
            let mut b = vec![BlockQ8_0::zeroed(); values.len() / 32];
            quantize_row_q8_0_ref(values, &mut b).unwrap();
            bytemuck::cast_slice(&b).to_vec()
        }
        GgmlType::TQ2_0 => {
            let mut b = vec![BlockTQ2_0::zeroed(); values.len() / 256];
            quantize_row_tq2_0_ref(values, &mut b).unwrap();
            bytemuck::cast_slice(&b).to_vec()
        }
        GgmlType::TQ1_0 => {
            let mut b = vec![BlockTQ1_0::zeroed(); values.len() / 256];
            quantize_row_tq1_0_ref(values, &mut b).unwrap();
            bytemuck::cast_slice(&b).to_vec()
        }
        other => panic!("test encoder has no {other}"),
    }
}

/// Metadata of `s`.
pub fn metadata(s: &Tiny) -> Vec<(String, MetadataValue)> {
    let a = s.arch;
    vec![
        ("general.architecture".into(), MetadataValue::from(a)),
        (format!("{a}.context_length"), MetadataValue::U32(256)),
        (
            format!("{a}.embedding_length"),
            MetadataValue::U32(s.n_embd as u32),
        ),
        (
            format!("{a}.block_count"),
            MetadataValue::U32(s.n_layer as u32),
        ),
        (
            format!("{a}.feed_forward_length"),
            MetadataValue::U32(s.n_ff as u32),
        ),
        (
            format!("{a}.attention.head_count"),
            MetadataValue::U32(s.n_head as u32),
        ),
        (
            format!("{a}.attention.head_count_kv"),
            MetadataValue::U32(s.n_head_kv as u32),
        ),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            MetadataValue::F32(1e-5),
        ),
        (format!("{a}.rope.freq_base"), MetadataValue::F32(10000.0)),
        ("tokenizer.ggml.eos_token_id".into(), MetadataValue::U32(2)),
    ]
}

/// Tensors of `s`: ternary matrices `0.05 · {-1, 0, 1}`, norms near 1, embeddings in ±1.
pub fn tensors(s: &Tiny) -> Vec<T> {
    let mut rng = Rng::new(s.seed);
    let hd = s.n_embd / s.n_head;
    let (nq, nkv) = (s.n_embd, s.n_head_kv * hd);
    let mut out = Vec::new();
    let mut push = |name: String, ty: GgmlType, dims: Vec<u64>, values: Vec<f32>| {
        out.push(T {
            name,
            ty,
            dims,
            values,
        })
    };
    let emb: Vec<f32> = (0..s.n_vocab * s.n_embd).map(|_| rng.uniform()).collect();
    push(
        "token_embd.weight".into(),
        GgmlType::F32,
        vec![s.n_embd as u64, s.n_vocab as u64],
        emb,
    );
    let norm = |rng: &mut Rng, n: usize| {
        (0..n)
            .map(|_| 1.0 + 0.1 * rng.uniform())
            .collect::<Vec<f32>>()
    };
    let v = norm(&mut rng, s.n_embd);
    push(
        "output_norm.weight".into(),
        GgmlType::F32,
        vec![s.n_embd as u64],
        v,
    );
    let bitnet = s.arch.starts_with("bitnet");
    for i in 0..s.n_layer {
        let p = format!("blk.{i}");
        let v = norm(&mut rng, s.n_embd);
        push(
            format!("{p}.attn_norm.weight"),
            GgmlType::F32,
            vec![s.n_embd as u64],
            v,
        );
        let v = norm(&mut rng, s.n_embd);
        push(
            format!("{p}.ffn_norm.weight"),
            GgmlType::F32,
            vec![s.n_embd as u64],
            v,
        );
        if bitnet {
            let v = norm(&mut rng, nq);
            push(
                format!("{p}.attn_sub_norm.weight"),
                GgmlType::F32,
                vec![nq as u64],
                v,
            );
            let v = norm(&mut rng, s.n_ff);
            push(
                format!("{p}.ffn_sub_norm.weight"),
                GgmlType::F32,
                vec![s.n_ff as u64],
                v,
            );
        }
        for (w, k, n) in [
            ("attn_q", s.n_embd, nq),
            ("attn_k", s.n_embd, nkv),
            ("attn_v", s.n_embd, nkv),
            ("attn_output", nq, s.n_embd),
            ("ffn_gate", s.n_embd, s.n_ff),
            ("ffn_up", s.n_embd, s.n_ff),
            ("ffn_down", s.n_ff, s.n_embd),
        ] {
            let vals: Vec<f32> = (0..k * n).map(|_| 0.05 * rng.trit()).collect();
            push(
                format!("{p}.{w}.weight"),
                s.wtype,
                vec![k as u64, n as u64],
                vals,
            );
            if s.scales {
                let sc = 1.0 + 0.5 * rng.uniform().abs();
                push(format!("{p}.{w}.scale"), GgmlType::F32, vec![1], vec![sc]);
            }
        }
    }
    out
}

/// Writes a model from its parts.
pub fn write(path: &Path, meta: &[(String, MetadataValue)], tensors: &[T]) {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.add_metadata(k.clone(), v.clone()).unwrap();
    }
    for t in tensors {
        w.add_tensor_owned(t.name.clone(), t.ty, &t.dims, encode(t.ty, &t.values))
            .unwrap();
    }
    w.write_to(path).unwrap();
}

/// Writes the tiny model `s` into `dir` and returns its path.
pub fn write_tiny(dir: &Path, s: &Tiny) -> std::path::PathBuf {
    let p = dir.join(format!("tiny-{}-{}.gguf", s.arch, s.wtype));
    write(&p, &metadata(s), &tensors(s));
    p
}
