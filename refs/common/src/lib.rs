//! The part of a reference runner that doesn't depend on which llama.cpp it links.
//!
//! Each runner (`refs/<reference>/src/main.rs`) implements [`LlamaApi`] over its own
//! bindgen bindings — the three forks differ in function names (`llama_memory_seq_rm` vs
//! `llama_kv_cache_seq_rm`), in struct layouts and in which ggml helpers exist — and this
//! crate turns that shim into a [`bitnet_sys::server::Backend`]: argument checks, batch
//! splitting, reading every position's logits, tokenizer buffer sizing, intermediate
//! tensor capture, the kernel entry points and the `Bench` request's steps.

use std::ffi::c_void;
use std::process::ExitCode;

use bitnet_sys::protocol::{CapturedTensor, EvalOutput, KvType, LoadParams, ModelInfo, Timings};
use bitnet_sys::server::{serve, time_bench, Backend, BenchSteps};

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

/// Which positions of a `llama_decode` batch request logits (`llama_batch::logits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// Every position (the parity suite compares them all).
    All,
    /// Only the last position (generation: the head runs once).
    Last,
    /// None (a prompt chunk before the one holding the last token).
    None,
}

impl LogitRows {
    /// Whether row `i` of a batch of `n` wants logits.
    pub fn wants(self, i: usize, n: usize) -> bool {
        match self {
            LogitRows::All => true,
            LogitRows::Last => i + 1 == n,
            LogitRows::None => false,
        }
    }
}

/// The narrow slice of a reference's C API that the runner needs. Every method that
/// touches C memory is implemented in the runner with its own `// SAFETY:` reasoning.
pub trait LlamaApi {
    /// Name, crate version and upstream revision.
    fn version(&self) -> String;
    /// Frees any loaded model, then loads `params.model_path` and creates a context with the
    /// deterministic settings (flash attention off, no repacking, mmap on, `params`'s
    /// threads, KV types and sizes), or with `params.defaults` the library's own defaults
    /// but for the context, logical batch and thread count. `capture` must be passed to `cb_eval`'s user data.
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
    /// `llama_decode` of `tokens` at positions `pos0..` in sequence 0 with the logits of
    /// `rows` requested; returns llama_decode's status.
    fn decode(&mut self, tokens: &[i32], pos0: i32, rows: LogitRows) -> i32;
    /// Row `i` (a batch index whose logits were requested) of the last decode's logits
    /// (`llama_get_logits_ith`).
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

impl<A: LlamaApi> Runner<A> {
    /// `llama_decode` of one chunk at `pos`; on failure the cache is taken to end at `pos`.
    fn decode_chunk(&mut self, chunk: &[i32], pos: u32, rows: LogitRows) -> Result<(), String> {
        let status = self.api.decode(chunk, pos as i32, rows);
        if status != 0 {
            if let Some(l) = self.loaded.as_mut() {
                l.n_cur = pos;
            }
            return Err(format!(
                "llama_decode returned {status} for {} tokens at position {pos}",
                chunk.len()
            ));
        }
        Ok(())
    }

    /// Evaluates `tokens` after the cached positions in `n_batch` chunks, requesting only
    /// the last position's logits (earlier chunks request none), and returns that row.
    fn eval_last(&mut self, tokens: &[i32]) -> Result<&[f32], String> {
        let state = self.with_context("bench")?.clone();
        check_batch(&state, tokens, state.n_cur)?;
        let n_chunks = tokens.len().div_ceil(state.n_batch as usize);
        let mut pos = state.n_cur;
        let mut last_row = 0;
        for (c, chunk) in tokens.chunks(state.n_batch as usize).enumerate() {
            let rows = if c + 1 == n_chunks {
                LogitRows::Last
            } else {
                LogitRows::None
            };
            self.decode_chunk(chunk, pos, rows)?;
            pos += chunk.len() as u32;
            last_row = chunk.len() as i32 - 1;
        }
        self.loaded()?.n_cur = pos;
        let n_vocab = state.info.n_vocab as usize;
        let row = self
            .api
            .logits_ith(last_row)
            .ok_or_else(|| format!("no logits for batch row {last_row}"))?;
        if row.len() != n_vocab {
            return Err(format!("logits row of {} for vocab {n_vocab}", row.len()));
        }
        Ok(row)
    }
}

/// The `Bench` request's steps over the reference: the prompt and every decode step are
/// evaluated with logits for their last position only, as generation does.
impl<A: LlamaApi> BenchSteps for Runner<A> {
    fn clear(&mut self) -> Result<(), String> {
        self.reset()
    }

    fn prefill(&mut self, prompt: &[i32]) -> Result<&[f32], String> {
        self.eval_last(prompt)
    }

    fn step(&mut self, token: i32) -> Result<&[f32], String> {
        self.eval_last(&[token])
    }
}

/// Checks a batch about to be evaluated at `n_past..` against the loaded state.
fn check_batch(state: &LoadedState, tokens: &[i32], n_past: u32) -> Result<(), String> {
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
    Ok(())
}

fn check_ty(api: &impl LlamaApi, ty: u32) -> Result<TypeKernels, String> {
    api.kernels(ty)
        .ok_or_else(|| format!("ggml type {ty} is unknown to this reference"))
}

impl<A: LlamaApi> Backend for Runner<A> {
    /// The library's version; a defaults build (feature `defaults-build`) names itself.
    fn version(&self) -> String {
        let version = self.api.version();
        if cfg!(feature = "defaults-build") {
            format!("{version} | {}", bitnet_sys::RefBuild::DEFAULTS_MARKER)
        } else {
            version
        }
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
        check_batch(&state, tokens, n_past)?;
        if n_past < state.n_cur && !self.api.seq_rm(n_past as i32) {
            return Err(format!("could not drop cached positions >= {n_past}"));
        }
        self.capture.taken.clear();
        self.capture.error = None;
        let mut logits = Vec::with_capacity(tokens.len() * n_vocab as usize);
        let mut pos = n_past;
        for chunk in tokens.chunks(state.n_batch as usize) {
            self.decode_chunk(chunk, pos, LogitRows::All)?;
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

    fn bench(&mut self, prompt: &[i32], n_decode: u32) -> Result<Timings, String> {
        if self.capture.is_on() {
            return Err("bench with intermediate capture on (it would time the copies)".into());
        }
        time_bench(self, prompt, n_decode)
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

/// ggml's type id of a KV cache type. ggml's enum numbering is ABI (GGUF stores it), so the
/// ids are the same in every fork: `GGML_TYPE_F32 = 0`, `GGML_TYPE_F16 = 1`.
pub fn ggml_kv_type(t: KvType) -> u32 {
    match t {
        KvType::F32 => 0,
        KvType::F16 => 1,
    }
}

/// Microsoft's I2_S on x86, as bitnet.cpp writes it and ik_llama.cpp reads it: 2-bit codes
/// in blocks of 128 (QK_I2_S), then one f32 scale for the whole tensor padded to 32 bytes
/// (`quantize_i2_s` returns `n/4 + 32`).
const I2S_BLOCK: i64 = 128;
const I2S_TRAILER: usize = 32;

/// Bytes of an I2_S tensor of `nrows × n_per_row` (ggml_row_size says 1 byte per weight,
/// which is wrong for it), or `None` if a row is not whole blocks.
pub fn i2_s_size(nrows: i64, n_per_row: i64) -> Option<usize> {
    (n_per_row % I2S_BLOCK == 0).then(|| (nrows * n_per_row) as usize / 4 + I2S_TRAILER)
}

/// `llama_model_desc`'s output: `n` bytes written into `buf` (NUL excluded), clamped to
/// what fits before the terminator.
pub fn model_description(buf: &[u8], n: i32) -> String {
    let end = n.clamp(0, buf.len().saturating_sub(1) as i32) as usize;
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// What the macros below name through `$crate`, so a runner needs no extra imports.
#[doc(hidden)]
pub mod __private {
    pub use bitnet_sys::protocol::{LoadParams, ModelInfo};
}

/// Defines a runner's shim state over its `-sys` crate: the struct holding the model, the
/// context and the one batch, with `new`, `free` (also run on drop), `n_vocab`, and the two
/// ends of `LlamaApi::load` that are the same in every fork (`vocab_only_info`, and
/// `finish_load`, which allocates the batch and describes the model).
///
/// The forks' C APIs come in two generations, named by `vocab`: `model`, the older API of
/// ik_llama.cpp and bitnet.cpp, whose vocabulary calls take the model (`llama_n_vocab`,
/// `llama_token_bos`, `llama_free_model`); `llama_vocab`, upstream's, whose vocabulary calls
/// take the model's `llama_vocab` (`llama_vocab_n_tokens`, `llama_vocab_bos`,
/// `llama_model_free`). Either way the struct gets `fn tokenizer(&self)`, the handle the
/// vocabulary calls take.
///
/// ```ignore
/// bitnet_ref_common::llama_runner! {
///     /// Doc comment of the struct.
///     Ik,
///     sys = sys,
///     vocab = model,
/// }
/// ```
#[macro_export]
macro_rules! llama_runner {
    ($(#[$meta:meta])* $runner:ident, sys = $sys:ident, vocab = model $(,)?) => {
        $crate::llama_runner!(
            @define $(#[$meta])* $runner, $sys,
            llama_free_model, llama_n_vocab, llama_token_bos, llama_token_eos
        );

        impl $runner {
            /// What this fork's vocabulary calls take: the model itself.
            fn tokenizer(&self) -> *mut $sys::llama_model {
                self.model
            }
        }
    };
    ($(#[$meta:meta])* $runner:ident, sys = $sys:ident, vocab = llama_vocab $(,)?) => {
        $crate::llama_runner!(
            @define $(#[$meta])* $runner, $sys,
            llama_model_free, llama_vocab_n_tokens, llama_vocab_bos, llama_vocab_eos
        );

        impl $runner {
            /// What upstream's vocabulary calls take: the model's `llama_vocab`.
            fn tokenizer(&self) -> *const $sys::llama_vocab {
                // SAFETY: only called while a model is loaded (the common runner checks).
                unsafe { $sys::llama_model_get_vocab(self.model) }
            }
        }
    };
    (
        @define $(#[$meta:meta])* $runner:ident, $sys:ident,
        $model_free:ident, $n_vocab:ident, $bos:ident, $eos:ident
    ) => {
        $(#[$meta])*
        #[derive(Debug)]
        struct $runner {
            model: *mut $sys::llama_model,
            ctx: *mut $sys::llama_context,
            batch: ::std::option::Option<$sys::llama_batch>,
        }

        impl $runner {
            fn new() -> Self {
                Self {
                    model: ::std::ptr::null_mut(),
                    ctx: ::std::ptr::null_mut(),
                    batch: None,
                }
            }

            fn free(&mut self) {
                if let Some(b) = self.batch.take() {
                    // SAFETY: `b` came from llama_batch_init and is freed once (taken out
                    // of self).
                    unsafe { $sys::llama_batch_free(b) };
                }
                if !self.ctx.is_null() {
                    // SAFETY: ctx came from the fork's context constructor in `load` and is
                    // nulled after freeing.
                    unsafe { $sys::llama_free(self.ctx) };
                    self.ctx = ::std::ptr::null_mut();
                }
                if !self.model.is_null() {
                    // SAFETY: model came from the fork's model loader in `load`; its context
                    // is freed above.
                    unsafe { $sys::$model_free(self.model) };
                    self.model = ::std::ptr::null_mut();
                }
            }

            fn n_vocab(&self) -> i32 {
                // SAFETY: only called while a model is loaded (the common runner checks).
                unsafe { $sys::$n_vocab(self.tokenizer()) }
            }

            /// `load`'s answer for a vocabulary-only model: no context, so `n_ctx` is 0.
            fn vocab_only_info(&self, path: &str) -> $crate::__private::ModelInfo {
                let vocab = self.tokenizer();
                // SAFETY: the model (its vocabulary) is live.
                unsafe {
                    $crate::__private::ModelInfo {
                        n_vocab: $sys::$n_vocab(vocab) as u32,
                        n_ctx: 0,
                        bos: $sys::$bos(vocab),
                        eos: $sys::$eos(vocab),
                        description: format!("vocab only: {path}"),
                    }
                }
            }

            /// The end of `load` once the context exists: allocates the batch of `n_batch`
            /// tokens and describes the model.
            fn finish_load(&mut self, n_batch: u32) -> $crate::__private::ModelInfo {
                // SAFETY: allocates a batch of n_batch tokens for one sequence.
                self.batch = Some(unsafe { $sys::llama_batch_init(n_batch as i32, 0, 1) });
                let vocab = self.tokenizer();
                let mut desc = [0u8; 256];
                // SAFETY: desc is a writable buffer of the given size.
                let n = unsafe {
                    $sys::llama_model_desc(
                        self.model,
                        desc.as_mut_ptr() as *mut ::std::ffi::c_char,
                        desc.len(),
                    )
                };
                // SAFETY: the model, its vocabulary and ctx are live.
                unsafe {
                    $crate::__private::ModelInfo {
                        n_vocab: $sys::$n_vocab(vocab) as u32,
                        n_ctx: $sys::llama_n_ctx(self.ctx),
                        bos: $sys::$bos(vocab),
                        eos: $sys::$eos(vocab),
                        description: $crate::model_description(&desc, n),
                    }
                }
            }
        }

        impl Drop for $runner {
            fn drop(&mut self) {
                self.free();
            }
        }
    };
}

/// Expands, inside a runner's `impl LlamaApi`, to the methods whose bodies are the same
/// over every fork's bindings: `tokenize`, `token_to_piece`, `decode` and `logits_ith`.
/// Needs the struct from [`llama_runner!`] and the runner's `fn tokenizer(&self)`.
#[macro_export]
macro_rules! llama_api_methods {
    (sys = $sys:ident $(,)?) => {
        fn tokenize(
            &mut self,
            text: &[u8],
            out: &mut [i32],
            add_special: bool,
            parse_special: bool,
        ) -> i32 {
            // SAFETY: the model is live (the common runner checks); text and out are valid
            // for the lengths passed.
            unsafe {
                $sys::llama_tokenize(
                    self.tokenizer(),
                    text.as_ptr() as *const ::std::ffi::c_char,
                    text.len() as i32,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    add_special,
                    parse_special,
                )
            }
        }

        fn token_to_piece(&mut self, token: i32, buf: &mut [u8]) -> i32 {
            // SAFETY: the model is live; buf is valid for its length; token was
            // range-checked by the common runner.
            unsafe {
                $sys::llama_token_to_piece(
                    self.tokenizer(),
                    token,
                    buf.as_mut_ptr() as *mut ::std::ffi::c_char,
                    buf.len() as i32,
                    0,
                    true,
                )
            }
        }

        fn decode(&mut self, tokens: &[i32], pos0: i32, rows: $crate::LogitRows) -> i32 {
            let Some(batch) = self.batch.as_mut() else {
                return -1;
            };
            for (i, &t) in tokens.iter().enumerate() {
                let wants = rows.wants(i, tokens.len());
                // SAFETY: the batch holds n_batch entries and the common runner splits
                // batches to at most n_batch tokens; seq_id[i] has room for one sequence id.
                unsafe {
                    *batch.token.add(i) = t;
                    *batch.pos.add(i) = pos0 + i as i32;
                    *batch.n_seq_id.add(i) = 1;
                    *(*batch.seq_id.add(i)) = 0;
                    *batch.logits.add(i) = if wants { 1 } else { 0 };
                }
            }
            batch.n_tokens = tokens.len() as i32;
            // SAFETY: ctx is live and the batch is filled above.
            unsafe { $sys::llama_decode(self.ctx, *batch) }
        }

        fn logits_ith(&mut self, i: i32) -> Option<&[f32]> {
            let n = self.n_vocab();
            // SAFETY: ctx is live.
            let row = unsafe { $sys::llama_get_logits_ith(self.ctx, i) };
            // SAFETY: a non-null row holds n_vocab floats until the next decode.
            (!row.is_null()).then(|| unsafe { ::std::slice::from_raw_parts(row, n as usize) })
        }
    };
}

/// Defines `eval_callback`, the `cb_eval` every fork calls: asked first whether a tensor is
/// wanted, then called again once it is computed, when it is copied into the [`Capture`]
/// passed as user data. `ret` is the fork's return type (`bool`, or ik's `c_int`, where
/// non-zero wants the tensor, 1 also synchronising the backend first, and on the second
/// call continues the graph); `to_float` maps a ggml type to its `Option<ToFloat>`.
#[macro_export]
macro_rules! eval_callback {
    (sys = $sys:ident, ret = $ret:ty, to_float = $to_float:expr $(,)?) => {
        /// `cb_eval`: see [`bitnet_ref_common::eval_callback`].
        unsafe extern "C" fn eval_callback(
            t: *mut $sys::ggml_tensor,
            ask: bool,
            user: *mut ::std::ffi::c_void,
        ) -> $ret {
            // SAFETY: user data is the runner's boxed Capture, alive for the context's
            // lifetime; ggml calls back on the thread that called llama_decode.
            let capture = unsafe { &mut *(user as *mut $crate::Capture) };
            // SAFETY: ggml passes a live tensor whose name is a NUL-terminated array.
            let t = unsafe { &*t };
            // SAFETY: as above.
            let name = unsafe { ::std::ffi::CStr::from_ptr(t.name.as_ptr()) }.to_string_lossy();
            if ask {
                return <$ret>::from(capture.wants(&name));
            }
            let view = $crate::TensorView {
                ty: t.type_,
                ne: t.ne,
                nb: t.nb,
                data: t.data as *const u8,
            };
            let to_float: Option<$crate::ToFloat> = ($to_float)(t.type_);
            // SAFETY: the CPU backend keeps computed tensors in host memory described by
            // ne/nb, complete by this second call; to_float matches the tensor's type.
            unsafe { capture.take(&name, view, to_float) };
            <$ret>::from(true)
        }
    };
}

/// Expands, inside a runner's `impl LlamaApi`, to `convert_model` over the fork's
/// `llama_model_quantize`: one thread, re-quantizing allowed (the sources are quantized
/// already), then the fork-specific settings in `tweak`, which sees the params as `qp`.
#[macro_export]
macro_rules! llama_convert_model {
    (sys = $sys:ident, |$qp:ident| $tweak:block $(,)?) => {
        fn convert_model(&mut self, input: &str, output: &str, ftype: u32) -> Result<(), String> {
            let inp = ::std::ffi::CString::new(input).map_err(|_| "NUL in input path")?;
            let out = ::std::ffi::CString::new(output).map_err(|_| "NUL in output path")?;
            // SAFETY: plain C struct returned by value.
            let mut $qp = unsafe { $sys::llama_model_quantize_default_params() };
            $qp.ftype = ftype as $sys::llama_ftype;
            $qp.nthread = 1;
            $qp.allow_requantize = true;
            $tweak
            // SAFETY: both paths are valid C strings; qp is initialised above.
            match unsafe { $sys::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &$qp) } {
                0 => Ok(()),
                rc => Err(format!("llama_model_quantize returned {rc}")),
            }
        }
    };
}

/// `load`'s error when a fork without flash attention refuses the context: the usual cause
/// is an F32 V cache, which that path does not support.
pub fn no_context_error(reference: &str, p: &LoadParams) -> String {
    format!(
        "{reference} could not create a context (KV {:?}/{:?}; without flash attention the V \
         cache must be F16)",
        p.type_k, p.type_v
    )
}

/// Expands, inside a runner's `impl LlamaApi`, to `load`, the same sequence in every fork:
/// free what was loaded, load the model on the CPU (`model_load`, then the fork's
/// `model_params` settings), stop there for a vocabulary-only load, else create the context
/// (`context_new`) for one sequence with batch and micro-batch of `n_batch`, the fork's
/// `context_params` settings, and `cb_eval` wired to `capture` when intermediates are
/// wanted. `name` opens the load error; `no_context` gives the context error.
/// Needs the struct from [`llama_runner!`] and a `cb_eval` function in scope.
#[macro_export]
macro_rules! llama_load {
    (
        sys = $sys:ident,
        name = $name:literal,
        model_load = $model_load:ident,
        context_new = $context_new:ident,
        cb_eval = $cb_eval:ident,
        model_params = |$mp:ident, $mpp:ident| $model_params:block,
        repack = |$rp:ident| $repack:block,
        context_params = |$cp:ident, $cpp:ident| $context_params:block,
        no_context = |$ep:ident| $no_context:expr $(,)?
    ) => {
        fn load(
            &mut self,
            params: &$crate::__private::LoadParams,
            capture: *mut $crate::Capture,
        ) -> Result<$crate::__private::ModelInfo, String> {
            self.free();
            let path = ::std::ffi::CString::new(params.model_path.as_str())
                .map_err(|_| "NUL in model path")?;
            // SAFETY: plain C struct returned by value.
            let mut $mp = unsafe { $sys::llama_model_default_params() };
            $mp.n_gpu_layers = 0;
            // With `defaults` the library's own model parameters stay as they are.
            if !params.defaults {
                let $mpp = params;
                $model_params
            } else if params.repack {
                // The fastest settings: the library's defaults plus its run-time weight
                // repacking where that is off by default.
                let $rp = &mut $mp;
                $repack
            }
            // Vocabulary-only GGUFs have no tensors; the tokenizer needs none.
            $mp.vocab_only = params.vocab_only;
            // SAFETY: path is a valid C string; the params are initialised above.
            self.model = unsafe { $sys::$model_load(path.as_ptr(), $mp) };
            if self.model.is_null() {
                return Err(format!(
                    concat!($name, " could not load {}"),
                    params.model_path
                ));
            }
            if params.vocab_only {
                // No context and no batch: the session serves the tokenizer only.
                return Ok(self.vocab_only_info(&params.model_path));
            }
            // SAFETY: plain C struct returned by value.
            let mut $cp = unsafe { $sys::llama_context_default_params() };
            $cp.n_ctx = params.n_ctx;
            $cp.n_batch = params.n_batch;
            $cp.n_seq_max = 1;
            if params.defaults {
                // A user's session: every other context parameter (micro-batch, flash
                // attention, KV types, fused ops) as the library defaults it.
                $cp.n_threads = params.n_threads as _;
                $cp.n_threads_batch = params.n_threads as _;
            } else {
                $cp.n_ubatch = params.n_batch;
                let $cpp = params;
                $context_params
            }
            if !params.capture.is_empty() {
                $cp.cb_eval = Some($cb_eval);
                $cp.cb_eval_user_data = capture as *mut ::std::ffi::c_void;
            }
            // SAFETY: model is loaded; the params are initialised above; capture outlives
            // the context.
            self.ctx = unsafe { $sys::$context_new(self.model, $cp) };
            if self.ctx.is_null() {
                self.free();
                let $ep = params;
                return Err($no_context);
            }
            Ok(self.finish_load(params.n_batch))
        }
    };
}

/// Expands, inside `impl LlamaApi` of a fork with the older `llama_kv_cache_*` API (ik and
/// bitnet.cpp), to `seq_rm` and `clear`.
#[macro_export]
macro_rules! llama_kv_cache_methods {
    (sys = $sys:ident $(,)?) => {
        fn seq_rm(&mut self, p0: i32) -> bool {
            // SAFETY: ctx is live.
            unsafe { $sys::llama_kv_cache_seq_rm(self.ctx, 0, p0, -1) }
        }

        fn clear(&mut self) {
            if !self.ctx.is_null() {
                // SAFETY: ctx is live.
                unsafe { $sys::llama_kv_cache_clear(self.ctx) };
            }
        }
    };
}

/// Expands, inside a runner's `impl LlamaApi`, to `quantize_chunk` over
/// `ggml_quantize_chunk` with no importance matrix; `extra` are the arguments the fork takes
/// after it (ik's per-type user data, which no type here needs).
#[macro_export]
macro_rules! llama_quantize_chunk {
    (sys = $sys:ident, extra = ($($extra:expr),* $(,)?) $(,)?) => {
        fn quantize_chunk(
            &mut self,
            ty: u32,
            x: &[f32],
            out: &mut [u8],
            nrows: i64,
            n_per_row: i64,
        ) -> usize {
            // SAFETY: x holds nrows*n_per_row floats; out holds at least quantized_size bytes
            // plus the common runner's slack; the importance matrix and any extra pointers
            // are null.
            unsafe {
                $sys::ggml_quantize_chunk(
                    ty,
                    x.as_ptr(),
                    out.as_mut_ptr() as *mut ::std::ffi::c_void,
                    0,
                    nrows,
                    n_per_row,
                    ::std::ptr::null(),
                    $($extra),*
                )
            }
        }
    };
}
