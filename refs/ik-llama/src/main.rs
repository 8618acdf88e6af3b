//! Runner process for ik_llama.cpp (crate `ik-llama-cpp-sys`): serves the bitnet-sys
//! protocol on stdin/stdout. Everything reference-independent lives in `bitnet-ref-common`;
//! this file is the shim over this fork's C API (model-based tokenizer and vocabulary
//! calls, `llama_kv_cache_*`, an `int`-returning eval callback, and the older ggml type
//! traits returned by value, with the per-row metadata size of the IQ*_BN types).

use std::ffi::{c_int, c_void, CStr};
use std::process::ExitCode;
use std::ptr;

use bitnet_ref_common::{ggml_kv_type, i2_s_size, no_context_error, LlamaApi, TypeKernels};
use ik_llama_cpp_sys as sys;

bitnet_ref_common::llama_runner! {
    /// ik's model (from llama_model_load_from_file), context (llama_init_from_model) and batch.
    Ik,
    sys = sys,
    vocab = model,
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

// ik's scheduler takes an `int` from cb_eval; 1 also synchronises the backend before the
// second call.
bitnet_ref_common::eval_callback!(
    sys = sys,
    ret = c_int,
    to_float = |ty| traits(ty).and_then(|tr| tr.to_float),
);

impl LlamaApi for Ik {
    fn version(&self) -> String {
        // SAFETY: returns a pointer to a static NUL-terminated string.
        let isa = unsafe { CStr::from_ptr(sys::llama_print_system_info()) };
        // The crate pin this runner was built with (the library has no version call of its
        // own), then the ISA the library was compiled for.
        format!(
            "ik_llama.cpp ({}); {}",
            bitnet_sys::Reference::IkLlamaCpp.pinned_build(),
            isa.to_string_lossy().trim_end()
        )
    }

    bitnet_ref_common::llama_load! {
        sys = sys,
        name = "ik_llama.cpp",
        model_load = llama_model_load_from_file,
        context_new = llama_init_from_model,
        cb_eval = eval_callback,
        model_params = |mp, p| {
            mp.use_mmap = true;
            // No interleaved (_R4/_R8) weight layouts: IQ2_BN_R4 switches activations to Q8_K16
            // and so changes the numerics (docs/DESIGN.md §3.4).
            mp.repack_tensors = false;
            mp.use_thp = false;
            mp.merge_qkv = false;
            // Only used here to size the KV cache estimate; kept in line with the context below.
            mp.flash_attn = false;
            mp.type_k = ggml_kv_type(p.type_k);
            mp.type_v = ggml_kv_type(p.type_v);
        },
        repack = |mp| {
            // `-rtr`: interleaved layouts (IQ2_BN → IQ2_BN_R4 with Q8_K16 activations).
            mp.repack_tensors = true;
        },
        context_params = |cp, p| {
            cp.n_threads = p.n_threads;
            cp.n_threads_batch = p.n_threads;
            // ik defaults to flash attention on; off, the V cache must be F16 (F32 is refused).
            cp.flash_attn = false;
            cp.type_k = ggml_kv_type(p.type_k);
            cp.type_v = ggml_kv_type(p.type_v);
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
        },
        no_context = |p| no_context_error("ik_llama.cpp", p),
    }

    bitnet_ref_common::llama_api_methods!(sys = sys);

    bitnet_ref_common::llama_kv_cache_methods!(sys = sys);

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

    bitnet_ref_common::llama_quantize_chunk!(sys = sys, extra = (ptr::null()));

    fn quantized_size(&self, ty: u32, nrows: i64, n_per_row: i64) -> Option<usize> {
        let t = traits(ty)?;
        if ty == sys::GGML_TYPE_I2_S {
            // One scale per tensor after all rows' codes (ggml_row_size says 1 byte/weight).
            // ik reads I2_S (`dequantize_row_ms_i2s`) but cannot quantize to it.
            return i2_s_size(nrows, n_per_row);
        }
        if n_per_row % t.blck_size != 0 {
            return None;
        }
        // SAFETY: ty has traits; n_per_row is whole blocks. ik's ggml_row_size adds the
        // type's row_meta_size (the f32 row scale of IQ2_BN, the f16 one of IQ1_BN).
        Some(unsafe { sys::ggml_row_size(ty, n_per_row) } * nrows as usize)
    }

    bitnet_ref_common::llama_convert_model!(sys = sys, |qp| {
        // I2_S (and TQ*) sources are already quantized; ik must re-quantize them (allowed
        // above). token_embd stays F16, as in the real 2B-4T file and in the other
        // references' models (ik's IQ*_BN rules would otherwise pick IQ4_NL), and an untied
        // output head keeps its source type: only the linear weights change format.
        qp.token_embedding_type = sys::GGML_TYPE_F16;
        qp.quantize_output_tensor = false;
    });
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
    bitnet_ref_common::run(Ik::new())
}
