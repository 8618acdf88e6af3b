//! Which reference can run a model file, read from the file itself.
//!
//! The built-in matrix and user models are routed by the same rules: the architecture, the
//! weight types of the linear layers and of `token_embd`, `.scale` tensors and the shapes
//! each reference's kernels accept. Every (file, reference) pair gets a [`Route`]: run the
//! file as it is, run it after the reference's own quantizer converts it, or
//! [`Route::NotApplicable`] with the reason, which reports show as a row of its own.

use std::path::Path;

use bitnet_gguf::{GgmlType, GgufFile};
use bitnet_models::{Arch, Config};
use bitnet_sys::Reference;

/// `LLAMA_FTYPE_MOSTLY_IQ2_BN` in ik_llama.cpp.
pub const IK_FTYPE_IQ2_BN: u32 = 137;

/// ik_llama.cpp's IQ2_BN matmuls abort below this input width (measured: docs/DESIGN.md §3.7).
pub const IK_IQ2_BN_MIN_K: usize = 512;

/// What routing needs to know about a model file: its hyper-parameters and weight types.
#[derive(Debug, Clone, PartialEq)]
pub struct FileFacts {
    pub config: Config,
    /// Types of the linear weights (`blk.N.*.weight` with two dimensions), sorted by id,
    /// each once.
    pub linear_types: Vec<GgmlType>,
    /// The type of `token_embd.weight` (also the output head unless `output.weight` exists).
    pub embd_type: GgmlType,
    /// The type of a separate `output.weight`, if the file has one.
    pub output_type: Option<GgmlType>,
    /// Whether any `blk.N.*.scale` tensor exists.
    pub has_scale_tensors: bool,
}

/// Why a file cannot be read as a model: one line naming the file and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct BadModelFile {
    pub path: String,
    pub reason: String,
}

impl FileFacts {
    /// Reads the header of `path` (no weight is read).
    pub fn read(path: &Path) -> Result<FileFacts, BadModelFile> {
        let bad = |reason: String| BadModelFile {
            path: path.display().to_string(),
            reason,
        };
        let file = GgufFile::open(path).map_err(|e| bad(e.to_string()))?;
        FileFacts::of(&file).map_err(bad)
    }

    /// The facts of an opened file.
    pub fn of(file: &GgufFile) -> Result<FileFacts, String> {
        let config = Config::read(file).map_err(|e| e.to_string())?;
        let mut linear_types: Vec<GgmlType> = file
            .tensors()
            .iter()
            .filter(|t| t.name.starts_with("blk.") && t.name.ends_with(".weight"))
            .filter(|t| t.dims.len() == 2)
            .map(|t| t.ggml_type)
            .collect();
        linear_types.sort_by_key(|t| t.id());
        linear_types.dedup();
        if linear_types.is_empty() {
            return Err("no linear weights (blk.N.*.weight with two dimensions)".into());
        }
        let embd_type = file
            .tensor("token_embd.weight")
            .map(|t| t.ggml_type)
            .ok_or("required tensor 'token_embd.weight' is missing")?;
        Ok(FileFacts {
            config,
            linear_types,
            embd_type,
            output_type: file.tensor("output.weight").map(|t| t.ggml_type),
            has_scale_tensors: file
                .tensors()
                .iter()
                .any(|t| t.name.starts_with("blk.") && t.name.ends_with(".scale")),
        })
    }

    /// Every weight type the matmuls see: linear weights, then the output head's.
    pub fn weight_types(&self) -> Vec<GgmlType> {
        let mut v = self.linear_types.clone();
        v.push(self.output_type.unwrap_or(self.embd_type));
        v.push(self.embd_type);
        v.sort_by_key(|t| t.id());
        v.dedup();
        v
    }

    /// The linear weights' types as reports show them (`tq2_0`, `i2_s+f16`).
    pub fn format_name(&self) -> String {
        self.linear_types
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// How one reference runs one file.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// The reference loads the file as it is.
    Direct,
    /// The reference runs the file only after converting it with its own
    /// `llama_model_quantize` to `ftype` (named `to` in ids).
    Convert { ftype: u32, to: &'static str },
    /// The reference cannot run this file, and why.
    NotApplicable(String),
}

/// Types each reference's loader and CPU kernels know (read from their type tables;
/// docs/DESIGN.md §3.1).
fn known_types(r: Reference) -> &'static [GgmlType] {
    use GgmlType::*;
    match r {
        Reference::LlamaCpp => &[F32, F16, BF16, Q8_0, Q4_0, Q4_1, TQ1_0, TQ2_0],
        Reference::BitnetCpp => &[F32, F16, Q8_0, Q4_0, Q4_1, TQ1_0, TQ2_0, I2_S],
        Reference::IkLlamaCpp => &[F32, F16, BF16, Q8_0, Q4_0, Q4_1, IQ1_BN, IQ2_BN, I2_S],
    }
}

/// Why a reference does not know a type, where there is more to say than "unknown".
fn unknown_type_reason(r: Reference, t: GgmlType) -> String {
    let detail = match (r, t) {
        (Reference::LlamaCpp, GgmlType::I2_S) => {
            " (bitnet.cpp's format; type id 36 is a removed type upstream)"
        }
        (Reference::LlamaCpp | Reference::BitnetCpp, GgmlType::IQ2_BN | GgmlType::IQ1_BN) => {
            " (ik_llama.cpp's format)"
        }
        (Reference::IkLlamaCpp, GgmlType::TQ1_0 | GgmlType::TQ2_0) => {
            " (it dies with SIGFPE loading TQ1_0/TQ2_0 files, measured)"
        }
        _ => "",
    };
    format!("{r} has no type {}{detail}", t.name())
}

/// The route of `facts`' file through `reference`.
pub fn route(facts: &FileFacts, reference: Reference) -> Route {
    match route_checked(facts, reference) {
        Ok(route) => route,
        Err(reason) => Route::NotApplicable(reason),
    }
}

fn route_checked(f: &FileFacts, r: Reference) -> Result<Route, String> {
    let arch = f.config.arch;
    match (r, arch) {
        (Reference::LlamaCpp, Arch::Bitnet | Arch::Llama) => {}
        (Reference::LlamaCpp, Arch::BitnetB158) => {
            return Err(format!(
                "upstream llama.cpp has no arch {arch} (its `bitnet` arch has a SiLU FFN, not \
                 the squared ReLU of {arch})"
            ))
        }
        (Reference::BitnetCpp, Arch::Bitnet) => {}
        (Reference::BitnetCpp, Arch::BitnetB158) => {
            return Err(format!(
                "bitnet.cpp (bitnet-cpp-sys 0.0.5, the newest on crates.io) has no arch {arch}: \
                 it knows arch bitnet only"
            ))
        }
        (Reference::BitnetCpp, Arch::Llama) => {
            return Err(
                "bitnet.cpp is compared on arch bitnet only: its llama graph is upstream's, \
                 which llama.cpp checks"
                    .into(),
            )
        }
        (Reference::IkLlamaCpp, Arch::BitnetB158 | Arch::Llama) => {}
        (Reference::IkLlamaCpp, Arch::Bitnet) => {
            return Err(
                "ik_llama.cpp is compared on arch bitnet-b1.58 (and llama); arch bitnet is \
                 upstream's graph, which llama.cpp and bitnet.cpp check"
                    .into(),
            )
        }
    }
    for t in f.weight_types() {
        if !known_types(r).contains(&t) {
            return Err(unknown_type_reason(r, t));
        }
    }
    match r {
        Reference::LlamaCpp => Ok(Route::Direct),
        Reference::BitnetCpp => {
            if f.linear_types.contains(&GgmlType::IQ2_BN) {
                return Err("bitnet.cpp aborts on IQ2_BN".into());
            }
            Ok(Route::Direct)
        }
        Reference::IkLlamaCpp => route_ik(f),
    }
}

/// ik_llama.cpp: IQ2_BN directly, I2_S through its own quantizer (a raw I2_S file loads
/// but computes garbage), and the shapes its IQ2_BN kernels accept.
fn route_ik(f: &FileFacts) -> Result<Route, String> {
    let c = &f.config;
    if f.has_scale_tensors {
        return Err("ik_llama.cpp refuses `.scale` tensors (extra tensors are an error)".into());
    }
    if c.arch == Arch::Llama {
        // Our engine models ik's activation quantizers for IQ*_BN only; its iqk GEMMs quantize
        // activations of the legacy types their own way, so no tolerance would separate
        // rounding from a bug.
        if let Some(t) = f
            .weight_types()
            .into_iter()
            .find(|t| !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16))
        {
            return Err(format!(
                "ik_llama.cpp quantizes activations for {} its own way (iqk GEMMs), which our \
                 engine does not model; llama models are compared on llama.cpp",
                t.name()
            ));
        }
        return Ok(Route::Direct);
    }
    if c.n_rot != c.head_dim {
        return Err(format!(
            "ik_llama.cpp requires rope.dimension_count = head_dim ({}); the file says {}",
            c.head_dim, c.n_rot
        ));
    }
    let ternary = f
        .linear_types
        .iter()
        .any(|t| matches!(t, GgmlType::IQ2_BN | GgmlType::I2_S));
    if ternary {
        for (what, k) in [("n_embd", c.n_embd), ("n_ff", c.n_ff)] {
            if k < IK_IQ2_BN_MIN_K {
                return Err(format!(
                    "ik_llama.cpp's IQ2_BN matmul needs K ≥ {IK_IQ2_BN_MIN_K} (it aborts \
                     below); {what} is {k}"
                ));
            }
            if (k / 64) % 2 == 1 {
                return Err(format!(
                    "ik_llama.cpp's AVX2 IQ2_BN matmul reads the wrong activation half when \
                     K/64 is odd; {what} is {k} ({} blocks of 64)",
                    k / 64
                ));
            }
        }
    }
    if f.linear_types.contains(&GgmlType::I2_S) {
        if f.linear_types.len() > 1 {
            return Err(format!(
                "linear weights mix I2_S with {}: ik_llama.cpp's I2_S → IQ2_BN conversion \
                 handles all-I2_S files only",
                f.format_name()
            ));
        }
        return Ok(Route::Convert {
            ftype: IK_FTYPE_IQ2_BN,
            to: "iq2_bn",
        });
    }
    Ok(Route::Direct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_models::FfnActivation;

    fn facts(arch: Arch, linear: GgmlType) -> FileFacts {
        FileFacts {
            config: Config {
                arch,
                n_vocab: 32000,
                n_ctx_train: 4096,
                n_embd: 512,
                n_layer: 2,
                n_ff: 1024,
                n_head: 8,
                n_head_kv: 2,
                head_dim: 64,
                n_rot: 64,
                rope_freq_base: 5e5,
                rope_freq_scale: 1.0,
                rms_eps: 1e-5,
                ffn_activation: match arch {
                    Arch::BitnetB158 => FfnActivation::ReluSqr,
                    _ => FfnActivation::Silu,
                },
                bos_token_id: Some(1),
                eos_token_id: Some(2),
            },
            linear_types: vec![linear],
            embd_type: GgmlType::F16,
            output_type: None,
            has_scale_tensors: false,
        }
    }

    fn na(route: Route) -> String {
        match route {
            Route::NotApplicable(reason) => reason,
            other => panic!("expected not applicable, got {other:?}"),
        }
    }

    #[test]
    fn bitnet_float_and_tq_run_on_llama_cpp_and_bitnet_cpp() {
        for t in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::TQ1_0,
            GgmlType::TQ2_0,
        ] {
            let f = facts(Arch::Bitnet, t);
            assert_eq!(route(&f, Reference::LlamaCpp), Route::Direct, "{t:?}");
            assert_eq!(route(&f, Reference::BitnetCpp), Route::Direct, "{t:?}");
            assert!(na(route(&f, Reference::IkLlamaCpp)).contains("arch bitnet"));
        }
    }

    #[test]
    fn bitnet_i2_s_runs_on_bitnet_cpp_only() {
        let f = facts(Arch::Bitnet, GgmlType::I2_S);
        assert_eq!(route(&f, Reference::BitnetCpp), Route::Direct);
        assert!(na(route(&f, Reference::LlamaCpp)).contains("no type i2_s"));
    }

    #[test]
    fn bitnet_b158_i2_s_is_converted_by_ik() {
        let f = facts(Arch::BitnetB158, GgmlType::I2_S);
        assert_eq!(
            route(&f, Reference::IkLlamaCpp),
            Route::Convert {
                ftype: IK_FTYPE_IQ2_BN,
                to: "iq2_bn"
            }
        );
        assert!(na(route(&f, Reference::LlamaCpp)).contains("no arch bitnet-b1.58"));
        assert!(na(route(&f, Reference::BitnetCpp)).contains("no arch bitnet-b1.58"));
    }

    #[test]
    fn bitnet_b158_iq2_bn_runs_on_ik() {
        let f = facts(Arch::BitnetB158, GgmlType::IQ2_BN);
        assert_eq!(route(&f, Reference::IkLlamaCpp), Route::Direct);
    }

    #[test]
    fn ik_refuses_narrow_and_odd_k() {
        let mut f = facts(Arch::BitnetB158, GgmlType::IQ2_BN);
        f.config.n_embd = 256;
        assert_eq!(
            na(route(&f, Reference::IkLlamaCpp)),
            "ik_llama.cpp's IQ2_BN matmul needs K ≥ 512 (it aborts below); n_embd is 256"
        );
        let mut f = facts(Arch::BitnetB158, GgmlType::I2_S);
        f.config.n_ff = 576;
        assert!(na(route(&f, Reference::IkLlamaCpp)).contains("n_ff is 576 (9 blocks of 64)"));
    }

    #[test]
    fn ik_refuses_a_partial_rope() {
        let mut f = facts(Arch::BitnetB158, GgmlType::IQ2_BN);
        f.config.n_rot = 32;
        assert!(na(route(&f, Reference::IkLlamaCpp)).contains("rope.dimension_count"));
    }

    #[test]
    fn tq_embedding_keeps_ik_out() {
        let mut f = facts(Arch::BitnetB158, GgmlType::IQ2_BN);
        f.embd_type = GgmlType::TQ2_0;
        assert!(na(route(&f, Reference::IkLlamaCpp)).contains("SIGFPE"));
    }

    #[test]
    fn llama_runs_on_llama_cpp_and_floats_on_ik() {
        let mut f = facts(Arch::Llama, GgmlType::Q4_1);
        f.embd_type = GgmlType::Q8_0;
        assert_eq!(route(&f, Reference::LlamaCpp), Route::Direct);
        assert!(na(route(&f, Reference::IkLlamaCpp)).contains("q4_1"));
        assert!(na(route(&f, Reference::BitnetCpp)).contains("arch bitnet only"));
        let f = facts(Arch::Llama, GgmlType::F16);
        assert_eq!(route(&f, Reference::IkLlamaCpp), Route::Direct);
    }

    #[test]
    fn scale_tensors_keep_ik_out() {
        let mut f = facts(Arch::BitnetB158, GgmlType::IQ2_BN);
        f.has_scale_tensors = true;
        assert!(na(route(&f, Reference::IkLlamaCpp)).contains(".scale"));
    }
}
