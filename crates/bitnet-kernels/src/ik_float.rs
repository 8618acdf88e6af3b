//! ik_llama.cpp's float dot product: what its `iqk_mul_mat` float GEMM
//! (`iqk/iqk_gemm_floats.cpp`, `mul_mat_Qx_Qy_MxN`, x86 AVX2 build) computes for one
//! (weight row, activation row) pair of F32 or F16 weights against F32 activations.
//!
//! Unlike ggml's `ggml_vec_dot_f16` ([`crate::float`]), the F32 operand is not rounded to
//! f16 first, and the order differs: one 8-lane accumulator, started with a plain product
//! of the first 8 elements and continued with one FMA per further 8, then (for `n % 8 == 4`)
//! a 4-wide tail into lanes 0..4, then `hsum_float_8`:
//! `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`. ik refuses rows whose length is not a
//! multiple of 4, and so do these functions.

use half::f16;

use crate::float::{each_pair, expect_len, FloatRows, Rows};
use crate::gemm::{tile_rows, RowOrder, RowRecord, TILE_ROWS};
use crate::{GgmlType, Isa, KernelError};

/// Lanes of the accumulator (one AVX2 register).
const LANES: usize = 8;

fn check(format: GgmlType, x_len: usize, y_len: usize) -> Result<(), KernelError> {
    expect_len(format, "y", y_len, x_len)?;
    if !x_len.is_multiple_of(4) {
        return Err(KernelError::NotBlockMultiple {
            format,
            len: x_len,
            block: 4,
        });
    }
    Ok(())
}

/// The scalar reference of the lane arithmetic; `x(i)` widens element i to f32.
fn dot_generic(n: usize, x: impl Fn(usize) -> f32, y: &[f32]) -> f32 {
    let nb = n / LANES;
    let mut acc = [0.0f32; LANES];
    if nb > 0 {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = x(l) * y[l];
        }
    }
    for c in 1..nb {
        for (l, a) in acc.iter_mut().enumerate() {
            let i = c * LANES + l;
            *a = x(i).mul_add(y[i], *a);
        }
    }
    // Shape: the tail is (n - 8·nb) / 4 chunks of 4, at most one.
    for c in (2 * nb)..(n / 4) {
        for (l, a) in acc[..4].iter_mut().enumerate() {
            let i = 4 * c + l;
            *a = x(i).mul_add(y[i], *a);
        }
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// F32·F32 in ik's order, scalar.
pub fn ik_dot_f32_generic(x: &[f32], y: &[f32]) -> Result<f32, KernelError> {
    check(GgmlType::F32, x.len(), y.len())?;
    Ok(dot_generic(x.len(), |i| x[i], y))
}

/// F16·F32 in ik's order, scalar.
pub fn ik_dot_f16_f32_generic(x: &[f16], y: &[f32]) -> Result<f32, KernelError> {
    check(GgmlType::F16, x.len(), y.len())?;
    Ok(dot_generic(x.len(), |i| x[i].to_f32(), y))
}

/// [`ik_dot_f32`] on the given ISA (scalar when `isa` is not supported here).
pub(crate) fn ik_dot_f32_with(isa: Isa, x: &[f32], y: &[f32]) -> Result<f32, KernelError> {
    check(GgmlType::F32, x.len(), y.len())?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; lengths equal, % 4 == 0.
        _ if isa.runs_avx2() => Ok(unsafe { avx2::dot(x, y) }),
        _ => Ok(dot_generic(x.len(), |i| x[i], y)),
    }
}

/// [`ik_dot_f16_f32`] on the given ISA (scalar when `isa` is not supported here).
pub(crate) fn ik_dot_f16_f32_with(isa: Isa, x: &[f16], y: &[f32]) -> Result<f32, KernelError> {
    check(GgmlType::F16, x.len(), y.len())?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; lengths equal, % 4 == 0.
        _ if isa.runs_avx2() => Ok(unsafe { avx2::dot(x, y) }),
        _ => Ok(dot_generic(x.len(), |i| x[i].to_f32(), y)),
    }
}

/// ik_llama.cpp's F32 weights · F32 activations; lengths equal and a multiple of 4.
pub fn ik_dot_f32(x: &[f32], y: &[f32]) -> Result<f32, KernelError> {
    ik_dot_f32_with(Isa::best(), x, y)
}

/// ik_llama.cpp's F16 weights · F32 activations (no rounding of the activations); lengths
/// equal and a multiple of 4.
pub fn ik_dot_f16_f32(x: &[f16], y: &[f32]) -> Result<f32, KernelError> {
    ik_dot_f16_f32_with(Isa::best(), x, y)
}

/// ik's dot of every row of `x` with every row of `y`, dispatched once:
/// `out[h·out_stride + i] = x_i · y_h`, bit-identical to one [`ik_dot_f32`] (F32 rows) or
/// [`ik_dot_f16_f32`] (F16 rows) per pair (attention under ik's numerics). Errors when row
/// lengths differ or are not a multiple of 4, or a row runs past its data or `out`.
pub fn ik_dot_rows_with(
    isa: Isa,
    x: FloatRows<'_>,
    y: Rows<'_, f32>,
    out: &mut [f32],
    out_stride: usize,
) -> Result<(), KernelError> {
    x.check(&y, out, out_stride)?;
    let (format, cols) = match x {
        FloatRows::F32(x) => (GgmlType::F32, x.cols),
        FloatRows::F16(x) => (GgmlType::F16, x.cols),
    };
    if !cols.is_multiple_of(4) {
        return Err(KernelError::NotBlockMultiple {
            format,
            len: cols,
            block: 4,
        });
    }
    match x {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; operands checked above.
        FloatRows::F32(x) if isa.runs_avx2() => unsafe { avx2::dot_pairs(&x, &y, out, out_stride) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        FloatRows::F16(x) if isa.runs_avx2() => unsafe { avx2::dot_pairs(&x, &y, out, out_stride) },
        FloatRows::F32(x) => each_pair(&x, &y, out, out_stride, |r, yh| {
            dot_generic(r.len(), |i| r[i], yh)
        }),
        FloatRows::F16(x) => each_pair(&x, &y, out, out_stride, |r, yh| {
            dot_generic(r.len(), |i| r[i].to_f32(), yh)
        }),
    }
    Ok(())
}

/// [`ik_dot_rows_with`] on [`Isa::best`].
pub fn ik_dot_rows(
    x: FloatRows<'_>,
    y: Rows<'_, f32>,
    out: &mut [f32],
    out_stride: usize,
) -> Result<(), KernelError> {
    ik_dot_rows_with(Isa::best(), x, y, out, out_stride)
}

/// Elements per chunk of a tile: one 8-lane load.
const CHUNK: usize = LANES;

/// The tiled layout's record for rows of `k` elements of `X`: no header, chunks of 8.
fn record<X>(k: usize) -> RowRecord {
    let size = std::mem::size_of::<X>();
    RowRecord {
        header: 0,
        block: CHUNK * size,
        row_size: k * size,
    }
}

/// Lays out `src` (rows of `k`, row-major) in `crate::gemm::tile_rows`'s layout with
/// chunks of 8 elements: ik's order is one FMA chain per dot product, whose latency one row
/// cannot hide, so `ik_gemm_f16_f32_with` runs the [`TILE_ROWS`] rows of a tile together.
/// `k` must tile (`ik_rows_tile`) and `dst` be as long as `src`.
pub fn ik_tile_rows<X: bytemuck::Pod>(
    src: &[X],
    k: usize,
    dst: &mut [X],
) -> Result<(), KernelError> {
    if !ik_rows_tile(k) || !src.len().is_multiple_of(k) {
        return Err(KernelError::NotBlockMultiple {
            format: GgmlType::F16,
            len: k,
            block: CHUNK,
        });
    }
    expect_len(GgmlType::F16, "tiled rows", dst.len(), src.len())?;
    tile_rows(
        bytemuck::cast_slice(src),
        record::<X>(k),
        bytemuck::cast_slice_mut(dst),
    );
    Ok(())
}

/// Whether rows of `k` elements can be tiled ([`ik_tile_rows`]): whole chunks of 8.
pub(crate) fn ik_rows_tile(k: usize) -> bool {
    k > 0 && k.is_multiple_of(CHUNK)
}

/// Where element `j` of row `r` is in a matrix of `rows` rows of `k` stored in `order`.
fn element_index<X>(order: RowOrder, rows: usize, k: usize, r: usize, j: usize) -> usize {
    let size = std::mem::size_of::<X>();
    record::<X>(k).byte_at(order, rows, r, j * size) / size
}

/// Checks a many-row product's buffers: `w` is whole rows of `k`, `y` is `n_tok` rows of
/// `k`, `out` is (rows, n_tok); a tiled `w` needs `k % 8 == 0`. Returns `k`.
fn check_gemm(
    format: GgmlType,
    order: RowOrder,
    w_len: usize,
    y_len: usize,
    n_tok: usize,
    out_len: usize,
) -> Result<usize, KernelError> {
    let k = y_len.checked_div(n_tok).unwrap_or(0);
    let rows = out_len.checked_div(n_tok).unwrap_or(0);
    if k == 0 || y_len != n_tok * k || out_len != rows * n_tok {
        return Err(KernelError::LengthMismatch {
            format,
            what: "activations and outputs (whole rows per token)",
            got: y_len,
            expected: out_len,
        });
    }
    check(format, k, k)?;
    if order == RowOrder::Tiled && !ik_rows_tile(k) {
        return Err(KernelError::NotBlockMultiple {
            format,
            len: k,
            block: CHUNK,
        });
    }
    expect_len(format, "weights", w_len, rows * k)?;
    Ok(k)
}

/// A weight element ik's float products take: F16 or F32.
pub trait IkWeight: bytemuck::Pod + private::Sealed {
    /// The format, for error messages.
    const FORMAT: GgmlType;
    /// The element as f32 (exact).
    fn widen(self) -> f32;
}

/// The SIMD loads an [`IkWeight`] needs (sealed: nameable only in this crate).
mod private {
    #[cfg(target_arch = "x86_64")]
    pub use super::avx2::Load as Sealed;
    #[cfg(not(target_arch = "x86_64"))]
    pub trait Sealed {}
    #[cfg(not(target_arch = "x86_64"))]
    impl Sealed for f32 {}
    #[cfg(not(target_arch = "x86_64"))]
    impl Sealed for half::f16 {}
}

impl IkWeight for f32 {
    const FORMAT: GgmlType = GgmlType::F32;
    fn widen(self) -> f32 {
        self
    }
}

impl IkWeight for f16 {
    const FORMAT: GgmlType = GgmlType::F16;
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// Every weight row against every activation row in ik's order:
/// `out[r · n_tok + t]` = [`ik_dot_f16_f32_generic`] (F16 weights) or
/// [`ik_dot_f32_generic`] (F32) of row r of `w` (stored in `order`) and row t of `y`, bit
/// for bit, on the given ISA (scalar when `isa` is not supported here). Shape: w (rows, k),
/// y (n_tok, k), out (rows, n_tok).
pub fn ik_gemm_with<X: IkWeight>(
    isa: Isa,
    w: &[X],
    order: RowOrder,
    y: &[f32],
    n_tok: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let k = check_gemm(X::FORMAT, order, w.len(), y.len(), n_tok, out.len())?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; shapes checked above.
        _ if isa.runs_avx2() => unsafe { avx2::gemm(w, k, order, y, n_tok, out) },
        _ => gemm_generic(w, k, order, y, out, X::widen),
    }
    Ok(())
}

/// The scalar many-row product: the scalar dot of (row r, row t) into `out[r · n_tok + t]`,
/// reading row r through [`element_index`].
fn gemm_generic<X: bytemuck::Pod>(
    w: &[X],
    k: usize,
    order: RowOrder,
    y: &[f32],
    out: &mut [f32],
    widen: impl Fn(X) -> f32,
) {
    let n_tok = y.len() / k;
    let rows = w.len() / k;
    for (r, o) in out.chunks_exact_mut(n_tok).enumerate() {
        for (yt, s) in y.chunks_exact(k).zip(o) {
            *s = dot_generic(
                k,
                |j| widen(w[element_index::<X>(order, rows, k, r, j)]),
                yt,
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{RowOrder, Rows, CHUNK, LANES, TILE_ROWS};

    /// An element type loaded as 8 or 4 f32 lanes.
    pub trait Load: Copy {
        /// # Safety
        /// `p..p+8` readable; AVX2, FMA and F16C available.
        unsafe fn load8(p: *const Self) -> __m256;
        /// Four elements into lanes 0..4, lanes 4..8 zero (ik's `load4Floats`).
        ///
        /// # Safety
        /// `p..p+4` readable; AVX2, FMA and F16C available.
        unsafe fn load4(p: *const Self) -> __m256;
    }

    impl Load for f32 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8(p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees 8 readable f32 at p.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load4(p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees 4 readable f32 at p.
            let v = unsafe { _mm_loadu_ps(p) };
            _mm256_insertf128_ps::<0>(_mm256_setzero_ps(), v)
        }
    }

    impl Load for f16 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8(p: *const f16) -> __m256 {
            // SAFETY: the caller guarantees 8 readable f16 (16 bytes) at p.
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load4(p: *const f16) -> __m256 {
            // SAFETY: the caller guarantees 4 readable f16 (8 bytes) at p.
            let v = _mm_cvtph_ps(unsafe { _mm_loadl_epi64(p.cast()) });
            _mm256_insertf128_ps::<0>(_mm256_setzero_ps(), v)
        }
    }

    /// ik's `hsum_float_8`: `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)))
    }

    /// The dot product. Shape: x, y: (n,), n % 4 == 0.
    ///
    /// # Safety
    /// `x.len() == y.len()`, a multiple of 4; the CPU must support AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot<X: Load>(x: &[X], y: &[f32]) -> f32 {
        // SAFETY: one row of `x.len()` elements in both, as the caller guarantees.
        let [s] = unsafe { dot_rows::<X, 1>(x.as_ptr(), x.len(), y.as_ptr(), x.len(), LANES) };
        s
    }

    /// [`dot`] of every row of `x` with every row of `y`: `out[h·out_stride + i]`.
    ///
    /// # Safety
    /// Operands checked by `FloatRows::check`, row length a multiple of 4; the CPU must support
    /// AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_pairs<X: Load>(
        x: &Rows<'_, X>,
        y: &Rows<'_, f32>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        for h in 0..y.rows {
            let yh = y.row(h);
            for (i, o) in out[h * out_stride..][..x.rows].iter_mut().enumerate() {
                // SAFETY: both rows hold `cols` elements, a multiple of 4; forwarded CPU
                // contract.
                *o = unsafe { dot(x.row(i), yh) };
            }
        }
    }

    /// `out[r · n_tok + t]` = [`dot`] of weight row r and activation row t, bit for bit:
    /// the rows of a tiled matrix a tile at a time, one FMA chain per row; row-major rows
    /// one at a time. Shape: w (rows, k), y (n_tok, k), out (rows, n_tok).
    ///
    /// # Safety
    /// `w.len() == out.len() / n_tok · k`, `y.len() == n_tok · k`, `k % 4 == 0` (and
    /// `k % 8 == 0` when tiled); the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gemm<X: Load>(
        w: &[X],
        k: usize,
        order: RowOrder,
        y: &[f32],
        n_tok: usize,
        out: &mut [f32],
    ) {
        let tiled_rows = match order {
            RowOrder::Tiled => out.len() / n_tok / TILE_ROWS * TILE_ROWS,
            RowOrder::RowMajor => 0,
        };
        let (tiles, rows) = w.split_at(tiled_rows * k);
        let (tile_out, row_out) = out.split_at_mut(tiled_rows * n_tok);
        for (wt, o) in tiles
            .chunks_exact(TILE_ROWS * k)
            .zip(tile_out.chunks_exact_mut(TILE_ROWS * n_tok))
        {
            for (t, yt) in y.chunks_exact(k).enumerate() {
                // SAFETY: `wt` is one tile of TILE_ROWS rows of k (row i's chunk c at
                // (c · TILE_ROWS + i) · 8), `yt` one row of k.
                let sums = unsafe {
                    dot_rows::<X, TILE_ROWS>(wt.as_ptr(), k, yt.as_ptr(), CHUNK, TILE_ROWS * CHUNK)
                };
                for (i, s) in sums.into_iter().enumerate() {
                    o[i * n_tok + t] = s;
                }
            }
        }
        for (wr, o) in rows.chunks_exact(k).zip(row_out.chunks_exact_mut(n_tok)) {
            for (yt, s) in y.chunks_exact(k).zip(o) {
                // SAFETY: one row of k in both.
                *s = unsafe { dot(wr, yt) };
            }
        }
    }

    /// `R` rows of `x` dotted with the one row at `py`, each in ik's order with its own
    /// accumulator: chunk c (8 elements, or the 4 of a tail) of row i is at
    /// `px + i · row_step + c · chunk_step`.
    ///
    /// # Safety
    /// Those chunks of `R` rows of `k` elements readable at `px`, `k` at `py`, `k % 4 == 0`;
    /// AVX2, FMA and F16C available.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_rows<X: Load, const R: usize>(
        px: *const X,
        k: usize,
        py: *const f32,
        row_step: usize,
        chunk_step: usize,
    ) -> [f32; R] {
        let nb = k / LANES;
        let mut acc = [_mm256_setzero_ps(); R];
        // Plain loops over arrays, no closures: a closure does not inherit the target
        // features, and a call per load costs more than the load.
        if nb > 0 {
            // SAFETY: 8 <= k elements readable in every row.
            let vy = unsafe { f32::load8(py) };
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: as above, row i.
                *a = _mm256_mul_ps(unsafe { X::load8(px.add(i * row_step)) }, vy);
            }
        }
        for c in 1..nb {
            // SAFETY: 8c + 8 <= 8·nb <= k.
            let vy = unsafe { f32::load8(py.add(8 * c)) };
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: as above, row i.
                *a = _mm256_fmadd_ps(
                    unsafe { X::load8(px.add(i * row_step + c * chunk_step)) },
                    vy,
                    *a,
                );
            }
        }
        // Shape: the tail is (k - 8·nb) / 4 chunks of 4, at most one (chunk nb).
        if !k.is_multiple_of(LANES) {
            // SAFETY: 8·nb + 4 == k.
            let vy = unsafe { f32::load4(py.add(LANES * nb)) };
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: as above, row i.
                *a = _mm256_fmadd_ps(
                    unsafe { X::load4(px.add(i * row_step + nb * chunk_step)) },
                    vy,
                    *a,
                );
            }
        }
        let mut out = [0f32; R];
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum(a);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn every_isa_matches_the_scalar_reference_bit_for_bit() {
        for n in [4, 8, 12, 60, 64, 100, 512, 2560] {
            let x = values(n, 1);
            let y = values(n, 2);
            let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            let want32 = ik_dot_f32_generic(&x, &y).unwrap();
            let want16 = ik_dot_f16_f32_generic(&xh, &y).unwrap();
            for &isa in Isa::available() {
                assert_eq!(
                    ik_dot_f32_with(isa, &x, &y).unwrap().to_bits(),
                    want32.to_bits()
                );
                assert_eq!(
                    ik_dot_f16_f32_with(isa, &xh, &y).unwrap().to_bits(),
                    want16.to_bits()
                );
            }
            let exact: f64 = x
                .iter()
                .zip(&y)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let bound = 1e-6 * x.iter().zip(&y).map(|(a, b)| (a * b).abs()).sum::<f32>();
            assert!(
                (f64::from(want32) - exact).abs() <= f64::from(bound) + 1e-6,
                "{n}"
            );
        }
    }

    #[test]
    fn lengths_are_checked() {
        assert!(
            ik_dot_f32(&[1.0; 6], &[1.0; 6]).is_err(),
            "not a multiple of 4"
        );
        assert!(
            ik_dot_f32(&[1.0; 8], &[1.0; 4]).is_err(),
            "different lengths"
        );
        assert_eq!(ik_dot_f32(&[1.0; 4], &[2.0; 4]).unwrap(), 8.0);
    }
}
