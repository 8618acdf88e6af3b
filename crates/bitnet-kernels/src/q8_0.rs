//! Q8_0: int8 blocks of 32 with an f16 scale — weights, and the activation type ggml pairs
//! with Q8_0 and Q4_0 weights (`vec_dot_type`).
//!
//! Two quantizers, because ggml has two and they round differently (ggml `ggml-quants.c`,
//! `ggml-cpu/arch/x86/quants.c`):
//! * [`quantize_row_q8_0_ref`] — `quantize_row_q8_0_ref`, used to write model files and,
//!   in builds without AVX, for activations: `amax = max|x|`, `d = amax / 127`,
//!   `id = d ? 1/d : 0` (from the f32 `d`), `q = (int8_t) roundf(x·id)` — ties away from zero.
//! * [`quantize_row_q8_0_x86`] — ggml-cpu's x86 `quantize_row_q8_0` in AVX/AVX2 builds, the
//!   activation quantizer llama.cpp actually runs there: `d = amax / 127`,
//!   `id = amax != 0 ? 127 / amax : 0` (not `1/d`: the two differ in the last bit for some
//!   amax), `q = cvtps_epi32(round_ps(x·id, _MM_ROUND_NEAREST))` — ties to even — then
//!   saturating packs to int8.
//!
//! Both store `d` as f16 rounded to nearest even; the ref through ggml-base's software
//! conversion (`f32_to_f16_ref`), the x86 one through F16C (`f16::from_f32`): they differ
//! only in NaN payloads.

use half::f16;

use crate::float::{block_count, expect_len, f32_to_f16_ref};
use crate::order::{hsum8_ggml, maddubs_madd4};
use crate::round::{round_away, round_even};
use crate::{GgmlType, Isa, KernelError, SumOrder};

/// Elements per Q8_0 block.
pub const QK8_0: usize = 32;

/// 32 weights in 34 bytes: 8.5 bits per weight. Value `i` is `qs[i] · d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants, in element order.
    pub qs: [i8; QK8_0],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// C's `MAX(a, b)` (`a > b ? a : b`), which is also SSE's `maxps`: when either is NaN the
/// second operand wins. ggml's max scans depend on it when inputs hold NaN.
#[inline]
pub(crate) fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// A float → int32 conversion as x86 does it (`cvttss2si`, or `cvtps2dq` on a value that is
/// already an integer): truncate toward zero; NaN and values outside i32 give `i32::MIN`
/// ("integer indefinite"). Rust's saturating `as` differs for those, which ggml's quantizers
/// meet when a block is so small that `1/d` overflows to infinity.
#[inline]
pub(crate) fn x86_f32_to_i32(x: f32) -> i32 {
    if x.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        i32::MIN
    } else {
        x as i32
    }
}

/// C's `(int8_t) x` for a float as x86 compilers emit it: [`x86_f32_to_i32`], then the low
/// byte.
#[inline]
pub(crate) fn c_f32_to_i8(x: f32) -> i8 {
    x86_f32_to_i32(x) as i8
}

/// One block of ggml's `quantize_row_q8_0_ref` / `quantize_row_q8_1_ref`: the f32 scale `d`
/// (before f16 rounding) and the quants. Shape: x: (32,).
pub(crate) fn quantize_block_ref(x: &[f32]) -> (f32, [i8; QK8_0]) {
    let amax = x.iter().fold(0.0f32, |m, v| c_max(m, v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK8_0];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = c_f32_to_i8(round_away(v * id));
    }
    (d, qs)
}

/// One block of ggml-cpu's x86 (AVX/AVX2) `quantize_row_q8_0` / `quantize_row_q8_1`, in
/// scalar: the f32 scale `d` and the 32-bit codes before the saturating int8 pack (Q8_1 sums
/// those). Shape: x: (32,).
pub(crate) fn quantize_block_x86(x: &[f32]) -> (f32, [i32; QK8_0]) {
    // ggml's max tree: 8 lanes over 4 loads (lane l sees elements l, l+8, l+16, l+24), then
    // halves (hi, lo), movehl, movehdup. `maxps` picks its second operand on NaN, so the
    // tree's order is part of the result when the block holds NaN.
    let mut lanes = [0.0f32; 8];
    for (l, m) in lanes.iter_mut().enumerate() {
        *m = (1..4).fold(x[l].abs(), |m, k| c_max(m, x[l + 8 * k].abs()));
    }
    let h: [f32; 4] = std::array::from_fn(|l| c_max(lanes[4 + l], lanes[l]));
    let amax = c_max(c_max(h[0], h[2]), c_max(h[1], h[3]));

    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut codes = [0i32; QK8_0];
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = x86_f32_to_i32(round_even(v * id));
    }
    (d, codes)
}

/// `packs_epi32` then `packs_epi16`: saturate to int8.
#[inline]
pub(crate) fn saturate_i8(c: i32) -> i8 {
    c.clamp(-128, 127) as i8
}

/// ggml's `quantize_row_q8_0_ref`, bit for bit. `x.len()` must be a multiple of 32 and `y`
/// hold `x.len() / 32` blocks.
pub fn quantize_row_q8_0_ref(x: &[f32], y: &mut [BlockQ8_0]) -> Result<(), KernelError> {
    let nb = block_count(GgmlType::Q8_0, x.len(), QK8_0)?;
    expect_len(GgmlType::Q8_0, "blocks", y.len(), nb)?;
    for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let (d, qs) = quantize_block_ref(xb);
        *yb = BlockQ8_0 {
            d: f32_to_f16_ref(d),
            qs,
        };
    }
    Ok(())
}

/// The x86 activation quantizer in scalar code: the oracle of [`quantize_row_q8_0_x86`].
pub fn quantize_row_q8_0_x86_generic(x: &[f32], y: &mut [BlockQ8_0]) -> Result<(), KernelError> {
    quantize_row_q8_0_x86_with(Isa::Scalar, x, y)
}

/// [`quantize_row_q8_0_x86`] on the given ISA (scalar when `isa` is not supported here).
pub fn quantize_row_q8_0_x86_with(
    isa: Isa,
    x: &[f32],
    y: &mut [BlockQ8_0],
) -> Result<(), KernelError> {
    let nb = block_count(GgmlType::Q8_0, x.len(), QK8_0)?;
    expect_len(GgmlType::Q8_0, "blocks", y.len(), nb)?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        _ if isa.runs_avx2() => {
            for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
                // SAFETY: isa.runs_avx2() checked in the guard; xb has 32 elements.
                let (d, qs, _) = unsafe { avx2::quantize_block_x86(xb) };
                *yb = BlockQ8_0 {
                    d: f16::from_f32(d),
                    qs,
                };
            }
        }
        _ => {
            for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
                let (d, codes) = quantize_block_x86(xb);
                *yb = BlockQ8_0 {
                    d: f16::from_f32(d),
                    qs: codes.map(saturate_i8),
                };
            }
        }
    }
    Ok(())
}

/// ggml-cpu's x86 `quantize_row_q8_0` (AVX/AVX2 builds): the activation quantizer llama.cpp
/// runs for Q8_0 and Q4_0 weights on x86. Rounds half to even with `id = 127/amax` (see the
/// module docs for how that differs from [`quantize_row_q8_0_ref`]).
pub fn quantize_row_q8_0_x86(x: &[f32], y: &mut [BlockQ8_0]) -> Result<(), KernelError> {
    quantize_row_q8_0_x86_with(Isa::best(), x, y)
}

/// ggml's `dequantize_row_q8_0`: `y[i] = qs[i] · d`. `y` must hold 32 values per block.
pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) -> Result<(), KernelError> {
    expect_len(GgmlType::Q8_0, "values", y.len(), x.len() * QK8_0)?;
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = b.d.to_f32();
        for (o, &q) in yb.iter_mut().zip(&b.qs) {
            *o = f32::from(q) * d;
        }
    }
    Ok(())
}

/// ggml's `ggml_vec_dot_q8_0_q8_0_generic` ([`SumOrder::GgmlGeneric`]): per block an exact
/// int32 `sumi`, then `sumf += sumi · (dx · dy)` in f32, block by block.
fn dot_generic_order(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // Shape: x, y: (nb,) block pairs, 32 int8 each.
    x.iter().zip(y).fold(0.0f32, |sumf, (bx, by)| {
        let sumi: i32 = bx
            .qs
            .iter()
            .zip(&by.qs)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        sumf + sumi as f32 * (bx.d.to_f32() * by.d.to_f32())
    })
}

/// ggml's `mul_sum_i8_pairs` lanes in scalar: lane `k` sums elements `4k..4k+4` of
/// `|x| · sign(y, x)` (`_mm256_sign_epi8`, so `y = -128` against a negative `x` stays −128:
/// the wrap of ggml's kernel), through `maddubs` and `madd`.
pub(crate) fn mul_sum_i8_pairs_scalar(x: &[i8; QK8_0], y: &[i8; QK8_0]) -> [i32; 8] {
    std::array::from_fn(|k| {
        let e = |j: usize| (x[4 * k + j], y[4 * k + j]);
        let ax = std::array::from_fn(|j| e(j).0.unsigned_abs());
        let sy = std::array::from_fn(|j| match e(j) {
            (a, b) if a < 0 => b.wrapping_neg(),
            (0, _) => 0,
            (_, b) => b,
        });
        maddubs_madd4(ax, sy)
    })
}

/// ggml's AVX2 `ggml_vec_dot_q8_0_q8_0` ([`SumOrder::GgmlAvx2`]) in scalar, bit-identical to
/// `avx2::vec_dot_q8_0_q8_0`: `acc[k] = fma(dx·dy, lane[k], acc[k])`, then `hsum_float_8`.
fn dot_avx2_order(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        let d = bx.d.to_f32() * by.d.to_f32();
        for (a, l) in acc.iter_mut().zip(mul_sum_i8_pairs_scalar(&bx.qs, &by.qs)) {
            *a = d.mul_add(l as f32, *a);
        }
    }
    hsum8_ggml(acc)
}

/// Q8_0 · Q8_0 in `order` on the scalar path: [`SumOrder::GgmlGeneric`] is
/// `ggml_vec_dot_q8_0_q8_0_generic`, [`SumOrder::GgmlAvx2`] the AVX2 kernel's arithmetic.
pub fn vec_dot_q8_0_q8_0_generic(
    order: SumOrder,
    x: &[BlockQ8_0],
    y: &[BlockQ8_0],
) -> Result<f32, KernelError> {
    vec_dot_q8_0_q8_0_with(Isa::Scalar, order, x, y)
}

/// [`vec_dot_q8_0_q8_0`] on the given ISA (scalar when `isa` is not supported here);
/// bit-identical to [`vec_dot_q8_0_q8_0_generic`] in both orders.
pub fn vec_dot_q8_0_q8_0_with(
    isa: Isa,
    order: SumOrder,
    x: &[BlockQ8_0],
    y: &[BlockQ8_0],
) -> Result<f32, KernelError> {
    expect_len(GgmlType::Q8_0, "activation blocks", y.len(), x.len())?;
    Ok(match (order, isa) {
        // Correctness over speed: the generic order runs as scalar code on every ISA.
        (SumOrder::GgmlGeneric, _) => dot_generic_order(x, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; lengths equal (checked above).
        (SumOrder::GgmlAvx2, _) if isa.runs_avx2() => unsafe { avx2::vec_dot_q8_0_q8_0(x, y) },
        (SumOrder::GgmlAvx2, _) => dot_avx2_order(x, y),
    })
}

/// Q8_0 weights · Q8_0 activations (ggml's `ggml_vec_dot_q8_0_q8_0`) in `order`, on
/// [`Isa::best`], one block pair at a time.
///
/// The AVX2 order is ggml's: `|x|` times `y` signed by `x` (`maddubs`), which is exact for
/// every weight and every activation code in [-127, 127] — the range every Q8_0 quantizer
/// produces (|x·id| ≤ 127). An activation code of −128 against a negative weight wraps in
/// ggml's AVX2 kernel and in ours alike (on every ISA); the generic order is exact there.
/// Errors when block counts differ.
pub fn vec_dot_q8_0_q8_0(
    order: SumOrder,
    x: &[BlockQ8_0],
    y: &[BlockQ8_0],
) -> Result<f32, KernelError> {
    vec_dot_q8_0_q8_0_with(Isa::best(), order, x, y)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ8_0, QK8_0};
    use crate::float::avx2::hsum_float_8;

    /// int8 pairs summed twice: 8 int32 lanes, lane k = Σ x[4k..4k+4]·y[4k..4k+4] (ggml's
    /// `mul_sum_i8_pairs`, without the float conversion). `maddubs` takes |x| (≤ 128, unsigned)
    /// times y signed by x; each 16-bit pair sum is ≤ 2·128·127 = 32512 < 32767 while y ≥ −127.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn mul_sum_i8_pairs(x: __m256i, y: __m256i) -> __m256i {
        let ax = _mm256_sign_epi8(x, x);
        let sy = _mm256_sign_epi8(y, x);
        _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
    }

    /// ggml's AVX2 `ggml_vec_dot_q8_0_q8_0`: `acc = fma(dx·dy, lanes, acc)` per block pair,
    /// then `hsum_float_8`. Shape: x, y: (nb,) blocks; acc lane k sums elements 4k..4k+4.
    ///
    /// # Safety
    /// `y.len() == x.len()`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (bx, by) in x.iter().zip(y) {
            let d = _mm256_set1_ps(bx.d.to_f32() * by.d.to_f32());
            // SAFETY: qs is 32 bytes in both blocks.
            let (qx, qy) = unsafe {
                (
                    _mm256_loadu_si256(bx.qs.as_ptr().cast()),
                    _mm256_loadu_si256(by.qs.as_ptr().cast()),
                )
            };
            let q = _mm256_cvtepi32_ps(mul_sum_i8_pairs(qx, qy));
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc)
    }

    /// ggml-cpu's x86 `quantize_row_q8_0`/`_q8_1` on one block: the f32 scale, the 32 codes
    /// (packed with saturation, in element order) and the wrapping int32 sum of the codes
    /// before packing (Q8_1's `s`).
    ///
    /// # Safety
    /// `x.len() >= 32`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn quantize_block_x86(x: &[f32]) -> (f32, [i8; QK8_0], i32) {
        let p = x.as_ptr();
        // SAFETY: the caller guarantees 32 readable floats.
        let v: [__m256; 4] = unsafe { std::array::from_fn(|k| _mm256_loadu_ps(p.add(8 * k))) };

        let sign = _mm256_set1_ps(-0.0);
        let mut max_abs = _mm256_andnot_ps(sign, v[0]);
        for vk in &v[1..] {
            max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign, *vk));
        }
        let mut max4 = _mm_max_ps(
            _mm256_extractf128_ps::<1>(max_abs),
            _mm256_castps256_ps128(max_abs),
        );
        max4 = _mm_max_ps(max4, _mm_movehl_ps(max4, max4));
        max4 = _mm_max_ss(max4, _mm_movehdup_ps(max4));
        let amax = _mm_cvtss_f32(max4);

        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let i: [__m256i; 4] = std::array::from_fn(|k| {
            _mm256_cvtps_epi32(_mm256_round_ps::<_MM_FROUND_TO_NEAREST_INT>(_mm256_mul_ps(
                v[k], id,
            )))
        });

        let sum8 = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let sum4 = _mm_add_epi32(
            _mm256_castsi256_si128(sum8),
            _mm256_extracti128_si256::<1>(sum8),
        );
        let sum2 = _mm_add_epi32(sum4, _mm_unpackhi_epi64(sum4, sum4));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(
            sum2,
            _mm_shuffle_epi32::<0b10_11_00_01>(sum2),
        ));

        // packs work per 128-bit half: bytes come out as 0-3, 8-11, 16-19, 24-27 | 4-7,
        // 12-15, 20-23, 28-31; the dword permute restores element order.
        let i16s_lo = _mm256_packs_epi32(i[0], i[1]);
        let i16s_hi = _mm256_packs_epi32(i[2], i[3]);
        let i8s = _mm256_packs_epi16(i16s_lo, i16s_hi);
        let ordered = _mm256_permutevar8x32_epi32(i8s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let mut qs = [0i8; QK8_0];
        // SAFETY: qs is 32 bytes.
        unsafe { _mm256_storeu_si256(qs.as_mut_ptr().cast(), ordered) };
        (d, qs, sum)
    }
}

#[cfg(test)]
mod tests {
    use bytemuck::Zeroable;

    use super::*;

    /// Every ISA this CPU runs, in both summation orders.
    fn isa_orders() -> impl Iterator<Item = (Isa, SumOrder)> {
        Isa::available()
            .iter()
            .flat_map(|&isa| [SumOrder::GgmlGeneric, SumOrder::GgmlAvx2].map(|o| (isa, o)))
    }

    /// Values chosen so that amax = 127 gives d = 1 and id = 1 in both quantizers: every
    /// quant is just the rounding of the value itself.
    const KAT_X: [f32; 32] = [
        127.0, -127.0, 0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 3.49, -3.51, 126.5, -126.5, 0.25, 64.0,
        -64.0, 100.4999, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, -1.0, -2.0, -3.0, -4.0, -5.0,
        -6.0, -7.0, -0.0,
    ];

    #[test]
    fn known_answer_ref_rounds_ties_away() {
        // d = 127/127 = 1 → f16 0x3C00 (bytes 00 3C); id = 1/1 = 1; q = roundf(x):
        // 0.5 → 1, -0.5 → -1, 1.5 → 2, 2.5 → 3, -2.5 → -3, 3.49 → 3, -3.51 → -4,
        // 126.5 → 127, -126.5 → -127, 0.25 → 0, 100.4999 → 100.
        let mut y = [BlockQ8_0::zeroed(); 1];
        quantize_row_q8_0_ref(&KAT_X, &mut y).unwrap();
        let want: [i8; 32] = [
            127, -127, 0, 1, -1, 2, 3, -3, 3, -4, 127, -127, 0, 64, -64, 100, 7, 8, 9, 10, 11, 12,
            13, 14, -1, -2, -3, -4, -5, -6, -7, 0,
        ];
        assert_eq!(y[0].d.to_bits(), 0x3C00);
        assert_eq!(y[0].qs, want);
        let bytes = bytemuck::bytes_of(&y[0]);
        assert_eq!(&bytes[..5], &[0x00, 0x3C, 127, 0x81, 0]);
    }

    #[test]
    fn known_answer_x86_rounds_ties_even() {
        // Same d = 1; id = 127/127 = 1; q = round-half-even(x):
        // 0.5 → 0, -0.5 → 0, 1.5 → 2, 2.5 → 2, -2.5 → -2, 126.5 → 126, -126.5 → -126.
        let want: [i8; 32] = [
            127, -127, 0, 0, 0, 2, 2, -2, 3, -4, 126, -126, 0, 64, -64, 100, 7, 8, 9, 10, 11, 12,
            13, 14, -1, -2, -3, -4, -5, -6, -7, 0,
        ];
        for &isa in Isa::available() {
            let mut y = [BlockQ8_0::zeroed(); 1];
            quantize_row_q8_0_x86_with(isa, &KAT_X, &mut y).unwrap();
            assert_eq!(y[0].d.to_bits(), 0x3C00, "{isa:?}");
            assert_eq!(y[0].qs, want, "{isa:?}");
        }
    }

    #[test]
    fn ref_and_x86_scales_differ_in_the_last_bit() {
        // amax = 11: the ref's id = 1/(11/127) = 11.545454 (0x4138BA2E), x86's
        // id = 127/11 = 11.545455 (0x4138BA2F). For x = -10.6102362 (0xC129C387):
        // x·id_ref = -122.499992 → roundf → -122; x·id_x86 = -122.500008 → -123 (not a tie:
        // the scale alone moves it across the boundary).
        let mut x = [0.0f32; 32];
        x[0] = 11.0;
        x[1] = f32::from_bits(0xC129_C387);
        assert_eq!((1.0f32 / (11.0f32 / 127.0)).to_bits(), 0x4138_BA2E);
        assert_eq!((127.0f32 / 11.0).to_bits(), 0x4138_BA2F);
        let mut y = [BlockQ8_0::zeroed(); 1];
        quantize_row_q8_0_ref(&x, &mut y).unwrap();
        assert_eq!(y[0].qs[..2], [127, -122]);
        for &isa in Isa::available() {
            quantize_row_q8_0_x86_with(isa, &x, &mut y).unwrap();
            assert_eq!(y[0].qs[..2], [127, -123], "{isa:?}");
        }
    }

    #[test]
    fn tiny_block_follows_x86_conversions() {
        // amax = 2^-140: d = 2^-140/127 is a subnormal, 1/d overflows to +inf, so x·id is
        // ±inf (or NaN for 0·inf). The ref converts with cvttss2si → 0x80000000 → low byte 0:
        // every quant is 0. The x86 path: 127/amax = inf too, cvtps_epi32(±inf or NaN) =
        // i32::MIN, saturated to -128. f16(d) = 0 either way.
        let mut x = [0.0f32; 32];
        x[0] = 2f32.powi(-140);
        x[1] = -(2f32.powi(-141));
        let mut y = [BlockQ8_0::zeroed(); 1];
        quantize_row_q8_0_ref(&x, &mut y).unwrap();
        assert_eq!(y[0].d.to_bits(), 0);
        assert_eq!(y[0].qs, [0; 32]);
        for &isa in Isa::available() {
            quantize_row_q8_0_x86_with(isa, &x, &mut y).unwrap();
            assert_eq!(y[0].d.to_bits(), 0, "{isa:?}");
            assert_eq!(y[0].qs, [-128; 32], "{isa:?}");
        }
    }

    #[test]
    fn known_answer_dot() {
        // x: d = 1, qs = 1, 2, ..., 32; y: d = 0.5, qs = 1 for even i, -1 for odd i.
        // sumi = Σ (i+1)·(±1) = (1 - 2) + (3 - 4) + ... = -16; sumf = -16 · (1 · 0.5) = -8.
        let x = BlockQ8_0 {
            d: f16::ONE,
            qs: std::array::from_fn(|i| i as i8 + 1),
        };
        let y = BlockQ8_0 {
            d: f16::from_f32(0.5),
            qs: std::array::from_fn(|i| if i % 2 == 0 { 1 } else { -1 }),
        };
        for (isa, order) in isa_orders() {
            assert_eq!(
                vec_dot_q8_0_q8_0_with(isa, order, &[x], &[y]),
                Ok(-8.0),
                "{isa:?} {order:?}"
            );
        }
    }

    #[test]
    fn dot_takes_minus_128_weights_exactly() {
        // Weights at -128 (outside what quantizers write, possible in a file): |x| = 128 as
        // an unsigned byte; 128 · 127 · 2 per pair still fits maddubs' i16.
        let x = BlockQ8_0 {
            d: f16::ONE,
            qs: [-128; 32],
        };
        let y = BlockQ8_0 {
            d: f16::ONE,
            qs: [-127; 32],
        };
        for (isa, order) in isa_orders() {
            assert_eq!(
                vec_dot_q8_0_q8_0_with(isa, order, &[x], &[y]),
                Ok(32.0 * 128.0 * 127.0),
                "{isa:?} {order:?}"
            );
        }
    }

    #[test]
    fn blocks_cast_from_file_bytes() {
        // Two blocks as they sit in a GGUF tensor: d = 0.5 (f16 0x3800, bytes 00 38), quants
        // 0..32, then d = 2.0 (0x4000), quants all -1. Backed by u16 so the slice is 2-aligned.
        let mut raw = vec![0u16; 34];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut raw);
        bytes[..2].copy_from_slice(&[0x00, 0x38]);
        for (i, b) in bytes[2..34].iter_mut().enumerate() {
            *b = i as u8;
        }
        bytes[34..36].copy_from_slice(&[0x00, 0x40]);
        bytes[36..].fill(0xFF);
        let blocks: &[BlockQ8_0] = bytemuck::try_cast_slice(bytes).unwrap();
        let mut y = [0.0f32; 64];
        dequantize_row_q8_0(blocks, &mut y).unwrap();
        assert_eq!((y[0], y[1], y[31]), (0.0, 0.5, 15.5));
        assert_eq!((y[32], y[63]), (-2.0, -2.0));
        // A misaligned or ragged byte slice is an error, not a panic.
        assert!(bytemuck::try_cast_slice::<u8, BlockQ8_0>(&bytes[1..35]).is_err());
        assert!(bytemuck::try_cast_slice::<u8, BlockQ8_0>(&bytes[..35]).is_err());
    }

    #[test]
    fn lengths_are_validated() {
        let mut y = [BlockQ8_0::zeroed(); 2];
        assert_eq!(
            quantize_row_q8_0_ref(&[0.0; 33], &mut y),
            Err(KernelError::NotBlockMultiple {
                format: GgmlType::Q8_0,
                len: 33,
                block: 32
            })
        );
        assert!(quantize_row_q8_0_x86(&[0.0; 32], &mut y).is_err());
        assert!(dequantize_row_q8_0(&y, &mut [0.0; 63]).is_err());
        assert!(vec_dot_q8_0_q8_0(SumOrder::GgmlAvx2, &y, &y[..1]).is_err());
    }
}
