//! Tensor formats and dot-product kernels for bitnet-rs.
//!
//! Each format module follows ggml's naming split: `quantize_row_*_ref` is the reference
//! quantizer (bit-identical to the C `*_ref`), `dequantize_row_*` expands to f32,
//! `vec_dot_*_generic` is the portable scalar dot product against the format's activation
//! type (ggml's `vec_dot_type`), and `vec_dot_*` dispatches at runtime to the fastest
//! [`Isa`] (AVX2 where present; `BITNET_FORCE_SCALAR=1` forces the scalar path). Dot products
//! whose float rounding depends on how ggml was built take a [`SumOrder`]; every ISA computes
//! each order bit-identically, so the ISA changes speed, never results.

pub mod cpu;
mod error;
pub mod round;

pub mod float;
pub mod format;
pub mod gemm;
pub mod i2_s;
pub mod i8_s;
pub mod ik_float;
pub mod iq2_bn;
pub mod order;
pub mod q4_0;
pub mod q4_1;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
pub mod q8_k64;
#[cfg(test)]
mod test_values;
pub mod tq1_0;
pub mod tq2_0;

pub use bitnet_gguf::GgmlType;
pub use cpu::Isa;
pub use error::KernelError;
pub use order::SumOrder;
