//! TQ2_0: ggml's 2-bit ternary format, 66 bytes per 256 weights, multiplied against Q8_K.
//!
//! Byte `32h + m` (h < 2, m < 32) holds element `128h + 32n + m` in bits `2n..2n+2`
//! (n < 4) as the code `trit + 1`; weight = `(code - 1) · d`. The quantizer sets `d` to the
//! block's max |x| and rounds `x/d` half away from zero (C `lroundf`).
//!
//! This module also holds the quantization helpers TQ1_0 shares (`ternary_scale`,
//! `ternary_code`): both C quantizers start the same way.

use half::f16;

use crate::q8_k::{self, BlockQ8K, PairedCodes, SumOrder, TernaryBlock, QK_K};
use crate::{GgmlType, Isa, KernelError};

/// One TQ2_0 block: 2.0625 bits per weight (64 code bytes + f16 scale per 256 weights).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTQ2_0 {
    /// Four 2-bit codes per byte (layout in the module docs).
    pub qs: [u8; QK_K / 4],
    /// Scale: the block's max |x| at quantization.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockTQ2_0>() == 66);

impl BlockTQ2_0 {
    /// The block holding `codes` (element order, each `0..=3`; higher bits are dropped)
    /// with scale `d`: the inverse of its codes.
    pub fn from_codes(codes: &[u8; QK_K], d: f16) -> BlockTQ2_0 {
        let mut qs = [0u8; QK_K / 4];
        for (e, &c) in codes.iter().enumerate() {
            let (h, n, m) = (e / 128, (e / 32) % 4, e % 32);
            qs[32 * h + m] |= (c & 3) << (2 * n);
        }
        BlockTQ2_0 { qs, d }
    }
}

/// The scale step both ternary reference quantizers begin with: `amax` through ggml's
/// `MAX(a, b) = a > b ? a : b` (so a NaN is replaced by the next value rather than
/// propagated), `d = f16(amax)`, and the f32 reciprocal `id = 1/amax` (0 for an all-zero
/// block) that the codes are computed with — from the f32 `amax`, not the rounded `d`.
pub(crate) fn ternary_scale(x: &[f32]) -> (f16, f32) {
    let amax = x
        .iter()
        .fold(0.0f32, |m, &v| if m > v.abs() { m } else { v.abs() });
    let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
    (f16::from_f32(amax), id)
}

/// `lroundf(v) + 1` converted to C `int`, as glibc computes it on x86-64: halves round away
/// from zero, and NaN, ±inf or |v| >= 2^63 convert to `LONG_MIN`, so the code is 1
/// (weight 0). Finite blocks always give `|v| <= 1·(1+ε)`, i.e. codes 0..=2; the
/// non-finite cases arise from NaN/inf inputs or a subnormal `amax` (whose reciprocal
/// overflows to inf).
pub(crate) fn ternary_code(v: f32) -> i32 {
    const TWO_POW_63: f32 = 9_223_372_036_854_775_808.0;
    let l = if v.abs() < TWO_POW_63 {
        v.round() as i64
    } else {
        i64::MIN
    };
    l.wrapping_add(1) as i32
}

/// ggml's `quantize_row_tq2_0_ref`, bit for bit. `x.len()` must be a multiple of 256 and
/// `y.len() == x.len() / 256`.
pub fn quantize_row_tq2_0_ref(x: &[f32], y: &mut [BlockTQ2_0]) -> Result<(), KernelError> {
    q8_k::check_blocks(GgmlType::TQ2_0, x.len(), y.len(), "output blocks")?;
    for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
        let (d, id) = ternary_scale(xb);
        *yb = BlockTQ2_0 {
            qs: [0; QK_K / 4],
            d,
        };
        // xb: (2 halves, 4 bit pairs, 32 bytes).
        for (bytes, xh) in yb.qs.chunks_exact_mut(32).zip(xb.chunks_exact(128)) {
            for (m, byte) in bytes.iter_mut().enumerate() {
                *byte = (0..4).fold(0u8, |b, n| {
                    b | (((ternary_code(xh[32 * n + m] * id) & 3) as u8) << (2 * n))
                });
            }
        }
    }
    Ok(())
}

/// ggml's `dequantize_row_tq2_0`: `(code - 1) · d`. `y.len()` must be `256 · x.len()`.
pub fn dequantize_row_tq2_0(x: &[BlockTQ2_0], y: &mut [f32]) -> Result<(), KernelError> {
    q8_k::dequantize_ternary(x, y)
}

/// Scalar reference dot product of one TQ2_0 row with one Q8_K row (`x.len() == y.len()`
/// blocks). With [`SumOrder::GgmlGeneric`] it is `ggml_vec_dot_tq2_0_q8_K_generic`; with
/// [`SumOrder::GgmlAvx2`] it reproduces ggml's AVX2 kernel's arithmetic in scalar code.
pub fn vec_dot_tq2_0_q8_k_generic(
    order: SumOrder,
    x: &[BlockTQ2_0],
    y: &[BlockQ8K],
) -> Result<f32, KernelError> {
    q8_k::vec_dot_ternary(Isa::Scalar, order, x, y)
}

/// [`vec_dot_tq2_0_q8_k_generic`] on `isa` (scalar when the CPU lacks it); bit-identical
/// to the scalar reference in both orders.
pub fn vec_dot_tq2_0_q8_k_with(
    isa: Isa,
    order: SumOrder,
    x: &[BlockTQ2_0],
    y: &[BlockQ8K],
) -> Result<f32, KernelError> {
    q8_k::vec_dot_ternary(isa, order, x, y)
}

/// `out[r · n_tok + t]` = dot of weight row `r` of `x` with activation row `t` of `y`
/// (`n_tok` rows of `y.len() / n_tok` blocks), on `isa`: each result is bit-identical to
/// [`vec_dot_tq2_0_q8_k_with`] of that pair (see [`crate::gemm`]).
pub fn gemm_tq2_0_q8_k_with(
    isa: Isa,
    order: SumOrder,
    x: &[BlockTQ2_0],
    y: &[BlockQ8K],
    n_tok: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    q8_k::gemm_ternary(isa, order, x, y, n_tok, out)
}

impl TernaryBlock for BlockTQ2_0 {
    const FORMAT: GgmlType = GgmlType::TQ2_0;

    fn scale(&self) -> f16 {
        self.d
    }

    fn codes(&self) -> [u8; QK_K] {
        let mut codes = [0u8; QK_K];
        for (e, c) in codes.iter_mut().enumerate() {
            let (h, n, m) = (e / 128, (e / 32) % 4, e % 32);
            *c = (self.qs[32 * h + m] >> (2 * n)) & 3;
        }
        codes
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn codes_avx2(&self) -> [std::arch::x86_64::__m256i; 8] {
        use std::arch::x86_64::*;
        let qs = self.qs.as_ptr().cast::<__m256i>();
        let mask = _mm256_set1_epi8(3);
        let mut codes = [_mm256_setzero_si256(); 8];
        for h in 0..2 {
            // SAFETY: qs is 64 bytes = 2 chunks of 32 and h < 2; loadu has no alignment
            // requirement.
            let v = unsafe { _mm256_loadu_si256(qs.add(h)) };
            // Bit pair n of byte 32h + m is element 128h + 32n + m: chunk 4h + n. The 16-bit
            // shifts pull bits in from the neighbouring byte, which the mask drops.
            codes[4 * h] = _mm256_and_si256(v, mask);
            codes[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask);
            codes[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
            codes[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask);
        }
        codes
    }

    #[cfg(target_arch = "x86_64")]
    fn paired() -> Option<q8_k::PairedKernels<Self>> {
        Some(q8_k::paired_kernels())
    }
}

impl PairedCodes for BlockTQ2_0 {
    /// Byte `j` of the 64 bytes holds chunk `f`'s element `j` (low half) or chunk
    /// `f + 4`'s (high half) at bits `2f`: one shift and mask per vector.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn codes_paired(&self) -> [std::arch::x86_64::__m512i; 4] {
        use std::arch::x86_64::*;
        // SAFETY: the caller's CPU contract (AVX-512 F and BW); qs is 64 readable bytes and
        // loadu has no alignment requirement.
        unsafe {
            let v = _mm512_loadu_si512(self.qs.as_ptr().cast());
            let mask = _mm512_set1_epi8(3);
            // The 16-bit shifts pull bits in from the neighbouring byte, which the mask drops.
            [
                _mm512_and_si512(v, mask),
                _mm512_and_si512(_mm512_srli_epi16::<2>(v), mask),
                _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask),
                _mm512_and_si512(_mm512_srli_epi16::<6>(v), mask),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use bytemuck::Zeroable;

    use super::*;

    fn quantize(x: &[f32]) -> Vec<BlockTQ2_0> {
        let mut y = vec![BlockTQ2_0::zeroed(); x.len() / QK_K];
        quantize_row_tq2_0_ref(x, &mut y).expect("whole blocks");
        y
    }

    /// The known-answer block below: zeros except five hand-picked elements.
    fn known_x() -> [f32; QK_K] {
        let mut x = [0.0f32; QK_K];
        x[0] = -1.5;
        x[33] = 1.5;
        x[130] = 0.7;
        x[131] = 0.75;
        x[255] = -0.75;
        x
    }

    #[test]
    fn known_answer_block() {
        // amax = 1.5 (f16 0x3E00); a zero weight is code 1, so an all-zero byte is
        // 0b01_01_01_01 = 0x55. Element e sits in byte 32·(e/128) + e%32, bits 2·((e/32)%4):
        //   x[0]   = -1.5 → -1   → code 0 → byte 0,  bits 0-1: 0x55 → 0x54
        //   x[33]  =  1.5 → +1   → code 2 → byte 1,  bits 2-3: 0x55 → 0x59
        //   x[130] =  0.7 → 0.467 → 0    → code 1 (unchanged byte 34)
        //   x[131] = 0.75 → 0.5  → +1 (ties away) → byte 35, bits 0-1: 0x55 → 0x56
        //   x[255] = -0.75 → -0.5 → -1   → byte 63, bits 6-7: 0x55 → 0x15
        let b = quantize(&known_x())[0];
        let mut qs = [0x55u8; 64];
        qs[0] = 0x54;
        qs[1] = 0x59;
        qs[35] = 0x56;
        qs[63] = 0x15;
        assert_eq!(b.qs, qs);
        assert_eq!(b.d.to_bits(), 0x3E00);

        let mut deq = [f32::NAN; QK_K];
        dequantize_row_tq2_0(&[b], &mut deq).expect("one block");
        let mut want = [0.0f32; QK_K];
        want[0] = -1.5;
        want[33] = 1.5;
        want[131] = 1.5;
        want[255] = -1.5;
        assert_eq!(deq, want);
    }

    #[test]
    fn known_answer_dot() {
        // y: d = 0.5, q[e] = e % 7 - 3 (bsums summed to match). Non-zero weights:
        //   -1·q[0] + 1·q[33] + 1·q[131] - 1·q[255] = -(-3) + 2 + 2 - 0 = 7,
        // times x.d · y.d = 1.5 · 0.5: 7 · 0.75 = 5.25 (exact, so equal in both orders).
        let x = quantize(&known_x());
        let mut y = BlockQ8K::zeroed();
        y.d = 0.5;
        for (e, q) in y.qs.iter_mut().enumerate() {
            *q = (e % 7) as i8 - 3;
        }
        for (s, g) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| i16::from(q)).sum();
        }
        for &isa in Isa::available() {
            for order in [SumOrder::GgmlGeneric, SumOrder::GgmlAvx2] {
                assert_eq!(
                    vec_dot_tq2_0_q8_k_with(isa, order, &x, &[y]),
                    Ok(5.25),
                    "{isa:?} {order:?}"
                );
            }
        }
    }

    #[test]
    fn ternary_code_mirrors_lroundf() {
        assert_eq!(ternary_code(0.5), 2);
        assert_eq!(ternary_code(-0.5), 0);
        assert_eq!(ternary_code(0.49999997), 1);
        assert_eq!(ternary_code(-1.0000001), 0);
        // glibc's lroundf returns LONG_MIN for these; LONG_MIN + 1 truncated to int is 1.
        assert_eq!(ternary_code(f32::NAN), 1);
        assert_eq!(ternary_code(f32::INFINITY), 1);
        assert_eq!(ternary_code(f32::NEG_INFINITY), 1);
    }

    #[test]
    fn subnormal_amax_gives_zero_weights() {
        // 1/1e-40 overflows to inf: every code is 1 (NaN for x = 0, ±inf otherwise).
        let mut x = [0.0f32; QK_K];
        x[3] = 1e-40;
        x[4] = -1e-41;
        let b = quantize(&x)[0];
        assert_eq!(b.qs, [0x55; 64]);
        assert_eq!(b.d, f16::ZERO);
    }

    #[test]
    fn nan_resets_amax_like_ggml_max() {
        // MAX(amax, NaN) keeps NaN, then MAX(NaN, |x|) takes |x|: the NaN is forgotten.
        let mut x = [0.0f32; QK_K];
        x[0] = 4.0;
        x[1] = f32::NAN;
        x[2] = 1.0;
        assert_eq!(ternary_scale(&x), (f16::from_f32(1.0), 1.0));
    }

    #[test]
    fn code_three_counts_as_plus_two() {
        // Bits 0b11 are never written by the quantizer; ggml's kernels all read them as
        // (3 - 1) = +2, and so must every ISA here.
        let x = BlockTQ2_0 {
            qs: [0xFF; 64],
            d: f16::ONE,
        };
        let mut y = BlockQ8K::zeroed();
        y.d = 1.0;
        y.qs[10] = 5;
        y.bsums[0] = 5;
        for &isa in Isa::available() {
            assert_eq!(
                vec_dot_tq2_0_q8_k_with(isa, SumOrder::GgmlGeneric, &[x], &[y]),
                Ok(10.0)
            );
        }
    }

    #[test]
    fn length_errors() {
        let x = [BlockTQ2_0::zeroed(); 4];
        let y = [BlockQ8K::zeroed(); 2];
        assert!(matches!(
            vec_dot_tq2_0_q8_k_with(Isa::best(), SumOrder::GgmlGeneric, &x, &y),
            Err(KernelError::LengthMismatch {
                got: 2,
                expected: 4,
                ..
            })
        ));
        let mut out = [0.0f32; 3];
        assert!(matches!(
            gemm_tq2_0_q8_k_with(Isa::best(), SumOrder::GgmlAvx2, &x, &y, 1, &mut out),
            Err(KernelError::LengthMismatch {
                got: 4,
                expected: 6,
                ..
            })
        ));
        let mut out = [1.0f32; 2];
        assert_eq!(
            gemm_tq2_0_q8_k_with(Isa::best(), SumOrder::GgmlAvx2, &x, &y, 1, &mut out),
            Ok(())
        );
        assert_eq!(
            gemm_tq2_0_q8_k_with(Isa::best(), SumOrder::GgmlAvx2, &[], &[], 1, &mut out),
            Ok(())
        );
        assert_eq!(out, [0.0; 2]);
        assert!(matches!(
            quantize_row_tq2_0_ref(&[0.0; 300], &mut [BlockTQ2_0::zeroed()]),
            Err(KernelError::NotBlockMultiple { len: 300, .. })
        ));
        assert!(dequantize_row_tq2_0(&x, &mut [0.0; 256]).is_err());
    }
}
