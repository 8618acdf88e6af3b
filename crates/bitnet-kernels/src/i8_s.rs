//! I8_S: bitnet.cpp's per-row int8 activation format for I2_S (its `vec_dot_type`).
//!
//! A row is plain int8 (`q = round(x · s)`, clamped to [-128, 127]) with one f32 scale
//! `s = 127 / max(max|x|, 1e-5)` and the row sum Σq travelling beside it: the I2_S dot
//! product works on unsigned codes (weight + 1), and the epilogue subtracts Σq to undo that
//! offset (see [`crate::i2_s::i2_s_dot_to_f32`]).
//!
//! Reproduces `quantize_row_i8_s` (bitnet.cpp's `ggml-quants.c`) as this machine's build
//! runs it: the max is taken in double, `s` is computed in double then stored as f32, and
//! `nearest_int(x[i] * s)` is compiled by GCC (`-ffp-contract=fast`, FMA enabled by
//! `-march=native` or `GGML_FMA`) into `fma(x, s, 1.5·2^23)`. So each quant is the exact
//! product `x·s` rounded once to the nearest integer, ties to even — not the f32 product
//! rounded again (the two differ near .5, see the `fma_contracted_rounding` test).

use crate::KernelError;
use bitnet_gguf::GgmlType;

/// Floor of the row's max |x| (C: `double min = 0.00001`), keeping `s` finite for zero rows.
pub const I8S_MIN_AMAX: f64 = 0.00001;

/// What travels beside an I8_S row's int8 buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct I8sRowMeta {
    /// `127 / max(max|x|, 1e-5)`: quants are `x · scale`, so dequantize by dividing.
    pub scale: f32,
    /// Σq over the row (i32, as the C accumulates it).
    pub sum: i32,
}

/// 1.5·2^52: adding and subtracting it rounds an f64 with |v| < 2^51 to an integer, ties to
/// even, with a single rounding.
const ROUND_F64: f64 = 6_755_399_441_055_744.0;

/// Quantizes one activation row to I8_S exactly as bitnet.cpp does; `out.len()` must equal
/// `x.len()`.
pub fn quantize_row_i8_s(x: &[f32], out: &mut [i8]) -> Result<I8sRowMeta, KernelError> {
    if out.len() != x.len() {
        return Err(KernelError::LengthMismatch {
            format: GgmlType::I8_S,
            what: "quant buffer",
            got: out.len(),
            expected: x.len(),
        });
    }
    // C's `MAX(a, b)` is `a > b ? a : b`, folded left to right in double.
    let amax = x.iter().fold(I8S_MIN_AMAX, |m, &v| {
        let a = f64::from(v.abs());
        if m > a {
            m
        } else {
            a
        }
    });
    let scale = (127.0 / amax) as f32;
    let s = f64::from(scale);
    let mut sum = 0i32;
    for (o, &v) in out.iter_mut().zip(x) {
        // The f64 product of two f32 is exact, so one rounding here equals the C's
        // fma(x, s, 1.5·2^23) for every finite input (|x·s| <= 127·(1+2^-23)). A NaN input
        // clamps to NaN and `as i32` maps it to 0, which is also what the C's bit trick
        // gives for the default NaN.
        let r = ((f64::from(v) * s + ROUND_F64) - ROUND_F64).clamp(-128.0, 127.0);
        let q = r as i32;
        sum = sum.wrapping_add(q);
        *o = q as i8;
    }
    Ok(I8sRowMeta { scale, sum })
}

/// Expands an I8_S row back to f32 (`q / scale`), for tests and diagnostics.
pub fn dequantize_row_i8_s(
    q: &[i8],
    meta: &I8sRowMeta,
    out: &mut [f32],
) -> Result<(), KernelError> {
    if out.len() != q.len() {
        return Err(KernelError::LengthMismatch {
            format: GgmlType::I8_S,
            what: "output",
            got: out.len(),
            expected: q.len(),
        });
    }
    for (o, &v) in out.iter_mut().zip(q) {
        *o = f32::from(v) / meta.scale;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_with_tie() {
        // max|x| = 1 → s = 127/1 = 127.
        //  1.0 · 127 = 127;  -0.5 · 127 = -63.5 → -64 (tie, even);  0.25 · 127 = 31.75 → 32;
        //  0 → 0.  Σq = 127 - 64 + 32 = 95.
        let x = [1.0f32, -0.5, 0.25, 0.0];
        let mut q = [0i8; 4];
        let m = quantize_row_i8_s(&x, &mut q).unwrap();
        assert_eq!(m.scale, 127.0);
        assert_eq!(q, [127, -64, 32, 0]);
        assert_eq!(m.sum, 95);
    }

    #[test]
    fn fma_contracted_rounding() {
        // max|x| = 3 → s = (f32)(127/3.0) = 42.3333321 (bits 0x42295555).
        //  3 · s = 126.9999963 → 127.
        //  x1 = 0x3c418307: exact x1·s = 0.50000002254 → 1 (the f32 product is 0.5, which
        //  would round to 0).
        //  x2 = 0x3e356ad6: exact x2·s = 7.49999998334 → 7 (the f32 product is 7.5 → 8).
        //  Σq = 127 + 1 + 7 = 135.
        let x = [
            3.0f32,
            f32::from_bits(0x3c41_8307),
            f32::from_bits(0x3e35_6ad6),
        ];
        let mut q = [0i8; 3];
        let m = quantize_row_i8_s(&x, &mut q).unwrap();
        assert_eq!(m.scale.to_bits(), 0x4229_5555);
        assert_eq!(q, [127, 1, 7]);
        assert_eq!(m.sum, 135);
    }

    #[test]
    fn zero_row_uses_the_floor() {
        // s = 127 / 1e-5 = 12_700_000 (exact in f32); every quant is 0.
        let x = [0.0f32; 8];
        let mut q = [1i8; 8];
        let m = quantize_row_i8_s(&x, &mut q).unwrap();
        assert_eq!(m.scale, 12_700_000.0);
        assert_eq!(q, [0; 8]);
        assert_eq!(m.sum, 0);
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut q = [0i8; 3];
        assert!(matches!(
            quantize_row_i8_s(&[1.0; 4], &mut q),
            Err(KernelError::LengthMismatch { .. })
        ));
        let mut out = [0f32; 2];
        let meta = I8sRowMeta { scale: 1.0, sum: 0 };
        assert!(dequantize_row_i8_s(&q, &meta, &mut out).is_err());
    }
}
