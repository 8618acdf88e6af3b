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

use crate::float::expect_len;
use crate::round::ROUND_F64;
use crate::{Isa, KernelError};
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

/// Quantizes one activation row to I8_S exactly as bitnet.cpp does; `out.len()` must equal
/// `x.len()`. Runs the AVX-512 path where the CPU has it; every path writes the same bytes.
pub fn quantize_row_i8_s(x: &[f32], out: &mut [i8]) -> Result<I8sRowMeta, KernelError> {
    quantize_row_i8_s_with(Isa::best(), x, out)
}

/// [`quantize_row_i8_s`] on `isa` (the scalar oracle where `isa` has no path or is not
/// supported here).
pub(crate) fn quantize_row_i8_s_with(
    isa: Isa,
    x: &[f32],
    out: &mut [i8],
) -> Result<I8sRowMeta, KernelError> {
    expect_len(GgmlType::I8_S, "quant buffer", out.len(), x.len())?;
    Ok(match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512Vnni.is_supported()` checked by the match guard; the lengths
        // are equal.
        Isa::Avx512Vnni if isa.is_supported() => unsafe { avx512::quantize(x, out) },
        _ => quantize_generic(x, out),
    })
}

/// The scalar oracle; `out.len() == x.len()`.
fn quantize_generic(x: &[f32], out: &mut [i8]) -> I8sRowMeta {
    // C's `MAX(a, b)` is `a > b ? a : b`, folded left to right in double: a NaN replaces
    // the running max, and the next value replaces the NaN.
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
    I8sRowMeta { scale, sum }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{quantize_generic, I8sRowMeta, I8S_MIN_AMAX};
    use crate::round::ROUND_F32;
    use std::arch::x86_64::*;

    /// [`super::quantize_generic`] 16 values a vector (the tail masked). Rows with a NaN or
    /// an infinity, whose max the C folds in order, run the oracle itself; for every other
    /// row the max is order-free, and each quant is the oracle's single rounding of the
    /// exact product (an FMA with [`ROUND_F32`]), saturated to int8 as its clamp does.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/VNNI (`Isa::Avx512Vnni.is_supported()`);
    /// `out.len() == x.len()`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn quantize(x: &[f32], out: &mut [i8]) -> I8sRowMeta {
        let n = x.len();
        let lanes = |i: usize| -> __mmask16 { (1u32 << (n - i).min(16)).wrapping_sub(1) as u16 };
        let inf = _mm512_set1_ps(f32::INFINITY);
        let mut m = _mm512_setzero_ps();
        let mut non_finite: __mmask16 = 0;
        // Shape: x (n) in vectors of 16, the last one masked.
        for i in (0..n).step_by(16) {
            // SAFETY: the masked lanes are within x; masked-off lanes are not read.
            let a = _mm512_abs_ps(unsafe { _mm512_maskz_loadu_ps(lanes(i), x.as_ptr().add(i)) });
            // Not less than infinity, or unordered: ±inf or NaN.
            non_finite |= _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(a, inf);
            m = _mm512_max_ps(m, a);
        }
        if non_finite != 0 {
            return quantize_generic(x, out);
        }
        // Without NaNs the C's fold from 1e-5 is the larger of 1e-5 and the max.
        let scale = (127.0 / I8S_MIN_AMAX.max(f64::from(_mm512_reduce_max_ps(m)))) as f32;
        let (s, round) = (_mm512_set1_ps(scale), _mm512_set1_ps(ROUND_F32));
        let mut sums = _mm512_setzero_si512();
        for i in (0..n).step_by(16) {
            let k = lanes(i);
            // SAFETY: as in the first loop.
            let v = unsafe { _mm512_maskz_loadu_ps(k, x.as_ptr().add(i)) };
            let r = _mm512_sub_ps(_mm512_fmadd_ps(v, s, round), round);
            let q = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(r));
            // SAFETY: the masked lanes are within out (same length as x).
            unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr().add(i), k, q) };
            sums = _mm512_add_epi32(sums, _mm512_cvtepi8_epi32(q));
        }
        I8sRowMeta {
            scale,
            sum: _mm512_reduce_add_epi32(sums),
        }
    }
}

/// Expands an I8_S row back to f32 (`q / scale`), for tests and diagnostics.
pub fn dequantize_row_i8_s(
    q: &[i8],
    meta: &I8sRowMeta,
    out: &mut [f32],
) -> Result<(), KernelError> {
    expect_len(GgmlType::I8_S, "output", out.len(), q.len())?;
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

    use crate::test_values::{any_magnitude, with_non_finite};
    use proptest::prelude::*;

    /// Rows of ordinary values, of values below the 1e-5 floor, or of any magnitude, with
    /// up to two infinities or NaNs put in.
    fn any_row() -> impl Strategy<Value = Vec<f32>> {
        let values = |mix: u8| match mix {
            0 => (-4.0f32..4.0).boxed(),
            1 => (-1e-5f32..1e-5).boxed(),
            _ => any_magnitude(),
        };
        with_non_finite(
            (0..3u8).prop_flat_map(move |mix| prop::collection::vec(values(mix), 0..300)),
            2,
        )
    }

    proptest! {
        /// Every ISA writes the scalar oracle's quants, scale and sum, whatever the row
        /// (lengths off the vector width included).
        #[test]
        fn every_isa_matches_the_scalar_quantizer(
            x in any_row(),
        ) {
            let mut want = vec![0i8; x.len()];
            let m = quantize_row_i8_s_with(Isa::Scalar, &x, &mut want).unwrap();
            for &isa in Isa::available() {
                let mut got = vec![0i8; x.len()];
                let g = quantize_row_i8_s_with(isa, &x, &mut got).unwrap();
                prop_assert_eq!(&got, &want, "{:?}", isa);
                prop_assert_eq!(g.scale.to_bits(), m.scale.to_bits(), "{:?} scale", isa);
                prop_assert_eq!(g.sum, m.sum, "{:?} sum", isa);
            }
        }
    }
}
