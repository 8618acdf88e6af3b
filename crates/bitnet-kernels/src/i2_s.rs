//! I2_S: bitnet.cpp's 2-bit ternary tensor format (x86 layout); multiplied against I8_S.
//!
//! Facts from bitnet.cpp (`src/ggml-bitnet-mad.cpp`, `3rdparty/llama.cpp/ggml/src/ggml.c`):
//! - A tensor of n = rows × n_per_row weights is stored as n/4 bytes of codes followed by one
//!   f32 scale at byte n/4, padded to 32 bytes (`ggml_nbytes` = n/4 + 32). The blocks run over
//!   the flat tensor; with n_per_row % 128 == 0 row r's codes are bytes
//!   `[r·n_per_row/4, (r+1)·n_per_row/4)`.
//! - Block of 128 weights in 32 bytes: byte b holds elements b, b+32, b+64, b+96 in bits
//!   7:6, 5:4, 3:2, 1:0. Codes: -1 → 0, 0 → 1, +1 → 2. ARM builds use 64-weight blocks:
//!   those files are not interchangeable with these.
//! - `quantize_i2_s`: scale = max|w| over the whole tensor (in double, stored as f32); a weight
//!   with |w| < 1e-6 becomes 0, any other weight becomes sign(w). There is no 0.5·max
//!   threshold: the format assumes weights are already ternary.
//! - `ggml_vec_dot_i2_i8_s` returns Σcode·q (unsigned codes), and the matmul turns it into
//!   `((float)sumi - (float)Σq) / act_scale * w_scale` ([`i2_s_dot_to_f32`]).

use crate::cpu::Isa;
use crate::gemm::GemmShape;
use crate::i8_s::I8sRowMeta;
use crate::KernelError;
use bitnet_gguf::GgmlType;

/// Weights per block (x86 `QK_I2_S`).
pub const QK_I2_S: usize = 128;

/// Bytes after a tensor's codes: the f32 scale, padded for alignment.
pub const I2S_SCALE_TAIL_BYTES: usize = 32;

/// Weights below this magnitude (compared in double) quantize to 0.
pub const I2S_ZERO_THRESHOLD: f64 = 1e-6;

/// Blocks whose products bitnet.cpp's AVX2 kernel sums in 16-bit lanes before widening.
/// Each i16 lane collects 2 bytes × 4 sub-vectors × 32 blocks = 256 products of code·q, up
/// to 256 · 2 · 127 = 65024 in magnitude for valid codes: that does not fit in i16, and the
/// C kernel wraps. Both our kernels reproduce the wrap (see [`vec_dot_i2_s_i8_s_generic`]).
const I16_GROUP_BLOCKS: usize = 32;

/// One I2_S block: 128 weights, 2 bits per weight (plus the tensor's single f32 scale).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockI2s {
    /// Byte b: elements b, b+32, b+64, b+96 in bits 7:6, 5:4, 3:2, 1:0.
    pub qs: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockI2s>() == 32);

/// The 2-bit code of element `e` (0..128) of a block.
#[inline]
fn code(b: &BlockI2s, e: usize) -> u8 {
    (b.qs[e % 32] >> (6 - 2 * (e / 32))) & 3
}

/// Checks that rows of `n_per_row` weights are whole, non-empty blocks.
fn check_row_len(n_per_row: usize) -> Result<(), KernelError> {
    if !n_per_row.is_multiple_of(QK_I2_S) {
        return Err(KernelError::NotBlockMultiple {
            format: GgmlType::I2_S,
            len: n_per_row,
            block: QK_I2_S,
        });
    }
    if n_per_row == 0 {
        return Err(KernelError::Unsupported {
            format: GgmlType::I2_S,
            reason: "rows must not be empty",
        });
    }
    Ok(())
}

/// Bytes of an I2_S tensor of `n` weights: n/4 of codes + the 32-byte scale tail.
fn tensor_bytes(n: usize) -> usize {
    n / 4 + I2S_SCALE_TAIL_BYTES
}

/// Quantizes a whole tensor (`x` is rows × `n_per_row`, row-major) to I2_S exactly as
/// bitnet.cpp's `quantize_i2_s` does over the whole tensor (its `llama-quantize ... I2_S 1`,
/// one thread: with more threads each row chunk computes its own max and is written at a
/// byte offset of `start_row · n_per_row`, four times too far). `out.len()` must be
/// `x.len()/4 + 32`; the 28 padding bytes after the scale are written as zeros (the C
/// leaves them as it found them).
pub fn quantize_i2_s_ref(x: &[f32], n_per_row: usize, out: &mut [u8]) -> Result<(), KernelError> {
    check_row_len(n_per_row)?;
    if !x.len().is_multiple_of(n_per_row) {
        return Err(KernelError::NotBlockMultiple {
            format: GgmlType::I2_S,
            len: x.len(),
            block: n_per_row,
        });
    }
    if out.len() != tensor_bytes(x.len()) {
        return Err(KernelError::LengthMismatch {
            format: GgmlType::I2_S,
            what: "output bytes",
            got: out.len(),
            expected: tensor_bytes(x.len()),
        });
    }
    // C's `fmax` ignores NaN, as f64::max does.
    let scale = x.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
    let (codes, tail) = out.split_at_mut(x.len() / 4);
    // (n/128) blocks × 128 weights → 32 bytes each.
    for (xb, qb) in x.chunks_exact(QK_I2_S).zip(codes.chunks_exact_mut(32)) {
        qb.fill(0);
        for (e, &v) in xb.iter().enumerate() {
            let v = f64::from(v);
            let c: u8 = if v.abs() < I2S_ZERO_THRESHOLD {
                1
            } else if v * scale > 0.0 {
                2
            } else {
                0
            };
            qb[e % 32] |= c << (6 - 2 * (e / 32));
        }
    }
    tail.fill(0);
    tail[..4].copy_from_slice(&(scale as f32).to_le_bytes());
    Ok(())
}

/// A parsed I2_S tensor: rows of blocks and the per-tensor scale. Zero-copy over the
/// tensor's bytes (e.g. an mmap slice).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct I2sTensor<'a> {
    blocks: &'a [BlockI2s],
    scale: f32,
    n_per_row: usize,
    n_rows: usize,
}

impl<'a> I2sTensor<'a> {
    /// Parses `bytes` as an I2_S tensor of `n_rows` rows of `n_per_row` weights; its length
    /// must be exactly `n_rows·n_per_row/4 + 32`.
    pub fn from_bytes(
        bytes: &'a [u8],
        n_per_row: usize,
        n_rows: usize,
    ) -> Result<Self, KernelError> {
        check_row_len(n_per_row)?;
        let expected = n_per_row
            .checked_mul(n_rows)
            .map(|n| n / 4)
            .and_then(|c| c.checked_add(I2S_SCALE_TAIL_BYTES))
            .ok_or(KernelError::Unsupported {
                format: GgmlType::I2_S,
                reason: "tensor size overflows usize",
            })?;
        if bytes.len() != expected {
            return Err(KernelError::LengthMismatch {
                format: GgmlType::I2_S,
                what: "tensor bytes",
                got: bytes.len(),
                expected,
            });
        }
        let (codes, tail) = bytes.split_at(expected - I2S_SCALE_TAIL_BYTES);
        let scale = f32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        // Blocks are byte arrays (alignment 1), and `codes.len()` is a multiple of 32.
        let blocks =
            bytemuck::try_cast_slice(codes).map_err(|_| KernelError::NotBlockMultiple {
                format: GgmlType::I2_S,
                len: codes.len(),
                block: std::mem::size_of::<BlockI2s>(),
            })?;
        Ok(I2sTensor {
            blocks,
            scale,
            n_per_row,
            n_rows,
        })
    }

    /// The per-tensor weight scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Weights per row.
    pub fn n_per_row(&self) -> usize {
        self.n_per_row
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// The blocks of row `r`, or `None` if `r` is out of range.
    pub fn row(&self, r: usize) -> Option<&'a [BlockI2s]> {
        self.rows(r..r.checked_add(1)?)
    }

    /// The blocks of rows `range` (consecutive), or `None` if it is out of range.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Option<&'a [BlockI2s]> {
        let per_row = self.n_per_row / QK_I2_S;
        let start = range.start.checked_mul(per_row)?;
        let end = range.end.checked_mul(per_row)?;
        self.blocks.get(start..end)
    }

    /// Expands the whole tensor to f32 (`out.len()` = rows × n_per_row).
    pub fn dequantize(&self, out: &mut [f32]) -> Result<(), KernelError> {
        dequantize_row_i2_s(self.blocks, self.scale, out)
    }
}

/// Expands blocks to f32 as `(code - 1) · scale`; `out.len()` must be `128 · blocks.len()`.
pub fn dequantize_row_i2_s(
    blocks: &[BlockI2s],
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_lengths(blocks, out.len(), "output")?;
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_I2_S)) {
        for (e, o) in ob.iter_mut().enumerate() {
            *o = (f32::from(code(b, e)) - 1.0) * scale;
        }
    }
    Ok(())
}

/// Checks that a buffer of `len` elements matches `blocks` (128 per block).
fn check_lengths(blocks: &[BlockI2s], len: usize, what: &'static str) -> Result<(), KernelError> {
    if !len.is_multiple_of(QK_I2_S) {
        return Err(KernelError::NotBlockMultiple {
            format: GgmlType::I2_S,
            len,
            block: QK_I2_S,
        });
    }
    if len / QK_I2_S != blocks.len() {
        return Err(KernelError::LengthMismatch {
            format: GgmlType::I2_S,
            what,
            got: len,
            expected: blocks.len() * QK_I2_S,
        });
    }
    Ok(())
}

/// Scalar reference of bitnet.cpp's x86 `ggml_vec_dot_i2_i8_s`: Σcode·q over a row, with the
/// C kernel's 16-bit accumulation reproduced. Within each run of 32 blocks, i16 lane k
/// (k < 16) sums the products of bytes 2k and 2k+1 of every 32-element sub-vector; each lane
/// wraps to i16 before the lanes are added as i32. Equal to the exact Σcode·q whenever each
/// lane's total over a run fits i16, which holds unless a lane's 256 activations are mostly
/// large with a common sign (e.g. a constant row); otherwise it is what bitnet.cpp computes.
pub fn vec_dot_i2_s_i8_s_generic(w: &[BlockI2s], q: &[i8]) -> Result<i32, KernelError> {
    check_lengths(w, q.len(), "activations")?;
    let mut total = 0i32;
    // Runs of up to 32 blocks × 128 activations.
    for (wg, qg) in w
        .chunks(I16_GROUP_BLOCKS)
        .zip(q.chunks(I16_GROUP_BLOCKS * QK_I2_S))
    {
        // Exact per-lane sums: at most 256 · 3 · 128 in magnitude, far inside i32.
        let mut lanes = [0i32; 16];
        for (b, qb) in wg.iter().zip(qg.chunks_exact(QK_I2_S)) {
            for (e, &qv) in qb.iter().enumerate() {
                lanes[(e % 32) / 2] += i32::from(code(b, e)) * i32::from(qv);
            }
        }
        for l in lanes {
            // The i16 wrap of the C's `_mm256_add_epi16` accumulator.
            total = total.wrapping_add(i32::from(l as i16));
        }
    }
    Ok(total)
}

/// [`vec_dot_i2_s_i8_s_generic`] on the given ISA (scalar if `isa` is not supported here).
pub fn vec_dot_i2_s_i8_s_with(isa: Isa, w: &[BlockI2s], q: &[i8]) -> Result<i32, KernelError> {
    check_lengths(w, q.len(), "activations")?;
    let mut out = [0i32];
    gemm_i2_s_i8_s_with(isa, w, q, 1, &mut out)?;
    Ok(out[0])
}

/// Σcode·q of every weight row of `w` against every one of the `n_tok` activation rows in
/// `q` (row-major, `k = q.len() / n_tok`): `out[r · n_tok + t]` is
/// [`vec_dot_i2_s_i8_s_generic`] of row `r` and activation row `t`, bit for bit (see
/// [`crate::gemm`]). `w` holds `out.len() / n_tok` rows of `k / 128` blocks.
pub fn gemm_i2_s_i8_s_with(
    isa: Isa,
    w: &[BlockI2s],
    q: &[i8],
    n_tok: usize,
    out: &mut [i32],
) -> Result<(), KernelError> {
    let shape = GemmShape::new(GgmlType::I2_S, w.len(), QK_I2_S, q.len(), out.len(), n_tok)?;
    let bpr = shape.blocks_per_row(QK_I2_S);
    if bpr == 0 {
        out.fill(0);
        return Ok(());
    }
    match isa {
        // One token (decode) stays on the AVX2 kernel, as for IQ2_BN (`crate::iq2_bn`):
        // one sequential weight stream.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if isa.is_supported() && n_tok > 1 => {
            let qv: &[[i8; QK_I2_S]] = bytemuck::cast_slice(q);
            // SAFETY: `Isa::Avx512Vnni.is_supported()` (AVX-512 F/BW/VL/VNNI, AVX2, FMA,
            // F16C) was checked by the match guard; the shape check gives `w` rows × bpr
            // blocks and `qv` n_tok × bpr blocks.
            unsafe { avx512::gemm(w, qv, bpr, n_tok, out) };
        }
        #[cfg(target_arch = "x86_64")]
        _ if isa.runs_avx2() => {
            // 128 activations per block, viewed as 4 × 32 for the vector loads.
            let qv: &[[[i8; 32]; 4]] = bytemuck::cast_slice(q);
            // SAFETY: `isa.runs_avx2()` (AVX2, FMA, F16C detected) was checked by
            // the match guard; the shape check gives `w` rows × bpr blocks and `qv`
            // n_tok × bpr blocks.
            unsafe { avx2::gemm(w, qv, bpr, n_tok, out) };
        }
        _ => {
            for (wr, o) in w.chunks_exact(bpr).zip(out.chunks_exact_mut(n_tok)) {
                for (qr, y) in q.chunks_exact(shape.k).zip(o) {
                    *y = vec_dot_i2_s_i8_s_generic(wr, qr)?;
                }
            }
        }
    }
    Ok(())
}

/// bitnet.cpp's matmul epilogue: `((float)sumi - (float)Σq) / act_scale * w_scale`, in f32 and
/// in that order. Subtracting Σq turns Σ(w+1)·q into Σw·q.
#[inline]
pub fn i2_s_dot_to_f32(sumi: i32, act: &I8sRowMeta, w_scale: f32) -> f32 {
    (sumi as f32 - act.sum as f32) / act.scale * w_scale
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{BlockI2s, I16_GROUP_BLOCKS};
    use crate::gemm::{tiles, TileStream, PREFETCH_BYTES, TILE_TOKENS};
    use std::arch::x86_64::*;

    /// Loads 32 code bytes (no alignment needed).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn load_u8x32(v: &[u8; 32]) -> __m256i {
        // SAFETY: `v` is 32 readable bytes and `loadu` accepts any alignment.
        unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
    }

    /// Loads 32 int8 activations (no alignment needed).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn load_i8x32(v: &[i8; 32]) -> __m256i {
        // SAFETY: `v` is 32 readable bytes and `loadu` accepts any alignment.
        unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
    }

    /// Every row × every token (see `gemm_i2_s_i8_s_with`): `w` is rows × `bpr` blocks,
    /// `q` is n_tok × `bpr` blocks of activations, `out` is (rows, n_tok).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `w.len() = out.len() / n_tok · bpr`,
    /// `q.len() = n_tok · bpr`, `bpr > 0`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gemm(
        w: &[BlockI2s],
        q: &[[[i8; 32]; 4]],
        bpr: usize,
        n_tok: usize,
        out: &mut [i32],
    ) {
        if n_tok == 1 {
            // Shape: w (rows, bpr) in tiles of GEMV_ROWS rows; q (bpr); out (rows).
            let mut tiles = w.chunks_exact(GEMV_ROWS * bpr);
            let mut outs = out.chunks_exact_mut(GEMV_ROWS);
            for (rows, o) in (&mut tiles).zip(&mut outs) {
                o.copy_from_slice(&rows_dot::<GEMV_ROWS>(rows, q));
            }
            for (row, o) in tiles
                .remainder()
                .chunks_exact(bpr)
                .zip(outs.into_remainder())
            {
                *o = rows_dot::<1>(row, q)[0];
            }
            return;
        }
        // Shape: w (rows, bpr) blocks; q (n_tok, bpr); out (rows, n_tok).
        for (wr, o) in w.chunks_exact(bpr).zip(out.chunks_exact_mut(n_tok)) {
            let act = |t: usize| &q[t * bpr..(t + 1) * bpr];
            let (full, rest) = tiles(n_tok, TILE_TOKENS);
            for t0 in full {
                let sums = tile::<TILE_TOKENS>(wr, std::array::from_fn(|i| act(t0 + i)));
                o[t0..t0 + TILE_TOKENS].copy_from_slice(&sums);
            }
            for t in rest {
                o[t] = tile(wr, [act(t)])[0];
            }
        }
    }

    /// Weight rows that share each activation load of one token (6912 rows × 2560, Zen 4:
    /// one row 20.6 GB/s in cache and 19.2 from memory, four rows 26.2 and 25.1).
    const GEMV_ROWS: usize = 4;

    /// [`tile`]'s arithmetic for `R` weight rows (`w` is `R` rows of `q.len()` blocks)
    /// against one activation row: each block's activations are loaded once for the `R`
    /// rows, and the rows' bytes are prefetched as one stream ([`TileStream`]).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn rows_dot<const R: usize>(w: &[BlockI2s], q: &[[[i8; 32]; 4]]) -> [i32; R] {
        let bpr = q.len();
        let stream = TileStream::new(w, R * size_of::<BlockI2s>());
        let mut acc32 = [_mm256_setzero_si256(); R];
        // Runs of up to 32 blocks (the C's 16-bit accumulation window).
        for start in (0..bpr).step_by(I16_GROUP_BLOCKS) {
            let end = (start + I16_GROUP_BLOCKS).min(bpr);
            let mut acc16 = [_mm256_setzero_si256(); R];
            // Shape: R rows × (end - start) blocks of 4 planes × 32 elements.
            for b in start..end {
                stream.prefetch(b);
                let y = &q[b];
                let y = [
                    load_i8x32(&y[0]),
                    load_i8x32(&y[1]),
                    load_i8x32(&y[2]),
                    load_i8x32(&y[3]),
                ];
                for (r, acc) in acc16.iter_mut().enumerate() {
                    // SAFETY: this function's CPU contract (AVX2).
                    let p = unsafe { block_products(&planes(&w[r * bpr + b]), &y) };
                    *acc = _mm256_add_epi16(*acc, p);
                }
            }
            for (a32, a16) in acc32.iter_mut().zip(acc16) {
                // SAFETY: this function's CPU contract (AVX2).
                *a32 = _mm256_add_epi32(*a32, unsafe { widen_lanes(a16) });
            }
        }
        let mut sums = [0i32; R];
        for (s, v) in sums.iter_mut().zip(acc32) {
            // SAFETY: this function's CPU contract (AVX2).
            *s = unsafe { hsum_epi32(v) };
        }
        sums
    }

    /// A block's four 2-bit planes (shifts 6, 4, 2, 0 = elements 0..32, 32..64, 64..96,
    /// 96..128).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline(always)]
    unsafe fn planes(b: &BlockI2s) -> [__m256i; 4] {
        // SAFETY: the caller's CPU contract (AVX2).
        unsafe {
            let bits = load_u8x32(&b.qs);
            let mask = _mm256_set1_epi8(3);
            [
                _mm256_and_si256(_mm256_srli_epi16::<6>(bits), mask),
                _mm256_and_si256(_mm256_srli_epi16::<4>(bits), mask),
                _mm256_and_si256(_mm256_srli_epi16::<2>(bits), mask),
                _mm256_and_si256(bits, mask),
            ]
        }
    }

    /// One block's 16 i16 lanes of code·q: `maddubs` per plane (pairs at most
    /// 2 · 3 · 128 = 768, never saturating), the four planes added.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline(always)]
    unsafe fn block_products(c: &[__m256i; 4], y: &[__m256i; 4]) -> __m256i {
        // SAFETY: the caller's CPU contract (AVX2).
        unsafe {
            let p01 = _mm256_add_epi16(
                _mm256_maddubs_epi16(c[0], y[0]),
                _mm256_maddubs_epi16(c[1], y[1]),
            );
            let p23 = _mm256_add_epi16(
                _mm256_maddubs_epi16(c[2], y[2]),
                _mm256_maddubs_epi16(c[3], y[3]),
            );
            _mm256_add_epi16(p01, p23)
        }
    }

    /// A run's i16 lanes sign-extended in pairs into i32 (exact).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline(always)]
    unsafe fn widen_lanes(a16: __m256i) -> __m256i {
        // SAFETY: the caller's CPU contract (AVX2).
        unsafe { _mm256_madd_epi16(a16, _mm256_set1_epi16(1)) }
    }

    /// The wrapping sum of eight i32 lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline(always)]
    unsafe fn hsum_epi32(v: __m256i) -> i32 {
        // SAFETY: the caller's CPU contract (AVX2).
        unsafe {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
            _mm_cvtsi128_si32(s)
        }
    }

    /// Σcode·q of one weight row against `N` activation rows, with bitnet.cpp's lane layout:
    /// per block, the code byte vector is split into four 2-bit planes (shifts 6, 4, 2, 0 =
    /// elements 0..32, 32..64, 64..96, 96..128), decoded once, and each plane is `maddubs`ed
    /// with each row's 32 activations. maddubs pairs: 2 · 3 · 128 = 768 fits i16 (codes are
    /// masked to 2 bits, so never saturates). Each row's i16 accumulator takes 32 blocks ×
    /// 4 planes before widening and wraps exactly as the C's does; the order of the i16
    /// adds within a run does not matter (addition mod 2^16).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn tile<const N: usize>(w: &[BlockI2s], q: [&[[[i8; 32]; 4]]; N]) -> [i32; N] {
        let mut acc32 = [_mm256_setzero_si256(); N];
        // Runs of up to 32 blocks (the C's 16-bit accumulation window).
        for start in (0..w.len()).step_by(I16_GROUP_BLOCKS) {
            let end = (start + I16_GROUP_BLOCKS).min(w.len());
            let mut acc16 = [_mm256_setzero_si256(); N];
            for (i, b) in w[start..end].iter().enumerate() {
                // The weights stream from memory once: ask for them ahead of use (a hint:
                // it never faults, whatever the address).
                _mm_prefetch::<_MM_HINT_T0>(b.qs.as_ptr().wrapping_add(PREFETCH_BYTES).cast());
                // SAFETY: this function's CPU contract (AVX2).
                let c = unsafe { planes(b) };
                for (acc, qt) in acc16.iter_mut().zip(&q) {
                    let y = &qt[start + i];
                    let y = [
                        load_i8x32(&y[0]),
                        load_i8x32(&y[1]),
                        load_i8x32(&y[2]),
                        load_i8x32(&y[3]),
                    ];
                    // SAFETY: this function's CPU contract (AVX2).
                    *acc = _mm256_add_epi16(*acc, unsafe { block_products(&c, &y) });
                }
            }
            for (a32, a16) in acc32.iter_mut().zip(acc16) {
                // SAFETY: this function's CPU contract (AVX2).
                *a32 = _mm256_add_epi32(*a32, unsafe { widen_lanes(a16) });
            }
        }
        let mut sums = [0i32; N];
        for (s, v) in sums.iter_mut().zip(acc32) {
            // SAFETY: this function's CPU contract (AVX2).
            *s = unsafe { hsum_epi32(v) };
        }
        sums
    }
}

/// AVX-512 for prompts: the AVX2 kernel's arithmetic on two 32-element planes per vector.
/// A block's code bytes are broadcast to both 256-bit halves and shifted by 6 | 4 and 2 | 0
/// bits, giving planes 0 | 1 and 2 | 3; the activations' 128 bytes load as the matching
/// 0 | 1 and 2 | 3 halves. i16 lane k of the low half sums what the AVX2 kernel's lane k
/// sums from planes 0 and 2, the high half what it sums from 1 and 3; adding the halves
/// with 16-bit wrap at the end of each 32-block run gives its accumulator modulo 2^16 —
/// the same wrapped lanes, bit for bit. Each tile of rows is decoded once into an L1 buffer
/// for all its token tiles, with rows × tokens accumulators in registers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BlockI2s, I16_GROUP_BLOCKS, QK_I2_S};
    use crate::gemm::tiles;
    use std::arch::x86_64::*;

    /// Weight rows per register tile.
    const TILE_ROWS: usize = 4;
    /// Tokens per register tile: 4 × 4 i16 accumulators, 8 decoded planes and 2
    /// activation vectors fit the 32 zmm registers.
    const TILE_TOKENS: usize = 4;

    /// A block decoded: planes 0 | 1 and 2 | 3, 64 codes each.
    type Planes = [[u8; 64]; 2];

    /// Every row × every token, for two tokens or more: `w` is rows × `bpr` blocks, `q` is
    /// n_tok × `bpr` blocks of activations, `out` is (rows, n_tok).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C
    /// (`Isa::Avx512Vnni.is_supported()`); `w.len() = out.len() / n_tok · bpr`,
    /// `q.len() = n_tok · bpr`, `bpr > 0`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn gemm(
        w: &[BlockI2s],
        q: &[[i8; QK_I2_S]],
        bpr: usize,
        n_tok: usize,
        out: &mut [i32],
    ) {
        let n_rows = w.len() / bpr;
        let row = |r: usize| &w[r * bpr..(r + 1) * bpr];
        // A row tile's planes (TILE_ROWS × bpr × 128 bytes: 10 KiB at K = 2560, in L1).
        let mut decoded = vec![[[0u8; 64]; 2]; TILE_ROWS * bpr];
        // Shape: w (rows, bpr) blocks; q (n_tok, bpr); out (rows, n_tok).
        let (full_rows, rest_rows) = tiles(n_rows, TILE_ROWS);
        for r0 in full_rows {
            let rows: [&[BlockI2s]; TILE_ROWS] = std::array::from_fn(|i| row(r0 + i));
            tile_rows(rows, r0, q, n_tok, &mut decoded, out);
        }
        for r in rest_rows {
            tile_rows([row(r)], r, q, n_tok, &mut decoded, out);
        }
    }

    /// Rows `r0..r0 + R` against every token, in token tiles.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn tile_rows<const R: usize>(
        rows: [&[BlockI2s]; R],
        r0: usize,
        q: &[[i8; QK_I2_S]],
        n_tok: usize,
        decoded: &mut [Planes],
        out: &mut [i32],
    ) {
        let bpr = rows[0].len();
        for (i, row) in rows.iter().enumerate() {
            for (d, block) in decoded[i * bpr..(i + 1) * bpr].iter_mut().zip(*row) {
                let (p01, p23) = decode(block);
                // SAFETY: `d` is 2 × 64 writable bytes; `storeu` takes any alignment.
                unsafe {
                    _mm512_storeu_si512(d[0].as_mut_ptr().cast(), p01);
                    _mm512_storeu_si512(d[1].as_mut_ptr().cast(), p23);
                }
            }
        }
        let planes: [&[Planes]; R] = std::array::from_fn(|i| &decoded[i * bpr..(i + 1) * bpr]);
        let act = |t: usize| &q[t * bpr..(t + 1) * bpr];
        let (full, rest) = tiles(n_tok, TILE_TOKENS);
        for t0 in full {
            let sums = decoded_sums::<R, TILE_TOKENS>(planes, std::array::from_fn(|j| act(t0 + j)));
            store(&sums, (r0, t0), n_tok, out);
        }
        for t in rest {
            store(&decoded_sums::<R, 1>(planes, [act(t)]), (r0, t), n_tok, out);
        }
    }

    /// Writes an `R` × `T` tile whose first row and token are `(r0, t0)` into `out`
    /// (rows, n_tok).
    #[inline]
    fn store<const R: usize, const T: usize>(
        sums: &[[i32; T]; R],
        (r0, t0): (usize, usize),
        n_tok: usize,
        out: &mut [i32],
    ) {
        for (i, row_sums) in sums.iter().enumerate() {
            let at = (r0 + i) * n_tok + t0;
            out[at..at + T].copy_from_slice(row_sums);
        }
    }

    /// Planes 0 | 1 and 2 | 3 of a block (plane p: shift 6 - 2p, elements 32p..32p+32).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn decode(block: &BlockI2s) -> (__m512i, __m512i) {
        // SAFETY: `block.qs` is 32 readable bytes; `loadu` takes any alignment.
        let bits = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(block.qs.as_ptr().cast()) });
        let mask = _mm512_set1_epi8(3);
        // 16-bit lanes: the low half (lanes 0..16) shifts by 6 or 2, the high half by 4 or 0.
        let s01 = _mm512_inserti64x4::<1>(_mm512_set1_epi16(6), _mm256_set1_epi16(4));
        let s23 = _mm512_inserti64x4::<1>(_mm512_set1_epi16(2), _mm256_set1_epi16(0));
        (
            _mm512_and_si512(_mm512_srlv_epi16(bits, s01), mask),
            _mm512_and_si512(_mm512_srlv_epi16(bits, s23), mask),
        )
    }

    /// Σcode·q of `R` decoded rows against `T` activation rows, with the AVX2 kernel's
    /// 16-bit accumulation per 32-block run (see the module doc).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn decoded_sums<const R: usize, const T: usize>(
        planes: [&[Planes]; R],
        q: [&[[i8; QK_I2_S]]; T],
    ) -> [[i32; T]; R] {
        let ones = _mm256_set1_epi16(1);
        let mut total = [[0i32; T]; R];
        let nb = planes[0].len();
        // Runs of up to 32 blocks (the C's 16-bit accumulation window).
        for start in (0..nb).step_by(I16_GROUP_BLOCKS) {
            let end = (start + I16_GROUP_BLOCKS).min(nb);
            let mut acc16 = [[_mm512_setzero_si512(); T]; R];
            // Shape: R rows × T tokens × (end - start) blocks of 128 elements. Plain loops,
            // no closures: a closure does not inherit the target features.
            for b in start..end {
                let mut c = [[_mm512_setzero_si512(); 2]; R];
                for (c_i, row) in c.iter_mut().zip(&planes) {
                    // SAFETY: `row[b]` is 2 × 64 readable bytes; `loadu` takes any alignment.
                    unsafe {
                        c_i[0] = _mm512_loadu_si512(row[b][0].as_ptr().cast());
                        c_i[1] = _mm512_loadu_si512(row[b][1].as_ptr().cast());
                    }
                }
                for (j, qt) in q.iter().enumerate() {
                    // SAFETY: `qt[b]` is 128 readable bytes; `loadu` takes any alignment.
                    let (y01, y23) = unsafe {
                        (
                            _mm512_loadu_si512(qt[b].as_ptr().cast()),
                            _mm512_loadu_si512(qt[b].as_ptr().add(64).cast()),
                        )
                    };
                    for (acc_i, c_i) in acc16.iter_mut().zip(&c) {
                        let p = _mm512_add_epi16(
                            _mm512_maddubs_epi16(c_i[0], y01),
                            _mm512_maddubs_epi16(c_i[1], y23),
                        );
                        acc_i[j] = _mm512_add_epi16(acc_i[j], p);
                    }
                }
            }
            for (t_row, a_row) in total.iter_mut().zip(&acc16) {
                for (t, a) in t_row.iter_mut().zip(a_row) {
                    // Fold the halves with 16-bit wrap, then sign-extend pairs into i32.
                    let lanes = _mm256_add_epi16(
                        _mm512_castsi512_si256(*a),
                        _mm512_extracti64x4_epi64::<1>(*a),
                    );
                    *t = t.wrapping_add(hsum_i32(_mm256_madd_epi16(lanes, ones)));
                }
            }
        }
        total
    }

    /// The wrapping sum of eight i32 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
        _mm_cvtsi128_si32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One 128-weight block; amax = 1.5 (from x[1]):
    ///   x[0]  = 0.25   → +1 → code 2     x[1]  = -1.5   → -1 → 0
    ///   x[32] = -0.25  → -1 → 0          x[33] = 1.5e-6 → +1 → 2 (not below 1e-6)
    ///   x[64] = 0      →  0 → 1          x[65] = -2e-6  → -1 → 0
    ///   x[96] = 1e-7   →  0 → 1 (< 1e-6) x[97] = 0.75   → +1 → 2
    ///   every other weight 0 → code 1.
    /// Byte 0 = 2<<6 | 0<<4 | 1<<2 | 1 = 0x85; byte 1 = 0<<6 | 2<<4 | 0<<2 | 2 = 0x22;
    /// bytes 2..32 = 1<<6|1<<4|1<<2|1 = 0x55. Scale 1.5 = 0x3FC00000 → LE 00 00 C0 3F.
    fn known_block() -> Vec<f32> {
        let mut x = vec![0f32; 128];
        x[0] = 0.25;
        x[32] = -0.25;
        x[64] = 0.0;
        x[96] = 1e-7;
        x[1] = -1.5;
        x[33] = 1.5e-6;
        x[65] = -2e-6;
        x[97] = 0.75;
        x
    }

    fn known_bytes() -> Vec<u8> {
        let mut b = vec![0x85, 0x22];
        b.extend([0x55; 30]);
        b.extend([0x00, 0x00, 0xC0, 0x3F]);
        b.extend([0; 28]);
        b
    }

    #[test]
    fn known_answer_quantize() {
        let mut out = vec![0xEEu8; 64];
        quantize_i2_s_ref(&known_block(), 128, &mut out).unwrap();
        assert_eq!(out, known_bytes());
    }

    #[test]
    fn known_answer_dequantize() {
        let bytes = known_bytes();
        let t = I2sTensor::from_bytes(&bytes, 128, 1).unwrap();
        assert_eq!(t.scale(), 1.5);
        let mut out = vec![0f32; 128];
        t.dequantize(&mut out).unwrap();
        let mut want = vec![0f32; 128];
        want[0] = 1.5;
        want[32] = -1.5;
        want[1] = -1.5;
        want[33] = 1.5;
        want[65] = -1.5;
        want[97] = 1.5;
        assert_eq!(out, want);
    }

    #[test]
    fn known_answer_dot_and_epilogue() {
        let bytes = known_bytes();
        let t = I2sTensor::from_bytes(&bytes, 128, 1).unwrap();
        // q = 1 everywhere except q[0]=10, q[32]=20, q[64]=30, q[96]=40, q[1]=-5.
        // Σcode·q = 2·10 + 0·20 + 1·30 + 1·40 + 0·(-5)          (byte 0 and x[1])
        //         + 2·1 (x[33]) + 0·1 (x[65]) + 2·1 (x[97])
        //         + 120 other weights × code 1 × q 1 = 20+30+40+2+2+120 = 214.
        let mut q = vec![1i8; 128];
        q[0] = 10;
        q[32] = 20;
        q[64] = 30;
        q[96] = 40;
        q[1] = -5;
        let row = t.row(0).unwrap();
        for &isa in Isa::available() {
            assert_eq!(
                vec_dot_i2_s_i8_s_with(isa, row, &q).unwrap(),
                214,
                "{isa:?}"
            );
        }
        // Σq = 10+20+30+40-5 + 123 = 218; Σw·q = 214 - 218 = -4
        // (= +10 - 20 + 5 + 1 - 1 + 1 from the ±1 weights).
        let act = I8sRowMeta {
            scale: 2.0,
            sum: 218,
        };
        assert_eq!(i2_s_dot_to_f32(214, &act, 1.5), -4.0 / 2.0 * 1.5);
    }

    #[test]
    fn sixteen_bit_wrap_matches_bitnet_cpp() {
        // 32 blocks of code 2 (bytes 0xAA) against q = 127: each i16 lane sums
        // 256 · 2 · 127 = 65024, which wraps to 65024 - 65536 = -512; 16 lanes → -8192.
        // A 33rd block starts a new run: its lanes hold 8 · 254 = 2032, 16 lanes → 32512.
        let w = vec![BlockI2s { qs: [0xAA; 32] }; 33];
        let q = vec![127i8; 33 * 128];
        for &isa in Isa::available() {
            assert_eq!(
                vec_dot_i2_s_i8_s_with(isa, &w[..32], &q[..32 * 128]).unwrap(),
                -8192,
                "{isa:?}"
            );
            assert_eq!(
                vec_dot_i2_s_i8_s_with(isa, &w, &q).unwrap(),
                -8192 + 32512,
                "{isa:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let x = vec![0f32; 256];
        let mut out = vec![0u8; 256 / 4 + 32];
        assert!(quantize_i2_s_ref(&x, 64, &mut out).is_err());
        assert!(quantize_i2_s_ref(&x, 0, &mut out).is_err());
        assert!(quantize_i2_s_ref(&x[..128], 256, &mut out).is_err());
        assert!(quantize_i2_s_ref(&x, 128, &mut out[..95]).is_err());
        assert!(I2sTensor::from_bytes(&out, 128, 3).is_err());
        assert!(I2sTensor::from_bytes(&out, 128, usize::MAX).is_err());
        let t = I2sTensor::from_bytes(&out, 128, 2).unwrap();
        assert!(t.row(1).is_some() && t.row(2).is_none());
        let w = t.row(0).unwrap();
        assert!(vec_dot_i2_s_i8_s_with(Isa::best(), w, &[0i8; 127]).is_err());
        assert!(vec_dot_i2_s_i8_s_with(Isa::best(), w, &[0i8; 256]).is_err());
    }
}
