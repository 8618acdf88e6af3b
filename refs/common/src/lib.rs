//! The part of a reference runner that doesn't depend on which llama.cpp it links.
//!
//! Each runner (`refs/<reference>/src/main.rs`) implements [`LlamaApi`] over its own
//! bindgen bindings — the three forks differ in function names (`llama_memory_seq_rm` vs
//! `llama_kv_cache_seq_rm`), in struct layouts and in which ggml helpers exist — and this
//! crate turns that shim into a [`bitnet_sys::server::Backend`]: argument checks, batch
//! splitting, reading every position's logits, tokenizer buffer sizing, intermediate
//! tensor capture and the kernel entry points.

use std::ffi::c_void;
use std::process::ExitCode;

use bitnet_sys::protocol::{CapturedTensor, EvalOutput, LoadParams, ModelInfo};
use bitnet_sys::server::{serve, Backend};

/// ggml's `to_float`: `n` elements of a type at `x` into f32 at `y`.
pub type ToFloat = unsafe extern "C" fn(x: *const c_void, y: *mut f32, n: i64);
/// ggml's `from_float` / `from_float_ref`: `n` floats at `x` into a type at `y`.
pub type FromFloat = unsafe extern "C" fn(x: *const f32, y: *mut c_void, n: i64);
/// ggml's `vec_dot`: `s = x·y` over `n` elements (`nrc` = 1 rows).
pub type VecDot = unsafe extern "C" fn(
    n: i32,
    s: *mut f32,
    bs: usize,
    x: *const c_void,
    bx: usize,
    y: *const c_void,
    by: usize,
    nrc: i32,
);

/// A type's kernel entry points as the reference's CPU backend wires them.
#[derive(Debug, Clone, Copy)]
pub struct TypeKernels {
    pub to_float: Option<ToFloat>,
    /// The CPU backend's quantizer (what activations go through before a matmul).
    pub from_float_cpu: Option<FromFloat>,
    pub vec_dot: Option<VecDot>,
    pub vec_dot_type: u32,
}

/// A tensor seen by the reference's `cb_eval`, described with the fork-specific struct
/// already unpacked.
#[derive(Debug, Clone, Copy)]
pub struct TensorView {
    pub ty: u32,
    pub ne: [i64; 4],
    /// Byte strides (`nb[0]` is the element/block size for a contiguous row).
    pub nb: [usize; 4],
    pub data: *const u8,
}

/// The narrow slice of a reference's C API that the runner needs. Every method that
/// touches C memory is implemented in the runner with its own `// SAFETY:` reasoning.
pub trait LlamaApi {
    /// Name, crate version and upstream revision.
    fn version(&self) -> String;
    /// Frees any loaded model, then loads `params.model_path` and creates a context with the
    /// deterministic settings (flash attention off, no repacking, mmap on, `params`'s
    /// threads, KV types and sizes). `capture` must be passed to `cb_eval`'s user data.
    /// With `params.vocab_only` it loads the vocabulary alone (`llama_model_params::
    /// vocab_only`) and creates no context: only `tokenize` and `token_to_piece` are then
    /// called, and the returned `n_ctx` is 0.
    fn load(&mut self, params: &LoadParams, capture: *mut Capture) -> Result<ModelInfo, String>;
    /// `llama_tokenize` into `out`; returns the count, or minus the needed size.
    fn tokenize(
        &mut self,
        text: &[u8],
        out: &mut [i32],
        add_special: bool,
        parse_special: bool,
    ) -> i32;
    /// `llama_token_to_piece` (special tokens rendered, no lstrip); returns the byte count,
    /// or minus the needed size.
    fn token_to_piece(&mut self, token: i32, buf: &mut [u8]) -> i32;
    /// `llama_decode` of `tokens` at positions `pos0..` in sequence 0 with every position's
    /// logits requested; returns llama_decode's status.
    fn decode(&mut self, tokens: &[i32], pos0: i32) -> i32;
    /// Row `i` of the last decode's logits (`llama_get_logits_ith`).
    fn logits_ith(&mut self, i: i32) -> Option<&[f32]>;
    /// Drops cached positions `>= p0` of sequence 0.
    fn seq_rm(&mut self, p0: i32) -> bool;
    /// Clears the whole KV cache.
    fn clear(&mut self);
    /// Kernel entry points of ggml type `ty`, if the reference knows the type.
    fn kernels(&self, ty: u32) -> Option<TypeKernels>;
    /// `ggml_quantize_chunk` of `nrows` rows of `n_per_row` from `x` into `out`; returns
    /// bytes written. `out` is at least `quantized_size` bytes.
    fn quantize_chunk(
        &mut self,
        ty: u32,
        x: &[f32],
        out: &mut [u8],
        nrows: i64,
        n_per_row: i64,
    ) -> usize;
    /// Bytes of `nrows × n_per_row` elements of `ty` (`ggml_row_size`, plus any per-tensor
    /// trailer the fork adds), or `None` for an unknown type.
    fn quantized_size(&self, ty: u32, nrows: i64, n_per_row: i64) -> Option<usize>;
    /// `llama_model_quantize(input, output, ftype)`.
    fn convert_model(&mut self, input: &str, output: &str, ftype: u32) -> Result<(), String> {
        let _ = (input, output, ftype);
        Err("model conversion is not wired for this reference".into())
    }
}

/// Which intermediate tensors to keep, and what was kept during the current eval.
#[derive(Debug, Default)]
pub struct Capture {
    patterns: Vec<String>,
    taken: Vec<CapturedTensor>,
    /// Set if a wanted tensor could not be converted (reported after the eval).
    error: Option<String>,
}

impl Capture {
    /// Whether a tensor of this name is wanted (exact match, or prefix before a `*`).
    pub fn wants(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        })
    }

    /// Whether capture is on at all.
    pub fn is_on(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// Copies a wanted tensor out of ggml memory as f32, following its strides.
    ///
    /// # Safety
    /// `t.data` must point at a live tensor whose extent is described by `t.ne`/`t.nb`, and
    /// `to_float` must be the converter of `t.ty` (needed only for non-F32 types).
    pub unsafe fn take(&mut self, name: &str, t: TensorView, to_float: Option<ToFloat>) {
        const F32: u32 = 0;
        let ne: Vec<usize> = t.ne.iter().map(|&n| n.max(0) as usize).collect();
        let mut data = Vec::with_capacity(ne.iter().product());
        let mut row = vec![0f32; ne[0]];
        for i3 in 0..ne[3] {
            for i2 in 0..ne[2] {
                for i1 in 0..ne[1] {
                    let off = i1 * t.nb[1] + i2 * t.nb[2] + i3 * t.nb[3];
                    // SAFETY: the caller guarantees the strides describe live tensor memory.
                    let row_ptr = unsafe { t.data.add(off) };
                    if t.ty == F32 {
                        for (i0, v) in row.iter_mut().enumerate() {
                            // SAFETY: element i0 of this row lies within the tensor (see above);
                            // unaligned read because views may start anywhere.
                            *v = unsafe {
                                (row_ptr.add(i0 * t.nb[0]) as *const f32).read_unaligned()
                            };
                        }
                    } else if let Some(f) = to_float {
                        // SAFETY: a non-F32 row is contiguous in ggml's layout for the types
                        // that reach cb_eval (F16 KV views); `row` holds ne[0] floats.
                        unsafe { f(row_ptr as *const c_void, row.as_mut_ptr(), ne[0] as i64) };
                    } else {
                        self.error = Some(format!("cannot convert tensor {name} of type {}", t.ty));
                        return;
                    }
                    data.extend_from_slice(&row);
                }
            }
        }
        self.taken.push(CapturedTensor {
            name: name.to_owned(),
            ne: t.ne.map(|n| n.max(0) as u64),
            data,
        });
    }
}

/// Spare bytes after a quantizer's output buffer.
const QUANTIZE_SLACK: usize = 4096;

/// A [`Backend`] over any [`LlamaApi`].
#[derive(Debug)]
struct Runner<A> {
    api: A,
    /// Boxed so its address, handed to `cb_eval`, stays put.
    capture: Box<Capture>,
    loaded: Option<LoadedState>,
}

#[derive(Debug, Clone)]
struct LoadedState {
    info: ModelInfo,
    n_batch: u32,
    /// Next free position in sequence 0.
    n_cur: u32,
    /// Only the vocabulary is loaded: no context to evaluate in.
    vocab_only: bool,
}

impl<A: LlamaApi> Runner<A> {
    fn loaded(&mut self) -> Result<&mut LoadedState, String> {
        self.loaded
            .as_mut()
            .ok_or_else(|| "no model loaded".to_string())
    }

    /// The loaded state, refusing a vocabulary-only load (it has no context).
    fn with_context(&mut self, what: &str) -> Result<&mut LoadedState, String> {
        let state = self.loaded()?;
        if state.vocab_only {
            return Err(format!(
                "{what} needs a context; this model was loaded vocab_only"
            ));
        }
        Ok(state)
    }
}

fn check_ty(api: &impl LlamaApi, ty: u32) -> Result<TypeKernels, String> {
    api.kernels(ty)
        .ok_or_else(|| format!("ggml type {ty} is unknown to this reference"))
}

impl<A: LlamaApi> Backend for Runner<A> {
    fn version(&self) -> String {
        self.api.version()
    }

    fn load(&mut self, params: &LoadParams) -> Result<ModelInfo, String> {
        self.loaded = None;
        self.capture.patterns = params.capture.clone();
        let capture: *mut Capture = &mut *self.capture;
        let info = self.api.load(params, capture)?;
        self.loaded = Some(LoadedState {
            info: info.clone(),
            n_batch: params.n_batch.max(1),
            n_cur: 0,
            vocab_only: params.vocab_only,
        });
        Ok(info)
    }

    fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<i32>, String> {
        self.loaded()?;
        let mut out = vec![0i32; text.len() + 8];
        let mut n = self
            .api
            .tokenize(text.as_bytes(), &mut out, add_special, parse_special);
        if n < 0 {
            out.resize(n.unsigned_abs() as usize, 0);
            n = self
                .api
                .tokenize(text.as_bytes(), &mut out, add_special, parse_special);
        }
        if n < 0 {
            return Err(format!("llama_tokenize failed ({n})"));
        }
        out.truncate(n as usize);
        Ok(out)
    }

    fn detokenize(&mut self, tokens: &[i32]) -> Result<Vec<u8>, String> {
        let n_vocab = self.loaded()?.info.n_vocab;
        let mut text = Vec::new();
        let mut piece = vec![0u8; 64];
        for &t in tokens {
            if t < 0 || t as u32 >= n_vocab {
                return Err(format!("token id {t} outside the vocabulary of {n_vocab}"));
            }
            let mut n = self.api.token_to_piece(t, &mut piece);
            if n < 0 {
                piece.resize(n.unsigned_abs() as usize, 0);
                n = self.api.token_to_piece(t, &mut piece);
            }
            if n < 0 {
                return Err(format!("llama_token_to_piece failed for {t} ({n})"));
            }
            text.extend_from_slice(&piece[..n as usize]);
        }
        Ok(text)
    }

    fn eval(&mut self, tokens: &[i32], n_past: u32) -> Result<EvalOutput, String> {
        let state = self.with_context("eval")?.clone();
        let n_vocab = state.info.n_vocab;
        if tokens.is_empty() {
            return Err("eval of an empty batch".into());
        }
        if n_past > state.n_cur {
            return Err(format!(
                "n_past {n_past} is beyond the {} cached positions",
                state.n_cur
            ));
        }
        if n_past as usize + tokens.len() > state.info.n_ctx as usize {
            return Err(format!(
                "positions {n_past}..{} exceed the context of {}",
                n_past as usize + tokens.len(),
                state.info.n_ctx
            ));
        }
        if let Some(t) = tokens.iter().find(|&&t| t < 0 || t as u32 >= n_vocab) {
            return Err(format!("token id {t} outside the vocabulary of {n_vocab}"));
        }
        if n_past < state.n_cur && !self.api.seq_rm(n_past as i32) {
            return Err(format!("could not drop cached positions >= {n_past}"));
        }
        self.capture.taken.clear();
        self.capture.error = None;
        let mut logits = Vec::with_capacity(tokens.len() * n_vocab as usize);
        let mut pos = n_past;
        for chunk in tokens.chunks(state.n_batch as usize) {
            let status = self.api.decode(chunk, pos as i32);
            if status != 0 {
                if let Some(l) = self.loaded.as_mut() {
                    l.n_cur = pos;
                }
                return Err(format!(
                    "llama_decode returned {status} for {} tokens at position {pos}",
                    chunk.len()
                ));
            }
            for i in 0..chunk.len() as i32 {
                let row = self
                    .api
                    .logits_ith(i)
                    .ok_or_else(|| format!("no logits for batch row {i}"))?;
                if row.len() != n_vocab as usize {
                    return Err(format!("logits row of {} for vocab {n_vocab}", row.len()));
                }
                logits.extend_from_slice(row);
            }
            pos += chunk.len() as u32;
        }
        self.loaded()?.n_cur = pos;
        if let Some(e) = self.capture.error.take() {
            return Err(e);
        }
        Ok(EvalOutput {
            n_vocab,
            logits,
            captured: std::mem::take(&mut self.capture.taken),
        })
    }

    fn reset(&mut self) -> Result<(), String> {
        self.with_context("reset")?.n_cur = 0;
        self.api.clear();
        Ok(())
    }

    fn quantize_ref(&mut self, ty: u32, n_per_row: u64, x: &[f32]) -> Result<Vec<u8>, String> {
        check_ty(&self.api, ty)?;
        let n_per_row = n_per_row as usize;
        if n_per_row == 0 || x.len() % n_per_row != 0 {
            return Err(format!("{} values are not rows of {n_per_row}", x.len()));
        }
        let nrows = (x.len() / n_per_row) as i64;
        let size = self
            .api
            .quantized_size(ty, nrows, n_per_row as i64)
            .ok_or_else(|| format!("row of {n_per_row} is not whole blocks of type {ty}"))?;
        // Slack past the computed size: bitnet.cpp's I2_S quantizer writes scratch into what
        // would be the next row before placing the per-tensor scale.
        let mut out = vec![0u8; size + QUANTIZE_SLACK];
        let written = self
            .api
            .quantize_chunk(ty, x, &mut out, nrows, n_per_row as i64);
        if written != size {
            return Err(format!("quantizer wrote {written} bytes, expected {size}"));
        }
        out.truncate(size);
        Ok(out)
    }

    fn quantize_cpu(&mut self, ty: u32, x: &[f32]) -> Result<Vec<u8>, String> {
        let from_float = check_ty(&self.api, ty)?
            .from_float_cpu
            .ok_or_else(|| format!("type {ty} has no CPU quantizer"))?;
        let size = self
            .api
            .quantized_size(ty, 1, x.len() as i64)
            .ok_or_else(|| format!("{} values are not whole blocks of type {ty}", x.len()))?;
        let mut out = vec![0u8; size];
        // SAFETY: `out` holds the row size ggml computes for x.len() elements of `ty`.
        unsafe { from_float(x.as_ptr(), out.as_mut_ptr() as *mut c_void, x.len() as i64) };
        Ok(out)
    }

    fn dequantize(&mut self, ty: u32, n: u64, bytes: &[u8]) -> Result<Vec<f32>, String> {
        let to_float = check_ty(&self.api, ty)?
            .to_float
            .ok_or_else(|| format!("type {ty} has no to_float"))?;
        let need = self
            .api
            .quantized_size(ty, 1, n as i64)
            .ok_or_else(|| format!("{n} values are not whole blocks of type {ty}"))?;
        if bytes.len() < need {
            return Err(format!(
                "{} bytes for {n} values of type {ty} (need {need})",
                bytes.len()
            ));
        }
        let mut out = vec![0f32; n as usize];
        // SAFETY: `bytes` holds at least the size of n elements of `ty`; `out` holds n floats.
        unsafe { to_float(bytes.as_ptr() as *const c_void, out.as_mut_ptr(), n as i64) };
        Ok(out)
    }

    fn vec_dot(&mut self, ty: u32, n: u64, x: &[u8], y: &[u8]) -> Result<f32, String> {
        let k = check_ty(&self.api, ty)?;
        let vec_dot = k
            .vec_dot
            .ok_or_else(|| format!("type {ty} has no vec_dot"))?;
        let need_x = self.api.quantized_size(ty, 1, n as i64);
        let need_y = self.api.quantized_size(k.vec_dot_type, 1, n as i64);
        match (need_x, need_y) {
            (Some(nx), Some(ny)) if x.len() >= nx && y.len() >= ny => {}
            _ => {
                return Err(format!(
                    "buffers too small for a {n}-element vec_dot of type {ty}"
                ))
            }
        }
        let mut s = 0f32;
        // SAFETY: x and y hold n elements of `ty` and of its vec_dot_type (checked above).
        unsafe {
            vec_dot(
                n as i32,
                &mut s,
                0,
                x.as_ptr() as *const c_void,
                0,
                y.as_ptr() as *const c_void,
                0,
                1,
            )
        };
        Ok(s)
    }

    fn convert_model(&mut self, input: &str, output: &str, ftype: u32) -> Result<(), String> {
        self.api.convert_model(input, output, ftype)
    }
}

/// Runs the runner protocol over `api` until the client shuts it down.
pub fn run(api: impl LlamaApi) -> ExitCode {
    serve(Runner {
        api,
        capture: Box::default(),
        loaded: None,
    })
}
