//! IQ2_BN: ik_llama.cpp's 2-bit ternary rows with an f32 row scale; multiplied against Q8_K64.
//!
//! Facts from ik_llama.cpp (`ggml-common.h`, `iqk/iqk_quantize.cpp`, `iqk/iqk_gemm_1bit.cpp`):
//! - A row of K weights (K % 64 == 0) is an f32 scale `d` = max|w| of the row, then K/64
//!   blocks of 16 bytes: row size 4 + K/4 bytes.
//! - Block byte j (j < 16) holds elements j, j+16, j+32, j+48 in bits 1:0, 3:2, 5:4, 7:6.
//!   Codes {0, 1, 2} = {-1, 0, +1}; the weight is `d · (code - 1)`.
//! - Quantization: `code = |x| < 0.5·max ? 1 : x < 0 ? 0 : 2`, with max and the threshold in
//!   f32. An all-zero row has max 0, so no |x| is below the threshold and every code is 2
//!   (harmless: d = 0).
//! - The matmul (`mul_mat_iq2bn_q8_K64`, the AVX2 build this machine runs) needs K >= 512
//!   because Q8_K64 does. Per Q8_K64 lane group g it forms the integer `sumi_g = Σ code·q`,
//!   then `a_g = fmsub(d8_g, (float)sumi_g, d8_g·Σq_g)` (one rounding), and returns
//!   `d · ((a_0 + a_2) + (a_1 + a_3))` (`hsum_float_4`). [`vec_dot_iq2_bn_q8_k64_generic`]
//!   computes that same float expression in that order; the AVX2 kernel only replaces the
//!   integer part, so the two agree bit for bit.
//!
//! Where ik's other code paths differ (not reproduced here):
//! - ik's portable `vec_dot_iq2_bn_q8_K64` (only reached if `iqk_mul_mat` declines) is stale:
//!   it reads the quants at header offset 16 bytes instead of 32, does not skip the f32 row
//!   scale nor multiply by it, and combines the groups as
//!   `Σ_j d_j·(sum_j0 + 0.25·sum_j1 + 0.0625·sum_j2 + 0.015625·sum_j3 - Σq_j)` accumulated
//!   left to right (partly in double), not the fmsub + pairwise sum above.
//! - The AVX2 gemm's odd-block tail (K/64 odd, e.g. K = 576) multiplies the last block's
//!   second half (elements 32..64) by the activations of its first half
//!   (`load_quants(iy, i/2, 0)` twice); the AVX512-VNNI path uses the right ones. We compute
//!   the correct sum, so for K/64 odd ik's default (AVX2, non-native) build disagrees with
//!   its own VNNI build and with us; for K/64 even all three agree bit for bit.
//! - `dequantize_row_iq2_bn` in ik returns `code - 1` without the row scale (its callers
//!   pass the blocks only); ours applies the scale.

use crate::cpu::Isa;
use crate::gemm::{tile_rows, GemmShape, RowOrder, RowRecord, TILE_ROWS};
use crate::q8_k64::{Q8K64Header, Q8K64Row, Q8_K64_GROUPS, Q8_K64_MIN_K};
use crate::KernelError;
use bitnet_gguf::GgmlType;

/// Weights per block (`QK_IQ2BN`).
pub const QK_IQ2_BN: usize = 64;

/// Bytes of the f32 scale at the start of every row.
pub const IQ2_BN_ROW_PREFIX_BYTES: usize = 4;

/// One IQ2_BN block: 64 weights, 2 bits per weight (plus the row's f32 scale).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2Bn {
    /// Byte j: elements j, j+16, j+32, j+48 in bits 1:0, 3:2, 5:4, 7:6.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockIq2Bn>() == 16);

/// Checks that `k` is a whole number of blocks.
fn check_block_multiple(k: usize) -> Result<(), KernelError> {
    if !k.is_multiple_of(QK_IQ2_BN) {
        return Err(KernelError::NotBlockMultiple {
            format: GgmlType::IQ2_BN,
            len: k,
            block: QK_IQ2_BN,
        });
    }
    Ok(())
}

/// Bytes of one row of `k` weights: 4 + k/4.
pub fn iq2_bn_row_size(k: usize) -> Result<usize, KernelError> {
    check_block_multiple(k)?;
    Ok(IQ2_BN_ROW_PREFIX_BYTES + k / 4)
}

/// Quantizes one row to IQ2_BN exactly as ik's `quantize_row_iq2_bn_ref` does; `out` must be
/// `4 + x.len()/4` bytes.
pub fn quantize_row_iq2_bn_ref(x: &[f32], out: &mut [u8]) -> Result<(), KernelError> {
    let size = iq2_bn_row_size(x.len())?;
    if out.len() != size {
        return Err(KernelError::LengthMismatch {
            format: GgmlType::IQ2_BN,
            what: "row bytes",
            got: out.len(),
            expected: size,
        });
    }
    // `std::max(max, fabsf(x))` keeps `max` when the comparison fails, so NaN is skipped.
    let max = x
        .iter()
        .fold(0f32, |m, &v| if m < v.abs() { v.abs() } else { m });
    let thresh = 0.5 * max;
    let (head, blocks) = out.split_at_mut(IQ2_BN_ROW_PREFIX_BYTES);
    head.copy_from_slice(&max.to_le_bytes());
    // (K/64) blocks × 64 weights → 16 bytes each.
    for (xb, qb) in x.chunks_exact(QK_IQ2_BN).zip(blocks.chunks_exact_mut(16)) {
        qb.fill(0);
        for (e, &v) in xb.iter().enumerate() {
            let c: u8 = if v.abs() < thresh {
                1
            } else if v < 0.0 {
                0
            } else {
                2
            };
            qb[e % 16] |= c << (2 * (e / 16));
        }
    }
    Ok(())
}

/// One IQ2_BN row: its scale and blocks. Zero-copy over the row's bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Iq2BnRow<'a> {
    d: f32,
    blocks: &'a [BlockIq2Bn],
}

impl<'a> Iq2BnRow<'a> {
    /// Parses a row of `k` weights; `bytes.len()` must be exactly `4 + k/4`.
    pub fn from_bytes(bytes: &'a [u8], k: usize) -> Result<Self, KernelError> {
        let size = iq2_bn_row_size(k)?;
        if bytes.len() != size {
            return Err(KernelError::LengthMismatch {
                format: GgmlType::IQ2_BN,
                what: "row bytes",
                got: bytes.len(),
                expected: size,
            });
        }
        let (head, codes) = bytes.split_at(IQ2_BN_ROW_PREFIX_BYTES);
        let d = f32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        // Blocks are byte arrays (alignment 1) and `codes.len()` = 16 · k/64.
        let blocks =
            bytemuck::try_cast_slice(codes).map_err(|_| KernelError::NotBlockMultiple {
                format: GgmlType::IQ2_BN,
                len: codes.len(),
                block: std::mem::size_of::<BlockIq2Bn>(),
            })?;
        Ok(Iq2BnRow { d, blocks })
    }

    /// A row from its parts (e.g. blocks obtained elsewhere).
    pub fn new(d: f32, blocks: &'a [BlockIq2Bn]) -> Self {
        Iq2BnRow { d, blocks }
    }

    /// The row scale.
    pub fn d(&self) -> f32 {
        self.d
    }

    /// The row's blocks.
    pub fn blocks(&self) -> &'a [BlockIq2Bn] {
        self.blocks
    }

    /// Number of weights K.
    pub fn k(&self) -> usize {
        self.blocks.len() * QK_IQ2_BN
    }
}

/// Expands a row to f32 as `d · (code - 1)`; `out.len()` must equal the row's K.
pub fn dequantize_row_iq2_bn(row: &Iq2BnRow<'_>, out: &mut [f32]) -> Result<(), KernelError> {
    if out.len() != row.k() {
        return Err(KernelError::LengthMismatch {
            format: GgmlType::IQ2_BN,
            what: "output",
            got: out.len(),
            expected: row.k(),
        });
    }
    for (b, ob) in row.blocks.iter().zip(out.chunks_exact_mut(QK_IQ2_BN)) {
        for (e, o) in ob.iter_mut().enumerate() {
            let c = (b.qs[e % 16] >> (2 * (e / 16))) & 3;
            *o = row.d * (f32::from(c) - 1.0);
        }
    }
    Ok(())
}

/// Validates a weight row against an activation row before a dot product.
fn check_dot(w: &Iq2BnRow<'_>, a: &Q8K64Row<'_>) -> Result<(), KernelError> {
    if w.k() < Q8_K64_MIN_K {
        return Err(KernelError::Unsupported {
            format: GgmlType::IQ2_BN,
            reason: "matmul rows need K >= 512 (ik_llama.cpp's Q8_K64 asserts it)",
        });
    }
    if w.k() != a.k() {
        return Err(KernelError::LengthMismatch {
            format: GgmlType::IQ2_BN,
            what: "activations",
            got: a.k(),
            expected: w.k(),
        });
    }
    Ok(())
}

/// ik's float epilogue from the per-group integer sums Σcode·q:
/// `d · hsum4(fmsub(d8, sumi, d8·Σq))` with hsum4 = (a0 + a2) + (a1 + a3).
#[inline]
fn finish(d: f32, h: &Q8K64Header, sumi: [i32; Q8_K64_GROUPS]) -> f32 {
    // `_mm_fmsub_ps(a, b, c)` is a·b - c rounded once, i.e. fma(a, b, -c).
    let a: [f32; Q8_K64_GROUPS] =
        std::array::from_fn(|g| h.d[g].mul_add(sumi[g] as f32, -h.dsum[g]));
    d * ((a[0] + a[2]) + (a[1] + a[3]))
}

/// Scalar per-group Σcode·q (codes unsigned, 0..3) of one row's blocks.
fn group_sums_generic<'a>(
    w: impl IntoIterator<Item = &'a BlockIq2Bn>,
    q: &[i8],
) -> [i32; Q8_K64_GROUPS] {
    let mut sums = [0i32; Q8_K64_GROUPS];
    // (K/64) blocks × 64 activations; byte j covers elements j + 16k, all in group j / 4.
    for (b, qb) in w.into_iter().zip(q.chunks_exact(QK_IQ2_BN)) {
        for (j, &byte) in b.qs.iter().enumerate() {
            let t: i32 = (0..4)
                .map(|k| i32::from((byte >> (2 * k)) & 3) * i32::from(qb[16 * k + j]))
                .sum();
            // Wrapping, as the SIMD i32 lanes do (unreachable below K ≈ 5.6M).
            sums[j / 4] = sums[j / 4].wrapping_add(t);
        }
    }
    sums
}

/// Scalar reference of ik's AVX2 `mul_mat_iq2bn_q8_K64` for one row pair: the final f32.
pub fn vec_dot_iq2_bn_q8_k64_generic(
    w: &Iq2BnRow<'_>,
    a: &Q8K64Row<'_>,
) -> Result<f32, KernelError> {
    check_dot(w, a)?;
    Ok(finish(
        w.d,
        a.header(),
        group_sums_generic(w.blocks, a.qs()),
    ))
}

/// [`vec_dot_iq2_bn_q8_k64_generic`] on the given ISA (scalar if `isa` is not supported here).
/// Every ISA returns the same bits.
pub fn vec_dot_iq2_bn_q8_k64_with(
    isa: Isa,
    w: &Iq2BnRow<'_>,
    a: &Q8K64Row<'_>,
) -> Result<f32, KernelError> {
    check_dot(w, a)?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        _ if isa.runs_avx2() => {
            // 64 activations per block, viewed as 2 × 32 for the vector loads.
            let qv: &[[[i8; 32]; 2]] = bytemuck::cast_slice(a.qs());
            // SAFETY: `isa.runs_avx2()` (AVX2, FMA, F16C detected) was checked by
            // the match guard; `qv` has one entry per block of `w` (check_dot).
            Ok(unsafe { avx2::vec_dot(w.d, a.header(), w.blocks, qv) })
        }
        _ => vec_dot_iq2_bn_q8_k64_generic(w, a),
    }
}

/// Dot product of an IQ2_BN row with a Q8_K64 row, on the fastest ISA available.
pub fn vec_dot_iq2_bn_q8_k64(w: &Iq2BnRow<'_>, a: &Q8K64Row<'_>) -> Result<f32, KernelError> {
    vec_dot_iq2_bn_q8_k64_with(Isa::best(), w, a)
}

/// One row of `k` weights as a record of the tiled layout: the f32 scale, then the
/// 16-byte blocks.
fn record(k: usize) -> Result<RowRecord, KernelError> {
    Ok(RowRecord {
        header: IQ2_BN_ROW_PREFIX_BYTES,
        block: std::mem::size_of::<BlockIq2Bn>(),
        row_size: iq2_bn_row_size(k)?,
    })
}

/// Whether [`RowOrder::Tiled`] rows multiply faster than file-layout rows on this CPU: the
/// AVX-512 VNNI decode kernel streams a tile's four rows as one run of memory (2B-4T
/// matrices, Zen 4, one token: see [`gemm_iq2_bn_q8_k64_with`]); the AVX2 kernels run
/// tiled rows through the scalar path, so elsewhere the file layout stays.
pub(crate) fn iq2_bn_tiled_is_faster() -> bool {
    Isa::best() == Isa::Avx512Vnni
}

/// Lays out whole IQ2_BN rows of `k` weights (file layout in `src`) in
/// `crate::gemm::tile_rows`'s tiles: the four rows' scales, then the rows' block 0, block
/// 1, and so on. `dst` is as long as `src`.
pub fn iq2_bn_tile_rows(src: &[u8], k: usize, dst: &mut [u8]) -> Result<(), KernelError> {
    let rec = record(k)?;
    if !src.len().is_multiple_of(rec.row_size) || dst.len() != src.len() {
        return Err(KernelError::LengthMismatch {
            format: GgmlType::IQ2_BN,
            what: "tiled rows (whole rows, as long as the source)",
            got: dst.len(),
            expected: src.len(),
        });
    }
    tile_rows(src, rec, dst);
    Ok(())
}

/// `out[r · n_tok + t]` = [`vec_dot_iq2_bn_q8_k64_generic`] of weight row `r` and
/// activation row `t`, bit for bit (see [`crate::gemm`]): `w` is `out.len() / n_tok` rows
/// (`4 + k/4` bytes each) stored in `order`, `q` holds `n_tok = heads.len()` rows of `k`
/// quants with their headers.
pub fn gemm_iq2_bn_q8_k64_with(
    isa: Isa,
    w: &[u8],
    order: RowOrder,
    q: &[i8],
    heads: &[Q8K64Header],
    out: &mut [f32],
) -> Result<(), KernelError> {
    let n_tok = heads.len();
    let k = q.len().checked_div(n_tok).unwrap_or(0);
    crate::q8_k64::check_row_len(k)?;
    let row_size = iq2_bn_row_size(k)?;
    if !w.len().is_multiple_of(row_size) {
        return Err(KernelError::NotBlockMultiple {
            format: GgmlType::IQ2_BN,
            len: w.len(),
            block: row_size,
        });
    }
    // Rows are counted in whole row records here.
    let shape = GemmShape::new(
        GgmlType::IQ2_BN,
        w.len() / row_size,
        k,
        q.len(),
        out.len(),
        n_tok,
    )?;
    if order == RowOrder::Tiled {
        // Whole tiles, then the rest in file layout.
        let tiled = shape.rows / TILE_ROWS * TILE_ROWS;
        let (tiles, rest) = w.split_at(tiled * row_size);
        let (out_tiles, out_rest) = out.split_at_mut(tiled * n_tok);
        let rec = record(k)?;
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni if isa.is_supported() => {
                let qv: &[[i8; 64]] = bytemuck::cast_slice(q);
                // SAFETY: `Isa::Avx512Vnni.is_supported()` checked by the match guard; the
                // checks above give whole tiles of TILE_ROWS records of `rec`, n_tok · k/64
                // activation blocks and (rows, n_tok) outputs.
                unsafe { avx512::gemm_tiled(tiles, rec, qv, heads, out_tiles) };
            }
            _ => {
                let rows = tiled;
                for (r, o) in out_tiles.chunks_exact_mut(n_tok).enumerate() {
                    let at = |j| rec.byte_at(RowOrder::Tiled, rows, r, j);
                    let d = f32::from_le_bytes(std::array::from_fn(|j| tiles[at(j)]));
                    let blocks = || {
                        (0..k / QK_IQ2_BN).map(|b| {
                            let start = at(IQ2_BN_ROW_PREFIX_BYTES + 16 * b);
                            bytemuck::from_bytes::<BlockIq2Bn>(&tiles[start..start + 16])
                        })
                    };
                    for ((qt, h), y) in q.chunks_exact(k).zip(heads).zip(o) {
                        *y = finish(d, h, group_sums_generic(blocks(), qt));
                    }
                }
            }
        }
        return gemm_iq2_bn_q8_k64_with(isa, rest, RowOrder::RowMajor, q, heads, out_rest);
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // One token (decode) stays on the AVX2 kernel: its single sequential weight stream
        // measured faster in the whole model (2B-4T shape, Zen 4, 1 thread: 13.8 against
        // 11.0 tok/s with the 4-row AVX-512 tiles).
        Isa::Avx512Vnni if isa.is_supported() && n_tok > 1 => {
            let qv: &[[i8; 64]] = bytemuck::cast_slice(q);
            // SAFETY: `Isa::Avx512Vnni.is_supported()` checked by the match guard; the
            // checks above give whole rows of `row_size` bytes, n_tok · k/64 activation
            // blocks and (rows, n_tok) outputs.
            unsafe { avx512::gemm(w, row_size, qv, heads, out) };
        }
        #[cfg(target_arch = "x86_64")]
        _ if isa.runs_avx2() => {
            let qv: &[[[i8; 32]; 2]] = bytemuck::cast_slice(q);
            // SAFETY: `isa.runs_avx2()` (AVX2, FMA, F16C) checked by the match guard; the checks
            // above give whole rows of `row_size` bytes, n_tok · k/64 activation blocks and
            // (rows, n_tok) outputs.
            unsafe { avx2::gemm(w, row_size, qv, heads, out) };
        }
        _ => {
            for (wr, o) in w.chunks_exact(row_size).zip(out.chunks_exact_mut(n_tok)) {
                let row = Iq2BnRow::from_bytes(wr, k)?;
                for ((qt, h), y) in q.chunks_exact(k).zip(heads).zip(o) {
                    *y = vec_dot_iq2_bn_q8_k64_generic(&row, &Q8K64Row::new(*h, qt)?)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{finish, BlockIq2Bn, IQ2_BN_ROW_PREFIX_BYTES};
    use crate::gemm::{tiles, PREFETCH_BYTES, TILE_TOKENS};
    use crate::i2_s::avx2::load_i8x32;
    use crate::q8_k64::{Q8K64Header, Q8_K64_GROUPS};
    use std::arch::x86_64::*;

    /// Blocks summed in 16-bit lanes before widening: each block adds two maddubs results
    /// per i16 lane, each at most 2 · 3 · 128 = 768 in magnitude (codes masked to 2 bits,
    /// |q| <= 128), so 16 blocks reach at most 32 · 768 = 24576 < 32767: exact.
    const I16_RUN_BLOCKS: usize = 16;

    /// Loads a block's 16 bytes into both 128-bit halves.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn broadcast_block(b: &BlockIq2Bn) -> __m256i {
        // SAFETY: `b.qs` is 16 readable bytes and `loadu` accepts any alignment.
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(b.qs.as_ptr().cast()) })
    }

    /// The dot product: AVX2 group sums, then the shared epilogue inlined here so that its
    /// `mul_add` compiles to `vfmadd` (outside an FMA context it is a libm call).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C (`Isa::Avx2.is_supported()`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot(
        d: f32,
        h: &Q8K64Header,
        w: &[BlockIq2Bn],
        q: &[[[i8; 32]; 2]],
    ) -> f32 {
        finish(d, h, group_sums(w, [q])[0])
    }

    /// Every row × every token: `w` is whole rows of `row_size` bytes (f32 scale, then
    /// blocks), `q` is `heads.len()` activation rows of `(row_size - 4) / 16` blocks, `out`
    /// is (rows, n_tok).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; the lengths are consistent as stated.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gemm(
        w: &[u8],
        row_size: usize,
        q: &[[[i8; 32]; 2]],
        heads: &[Q8K64Header],
        out: &mut [f32],
    ) {
        let n_tok = heads.len();
        let nb = (row_size - IQ2_BN_ROW_PREFIX_BYTES) / 16;
        // Shape: w (rows, row_size) bytes; q (n_tok, nb) blocks; out (rows, n_tok).
        for (wr, o) in w.chunks_exact(row_size).zip(out.chunks_exact_mut(n_tok)) {
            let (head, codes) = wr.split_at(IQ2_BN_ROW_PREFIX_BYTES);
            let d = f32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let blocks: &[BlockIq2Bn] = bytemuck::cast_slice(codes);
            let act = |t: usize| &q[t * nb..(t + 1) * nb];
            let (full, rest) = tiles(n_tok, TILE_TOKENS);
            for t0 in full {
                let sums = group_sums::<TILE_TOKENS>(blocks, std::array::from_fn(|i| act(t0 + i)));
                for (i, s) in sums.into_iter().enumerate() {
                    o[t0 + i] = finish(d, &heads[t0 + i], s);
                }
            }
            for t in rest {
                o[t] = finish(d, &heads[t], group_sums(blocks, [act(t)])[0]);
            }
        }
    }

    /// Per-group Σcode·q of one weight row against `N` activation rows. The block's bytes
    /// are broadcast to both halves and shifted per 64-bit lane (0 | 2, then 4 | 6), so
    /// after masking to 2 bits the two vectors hold elements 0..16 | 16..32 and 32..48 |
    /// 48..64 in order — matching the activations' natural order without a cross-lane
    /// shuffle — decoded once for all `N` rows. Byte p of a 32-element vector is element
    /// p (mod 32), so the i32 lane m produced by `madd` covers group m % 4, and adding the
    /// two 128-bit halves leaves lane g = group g.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn group_sums<const N: usize>(
        w: &[BlockIq2Bn],
        q: [&[[[i8; 32]; 2]]; N],
    ) -> [[i32; Q8_K64_GROUPS]; N] {
        let mask = _mm256_set1_epi8(3);
        let ones = _mm256_set1_epi16(1);
        let shift_lo = _mm256_set_epi64x(2, 2, 0, 0);
        let shift_hi = _mm256_set_epi64x(6, 6, 4, 4);
        let mut acc32 = [_mm256_setzero_si256(); N];
        for start in (0..w.len()).step_by(I16_RUN_BLOCKS) {
            let end = (start + I16_RUN_BLOCKS).min(w.len());
            let mut acc16 = [_mm256_setzero_si256(); N];
            for (i, b) in w[start..end].iter().enumerate() {
                // The weights stream from memory once: ask for them ahead of use (a hint:
                // it never faults, whatever the address).
                _mm_prefetch::<_MM_HINT_T0>(b.qs.as_ptr().wrapping_add(PREFETCH_BYTES).cast());
                let bits = broadcast_block(b);
                let c0 = _mm256_and_si256(_mm256_srlv_epi64(bits, shift_lo), mask);
                let c1 = _mm256_and_si256(_mm256_srlv_epi64(bits, shift_hi), mask);
                for (acc, qt) in acc16.iter_mut().zip(&q) {
                    let y = &qt[start + i];
                    let p = _mm256_add_epi16(
                        _mm256_maddubs_epi16(c0, load_i8x32(&y[0])),
                        _mm256_maddubs_epi16(c1, load_i8x32(&y[1])),
                    );
                    *acc = _mm256_add_epi16(*acc, p);
                }
            }
            for (a32, a16) in acc32.iter_mut().zip(acc16) {
                *a32 = _mm256_add_epi32(*a32, _mm256_madd_epi16(a16, ones));
            }
        }
        acc32.map(|v| {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            [
                _mm_extract_epi32::<0>(s),
                _mm_extract_epi32::<1>(s),
                _mm_extract_epi32::<2>(s),
                _mm_extract_epi32::<3>(s),
            ]
        })
    }
}

/// AVX-512 VNNI: a whole 64-weight block per vector, `vpdpbusd` (u8 code × i8 quant, four
/// products per i32 lane) instead of `maddubs` and `madd`. Integer sums are exact in any
/// order, so the group sums — and, through the same epilogue, the f32 result — equal the
/// scalar oracle's bit for bit. For prompts (two tokens or more): each tile of rows is
/// decoded once into an L1 buffer, then multiplied by tiles of tokens with rows × tokens
/// accumulators in registers, so each activation vector is loaded once per row tile. One
/// token runs the AVX2 kernel on file-layout rows (its single stream measured faster than
/// four rows read side by side), and [`avx512::gemm_tiled`]'s streaming kernel on tiled
/// rows.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{finish, BlockIq2Bn, IQ2_BN_ROW_PREFIX_BYTES};
    use crate::gemm::{tiles, RowRecord, TILE_ROWS};
    use crate::q8_k64::{Q8K64Header, Q8_K64_GROUPS};
    use std::arch::x86_64::*;

    /// Tokens per register tile: 4 × 4 i32 accumulators, 4 decoded blocks, 4 activation
    /// vectors and two constants fit the 32 zmm registers.
    const TILE_TOKENS: usize = 4;

    /// Every row × every token: `w` is whole rows of `row_size` bytes (f32 scale, then
    /// blocks), `q` is `heads.len()` activation rows of `(row_size - 4) / 16` blocks, `out`
    /// is (rows, n_tok).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C
    /// (`Isa::Avx512Vnni.is_supported()`); the lengths are consistent as stated.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn gemm(
        w: &[u8],
        row_size: usize,
        q: &[[i8; 64]],
        heads: &[Q8K64Header],
        out: &mut [f32],
    ) {
        let nb = (row_size - IQ2_BN_ROW_PREFIX_BYTES) / 16;
        let n_rows = w.len() / row_size;
        // Row r: (scale, blocks).
        let row = |r: usize| {
            let wr = &w[r * row_size..(r + 1) * row_size];
            let (head, codes) = wr.split_at(IQ2_BN_ROW_PREFIX_BYTES);
            let d = f32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            (d, bytemuck::cast_slice::<u8, BlockIq2Bn>(codes))
        };
        // A row tile's codes are decoded once into this buffer (TILE_ROWS × nb × 64 bytes:
        // 10 KiB at K = 2560, in L1) for all its token tiles.
        let mut decoded = vec![[0u8; 64]; TILE_ROWS * nb];
        // Shape: w (rows, row_size) bytes; q (n_tok, nb) blocks; out (rows, n_tok).
        let (full_rows, rest_rows) = tiles(n_rows, TILE_ROWS);
        for r0 in full_rows {
            let rows: [(f32, &[BlockIq2Bn]); TILE_ROWS] = std::array::from_fn(|i| row(r0 + i));
            let d = rows.map(|(d, _)| d);
            decode_rows(&mut decoded, nb, |i, b| &rows[i].1[b]);
            tile_products(&decoded, d, r0, q, heads, out);
        }
        for r in rest_rows {
            let (d, blocks) = row(r);
            decode_rows(&mut decoded[..nb], nb, |_, b| &blocks[b]);
            tile_products(&decoded[..nb], [d], r, q, heads, out);
        }
    }

    /// [`gemm`] for whole tiles of [`TILE_ROWS`] rows in `crate::gemm::tile_rows`'s
    /// layout. One token (decode) streams each tile once ([`tile_gemv`]); prompts decode a
    /// tile into the L1 buffer as [`gemm`] does.
    ///
    /// # Safety
    /// As [`gemm`], with `w` whole tiles of `TILE_ROWS` records of `rec`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn gemm_tiled(
        w: &[u8],
        rec: RowRecord,
        q: &[[i8; 64]],
        heads: &[Q8K64Header],
        out: &mut [f32],
    ) {
        let n_tok = heads.len();
        let nb = (rec.row_size - IQ2_BN_ROW_PREFIX_BYTES) / 16;
        let tile_bytes = TILE_ROWS * rec.row_size;
        let scales = |wt: &[u8]| -> [f32; TILE_ROWS] {
            let mut d = [0f32; TILE_ROWS];
            for (i, d) in d.iter_mut().enumerate() {
                let h = rec.header_at(i);
                *d = f32::from_le_bytes([wt[h], wt[h + 1], wt[h + 2], wt[h + 3]]);
            }
            d
        };
        if n_tok == 1 {
            // Shape: w (tiles, tile_bytes); q (nb) blocks; out (tiles · TILE_ROWS).
            for (wt, o) in w
                .chunks_exact(tile_bytes)
                .zip(out.chunks_exact_mut(TILE_ROWS))
            {
                let columns = &wt[rec.block_at(0, 0)..];
                let sums = tile_gemv(bytemuck::cast_slice(columns), q);
                for ((y, d), s) in o.iter_mut().zip(scales(wt)).zip(sums) {
                    *y = finish(d, &heads[0], s);
                }
            }
            return;
        }
        let mut decoded = vec![[0u8; 64]; TILE_ROWS * nb];
        for (tile, wt) in w.chunks_exact(tile_bytes).enumerate() {
            decode_rows(&mut decoded, nb, |i, b| {
                let at = rec.block_at(i, b);
                bytemuck::from_bytes(&wt[at..at + 16])
            });
            tile_products(&decoded, scales(wt), tile * TILE_ROWS, q, heads, out);
        }
    }

    /// Per-group Σcode·q of a tile's four rows against one activation row, streaming the
    /// tile once: `columns[b]` is block b of rows 0..4 (16 bytes each), so 128-bit lane i
    /// of its vector is row i's block, and shifting the whole vector by 2f and masking
    /// gives every row's codes of elements 16f..16f+16 (byte j of a block holds elements
    /// j + 16f at bits 2f). Multiplied by those 16 activations broadcast to the four lanes,
    /// `vpdpbusd` lane m of 128-bit lane i sums row i's elements 16f + 4m..16f + 4m + 4,
    /// all in group m: lane i ends with row i's four group sums, no reduction across lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn tile_gemv(columns: &[[u8; 64]], q: &[[i8; 64]]) -> [[i32; Q8_K64_GROUPS]; TILE_ROWS] {
        let mask = _mm512_set1_epi8(3);
        // One accumulator per 2-bit field f, so that the four `vpdpbusd` of a column do not
        // wait on each other.
        let mut acc = [_mm512_setzero_si512(); 4];
        // Shape: nb columns of (4 rows × 16 bytes); q (nb) blocks of 64 activations.
        for (col, qb) in columns.iter().zip(q) {
            // SAFETY: `col` is 64 readable bytes; `loadu` takes any alignment.
            let bits = unsafe { _mm512_loadu_si512(col.as_ptr().cast()) };
            let codes = [
                _mm512_and_si512(bits, mask),
                _mm512_and_si512(_mm512_srli_epi16::<2>(bits), mask),
                _mm512_and_si512(_mm512_srli_epi16::<4>(bits), mask),
                _mm512_and_si512(_mm512_srli_epi16::<6>(bits), mask),
            ];
            for (f, (a, c)) in acc.iter_mut().zip(codes).enumerate() {
                // SAFETY: `qb[16f..16f + 16]` is 16 readable bytes; `loadu` takes any
                // alignment.
                let y = _mm512_broadcast_i32x4(unsafe {
                    _mm_loadu_si128(qb.as_ptr().add(16 * f).cast())
                });
                *a = _mm512_dpbusd_epi32(*a, c, y);
            }
        }
        let total = _mm512_add_epi32(
            _mm512_add_epi32(acc[0], acc[1]),
            _mm512_add_epi32(acc[2], acc[3]),
        );
        let mut lanes = [0i32; 16];
        // SAFETY: `lanes` is 64 writable bytes; `storeu` takes any alignment.
        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), total) };
        let mut out = [[0; Q8_K64_GROUPS]; TILE_ROWS];
        for (o, l) in out.iter_mut().zip(lanes.chunks_exact(Q8_K64_GROUPS)) {
            o.copy_from_slice(l);
        }
        out
    }

    /// Decodes `R = decoded.len() / nb` rows into `decoded` (row i's block b at
    /// `i · nb + b`), reading row i's block b from `block(i, b)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn decode_rows<'b>(
        decoded: &mut [[u8; 64]],
        nb: usize,
        block: impl Fn(usize, usize) -> &'b BlockIq2Bn,
    ) {
        for (i, row) in decoded.chunks_exact_mut(nb).enumerate() {
            for (b, d) in row.iter_mut().enumerate() {
                // SAFETY: `d` is 64 writable bytes; `storeu` takes any alignment.
                unsafe { _mm512_storeu_si512(d.as_mut_ptr().cast(), decode(block(i, b))) };
            }
        }
    }

    /// Rows `r0..r0 + R` (decoded, with scales `d`) against every token, in token tiles.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn tile_products<const R: usize>(
        decoded: &[[u8; 64]],
        d: [f32; R],
        r0: usize,
        q: &[[i8; 64]],
        heads: &[Q8K64Header],
        out: &mut [f32],
    ) {
        let n_tok = heads.len();
        let nb = decoded.len() / R;
        let act = |t: usize| &q[t * nb..(t + 1) * nb];
        let codes: [&[[u8; 64]]; R] = std::array::from_fn(|i| &decoded[i * nb..(i + 1) * nb]);
        let (full, rest) = tiles(n_tok, TILE_TOKENS);
        for t0 in full {
            let q = std::array::from_fn(|j| act(t0 + j));
            let acc = decoded_sums::<R, TILE_TOKENS>(codes, q);
            let scales = TokenScales::of(&heads[t0..t0 + TILE_TOKENS]);
            for (i, (d, acc)) in d.iter().zip(&acc).enumerate() {
                let y = finish_tokens(*d, &scales, acc);
                let at = (r0 + i) * n_tok + t0;
                // SAFETY: `out[at..at + 4]` is in bounds (rows r0 + i < rows, tokens
                // t0 + 4 ≤ n_tok); `storeu` takes any alignment.
                unsafe { _mm_storeu_ps(out[at..at + TILE_TOKENS].as_mut_ptr(), y) };
            }
        }
        for t in rest {
            let sums = lanes_of(&decoded_sums::<R, 1>(codes, [act(t)]));
            store(d, (r0, t), n_tok, heads, &sums, out);
        }
    }

    // The vector epilogue ([`TokenScales`], [`finish_tokens`]) is written for four tokens:
    // one 128-bit lane of an accumulator each, four f32 outputs per row.
    const _: () = assert!(TILE_TOKENS == 4);

    /// Four tokens' Q8_K64 scales as vectors: lane 4j + g holds token j's `d[g]`
    /// (`dsum[g]`).
    struct TokenScales {
        d: __m512,
        dsum: __m512,
    }

    impl TokenScales {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        fn of(heads: &[Q8K64Header]) -> Self {
            let heads: &[[f32; 16]] = bytemuck::cast_slice(&heads[..TILE_TOKENS]);
            // SAFETY: `heads` is two arrays of 16 readable f32; `loadu` takes any alignment.
            // v0 = [h0.d, h0.dsum, h1.d, h1.dsum], v1 likewise for tokens 2 and 3.
            let (v0, v1) = unsafe {
                (
                    _mm512_loadu_ps(heads[0].as_ptr()),
                    _mm512_loadu_ps(heads[1].as_ptr()),
                )
            };
            Self {
                d: _mm512_shuffle_f32x4::<0b10_00_10_00>(v0, v1),
                dsum: _mm512_shuffle_f32x4::<0b11_01_11_01>(v0, v1),
            }
        }
    }

    /// [`finish`] of one row (scale `d`) against four tokens, from their `vpdpbusd`
    /// accumulators (lane m holds group m % 4): the four 128-bit lanes of each accumulator
    /// are added (a 4 × 4 transpose of 128-bit lanes, so that 128-bit lane j ends with
    /// token j's group sums), then the epilogue runs on all four tokens at once in the
    /// scalar order: fmsub per group, (a0 + a2) + (a1 + a3), times `d`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn finish_tokens(d: f32, scales: &TokenScales, acc: &[__m512i; TILE_TOKENS]) -> __m128 {
        // [a0.L0 + a0.L2, a0.L1 + a0.L3, a1.L0 + a1.L2, a1.L1 + a1.L3], and a2, a3 likewise.
        let pair = |a: __m512i, b: __m512i| {
            _mm512_add_epi32(
                _mm512_shuffle_i64x2::<0b01_00_01_00>(a, b),
                _mm512_shuffle_i64x2::<0b11_10_11_10>(a, b),
            )
        };
        let (s01, s23) = (pair(acc[0], acc[1]), pair(acc[2], acc[3]));
        let sums = _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0b10_00_10_00>(s01, s23),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(s01, s23),
        );
        // `_mm_fmsub_ps(d8, sumi, dsum)`: one rounding, as `mul_add` in `finish`.
        let a = _mm512_fmsub_ps(scales.d, _mm512_cvtepi32_ps(sums), scales.dsum);
        // Lane 0 of each group of four: (a0 + a2) + (a1 + a3).
        let b = _mm512_add_ps(a, _mm512_permute_ps::<0b01_00_11_10>(a));
        let c = _mm512_add_ps(b, _mm512_permute_ps::<0b10_11_00_01>(b));
        let firsts = _mm512_permutexvar_ps(
            _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0),
            c,
        );
        _mm_mul_ps(_mm_set1_ps(d), _mm512_castps512_ps128(firsts))
    }

    /// Writes the epilogue of an `R` × `T` tile of group sums whose first row and token are
    /// `(r0, t0)` into `out` (rows, n_tok); `d` holds the rows' scales.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn store<const R: usize, const T: usize>(
        d: [f32; R],
        (r0, t0): (usize, usize),
        n_tok: usize,
        heads: &[Q8K64Header],
        sums: &[[[i32; Q8_K64_GROUPS]; T]; R],
        out: &mut [f32],
    ) {
        for (i, (d, row_sums)) in d.iter().zip(sums).enumerate() {
            for (j, s) in row_sums.iter().enumerate() {
                out[(r0 + i) * n_tok + t0 + j] = finish(*d, &heads[t0 + j], *s);
            }
        }
    }

    /// [`group_lanes`] of every accumulator of a tile.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn lanes_of<const R: usize, const T: usize>(
        acc: &[[__m512i; T]; R],
    ) -> [[[i32; Q8_K64_GROUPS]; T]; R] {
        let mut out = [[[0; Q8_K64_GROUPS]; T]; R];
        for (o_row, a_row) in out.iter_mut().zip(acc) {
            for (o, a) in o_row.iter_mut().zip(a_row) {
                *o = group_lanes(*a);
            }
        }
        out
    }

    /// The four group sums of a `vpdpbusd` accumulator: lane m holds group m % 4, so the
    /// four 128-bit lanes are added.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn group_lanes(v: __m512i) -> [i32; Q8_K64_GROUPS] {
        let s256 = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(s256),
            _mm256_extracti128_si256::<1>(s256),
        );
        [
            _mm_extract_epi32::<0>(s),
            _mm_extract_epi32::<1>(s),
            _mm_extract_epi32::<2>(s),
            _mm_extract_epi32::<3>(s),
        ]
    }

    /// A block's 64 codes in element order: its 16 bytes broadcast to the four 128-bit
    /// lanes and shifted by 0, 2, 4, 6 bits per lane, so after masking to 2 bits byte p
    /// holds the code of element p (byte j of a block covers elements j + 16k at bits 2k).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn decode(block: &BlockIq2Bn) -> __m512i {
        // SAFETY: `block.qs` is 16 readable bytes; `loadu` takes any alignment.
        let bits = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(block.qs.as_ptr().cast()) });
        let shifts = _mm512_set_epi64(6, 6, 4, 4, 2, 2, 0, 0);
        _mm512_and_si512(_mm512_srlv_epi64(bits, shifts), _mm512_set1_epi8(3))
    }

    /// Per-group Σcode·q of `R` weight rows (decoded: 64 codes per block, [`decode`])
    /// against `T` activation rows, as `vpdpbusd` accumulators: lane m sums elements
    /// 4m..4m+4, all in group m % 4 (element e is in group (e % 16) / 4); [`group_lanes`]
    /// and [`finish_tokens`] add the four 128-bit lanes so that lane g = group g.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn decoded_sums<const R: usize, const T: usize>(
        codes: [&[[u8; 64]]; R],
        q: [&[[i8; 64]]; T],
    ) -> [[__m512i; T]; R] {
        let mut acc = [[_mm512_setzero_si512(); T]; R];
        // Shape: R rows × T tokens × nb blocks of 64 elements.
        for b in 0..codes[0].len() {
            // Plain loops, no closures: a closure does not inherit the target features, and
            // an out-of-line call per load costs more than the load.
            let mut c = [_mm512_setzero_si512(); R];
            for (c_i, row) in c.iter_mut().zip(&codes) {
                // SAFETY: `row[b]` is 64 readable bytes; `loadu` takes any alignment.
                *c_i = unsafe { _mm512_loadu_si512(row[b].as_ptr().cast()) };
            }
            for (j, qt) in q.iter().enumerate() {
                // SAFETY: `qt[b]` is 64 readable bytes; `loadu` takes any alignment.
                let y = unsafe { _mm512_loadu_si512(qt[b].as_ptr().cast()) };
                for (acc_i, c_i) in acc.iter_mut().zip(&c) {
                    acc_i[j] = _mm512_dpbusd_epi32(acc_i[j], *c_i, y);
                }
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::q8_k64::quantize_row_q8_k64;

    /// 64 weights, max = 2 → thresh = 1:
    ///   x[0] = 2 → 2;  x[16] = -1 → 0 (|x| < 1 is false);  x[32] = 0.999 → 1;  x[48] = -2 → 0.
    ///   All other weights 0 → 1.
    /// Byte 0 = 2 | 0<<2 | 1<<4 | 0<<6 = 0x12; bytes 1..16 = 1|1<<2|1<<4|1<<6 = 0x55.
    /// Scale 2.0 = 0x40000000 → LE 00 00 00 40.
    #[test]
    fn known_answer_block() {
        let mut x = vec![0f32; 64];
        x[0] = 2.0;
        x[16] = -1.0;
        x[32] = 0.999;
        x[48] = -2.0;
        let mut out = vec![0xEEu8; 20];
        quantize_row_iq2_bn_ref(&x, &mut out).unwrap();
        let mut want = vec![0x00, 0x00, 0x00, 0x40, 0x12];
        want.extend([0x55; 15]);
        assert_eq!(out, want);

        let row = Iq2BnRow::from_bytes(&out, 64).unwrap();
        let mut deq = vec![1f32; 64];
        dequantize_row_iq2_bn(&row, &mut deq).unwrap();
        let mut want = vec![0f32; 64];
        want[0] = 2.0;
        want[16] = -2.0;
        want[48] = -2.0;
        assert_eq!(deq, want);
    }

    #[test]
    fn zero_row_codes_are_all_two() {
        // max = 0 → thresh = 0: |0| < 0 fails and 0 < 0 fails → code 2 (0b10101010 = 0xAA).
        let mut out = vec![0u8; 20];
        quantize_row_iq2_bn_ref(&[0.0; 64], &mut out).unwrap();
        let mut want = vec![0u8; 4];
        want.extend([0xAA; 16]);
        assert_eq!(out, want);
    }

    #[test]
    fn known_answer_dot() {
        // Activations: the Q8_K64 known row (K = 512) — d = [1/64, 2, 0, 1],
        // dsum = [2.453125, -246, 0, 129], q[0]=127, q[16]=32, q[32]=32, q[48]=-34,
        // q[4]=-127, q[5]=2, q[6]=2, q[12]=127, q[14]=2, all others 0.
        let x = crate::q8_k64::tests::known_row();
        let mut qs = vec![0i8; 512];
        let h = quantize_row_q8_k64(&x, &mut qs).unwrap();
        let act = Q8K64Row::new(h, &qs).unwrap();
        // Weights 0.5 · t with t = 0 except t[0] = +1, t[4] = -1, t[12] = +1, t[16] = -1:
        // d = 0.5, codes 1 except code(0) = 2, code(4) = 0, code(12) = 2, code(16) = 0.
        let mut wx = vec![0f32; 512];
        wx[0] = 0.5;
        wx[4] = -0.5;
        wx[12] = 0.5;
        wx[16] = -0.5;
        let mut wb = vec![0u8; iq2_bn_row_size(512).unwrap()];
        quantize_row_iq2_bn_ref(&wx, &mut wb).unwrap();
        let w = Iq2BnRow::from_bytes(&wb, 512).unwrap();
        // sumi_g = Σq_g + Σ t·q over group g:
        //   g0: 157 + 127 - 32 = 252 → a0 = 252/64 - 2.453125 = 3.9375 - 2.453125 = 1.484375
        //   g1: -123 + 127   = 4     → a1 = 2·4 + 246 = 254
        //   g2: 0                    → a2 = 0·0 - 0 = 0
        //   g3: 129 + 127    = 256   → a3 = 256 - 129 = 127
        // (a0 + a2) + (a1 + a3) = 1.484375 + 381 = 382.484375; × d 0.5 = 191.2421875.
        assert_eq!(group_sums_generic(w.blocks(), &qs), [252, 4, 0, 256]);
        for &isa in Isa::available() {
            let got = vec_dot_iq2_bn_q8_k64_with(isa, &w, &act).unwrap();
            assert_eq!(got, 0.5 * (1.484375 + 381.0), "{isa:?}");
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(iq2_bn_row_size(100).is_err());
        let mut out = vec![0u8; 19];
        assert!(quantize_row_iq2_bn_ref(&[0.0; 64], &mut out).is_err());
        let bytes = vec![0u8; 4 + 448 / 4];
        assert!(Iq2BnRow::from_bytes(&bytes, 512).is_err());
        let w = Iq2BnRow::from_bytes(&bytes, 448).unwrap();
        let qs = vec![0i8; 512];
        let a = Q8K64Row::new(
            Q8K64Header {
                d: [0.0; 4],
                dsum: [0.0; 4],
            },
            &qs,
        )
        .unwrap();
        assert!(matches!(
            vec_dot_iq2_bn_q8_k64(&w, &a),
            Err(KernelError::Unsupported { .. })
        ));
        let bytes = vec![0u8; 4 + 576 / 4];
        let w = Iq2BnRow::from_bytes(&bytes, 576).unwrap();
        assert!(matches!(
            vec_dot_iq2_bn_q8_k64(&w, &a),
            Err(KernelError::LengthMismatch { .. })
        ));
    }
}
