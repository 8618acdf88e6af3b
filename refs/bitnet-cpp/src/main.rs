//! Runner process for Microsoft bitnet.cpp (crate `bitnet-cpp-sys`, its Oct-2024 llama.cpp
//! fork): serves the bitnet-sys protocol on stdin/stdout. Everything reference-independent
//! lives in `bitnet-ref-common`; this file is the shim over this fork's older C API
//! (`llama_load_model_from_file`, `llama_kv_cache_*`, model-based tokenizer calls) and its
//! I2_S kernels, which sit outside ggml's usual per-type table.

use std::ffi::{c_char, c_void, CStr, CString};
use std::process::ExitCode;
use std::ptr;

use bitnet_cpp_sys as sys;
use bitnet_ref_common::{Capture, LlamaApi, TensorView, TypeKernels};
use bitnet_sys::protocol::{KvType, LoadParams, ModelInfo};

/// Pinned in Cargo.toml; reported so every parity report names the exact reference. The
/// crate vendors bitnet.cpp without its git history; the hash is the crate's own commit.
const VERSION: &str =
    "bitnet.cpp (bitnet-cpp-sys =0.0.5, crate commit d8e5b1ed, CPU, AVX2 build, MAD kernels)";

/// I2_S on x86: 2-bit codes in blocks of 128 (QK_I2_S), then one f32 scale for the whole
/// tensor padded to 32 bytes (`quantize_i2_s` returns `n/4 + 32`).
const I2S_BLOCK: i64 = 128;
const I2S_TRAILER: usize = 32;
/// I8_S, I2_S's activations: per row the int8 codes, and (after all rows, as ggml's mul_mat
/// lays out its work buffer) one f32 scale and one i32 code sum per row.
const I8S_ROW_EXTRA: usize = 8;

extern "C" {
    /// bitnet.cpp's activation quantizer for I2_S matmuls (ggml-quants.c). It is not in the
    /// type table: it also returns the row's scale and code sum, which ggml's mul_mat keeps
    /// after the quantized rows.
    fn quantize_row_i8_s(x: *const f32, y: *mut c_void, n: i64, scale: *mut f32, sum: *mut i32);
}

/// [`quantize_row_i8_s`] as a `from_float`: one row of `n` int8 codes followed by its f32
/// scale and i32 code sum, exactly the work buffer ggml's mul_mat builds for one row.
///
/// # Safety
/// `x` holds `n` floats and `y` has room for `n + 8` bytes.
unsafe extern "C" fn i8s_from_float(x: *const f32, y: *mut c_void, n: i64) {
    let mut scale = 0f32;
    let mut sum = 0i32;
    // SAFETY: the caller guarantees x holds n floats and y at least n bytes.
    unsafe { quantize_row_i8_s(x, y, n, &mut scale, &mut sum) };
    // SAFETY: the caller guarantees 8 more bytes after the n codes; unaligned writes
    // because n need not be a multiple of 4.
    unsafe {
        let tail = (y as *mut u8).add(n as usize);
        (tail as *mut f32).write_unaligned(scale);
        (tail.add(4) as *mut i32).write_unaligned(sum);
    }
}

fn ggml_kv(t: KvType) -> sys::ggml_type {
    match t {
        KvType::F32 => sys::GGML_TYPE_F32,
        KvType::F16 => sys::GGML_TYPE_F16,
    }
}

/// The type's traits, or `None` outside the enum or for an entry the table leaves empty.
fn traits(ty: u32) -> Option<&'static sys::ggml_type_traits> {
    if ty >= sys::GGML_TYPE_COUNT {
        return None;
    }
    // SAFETY: ty < GGML_TYPE_COUNT, the bound ggml_get_type_traits asserts; it returns a
    // pointer into a static table.
    let t = unsafe { &*sys::ggml_get_type_traits(ty) };
    (t.type_size != 0 && t.blck_size > 0).then_some(t)
}

#[derive(Debug)]
struct BitnetCpp {
    model: *mut sys::llama_model,
    ctx: *mut sys::llama_context,
    batch: Option<sys::llama_batch>,
}

impl BitnetCpp {
    fn free(&mut self) {
        if let Some(b) = self.batch.take() {
            // SAFETY: `b` came from llama_batch_init and is freed once (taken out of self).
            unsafe { sys::llama_batch_free(b) };
        }
        if !self.ctx.is_null() {
            // SAFETY: ctx came from llama_new_context_with_model and is nulled after freeing.
            unsafe { sys::llama_free(self.ctx) };
            self.ctx = ptr::null_mut();
        }
        if !self.model.is_null() {
            // SAFETY: model came from llama_load_model_from_file; its context is freed above.
            unsafe { sys::llama_free_model(self.model) };
            self.model = ptr::null_mut();
        }
    }

    fn n_vocab(&self) -> i32 {
        // SAFETY: only called while a model is loaded (the common runner checks).
        unsafe { sys::llama_n_vocab(self.model) }
    }
}

/// `cb_eval`: asked first whether a tensor is wanted, then called again once it is computed.
unsafe extern "C" fn eval_callback(t: *mut sys::ggml_tensor, ask: bool, user: *mut c_void) -> bool {
    // SAFETY: user data is the runner's boxed Capture, alive for the context's lifetime;
    // ggml calls back on the thread that called llama_decode.
    let capture = unsafe { &mut *(user as *mut Capture) };
    // SAFETY: ggml passes a live tensor whose name is a NUL-terminated array.
    let t = unsafe { &*t };
    // SAFETY: as above.
    let name = unsafe { CStr::from_ptr(t.name.as_ptr()) }.to_string_lossy();
    if ask {
        return capture.wants(&name);
    }
    let view = TensorView {
        ty: t.type_,
        ne: t.ne,
        nb: t.nb,
        data: t.data as *const u8,
    };
    let to_float = traits(t.type_).and_then(|tr| tr.to_float);
    // SAFETY: the CPU backend keeps computed tensors in host memory described by ne/nb;
    // to_float matches the tensor's type.
    unsafe { capture.take(&name, view, to_float) };
    true
}

impl LlamaApi for BitnetCpp {
    fn version(&self) -> String {
        // SAFETY: returns a pointer to a static NUL-terminated string.
        let isa = unsafe { CStr::from_ptr(sys::llama_print_system_info()) };
        format!("{VERSION}; {}", isa.to_string_lossy().trim_end())
    }

    fn load(&mut self, p: &LoadParams, capture: *mut Capture) -> Result<ModelInfo, String> {
        self.free();
        let path = CString::new(p.model_path.as_str()).map_err(|_| "NUL in model path")?;
        // SAFETY: plain C struct returned by value.
        let mut mp = unsafe { sys::llama_model_default_params() };
        mp.n_gpu_layers = 0;
        mp.use_mmap = true;
        // Vocabulary-only GGUFs have no tensors; the tokenizer needs none.
        mp.vocab_only = p.vocab_only;
        // SAFETY: path is a valid C string; mp is initialised above.
        self.model = unsafe { sys::llama_load_model_from_file(path.as_ptr(), mp) };
        if self.model.is_null() {
            return Err(format!("bitnet.cpp could not load {}", p.model_path));
        }
        if p.vocab_only {
            // No context and no batch: the session serves the tokenizer only.
            // SAFETY: the model (its vocabulary) is live.
            return Ok(unsafe {
                ModelInfo {
                    n_vocab: sys::llama_n_vocab(self.model) as u32,
                    n_ctx: 0,
                    bos: sys::llama_token_bos(self.model),
                    eos: sys::llama_token_eos(self.model),
                    description: format!("vocab only: {}", p.model_path),
                }
            });
        }
        // SAFETY: plain C struct returned by value.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = p.n_ctx;
        cp.n_batch = p.n_batch;
        cp.n_ubatch = p.n_batch;
        cp.n_seq_max = 1;
        cp.n_threads = p.n_threads as i32;
        cp.n_threads_batch = p.n_threads as i32;
        // Without flash attention (the default here too) the V cache must be F16.
        cp.flash_attn = false;
        cp.type_k = ggml_kv(p.type_k);
        cp.type_v = ggml_kv(p.type_v);
        cp.offload_kqv = false;
        cp.no_perf = true;
        if !p.capture.is_empty() {
            cp.cb_eval = Some(eval_callback);
            cp.cb_eval_user_data = capture as *mut c_void;
        }
        // SAFETY: model is loaded; cp is initialised above; capture outlives the context.
        self.ctx = unsafe { sys::llama_new_context_with_model(self.model, cp) };
        if self.ctx.is_null() {
            self.free();
            return Err(format!(
                "bitnet.cpp could not create a context (KV {:?}/{:?}; without flash \
                 attention the V cache must be F16)",
                p.type_k, p.type_v
            ));
        }
        // SAFETY: allocates a batch of n_batch tokens for one sequence.
        self.batch = Some(unsafe { sys::llama_batch_init(p.n_batch as i32, 0, 1) });
        let mut desc = [0u8; 256];
        // SAFETY: desc is a writable buffer of the given size.
        let n = unsafe {
            sys::llama_model_desc(self.model, desc.as_mut_ptr() as *mut c_char, desc.len())
        };
        // SAFETY: model and ctx are live.
        Ok(unsafe {
            ModelInfo {
                n_vocab: sys::llama_n_vocab(self.model) as u32,
                n_ctx: sys::llama_n_ctx(self.ctx),
                bos: sys::llama_token_bos(self.model),
                eos: sys::llama_token_eos(self.model),
                description: String::from_utf8_lossy(&desc[..n.clamp(0, 255) as usize])
                    .into_owned(),
            }
        })
    }

    fn tokenize(
        &mut self,
        text: &[u8],
        out: &mut [i32],
        add_special: bool,
        parse_special: bool,
    ) -> i32 {
        // SAFETY: the model is live; text and out are valid for the lengths passed.
        unsafe {
            sys::llama_tokenize(
                self.model,
                text.as_ptr() as *const c_char,
                text.len() as i32,
                out.as_mut_ptr(),
                out.len() as i32,
                add_special,
                parse_special,
            )
        }
    }

    fn token_to_piece(&mut self, token: i32, buf: &mut [u8]) -> i32 {
        // SAFETY: the model is live; buf is valid for its length; token was range-checked.
        unsafe {
            sys::llama_token_to_piece(
                self.model,
                token,
                buf.as_mut_ptr() as *mut c_char,
                buf.len() as i32,
                0,
                true,
            )
        }
    }

    fn decode(&mut self, tokens: &[i32], pos0: i32) -> i32 {
        let Some(batch) = self.batch.as_mut() else {
            return -1;
        };
        for (i, &t) in tokens.iter().enumerate() {
            // SAFETY: the batch holds n_batch entries and the common runner splits batches
            // to at most n_batch tokens; seq_id[i] has room for one sequence id.
            unsafe {
                *batch.token.add(i) = t;
                *batch.pos.add(i) = pos0 + i as i32;
                *batch.n_seq_id.add(i) = 1;
                *(*batch.seq_id.add(i)) = 0;
                *batch.logits.add(i) = 1;
            }
        }
        batch.n_tokens = tokens.len() as i32;
        // SAFETY: ctx is live and the batch is filled above.
        unsafe { sys::llama_decode(self.ctx, *batch) }
    }

    fn logits_ith(&mut self, i: i32) -> Option<&[f32]> {
        let n = self.n_vocab();
        // SAFETY: ctx is live.
        let row = unsafe { sys::llama_get_logits_ith(self.ctx, i) };
        // SAFETY: a non-null row holds n_vocab floats until the next decode.
        (!row.is_null()).then(|| unsafe { std::slice::from_raw_parts(row, n as usize) })
    }

    fn seq_rm(&mut self, p0: i32) -> bool {
        // SAFETY: ctx is live.
        unsafe { sys::llama_kv_cache_seq_rm(self.ctx, 0, p0, -1) }
    }

    fn clear(&mut self) {
        if !self.ctx.is_null() {
            // SAFETY: ctx is live.
            unsafe { sys::llama_kv_cache_clear(self.ctx) };
        }
    }

    fn kernels(&self, ty: u32) -> Option<TypeKernels> {
        let t = traits(ty)?;
        // I8_S has no from_float: its quantizer takes extra outputs (see i8s_from_float).
        let from_float_cpu = if ty == sys::GGML_TYPE_I8_S {
            Some(i8s_from_float as bitnet_ref_common::FromFloat)
        } else {
            t.from_float
        };
        Some(TypeKernels {
            to_float: t.to_float,
            from_float_cpu,
            vec_dot: t.vec_dot,
            vec_dot_type: t.vec_dot_type,
        })
    }

    fn quantize_chunk(
        &mut self,
        ty: u32,
        x: &[f32],
        out: &mut [u8],
        nrows: i64,
        n_per_row: i64,
    ) -> usize {
        // SAFETY: x holds nrows*n_per_row floats; out holds at least quantized_size bytes
        // plus the common runner's slack; no importance matrix. For I2_S this quantizes the
        // whole tensor with one scale, as bitnet.cpp's converter does.
        unsafe {
            sys::ggml_quantize_chunk(
                ty,
                x.as_ptr(),
                out.as_mut_ptr() as *mut c_void,
                0,
                nrows,
                n_per_row,
                ptr::null(),
            )
        }
    }

    fn quantized_size(&self, ty: u32, nrows: i64, n_per_row: i64) -> Option<usize> {
        let t = traits(ty)?;
        let n = (nrows * n_per_row) as usize;
        // ggml_row_size says 1 byte per element for both (block size 1, type size 1).
        if ty == sys::GGML_TYPE_I2_S {
            return (n_per_row % I2S_BLOCK == 0).then_some(n / 4 + I2S_TRAILER);
        }
        if ty == sys::GGML_TYPE_I8_S {
            return Some(n + nrows as usize * I8S_ROW_EXTRA);
        }
        if n_per_row % t.blck_size != 0 {
            return None;
        }
        // SAFETY: ty has traits; n_per_row is whole blocks.
        Some(unsafe { sys::ggml_row_size(ty, n_per_row) } * nrows as usize)
    }
}

impl Drop for BitnetCpp {
    fn drop(&mut self) {
        self.free();
    }
}

fn main() -> ExitCode {
    // On an assertion, this ggml forks gdb (or lldb) from PATH to print a backtrace of
    // hundreds of lines, which pushes the assertion message out of the stderr tail
    // bitnet-sys reports; unlike upstream it has no GGML_NO_BACKTRACE switch. The runner
    // starts no programs, so an empty PATH leaves only ggml's short backtrace_symbols
    // fallback after the message. Set before any other thread exists.
    std::env::set_var("PATH", "");
    // SAFETY: one-time global initialisation (f16 tables) before any other call.
    unsafe { sys::llama_backend_init() };
    bitnet_ref_common::run(BitnetCpp {
        model: ptr::null_mut(),
        ctx: ptr::null_mut(),
        batch: None,
    })
}
