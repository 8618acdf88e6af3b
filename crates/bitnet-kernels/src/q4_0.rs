//! Q4_0: 4-bit blocks of 32 with an f16 scale; ggml multiplies them against Q8_0 activations.
//!
//! Layout (ggml `ggml-common.h`, `ggml-quants.c`): byte `qs[j]` holds element `j` in its low
//! nibble and element `j + 16` in its high nibble; value = `(nibble − 8) · d`.
//!
//! Reference quantizer (`quantize_row_q4_0_ref`, also ggml-cpu's `quantize_row_q4_0` and
//! `llama_model_quantize` without an importance matrix): `max` is the *signed* value of largest
//! magnitude (the first one on ties), `d = max / −8`, `id = d ? 1/d : 0` from the f32 `d`,
//! nibble = `MIN(15, (int8_t)(x·id + 8.5f))` — the f32 add rounds first, then truncation, so
//! exact halves round up; the element equal to `max` maps to nibble 0 (value `−8·d = max`) and
//! `−max` would need 16, clamped to 15.
//!
//! Bit-exact with ggml-base as llama.cpp builds it for plain x86-64 (no FMA). A ggml-base
//! compiled by GCC with FMA enabled (e.g. `-march=native` in the C flags) contracts
//! `x·id + 8.5f` into one FMA, which moves a rare value across a rounding boundary.

use half::f16;

use crate::float::{block_count, expect_len, f32_to_f16_ref};
use crate::order::hsum8_ggml;
use crate::q8_0::{c_f32_to_i8, BlockQ8_0};
use crate::{GgmlType, Isa, KernelError, SumOrder};

/// Elements per Q4_0 block.
pub const QK4_0: usize = 32;

/// 32 weights in 18 bytes: 4.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: element `j` low, element `j + 16` high.
    pub qs: [u8; QK4_0 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// ggml's 4-bit quant conversion: `MIN(15, (int8_t) v)` stored as `uint8_t`.
#[inline]
pub(crate) fn nibble(v: f32) -> u8 {
    c_f32_to_i8(v).min(15) as u8
}

/// Packs 32 nibbles (each < 16 once ggml's conversion is applied) into ggml's order.
#[inline]
pub(crate) fn pack_nibbles(lo: impl Fn(usize) -> u8, hi: impl Fn(usize) -> u8) -> [u8; 16] {
    // `xi1 << 4` in C is an int, truncated when stored to the uint8_t byte.
    std::array::from_fn(|j| lo(j) | (hi(j) << 4))
}

/// ggml's `quantize_row_q4_0_ref`, bit for bit. `x.len()` must be a multiple of 32 and `y`
/// hold `x.len() / 32` blocks.
pub fn quantize_row_q4_0_ref(x: &[f32], y: &mut [BlockQ4_0]) -> Result<(), KernelError> {
    let nb = block_count(GgmlType::Q4_0, x.len(), QK4_0)?;
    expect_len(GgmlType::Q4_0, "blocks", y.len(), nb)?;
    for (xb, yb) in x.chunks_exact(QK4_0).zip(y.iter_mut()) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |j: usize| nibble(xb[j] * id + 8.5);
        *yb = BlockQ4_0 {
            d: f32_to_f16_ref(d),
            qs: pack_nibbles(q, |j| q(j + 16)),
        };
    }
    Ok(())
}

/// ggml's `dequantize_row_q4_0`: `(nibble − 8) · d`. `y` must hold 32 values per block.
pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) -> Result<(), KernelError> {
    expect_len(GgmlType::Q4_0, "values", y.len(), x.len() * QK4_0)?;
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK4_0)) {
        let d = b.d.to_f32();
        let (lo, hi) = yb.split_at_mut(QK4_0 / 2);
        for ((&q, l), h) in b.qs.iter().zip(lo).zip(hi) {
            *l = (i32::from(q & 0x0F) - 8) as f32 * d;
            *h = (i32::from(q >> 4) - 8) as f32 * d;
        }
    }
    Ok(())
}

/// ggml's `ggml_vec_dot_q4_0_q8_0_generic` ([`SumOrder::GgmlGeneric`]): per block exact int32
/// sums over the low and the high nibbles, then `sumf += sumi · dx · dy` in f32 (left to
/// right), block by block.
fn dot_generic_order(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // Shape: x, y: (nb,) block pairs; nibble j pairs with y.qs[j], nibble j + 16 with
    // y.qs[j + 16].
    x.iter().zip(y).fold(0.0f32, |sumf, (bx, by)| {
        let (y_lo, y_hi) = by.qs.split_at(QK4_0 / 2);
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for ((&q, &a), &b) in bx.qs.iter().zip(y_lo).zip(y_hi) {
            sumi0 += (i32::from(q & 0x0F) - 8) * i32::from(a);
            sumi1 += (i32::from(q >> 4) - 8) * i32::from(b);
        }
        sumf + (sumi0 + sumi1) as f32 * bx.d.to_f32() * by.d.to_f32()
    })
}

/// The 32 nibbles of a Q4_0/Q4_1 block in element order (ggml's `bytes_from_nibbles_32`).
pub(crate) fn nibbles_32(qs: &[u8; QK4_0 / 2]) -> [u8; QK4_0] {
    std::array::from_fn(|i| {
        if i < QK4_0 / 2 {
            qs[i] & 0x0F
        } else {
            qs[i - QK4_0 / 2] >> 4
        }
    })
}

/// ggml's AVX2 `ggml_vec_dot_q4_0_q8_0` ([`SumOrder::GgmlAvx2`]) in scalar, bit-identical to
/// `avx2::vec_dot_q4_0_q8_0`: lane `k` = Σ (nibble − 8)·y over elements `4k..4k+4` (exact),
/// `acc[k] = fma(dx·dy, lane[k], acc[k])`, then `hsum_float_8`.
fn dot_avx2_order(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        let d = bx.d.to_f32() * by.d.to_f32();
        let q = nibbles_32(&bx.qs);
        for (k, a) in acc.iter_mut().enumerate() {
            let lane: i32 = (4 * k..4 * k + 4)
                .map(|i| (i32::from(q[i]) - 8) * i32::from(by.qs[i]))
                .sum();
            *a = d.mul_add(lane as f32, *a);
        }
    }
    hsum8_ggml(acc)
}

/// Q4_0 · Q8_0 in `order` on the scalar path: [`SumOrder::GgmlGeneric`] is
/// `ggml_vec_dot_q4_0_q8_0_generic`, [`SumOrder::GgmlAvx2`] the AVX2 kernel's arithmetic.
pub fn vec_dot_q4_0_q8_0_generic(
    order: SumOrder,
    x: &[BlockQ4_0],
    y: &[BlockQ8_0],
) -> Result<f32, KernelError> {
    vec_dot_q4_0_q8_0_with(Isa::Scalar, order, x, y)
}

/// Q4_0 · Q8_0 in `order` on the given ISA (scalar when `isa` is not supported here);
/// bit-identical to [`vec_dot_q4_0_q8_0_generic`] in both orders.
pub fn vec_dot_q4_0_q8_0_with(
    isa: Isa,
    order: SumOrder,
    x: &[BlockQ4_0],
    y: &[BlockQ8_0],
) -> Result<f32, KernelError> {
    expect_len(GgmlType::Q4_0, "activation blocks", y.len(), x.len())?;
    Ok(match (order, isa) {
        // Correctness over speed: the generic order runs as scalar code on every ISA.
        (SumOrder::GgmlGeneric, _) => dot_generic_order(x, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; lengths equal (checked above).
        (SumOrder::GgmlAvx2, _) if isa.runs_avx2() => unsafe { avx2::vec_dot_q4_0_q8_0(x, y) },
        (SumOrder::GgmlAvx2, _) => dot_avx2_order(x, y),
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ4_0, BlockQ8_0};
    use crate::float::avx2::hsum_float_8;

    /// ggml's `bytes_from_nibbles_32`: 16 bytes of nibbles → 32 bytes in element order (low
    /// nibbles = elements 0..16 in the low half, high nibbles = 16..32 in the high half).
    ///
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn bytes_from_nibbles_32(qs: &[u8; 16]) -> __m256i {
        // SAFETY: qs is 16 bytes.
        let raw = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    /// Q4_0 · Q8_0 with ggml's AVX2 float accumulation (`acc = fma(dx·dy, lanes, acc)`,
    /// `hsum_float_8`). Lane k holds Σ (q−8)·y over elements 4k..4k+4, as in ggml.
    ///
    /// ggml forms `(q − 8)·y` with the sign trick, which wraps for y = −128; we form it as
    /// `q·y − 8·y`, two `maddubs` with unsigned left operands (q ≤ 15 and 8), whose pair sums
    /// (|·| ≤ 2·15·128 = 3840 and 2·8·128 = 2048) and difference (|·| ≤ 2048) fit in i16 for
    /// every int8 y. Same lanes, exact everywhere.
    ///
    /// # Safety
    /// `y.len() == x.len()`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
        let eights = _mm256_set1_epi8(8);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        // Shape: x, y: (nb,) block pairs; per pair qx, qy: (32,) int8 lanes → 8 int32 lanes.
        for (bx, by) in x.iter().zip(y) {
            let d = _mm256_set1_ps(bx.d.to_f32() * by.d.to_f32());
            let qx = bytes_from_nibbles_32(&bx.qs);
            // SAFETY: qs of a Q8_0 block is 32 bytes.
            let qy = unsafe { _mm256_loadu_si256(by.qs.as_ptr().cast()) };
            let pairs = _mm256_sub_epi16(
                _mm256_maddubs_epi16(qx, qy),
                _mm256_maddubs_epi16(eights, qy),
            );
            let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc)
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

    #[test]
    fn known_answer_negative_max() {
        // max = -8 (largest |x|, negative) → d = -8/-8 = 1 (0x3C00), id = 1.
        // nibble = MIN(15, trunc(x + 8.5)):
        //   x0 = -8   → 0.5  → 0     x16 = 7    → 15.5 → 15
        //   x1 = 0    → 8.5  → 8     x17 = 0.5  → 9.0  → 9   (half rounds up)
        //   x2 = -0.5 → 8.0  → 8     x18 = 7.4  → 15.9 → 15
        //   x3 = -7.6 → 0.9  → 0     x19 = 1.49 → 9.99 → 9
        // All other elements 0 → 8. Byte j = lo | hi << 4: 0xF0, 0x98, 0xF8, 0x90, then 0x88.
        let mut x = [0.0f32; 32];
        x[..4].copy_from_slice(&[-8.0, 0.0, -0.5, -7.6]);
        x[16..20].copy_from_slice(&[7.0, 0.5, 7.4, 1.49]);
        let mut y = [BlockQ4_0::zeroed(); 1];
        quantize_row_q4_0_ref(&x, &mut y).unwrap();
        let mut want = [0u8; 18];
        want[..2].copy_from_slice(&[0x00, 0x3C]);
        want[2..6].copy_from_slice(&[0xF0, 0x98, 0xF8, 0x90]);
        want[6..].fill(0x88);
        assert_eq!(bytemuck::bytes_of(&y[0]), &want);

        // Dequantized: (nibble - 8) · 1.
        let mut back = [0.0f32; 32];
        dequantize_row_q4_0(&y, &mut back).unwrap();
        assert_eq!(back[..4], [-8.0, 0.0, 0.0, -8.0]);
        assert_eq!(back[16..20], [7.0, 1.0, 7.0, 1.0]);
    }

    #[test]
    fn known_answer_positive_max_clamps() {
        // max = +8 → d = -1 (0xBC00), id = -1. x = 8 → -8 + 8.5 = 0.5 → 0 (value (0-8)·-1 = 8);
        // x = -8 → 8 + 8.5 = 16.5 → 16, clamped to 15 (value (15-8)·-1 = -7);
        // x = 3 → -3 + 8.5 = 5.5 → 5 (value 3).
        let mut x = [0.0f32; 32];
        x[0] = 8.0;
        x[1] = -8.0;
        x[16] = 3.0;
        let mut y = [BlockQ4_0::zeroed(); 1];
        quantize_row_q4_0_ref(&x, &mut y).unwrap();
        assert_eq!(y[0].d.to_bits(), 0xBC00);
        assert_eq!(y[0].qs[..2], [0x50, 0x8F]);
        let mut back = [0.0f32; 32];
        dequantize_row_q4_0(&y, &mut back).unwrap();
        assert_eq!((back[0], back[1], back[16]), (8.0, -7.0, 3.0));
    }

    #[test]
    fn first_of_equal_magnitudes_wins() {
        // |-2| == |2|: `amax < |v|` is strict, so the first (-2) sets max → d = 0.25 > 0.
        let mut x = [0.0f32; 32];
        x[3] = -2.0;
        x[9] = 2.0;
        let mut y = [BlockQ4_0::zeroed(); 1];
        quantize_row_q4_0_ref(&x, &mut y).unwrap();
        assert_eq!(y[0].d.to_f32(), 0.25);
    }

    #[test]
    fn known_answer_dot() {
        // Weights: d = 2, every nibble 9 (value +1·2) except element 0 nibble 0 (value -8·2).
        // Activations: d = 0.25, qs[i] = -128 for i = 0, else 1.
        // sumi = (-8)(-128) + 31·(1·1) = 1024 + 31 = 1055; sumf = 1055 · 2 · 0.25 = 527.5.
        let mut qs = [0x99u8; 16];
        qs[0] = 0x90;
        let x = BlockQ4_0 {
            d: f16::from_f32(2.0),
            qs,
        };
        let mut yq = [1i8; 32];
        yq[0] = -128;
        let y = BlockQ8_0 {
            d: f16::from_f32(0.25),
            qs: yq,
        };
        for (isa, order) in isa_orders() {
            assert_eq!(
                vec_dot_q4_0_q8_0_with(isa, order, &[x], &[y]),
                Ok(527.5),
                "{isa:?} {order:?}"
            );
        }
    }

    #[test]
    fn lengths_are_validated() {
        let mut y = [BlockQ4_0::zeroed(); 1];
        assert!(quantize_row_q4_0_ref(&[0.0; 40], &mut y).is_err());
        assert!(quantize_row_q4_0_ref(&[0.0; 64], &mut y).is_err());
        assert!(dequantize_row_q4_0(&y, &mut [0.0; 33]).is_err());
        assert!(vec_dot_q4_0_q8_0_with(Isa::best(), SumOrder::GgmlAvx2, &y, &[]).is_err());
    }
}
