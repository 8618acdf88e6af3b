//! One row of a weight tensor expanded to f32, as ggml's `get_rows` does: the token
//! embedding's lookups and the float head's conversion to Q8_0 read rows this way.

use bitnet_gguf::GgmlType;
use bitnet_kernels::float::{bf16_to_f32_row, f16_to_f32_row};
use bitnet_kernels::q4_0::{dequantize_row_q4_0, BlockQ4_0};
use bitnet_kernels::q4_1::{dequantize_row_q4_1, BlockQ4_1};
use bitnet_kernels::q8_0::{dequantize_row_q8_0, BlockQ8_0};
use bitnet_kernels::tq1_0::{dequantize_row_tq1_0, BlockTQ1_0};
use bitnet_kernels::tq2_0::{dequantize_row_tq2_0, BlockTQ2_0};
use bitnet_kernels::KernelError;
use half::{bf16, f16};

/// Writes one row of type `ty` (its bytes, aligned like the tensor) as f32 into `out`, as
/// ggml's `get_rows` does, for the types a row can be read from: F32, F16, BF16, Q8_0,
/// Q4_0, Q4_1, TQ1_0, TQ2_0. `None` for any other type.
pub(crate) fn dequantize_row(
    ty: GgmlType,
    row: &[u8],
    out: &mut [f32],
) -> Option<Result<(), KernelError>> {
    Some(match ty {
        GgmlType::F32 => {
            let src = cast::<f32>(row);
            if src.len() != out.len() {
                return Some(Err(KernelError::LengthMismatch {
                    format: ty,
                    what: "f32 row",
                    got: src.len(),
                    expected: out.len(),
                }));
            }
            out.copy_from_slice(src);
            Ok(())
        }
        GgmlType::F16 => f16_to_f32_row(cast::<f16>(row), out),
        GgmlType::BF16 => bf16_to_f32_row(cast::<bf16>(row), out),
        GgmlType::Q8_0 => dequantize_row_q8_0(cast::<BlockQ8_0>(row), out),
        GgmlType::Q4_0 => dequantize_row_q4_0(cast::<BlockQ4_0>(row), out),
        GgmlType::Q4_1 => dequantize_row_q4_1(cast::<BlockQ4_1>(row), out),
        GgmlType::TQ1_0 => dequantize_row_tq1_0(cast::<BlockTQ1_0>(row), out),
        GgmlType::TQ2_0 => dequantize_row_tq2_0(cast::<BlockTQ2_0>(row), out),
        _ => return None,
    })
}

fn cast<T: bytemuck::AnyBitPattern>(bytes: &[u8]) -> &[T] {
    bytemuck::try_cast_slice(bytes).unwrap_or_default()
}
