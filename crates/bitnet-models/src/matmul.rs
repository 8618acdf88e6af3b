//! Row-parallel matrix × activations products, each weight format paired with the
//! activation format ggml pairs it with (`type_traits_cpu[..].vec_dot_type`), quantized by
//! the quantizer the reference's x86 build runs (`from_float`):
//!
//! | weights | activations | quantizer |
//! |---|---|---|
//! | F32 | F32 | none |
//! | F16 | F16 | round to nearest even (F16C) |
//! | BF16 | BF16 | `GGML_FP32_TO_BF16` |
//! | Q8_0, Q4_0 | Q8_0 | ggml-cpu x86 `quantize_row_q8_0` (ties to even, `id = 127/amax`) |
//! | Q4_1 | Q8_1 | ggml-cpu x86 `quantize_row_q8_1` |
//! | TQ1_0, TQ2_0 | Q8_K | `quantize_row_q8_K_ref` (the only one x86 has; bitnet.cpp's build FMA-contracts its rounding, [`Q8KRounding`]) |
//! | I2_S | I8_S | bitnet.cpp `quantize_row_i8_s` (per row) |
//! | IQ2_BN | Q8_K64 | ik_llama.cpp x86 `quantize_row_q8_K64` (per row) |
//!
//! Every output element is one dot product of one weight row with one activation row, so
//! threads split output rows and never a reduction: the result does not depend on the
//! thread count. Activations are quantized once per input ([`Activations`]) and shared by
//! every matmul reading that input (Q/K/V, gate/up). Every dot with a float reduction runs in
//! the order of the references' x86 AVX2 builds (`SumOrder::GgmlAvx2`) on every ISA, so
//! `BITNET_FORCE_SCALAR=1` changes the speed, never the result.

use std::sync::{Arc, OnceLock};

use bitnet_gguf::{GgmlType, GgufFile, TensorInfo};
use bitnet_kernels::float::{
    f16_to_f32_row, f32_to_bf16_row, f32_to_f16_row, vec_dot_bf16, vec_dot_f16_f32, vec_dot_f32,
};
use bitnet_kernels::gemm::{RowOrder, TILE_ROWS};
use bitnet_kernels::i2_s::{gemm_i2_s_i8_s, i2_s_dot_to_f32, I2sTensor};
use bitnet_kernels::i8_s::{quantize_row_i8_s, I8sRowMeta};
use bitnet_kernels::ik_float::{ik_gemm, ik_rows_tile, ik_tile_rows};
use bitnet_kernels::iq2_bn::{gemm_iq2_bn_q8_k64, iq2_bn_tile_rows, iq2_bn_tiled_is_faster};
use bitnet_kernels::q4_0::{vec_dot_q4_0_q8_0, BlockQ4_0};
use bitnet_kernels::q4_1::{vec_dot_q4_1_q8_1, BlockQ4_1};
use bitnet_kernels::q8_0::{
    quantize_row_q8_0_ref, quantize_row_q8_0_x86, vec_dot_q8_0_q8_0, BlockQ8_0, QK8_0,
};
use bitnet_kernels::q8_1::{quantize_row_q8_1_x86, BlockQ8_1};
use bitnet_kernels::q8_k::{quantize_row_q8_k, quantize_row_q8_k_fma, BlockQ8K, SumOrder, QK_K};
use bitnet_kernels::q8_k64::{quantize_row_q8_k64, Q8K64Header};
use bitnet_kernels::tq1_0::{repack_tq1_0_as_tq2_0, BlockTQ1_0};
use bitnet_kernels::tq2_0::{gemm_tq2_0_q8_k, BlockTQ2_0};
use bitnet_kernels::KernelError;

use bitnet_pool::Pool;
use bytemuck::Zeroable;
use half::{bf16, f16};

use crate::dequant::dequantize_row;
use crate::numerics::Numerics;
use crate::ops::{FloatDot, Q8KRounding};
use crate::ModelError;

/// The activation format a weight format is multiplied against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ActKind {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q8_1,
    Q8K,
    I8s,
    Q8K64,
}

impl ActKind {
    const ALL: [ActKind; 8] = [
        ActKind::F32,
        ActKind::F16,
        ActKind::Bf16,
        ActKind::Q8_0,
        ActKind::Q8_1,
        ActKind::Q8K,
        ActKind::I8s,
        ActKind::Q8K64,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The weight formats a [`Linear`] can hold, with their activation format; `None` for types
/// that cannot be matmul weights.
pub(crate) fn act_kind(t: GgmlType) -> Option<ActKind> {
    Some(match t {
        GgmlType::F32 => ActKind::F32,
        GgmlType::F16 => ActKind::F16,
        GgmlType::BF16 => ActKind::Bf16,
        GgmlType::Q8_0 | GgmlType::Q4_0 => ActKind::Q8_0,
        GgmlType::Q4_1 => ActKind::Q8_1,
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => ActKind::Q8K,
        GgmlType::I2_S => ActKind::I8s,
        GgmlType::IQ2_BN => ActKind::Q8K64,
        _ => return None,
    })
}

/// A weight matrix `(n, k)`: `n` rows of `k` weights (ggml dims `[k, n]`), with the
/// optional scalar that upstream's `bitnet` graph multiplies its output by.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) name: String,
    pub(crate) info: TensorInfo,
    pub(crate) act: ActKind,
    /// Row length (input width).
    pub k: usize,
    /// Rows (output width).
    pub n: usize,
    /// `{name}.scale`, applied as `y · scale` after the product (`ggml_mul`).
    pub scale: Option<f32>,
    /// The weights re-encoded at load, replacing the file's bytes (see [`Repacked`]).
    pub(crate) repacked: Option<Repacked>,
    /// F16/F32 weights in ik's tiled row layout, made by the first state with ik_llama.cpp's
    /// float products ([`Linear::prepare_ik_tiles`]).
    pub(crate) ik_tiled: OnceLock<IkTiled>,
}

/// F16 or F32 weights in [`ik_tile_rows`]'s layout, bit-identical in every product.
#[derive(Clone)]
pub(crate) enum IkTiled {
    F16(Arc<Vec<f16>>),
    F32(Arc<Vec<f32>>),
}

/// Summarizes: the rows are megabytes.
impl std::fmt::Debug for IkTiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IkTiled::F16(w) => write!(f, "F16({} elements)", w.len()),
            IkTiled::F32(w) => write!(f, "F32({} elements)", w.len()),
        }
    }
}

/// Rows read per chunk while tiling (a multiple of the tile).
const TILE_CHUNK_ROWS: usize = 64 * TILE_ROWS;

/// `w`'s rows (`row_len` elements of `X` each) laid out by `tile` (a kernel's tiling of
/// whole rows), read through the file in chunks of whole tiles so the file's bytes never
/// enter the resident set.
fn tiled_from_file<X: bytemuck::Pod>(
    file: &GgufFile,
    w: &Linear,
    row_len: usize,
    tile: impl Fn(&[X], &mut [X]) -> Result<(), KernelError>,
) -> Result<Vec<X>, ModelError> {
    let mut out = vec![X::zeroed(); w.n * row_len];
    let mut raw = vec![X::zeroed(); TILE_CHUNK_ROWS.min(w.n) * row_len];
    let row_bytes = row_len * std::mem::size_of::<X>();
    for (c, dst) in out.chunks_mut(TILE_CHUNK_ROWS * row_len).enumerate() {
        let src = &mut raw[..dst.len()];
        let start = (c * TILE_CHUNK_ROWS * row_bytes) as u64;
        file.read_tensor_range(&w.info, start, bytemuck::cast_slice_mut(src))?;
        tile(src, dst).map_err(|source| ModelError::Kernel {
            tensor: w.name.clone(),
            source,
        })?;
    }
    Ok(out)
}

/// An IQ2_BN matrix in the kernels' tiled layout ([`iq2_bn_tile_rows`]), where that runs
/// faster on this CPU ([`iq2_bn_tiled_is_faster`]).
pub(crate) fn tile_iq2_bn(file: &GgufFile, w: &Linear) -> Result<Option<Repacked>, ModelError> {
    if w.info.ggml_type != GgmlType::IQ2_BN || !iq2_bn_tiled_is_faster() {
        return Ok(None);
    }
    let k = w.k;
    let row_size = 4 + k / 4;
    let tiled = tiled_from_file(file, w, row_size, |s, d| iq2_bn_tile_rows(s, k, d))?;
    Ok(Some(Repacked::Iq2BnTiled(Arc::new(tiled))))
}

/// Weights re-encoded at load into a layout the kernels run faster, bit-identical in every
/// product. The file's bytes are read once through the file, not the mapping, so they never
/// enter the resident set: the copy replaces them.
#[derive(Clone)]
pub(crate) enum Repacked {
    /// TQ1_0 as TQ2_0 (same codes and scales; `repack_tq1_0_as_tq2_0`).
    Tq2(Arc<Vec<BlockTQ2_0>>),
    /// A float output head quantized to Q8_0 ([`crate::Model::quantize_head`]): the fast
    /// mode's copy, not bit-identical to the file's weights (unlike [`Repacked::Tq2`]).
    Q8_0(Arc<Vec<BlockQ8_0>>),
    /// IQ2_BN rows in the kernels' tiled layout ([`tile_iq2_bn`]).
    Iq2BnTiled(Arc<Vec<u8>>),
}

/// Summarizes: the blocks are megabytes.
impl std::fmt::Debug for Repacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Repacked::Tq2(b) => write!(f, "Tq2({} blocks)", b.len()),
            Repacked::Q8_0(b) => write!(f, "Q8_0({} blocks)", b.len()),
            Repacked::Iq2BnTiled(b) => write!(f, "Iq2BnTiled({} bytes)", b.len()),
        }
    }
}

/// TQ1_0 blocks read per chunk while repacking (864 KiB).
const REPACK_CHUNK_BLOCKS: usize = 16 * 1024;

/// Re-encodes a TQ1_0 tensor as TQ2_0, reading it through the file in chunks. The tensor
/// was checked to be whole blocks ([`Linear::check`]), and its size to lie inside the file.
pub(crate) fn repack_tq1_0(file: &GgufFile, info: &TensorInfo) -> Result<Repacked, ModelError> {
    let block = std::mem::size_of::<BlockTQ1_0>();
    let n_blocks = usize::try_from(info.size).unwrap_or(usize::MAX) / block;
    let mut out = vec![BlockTQ2_0::zeroed(); n_blocks];
    let mut buf = vec![BlockTQ1_0::zeroed(); REPACK_CHUNK_BLOCKS.min(n_blocks)];
    for (i, dst) in out.chunks_mut(REPACK_CHUNK_BLOCKS).enumerate() {
        let src = &mut buf[..dst.len()];
        let start = (i * REPACK_CHUNK_BLOCKS * block) as u64;
        file.read_tensor_range(info, start, bytemuck::cast_slice_mut(src))?;
        repack_tq1_0_as_tq2_0(src, dst).map_err(|source| ModelError::Kernel {
            tensor: info.name.clone(),
            source,
        })?;
    }
    Ok(Repacked::Tq2(Arc::new(out)))
}

/// Rows read per chunk while quantizing a head (256 rows of 2560 F16: 1.25 MiB).
const HEAD_CHUNK_ROWS: usize = 256;

/// Quantizes a float (F32, F16, BF16) weight to Q8_0 as llama.cpp's `quantize_row_q8_0_ref`
/// does (what `llama-quantize --output-tensor-type q8_0` writes), reading it through the
/// file in chunks of rows so its bytes never enter the resident set.
pub(crate) fn quantize_q8_0(file: &GgufFile, w: &Linear) -> Result<Repacked, ModelError> {
    let bad = |reason: String| ModelError::InvalidTensor {
        name: w.name.clone(),
        reason,
    };
    let ty = w.info.ggml_type;
    let unsupported = || ModelError::UnsupportedType {
        name: w.name.clone(),
        ggml_type: ty,
        role: "a head to quantize to Q8_0 (only F32, F16 and BF16 heads are)",
    };
    if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        return Err(unsupported());
    }
    if !w.k.is_multiple_of(QK8_0) {
        return Err(bad(format!(
            "rows of {} are not whole Q8_0 blocks of {QK8_0}",
            w.k
        )));
    }
    let kerr = |source| ModelError::Kernel {
        tensor: w.name.clone(),
        source,
    };
    let row_bytes = ty.row_size(w.k as u64).unwrap_or(0) as usize;
    let blocks_per_row = w.k / QK8_0;
    let mut out = vec![BlockQ8_0::zeroed(); w.n * blocks_per_row];
    // Read into f32 storage, so that every row is aligned for its element type.
    let mut raw = vec![0f32; (HEAD_CHUNK_ROWS.min(w.n) * row_bytes).div_ceil(4)];
    let mut row = vec![0f32; w.k];
    for (c, dst) in out.chunks_mut(HEAD_CHUNK_ROWS * blocks_per_row).enumerate() {
        let rows = dst.len() / blocks_per_row;
        let src = &mut bytemuck::cast_slice_mut::<f32, u8>(&mut raw)[..rows * row_bytes];
        file.read_tensor_range(&w.info, (c * HEAD_CHUNK_ROWS * row_bytes) as u64, src)?;
        for (r, d) in src
            .chunks_exact(row_bytes)
            .zip(dst.chunks_mut(blocks_per_row))
        {
            dequantize_row(ty, r, &mut row)
                .ok_or_else(unsupported)?
                .map_err(kerr)?;
            quantize_row_q8_0_ref(&row, d).map_err(kerr)?;
        }
    }
    Ok(Repacked::Q8_0(Arc::new(out)))
}

impl Linear {
    /// The tensor's name in the file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tensor's storage type.
    pub fn ggml_type(&self) -> GgmlType {
        self.info.ggml_type
    }

    /// Makes the tiled copy ik's float products stream ([`IkTiled`]) if this is an F16 or
    /// F32 matrix whose rows tile ([`ik_rows_tile`]) and it has none yet; the fast mode's
    /// quantized head needs none.
    pub(crate) fn prepare_ik_tiles(&self, file: &GgufFile) -> Result<(), ModelError> {
        if self.ik_tiled.get().is_some() || self.repacked.is_some() || !ik_rows_tile(self.k) {
            return Ok(());
        }
        let k = self.k;
        let tiled = match self.info.ggml_type {
            GgmlType::F16 => IkTiled::F16(Arc::new(tiled_from_file(file, self, k, |s, d| {
                ik_tile_rows(s, k, d)
            })?)),
            GgmlType::F32 => IkTiled::F32(Arc::new(tiled_from_file(file, self, k, |s, d| {
                ik_tile_rows(s, k, d)
            })?)),
            _ => return Ok(()),
        };
        // Another state may have made it meanwhile: both copies are the same.
        let _ = self.ik_tiled.set(tiled);
        Ok(())
    }

    /// Checks at load that the kernels accept this tensor's bytes (block alignment,
    /// format-specific row constraints), so that [`matmul`] cannot fail on it later.
    pub(crate) fn check(&self, file: &GgufFile) -> Result<(), ModelError> {
        let bytes = file.tensor_data(&self.info);
        let bad = |reason: String| ModelError::InvalidTensor {
            name: self.name.clone(),
            reason,
        };
        let misaligned = |_| bad("tensor data is not aligned for its block type".into());
        match self.info.ggml_type {
            GgmlType::F32 => bytemuck::try_cast_slice::<u8, f32>(bytes).map(drop),
            GgmlType::F16 => bytemuck::try_cast_slice::<u8, f16>(bytes).map(drop),
            GgmlType::BF16 => bytemuck::try_cast_slice::<u8, bf16>(bytes).map(drop),
            GgmlType::Q8_0 => bytemuck::try_cast_slice::<u8, BlockQ8_0>(bytes).map(drop),
            GgmlType::Q4_0 => bytemuck::try_cast_slice::<u8, BlockQ4_0>(bytes).map(drop),
            GgmlType::Q4_1 => bytemuck::try_cast_slice::<u8, BlockQ4_1>(bytes).map(drop),
            GgmlType::TQ1_0 => bytemuck::try_cast_slice::<u8, BlockTQ1_0>(bytes).map(drop),
            GgmlType::TQ2_0 => bytemuck::try_cast_slice::<u8, BlockTQ2_0>(bytes).map(drop),
            GgmlType::I2_S => {
                return I2sTensor::from_bytes(bytes, self.k, self.n)
                    .map(drop)
                    .map_err(|e| bad(e.to_string()))
            }
            GgmlType::IQ2_BN => {
                if self.k < bitnet_kernels::q8_k64::Q8_K64_MIN_K {
                    return Err(bad(format!(
                        "IQ2_BN rows need at least 512 weights (ik_llama.cpp's limit), got {}",
                        self.k
                    )));
                }
                return Ok(());
            }
            other => {
                return Err(ModelError::UnsupportedType {
                    name: self.name.clone(),
                    ggml_type: other,
                    role: "a matmul weight",
                })
            }
        }
        .map_err(misaligned)
    }
}

/// Quantized copies of one matmul input (`n_tok` rows of `k` floats), one slot per
/// activation format, filled on first use and shared until [`Activations::invalidate`].
/// Buffers are sized once for the largest batch and row, so a forward pass allocates
/// nothing here.
pub struct Activations {
    valid: [bool; ActKind::ALL.len()],
    f16: Vec<f16>,
    /// The F16 activations widened back to f32 (exactly), so that the dot of each weight
    /// row (the output head's 128k rows) does not convert them again: the same products
    /// and sums as ggml's F16 · F16 dot, bit for bit.
    f16_wide: Vec<f32>,
    bf16: Vec<bf16>,
    q8_0: Vec<BlockQ8_0>,
    q8_1: Vec<BlockQ8_1>,
    q8k: Vec<BlockQ8K>,
    /// I8_S and Q8_K64 quants (never both live: one input has one per-row format of each).
    i8s: Vec<i8>,
    i8s_meta: Vec<I8sRowMeta>,
    q8k64: Vec<i8>,
    q8k64_head: Vec<Q8K64Header>,
}

/// Summarizes: the buffers hold megabytes.
impl std::fmt::Debug for Activations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activations")
            .field("valid", &self.valid)
            .finish_non_exhaustive()
    }
}

impl Activations {
    /// Buffers for up to `n_tok` rows of up to `k_max` values, for the formats in `kinds`.
    pub(crate) fn new(kinds: &[ActKind], n_tok: usize, k_max: usize) -> Activations {
        let has = |k: ActKind| kinds.contains(&k);
        let n = n_tok * k_max;
        let sized = |k: ActKind, len: usize| if has(k) { len } else { 0 };
        Activations {
            valid: [false; ActKind::ALL.len()],
            f16: vec![f16::ZERO; sized(ActKind::F16, n)],
            f16_wide: vec![0.0; sized(ActKind::F16, n)],
            bf16: vec![bf16::ZERO; sized(ActKind::Bf16, n)],
            q8_0: vec![BlockQ8_0::zeroed(); sized(ActKind::Q8_0, n / QK8_0)],
            q8_1: vec![BlockQ8_1::zeroed(); sized(ActKind::Q8_1, n / QK8_0)],
            q8k: vec![BlockQ8K::zeroed(); sized(ActKind::Q8K, n / QK_K)],
            i8s: vec![0; sized(ActKind::I8s, n)],
            i8s_meta: vec![I8sRowMeta { scale: 0.0, sum: 0 }; sized(ActKind::I8s, n_tok)],
            q8k64: vec![0; sized(ActKind::Q8K64, n)],
            q8k64_head: vec![Q8K64Header::zeroed(); sized(ActKind::Q8K64, n_tok)],
        }
    }

    /// Forgets every quantized copy: the next matmul reads a new input.
    pub(crate) fn invalidate(&mut self) {
        self.valid = [false; ActKind::ALL.len()];
    }

    /// Quantizes `x` (`n_tok` rows of `k`) to `kind` unless already done.
    fn prepare(
        &mut self,
        kind: ActKind,
        q8k: Q8KRounding,
        x: &[f32],
        n_tok: usize,
        k: usize,
        pool: &Pool,
    ) -> Result<(), KernelError> {
        if self.valid[kind.index()] {
            return Ok(());
        }
        let n = n_tok * k;
        let x = &x[..n];
        // Rows are independent: a prompt's rows are quantized in parallel.
        match kind {
            ActKind::F32 => Ok(()),
            ActKind::F16 => by_rows(pool, x, k, &mut self.f16[..n], k, f32_to_f16_row)
                .and_then(|()| f16_to_f32_row(&self.f16[..n], &mut self.f16_wide[..n])),
            ActKind::Bf16 => by_rows(pool, x, k, &mut self.bf16[..n], k, f32_to_bf16_row),
            ActKind::Q8_0 => by_rows(
                pool,
                x,
                k,
                &mut self.q8_0[..n / QK8_0],
                k / QK8_0,
                quantize_row_q8_0_x86,
            ),
            ActKind::Q8_1 => by_rows(
                pool,
                x,
                k,
                &mut self.q8_1[..n / QK8_0],
                k / QK8_0,
                quantize_row_q8_1_x86,
            ),
            ActKind::Q8K => {
                let y = &mut self.q8k[..n / QK_K];
                match q8k {
                    Q8KRounding::Ref => by_rows(pool, x, k, y, k / QK_K, quantize_row_q8_k),
                    Q8KRounding::FmaContracted => {
                        by_rows(pool, x, k, y, k / QK_K, quantize_row_q8_k_fma)
                    }
                }
            }
            ActKind::I8s => by_rows_with_header(
                pool,
                x,
                k,
                &mut self.i8s[..n],
                &mut self.i8s_meta[..n_tok],
                quantize_row_i8_s,
            ),
            ActKind::Q8K64 => by_rows_with_header(
                pool,
                x,
                k,
                &mut self.q8k64[..n],
                &mut self.q8k64_head[..n_tok],
                quantize_row_q8_k64,
            ),
        }?;
        self.valid[kind.index()] = true;
        Ok(())
    }
}

/// `f(x row, y row)` for each row of `k` inputs and `per` outputs, rows in parallel when
/// there are several.
fn by_rows<T: Send>(
    pool: &Pool,
    x: &[f32],
    k: usize,
    y: &mut [T],
    per: usize,
    f: impl Fn(&[f32], &mut [T]) -> Result<(), KernelError> + Sync,
) -> Result<(), KernelError> {
    if x.len() == k {
        return f(x, y);
    }
    pool.try_for_each(x.chunks(k).zip(y.chunks_mut(per)), |(xr, yr)| f(xr, yr))
}

/// [`by_rows`] for per-row formats that return a row header (I8_S, Q8_K64): `k` quants and
/// one header per row.
fn by_rows_with_header<H: Send>(
    pool: &Pool,
    x: &[f32],
    k: usize,
    q: &mut [i8],
    heads: &mut [H],
    f: impl Fn(&[f32], &mut [i8]) -> Result<H, KernelError> + Sync,
) -> Result<(), KernelError> {
    if let [h] = heads {
        *h = f(x, q)?;
        return Ok(());
    }
    let rows = x.chunks(k).zip(q.chunks_mut(k)).zip(heads.iter_mut());
    pool.try_for_each(rows, |((xr, qr), h)| {
        *h = f(xr, qr)?;
        Ok(())
    })
}

/// Typed views of one weight tensor and its prepared activations.
enum Operands<'a> {
    F32(&'a [f32], &'a [f32]),
    /// F16 weights and the F16-rounded activations as f32 (see `Activations::f16_wide`).
    F16(&'a [f16], &'a [f32]),
    /// ik's float products: the weights (row-major or tiled) and the f32 activations.
    IkF32(&'a [f32], RowOrder, &'a [f32]),
    IkF16(&'a [f16], RowOrder, &'a [f32]),
    Bf16(&'a [bf16], &'a [bf16]),
    Q8_0(&'a [BlockQ8_0], &'a [BlockQ8_0]),
    Q4_0(&'a [BlockQ4_0], &'a [BlockQ8_0]),
    Q4_1(&'a [BlockQ4_1], &'a [BlockQ8_1]),
    Tq2(&'a [BlockTQ2_0], &'a [BlockQ8K]),
    I2s(I2sTensor<'a>, &'a [i8], &'a [I8sRowMeta]),
    /// The rows (file layout or tiled), the row size, the quants and their headers.
    Iq2Bn(&'a [u8], RowOrder, usize, &'a [i8], &'a [Q8K64Header]),
}

/// Weight row `r` and activation row `t` of two row-major operands with `per` elements (or
/// blocks) per row.
fn row_pair<'s, W, A>(
    w: &'s [W],
    a: &'s [A],
    r: usize,
    t: usize,
    per: usize,
) -> (&'s [W], &'s [A]) {
    (&w[r * per..(r + 1) * per], &a[t * per..(t + 1) * per])
}

/// `out[i · n_tok + t] = dot(r0 + i, t)`: one dot product per output, for the formats
/// without a many-token kernel.
fn each_dot(
    r0: usize,
    n_tok: usize,
    out: &mut [f32],
    dot: impl Fn(usize, usize) -> Result<f32, KernelError>,
) -> Result<(), KernelError> {
    // Shape: out (rows, n_tok).
    for (i, row) in out.chunks_exact_mut(n_tok).enumerate() {
        for (t, y) in row.iter_mut().enumerate() {
            *y = dot(r0 + i, t)?;
        }
    }
    Ok(())
}

impl Operands<'_> {
    /// Weight rows `r0..r0 + out.len() / n_tok` against every activation row:
    /// `out[i · n_tok + t]` = weight row `r0 + i` · activation row `t`; rows have `k`
    /// elements. The ternary formats run their many-token kernels (each weight block
    /// decoded once per 4 tokens); the others one dot per output.
    fn rows(&self, r0: usize, n_tok: usize, k: usize, out: &mut [f32]) -> Result<(), KernelError> {
        let r1 = r0 + out.len() / n_tok;
        let order = SumOrder::GgmlAvx2;
        match self {
            Operands::F32(w, a) => each_dot(r0, n_tok, out, |r, t| {
                let (w, a) = row_pair(w, a, r, t, k);
                vec_dot_f32(order, w, a)
            }),
            Operands::F16(w, a) => each_dot(r0, n_tok, out, |r, t| {
                let (w, a) = row_pair(w, a, r, t, k);
                vec_dot_f16_f32(order, w, a)
            }),
            // Tasks start on whole tiles (`matmul`), so a tiled slice of rows is whole tiles
            // and, at the end, the row-major rest.
            Operands::IkF32(w, order, a) => ik_gemm(&w[r0 * k..r1 * k], *order, a, n_tok, out),
            Operands::IkF16(w, order, a) => ik_gemm(&w[r0 * k..r1 * k], *order, a, n_tok, out),
            Operands::Bf16(w, a) => each_dot(r0, n_tok, out, |r, t| {
                let (w, a) = row_pair(w, a, r, t, k);
                vec_dot_bf16(order, w, a)
            }),
            Operands::Q8_0(w, a) => each_dot(r0, n_tok, out, |r, t| {
                let (w, a) = row_pair(w, a, r, t, k / QK8_0);
                vec_dot_q8_0_q8_0(order, w, a)
            }),
            Operands::Q4_0(w, a) => each_dot(r0, n_tok, out, |r, t| {
                let (w, a) = row_pair(w, a, r, t, k / QK8_0);
                vec_dot_q4_0_q8_0(order, w, a)
            }),
            Operands::Q4_1(w, a) => each_dot(r0, n_tok, out, |r, t| {
                let (w, a) = row_pair(w, a, r, t, k / QK8_0);
                vec_dot_q4_1_q8_1(order, w, a)
            }),
            Operands::Tq2(w, a) => {
                let nb = k / QK_K;
                gemm_tq2_0_q8_k(order, &w[r0 * nb..r1 * nb], a, n_tok, out)
            }
            Operands::I2s(w, q, meta) => {
                let blocks = w.rows(r0..r1).unwrap_or_default();
                // The integer sums land in `out`'s bytes, then become floats in place.
                gemm_i2_s_i8_s(blocks, q, n_tok, bytemuck::cast_slice_mut(out))?;
                for row in out.chunks_exact_mut(n_tok) {
                    for (y, m) in row.iter_mut().zip(meta.iter()) {
                        let sumi = y.to_bits() as i32;
                        *y = i2_s_dot_to_f32(sumi, m, w.scale());
                    }
                }
                Ok(())
            }
            Operands::Iq2Bn(bytes, order, row_size, q, heads) => {
                let w = &bytes[r0 * row_size..r1 * row_size];
                gemm_iq2_bn_q8_k64(w, *order, q, heads, out)
            }
        }
    }
}

fn cast<T: bytemuck::AnyBitPattern>(bytes: &[u8]) -> &[T] {
    // Alignment and size were checked at load (`Linear::check`).
    bytemuck::try_cast_slice(bytes).unwrap_or_default()
}

/// `out = W · x` for `n_tok` activation rows (without the `.scale`, see [`apply_scale`]): x: (n_tok, k), out: (n_tok, n). `tmp` holds at
/// least `n · n_tok` floats (rows are computed as (n, n_tok) so that one thread walks one
/// weight row across every token, then transposed).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    file: &GgufFile,
    w: &Linear,
    acts: &mut Activations,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    tmp: &mut [f32],
    numerics: &Numerics,
    pool: &Pool,
) -> Result<(), ModelError> {
    let (k, n) = (w.k, w.n);
    let ik = numerics.float_dot == FloatDot::IkGemm;
    // ik's float GEMM keeps the activations in f32 even against F16 weights.
    let act = if ik && w.act == ActKind::F16 {
        ActKind::F32
    } else {
        w.act
    };
    let kerr = |source| ModelError::Kernel {
        tensor: w.name.clone(),
        source,
    };
    acts.prepare(act, numerics.q8k, x, n_tok, k, pool)
        .map_err(kerr)?;
    let bytes = file.tensor_data(&w.info);
    let nk = n_tok * k;
    let ops = if let Some(Repacked::Q8_0(b)) = &w.repacked {
        // The fast mode's quantized head, in place of the file's float weights.
        Operands::Q8_0(b, &acts.q8_0[..nk / QK8_0])
    } else {
        match w.info.ggml_type {
            GgmlType::F32 if ik => match w.ik_tiled.get() {
                Some(IkTiled::F32(t)) => Operands::IkF32(t, RowOrder::Tiled, &x[..nk]),
                _ => Operands::IkF32(cast(bytes), RowOrder::RowMajor, &x[..nk]),
            },
            GgmlType::F16 if ik => match w.ik_tiled.get() {
                Some(IkTiled::F16(t)) => Operands::IkF16(t, RowOrder::Tiled, &x[..nk]),
                _ => Operands::IkF16(cast(bytes), RowOrder::RowMajor, &x[..nk]),
            },
            GgmlType::F32 => Operands::F32(cast(bytes), &x[..nk]),
            GgmlType::F16 => Operands::F16(cast(bytes), &acts.f16_wide[..nk]),
            GgmlType::BF16 => Operands::Bf16(cast(bytes), &acts.bf16[..nk]),
            GgmlType::Q8_0 => Operands::Q8_0(cast(bytes), &acts.q8_0[..nk / QK8_0]),
            GgmlType::Q4_0 => Operands::Q4_0(cast(bytes), &acts.q8_0[..nk / QK8_0]),
            GgmlType::Q4_1 => Operands::Q4_1(cast(bytes), &acts.q8_1[..nk / QK8_0]),
            // TQ1_0 runs as its TQ2_0 re-encoding (a missing one is an empty tensor: a shape
            // error from the kernel, not a panic).
            GgmlType::TQ1_0 => Operands::Tq2(
                match &w.repacked {
                    Some(Repacked::Tq2(b)) => b,
                    _ => &[],
                },
                &acts.q8k[..nk / QK_K],
            ),
            GgmlType::TQ2_0 => Operands::Tq2(cast(bytes), &acts.q8k[..nk / QK_K]),
            GgmlType::I2_S => Operands::I2s(
                I2sTensor::from_bytes(bytes, k, n).map_err(|source| ModelError::Kernel {
                    tensor: w.name.clone(),
                    source,
                })?,
                &acts.i8s[..nk],
                &acts.i8s_meta[..n_tok],
            ),
            GgmlType::IQ2_BN => {
                let (w, order) = match &w.repacked {
                    Some(Repacked::Iq2BnTiled(t)) => (t.as_slice(), RowOrder::Tiled),
                    _ => (bytes, RowOrder::RowMajor),
                };
                Operands::Iq2Bn(
                    w,
                    order,
                    4 + k / 4,
                    &acts.q8k64[..nk],
                    &acts.q8k64_head[..n_tok],
                )
            }
            other => {
                return Err(ModelError::UnsupportedType {
                    name: w.name.clone(),
                    ggml_type: other,
                    role: "a matmul weight",
                })
            }
        }
    };
    // Rows per task: enough tasks to balance the pool, each a run of whole weight rows
    // starting on a whole tile of ik's tiled layout.
    let rows_per_task = n.div_ceil(pool.threads() * 8).next_multiple_of(TILE_ROWS);
    if n_tok == 1 {
        // Shape: out (n) = (n, 1), weight row-major.
        return pool
            .try_for_each(out[..n].chunks_mut(rows_per_task).enumerate(), |(c, o)| {
                ops.rows(c * rows_per_task, 1, k, o)
            })
            .map_err(kerr);
    }
    // Several tokens: each task computes its rows' outputs as (rows, n_tok) into its part
    // of `tmp`, then, while that is still in cache, writes them to its columns of `out`
    // (n_tok, n): one segment of every token's row.
    let n_tasks = n.div_ceil(rows_per_task);
    let mut columns: Vec<Vec<&mut [f32]>> =
        (0..n_tasks).map(|_| Vec::with_capacity(n_tok)).collect();
    for token_row in out[..n_tok * n].chunks_mut(n) {
        for (task, segment) in columns.iter_mut().zip(token_row.chunks_mut(rows_per_task)) {
            task.push(segment);
        }
    }
    let tasks = tmp[..n * n_tok]
        .chunks_mut(rows_per_task * n_tok)
        .zip(columns);
    pool.try_for_each(tasks.enumerate(), |(c, (o, segments))| {
        ops.rows(c * rows_per_task, n_tok, k, o)?;
        // Shape: o (rows, n_tok) → segments[t][r].
        for (t, segment) in segments.into_iter().enumerate() {
            for (r, y) in segment.iter_mut().enumerate() {
                *y = o[r * n_tok + t];
            }
        }
        Ok(())
    })
    .map_err(kerr)
}

/// Multiplies a matmul output by the weight's `.scale`, if it has one (`ggml_mul` with a
/// `{1}` tensor). out: (n_tok, n).
pub(crate) fn apply_scale(w: &Linear, out: &mut [f32]) {
    if let Some(s) = w.scale {
        for y in out {
            *y *= s;
        }
    }
}
