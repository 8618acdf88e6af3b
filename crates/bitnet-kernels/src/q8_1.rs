//! Q8_1: int8 blocks of 32 with an f16 scale `d` and an f16 `s = d·Σq` — the activation type
//! ggml pairs with Q4_1 weights, whose min term needs the block's sum.
//!
//! The quants are Q8_0's, from either of its two quantizers (see [`crate::q8_0`]):
//! [`quantize_row_q8_1_ref`] (ggml `quantize_row_q8_1_ref`: `roundf`, `id = 1/d`, `Σ` of the
//! int8 quants) and [`quantize_row_q8_1_x86`] (ggml-cpu x86 `quantize_row_q8_1` in AVX/AVX2
//! builds: ties to even, `id = 127/amax`, `Σ` of the int32 codes before the int8 pack). Both
//! compute `s` from the f32 `d`, not the f16-rounded one: `s = f16(Σq · d)`.

use half::f16;

use crate::float::{block_count, expect_len, f32_to_f16_ref};
use crate::q8_0::{quantize_block_ref, quantize_block_x86, saturate_i8, QK8_0};
use crate::{GgmlType, Isa, KernelError};

/// Elements per Q8_1 block.
pub const QK8_1: usize = QK8_0;

/// 32 values in 36 bytes: 9 bits per value. Value `i` is `qs[i] · d`; `s = d · Σ qs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d · Σ qs`, with the f32 `d`, rounded once to f16.
    pub s: f16,
    /// Quants, in element order.
    pub qs: [i8; QK8_1],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// ggml's `quantize_row_q8_1_ref`, bit for bit. `x.len()` must be a multiple of 32 and `y`
/// hold `x.len() / 32` blocks.
pub fn quantize_row_q8_1_ref(x: &[f32], y: &mut [BlockQ8_1]) -> Result<(), KernelError> {
    let nb = block_count(GgmlType::Q8_1, x.len(), QK8_1)?;
    expect_len(GgmlType::Q8_1, "blocks", y.len(), nb)?;
    for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
        let (d, qs) = quantize_block_ref(xb);
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        *yb = BlockQ8_1 {
            d: f32_to_f16_ref(d),
            s: f32_to_f16_ref(sum as f32 * d),
            qs,
        };
    }
    Ok(())
}

/// The x86 activation quantizer in scalar code: the oracle of [`quantize_row_q8_1_x86`].
pub fn quantize_row_q8_1_x86_generic(x: &[f32], y: &mut [BlockQ8_1]) -> Result<(), KernelError> {
    quantize_row_q8_1_x86_with(Isa::Scalar, x, y)
}

/// [`quantize_row_q8_1_x86`] on the given ISA (scalar when `isa` is not supported here).
pub fn quantize_row_q8_1_x86_with(
    isa: Isa,
    x: &[f32],
    y: &mut [BlockQ8_1],
) -> Result<(), KernelError> {
    let nb = block_count(GgmlType::Q8_1, x.len(), QK8_1)?;
    expect_len(GgmlType::Q8_1, "blocks", y.len(), nb)?;
    for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
        let (d, qs, sum) = match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: isa.runs_avx2() checked in the guard; xb has 32 elements.
            _ if isa.runs_avx2() => unsafe { crate::q8_0::avx2::quantize_block_x86(xb) },
            _ => {
                let (d, codes) = quantize_block_x86(xb);
                // ggml sums the int32 codes with wrapping vector adds, before saturation.
                let sum = codes.iter().fold(0i32, |s, &c| s.wrapping_add(c));
                (d, codes.map(saturate_i8), sum)
            }
        };
        *yb = BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(d * sum as f32),
            qs,
        };
    }
    Ok(())
}

/// ggml-cpu's x86 `quantize_row_q8_1` (AVX/AVX2 builds): the activation quantizer llama.cpp
/// runs for Q4_1 weights on x86 (ties to even, `id = 127/amax`).
pub fn quantize_row_q8_1_x86(x: &[f32], y: &mut [BlockQ8_1]) -> Result<(), KernelError> {
    quantize_row_q8_1_x86_with(Isa::best(), x, y)
}

/// `y[i] = qs[i] · d` (`s` unused). ggml has no `to_float` for Q8_1; this is the value the
/// block encodes, for checks and debugging. `y` must hold 32 values per block.
pub fn dequantize_row_q8_1(x: &[BlockQ8_1], y: &mut [f32]) -> Result<(), KernelError> {
    expect_len(GgmlType::Q8_1, "values", y.len(), x.len() * QK8_1)?;
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK8_1)) {
        let d = b.d.to_f32();
        for (o, &q) in yb.iter_mut().zip(&b.qs) {
            *o = f32::from(q) * d;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytemuck::Zeroable;

    use super::*;

    #[test]
    fn known_answer_sum_and_scale() {
        // amax = 127 → d = 1 (0x3C00), id = 1 in both quantizers; x = [127, -0.5, 2.5, 0.5, 0...].
        // ref (roundf): q = 127, -1, 3, 1 → Σ = 130 → s = f16(130) = 1.015625·2^7 = 0x5810.
        // x86 (ties to even): q = 127, 0, 2, 0 → Σ = 129 → s = 1.0078125·2^7 = 0x5808.
        // Bytes: d (00 3C), s (10 58), then the quants (7F FF ...).
        let mut x = [0.0f32; 32];
        x[..4].copy_from_slice(&[127.0, -0.5, 2.5, 0.5]);
        let mut y = [BlockQ8_1::zeroed(); 1];
        quantize_row_q8_1_ref(&x, &mut y).unwrap();
        assert_eq!(
            (y[0].d.to_bits(), y[0].s.to_bits()),
            (0x3C00, 0x5810),
            "ref"
        );
        assert_eq!(y[0].qs[..4], [127, -1, 3, 1]);
        let bytes = bytemuck::bytes_of(&y[0]);
        assert_eq!(&bytes[..6], &[0x00, 0x3C, 0x10, 0x58, 127, 0xFF]);
        for &isa in Isa::available() {
            quantize_row_q8_1_x86_with(isa, &x, &mut y).unwrap();
            assert_eq!(
                (y[0].d.to_bits(), y[0].s.to_bits()),
                (0x3C00, 0x5808),
                "{isa:?}"
            );
            assert_eq!(y[0].qs[..4], [127, 0, 2, 0], "{isa:?}");
        }
    }

    #[test]
    fn s_uses_the_f32_scale() {
        // amax = 1: d = 1/127 = 0.00787401572 (f32), f16(d) = 0.00787353516.
        // x = [1, -1, 17/127, 0...] → q = 127, -127, 17 → Σ = 17.
        // s = f16(17 · 0.00787401572 = 0.133858263) = 0x3049; had ggml used the f16 d it would
        // be f16(0.133850098) = 0x3048.
        let mut x = [0.0f32; 32];
        x[..3].copy_from_slice(&[1.0, -1.0, 17.0 / 127.0]);
        let mut y = [BlockQ8_1::zeroed(); 1];
        quantize_row_q8_1_ref(&x, &mut y).unwrap();
        assert_eq!(y[0].qs[..3], [127, -127, 17]);
        assert_eq!(y[0].s.to_bits(), 0x3049);
        for &isa in Isa::available() {
            quantize_row_q8_1_x86_with(isa, &x, &mut y).unwrap();
            assert_eq!(y[0].s.to_bits(), 0x3049, "{isa:?}");
        }
    }

    #[test]
    fn lengths_are_validated() {
        let mut y = [BlockQ8_1::zeroed(); 1];
        assert!(quantize_row_q8_1_ref(&[0.0; 31], &mut y).is_err());
        assert!(quantize_row_q8_1_x86(&[0.0; 64], &mut y).is_err());
        assert!(dequantize_row_q8_1(&y, &mut [0.0; 31]).is_err());
    }
}
