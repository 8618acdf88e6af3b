//! Binding GGUF tensors to the graph: every tensor's name, type and shape is checked
//! against the hyper-parameters before anything runs.

use std::collections::HashSet;

use bitnet_gguf::{GgmlType, GgufFile, TensorInfo};
use bitnet_kernels::format::ActFormat;

use crate::config::Config;
use crate::dequant::dequantize_row;
use crate::matmul::{repack, Linear};
use crate::ModelError;

/// The token embedding table `(n_vocab, n_embd)` (ggml dims `[n_embd, n_vocab]`), read a
/// row at a time as ggml's `get_rows` does (dequantized to f32).
#[derive(Debug, Clone)]
pub struct Embedding {
    pub(crate) info: TensorInfo,
    pub(crate) n_embd: usize,
}

impl Embedding {
    /// Writes row `token` as f32 into `out` (`n_embd` values). `token` must be in range.
    /// The row's bytes are read through the file into `scratch` (at least `n_embd` floats:
    /// as many bytes as a row of any type), not the mapping: a lookup through the mapping
    /// would make its pages resident (up to 2 MiB each where the page cache holds the file
    /// in huge folios) beside a re-encoded copy of the same table serving as the head.
    pub(crate) fn row(
        &self,
        file: &GgufFile,
        token: usize,
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), ModelError> {
        let ty = self.info.ggml_type;
        let row_bytes = ty.row_size(self.n_embd as u64).unwrap_or(0) as usize;
        let buf = bytemuck::cast_slice_mut::<f32, u8>(scratch);
        let have = buf.len();
        let row = buf.get_mut(..row_bytes).ok_or_else(|| {
            ModelError::InvalidArgument(format!(
                "embedding scratch of {have} bytes is shorter than a row of {row_bytes}"
            ))
        })?;
        file.read_tensor_range(&self.info, (token * row_bytes) as u64, row)?;
        let kerr = |source| ModelError::Kernel {
            tensor: self.info.name.clone(),
            source,
        };
        // The scratch is f32-aligned, enough for every row type.
        match dequantize_row(ty, row, out) {
            Some(done) => done.map_err(kerr),
            None => Err(ModelError::UnsupportedType {
                name: self.info.name.clone(),
                ggml_type: ty,
                role: "the token embedding",
            }),
        }
    }
}

/// One transformer block's weights.
#[derive(Clone)]
pub struct LayerWeights {
    /// `blk.N.attn_norm.weight`: (n_embd,).
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    /// `blk.N.attn_sub_norm.weight` (BitNet archs): (n_embd_q,).
    pub attn_sub_norm: Option<Vec<f32>>,
    /// `blk.N.ffn_norm.weight`: (n_embd,).
    pub ffn_norm: Vec<f32>,
    pub ffn_gate: Linear,
    pub ffn_up: Linear,
    pub ffn_down: Linear,
    /// `blk.N.ffn_sub_norm.weight` (BitNet archs): (n_ff,).
    pub ffn_sub_norm: Option<Vec<f32>>,
}

/// Every weight of the model, bound and validated.
#[derive(Clone)]
pub struct Weights {
    pub token_embd: Embedding,
    /// `output_norm.weight`: (n_embd,).
    pub output_norm: Vec<f32>,
    /// `output.weight`, or `token_embd.weight` when the head is tied.
    pub output: Linear,
    pub layers: Vec<LayerWeights>,
}

/// Names and types rather than the norm vectors' values.
impl std::fmt::Debug for LayerWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mats = [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.ffn_gate,
            &self.ffn_up,
            &self.ffn_down,
        ];
        f.debug_struct("LayerWeights")
            .field(
                "matrices",
                &mats.map(|w| (w.name(), w.ggml_type(), w.n, w.k, w.scale)),
            )
            .field("sub_norms", &self.attn_sub_norm.is_some())
            .finish_non_exhaustive()
    }
}

/// Names and types rather than the norm vectors' values.
impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("token_embd", &self.token_embd.info.ggml_type)
            .field("output", &(self.output.name(), self.output.ggml_type()))
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

impl Weights {
    /// Every weight matrix: the head, then each block's in graph order.
    pub(crate) fn linears(&self) -> impl Iterator<Item = &Linear> {
        std::iter::once(&self.output).chain(self.layers.iter().flat_map(|l| {
            [
                &l.wq,
                &l.wk,
                &l.wv,
                &l.wo,
                &l.ffn_gate,
                &l.ffn_up,
                &l.ffn_down,
            ]
        }))
    }

    /// The activation formats the model's matmuls take under ik_llama.cpp's numerics
    /// (`ik`) or ggml's.
    pub(crate) fn act_formats(&self, ik: bool) -> Vec<ActFormat> {
        let mut v: Vec<ActFormat> = Vec::new();
        for w in self.linears() {
            if !v.contains(&w.act(ik)) {
                v.push(w.act(ik));
            }
        }
        v
    }
}

/// Looks tensors up, checks them and records which were used.
struct Binder<'f> {
    file: &'f GgufFile,
    used: HashSet<String>,
}

impl<'f> Binder<'f> {
    fn info(&mut self, name: &str) -> Result<&'f TensorInfo, ModelError> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_owned(),
            })?;
        self.used.insert(name.to_owned());
        Ok(info)
    }

    fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn shaped(&mut self, name: &str, expected: &[usize]) -> Result<&'f TensorInfo, ModelError> {
        let info = self.info(name)?;
        check_shape(info, expected)?;
        Ok(info)
    }

    /// An F32 vector of `n` values (norm weights), read through the file rather than the
    /// mapping: a fault on the mapping maps the whole page-cache folio around it (several
    /// MiB on filesystems with large folios), which put 8 MiB of each layer's weights into
    /// the resident set whenever a repacked copy replaced them (2B-4T TQ1_0: 194 MB).
    fn norm(&mut self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        let info = self.shaped(name, &[n])?;
        if info.ggml_type != GgmlType::F32 {
            return Err(ModelError::UnsupportedType {
                name: name.to_owned(),
                ggml_type: info.ggml_type,
                role: "a norm weight (F32 only)",
            });
        }
        let mut bytes = vec![0u8; n * std::mem::size_of::<f32>()];
        self.file.read_tensor_range(info, 0, &mut bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// A weight matrix of `n` rows of `k`, with its optional `.scale`.
    fn linear(
        &mut self,
        base: &str,
        k: usize,
        n: usize,
        scales: bool,
    ) -> Result<Linear, ModelError> {
        let name = format!("{base}.weight");
        let info = self.shaped(&name, &[k, n])?.clone();
        let scale_name = format!("{base}.scale");
        let scale = if scales && self.has(&scale_name) {
            let v = self.norm(&scale_name, 1)?;
            Some(v[0])
        } else {
            None
        };
        let ggml_type = info.ggml_type;
        let mut lin =
            Linear::new(name.clone(), info, k, n, scale).ok_or(ModelError::UnsupportedType {
                name,
                ggml_type,
                role: "a matmul weight",
            })?;
        lin.check(self.file)?;
        lin.repacked = repack(self.file, &lin)?;
        Ok(lin)
    }
}

/// `found` equals `expected` up to trailing 1s (ggml compares all four dims, missing
/// ones being 1).
fn check_shape(info: &TensorInfo, expected: &[usize]) -> Result<(), ModelError> {
    let dim = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(1);
    let exp: Vec<u64> = expected.iter().map(|&d| d as u64).collect();
    let n = info.dims.len().max(exp.len());
    if (0..n).any(|i| dim(&info.dims, i) != dim(&exp, i)) {
        return Err(ModelError::WrongShape {
            name: info.name.clone(),
            expected: exp,
            found: info.dims.clone(),
        });
    }
    Ok(())
}

/// Binds and validates every tensor `config` calls for; any tensor left over is an error
/// (llama.cpp refuses files with unused tensors too).
pub(crate) fn bind(file: &GgufFile, c: &Config) -> Result<Weights, ModelError> {
    let mut b = Binder {
        file,
        used: HashSet::new(),
    };
    let emb_info = b
        .shaped("token_embd.weight", &[c.n_embd, c.n_vocab])?
        .clone();
    let token_embd = Embedding {
        info: emb_info.clone(),
        n_embd: c.n_embd,
    };
    // Validate the embedding's type up front (get_rows support).
    if !matches!(
        emb_info.ggml_type,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::TQ1_0
            | GgmlType::TQ2_0
    ) {
        return Err(ModelError::UnsupportedType {
            name: emb_info.name.clone(),
            ggml_type: emb_info.ggml_type,
            role: "the token embedding",
        });
    }
    let output_norm = b.norm("output_norm.weight", c.n_embd)?;
    let output = if c.arch.allows_output_head() && b.has("output.weight") {
        b.linear("output", c.n_embd, c.n_vocab, false)?
    } else {
        b.linear("token_embd", c.n_embd, c.n_vocab, false)?
    };
    let scales = c.arch.allows_scale_tensors();
    let (nq, nkv) = (c.n_embd_q(), c.n_embd_kv());
    let mut layers = Vec::with_capacity(c.n_layer);
    for i in 0..c.n_layer {
        let p = format!("blk.{i}");
        let sub = c.arch.has_sub_norms();
        layers.push(LayerWeights {
            attn_norm: b.norm(&format!("{p}.attn_norm.weight"), c.n_embd)?,
            wq: b.linear(&format!("{p}.attn_q"), c.n_embd, nq, scales)?,
            wk: b.linear(&format!("{p}.attn_k"), c.n_embd, nkv, scales)?,
            wv: b.linear(&format!("{p}.attn_v"), c.n_embd, nkv, scales)?,
            wo: b.linear(&format!("{p}.attn_output"), nq, c.n_embd, scales)?,
            attn_sub_norm: if sub {
                Some(b.norm(&format!("{p}.attn_sub_norm.weight"), nq)?)
            } else {
                None
            },
            ffn_norm: b.norm(&format!("{p}.ffn_norm.weight"), c.n_embd)?,
            ffn_gate: b.linear(&format!("{p}.ffn_gate"), c.n_embd, c.n_ff, scales)?,
            ffn_up: b.linear(&format!("{p}.ffn_up"), c.n_embd, c.n_ff, scales)?,
            ffn_down: b.linear(&format!("{p}.ffn_down"), c.n_ff, c.n_embd, scales)?,
            ffn_sub_norm: if sub {
                Some(b.norm(&format!("{p}.ffn_sub_norm.weight"), c.n_ff)?)
            } else {
                None
            },
        });
    }
    if let Some(extra) = file.tensors().iter().find(|t| !b.used.contains(&t.name)) {
        return Err(ModelError::InvalidTensor {
            name: extra.name.clone(),
            reason: format!("not used by architecture '{}'", c.arch),
        });
    }
    Ok(Weights {
        token_embd,
        output_norm,
        output,
        layers,
    })
}
