//! The plan of a fixture file: its metadata and its tensor list (names, types, dims), made
//! without generating any weight. The writer writes exactly this plan.

use bitnet_gguf::{GgmlType, GgufFile, MetadataValue};

use crate::data::vocab_path;
use crate::spec::{FixtureSpec, ScaleStyle, Shape};
use crate::FixtureError;

/// Size of the LLaMA-3 / 2B-4T vocabulary (`ggml-vocab-llama-bpe.gguf`, the default
/// [`crate::Vocab`]); the token embedding is `{n_embd, N_VOCAB}` in fixtures with it.
pub const N_VOCAB: u32 = 128_256;

/// `general.quantization_version` as llama.cpp's converters write it.
const QUANTIZATION_VERSION: u32 = 2;

/// What a tensor holds, which decides how its values are generated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Content {
    /// `token_embd.weight`: approximately normal values, F16 or quantized from F16.
    Embedding,
    /// A block's RMS-norm weight: `1 + small noise`, F32.
    Norm,
    /// `output_norm.weight`: the same noise around the gain that sets the logits' spread
    /// (chosen with the other value statistics in `weights.rs`), F32.
    OutputNorm,
    /// A ternary linear weight (`s·t`, or `t` with [`ScaleStyle::Tensor`]).
    Linear,
    /// The `{1}` F32 scale of the linear weight named here, whose rows are `k` wide.
    Scale { weight: String, k: u64 },
}

/// One tensor of a planned file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    pub ggml_type: GgmlType,
    /// ggml order: `dims[0]` is the row length (the input width of a linear weight).
    pub dims: Vec<u64>,
    /// Bytes of tensor data (`ggml_type.tensor_size(dims)`, before alignment padding).
    pub size: u64,
    pub(crate) content: Content,
}

/// A fixture file's header: metadata in file order, then tensors in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub metadata: Vec<(String, MetadataValue)>,
    pub tensors: Vec<PlannedTensor>,
}

impl Plan {
    pub fn tensor(&self, name: &str) -> Option<&PlannedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// The header of `spec`'s file. Reads the spec's vocabulary (its `tokenizer.*` keys are
/// copied), so it fails with [`FixtureError::DataMissing`] before `make setup`.
pub fn plan(spec: &FixtureSpec) -> Result<Plan, FixtureError> {
    spec.validate()?;
    Ok(Plan {
        metadata: metadata(spec)?,
        tensors: tensors(spec)?,
    })
}

/// The tensor list alone (no vocabulary needed).
pub(crate) fn tensors(spec: &FixtureSpec) -> Result<Vec<PlannedTensor>, FixtureError> {
    spec.validate()?;
    let d = spec.shape.dims();
    let (embd, ff, kv) = (d.n_embd.into(), d.n_ff.into(), d.n_embd_kv().into());
    let mut out = Tensors {
        spec,
        list: Vec::new(),
    };
    out.push(
        "token_embd.weight".into(),
        spec.embedding.ggml_type(),
        vec![embd, spec.vocab.n_tokens().into()],
        Content::Embedding,
    )?;
    for il in 0..d.n_layer {
        // Graph order. Shapes as every loader creates them: Q and output {n_embd, n_embd},
        // K and V {n_embd, n_embd_gqa}, gate and up {n_embd, n_ff}, down {n_ff, n_embd}.
        out.norm(il, "attn_norm", embd)?;
        out.linear(il, "attn_q", [embd, embd])?;
        out.linear(il, "attn_k", [embd, kv])?;
        out.linear(il, "attn_v", [embd, kv])?;
        out.norm(il, "attn_sub_norm", embd)?;
        out.linear(il, "attn_output", [embd, embd])?;
        out.norm(il, "ffn_norm", embd)?;
        out.linear(il, "ffn_gate", [embd, ff])?;
        out.linear(il, "ffn_up", [embd, ff])?;
        out.norm(il, "ffn_sub_norm", ff)?;
        out.linear(il, "ffn_down", [ff, embd])?;
    }
    out.push(
        "output_norm.weight".into(),
        GgmlType::F32,
        vec![embd],
        Content::OutputNorm,
    )?;
    Ok(out.list)
}

/// Builds the tensor list of one spec.
struct Tensors<'s> {
    spec: &'s FixtureSpec,
    list: Vec<PlannedTensor>,
}

impl Tensors<'_> {
    fn push(
        &mut self,
        name: String,
        ggml_type: GgmlType,
        dims: Vec<u64>,
        content: Content,
    ) -> Result<(), FixtureError> {
        let size = ggml_type
            .tensor_size(&dims)
            .ok_or_else(|| FixtureError::Unsupported {
                id: self.spec.id(),
                reason: "a tensor's rows are not whole blocks of the weight format",
            })?;
        self.list.push(PlannedTensor {
            name,
            ggml_type,
            dims,
            size,
            content,
        });
        Ok(())
    }

    fn norm(&mut self, il: u32, what: &str, width: u64) -> Result<(), FixtureError> {
        let name = format!("blk.{il}.{what}.weight");
        self.push(name, GgmlType::F32, vec![width], Content::Norm)
    }

    /// A linear weight `{k, n}`, followed by its `.scale` with [`ScaleStyle::Tensor`].
    fn linear(&mut self, il: u32, what: &str, dims: [u64; 2]) -> Result<(), FixtureError> {
        let name = format!("blk.{il}.{what}.weight");
        let ggml_type = self.spec.format.ggml_type();
        self.push(name.clone(), ggml_type, dims.to_vec(), Content::Linear)?;
        if self.spec.scales == ScaleStyle::Tensor {
            let scale = format!("blk.{il}.{what}.scale");
            let content = Content::Scale {
                weight: name,
                k: dims[0],
            };
            self.push(scale, GgmlType::F32, vec![1], content)?;
        }
        Ok(())
    }
}

/// Hyper-parameter keys in the order of the real 2B-4T file, the vocabulary's `tokenizer.*`
/// keys in its order (plus `add_bos_token = true` if it lacks one), then
/// `general.quantization_version`.
fn metadata(spec: &FixtureSpec) -> Result<Vec<(String, MetadataValue)>, FixtureError> {
    let d = spec.shape.dims();
    let arch = spec.arch.gguf_name();
    let name = match spec.shape {
        Shape::Full2B4T => "bitnet2b",
        Shape::Tiny => "bitnet-fixture-tiny",
        Shape::Custom(_) => "bitnet-fixture-custom",
    };
    let n_vocab = spec.vocab.n_tokens();
    let key = |k: &str| format!("{arch}.{k}");
    let mut md: Vec<(String, MetadataValue)> = vec![
        ("general.architecture".into(), arch.into()),
        ("general.name".into(), name.into()),
        (key("vocab_size"), n_vocab.into()),
        (key("context_length"), d.n_ctx.into()),
        (key("embedding_length"), d.n_embd.into()),
        (key("block_count"), d.n_layer.into()),
        (key("feed_forward_length"), d.n_ff.into()),
        (key("rope.dimension_count"), d.head_dim.into()),
        (key("attention.head_count"), d.n_head.into()),
        (key("attention.head_count_kv"), d.n_head_kv.into()),
        (key("attention.layer_norm_rms_epsilon"), d.rms_eps.into()),
        (key("rope.freq_base"), d.rope_freq_base.into()),
        ("general.file_type".into(), spec.format.file_type().into()),
    ];
    let path = vocab_path(spec.vocab.name())?;
    let vocab = GgufFile::open(&path).map_err(|source| FixtureError::Gguf {
        path: path.clone(),
        source,
    })?;
    let bad = |reason: String| FixtureError::BadVocab {
        path: path.clone(),
        reason,
    };
    let n_tokens = vocab
        .get_str_array("tokenizer.ggml.tokens")
        .map_err(|e| bad(e.to_string()))?
        .len();
    if n_tokens != n_vocab as usize {
        return Err(bad(format!("{n_tokens} tokens, expected {n_vocab}")));
    }
    md.extend(
        vocab
            .metadata()
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .cloned(),
    );
    if vocab.get("tokenizer.ggml.add_bos_token").is_none() {
        md.push(("tokenizer.ggml.add_bos_token".into(), true.into()));
    }
    md.push((
        "general.quantization_version".into(),
        QUANTIZATION_VERSION.into(),
    ));
    Ok(md)
}
