//! Q8_K: int8 blocks of 256 with an f32 scale and 16 partial sums, the activation type
//! (`vec_dot_type`) of ggml's ternary formats TQ1_0 and TQ2_0.
//!
//! Upstream llama.cpp's x86 CPU backend quantizes activations with the reference quantizer
//! itself (`quantize_row_q8_K` only calls `quantize_row_q8_K_ref`, in both upstream and
//! bitnet.cpp's fork), so [`quantize_row_q8_k`] is that reference quantizer, bit for bit
//! (its AVX-512 path writes the same blocks). bitnet.cpp compiles that same C with FMA
//! contraction, which rounds some near-ties the other way: [`quantize_row_q8_k_fma`] is its
//! activation quantizer.
//!
//! This module also holds the ternary × Q8_K dot-product driver both TQ formats share
//! (`TernaryBlock` is what each format supplies: its scale and its weight codes). The
//! integer part of those dot products is exact in every ISA; the float part follows one of
//! two C summation orders, chosen with [`SumOrder`].

use bytemuck::Zeroable;
use half::f16;

use crate::gemm::GemmShape;
use crate::order::hsum8_ggml;
use crate::round::{nearest_int, ROUND_F64};
use crate::{GgmlType, Isa, KernelError};

/// Values per Q8_K, TQ1_0 and TQ2_0 block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// One Q8_K block: 9.125 bits per value (4 + 256 + 32 bytes per 256 values).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8K {
    /// Scale: value ≈ `d · qs[i]`. Negative for blocks whose largest-magnitude value is
    /// positive (ggml's `iscale = -127/max`).
    pub d: f32,
    /// Quantized values in `[-128, 127]`.
    pub qs: [i8; QK_K],
    /// `bsums[j] = Σ qs[16j..16j+16]`. The SIMD dot kernels read these instead of
    /// re-summing `qs`, so a block built by hand must keep them consistent.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

/// Checks that `values` is a whole number of blocks and that `blocks` holds exactly that
/// many; shared by every quantizer and dequantizer of the K-block formats.
pub(crate) fn check_blocks(
    format: GgmlType,
    values: usize,
    blocks: usize,
    what: &'static str,
) -> Result<(), KernelError> {
    if !values.is_multiple_of(QK_K) {
        return Err(KernelError::NotBlockMultiple {
            format,
            len: values,
            block: QK_K,
        });
    }
    if blocks != values / QK_K {
        return Err(KernelError::LengthMismatch {
            format,
            what,
            got: blocks,
            expected: values / QK_K,
        });
    }
    Ok(())
}

/// The activation quantizer ggml's x86 CPU backend runs (`from_float` of Q8_K), which is
/// the reference quantizer: no SIMD variant with different rounding exists upstream. So
/// this is ggml's `quantize_row_q8_K_ref`, bit for bit: per block, `max` is the signed
/// value of largest magnitude (the first one on ties), `iscale = -127/max`,
/// `qs = min(127, nearest_int(iscale·x))`, `d = 1/iscale`. An all-zero block gets `d = 0`,
/// `qs = 0` and `bsums = 0` (ggml leaves that block's `bsums` unwritten; zero is what its
/// dot products need). Runs the AVX-512 path where the CPU has it; every path writes the
/// same blocks.
///
/// `x.len()` must be a multiple of 256 and `y.len() == x.len() / 256`.
pub fn quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8K]) -> Result<(), KernelError> {
    quantize_row_q8_k_with(Isa::best(), Rounding::Product, x, y)
}

/// bitnet.cpp's Q8_K activation quantizer as its x86 build runs it. Same C as
/// [`quantize_row_q8_k`], but bitnet.cpp's CMake applies `GGML_FMA` (`-mfma`) to every
/// ggml source, ggml-quants.c included (upstream applies it to ggml-cpu only), and GCC's
/// default `-ffp-contract=fast` fuses the inlined `nearest_int(iscale*x[j])`, i.e.
/// `iscale*x + 12582912.f`, into one FMA. So each quant is the exact product `iscale·x`
/// rounded once to the nearest integer (ties to even), not the f32 product rounded again.
/// The two differ when the f32 product rounds onto a .5 tie the exact one is not on: with
/// `max = -60000` (`iscale` = f32(127/60000)) and `x = -30000` the exact product is
/// -63.4999992 → -63 here, while the f32 product -63.5 → -64 in the reference quantizer.
/// Scales and `bsums` are computed as in [`quantize_row_q8_k`].
///
/// `x.len()` must be a multiple of 256 and `y.len() == x.len() / 256`.
pub fn quantize_row_q8_k_fma(x: &[f32], y: &mut [BlockQ8K]) -> Result<(), KernelError> {
    quantize_row_q8_k_with(Isa::best(), Rounding::Fma, x, y)
}

/// How a Q8_K quant rounds `iscale·x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rounding {
    /// The f32 product, then `nearest_int` ([`q8_code`]): ggml's own build.
    Product,
    /// The exact product rounded once ([`q8_code_fma`]): bitnet.cpp's build.
    Fma,
}

/// The Q8_K quantizers on `isa` (the scalar oracle where `isa` has no path or is not
/// supported here).
pub(crate) fn quantize_row_q8_k_with(
    isa: Isa,
    rounding: Rounding,
    x: &[f32],
    y: &mut [BlockQ8K],
) -> Result<(), KernelError> {
    check_blocks(GgmlType::Q8_K, x.len(), y.len(), "output blocks")?;
    let x: &[[f32; QK_K]] = bytemuck::cast_slice(x);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512Vnni.is_supported()` checked by the match guard.
        Isa::Avx512Vnni if isa.is_supported() => unsafe { avx512::quantize(x, y, rounding) },
        _ => {
            for (xb, yb) in x.iter().zip(y) {
                *yb = quantize_block(xb, rounding);
            }
        }
    }
    Ok(())
}

/// `y[i] = d · qs[i]` (ggml's `dequantize_row_q8_K`). `y.len()` must be `256 · x.len()`.
pub fn dequantize_row_q8_k(x: &[BlockQ8K], y: &mut [f32]) -> Result<(), KernelError> {
    check_blocks(GgmlType::Q8_K, y.len(), x.len(), "input blocks")?;
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (v, &q) in yb.iter_mut().zip(&xb.qs) {
            *v = xb.d * f32::from(q);
        }
    }
    Ok(())
}

/// One block of the scalar oracle.
fn quantize_block(x: &[f32; QK_K], rounding: Rounding) -> BlockQ8K {
    // `>` keeps the first of equal magnitudes; NaNs never win the comparison.
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return BlockQ8K::zeroed();
    }
    let iscale = -127.0 / max;
    let mut block = BlockQ8K {
        d: 1.0 / iscale,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
    for (q, &v) in block.qs.iter_mut().zip(x) {
        *q = match rounding {
            Rounding::Product => q8_code(iscale * v),
            Rounding::Fma => q8_code_fma(iscale, v),
        };
    }
    for (s, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
        // 16 · 128 = 2048 fits in i16.
        *s = group.iter().map(|&q| i16::from(q)).sum();
    }
    block
}

/// `MIN(127, nearest_int(v))` stored as int8. Every finite input gives `|v| <= 127·(1+ε)`
/// because `|x| <= |max|`. A non-finite `v` (from an infinite `iscale` when
/// `|max| < 127/f32::MAX`, or from an inf/NaN input) maps to 0: ggml's magic-number
/// rounding turns ±inf into -0x400000 and the default NaN into 0, both 0 once truncated to
/// int8 (only a NaN input with a payload would differ). Skipping `nearest_int` for them
/// also keeps its range assertion intact.
fn q8_code(v: f32) -> i8 {
    if v.abs() <= 4_194_303.0 {
        // In range, so the value is in [-128, 127] and the cast is exact.
        nearest_int(v).min(127) as i8
    } else {
        0
    }
}

/// [`q8_code`] of `fma(iscale, x, 12582912.f)`: the product of two f32 is exact in f64 and
/// 12582912 = 1.5·2^23 is even, so the single rounding of the FMA is the exact product
/// rounded to the nearest integer, ties to even. Non-finite products (infinite `iscale`,
/// inf/NaN inputs) give 0, as in [`q8_code`].
fn q8_code_fma(iscale: f32, x: f32) -> i8 {
    let p = f64::from(iscale) * f64::from(x);
    if p.abs() <= 4_194_303.0 {
        // In range, so the value is in [-128, 127] and the cast is exact.
        (((p + ROUND_F64) - ROUND_F64) as i32).min(127) as i8
    } else {
        0
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BlockQ8K, Rounding, QK_K};
    use crate::round::ROUND_F32;
    use bytemuck::Zeroable;
    use std::arch::x86_64::*;

    /// [`super::quantize_block`] 16 values a vector, one vector per `bsums` group. The
    /// blocks the oracle's degenerate cases reach (a NaN or an infinity among the values,
    /// an infinite `iscale`) run the oracle itself; in every other block each product is
    /// below 128 in magnitude, where `cvtps_epi32` rounds ties to even as `nearest_int`
    /// does, and the saturating narrowing is the oracle's `min(127)`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/VNNI (`Isa::Avx512Vnni.is_supported()`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn quantize(x: &[[f32; QK_K]], y: &mut [BlockQ8K], rounding: Rounding) {
        for (xb, yb) in x.iter().zip(y) {
            *yb = quantize_block(xb, rounding);
        }
    }

    /// One block of [`quantize`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn quantize_block(x: &[f32; QK_K], rounding: Rounding) -> BlockQ8K {
        // Shape: x (256) as 16 vectors of 16.
        // SAFETY: x is 256 f32, so vector j's 64 bytes are readable; loadu takes any
        // alignment.
        let v: [__m512; QK_K / 16] =
            std::array::from_fn(|j| unsafe { _mm512_loadu_ps(x.as_ptr().add(16 * j)) });
        let mut m = _mm512_setzero_ps();
        let mut nan: __mmask16 = 0;
        for &vj in &v {
            // `max_ps` returns its second operand when either is NaN: NaNs never win, as
            // in the oracle.
            m = _mm512_max_ps(_mm512_abs_ps(vj), m);
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(vj, vj);
        }
        let amax = _mm512_reduce_max_ps(m);
        if amax == 0.0 {
            return BlockQ8K::zeroed();
        }
        // The oracle's max is the first value of that magnitude.
        let am = _mm512_set1_ps(amax);
        let first = v.iter().enumerate().find_map(|(j, &vj)| {
            let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(vj), am);
            (hit != 0).then(|| 16 * j + hit.trailing_zeros() as usize)
        });
        let iscale = first.map_or(f32::NAN, |i| -127.0 / x[i]);
        if nan != 0 || !amax.is_finite() || !iscale.is_finite() {
            return super::quantize_block(x, rounding);
        }
        let mut block = BlockQ8K {
            d: 1.0 / iscale,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        let (s, round) = (_mm512_set1_ps(iscale), _mm512_set1_ps(ROUND_F32));
        for ((&vj, qs), bsum) in v
            .iter()
            .zip(block.qs.chunks_exact_mut(16))
            .zip(&mut block.bsums)
        {
            let r = match rounding {
                Rounding::Product => _mm512_mul_ps(s, vj),
                Rounding::Fma => _mm512_sub_ps(_mm512_fmadd_ps(s, vj, round), round),
            };
            let q = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(r));
            // SAFETY: a group of qs is 16 writable bytes; storeu takes any alignment.
            unsafe { _mm_storeu_si128(qs.as_mut_ptr().cast(), q) };
            // 16 · 128 = 2048 fits in i16.
            *bsum = _mm512_reduce_add_epi32(_mm512_cvtepi8_epi32(q)) as i16;
        }
        block
    }
}

/// Re-exported from [`crate::order`]: for the ternary dots, [`SumOrder::GgmlGeneric`] is
/// ggml's portable `ggml_vec_dot_tq*_q8_K_generic` without FMA contraction (one f32
/// accumulator, `sumf += (float)sumi · (y.d · x.d)` per block, in block order), and
/// [`SumOrder::GgmlAvx2`] its x86 AVX2 kernel: each block yields eight i32 lane sums, lane `k`
/// accumulates `acc[k] = fma(lane[k], y.d · x.d, acc[k])`, and the result is
/// `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
pub use crate::order::SumOrder;

/// A ternary weight block that can be dotted against Q8_K: TQ1_0 and TQ2_0 supply their
/// scale and decoded weight codes, and the driver here does the rest.
pub(crate) trait TernaryBlock: Copy {
    /// The format, for error messages.
    const FORMAT: GgmlType;

    /// The block scale `d`: weight = `(code - 1) · d`.
    fn scale(&self) -> f16;

    /// The 256 weight codes (`trit + 1`) in element order: 0..=2, or 3 for TQ2_0's
    /// unused bit pattern, which every ggml kernel treats as weight `+2`.
    fn codes(&self) -> [u8; QK_K];

    /// [`Self::codes`] as eight 32-byte chunks (chunk `c` = elements `32c..32c+32`).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn codes_avx2(&self) -> [std::arch::x86_64::__m256i; 8];

    /// The 512-bit kernels of a format whose codes decode into 64-byte vectors
    /// ([`PairedCodes`]); the others run ggml's lanes from 256-bit chunks.
    #[cfg(target_arch = "x86_64")]
    fn paired() -> Option<PairedKernels<Self>> {
        None
    }
}

/// A ternary block whose codes decode straight into 64-byte vectors (TQ2_0): its
/// [`TernaryBlock::paired`] are [`paired_kernels`].
pub(crate) trait PairedCodes: TernaryBlock {
    /// [`TernaryBlock::codes_avx2`] as four 64-byte vectors: vector `f` holds chunk `f` in
    /// its low half and chunk `f + 4` in its high half.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BW.
    #[cfg(target_arch = "x86_64")]
    unsafe fn codes_paired(&self) -> [std::arch::x86_64::__m512i; 4];
}

/// `(code - 1) · d` for every weight (ggml's `dequantize_row_tq*`); `y.len()` must be
/// `256 · x.len()`.
pub(crate) fn dequantize_ternary<B: TernaryBlock>(
    x: &[B],
    y: &mut [f32],
) -> Result<(), KernelError> {
    check_blocks(B::FORMAT, y.len(), x.len(), "input blocks")?;
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = xb.scale().to_f32();
        for (v, c) in yb.iter_mut().zip(xb.codes()) {
            *v = f32::from(i16::from(c) - 1) * d;
        }
    }
    Ok(())
}

/// One row of ternary weights against one Q8_K activation row: `x.len() == y.len()`.
pub(crate) fn vec_dot_ternary<B: TernaryBlock>(
    isa: Isa,
    order: SumOrder,
    x: &[B],
    y: &[BlockQ8K],
) -> Result<f32, KernelError> {
    if x.len() != y.len() {
        return Err(KernelError::LengthMismatch {
            format: B::FORMAT,
            what: "Q8_K activation blocks",
            got: y.len(),
            expected: x.len(),
        });
    }
    let mut out = [0.0f32];
    gemm_ternary(isa, order, x, y, 1, &mut out)?;
    Ok(out[0])
}

/// `out[r · n_tok + t]` = dot of weight row `r` with activation row `t`, for the
/// `out.len() / n_tok` weight rows in `x` and the `n_tok` activation rows in `y`, each of
/// `y.len() / n_tok` blocks (see [`crate::gemm`]). Runs `isa`'s kernel when the CPU
/// supports it, the scalar reference otherwise; both give bit-identical results for
/// consistent `bsums`.
pub(crate) fn gemm_ternary<B: TernaryBlock>(
    isa: Isa,
    order: SumOrder,
    x: &[B],
    y: &[BlockQ8K],
    n_tok: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    // The shape is counted in blocks (a "row" of nb one-block elements).
    let shape = GemmShape::new(B::FORMAT, x.len(), 1, y.len(), out.len(), n_tok)?;
    let nb = shape.k;
    if nb == 0 {
        out.fill(0.0);
        return Ok(());
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if isa.is_supported() => {
            // SAFETY: `Isa::Avx512Vnni.is_supported()` checked in the match guard; the
            // shape check gives x rows × nb blocks and y n_tok × nb blocks.
            unsafe { avx2::gemm_evex(order, x, y, nb, n_tok, out) }
        }
        #[cfg(target_arch = "x86_64")]
        _ if isa.runs_avx2() => {
            // SAFETY: isa.runs_avx2() checked in the match guard (AVX2, FMA, F16C);
            // the shape check gives x rows × nb blocks and y n_tok × nb blocks.
            unsafe { avx2::gemm::<B, { crate::gemm::TILE_TOKENS }>(order, x, y, nb, n_tok, out) }
        }
        _ => {
            for (row, o) in x.chunks_exact(nb).zip(out.chunks_exact_mut(n_tok)) {
                for (yt, v) in y.chunks_exact(nb).zip(o) {
                    *v = dot_row_scalar(order, row, yt);
                }
            }
        }
    }
    Ok(())
}

/// The 512-bit one-token and prompt kernels of a [`PairedCodes`] format, which AVX-512 VNNI
/// runs in ggml's AVX2 order whenever no bsum can wrap: 64 bytes at a time, the same lanes,
/// so the same result bit for bit (TQ2_0 on Zen 4: decode 6912x2560 in cache 19.4 -> 25.5
/// GB/s, 69120x2560 from memory 19.0 -> 25.1 GB/s; a 128-token prompt against 864 rows of
/// 6912 / 2560, 92 / 113 -> 135 / 136 GMAC/s).
#[cfg(target_arch = "x86_64")]
pub(crate) struct PairedKernels<B> {
    gemv: unsafe fn(&[B], &[BlockQ8K], &mut [f32]),
    gemm: unsafe fn(&[B], &[BlockQ8K], usize, usize, &mut [f32]),
}

/// [`PairedKernels`] for `B`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn paired_kernels<B: PairedCodes>() -> PairedKernels<B> {
    PairedKernels {
        gemv: avx2::gemv_evex::<B>,
        gemm: avx2::gemm_paired_evex::<B>,
    }
}

/// ggml's `ggml_vec_dot_tq*_q8_K_generic` block sum: `Σ (code - 1) · q`.
fn block_sumi_generic(codes: &[u8; QK_K], y: &BlockQ8K) -> i32 {
    codes
        .iter()
        .zip(&y.qs)
        .map(|(&c, &q)| (i32::from(c) - 1) * i32::from(q))
        .sum()
}

/// The eight i32 lanes ggml's AVX2 kernel holds for one block, computed the way it does:
/// `maddubs(code, q)` puts elements `32c + 2t` and `32c + 2t + 1` of every 32-byte chunk
/// `c` into i16 lane `t`; `bsums[t]` is subtracted there (the −1 of the codes), with i16
/// wrap-around like `_mm256_sub_epi16`; `madd(.., 1)` then adds i16 lanes `2k` and `2k+1`
/// into i32 lane `k`. The lanes sum to [`block_sumi_generic`] whenever `bsums` matches `qs`.
fn block_lanes_scalar(codes: &[u8; QK_K], y: &BlockQ8K) -> [i32; 8] {
    // (16 i16 lanes) before the bsums subtraction.
    let mut lanes16 = [0i32; 16];
    for (e, (&c, &q)) in codes.iter().zip(&y.qs).enumerate() {
        lanes16[(e % 32) / 2] += i32::from(c) * i32::from(q);
    }
    let mut lanes = [0i32; 8];
    for (t, (&s, &bsum)) in lanes16.iter().zip(&y.bsums).enumerate() {
        // |s| <= 16 elements · 3 · 128 = 6144: exact in i16, and no maddubs pair
        // (<= 2 · 3 · 128 = 768) saturates either.
        lanes[t / 2] += i32::from((s as i16).wrapping_sub(bsum));
    }
    lanes
}

/// The f32 block scale both ggml kernels use: `y.d · x.d`.
fn block_scale(x_d: f16, y_d: f32) -> f32 {
    y_d * x_d.to_f32()
}

/// The scalar reference for one row (`x.len() == y.len()`) in either summation order.
fn dot_row_scalar<B: TernaryBlock>(order: SumOrder, x: &[B], y: &[BlockQ8K]) -> f32 {
    match order {
        SumOrder::GgmlGeneric => {
            let mut sumf = 0.0f32;
            for (xb, yb) in x.iter().zip(y) {
                let sumi = block_sumi_generic(&xb.codes(), yb);
                // |sumi| <= 256 · 2 · 128 < 2^24: the conversion is exact.
                sumf += sumi as f32 * block_scale(xb.scale(), yb.d);
            }
            sumf
        }
        SumOrder::GgmlAvx2 => {
            let mut acc = [0.0f32; 8];
            for (xb, yb) in x.iter().zip(y) {
                let lanes = block_lanes_scalar(&xb.codes(), yb);
                let d = block_scale(xb.scale(), yb.d);
                for (a, &l) in acc.iter_mut().zip(&lanes) {
                    *a = (l as f32).mul_add(d, *a);
                }
            }
            hsum8_ggml(acc)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2 ternary × Q8_K: weight codes are unsigned bytes and activations signed bytes,
    //! so `maddubs` multiplies them directly; the +1 offset of the codes comes back out
    //! through `bsums` once per block instead of per element.

    use std::arch::x86_64::*;
    use std::cell::Cell;

    use super::{block_scale, hsum8_ggml, BlockQ8K, PairedCodes, SumOrder, TernaryBlock};
    use crate::gemm::{tiles, TileStream, PREFETCH_BYTES};

    /// Weight rows that take each token tile in turn (16 rows of 27 TQ2_0 blocks: 28 KB,
    /// about L1).
    const ROW_TILE: usize = 16;

    /// Tokens per weight decode in [`gemm_evex`]: eight accumulators and eight code vectors
    /// fit AVX-512's 32 vector registers (AVX2's 16 take `crate::gemm::TILE_TOKENS`).
    const EVEX_TILE_TOKENS: usize = 8;

    /// [`gemm`] compiled for AVX-512 VL, whose 32 vector registers hold
    /// [`EVEX_TILE_TOKENS`] tokens' accumulators beside a block's eight code vectors: twice
    /// the tokens per weight decode (6912x2560 x 128 tokens on Zen 4: TQ2_0 77.6 -> 81
    /// GMAC/s, TQ1_0 60 -> 65-73), and the block lanes from [`Vnni`] whenever
    /// [`bsums_cannot_wrap`] (TQ2_0 81 -> 88 GMAC/s, decode in cache 17.3 -> 19.0 GB/s);
    /// then a format with 64-byte codes runs its [`TernaryBlock::paired`] kernels instead.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C
    /// (`Isa::Avx512Vnni.is_supported()`); the lengths as for [`gemm`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn gemm_evex<B: TernaryBlock>(
        order: SumOrder,
        x: &[B],
        y: &[BlockQ8K],
        nb: usize,
        n_tok: usize,
        out: &mut [f32],
    ) {
        if order == SumOrder::GgmlAvx2 && bsums_cannot_wrap(y) {
            match (B::paired(), n_tok) {
                // SAFETY: this function's precondition is the paired kernels' (one token of
                // nb blocks), and no bsum can wrap.
                (Some(k), 1) => unsafe { (k.gemv)(x, y, out) },
                // SAFETY: as above, n_tok tokens of nb blocks.
                (Some(k), _) => unsafe { (k.gemm)(x, y, nb, n_tok, out) },
                // SAFETY: this function's precondition covers `gemm_by`'s (AVX2, FMA, F16C,
                // lengths) and `Vnni`'s (AVX-512 VL and VNNI).
                (None, _) => unsafe {
                    gemm_by::<B, EVEX_TILE_TOKENS, Vnni>(order, x, y, nb, n_tok, out)
                },
            }
        } else {
            // SAFETY: this function's precondition covers `gemm_by`'s.
            unsafe { gemm_by::<B, EVEX_TILE_TOKENS, Maddubs>(order, x, y, nb, n_tok, out) }
        }
    }

    /// One activation block laid out for [`gemv_evex`]: 64-byte vector `f` of `q` is
    /// chunk `f` then chunk `f + 4` (the pairing of [`PairedCodes::codes_paired`]), and
    /// `start` is [`Vnni::start`]'s accumulator widened with eight zero lanes.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct PairedBlock {
        q: [[i8; 64]; 4],
        start: [i32; 16],
    }

    impl PairedBlock {
        /// # Safety
        /// The CPU must support AVX2.
        #[inline(always)]
        unsafe fn of(y: &BlockQ8K) -> Self {
            let mut p = PairedBlock {
                q: [[0; 64]; 4],
                start: [0; 16],
            };
            for (f, v) in p.q.iter_mut().enumerate() {
                v[..32].copy_from_slice(&y.qs[32 * f..32 * f + 32]);
                v[32..].copy_from_slice(&y.qs[32 * (f + 4)..32 * (f + 4) + 32]);
            }
            // SAFETY: the caller's CPU contract; `start` has 8 writable i32 first.
            unsafe {
                _mm256_storeu_si256(p.start.as_mut_ptr().cast(), Vnni::start(y));
            }
            p
        }
    }

    /// [`SumOrder::GgmlAvx2`] for one token (decode) with [`Vnni`]'s lanes, 64 bytes at a
    /// time: the token's blocks are first laid out as [`PairedBlock`]s (once per call), so
    /// that a weight block is four 512-bit `vpdpbusd` against contiguous activations, two
    /// chains, and its 16 lanes fold to ggml's eight (lane `k` of both halves covers
    /// elements `4k..4k + 4` of a chunk) by one exact integer add.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `x` is whole rows of
    /// `y.len()` blocks, `out` one value per row; no bsum of `y` can wrap
    /// ([`bsums_cannot_wrap`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn gemv_evex<B: PairedCodes>(x: &[B], y: &[BlockQ8K], out: &mut [f32]) {
        // SAFETY: this function's contract, as one token of y.len() blocks.
        unsafe { token_tile::<B, GEMV_ROWS, 1>(x, y, y.len(), 1, 0, out) }
    }

    thread_local! {
        /// Each thread's [`PairedBlock`]s, reused from call to call: once it has grown to
        /// a model's largest call, a decode step allocates nothing.
        static PAIRED: Cell<Vec<PairedBlock>> = const { Cell::new(Vec::new()) };
    }

    /// Every block of `y` as a [`PairedBlock`], in this thread's buffer (hand it back to
    /// [`PAIRED`] after use).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn pair_blocks(y: &[BlockQ8K]) -> Vec<PairedBlock> {
        let mut paired = PAIRED.take();
        paired.clear();
        for yb in y {
            // SAFETY: this function's CPU contract (AVX2).
            paired.push(unsafe { PairedBlock::of(yb) });
        }
        paired
    }

    /// One weight block's eight ggml lanes against one paired activation block: four
    /// 512-bit `vpdpbusd` in two chains from [`Vnni::start`], the 16 lanes folded to eight
    /// (lane `k` of both halves covers elements `4k..4k + 4` of a chunk) by an exact add.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/VNNI and AVX2.
    #[inline(always)]
    unsafe fn paired_lanes(codes: &[__m512i; 4], pb: &PairedBlock) -> __m256i {
        // SAFETY: the caller's CPU contract; `PairedBlock`'s fields are 64-byte aligned.
        unsafe {
            let q = |f: usize| _mm512_load_si512(pb.q[f].as_ptr().cast());
            let mut even = _mm512_load_si512(pb.start.as_ptr().cast());
            let mut odd = _mm512_dpbusd_epi32(_mm512_setzero_si512(), codes[1], q(1));
            even = _mm512_dpbusd_epi32(even, codes[0], q(0));
            even = _mm512_dpbusd_epi32(even, codes[2], q(2));
            odd = _mm512_dpbusd_epi32(odd, codes[3], q(3));
            let s = _mm512_add_epi32(even, odd);
            _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s))
        }
    }

    /// `x.d` widened with F16C (exact, as `f16::to_f32`) into every lane.
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C.
    #[inline(always)]
    unsafe fn scale_lanes<B: TernaryBlock>(xb: &B) -> __m256 {
        // SAFETY: the caller's CPU contract.
        unsafe {
            _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                xb.scale().to_bits(),
            ))))
        }
    }

    /// Every weight row × every token (two or more), [`paired_lanes`] per block: each tile
    /// of [`PAIRED_TILE_TOKENS`] tokens is laid out as [`PairedBlock`]s (35 KB at
    /// K = 6912, in L2) and every group of [`PAIRED_ROWS`] rows takes it in turn, each
    /// weight block decoded once per tile and each activation load shared by the group.
    /// The rows of a call are read once per token tile, from L3 after the first.
    ///
    /// # Safety
    /// As [`gemv_evex`], with `y` n_tok rows of `nb` blocks and `out` (rows, n_tok).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn gemm_paired_evex<B: PairedCodes>(
        x: &[B],
        y: &[BlockQ8K],
        nb: usize,
        n_tok: usize,
        out: &mut [f32],
    ) {
        // Shape: x (rows, nb) in pairs of rows; y (n_tok, nb) in tiles of
        // PAIRED_TILE_TOKENS; out (rows, n_tok).
        let (full, rest) = tiles(n_tok, PAIRED_TILE_TOKENS);
        for t0 in full {
            // SAFETY: this function's contract.
            unsafe { token_tile::<B, PAIRED_ROWS, PAIRED_TILE_TOKENS>(x, y, nb, n_tok, t0, out) };
        }
        for t in rest {
            // SAFETY: this function's contract.
            unsafe { token_tile::<B, PAIRED_ROWS, 1>(x, y, nb, n_tok, t, out) };
        }
    }

    /// Tokens per tile of [`gemm_paired_evex`].
    const PAIRED_TILE_TOKENS: usize = 4;

    /// Rows per register tile of [`gemm_paired_evex`]: 3 rows × 4 tokens keep 12 code
    /// vectors and 12 accumulators in the 32 vector registers (6912 rows × K, 128 tokens,
    /// Zen 4, GMAC/s at K = 6912 / 2560: 1 × 8 tokens 71 / 109, 2 × 4 127 / 135, 2 × 6
    /// 129 / 141, 3 × 4 135 / 136, 4 × 2 124 / 122).
    const PAIRED_ROWS: usize = 3;

    /// Tokens `t0..t0 + N` (laid out as [`PairedBlock`]s once) against every row, `R` rows
    /// at a time: [`gemv_evex`] and [`gemm_paired_evex`].
    ///
    /// # Safety
    /// As [`gemm_paired_evex`], with `t0 + N <= n_tok`.
    #[inline(always)]
    unsafe fn token_tile<B: PairedCodes, const R: usize, const N: usize>(
        x: &[B],
        y: &[BlockQ8K],
        nb: usize,
        n_tok: usize,
        t0: usize,
        out: &mut [f32],
    ) {
        let ys = &y[t0 * nb..(t0 + N) * nb];
        // SAFETY: the caller's CPU contract (AVX2).
        let paired = unsafe { pair_blocks(ys) };
        let tile: [_; N] =
            std::array::from_fn(|i| (&paired[i * nb..(i + 1) * nb], &ys[i * nb..(i + 1) * nb]));
        // Shape: x (rows, nb) in groups of R rows; out (rows, n_tok), columns t0..t0 + N.
        let mut groups = x.chunks_exact(R * nb);
        let mut outs = out.chunks_exact_mut(R * n_tok);
        for (rows, o) in (&mut groups).zip(&mut outs) {
            // SAFETY: the caller's contract; every token has nb blocks.
            let sums = unsafe { rows_tokens::<B, R, N>(rows, tile) };
            for (o, s) in o.chunks_exact_mut(n_tok).zip(sums) {
                o[t0..t0 + N].copy_from_slice(&s);
            }
        }
        for (row, o) in groups
            .remainder()
            .chunks_exact(nb)
            .zip(outs.into_remainder().chunks_exact_mut(n_tok))
        {
            // SAFETY: as above.
            let [s] = unsafe { rows_tokens::<B, 1, N>(row, tile) };
            o[t0..t0 + N].copy_from_slice(&s);
        }
        PAIRED.set(paired);
    }

    /// `R` weight rows (`tile`: `R` rows of the tokens' block count, one run of memory
    /// read as one [`TileStream`]) against `N` tokens (paired blocks and their Q8_K blocks,
    /// for `d`): ggml's lane-wise FMA accumulation and final horizontal sum per (row, token).
    ///
    /// # Safety
    /// As [`gemv_evex`]; every token has `tile.len() / R` blocks.
    #[inline(always)]
    unsafe fn rows_tokens<B: PairedCodes, const R: usize, const N: usize>(
        tile: &[B],
        y: [(&[PairedBlock], &[BlockQ8K]); N],
    ) -> [[f32; N]; R] {
        let nb = tile.len() / R;
        // Every slice cut to nb blocks, so that indexing by block needs no checks.
        let x: [&[B]; R] = std::array::from_fn(|r| &tile[r * nb..(r + 1) * nb]);
        let y = y.map(|(p, q)| (&p[..nb], &q[..nb]));
        let stream = TileStream::new(tile, R * size_of::<B>());
        // SAFETY: the caller's CPU contract covers every intrinsic.
        unsafe {
            // Shape: acc (N tokens, R rows) of eight f32 lanes.
            let mut acc = [[_mm256_setzero_ps(); R]; N];
            for b in 0..nb {
                stream.prefetch(b);
                let mut codes = [[_mm512_setzero_si512(); 4]; R];
                let mut xd = [_mm256_setzero_ps(); R];
                for ((c, d), row) in codes.iter_mut().zip(&mut xd).zip(&x) {
                    *c = row[b].codes_paired();
                    *d = scale_lanes(&row[b]);
                }
                for (acc_t, (pt, yt)) in acc.iter_mut().zip(&y) {
                    let yd = _mm256_broadcast_ss(&yt[b].d);
                    for ((a, c), d) in acc_t.iter_mut().zip(&codes).zip(&xd) {
                        let lanes = paired_lanes(c, &pt[b]);
                        // `block_scale`: y.d · x.d, the same f32 product in every lane.
                        let d = _mm256_mul_ps(yd, *d);
                        *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), d, *a);
                    }
                }
            }
            let mut sums = [[0.0f32; N]; R];
            for (t, acc_t) in acc.into_iter().enumerate() {
                for (row, v) in sums.iter_mut().zip(lane_sums(acc_t)) {
                    row[t] = v;
                }
            }
            sums
        }
    }

    /// ggml's horizontal sum of each token's eight f32 lanes.
    ///
    /// # Safety
    /// The CPU must support AVX.
    #[inline(always)]
    unsafe fn lane_sums<const N: usize>(acc: [__m256; N]) -> [f32; N] {
        let mut sums = [0.0f32; N];
        for (sum, v) in sums.iter_mut().zip(acc) {
            let mut a = [0.0f32; 8];
            // SAFETY: the caller's CPU contract; `a` is 8 f32 = 32 writable bytes.
            unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
            *sum = hsum8_ggml(a);
        }
        sums
    }

    /// Weight rows that share each activation load in [`gemv_evex`] (6912x2560 in cache,
    /// Zen 4: one row 19.8 GB/s, two 24.1, four 25.2).
    const GEMV_ROWS: usize = 4;

    /// Largest `|bsum|` for which none of ggml's 16-bit lanes can wrap: a lane holds at
    /// most 6144 in magnitude before the subtraction (see [`block_lanes`]), and
    /// 6144 + 26623 = 32767. Our quantizer's bsums are at most 16 · 128 = 2048.
    const NO_WRAP_BSUM: u16 = 32767 - 6144;

    /// No 16-bit lane of any block of `y` can wrap, so [`Vnni`]'s 32-bit lanes equal
    /// ggml's: true for every activation our quantizer writes.
    pub(super) fn bsums_cannot_wrap(y: &[BlockQ8K]) -> bool {
        y.iter()
            .all(|b| b.bsums.iter().all(|s| s.unsigned_abs() <= NO_WRAP_BSUM))
    }

    /// How one block's eight ggml lanes are computed from its decoded codes, one chunk of
    /// 32 elements at a time: [`tile_lanes`] steps every token of a tile through chunk `c`
    /// before chunk `c + 1`, so that the tokens' chains overlap.
    trait Lanes {
        /// The accumulator before the first chunk of activation block `y`.
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA, F16C and the implementation's instructions.
        unsafe fn start(y: &BlockQ8K) -> __m256i;
        /// `acc` plus the products of one chunk of codes and activations.
        ///
        /// # Safety
        /// As [`Lanes::start`].
        unsafe fn step(acc: __m256i, codes: __m256i, q: __m256i) -> __m256i;
        /// The eight i32 lanes of `acc` after the last chunk of `y`.
        ///
        /// # Safety
        /// As [`Lanes::start`].
        unsafe fn finish(acc: __m256i, y: &BlockQ8K) -> __m256i;
    }

    /// ggml's own instructions (see [`block_lanes`]): `maddubs` into 16-bit lanes, the
    /// bsums subtracted there with its wrap, `madd` into 32-bit lanes. Exact for any bsums.
    struct Maddubs;

    impl Lanes for Maddubs {
        #[inline(always)]
        unsafe fn start(_: &BlockQ8K) -> __m256i {
            // SAFETY: the caller's CPU contract.
            unsafe { _mm256_setzero_si256() }
        }

        #[inline(always)]
        unsafe fn step(acc: __m256i, codes: __m256i, q: __m256i) -> __m256i {
            // Exact in 16 bits: a `maddubs` lane is at most 2 · 3 · 128 in magnitude and
            // eight chunks add up to 6144 (the 16-bit sums need no particular order).
            // SAFETY: the caller's CPU contract.
            unsafe { _mm256_add_epi16(acc, _mm256_maddubs_epi16(codes, q)) }
        }

        #[inline(always)]
        unsafe fn finish(acc: __m256i, y: &BlockQ8K) -> __m256i {
            // SAFETY: the caller's CPU contract; bsums is 16 i16 = 32 readable bytes and
            // `loadu` takes any alignment.
            unsafe {
                let bsums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
                _mm256_madd_epi16(_mm256_sub_epi16(acc, bsums), _mm256_set1_epi16(1))
            }
        }
    }

    /// `vpdpbusd`: code·q of four adjacent bytes straight into 32-bit lane `k` (elements
    /// `4k..4k + 4` of every chunk, the lane `madd` gives), starting from minus the lane's
    /// two bsums: ggml's lanes exactly when none of its 16-bit lanes could wrap
    /// ([`bsums_cannot_wrap`]). Needs AVX-512 VL and VNNI.
    struct Vnni;

    impl Lanes for Vnni {
        #[inline(always)]
        unsafe fn start(y: &BlockQ8K) -> __m256i {
            // SAFETY: the caller's CPU contract; bsums is 16 i16 = 32 readable bytes and
            // `loadu` takes any alignment.
            unsafe {
                let bsums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
                _mm256_madd_epi16(bsums, _mm256_set1_epi16(-1))
            }
        }

        #[inline(always)]
        unsafe fn step(acc: __m256i, codes: __m256i, q: __m256i) -> __m256i {
            // Exact: a lane holds at most 2 · 32767 + 8 · 4 · 3 · 128 in magnitude.
            // SAFETY: the caller's CPU contract (AVX-512 VL and VNNI).
            unsafe { _mm256_dpbusd_epi32(acc, codes, q) }
        }

        #[inline(always)]
        unsafe fn finish(acc: __m256i, _: &BlockQ8K) -> __m256i {
            acc
        }
    }

    /// Every weight row × every activation row, `TILE_TOKENS` activation rows per weight
    /// decode: `x` is rows × `nb` blocks, `y` is n_tok × `nb` blocks, `out` is (rows, n_tok).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `x.len() = out.len() / n_tok · nb`,
    /// `y.len() = n_tok · nb`, `nb > 0`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gemm<B: TernaryBlock, const TILE_TOKENS: usize>(
        order: SumOrder,
        x: &[B],
        y: &[BlockQ8K],
        nb: usize,
        n_tok: usize,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded contract.
        unsafe { gemm_by::<B, TILE_TOKENS, Maddubs>(order, x, y, nb, n_tok, out) }
    }

    /// [`gemm`] with the block lanes of `L`, inlined into each ISA's wrapper.
    ///
    /// # Safety
    /// As [`gemm`], and the CPU must support `L`'s instructions.
    #[inline(always)]
    unsafe fn gemm_by<B: TernaryBlock, const TILE_TOKENS: usize, L: Lanes>(
        order: SumOrder,
        x: &[B],
        y: &[BlockQ8K],
        nb: usize,
        n_tok: usize,
        out: &mut [f32],
    ) {
        let act = |t: usize| &y[t * nb..(t + 1) * nb];
        if order == SumOrder::GgmlGeneric {
            // Shape: x (rows, nb); y (n_tok, nb); out (rows, n_tok).
            for (row, o) in x.chunks_exact(nb).zip(out.chunks_exact_mut(n_tok)) {
                for (t, v) in o.iter_mut().enumerate() {
                    // SAFETY: this function's own precondition (AVX2, FMA, F16C).
                    *v = unsafe { row_generic(row, act(t)) };
                }
            }
            return;
        }
        // Shape: x (rows, nb) in tiles of ROW_TILE rows; y (n_tok, nb) in tiles of
        // TILE_TOKENS; out (rows, n_tok). A token tile's activations (8 tokens × 27 blocks
        // = 63 KB at K = 6912) are read once per row tile from L2, not once per row from
        // L3: a 128-token prompt's are 1 MB, more than L2, and two cores streaming them
        // per row from the shared L3 scaled badly.
        let (full, rest) = tiles(n_tok, TILE_TOKENS);
        for (rows, outs) in x
            .chunks(ROW_TILE * nb)
            .zip(out.chunks_mut(ROW_TILE * n_tok))
        {
            for t0 in full.clone() {
                for (row, o) in rows.chunks_exact(nb).zip(outs.chunks_exact_mut(n_tok)) {
                    // SAFETY: this function's own precondition (AVX2, FMA, F16C, `L`'s
                    // instructions); every activation row has nb blocks.
                    let sums = unsafe {
                        tile_lanes::<B, TILE_TOKENS, L>(row, std::array::from_fn(|i| act(t0 + i)))
                    };
                    o[t0..t0 + TILE_TOKENS].copy_from_slice(&sums);
                }
            }
            for t in rest.clone() {
                for (row, o) in rows.chunks_exact(nb).zip(outs.chunks_exact_mut(n_tok)) {
                    // SAFETY: as above.
                    o[t] = unsafe { tile_lanes::<B, 1, L>(row, [act(t)]) }[0];
                }
            }
        }
    }

    /// [`SumOrder::GgmlGeneric`]: the lanes are summed as integers per block (exact), so
    /// the float part is the scalar reference's, operation for operation.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn row_generic<B: TernaryBlock>(x: &[B], y: &[BlockQ8K]) -> f32 {
        let mut sumf = 0.0f32;
        for (xb, yb) in x.iter().zip(y) {
            // SAFETY: this function's own precondition (AVX2, FMA, F16C).
            let lanes = unsafe { block_lanes(xb.codes_avx2(), yb) };
            sumf += hsum_epi32(lanes) as f32 * block_scale(xb.scale(), yb.d);
        }
        sumf
    }

    /// [`SumOrder::GgmlAvx2`] for one weight row against `N` activation rows: each block's
    /// codes are decoded once; per activation row, ggml's lane-wise FMA accumulation and
    /// final horizontal sum.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and `L`'s instructions; every `y[t]` has
    /// `x.len()` blocks.
    #[inline(always)]
    unsafe fn tile_lanes<B: TernaryBlock, const N: usize, L: Lanes>(
        x: &[B],
        y: [&[BlockQ8K]; N],
    ) -> [f32; N] {
        // SAFETY: the caller's CPU contract (AVX2, FMA, F16C and `L`'s instructions) covers
        // every intrinsic; prefetches are hints that never fault; qs is 256 bytes = 8 chunks
        // of 32, and `loadu` takes any alignment.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); N];
            for (b, xb) in x.iter().enumerate() {
                // The weights stream from memory once: ask for them ahead of use.
                let ahead = std::ptr::from_ref(xb)
                    .cast::<i8>()
                    .wrapping_add(PREFETCH_BYTES);
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                let codes = xb.codes_avx2();
                // x.d widened with F16C (exact, as `f16::to_f32`) into every lane, once per
                // block.
                let xd = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                    xb.scale().to_bits(),
                ))));
                // Shape: N tokens' lanes, stepped chunk by chunk (8 chunks of 32 elements).
                let mut lanes = [_mm256_setzero_si256(); N];
                for (l, yt) in lanes.iter_mut().zip(&y) {
                    *l = L::start(&yt[b]);
                }
                for (c, &code) in codes.iter().enumerate() {
                    for (l, yt) in lanes.iter_mut().zip(&y) {
                        let q = yt[b].qs.as_ptr().cast::<__m256i>();
                        *l = L::step(*l, code, _mm256_loadu_si256(q.add(c)));
                    }
                }
                for ((a, l), yt) in acc.iter_mut().zip(lanes).zip(&y) {
                    let yb = &yt[b];
                    let lanes = L::finish(l, yb);
                    // `block_scale`: y.d · x.d, the same f32 product in every lane.
                    let d = _mm256_mul_ps(_mm256_broadcast_ss(&yb.d), xd);
                    *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), d, *a);
                }
            }
            let mut sums = [0.0f32; N];
            for (sum, v) in sums.iter_mut().zip(acc) {
                let mut a = [0.0f32; 8];
                // `a` is 8 f32 = 32 writable bytes.
                _mm256_storeu_ps(a.as_mut_ptr(), v);
                *sum = hsum8_ggml(a);
            }
            sums
        }
    }

    /// One block's eight i32 lane sums (see `block_lanes_scalar` for the lane layout).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn block_lanes(codes: [__m256i; 8], y: &BlockQ8K) -> __m256i {
        // (8 chunks, 32 bytes) of int8 activations.
        let q = y.qs.as_ptr().cast::<__m256i>();
        // SAFETY: this function's CPU contract (AVX2, FMA, F16C); qs is 256 bytes = 8 chunks
        // of 32, and `loadu` takes any alignment.
        unsafe {
            let mut acc = Maddubs::start(y);
            for (c, &code) in codes.iter().enumerate() {
                acc = Maddubs::step(acc, code, _mm256_loadu_si256(q.add(c)));
            }
            Maddubs::finish(acc, y)
        }
    }

    /// Sum of the eight i32 lanes (wrapping, like the scalar lane sum it replaces).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
        _mm_cvtsi128_si32(s)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::test_values::{any_magnitude, with_non_finite};
    use crate::tq1_0::BlockTQ1_0;
    use crate::tq2_0::BlockTQ2_0;

    fn quantize(x: &[f32]) -> Vec<BlockQ8K> {
        let mut y = vec![BlockQ8K::zeroed(); x.len() / QK_K];
        quantize_row_q8_k(x, &mut y).expect("whole blocks");
        y
    }

    #[test]
    fn known_answer_block() {
        // max|x| is x[1] = -4, so iscale = -127 / -4 = 31.75 (exact) and d = 1/31.75.
        //   x[0]  =  2   → 63.5   (tie)  → 64 (half to even)
        //   x[1]  = -4   → -127
        //   x[2]  =  1   → 31.75         → 32
        //   x[3]  =  0.5 → 15.875        → 16
        //   x[16] = -2   → -63.5  (tie)  → -64
        //   x[17] = 0.25 → 7.9375        → 8
        // bsums[0] = 64 - 127 + 32 + 16 = -15, bsums[1] = -64 + 8 = -56.
        let mut x = [0.0f32; QK_K];
        x[..4].copy_from_slice(&[2.0, -4.0, 1.0, 0.5]);
        x[16] = -2.0;
        x[17] = 0.25;
        let b = quantize(&x)[0];
        // 1/31.75 = 0.0314960629… → f32 0x3D010204.
        assert_eq!(b.d.to_bits(), 0x3D01_0204);
        let mut qs = [0i8; QK_K];
        qs[..4].copy_from_slice(&[64, -127, 32, 16]);
        qs[16] = -64;
        qs[17] = 8;
        assert_eq!(b.qs, qs);
        let mut bsums = [0i16; 16];
        bsums[0] = -15;
        bsums[1] = -56;
        assert_eq!(b.bsums, bsums);
    }

    #[test]
    fn first_of_equal_magnitudes_sets_the_sign() {
        // |3| == |-3|: `>` keeps x[0] = 3, so iscale = -127/3 < 0 and d = -3/127.
        let mut x = [0.0f32; QK_K];
        x[0] = 3.0;
        x[5] = -3.0;
        let b = quantize(&x)[0];
        assert_eq!((b.qs[0], b.qs[5]), (-127, 127));
        assert_eq!(b.d, 1.0 / (-127.0f32 / 3.0));
        // The first one found always quantizes to -127; the order decides d's sign.
        x[0] = -3.0;
        x[5] = 3.0;
        let b = quantize(&x)[0];
        assert_eq!((b.qs[0], b.qs[5]), (-127, 127));
        assert_eq!(b.d, 1.0 / (127.0f32 / 3.0));
    }

    #[test]
    fn zero_block_and_infinite_iscale_quantize_to_zero() {
        assert_eq!(quantize(&[0.0; QK_K])[0], BlockQ8K::zeroed());
        // |max| = 1e-38 < 127/f32::MAX: iscale = -inf, every q is 0, d = 1/-inf = -0.
        let mut x = [0.0f32; QK_K];
        x[7] = 1e-38;
        x[8] = -1e-45;
        let b = quantize(&x)[0];
        assert_eq!(b.qs, [0; QK_K]);
        assert_eq!(b.bsums, [0; 16]);
        assert_eq!(b.d.to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn length_errors() {
        let mut y = [BlockQ8K::zeroed(); 1];
        assert_eq!(
            quantize_row_q8_k(&[0.0; 100], &mut y),
            Err(KernelError::NotBlockMultiple {
                format: GgmlType::Q8_K,
                len: 100,
                block: QK_K
            })
        );
        assert!(matches!(
            quantize_row_q8_k(&[0.0; 512], &mut y),
            Err(KernelError::LengthMismatch {
                got: 1,
                expected: 2,
                ..
            })
        ));
        let mut out = [0.0f32; 255];
        assert!(dequantize_row_q8_k(&y, &mut out).is_err());
    }

    /// A Q8_K block with arbitrary int8 values (the full [-128, 127] range, beyond what the
    /// quantizer emits) and consistent bsums.
    fn any_q8k() -> impl Strategy<Value = BlockQ8K> {
        (prop::array::uniform32(any::<[i8; 8]>()), -2.0f32..2.0).prop_map(|(parts, d)| {
            let mut b = BlockQ8K::zeroed();
            b.d = d;
            for (chunk, part) in b.qs.chunks_exact_mut(8).zip(parts) {
                chunk.copy_from_slice(&part);
            }
            for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = g.iter().map(|&q| i16::from(q)).sum();
            }
            b
        })
    }

    /// Arbitrary bytes (any TQ1_0 byte, TQ2_0 code 3 included) as both ternary formats.
    fn any_blocks() -> impl Strategy<Value = (BlockTQ1_0, BlockTQ2_0)> {
        (prop::array::uniform32(any::<[u8; 4]>()), any::<[u8; 2]>()).prop_map(|(parts, d)| {
            let bytes: Vec<u8> = parts.iter().flatten().copied().collect();
            let mut t1 = BlockTQ1_0::zeroed();
            t1.qs.copy_from_slice(&bytes[..48]);
            t1.qh.copy_from_slice(&bytes[48..52]);
            t1.d = f16::from_bits(u16::from_le_bytes(d) & 0x7BFF);
            let mut t2 = BlockTQ2_0::zeroed();
            t2.qs.copy_from_slice(&bytes[..64]);
            t2.d = t1.d;
            (t1, t2)
        })
    }

    fn check_lanes<B: TernaryBlock>(x: &B, y: &BlockQ8K) -> Result<(), TestCaseError> {
        let codes = x.codes();
        let lanes = block_lanes_scalar(&codes, y);
        prop_assert_eq!(
            lanes.iter().sum::<i32>(),
            block_sumi_generic(&codes, y),
            "{:?}: the AVX2 lane decomposition must sum to the generic block sum",
            B::FORMAT
        );
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2.is_supported() {
            // SAFETY: Isa::Avx2.is_supported() checked above.
            let v = unsafe { avx2::block_lanes(x.codes_avx2(), y) };
            let mut simd = [0i32; 8];
            // SAFETY: Isa::Avx2.is_supported() checked above; `simd` is 32 writable bytes and
            // storeu has no alignment requirement.
            unsafe { std::arch::x86_64::_mm256_storeu_si256(simd.as_mut_ptr().cast(), v) };
            prop_assert_eq!(
                simd,
                lanes,
                "{:?}: AVX2 lanes differ from the scalar lanes",
                B::FORMAT
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn lanes_are_exact_for_any_bytes((t1, t2) in any_blocks(), y in any_q8k()) {
            check_lanes(&t1, &y)?;
            check_lanes(&t2, &y)?;
        }

        /// Activations whose `bsums` disagree with their codes (a block built by hand) make
        /// ggml's AVX2 i16 lanes wrap; in that order every ISA still gives the scalar
        /// reference's bits. (The generic order ignores `bsums`, so it is only defined for
        /// consistent ones, see `gemm_ternary`.) Bsums within ±26623 cannot wrap and take
        /// the AVX-512 path's 32-bit lanes; one beyond sends the call to ggml's instructions.
        #[test]
        fn hostile_bsums_keep_every_isa_on_the_oracle(
            (t1, t2) in any_blocks(),
            y in any_q8k(),
            bsums in prop_oneof![
                prop::array::uniform16(any::<i16>()),
                prop::array::uniform16(-26623i16..=26623),
                prop::array::uniform16(prop::sample::select(
                    vec![26623i16, -26623, 26624, -26624, i16::MAX, i16::MIN, 0],
                )),
            ],
            n_tok in prop::sample::select(vec![1usize, 9]),
        ) {
            let mut y = y;
            y.bsums = bsums;
            let ys = vec![y; n_tok];
            let order = SumOrder::GgmlAvx2;
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for &isa in Isa::available() {
                let (mut got1, mut want1) = (vec![0.0; n_tok], vec![0.0; n_tok]);
                gemm_ternary(isa, order, &[t1], &ys, n_tok, &mut got1).unwrap();
                gemm_ternary(Isa::Scalar, order, &[t1], &ys, n_tok, &mut want1).unwrap();
                let (mut got2, mut want2) = (vec![0.0; n_tok], vec![0.0; n_tok]);
                gemm_ternary(isa, order, &[t2], &ys, n_tok, &mut got2).unwrap();
                gemm_ternary(Isa::Scalar, order, &[t2], &ys, n_tok, &mut want2).unwrap();
                prop_assert_eq!(bits(&got1), bits(&want1), "TQ1_0 {:?}", isa);
                prop_assert_eq!(bits(&got2), bits(&want2), "TQ2_0 {:?}", isa);
            }
        }
    }

    #[test]
    fn extreme_lanes_at_the_wrap_edge_match_the_oracle() {
        // Every code 3 and every q at ±127/-128 fill ggml's 16-bit lanes to ±6096/-6144
        // before the bsums; bsums around ∓26623 then sit on both sides of the wrap (and of
        // the AVX-512 path's no-wrap bound): every ISA must give the scalar bits.
        let x = BlockTQ2_0 {
            qs: [0xFF; 64],
            d: half::f16::ONE,
        };
        for (q, edges) in [
            (127i8, [-26623i16, -26624, -26672, -26673]),
            (-128, [26623, 26624, 26625, 26700]),
        ] {
            for b in edges {
                let y = BlockQ8K {
                    d: 1.0,
                    qs: [q; QK_K],
                    bsums: [b; QK_K / 16],
                };
                let mut want = [0.0f32];
                gemm_ternary(Isa::Scalar, SumOrder::GgmlAvx2, &[x], &[y], 1, &mut want).unwrap();
                for &isa in Isa::available() {
                    let mut got = [0.0f32];
                    gemm_ternary(isa, SumOrder::GgmlAvx2, &[x], &[y], 1, &mut got).unwrap();
                    assert_eq!(
                        got[0].to_bits(),
                        want[0].to_bits(),
                        "q {q}, bsums {b}, {isa:?}"
                    );
                }
            }
        }
    }

    fn quantize_fma(x: &[f32]) -> Vec<BlockQ8K> {
        let mut y = vec![BlockQ8K::zeroed(); x.len() / QK_K];
        quantize_row_q8_k_fma(x, &mut y).expect("whole blocks");
        y
    }

    #[test]
    fn fma_contraction_rounds_the_exact_product() {
        // max = -60000: iscale = f32(127/60000) = 0.00211666664…, slightly below 127/60000.
        //   x = -30000: exact product -63.4999992 → -63 (FMA); f32 product -63.5 (tie) → -64.
        //   x = 2: exact product 0.0042333… → 0 both ways.
        let mut x = [0.0f32; QK_K];
        x[0] = -60000.0;
        x[1] = -30000.0;
        x[2] = 2.0;
        let (r, f) = (quantize(&x)[0], quantize_fma(&x)[0]);
        assert_eq!((r.qs[0], r.qs[1], r.qs[2]), (-127, -64, 0));
        assert_eq!((f.qs[0], f.qs[1], f.qs[2]), (-127, -63, 0));
        assert_eq!(f.d.to_bits(), r.d.to_bits());
        assert_eq!((r.bsums[0], f.bsums[0]), (-191, -190));
        // Exact ties (iscale = -127/-127 = 1) round to even both ways.
        x[0] = -127.0;
        x[1] = 63.5;
        x[2] = -0.5;
        let (r, f) = (quantize(&x)[0], quantize_fma(&x)[0]);
        assert_eq!((r.qs[1], r.qs[2]), (64, 0));
        assert_eq!(r, f);
    }

    #[test]
    fn fma_variant_keeps_zero_and_non_finite_conventions() {
        assert_eq!(quantize_fma(&[0.0; QK_K])[0], BlockQ8K::zeroed());
        // A subnormal max makes iscale infinite: every quant is 0, as in the reference.
        let mut x = [0.0f32; QK_K];
        x[0] = f32::from_bits(1);
        x[1] = -f32::from_bits(1);
        assert_eq!(quantize_fma(&x), quantize(&x));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The two quantizers share scales and differ only by one step, and only where the
        /// f32 product `iscale·x` is a .5 tie that the exact product is not.
        #[test]
        fn fma_variant_differs_only_at_rounded_ties(
            x in prop::collection::vec(prop_oneof![
                -4.0f32..4.0,
                (-254i32..=254).prop_map(|k| k as f32 * 236.22047),
            ], QK_K)
        ) {
            let (r, f) = (quantize(&x)[0], quantize_fma(&x)[0]);
            prop_assert_eq!(r.d.to_bits(), f.d.to_bits());
            for (i, (&a, &b)) in r.qs.iter().zip(&f.qs).enumerate() {
                if a != b {
                    let max = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    let p = (-127.0 / max) * x[i];
                    prop_assert!((i16::from(a) - i16::from(b)).abs() == 1, "element {}", i);
                    prop_assert_eq!(p.fract().abs(), 0.5, "element {}: f32 product {}", i, p);
                }
            }
            for (j, g) in f.qs.chunks_exact(16).enumerate() {
                prop_assert_eq!(f.bsums[j], g.iter().map(|&q| i16::from(q)).sum::<i16>());
            }
        }
    }

    /// `n` blocks of one mix of values, with up to three infinities or NaNs put in: ordinary
    /// values with .5 ties of `iscale·x` (multiples of 30000/127 against a max of 60000)
    /// and equal magnitudes of both signs (two rows in three), or any magnitude.
    fn any_row(n: usize) -> impl Strategy<Value = Vec<f32>> {
        let values = |mix: u8| match mix {
            0 | 1 => prop_oneof![
                6 => -4.0f32..4.0,
                2 => (-254i32..=254).prop_map(|k| k as f32 * 236.22047),
                1 => prop::sample::select(vec![60000.0, -60000.0, 4.0, -4.0]),
            ]
            .boxed(),
            _ => any_magnitude(),
        };
        with_non_finite(
            (0..3u8).prop_flat_map(move |mix| prop::collection::vec(values(mix), n * QK_K)),
            3,
        )
    }

    proptest! {
        /// Every ISA writes the scalar oracle's blocks (scale bits, quants, bsums) in both
        /// roundings, whatever the values; blocks of zeros and NaNs too.
        #[test]
        fn every_isa_matches_the_scalar_quantizer(
            x in (1usize..=4).prop_flat_map(any_row),
            zeroed_block in any::<bool>(),
        ) {
            let mut x = x;
            if zeroed_block {
                x[..QK_K].iter_mut().enumerate().for_each(|(i, v)| {
                    *v = if i % 7 == 0 { f32::NAN } else { 0.0 };
                });
            }
            for rounding in [Rounding::Product, Rounding::Fma] {
                let mut want = vec![BlockQ8K::zeroed(); x.len() / QK_K];
                quantize_row_q8_k_with(Isa::Scalar, rounding, &x, &mut want).unwrap();
                for &isa in Isa::available() {
                    let mut got = vec![BlockQ8K::zeroed(); x.len() / QK_K];
                    quantize_row_q8_k_with(isa, rounding, &x, &mut got).unwrap();
                    prop_assert_eq!(
                        bytemuck::cast_slice::<_, u8>(&got),
                        bytemuck::cast_slice::<_, u8>(&want),
                        "{:?} {:?}", isa, rounding
                    );
                }
            }
        }
    }
}
