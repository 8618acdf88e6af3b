//! Runner process for Microsoft bitnet.cpp (crate `bitnet-cpp-sys`, its Oct-2024 llama.cpp
//! fork): serves the bitnet-sys protocol on stdin/stdout. Everything reference-independent
//! lives in `bitnet-ref-common`; this file is the shim over this fork's older C API
//! (`llama_load_model_from_file`, `llama_kv_cache_*`, model-based tokenizer calls) and its
//! I2_S kernels, which sit outside ggml's usual per-type table.

use std::ffi::{c_void, CStr};
use std::process::ExitCode;

use bitnet_cpp_sys as sys;
use bitnet_ref_common::{ggml_kv_type, i2_s_size, no_context_error, LlamaApi, TypeKernels};

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

bitnet_ref_common::llama_runner! {
    /// bitnet.cpp's model (from llama_load_model_from_file), context
    /// (llama_new_context_with_model) and batch.
    BitnetCpp,
    sys = sys,
    vocab = model,
}

bitnet_ref_common::eval_callback!(
    sys = sys,
    ret = bool,
    to_float = |ty| traits(ty).and_then(|tr| tr.to_float),
);

impl LlamaApi for BitnetCpp {
    fn version(&self) -> String {
        // SAFETY: returns a pointer to a static NUL-terminated string.
        let isa = unsafe { CStr::from_ptr(sys::llama_print_system_info()) };
        // The crate pin this runner was built with (the library has no version call of its
        // own), the kernel variant our build selects, then the ISA the library was compiled
        // for.
        format!(
            "bitnet.cpp ({}, MAD kernels); {}",
            bitnet_sys::Reference::BitnetCpp.pinned_build(),
            isa.to_string_lossy().trim_end()
        )
    }

    bitnet_ref_common::llama_load! {
        sys = sys,
        name = "bitnet.cpp",
        model_load = llama_load_model_from_file,
        context_new = llama_new_context_with_model,
        cb_eval = eval_callback,
        model_params = |mp, _p| {
            mp.use_mmap = true;
        },
        repack = |_mp| {
            // bitnet.cpp has no run-time repacking.
        },
        context_params = |cp, p| {
            cp.n_threads = p.n_threads as i32;
            cp.n_threads_batch = p.n_threads as i32;
            // Without flash attention (the default here too) the V cache must be F16.
            cp.flash_attn = false;
            cp.type_k = ggml_kv_type(p.type_k);
            cp.type_v = ggml_kv_type(p.type_v);
            cp.offload_kqv = false;
            cp.no_perf = true;
        },
        no_context = |p| no_context_error("bitnet.cpp", p),
    }

    bitnet_ref_common::llama_api_methods!(sys = sys);

    bitnet_ref_common::llama_kv_cache_methods!(sys = sys);

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

    // For I2_S this quantizes the whole tensor with one scale, as bitnet.cpp's converter
    // does.
    bitnet_ref_common::llama_quantize_chunk!(sys = sys, extra = ());

    fn quantized_size(&self, ty: u32, nrows: i64, n_per_row: i64) -> Option<usize> {
        let t = traits(ty)?;
        let n = (nrows * n_per_row) as usize;
        // ggml_row_size says 1 byte per element for both (block size 1, type size 1).
        if ty == sys::GGML_TYPE_I2_S {
            return i2_s_size(nrows, n_per_row);
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

fn main() -> ExitCode {
    // On an assertion, this ggml forks gdb (or lldb) from PATH to print a backtrace of
    // hundreds of lines, which pushes the assertion message out of the stderr tail
    // bitnet-sys reports; unlike upstream it has no GGML_NO_BACKTRACE switch. The runner
    // starts no programs, so an empty PATH leaves only ggml's short backtrace_symbols
    // fallback after the message. Set before any other thread exists.
    std::env::set_var("PATH", "");
    // SAFETY: one-time global initialisation (f16 tables) before any other call.
    unsafe { sys::llama_backend_init() };
    bitnet_ref_common::run(BitnetCpp::new())
}
