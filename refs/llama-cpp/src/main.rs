//! Runner process for upstream llama.cpp (crate `llama-cpp-sys-2`): serves the bitnet-sys
//! protocol on stdin/stdout. Everything reference-independent lives in `bitnet-ref-common`;
//! this file is the shim over this fork's C API.

use std::ffi::{c_char, c_void, CStr, CString};
use std::process::ExitCode;
use std::ptr;

use bitnet_ref_common::{Capture, LlamaApi, TensorView, TypeKernels};
use bitnet_sys::protocol::{KvType, LoadParams, ModelInfo};
use llama_cpp_sys_2 as sys;

/// Pinned in Cargo.toml; reported so every parity report names the exact reference.
const VERSION: &str = "llama.cpp (llama-cpp-sys-2 =0.1.161, CPU, AVX2 build)";

const GGML_TYPE_F32: sys::ggml_type = 0;
const GGML_TYPE_F16: sys::ggml_type = 1;

/// ggml-cpu.h's per-type CPU traits (the crate's bindings don't include ggml-cpu.h).
#[repr(C)]
struct GgmlTypeTraitsCpu {
    from_float: sys::ggml_from_float_t,
    vec_dot: Option<bitnet_ref_common::VecDot>,
    vec_dot_type: sys::ggml_type,
    nrows: i64,
}

extern "C" {
    fn ggml_get_type_traits_cpu(ty: sys::ggml_type) -> *const GgmlTypeTraitsCpu;
    fn ggml_cpu_init();
}

#[derive(Debug)]
struct Upstream {
    model: *mut sys::llama_model,
    ctx: *mut sys::llama_context,
    batch: Option<sys::llama_batch>,
}

impl Upstream {
    fn free(&mut self) {
        if let Some(b) = self.batch.take() {
            // SAFETY: `b` came from llama_batch_init and is freed once (taken out of self).
            unsafe { sys::llama_batch_free(b) };
        }
        if !self.ctx.is_null() {
            // SAFETY: ctx came from llama_init_from_model and is nulled after freeing.
            unsafe { sys::llama_free(self.ctx) };
            self.ctx = ptr::null_mut();
        }
        if !self.model.is_null() {
            // SAFETY: model came from llama_model_load_from_file; its context is freed above.
            unsafe { sys::llama_model_free(self.model) };
            self.model = ptr::null_mut();
        }
    }

    fn vocab(&self) -> *const sys::llama_vocab {
        // SAFETY: only called while a model is loaded (the common runner checks).
        unsafe { sys::llama_model_get_vocab(self.model) }
    }
}

fn ggml_kv(t: KvType) -> sys::ggml_type {
    match t {
        KvType::F32 => GGML_TYPE_F32,
        KvType::F16 => GGML_TYPE_F16,
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
    // SAFETY: the CPU backend keeps computed tensors in host memory described by ne/nb.
    let to_float = unsafe { (*sys::ggml_get_type_traits(t.type_)).to_float };
    // SAFETY: view describes the tensor ggml just computed; to_float matches its type.
    unsafe { capture.take(&name, view, to_float) };
    true
}

impl LlamaApi for Upstream {
    fn version(&self) -> String {
        VERSION.to_string()
    }

    fn load(&mut self, p: &LoadParams, capture: *mut Capture) -> Result<ModelInfo, String> {
        self.free();
        let path = CString::new(p.model_path.as_str()).map_err(|_| "NUL in model path")?;
        // SAFETY: plain C struct returned by value.
        let mut mp = unsafe { sys::llama_model_default_params() };
        mp.n_gpu_layers = 0;
        // No repacked weight layouts (they change the kernels that run: DESIGN.md §3).
        mp.use_extra_bufts = false;
        // Vocabulary-only GGUFs have no tensors; the tokenizer needs none.
        mp.vocab_only = p.vocab_only;
        // SAFETY: path is a valid C string; mp is initialised above.
        self.model = unsafe { sys::llama_model_load_from_file(path.as_ptr(), mp) };
        if self.model.is_null() {
            return Err(format!("llama.cpp could not load {}", p.model_path));
        }
        if p.vocab_only {
            // No context and no batch: the session serves the tokenizer only.
            let vocab = self.vocab();
            // SAFETY: the model (its vocabulary) is live.
            return Ok(unsafe {
                ModelInfo {
                    n_vocab: sys::llama_vocab_n_tokens(vocab) as u32,
                    n_ctx: 0,
                    bos: sys::llama_vocab_bos(vocab),
                    eos: sys::llama_vocab_eos(vocab),
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
        cp.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.type_k = ggml_kv(p.type_k);
        cp.type_v = ggml_kv(p.type_v);
        cp.no_perf = true;
        cp.op_offload = false;
        cp.offload_kqv = false;
        if !p.capture.is_empty() {
            cp.cb_eval = Some(eval_callback);
            cp.cb_eval_user_data = capture as *mut c_void;
        }
        // SAFETY: model is loaded; cp is initialised above; capture outlives the context.
        self.ctx = unsafe { sys::llama_init_from_model(self.model, cp) };
        if self.ctx.is_null() {
            self.free();
            return Err("llama.cpp could not create a context".into());
        }
        // SAFETY: allocates a batch of n_batch tokens for one sequence.
        self.batch = Some(unsafe { sys::llama_batch_init(p.n_batch as i32, 0, 1) });
        let vocab = self.vocab();
        let mut desc = [0u8; 256];
        // SAFETY: desc is a writable buffer of the given size.
        let n = unsafe {
            sys::llama_model_desc(self.model, desc.as_mut_ptr() as *mut c_char, desc.len())
        };
        // SAFETY: vocab and ctx are live.
        Ok(unsafe {
            ModelInfo {
                n_vocab: sys::llama_vocab_n_tokens(vocab) as u32,
                n_ctx: sys::llama_n_ctx(self.ctx),
                bos: sys::llama_vocab_bos(vocab),
                eos: sys::llama_vocab_eos(vocab),
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
        // SAFETY: text and out are valid for the lengths passed.
        unsafe {
            sys::llama_tokenize(
                self.vocab(),
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
        // SAFETY: buf is valid for its length; token was range-checked by the caller.
        unsafe {
            sys::llama_token_to_piece(
                self.vocab(),
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
        // SAFETY: ctx is live; the model's vocabulary size bounds the row.
        let (row, n) = unsafe {
            (
                sys::llama_get_logits_ith(self.ctx, i),
                sys::llama_vocab_n_tokens(self.vocab()),
            )
        };
        // SAFETY: a non-null row holds n_vocab floats until the next decode.
        (!row.is_null()).then(|| unsafe { std::slice::from_raw_parts(row, n as usize) })
    }

    fn seq_rm(&mut self, p0: i32) -> bool {
        // SAFETY: ctx is live.
        unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.ctx), 0, p0, -1) }
    }

    fn clear(&mut self) {
        if !self.ctx.is_null() {
            // SAFETY: ctx is live.
            unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ctx), true) };
        }
    }

    fn kernels(&self, ty: u32) -> Option<TypeKernels> {
        // SAFETY: GGML_TYPE_COUNT bounds the traits tables; checked first.
        if ty >= sys::GGML_TYPE_COUNT {
            return None;
        }
        // SAFETY: ty < GGML_TYPE_COUNT; both functions return pointers into static tables.
        let (base, cpu) = unsafe {
            (
                &*sys::ggml_get_type_traits(ty),
                &*ggml_get_type_traits_cpu(ty),
            )
        };
        if base.type_size == 0 {
            return None;
        }
        Some(TypeKernels {
            to_float: base.to_float,
            from_float_cpu: cpu.from_float,
            vec_dot: cpu.vec_dot,
            vec_dot_type: cpu.vec_dot_type,
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
        // SAFETY: x holds nrows*n_per_row floats; out holds at least quantized_size bytes.
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
        if ty >= sys::GGML_TYPE_COUNT {
            return None;
        }
        // SAFETY: ty is in range of the traits table.
        let block = unsafe { (*sys::ggml_get_type_traits(ty)).blck_size };
        if block <= 0 || n_per_row % block != 0 {
            return None;
        }
        // SAFETY: ty is in range; n_per_row is whole blocks.
        Some(unsafe { sys::ggml_row_size(ty, n_per_row) } * nrows as usize)
    }

    fn convert_model(&mut self, input: &str, output: &str, ftype: u32) -> Result<(), String> {
        let inp = CString::new(input).map_err(|_| "NUL in input path")?;
        let out = CString::new(output).map_err(|_| "NUL in output path")?;
        // SAFETY: plain C struct returned by value.
        let mut qp = unsafe { sys::llama_model_quantize_default_params() };
        qp.ftype = ftype as sys::llama_ftype;
        qp.nthread = 1;
        qp.allow_requantize = true;
        // SAFETY: both paths are valid C strings; qp is initialised above.
        match unsafe { sys::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &qp) } {
            0 => Ok(()),
            rc => Err(format!("llama_model_quantize returned {rc}")),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.free();
    }
}

fn main() -> ExitCode {
    // SAFETY: one-time global initialisation before any other call.
    unsafe {
        sys::llama_backend_init();
        ggml_cpu_init();
    }
    bitnet_ref_common::run(Upstream {
        model: ptr::null_mut(),
        ctx: ptr::null_mut(),
        batch: None,
    })
}
