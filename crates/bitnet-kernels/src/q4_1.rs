//! Q4_1: 4-bit blocks of 32 with an f16 scale and an f16 min; ggml multiplies them against
//! Q8_1 activations, whose `s = d·Σq` carries the min term.
//!
//! Layout (ggml `ggml-common.h`, `ggml-quants.c`): nibbles packed as in Q4_0 (element `j` low,
//! `j + 16` high); value = `nibble · d + m`, multiplied then added.
//!
//! Reference quantizer (`quantize_row_q4_1_ref`, also ggml-cpu's `quantize_row_q4_1`):
//! `min`/`max` by strict `<`/`>` scans from `FLT_MAX`/`-FLT_MAX`, `d = (max − min) / 15`,
//! `id = d ? 1/d : 0` from the f32 `d`, `m = f16(min)`, nibble =
//! `MIN(15, (int8_t)((x − min)·id + 0.5f))` — halves round up.
//!
//! Bit-exact with ggml-base as llama.cpp builds it for plain x86-64 (no FMA). A ggml-base
//! compiled by GCC with FMA enabled contracts `(x − min)·id + 0.5f` and `nibble·d + m` into
//! FMAs, which can move rare values by a step (quantizer) or an ulp (dequantizer).

use half::f16;

use crate::float::{block_count, expect_len, f32_to_f16_ref};
use crate::order::hsum8_ggml;
use crate::q4_0::{nibble, nibbles_32, pack_nibbles};
use crate::q8_1::BlockQ8_1;
use crate::{GgmlType, Isa, KernelError, SumOrder};

/// Elements per Q4_1 block.
pub const QK4_1: usize = 32;

/// 32 weights in 20 bytes: 5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Block minimum (the value of nibble 0).
    pub m: f16,
    /// Nibbles: element `j` low, element `j + 16` high.
    pub qs: [u8; QK4_1 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// ggml's `quantize_row_q4_1_ref`, bit for bit. `x.len()` must be a multiple of 32 and `y`
/// hold `x.len() / 32` blocks.
pub fn quantize_row_q4_1_ref(x: &[f32], y: &mut [BlockQ4_1]) -> Result<(), KernelError> {
    let nb = block_count(GgmlType::Q4_1, x.len(), QK4_1)?;
    expect_len(GgmlType::Q4_1, "blocks", y.len(), nb)?;
    for (xb, yb) in x.chunks_exact(QK4_1).zip(y.iter_mut()) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in xb {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |j: usize| nibble((xb[j] - min) * id + 0.5);
        *yb = BlockQ4_1 {
            d: f32_to_f16_ref(d),
            m: f32_to_f16_ref(min),
            qs: pack_nibbles(q, |j| q(j + 16)),
        };
    }
    Ok(())
}

/// ggml's `dequantize_row_q4_1`: `nibble · d + m`. `y` must hold 32 values per block.
pub fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) -> Result<(), KernelError> {
    expect_len(GgmlType::Q4_1, "values", y.len(), x.len() * QK4_1)?;
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK4_1)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        let (lo, hi) = yb.split_at_mut(QK4_1 / 2);
        for ((&q, l), h) in b.qs.iter().zip(lo).zip(hi) {
            *l = f32::from(q & 0x0F) * d + m;
            *h = f32::from(q >> 4) * d + m;
        }
    }
    Ok(())
}

/// ggml's `ggml_vec_dot_q4_1_q8_1_generic` ([`SumOrder::GgmlGeneric`]): per block an exact
/// int32 `sumi` of nibble·q, then `sumf += (dx·dy)·sumi + mx·sy` in f32, block by block.
fn dot_generic_order(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // Shape: x, y: (nb,) block pairs; nibble j pairs with y.qs[j], nibble j + 16 with
    // y.qs[j + 16].
    x.iter().zip(y).fold(0.0f32, |sumf, (bx, by)| {
        let (y_lo, y_hi) = by.qs.split_at(QK4_1 / 2);
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for ((&q, &a), &b) in bx.qs.iter().zip(y_lo).zip(y_hi) {
            sumi0 += i32::from(q & 0x0F) * i32::from(a);
            sumi1 += i32::from(q >> 4) * i32::from(b);
        }
        let scale = bx.d.to_f32() * by.d.to_f32();
        sumf + (scale * (sumi0 + sumi1) as f32 + bx.m.to_f32() * by.s.to_f32())
    })
}

/// ggml's AVX2 `ggml_vec_dot_q4_1_q8_1` ([`SumOrder::GgmlAvx2`]) in scalar, bit-identical to
/// `avx2::vec_dot_q4_1_q8_1`: lane `k` = Σ nibble·q over elements `4k..4k+4` (exact),
/// `acc[k] = fma(dx·dy, lane[k], acc[k])`, the min terms `mx·sy` summed in one f32, result
/// `hsum_float_8(acc) + summs`.
fn dot_avx2_order(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        summs += bx.m.to_f32() * by.s.to_f32();
        let d = bx.d.to_f32() * by.d.to_f32();
        let q = nibbles_32(&bx.qs);
        for (k, a) in acc.iter_mut().enumerate() {
            let lane: i32 = (4 * k..4 * k + 4)
                .map(|i| i32::from(q[i]) * i32::from(by.qs[i]))
                .sum();
            *a = d.mul_add(lane as f32, *a);
        }
    }
    hsum8_ggml(acc) + summs
}

/// Q4_1 · Q8_1 in `order` on the scalar path: [`SumOrder::GgmlGeneric`] is
/// `ggml_vec_dot_q4_1_q8_1_generic`, [`SumOrder::GgmlAvx2`] the AVX2 kernel's arithmetic.
pub fn vec_dot_q4_1_q8_1_generic(
    order: SumOrder,
    x: &[BlockQ4_1],
    y: &[BlockQ8_1],
) -> Result<f32, KernelError> {
    vec_dot_q4_1_q8_1_with(Isa::Scalar, order, x, y)
}

/// Q4_1 · Q8_1 in `order` on the given ISA (scalar when `isa` is not supported here);
/// bit-identical to [`vec_dot_q4_1_q8_1_generic`] in both orders.
pub fn vec_dot_q4_1_q8_1_with(
    isa: Isa,
    order: SumOrder,
    x: &[BlockQ4_1],
    y: &[BlockQ8_1],
) -> Result<f32, KernelError> {
    expect_len(GgmlType::Q4_1, "activation blocks", y.len(), x.len())?;
    Ok(match (order, isa) {
        // Correctness over speed: the generic order runs as scalar code on every ISA.
        (SumOrder::GgmlGeneric, _) => dot_generic_order(x, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; lengths equal (checked above).
        (SumOrder::GgmlAvx2, _) if isa.runs_avx2() => unsafe { avx2::vec_dot_q4_1_q8_1(x, y) },
        (SumOrder::GgmlAvx2, _) => dot_avx2_order(x, y),
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ4_1, BlockQ8_1};
    use crate::float::avx2::hsum_float_8;
    use crate::q4_0::avx2::bytes_from_nibbles_32;

    /// ggml's AVX2 `ggml_vec_dot_q4_1_q8_1`: `acc = fma(dx·dy, lanes, acc)` with lane k =
    /// Σ nibble·q over elements 4k..4k+4 (`maddubs` of unsigned nibbles ≤ 15 and any int8:
    /// pair sums ≤ 2·15·128 = 3840, exact), the min terms `mx·sy` summed separately in f32
    /// (f16·f16 products are exact, so FMA or not is the same), result `hsum_float_8(acc) +
    /// summs`.
    ///
    /// # Safety
    /// `y.len() == x.len()`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0f32;
        // Shape: x, y: (nb,) block pairs; per pair qx, qy: (32,) bytes → 8 int32 lanes.
        for (bx, by) in x.iter().zip(y) {
            summs += bx.m.to_f32() * by.s.to_f32();
            let d = _mm256_mul_ps(_mm256_set1_ps(bx.d.to_f32()), _mm256_set1_ps(by.d.to_f32()));
            let qx = bytes_from_nibbles_32(&bx.qs);
            // SAFETY: qs of a Q8_1 block is 32 bytes.
            let qy = unsafe { _mm256_loadu_si256(by.qs.as_ptr().cast()) };
            let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), ones));
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc) + summs
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
    fn known_answer_min_max() {
        // min = -1, max = 14 → d = 15/15 = 1 (0x3C00), id = 1, m = f16(-1) = 0xBC00.
        // nibble = MIN(15, trunc((x + 1) + 0.5)):
        //   x0 = -1   → 0.5  → 0      x16 = 14   → 15.5 → 15
        //   x1 = 0.5  → 2.0  → 2      x17 = 1.49 → 2.99 → 2
        //   x2 = 3.2  → 4.7  → 4      x18 = 6.5  → 8.0  → 8   (7.5 above min: half rounds up)
        // All others 0 → 1.5 → 1. Bytes: F0 22 84, then 11.
        let mut x = [0.0f32; 32];
        x[..3].copy_from_slice(&[-1.0, 0.5, 3.2]);
        x[16..19].copy_from_slice(&[14.0, 1.49, 6.5]);
        let mut y = [BlockQ4_1::zeroed(); 1];
        quantize_row_q4_1_ref(&x, &mut y).unwrap();
        let mut want = [0u8; 20];
        want[..4].copy_from_slice(&[0x00, 0x3C, 0x00, 0xBC]);
        want[4..7].copy_from_slice(&[0xF0, 0x22, 0x84]);
        want[7..].fill(0x11);
        assert_eq!(bytemuck::bytes_of(&y[0]), &want);

        // Dequantized: nibble · 1 - 1.
        let mut back = [0.0f32; 32];
        dequantize_row_q4_1(&y, &mut back).unwrap();
        assert_eq!(back[..3], [-1.0, 1.0, 3.0]);
        assert_eq!(back[16..19], [14.0, 1.0, 7.0]);
        assert_eq!(back[5], 0.0);
    }

    #[test]
    fn constant_block_has_zero_scale() {
        // max == min → d = 0 → id = 0; every nibble is trunc(0 + 0.5) = 0; m carries the value.
        let x = [3.0f32; 32];
        let mut y = [BlockQ4_1::zeroed(); 1];
        quantize_row_q4_1_ref(&x, &mut y).unwrap();
        assert_eq!((y[0].d.to_bits(), y[0].m.to_f32()), (0, 3.0));
        assert_eq!(y[0].qs, [0; 16]);
    }

    #[test]
    fn known_answer_dot() {
        // Weights: d = 0.5, m = -2, nibbles all 3 (value 3·0.5 - 2 = -0.5).
        // Activations: d = 0.25, qs all 4 (value 1), s = f16(0.25 · 128) = 32.
        // sumi = 32 · 3 · 4 = 384; (0.5·0.25)·384 = 48; m·s = -2·32 = -64; total -16.
        // (Check: Σ value·value = 32 · (-0.5 · 1) = -16.)
        let x = BlockQ4_1 {
            d: f16::from_f32(0.5),
            m: f16::from_f32(-2.0),
            qs: [0x33; 16],
        };
        let y = BlockQ8_1 {
            d: f16::from_f32(0.25),
            s: f16::from_f32(32.0),
            qs: [4; 32],
        };
        for (isa, order) in isa_orders() {
            assert_eq!(
                vec_dot_q4_1_q8_1_with(isa, order, &[x], &[y]),
                Ok(-16.0),
                "{isa:?} {order:?}"
            );
        }
    }

    #[test]
    fn lengths_are_validated() {
        let mut y = [BlockQ4_1::zeroed(); 1];
        assert!(quantize_row_q4_1_ref(&[0.0; 16], &mut y).is_err());
        assert!(dequantize_row_q4_1(&y, &mut [0.0; 64]).is_err());
        assert!(vec_dot_q4_1_q8_1_with(
            Isa::best(),
            SumOrder::GgmlAvx2,
            &[],
            &[BlockQ8_1::zeroed()]
        )
        .is_err());
    }
}
