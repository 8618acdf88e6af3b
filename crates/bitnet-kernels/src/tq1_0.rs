//! TQ1_0: ggml's base-3 ternary format, 54 bytes per 256 weights, multiplied against Q8_K.
//!
//! The 52 packed bytes (`qs[0..48]` then `qh[0..4]`) each hold a 5-digit base-3 number of
//! codes (`trit + 1`, most significant first), scaled to a byte as `ceil(q · 256 / 243)`
//! so that digit `n` decodes as `((u8)(byte · 3ⁿ) · 3) >> 8`. Element order
//! (from `quantize_row_tq1_0_ref`):
//! - `qs[m]`, m < 32: digit n is element `32n + m` (elements 0..160);
//! - `qs[32 + m]`, m < 16: digit n is element `160 + 16n + m` (elements 160..240);
//! - `qh[j]`, j < 4: digit n < 4 is element `240 + 4n + j`; the fifth digit is a 0 pad.
//!
//! Weight = `(code - 1) · d`, `d` = the block's max |x|, codes rounded half away from zero.

use half::f16;

use crate::q8_k::{self, BlockQ8K, SumOrder, TernaryBlock, QK_K};
use crate::tq2_0::{ternary_code, ternary_scale, BlockTQ2_0};
use crate::{GgmlType, Isa, KernelError};

/// One TQ1_0 block: 1.6875 bits per weight (52 packed bytes + f16 scale per 256 weights).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTQ1_0 {
    /// Five codes per byte (elements 0..240).
    pub qs: [u8; 48],
    /// Four codes per byte (elements 240..256).
    pub qh: [u8; 4],
    /// Scale: the block's max |x| at quantization.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockTQ1_0>() == 54);

/// 3ⁿ mod 256 for the five digit positions.
const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// The element stored as digit `n` (0 = most significant) of packed byte `p` (`qs` then
/// `qh`), or `None` for the pad digit of a `qh` byte.
fn trit_element(p: usize, n: usize) -> Option<usize> {
    match p {
        0..32 => Some(32 * n + p),
        32..48 => Some(160 + 16 * n + (p - 32)),
        _ => (n < 4).then_some(240 + 4 * n + (p - 48)),
    }
}

/// Digit `n` of a packed byte: multiplying by 3ⁿ (mod 256) shifts digit n to the top, and
/// `(· 3) >> 8` reads the top digit, because the byte is the digits' fraction of 243 rounded up.
fn trit(byte: u8, n: usize) -> u8 {
    ((u16::from(byte.wrapping_mul(POW3[n])) * 3) >> 8) as u8
}

/// ggml's `quantize_row_tq1_0_ref`, bit for bit. `x.len()` must be a multiple of 256 and
/// `y.len() == x.len() / 256`.
pub fn quantize_row_tq1_0_ref(x: &[f32], y: &mut [BlockTQ1_0]) -> Result<(), KernelError> {
    q8_k::check_blocks(GgmlType::TQ1_0, x.len(), y.len(), "output blocks")?;
    for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
        let (d, id) = ternary_scale(xb);
        *yb = BlockTQ1_0 {
            qs: [0; 48],
            qh: [0; 4],
            d,
        };
        for (p, byte) in yb.qs.iter_mut().chain(&mut yb.qh).enumerate() {
            // C accumulates in uint8_t (wrapping) with `q *= 3; q += xi`; a qh byte's pad
            // digit is its trailing `q *= 3`, i.e. a 0 digit.
            let q = (0..5).fold(0u8, |q, n| {
                let xi = trit_element(p, n).map_or(0, |e| ternary_code(xb[e] * id));
                q.wrapping_mul(3).wrapping_add(xi as u8)
            });
            // ceil(q · 256 / 243); 255 · 256 < 2^16, and C stores the result mod 256.
            *byte = (u16::from(q) * 256).div_ceil(243) as u8;
        }
    }
    Ok(())
}

/// ggml's `dequantize_row_tq1_0`: `(code - 1) · d`. `y.len()` must be `256 · x.len()`.
pub fn dequantize_row_tq1_0(x: &[BlockTQ1_0], y: &mut [f32]) -> Result<(), KernelError> {
    q8_k::dequantize_ternary(x, y)
}

/// Scalar reference dot product of one TQ1_0 row with one Q8_K row (`x.len() == y.len()`
/// blocks). With [`SumOrder::GgmlGeneric`] it is `ggml_vec_dot_tq1_0_q8_K_generic`; with
/// [`SumOrder::GgmlAvx2`] it reproduces ggml's AVX2 kernel's arithmetic in scalar code.
pub fn vec_dot_tq1_0_q8_k_generic(
    order: SumOrder,
    x: &[BlockTQ1_0],
    y: &[BlockQ8K],
) -> Result<f32, KernelError> {
    q8_k::vec_dot_ternary(Isa::Scalar, order, x, y)
}

/// [`vec_dot_tq1_0_q8_k_generic`] on `isa` (scalar when the CPU lacks it); bit-identical
/// to the scalar reference in both orders.
pub fn vec_dot_tq1_0_q8_k_with(
    isa: Isa,
    order: SumOrder,
    x: &[BlockTQ1_0],
    y: &[BlockQ8K],
) -> Result<f32, KernelError> {
    q8_k::vec_dot_ternary(isa, order, x, y)
}

/// `out[r · n_tok + t]` = dot of weight row `r` of `x` with activation row `t` of `y`
/// (`n_tok` rows of `y.len() / n_tok` blocks), on `isa`: each result is bit-identical to
/// [`vec_dot_tq1_0_q8_k_with`] of that pair (see [`crate::gemm`]).
pub fn gemm_tq1_0_q8_k_with(
    isa: Isa,
    order: SumOrder,
    x: &[BlockTQ1_0],
    y: &[BlockQ8K],
    n_tok: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    q8_k::gemm_ternary(isa, order, x, y, n_tok, out)
}

/// TQ1_0 blocks re-encoded as TQ2_0 with the same codes and scales (`y.len() == x.len()`).
/// Every TQ1_0 · Q8_K dot product equals the TQ2_0 one of the re-encoded row bit for bit
/// (both kernels reduce the same codes and scales the same way), and the TQ2_0 kernels read
/// 2-bit codes with shifts instead of base-3 digits: the engine repacks TQ1_0 weights at
/// load this way (25% more bytes, ~3× less work per weight).
pub fn repack_tq1_0_as_tq2_0(x: &[BlockTQ1_0], y: &mut [BlockTQ2_0]) -> Result<(), KernelError> {
    if x.len() != y.len() {
        return Err(KernelError::LengthMismatch {
            format: GgmlType::TQ1_0,
            what: "TQ2_0 output blocks",
            got: y.len(),
            expected: x.len(),
        });
    }
    #[cfg(target_arch = "x86_64")]
    if Isa::best().runs_avx2() {
        for (xb, yb) in x.iter().zip(y) {
            // SAFETY: Isa::best().runs_avx2() only when AVX2, FMA and F16C were detected.
            *yb = unsafe { repack_avx2(xb) };
        }
        return Ok(());
    }
    for (xb, yb) in x.iter().zip(y) {
        *yb = BlockTQ2_0::from_codes(&xb.codes(), xb.d);
    }
    Ok(())
}

/// [`repack_tq1_0_as_tq2_0`] for one block: the AVX2 code decoder, then chunks 4h..4h+4
/// shifted into the bit pairs of TQ2_0 bytes 32h..32h+32.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn repack_avx2(x: &BlockTQ1_0) -> BlockTQ2_0 {
    use std::arch::x86_64::*;
    // SAFETY: this function's own precondition.
    let c = unsafe { x.codes_avx2() };
    let mut qs = [0u8; QK_K / 4];
    for (h, out) in qs.chunks_exact_mut(32).enumerate() {
        // Codes are <= 2, so the 16-bit shifts never carry into the neighbouring byte.
        let v = _mm256_or_si256(
            _mm256_or_si256(c[4 * h], _mm256_slli_epi16::<2>(c[4 * h + 1])),
            _mm256_or_si256(
                _mm256_slli_epi16::<4>(c[4 * h + 2]),
                _mm256_slli_epi16::<6>(c[4 * h + 3]),
            ),
        );
        // SAFETY: `out` is 32 writable bytes; storeu has no alignment requirement.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
    }
    BlockTQ2_0 { qs, d: x.d }
}

impl TernaryBlock for BlockTQ1_0 {
    const FORMAT: GgmlType = GgmlType::TQ1_0;

    fn scale(&self) -> f16 {
        self.d
    }

    fn codes(&self) -> [u8; QK_K] {
        let mut codes = [0u8; QK_K];
        for (p, &byte) in self.qs.iter().chain(&self.qh).enumerate() {
            for n in 0..5 {
                if let Some(e) = trit_element(p, n) {
                    codes[e] = trit(byte, n);
                }
            }
        }
        codes
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn codes_avx2(&self) -> [std::arch::x86_64::__m256i; 8] {
        use std::arch::x86_64::*;
        // SAFETY: qs[0..32] is 32 readable bytes; loadu has no alignment requirement.
        let a0 = unsafe { _mm256_loadu_si256(self.qs.as_ptr().cast()) };
        // SAFETY: qs[32..48] is 16 readable bytes; loadu has no alignment requirement.
        let b = unsafe { _mm_loadu_si128(self.qs.as_ptr().add(32).cast()) };
        // qs[0..32]: digit n of byte m is element 32n + m, so a0 · 3ⁿ is chunk n.
        let a1 = mul3_epi8(a0);
        let a2 = mul3_epi8(a1);
        let a3 = mul3_epi8(a2);
        let a4 = mul3_epi8(a3);
        // qs[32..48]: digit n of byte m is element 160 + 16n + m, so chunks 5, 6, 7 are the
        // 16-byte pairs [b | 3b], [9b | 27b], [81b | qh digits].
        let bb = _mm256_broadcastsi128_si256(b);
        let b01 = _mm256_blend_epi32::<0b1111_0000>(bb, mul3_epi8(bb));
        let b23 = mul3_epi8(mul3_epi8(b01));
        let b4 = mul3_epi8(mul3_epi8(b23));
        let b4h = _mm256_inserti128_si256::<1>(b4, qh_scaled(self.qh));
        // Spelled out rather than `.map(..)`: a closure is compiled without AVX2, so
        // `top_trit` would not inline into it (a call per chunk, 15× slower).
        [
            top_trit(a0),
            top_trit(a1),
            top_trit(a2),
            top_trit(a3),
            top_trit(a4),
            top_trit(b01),
            top_trit(b23),
            top_trit(b4h),
        ]
    }
}

/// `x · 3 mod 256` in every byte (AVX2 has no 8-bit multiply).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn mul3_epi8(x: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_add_epi8(x, _mm256_add_epi8(x, x))
}

/// The 16 qh bytes before decoding: byte `4n + j` = `qh[j] · 3ⁿ mod 256` (element
/// `240 + 4n + j`), via 16-bit multiplies since AVX2 has no 8-bit ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn qh_scaled(qh: [u8; 4]) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    // (16 u16): qh[j] at position 4n + j.
    let w = _mm256_cvtepu8_epi16(_mm_set1_epi32(i32::from_le_bytes(qh)));
    let pow3 = _mm256_setr_epi16(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27);
    let w = _mm256_and_si256(_mm256_mullo_epi16(w, pow3), _mm256_set1_epi16(0xFF));
    // Every lane is <= 255 after the mask, so packus does not saturate.
    _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w))
}

/// The top digit `(b · 3) >> 8` of every byte: 1 when b >= 86 (3·86 >= 256) plus 1 when
/// b >= 171 (3·171 >= 512), as saturating subtractions clamped to 1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn top_trit(b: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let one = _mm256_set1_epi8(1);
    let ge86 = _mm256_min_epu8(_mm256_subs_epu8(b, _mm256_set1_epi8(85)), one);
    let ge171 = _mm256_min_epu8(_mm256_subs_epu8(b, _mm256_set1_epi8(170u8 as i8)), one);
    _mm256_add_epi8(ge86, ge171)
}

#[cfg(test)]
mod tests {
    use bytemuck::Zeroable;

    use super::*;

    fn quantize(x: &[f32]) -> Vec<BlockTQ1_0> {
        let mut y = vec![BlockTQ1_0::zeroed(); x.len() / QK_K];
        quantize_row_tq1_0_ref(x, &mut y).expect("whole blocks");
        y
    }

    #[test]
    fn every_element_has_exactly_one_digit() {
        let mut seen = [0u32; QK_K];
        // 48 qs bytes, then 4 qh bytes.
        for p in 0..48 + 4 {
            for n in 0..5 {
                if let Some(e) = trit_element(p, n) {
                    seen[e] += 1;
                }
            }
        }
        assert_eq!(seen, [1; QK_K]);
    }

    #[test]
    fn ceiling_byte_decodes_every_five_digit_number() {
        for q in 0u16..243 {
            let byte = (q * 256).div_ceil(243) as u8;
            let digits: Vec<u16> = (0..5).map(|n| (q / 3u16.pow(4 - n)) % 3).collect();
            let decoded: Vec<u16> = (0..5).map(|n| u16::from(trit(byte, n as usize))).collect();
            assert_eq!(decoded, digits, "q = {q}, byte = {byte}");
        }
    }

    /// The known-answer block below: zeros except four hand-picked elements.
    fn known_x() -> [f32; QK_K] {
        let mut x = [0.0f32; QK_K];
        x[0] = 2.0;
        x[100] = -0.9;
        x[161] = -2.0;
        x[245] = 1.0;
        x
    }

    #[test]
    fn known_answer_block() {
        // amax = 2 (f16 0x4000). Zero weights are code 1, so an all-zero qs byte is
        // 11111₃ = 121 → ceil(121·256/243) = ceil(127.47) = 128, and an all-zero qh byte is
        // 1111₃·3 = 120 → ceil(120·256/243) = ceil(126.42) = 127.
        //   x[0]   =  2   → +1 → code 2, qs[0] digit 0:  21111₃ = 202 → ceil(212.81) = 213
        //   x[100] = -0.9 → -0.45 → 0 (qs[4] digit 3 stays code 1)
        //   x[161] = -2   → -1 → code 0, qs[33] digit 0: 01111₃ = 40  → ceil(42.14)  = 43
        //   x[245] =  1   → 0.5 → +1 (ties away) → qh[1] digit 1: 1211₃·3 = 49·3 = 147
        //                                           → ceil(154.86) = 155
        let b = quantize(&known_x())[0];
        let mut qs = [128u8; 48];
        qs[0] = 213;
        qs[33] = 43;
        assert_eq!(b.qs, qs);
        assert_eq!(b.qh, [127, 155, 127, 127]);
        assert_eq!(b.d.to_bits(), 0x4000);

        let mut deq = [f32::NAN; QK_K];
        dequantize_row_tq1_0(&[b], &mut deq).expect("one block");
        let mut want = [0.0f32; QK_K];
        want[0] = 2.0;
        want[161] = -2.0;
        want[245] = 2.0;
        assert_eq!(deq, want);
    }

    #[test]
    fn known_answer_dot() {
        // y: d = 0.5, q[e] = e % 7 - 3 (bsums summed to match). Non-zero weights:
        //   1·q[0] - 1·q[161] + 1·q[245] = -3 - (-3) + (-3) = -3,
        // times x.d · y.d = 2 · 0.5: -3.0 (exact, so equal in both orders).
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
                    vec_dot_tq1_0_q8_k_with(isa, order, &x, &[y]),
                    Ok(-3.0),
                    "{isa:?} {order:?}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_codes_match_scalar_for_every_byte_value() {
        if !Isa::Avx2.is_supported() {
            return;
        }
        // Each byte value 0..=255 appears at every packed position across 256 blocks.
        for shift in 0..=255u8 {
            let mut x = BlockTQ1_0::zeroed();
            for (p, b) in x.qs.iter_mut().chain(&mut x.qh).enumerate() {
                *b = shift.wrapping_add(p as u8 * 5);
            }
            // SAFETY: Isa::Avx2.is_supported() checked above.
            let chunks = unsafe { x.codes_avx2() };
            let mut avx = [0u8; QK_K];
            for (c, v) in chunks.iter().enumerate() {
                // SAFETY: Isa::Avx2.is_supported() checked above; `avx[32c..32c+32]` is 32
                // writable bytes and storeu has no alignment requirement.
                unsafe {
                    std::arch::x86_64::_mm256_storeu_si256(avx.as_mut_ptr().add(32 * c).cast(), *v)
                };
            }
            assert_eq!(avx, x.codes(), "shift {shift}");
        }
    }

    #[test]
    fn length_errors() {
        assert!(matches!(
            quantize_row_tq1_0_ref(&[0.0; 512], &mut [BlockTQ1_0::zeroed()]),
            Err(KernelError::LengthMismatch {
                got: 1,
                expected: 2,
                ..
            })
        ));
        assert!(matches!(
            vec_dot_tq1_0_q8_k_with(
                Isa::best(),
                SumOrder::GgmlGeneric,
                &[BlockTQ1_0::zeroed()],
                &[]
            ),
            Err(KernelError::LengthMismatch {
                got: 0,
                expected: 1,
                ..
            })
        ));
        assert!(dequantize_row_tq1_0(&[BlockTQ1_0::zeroed()], &mut [0.0; 255]).is_err());
    }
}
