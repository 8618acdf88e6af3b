//! Runner process for upstream llama.cpp (crate `llama-cpp-sys-2`): serves the bitnet-sys
//! protocol on stdin/stdout. Everything reference-independent lives in `bitnet-ref-common`;
//! this file is the shim over this fork's C API.

use std::ffi::CStr;
use std::process::ExitCode;

use bitnet_ref_common::{ggml_kv_type, LlamaApi, TypeKernels};
use llama_cpp_sys_2 as sys;

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

bitnet_ref_common::llama_runner! {
    /// Upstream's model (from llama_model_load_from_file), context (llama_init_from_model)
    /// and batch.
    Upstream,
    sys = sys,
    vocab = llama_vocab,
}

bitnet_ref_common::eval_callback!(
    sys = sys,
    ret = bool,
    // SAFETY: ggml only hands cb_eval tensors of its own types, within the traits table.
    to_float = |ty| unsafe { (*sys::ggml_get_type_traits(ty)).to_float },
);

impl LlamaApi for Upstream {
    /// The crate pin this runner was built with (so the client can refuse another build),
    /// ggml's own version and commit, and the ISA the library was compiled for.
    fn version(&self) -> String {
        // SAFETY: each returns a pointer to a static NUL-terminated string.
        let (ggml, commit, isa) = unsafe {
            (
                CStr::from_ptr(sys::ggml_version()),
                CStr::from_ptr(sys::ggml_commit()),
                CStr::from_ptr(sys::llama_print_system_info()),
            )
        };
        format!(
            "llama.cpp ({}; ggml {} commit {}); {}",
            bitnet_sys::Reference::LlamaCpp.pinned_build(),
            ggml.to_string_lossy(),
            commit.to_string_lossy(),
            isa.to_string_lossy().trim_end()
        )
    }

    bitnet_ref_common::llama_load! {
        sys = sys,
        name = "llama.cpp",
        model_load = llama_model_load_from_file,
        context_new = llama_init_from_model,
        cb_eval = eval_callback,
        model_params = |mp, _p| {
            // No repacked weight layouts (they change the kernels that run: docs/DESIGN.md §3.4).
            mp.use_extra_bufts = false;
        },
        repack = |mp| {
            // On by default already (extra buffer types: repacked Q4_0/IQ4_NL/Q8_0 layouts).
            mp.use_extra_bufts = true;
        },
        context_params = |cp, p| {
            cp.n_threads = p.n_threads as i32;
            cp.n_threads_batch = p.n_threads as i32;
            cp.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_DISABLED;
            cp.type_k = ggml_kv_type(p.type_k);
            cp.type_v = ggml_kv_type(p.type_v);
            cp.no_perf = true;
            cp.op_offload = false;
            cp.offload_kqv = false;
        },
        no_context = |_p| "llama.cpp could not create a context".into(),
    }

    bitnet_ref_common::llama_api_methods!(sys = sys);

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

    bitnet_ref_common::llama_quantize_chunk!(sys = sys, extra = ());

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

    bitnet_ref_common::llama_convert_model!(sys = sys, |qp| {});
}

fn main() -> ExitCode {
    // SAFETY: one-time global initialisation before any other call.
    unsafe {
        sys::llama_backend_init();
        ggml_cpu_init();
    }
    bitnet_ref_common::run(Upstream::new())
}
