//! Shapes and token tiling shared by the many-row, many-token products (`gemm_*`).
//!
//! A `gemm_*` entry point multiplies `rows` weight rows by `n_tok` activation rows and writes
//! `out[r · n_tok + t]` = the format's `vec_dot_*` of weight row `r` and activation row `t`,
//! bit for bit. The SIMD kernels decode each weight block once and use it for up to
//! [`TILE_TOKENS`] activation rows (prompt evaluation reuses every weight load); with one
//! token they are the plain row dot, without its per-call checks.

use std::iter::StepBy;
use std::ops::Range;

use crate::KernelError;
use bitnet_gguf::GgmlType;

/// Activation rows one decoded weight block is used for. Four keeps every per-token
/// accumulator and the decoded block in the 16 AVX2 registers.
pub const TILE_TOKENS: usize = 4;

/// How far ahead of use (in bytes) the kernels that stream weight rows from memory
/// prefetch them. One thread does not keep enough loads in flight on its own to reach the
/// memory bandwidth; on the 2B-4T model decode (1 thread) gained ~10% with 4 KiB (1 KiB:
/// +5%, 256 B: none).
pub(crate) const PREFETCH_BYTES: usize = 4096;

/// The weight stream of a kernel that reads a tile of rows side by side (one block of
/// every row per step): the tile's bytes are contiguous but read in `rows` places at once,
/// so the hardware sees no single stream. [`TileStream::prefetch`] asks for the run of bytes
/// after the tile at the kernel's pace, at least a whole tile (and [`PREFETCH_BYTES`]) ahead,
/// so the next tile is in L1 when it starts. A per-row prefetch ahead of each row instead
/// halved a four-row TQ2_0 decode kernel's speed from memory (25 -> 9.5 GB/s).
#[cfg(target_arch = "x86_64")]
pub(crate) struct TileStream {
    start: *const i8,
    lead: usize,
    step_bytes: usize,
}

#[cfg(target_arch = "x86_64")]
impl TileStream {
    /// The stream of `tile`, read `step_bytes` per step.
    #[inline(always)]
    pub(crate) fn new<T>(tile: &[T], step_bytes: usize) -> Self {
        Self {
            start: tile.as_ptr().cast(),
            lead: size_of_val(tile).max(PREFETCH_BYTES),
            step_bytes,
        }
    }

    /// Prefetches the bytes step `step` of the kernel will need a lead from now.
    #[inline(always)]
    pub(crate) fn prefetch(&self, step: usize) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let ahead = self.start.wrapping_add(self.lead + step * self.step_bytes);
        for line in 0..self.step_bytes.div_ceil(64) {
            // SAFETY: a prefetch is a hint that never faults, whatever the address; SSE is
            // part of x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line)) };
        }
    }
}

/// The shape of a `gemm_*` call, checked against its buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GemmShape {
    /// Weight rows.
    pub rows: usize,
    /// Activation rows.
    pub n_tok: usize,
    /// Elements per row (weights and activations).
    pub k: usize,
}

impl GemmShape {
    /// Derives the shape from `n_act` activation elements and `n_out` outputs for `n_tok`
    /// tokens, and checks that the weights hold `rows · k / block` blocks of `block`
    /// elements.
    pub(crate) fn new(
        format: GgmlType,
        n_weight_blocks: usize,
        block: usize,
        n_act: usize,
        n_out: usize,
        n_tok: usize,
    ) -> Result<GemmShape, KernelError> {
        let mismatch = |what, got, expected| KernelError::LengthMismatch {
            format,
            what,
            got,
            expected,
        };
        if n_tok == 0 || !n_act.is_multiple_of(n_tok) || !n_out.is_multiple_of(n_tok) {
            return Err(mismatch(
                "activations and outputs (whole rows per token)",
                n_act,
                n_out,
            ));
        }
        let (k, rows) = (n_act / n_tok, n_out / n_tok);
        if !k.is_multiple_of(block) {
            return Err(KernelError::NotBlockMultiple {
                format,
                len: k,
                block,
            });
        }
        let want = rows.saturating_mul(k / block);
        if n_weight_blocks != want {
            return Err(mismatch("weight blocks", n_weight_blocks, want));
        }
        Ok(GemmShape { rows, n_tok, k })
    }

    /// Blocks of `block` elements per row.
    pub(crate) fn blocks_per_row(&self, block: usize) -> usize {
        self.k / block
    }
}

/// How a weight matrix's rows are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOrder {
    /// Row after row, as in the file.
    RowMajor,
    /// In tiles of [`TILE_ROWS`] rows (`tile_rows`).
    Tiled,
}

/// Rows per tile of the tiled layout.
pub const TILE_ROWS: usize = 4;

/// One weight row as bytes: `header` bytes (a row scale, or none), then blocks of `block`
/// bytes; `row_size` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowRecord {
    pub header: usize,
    pub block: usize,
    pub row_size: usize,
}

impl RowRecord {
    /// Byte offset, in a tile, of row `i`'s header.
    pub(crate) fn header_at(&self, i: usize) -> usize {
        i * self.header
    }

    /// Byte offset, in a tile, of row `i`'s block `b`.
    pub(crate) fn block_at(&self, i: usize, b: usize) -> usize {
        TILE_ROWS * self.header + (b * TILE_ROWS + i) * self.block
    }

    /// Byte offset of byte `j` of row `r` in a matrix of `rows` rows stored in `order`.
    pub(crate) fn byte_at(&self, order: RowOrder, rows: usize, r: usize, j: usize) -> usize {
        let tiled = rows / TILE_ROWS * TILE_ROWS;
        match order {
            RowOrder::Tiled if r < tiled => {
                let base = r / TILE_ROWS * TILE_ROWS * self.row_size;
                let i = r % TILE_ROWS;
                if j < self.header {
                    base + self.header_at(i) + j
                } else {
                    let jb = j - self.header;
                    base + self.block_at(i, jb / self.block) + jb % self.block
                }
            }
            _ => r * self.row_size + j,
        }
    }
}

/// Lays out whole rows of `rec` (row-major in `src`) in tiles of [`TILE_ROWS`] rows: the
/// rows' headers, then block 0 of every row, block 1 of every row, and so on; rows past the
/// last whole tile stay row-major at the end. A kernel that runs a tile's rows together
/// then reads one sequential stream of memory: the same rows read side by side are several
/// short streams, which measured 40% slower on Zen 4 (F16 2B-4T head: 16 against
/// 26 GB/s). `dst` is as long as `src`, a whole number of rows.
pub(crate) fn tile_rows(src: &[u8], rec: RowRecord, dst: &mut [u8]) {
    let tile = TILE_ROWS * rec.row_size;
    let mut tiles = dst.chunks_exact_mut(tile);
    // Shape: a tile is TILE_ROWS headers, then (blocks per row, TILE_ROWS) blocks.
    for (d, s) in (&mut tiles).zip(src.chunks_exact(tile)) {
        for (i, row) in s.chunks_exact(rec.row_size).enumerate() {
            let (head, blocks) = row.split_at(rec.header);
            let h = rec.header_at(i);
            d[h..h + rec.header].copy_from_slice(head);
            for (b, block) in blocks.chunks_exact(rec.block).enumerate() {
                let at = rec.block_at(i, b);
                d[at..at + rec.block].copy_from_slice(block);
            }
        }
    }
    let rest = tiles.into_remainder();
    let start = src.len() - rest.len();
    rest.copy_from_slice(&src[start..]);
}

/// Splits `0..n` into the first indices of whole runs of `tile` (tokens or rows) and the
/// left-over indices, which are handled one at a time.
#[inline]
pub(crate) fn tiles(n: usize, tile: usize) -> (StepBy<Range<usize>>, Range<usize>) {
    let whole = n - n % tile;
    ((0..whole).step_by(tile), whole..n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_derived_and_checked() {
        let s = GemmShape::new(GgmlType::I2_S, 3 * 2, 128, 5 * 256, 5 * 3, 5).unwrap();
        assert_eq!((s.rows, s.n_tok, s.k), (3, 5, 256));
        assert_eq!(s.blocks_per_row(128), 2);
        // Wrong number of weight blocks for 3 rows of 2 blocks.
        assert!(matches!(
            GemmShape::new(GgmlType::I2_S, 5, 128, 5 * 256, 15, 5),
            Err(KernelError::LengthMismatch {
                got: 5,
                expected: 6,
                ..
            })
        ));
        // Rows not a whole number of blocks.
        assert!(matches!(
            GemmShape::new(GgmlType::I2_S, 3, 128, 5 * 100, 15, 5),
            Err(KernelError::NotBlockMultiple { len: 100, .. })
        ));
        // Zero tokens, or buffers that are not whole rows per token.
        assert!(GemmShape::new(GgmlType::I2_S, 0, 128, 0, 0, 0).is_err());
        assert!(GemmShape::new(GgmlType::I2_S, 6, 128, 5 * 256 + 1, 15, 5).is_err());
    }

    #[test]
    fn tiled_rows_put_every_byte_where_byte_at_says() {
        for (header, block, blocks, rows) in [(0, 16, 3, 9), (4, 16, 2, 4), (4, 2, 1, 3)] {
            let rec = RowRecord {
                header,
                block,
                row_size: header + block * blocks,
            };
            let src: Vec<u8> = (0..rows * rec.row_size)
                .map(|i| (i * 7 % 251) as u8)
                .collect();
            let mut dst = vec![0; src.len()];
            tile_rows(&src, rec, &mut dst);
            for r in 0..rows {
                for j in 0..rec.row_size {
                    let at = rec.byte_at(RowOrder::Tiled, rows, r, j);
                    assert_eq!(
                        dst[at],
                        src[r * rec.row_size + j],
                        "{rec:?} row {r} byte {j}"
                    );
                    assert_eq!(
                        rec.byte_at(RowOrder::RowMajor, rows, r, j),
                        r * rec.row_size + j
                    );
                }
            }
        }
    }

    #[test]
    fn tiles_cover_every_token_once() {
        for n in 0..11 {
            let mut seen = vec![0; n];
            let (full, rest) = tiles(n, TILE_TOKENS);
            let mut n_full = 0;
            for t0 in full {
                n_full += 1;
                seen[t0..t0 + TILE_TOKENS].iter_mut().for_each(|s| *s += 1);
            }
            for t in rest {
                seen[t] += 1;
            }
            assert_eq!(n_full, n / TILE_TOKENS);
            assert!(seen.iter().all(|&s| s == 1), "n = {n}: {seen:?}");
        }
    }
}
