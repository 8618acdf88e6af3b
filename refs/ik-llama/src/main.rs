//! Runner process for ik_llama.cpp (crate `ik-llama-cpp-sys`): serves the bitnet-sys
//! protocol on stdin/stdout. Everything reference-independent lives in `bitnet-ref-common`;
//! this file is the shim over this fork's C API (model-based tokenizer and vocabulary
//! calls, `llama_kv_cache_*`, an `int`-returning eval callback, and the older ggml type
//! traits returned by value, with the per-row metadata size of the IQ*_BN types).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::process::ExitCode;
use std::ptr;

use bitnet_ref_common::{Capture, LlamaApi, TensorView, TypeKernels};
use bitnet_sys::protocol::{KvType, LoadParams, ModelInfo};
use ik_llama_cpp_sys as sys;

/// Pinned in Cargo.toml; reported so every parity report names the exact reference. The
/// crate vendors ik_llama.cpp without its git history; the hash is the crate's own commit.
const VERSION: &str =
    "ik_llama.cpp (ik-llama-cpp-sys =0.1.7, crate commit db11088f, CPU, AVX2 build)";

/// Microsoft's I2_S: 2-bit codes in blocks of 128, then one f32 scale for the whole tensor
/// padded to 32 bytes. ik reads it (`dequantize_row_ms_i2s`) but cannot quantize to it.
const I2S_BLOCK: i64 = 128;
const I2S_TRAILER: usize = 32;

fn ggml_kv(t: KvType) -> sys::ggml_type {
    match t {
        KvType::F32 => sys::GGML_TYPE_F32,
        KvType::F16 => sys::GGML_TYPE_F16,
    }
}

#[derive(Debug)]
struct Ik {
    model: *mut sys::llama_model,
    ctx: *mut sys::llama_context,
    batch: Option<sys::llama_batch>,
}

impl Ik {
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
            unsafe { sys::llama_free_model(self.model) };
            self.model = ptr::null_mut();
        }
    }

    fn n_vocab(&self) -> i32 {
        // SAFETY: only called while a model is loaded (the common runner checks).
        unsafe { sys::llama_n_vocab(self.model) }
    }
}

/// The type's traits, or `None` outside the enum or for a gap in ik's sparse type numbering
/// (those entries are zeroed).
fn traits(ty: u32) -> Option<sys::ggml_type_traits_t> {
    if ty >= sys::GGML_TYPE_COUNT {
        return None;
    }
    // SAFETY: ty < GGML_TYPE_COUNT, the bound ggml_internal_get_type_traits asserts; the
    // struct is returned by value.
    let t = unsafe { sys::ggml_internal_get_type_traits(ty) };
    (t.type_size != 0 && t.blck_size > 0).then_some(t)
}

extern "C" {
    /// ik's `to_float` of the IQ*_BN types (iqk_quantize.cpp): the blocks only, as trits.
    fn dequantize_row_iq2_bn(x: *const c_void, y: *mut f32, n: i64);
    fn dequantize_row_iq1_bn(x: *const c_void, y: *mut f32, n: i64);
}

/// The IQ*_BN row's values as ik's matmul uses them: its `to_float` decodes the blocks that
/// follow the row scale into bare trits (−1, 0, 1), and the matmul multiplies by the scale
/// kept in the row metadata (`row_d · Σ`). These wrap that decoder so a dequantized row
/// carries its scale, like every other type's `to_float`.
///
/// # Safety
/// `x` holds one row of `n` elements of the type (metadata included); `y` holds `n` floats.
unsafe extern "C" fn iq2_bn_to_float(x: *const c_void, y: *mut f32, n: i64) {
    // SAFETY: an IQ2_BN row starts with its f32 scale (row_meta_size 4); unaligned because
    // rows need not be.
    let d = unsafe { (x as *const f32).read_unaligned() };
    // SAFETY: forwarded from the caller; the blocks follow the 4 metadata bytes.
    unsafe { decode_scaled(dequantize_row_iq2_bn, x, 4, d, y, n) };
}

/// See [`iq2_bn_to_float`]; IQ1_BN keeps its row scale as f16 (row_meta_size 2).
///
/// # Safety
/// As for [`iq2_bn_to_float`].
unsafe extern "C" fn iq1_bn_to_float(x: *const c_void, y: *mut f32, n: i64) {
    // SAFETY: an IQ1_BN row starts with its f16 scale; unaligned read as above.
    let d = unsafe { sys::ggml_fp16_to_fp32((x as *const u16).read_unaligned()) };
    // SAFETY: forwarded from the caller; the blocks follow the 2 metadata bytes.
    unsafe { decode_scaled(dequantize_row_iq1_bn, x, 2, d, y, n) };
}

/// Decodes the blocks after `meta` bytes with `decode`, then scales by `d`.
///
/// # Safety
/// `x` holds `meta` bytes then the blocks of `n` elements `decode` reads; `y` holds `n`
/// floats.
unsafe fn decode_scaled(
    decode: bitnet_ref_common::ToFloat,
    x: *const c_void,
    meta: usize,
    d: f32,
    y: *mut f32,
    n: i64,
) {
    // SAFETY: the caller guarantees the blocks after the metadata and room for n floats.
    unsafe { decode((x as *const u8).add(meta) as *const c_void, y, n) };
    // SAFETY: y holds n floats, all written above.
    let row = unsafe { std::slice::from_raw_parts_mut(y, n as usize) };
    row.iter_mut().for_each(|v| *v *= d);
}

/// `cb_eval`: asked first whether a tensor is wanted, then called again once it is computed.
/// ik's scheduler takes an `int`: non-zero wants the tensor (1 also synchronises the backend
/// first) or, on the second call, continues the graph.
unsafe extern "C" fn eval_callback(
    t: *mut sys::ggml_tensor,
    ask: bool,
    user: *mut c_void,
) -> c_int {
    // SAFETY: user data is the runner's boxed Capture, alive for the context's lifetime;
    // ggml calls back on the thread that called llama_decode.
    let capture = unsafe { &mut *(user as *mut Capture) };
    // SAFETY: ggml passes a live tensor whose name is a NUL-terminated array.
    let t = unsafe { &*t };
    // SAFETY: as above.
    let name = unsafe { CStr::from_ptr(t.name.as_ptr()) }.to_string_lossy();
    if ask {
        return c_int::from(capture.wants(&name));
    }
    let view = TensorView {
        ty: t.type_,
        ne: t.ne,
        nb: t.nb,
        data: t.data as *const u8,
    };
    let to_float = traits(t.type_).and_then(|tr| tr.to_float);
    // SAFETY: the CPU backend keeps computed tensors in host memory described by ne/nb, and
    // the callback asked for synchronisation before this call; to_float matches the type.
    unsafe { capture.take(&name, view, to_float) };
    1
}

impl LlamaApi for Ik {
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
        // No interleaved (_R4/_R8) weight layouts: IQ2_BN_R4 switches activations to Q8_K16
        // and so changes the numerics (DESIGN.md §3).
        mp.repack_tensors = false;
        mp.use_thp = false;
        mp.merge_qkv = false;
        // Only used here to size the KV cache estimate; kept in line with the context below.
        mp.flash_attn = false;
        mp.type_k = ggml_kv(p.type_k);
        mp.type_v = ggml_kv(p.type_v);
        // Vocabulary-only GGUFs have no tensors; the tokenizer needs none.
        mp.vocab_only = p.vocab_only;
        // SAFETY: path is a valid C string; mp is initialised above.
        self.model = unsafe { sys::llama_model_load_from_file(path.as_ptr(), mp) };
        if self.model.is_null() {
            return Err(format!("ik_llama.cpp could not load {}", p.model_path));
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
        cp.n_threads = p.n_threads;
        cp.n_threads_batch = p.n_threads;
        // ik defaults to flash attention on; off, the V cache must be F16 (F32 is refused).
        cp.flash_attn = false;
        cp.type_k = ggml_kv(p.type_k);
        cp.type_v = ggml_kv(p.type_v);
        cp.offload_kqv = false;
        // ik fuses the up and gate matmuls of a SiLU/ReLU FFN into one op by default; the
        // unfused graph names ffn_up-N / ffn_gate-N like the other references, so layer-level
        // localisation compares the same intermediates. The logits are bit-identical either
        // way (measured on SmolLM2); BitNet's ReLU² FFN is never fused.
        cp.fused_up_gate = false;
        // MoE-only fusions and MLA: off so no model takes an ik-specific path.
        cp.fused_moe_up_gate = false;
        cp.fused_mmad = false;
        cp.mla_attn = 0;
        if !p.capture.is_empty() {
            cp.cb_eval = Some(eval_callback);
            cp.cb_eval_user_data = capture as *mut c_void;
        }
        // SAFETY: model is loaded; cp is initialised above; capture outlives the context.
        self.ctx = unsafe { sys::llama_init_from_model(self.model, cp) };
        if self.ctx.is_null() {
            self.free();
            return Err(format!(
                "ik_llama.cpp could not create a context (KV {:?}/{:?}; without flash \
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
        // ik keeps the CPU quantizer and vec_dot in the one traits table (no ggml-cpu split).
        let t = traits(ty)?;
        let to_float = match ty {
            sys::GGML_TYPE_IQ2_BN => Some(iq2_bn_to_float as bitnet_ref_common::ToFloat),
            sys::GGML_TYPE_IQ1_BN => Some(iq1_bn_to_float as bitnet_ref_common::ToFloat),
            _ => t.to_float,
        };
        Some(TypeKernels {
            to_float,
            from_float_cpu: t.from_float,
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
        // SAFETY: x holds nrows*n_per_row floats; out holds at least quantized_size bytes;
        // no importance matrix and no per-type user data.
        unsafe {
            sys::ggml_quantize_chunk(
                ty,
                x.as_ptr(),
                out.as_mut_ptr() as *mut c_void,
                0,
                nrows,
                n_per_row,
                ptr::null(),
                ptr::null(),
            )
        }
    }

    fn quantized_size(&self, ty: u32, nrows: i64, n_per_row: i64) -> Option<usize> {
        let t = traits(ty)?;
        if ty == sys::GGML_TYPE_I2_S {
            // One scale per tensor after all rows' codes (ggml_row_size says 1 byte/weight).
            return (n_per_row % I2S_BLOCK == 0)
                .then(|| (nrows * n_per_row) as usize / 4 + I2S_TRAILER);
        }
        if n_per_row % t.blck_size != 0 {
            return None;
        }
        // SAFETY: ty has traits; n_per_row is whole blocks. ik's ggml_row_size adds the
        // type's row_meta_size (the f32 row scale of IQ2_BN, the f16 one of IQ1_BN).
        Some(unsafe { sys::ggml_row_size(ty, n_per_row) } * nrows as usize)
    }

    fn convert_model(&mut self, input: &str, output: &str, ftype: u32) -> Result<(), String> {
        let inp = CString::new(input).map_err(|_| "NUL in input path")?;
        let out = CString::new(output).map_err(|_| "NUL in output path")?;
        // SAFETY: plain C struct returned by value.
        let mut qp = unsafe { sys::llama_model_quantize_default_params() };
        qp.ftype = ftype as sys::llama_ftype;
        qp.nthread = 1;
        // I2_S (and TQ*) sources are already quantized; ik must re-quantize them.
        qp.allow_requantize = true;
        // token_embd stays F16, as in the real 2B-4T file and in the other references'
        // models (ik's IQ*_BN rules would otherwise pick IQ4_NL), and an untied output head
        // keeps its source type: only the linear weights change format.
        qp.token_embedding_type = sys::GGML_TYPE_F16;
        qp.quantize_output_tensor = false;
        // SAFETY: both paths are valid C strings; qp is initialised above.
        match unsafe { sys::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &qp) } {
            0 => Ok(()),
            rc => Err(format!("llama_model_quantize returned {rc}")),
        }
    }
}

impl Drop for Ik {
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
    bitnet_ref_common::run(Ik {
        model: ptr::null_mut(),
        ctx: ptr::null_mut(),
        batch: None,
    })
}
