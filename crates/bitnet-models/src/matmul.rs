//! Row-parallel matrix × activations products. What each weight format needs (its
//! activation format and quantizer, checks, tiled layout, products on every ISA) is its
//! entry in the kernels' table ([`bitnet_kernels::format::FORMATS`], ggml's `type_traits`);
//! this module binds tensors to entries, makes the load-time copies (TQ1_0 as TQ2_0, tiled
//! rows, the fast mode's Q8_0 head) and splits the products over the pool.
//!
//! Every output element is one dot product of one weight row with one activation row, so
//! threads split output rows and never a reduction: the result does not depend on the
//! thread count. Activations are quantized once per input ([`Activations`]) and shared by
//! every matmul reading that input (Q/K/V, gate/up). Every dot with a float reduction runs in
//! the order of the references' x86 AVX2 builds (`SumOrder::GgmlAvx2`) on every ISA, so
//! `BITNET_FORCE_SCALAR=1` changes the speed, never the result.

use std::sync::{Arc, Mutex, OnceLock};

use bitnet_gguf::{GgmlType, GgufFile, TensorInfo};
use bitnet_kernels::format::{
    ActBuffers, ActFormat, AlignedBytes, Product, RowJobs, TileFn, WeightFormat,
};
use bitnet_kernels::gemm::{RowOrder, TILE_ROWS};
use bitnet_kernels::q8_0::{quantize_row_q8_0_ref, BlockQ8_0, QK8_0};
use bitnet_kernels::tq1_0::{repack_tq1_0_as_tq2_0, BlockTQ1_0};
use bitnet_kernels::tq2_0::BlockTQ2_0;
use bitnet_kernels::{Isa, KernelError};

use bitnet_pool::Pool;
use bytemuck::Zeroable;

use crate::dequant::dequantize_row;
use crate::numerics::Numerics;
use crate::ops::{FloatDot, Q8KRounding};
use crate::ModelError;

/// A weight matrix `(n, k)`: `n` rows of `k` weights (ggml dims `[k, n]`), with the
/// optional scalar that upstream's `bitnet` graph multiplies its output by.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) name: String,
    pub(crate) info: TensorInfo,
    /// The file format's entry in the kernels' table.
    pub(crate) format: &'static WeightFormat,
    /// Row length (input width).
    pub k: usize,
    /// Rows (output width).
    pub n: usize,
    /// `{name}.scale`, applied as `y · scale` after the product (`ggml_mul`).
    pub scale: Option<f32>,
    /// The weights re-encoded at load, replacing the file's bytes (see [`Repacked`]).
    pub(crate) repacked: Option<Repacked>,
    /// The weights in their format's tiled layout for ik_llama.cpp's products, made by the
    /// first state with those numerics ([`Linear::prepare_copies`]).
    pub(crate) ik_tiled: OnceLock<Arc<AlignedBytes>>,
    /// The file's bytes copied into memory for the products that read rows in the file's
    /// layout, made by the first state that reads them ([`Linear::prepare_copies`]).
    pub(crate) in_memory: OnceLock<Arc<AlignedBytes>>,
}

/// Weights re-encoded at load into another format or layout. The file's bytes are read once
/// through the file, not the mapping, so they never enter the resident set: the copy
/// replaces them.
#[derive(Debug, Clone)]
pub(crate) struct Repacked {
    /// The copy's format: TQ2_0 for TQ1_0 (same codes and scales), Q8_0 for a quantized
    /// head, the file's own when only the layout changed.
    pub(crate) format: &'static WeightFormat,
    pub(crate) order: RowOrder,
    pub(crate) bytes: Arc<AlignedBytes>,
    /// Whether every product equals the file weights' bit for bit (not so for the fast
    /// mode's quantized head).
    pub(crate) exact: bool,
}

/// Rows read per chunk while tiling (a multiple of the tile).
const TILE_CHUNK_ROWS: usize = 64 * TILE_ROWS;

/// `w`'s rows laid out by `tile` (a format's tiling of whole rows), read through the file in
/// chunks of whole tiles so the file's bytes never enter the resident set.
fn tiled_from_file(file: &GgufFile, w: &Linear, tile: TileFn) -> Result<AlignedBytes, ModelError> {
    let row_bytes = w.format.row_bytes(w.k);
    let mut out = AlignedBytes::zeroed(w.n * row_bytes);
    let mut raw = AlignedBytes::zeroed(TILE_CHUNK_ROWS.min(w.n) * row_bytes);
    for (c, dst) in out
        .as_bytes_mut()
        .chunks_mut(TILE_CHUNK_ROWS * row_bytes)
        .enumerate()
    {
        let src = &mut raw.as_bytes_mut()[..dst.len()];
        let start = (c * TILE_CHUNK_ROWS * row_bytes) as u64;
        file.read_tensor_range(&w.info, start, src)?;
        tile(src, w.k, dst).map_err(|source| ModelError::Kernel {
            tensor: w.name.clone(),
            source,
        })?;
    }
    Ok(out)
}

/// A tensor's bytes as they are in the file (its extent checked at load), read through the
/// file so the mapping's pages never enter the resident set.
fn copied_from_file(file: &GgufFile, info: &TensorInfo) -> Result<AlignedBytes, ModelError> {
    let mut out = AlignedBytes::zeroed(file.tensor_data(info).len());
    file.read_tensor_range(info, 0, out.as_bytes_mut())?;
    Ok(out)
}

/// The load-time copy of `w`, if its format has one: TQ1_0 re-encoded as TQ2_0, or rows in
/// their format's tiled layout where that runs faster on this CPU under ggml's numerics.
pub(crate) fn repack(file: &GgufFile, w: &Linear) -> Result<Option<Repacked>, ModelError> {
    if w.info.ggml_type == GgmlType::TQ1_0 {
        return repack_tq1_0(file, &w.info).map(Some);
    }
    let Some(tile) = w.format.tiling(w.k, false) else {
        return Ok(None);
    };
    Ok(Some(Repacked {
        format: w.format,
        order: RowOrder::Tiled,
        bytes: Arc::new(tiled_from_file(file, w, tile)?),
        exact: true,
    }))
}

/// The table entry of `t`, a format the engine re-encodes weights into.
fn format_of(t: GgmlType, name: &str) -> Result<&'static WeightFormat, ModelError> {
    WeightFormat::of(t).ok_or_else(|| ModelError::UnsupportedType {
        name: name.to_owned(),
        ggml_type: t,
        role: "a matmul weight",
    })
}

/// TQ1_0 blocks read per chunk while repacking (864 KiB).
const REPACK_CHUNK_BLOCKS: usize = 16 * 1024;

/// Re-encodes a TQ1_0 tensor as TQ2_0, reading it through the file in chunks. The tensor
/// was checked to be whole blocks ([`Linear::check`]), and its size to lie inside the file.
fn repack_tq1_0(file: &GgufFile, info: &TensorInfo) -> Result<Repacked, ModelError> {
    let block = std::mem::size_of::<BlockTQ1_0>();
    let n_blocks = usize::try_from(info.size).unwrap_or(usize::MAX) / block;
    let mut out = AlignedBytes::zeroed(n_blocks * std::mem::size_of::<BlockTQ2_0>());
    let blocks: &mut [BlockTQ2_0] = bytemuck::cast_slice_mut(out.as_bytes_mut());
    let mut buf = vec![BlockTQ1_0::zeroed(); REPACK_CHUNK_BLOCKS.min(n_blocks)];
    for (i, dst) in blocks.chunks_mut(REPACK_CHUNK_BLOCKS).enumerate() {
        let src = &mut buf[..dst.len()];
        let start = (i * REPACK_CHUNK_BLOCKS * block) as u64;
        file.read_tensor_range(info, start, bytemuck::cast_slice_mut(src))?;
        repack_tq1_0_as_tq2_0(src, dst).map_err(|source| ModelError::Kernel {
            tensor: info.name.clone(),
            source,
        })?;
    }
    Ok(Repacked {
        format: format_of(GgmlType::TQ2_0, &info.name)?,
        order: RowOrder::RowMajor,
        bytes: Arc::new(out),
        exact: true,
    })
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
    let row_bytes = w.format.row_bytes(w.k);
    let blocks_per_row = w.k / QK8_0;
    let mut out = AlignedBytes::zeroed(w.n * blocks_per_row * std::mem::size_of::<BlockQ8_0>());
    let blocks: &mut [BlockQ8_0] = bytemuck::cast_slice_mut(out.as_bytes_mut());
    let mut raw = AlignedBytes::zeroed(HEAD_CHUNK_ROWS.min(w.n) * row_bytes);
    let mut row = vec![0f32; w.k];
    for (c, dst) in blocks
        .chunks_mut(HEAD_CHUNK_ROWS * blocks_per_row)
        .enumerate()
    {
        let rows = dst.len() / blocks_per_row;
        let src = &mut raw.as_bytes_mut()[..rows * row_bytes];
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
    Ok(Repacked {
        format: format_of(GgmlType::Q8_0, &w.name)?,
        order: RowOrder::RowMajor,
        bytes: Arc::new(out),
        exact: false,
    })
}

impl Linear {
    /// Binds tensor `info` as a matrix of `n` rows of `k`; `None` if its type cannot be a
    /// matmul weight.
    pub(crate) fn new(
        name: String,
        info: TensorInfo,
        k: usize,
        n: usize,
        scale: Option<f32>,
    ) -> Option<Linear> {
        Some(Linear {
            format: WeightFormat::of(info.ggml_type)?,
            name,
            info,
            k,
            n,
            scale,
            repacked: None,
            ik_tiled: OnceLock::new(),
            in_memory: OnceLock::new(),
        })
    }

    /// The tensor's name in the file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tensor's storage type.
    pub fn ggml_type(&self) -> GgmlType {
        self.info.ggml_type
    }

    /// The format the products read: the copy's if the weights were re-encoded.
    fn product_format(&self) -> &'static WeightFormat {
        self.repacked.as_ref().map_or(self.format, |r| r.format)
    }

    /// The activation format the products take under ik_llama.cpp's numerics (`ik`) or
    /// ggml's.
    pub(crate) fn act(&self, ik: bool) -> ActFormat {
        self.product_format().product(ik).0
    }

    /// Makes the copy a state's products (ik_llama.cpp's if `ik`) stream, if it has none
    /// yet: the tiled layout where the format tiles under them, the file's bytes otherwise.
    /// A load-time re-encoding ([`Repacked`]) is the copy every state reads. Each is read
    /// through the file, so the mapping's pages never enter the resident set: the weights
    /// are resident once, in memory the products stream faster than the file's mapping
    /// (2B-4T decode, Zen 4, 1 thread, alternating runs: TQ2_0 13.7 / 14.2 -> 15.5 / 16.3
    /// tok/s, I2_S 16.3 / 17.1 -> 16.5 / 17.4; a TQ1_0 file's load-time TQ2_0 copy ran at
    /// 19.0 while the same bytes mapped from a TQ2_0 file ran at 16.5).
    pub(crate) fn prepare_copies(&self, file: &GgufFile, ik: bool) -> Result<(), ModelError> {
        if self.repacked.is_some() {
            return Ok(());
        }
        match self.format.tiling(self.k, true).filter(|_| ik) {
            Some(tile) if self.ik_tiled.get().is_none() => {
                let tiled = Arc::new(tiled_from_file(file, self, tile)?);
                // Another state may have made it meanwhile: both copies are the same.
                let _ = self.ik_tiled.set(tiled);
            }
            None if self.in_memory.get().is_none() => {
                let _ = self
                    .in_memory
                    .set(Arc::new(copied_from_file(file, &self.info)?));
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks at load that the kernels accept this tensor's bytes (size, block alignment,
    /// format-specific row constraints), so that [`matmul`] cannot fail on it later.
    pub(crate) fn check(&self, file: &GgufFile) -> Result<(), ModelError> {
        self.format
            .check(file.tensor_data(&self.info), self.k, self.n)
            .map_err(|e| ModelError::InvalidTensor {
                name: self.name.clone(),
                reason: e.to_string(),
            })
    }
}

/// Quantized copies of one matmul input (`n_tok` rows of `k` floats), one per activation
/// format, made on first use and shared until [`Activations::invalidate`] (Q/K/V read one,
/// gate/up another). Buffers are sized once for the largest batch and row, so a forward
/// pass allocates nothing here.
#[derive(Debug)]
pub struct Activations {
    valid: [bool; ActFormat::ALL.len()],
    bufs: ActBuffers,
}

/// The engine's pool running a quantizer's rows (a prompt's rows in parallel).
struct PoolRows<'p>(&'p Pool);

impl RowJobs for PoolRows<'_> {
    fn for_each<I, F>(&self, items: I, f: F) -> Result<(), KernelError>
    where
        I: Iterator + Send,
        I::Item: Send,
        F: Fn(I::Item) -> Result<(), KernelError> + Sync,
    {
        self.0.try_for_each(items, f)
    }
}

impl Activations {
    /// Buffers for up to `n_tok` rows of up to `k_max` values, for the formats in `kinds`.
    pub(crate) fn new(kinds: &[ActFormat], n_tok: usize, k_max: usize) -> Activations {
        Activations {
            valid: [false; ActFormat::ALL.len()],
            bufs: ActBuffers::new(kinds, n_tok, k_max),
        }
    }

    /// Forgets every quantized copy: the next matmul reads a new input.
    pub(crate) fn invalidate(&mut self) {
        self.valid = [false; ActFormat::ALL.len()];
    }

    /// Quantizes `x` (`n_tok` rows of `k`) to `kind` unless already done.
    fn prepare(
        &mut self,
        kind: ActFormat,
        q8k: Q8KRounding,
        x: &[f32],
        n_tok: usize,
        k: usize,
        pool: &Pool,
    ) -> Result<(), KernelError> {
        if self.valid[kind.index()] {
            return Ok(());
        }
        let fma = q8k == Q8KRounding::FmaContracted;
        self.bufs
            .quantize(kind, x, n_tok, k, fma, &PoolRows(pool))?;
        self.valid[kind.index()] = true;
        Ok(())
    }
}

/// Weight rows per task of a product with `n` outputs on `threads` threads: enough tasks
/// to balance the pool, each a run of whole weight rows starting on a whole tile of ik's
/// tiled layout.
fn rows_per_task(n: usize, threads: usize) -> usize {
    n.div_ceil(threads * 8).next_multiple_of(TILE_ROWS)
}

/// Floats of [`matmul`]'s `tmp` for products of up to `n` outputs and `n_tok` tokens on
/// `threads` threads: one slot of (rows per task, n_tok) per thread.
pub(crate) fn matmul_scratch_len(n: usize, n_tok: usize, threads: usize) -> usize {
    rows_per_task(n, threads) * n_tok * threads
}

/// `out = W · x` for `n_tok` activation rows (without the `.scale`, see [`apply_scale`]):
/// x: (n_tok, k), out: (n_tok, n). `tmp` holds [`matmul_scratch_len`] floats: a task
/// computes its rows as (rows, n_tok), so that one thread walks one weight row across
/// every token, into a slot of `tmp`, then transposes them into `out`.
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
    let kerr = |source| ModelError::Kernel {
        tensor: w.name.clone(),
        source,
    };
    // The bytes the products read: a load-time copy, ik's tiles, or the file's.
    let (format, order, bytes) = match (&w.repacked, w.ik_tiled.get(), w.in_memory.get()) {
        (Some(r), _, _) => (r.format, r.order, r.bytes.as_bytes()),
        (None, Some(tiled), _) if ik => (w.format, RowOrder::Tiled, tiled.as_bytes()),
        (None, _, Some(copy)) => (w.format, RowOrder::RowMajor, copy.as_bytes()),
        _ => (w.format, RowOrder::RowMajor, file.tensor_data(&w.info)),
    };
    let (act, gemm) = format.product(ik);
    acts.prepare(act, numerics.q8k, x, n_tok, k, pool)
        .map_err(kerr)?;
    let product = Product {
        w: bytes,
        order,
        k,
        n,
        acts: acts.bufs.view(act, x, n_tok, k),
        n_tok,
    };
    let isa = Isa::best();
    let rows = |r0: usize, out: &mut [f32]| gemm(isa, &product, r0..r0 + out.len() / n_tok, out);
    let rows_per_task = rows_per_task(n, pool.threads());
    if n_tok == 1 {
        // Shape: out (n) = (n, 1), weight row-major.
        return pool
            .try_for_each(out[..n].chunks_mut(rows_per_task).enumerate(), |(c, o)| {
                rows(c * rows_per_task, o)
            })
            .map_err(kerr);
    }
    // Several tokens: each task computes its rows' outputs as (rows, n_tok) into a slot of
    // `tmp`, then, while that is still in cache, writes them to its columns of `out`
    // (n_tok, n): one segment of every token's row. At most `pool.threads()` tasks run at
    // once, so one slot per thread is enough (should none be free, a task allocates one:
    // slower, never wrong). The slots keep the scratch to what runs at once, not all of
    // `n · n_tok` (3.5 MB of a 128-token batch through 2B-4T's FFN).
    let n_tasks = n.div_ceil(rows_per_task);
    let mut columns: Vec<Vec<&mut [f32]>> =
        (0..n_tasks).map(|_| Vec::with_capacity(n_tok)).collect();
    for token_row in out[..n_tok * n].chunks_mut(n) {
        for (task, segment) in columns.iter_mut().zip(token_row.chunks_mut(rows_per_task)) {
            task.push(segment);
        }
    }
    let slot_len = rows_per_task * n_tok;
    let slots: Vec<Mutex<&mut [f32]>> = tmp
        .chunks_exact_mut(slot_len)
        .take(pool.threads())
        .map(Mutex::new)
        .collect();
    pool.try_for_each(columns.into_iter().enumerate(), |(c, mut segments)| {
        let len = segments.first().map_or(0, |s| s.len()) * n_tok;
        with_slot(&slots, len, |o| {
            rows(c * rows_per_task, o)?;
            transpose_into(o, n_tok, &mut segments);
            Ok(())
        })
    })
    .map_err(kerr)
}

/// Rows of `o` read per pass of [`transpose_into`]: their 32 cache lines (at most 128
/// tokens of each) stay in L1 while every token takes its 32 values (864 rows × 128
/// tokens, Zen 4: 68 µs row by row through each token, 38 µs in blocks of 32; 16: 60,
/// 8: 44).
const TRANSPOSE_ROWS: usize = 32;

/// `o` (rows, n_tok) into `segments[t][r]` (every segment `rows` long), a block of
/// [`TRANSPOSE_ROWS`] rows at a time.
fn transpose_into(o: &[f32], n_tok: usize, segments: &mut [&mut [f32]]) {
    let rows = segments.first().map_or(0, |s| s.len());
    for r0 in (0..rows).step_by(TRANSPOSE_ROWS) {
        let r1 = (r0 + TRANSPOSE_ROWS).min(rows);
        for (t, segment) in segments.iter_mut().enumerate() {
            for (r, y) in (r0..r1).zip(&mut segment[r0..r1]) {
                *y = o[r * n_tok + t];
            }
        }
    }
}

/// Runs `f` on `len` floats of the first free slot long enough, or of a fresh buffer
/// should there be none (never with one slot per running task; slower, never wrong).
fn with_slot<R>(slots: &[Mutex<&mut [f32]>], len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let free = slots
        .iter()
        .filter_map(|s| s.try_lock().ok())
        .find(|s| s.len() >= len);
    match free {
        Some(mut slot) => f(&mut slot[..len]),
        None => f(&mut vec![0.0; len]),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_takes_a_free_slot_or_its_own_buffer() {
        let (mut a, mut b) = ([0.0f32; 4], [0.0f32; 2]);
        {
            let slots = [Mutex::new(&mut a[..]), Mutex::new(&mut b[..])];
            // The first slot is free and long enough.
            with_slot(&slots, 3, |o| o.fill(1.0));
            // The first slot taken: the second is too short, so a fresh buffer serves.
            let held = slots[0].lock().unwrap();
            let len = with_slot(&slots, 3, |o| {
                o.fill(2.0);
                o.len()
            });
            assert_eq!(len, 3);
            // Short enough for the second slot, with the first still taken.
            with_slot(&slots, 2, |o| o.fill(3.0));
            drop(held);
        }
        assert_eq!(a, [1.0, 1.0, 1.0, 0.0]);
        assert_eq!(b, [3.0, 3.0]);
    }

    #[test]
    fn the_scratch_holds_one_slot_per_thread_of_the_widest_product() {
        // 2B-4T's FFN (6912 rows) in a 128-token batch: 864 rows per task on one thread.
        assert_eq!(rows_per_task(6912, 1), 864);
        assert_eq!(matmul_scratch_len(6912, 128, 1), 864 * 128);
        // Wider products never need smaller slots.
        for threads in 1..5 {
            assert!(rows_per_task(128_256, threads) >= rows_per_task(6912, threads));
            assert_eq!(rows_per_task(100, threads) % TILE_ROWS, 0);
        }
    }

    #[test]
    fn transposing_writes_every_row_of_every_token() {
        // 70 rows: two whole blocks of TRANSPOSE_ROWS and a partial one; 5 tokens.
        let (rows, n_tok) = (2 * TRANSPOSE_ROWS + 6, 5);
        let o: Vec<f32> = (0..rows * n_tok).map(|i| i as f32).collect();
        let mut out = vec![-1.0f32; n_tok * (rows + 3)];
        let mut segments: Vec<_> = out.chunks_mut(rows + 3).map(|c| &mut c[..rows]).collect();
        transpose_into(&o, n_tok, &mut segments);
        for (t, row) in out.chunks(rows + 3).enumerate() {
            for (r, &y) in row[..rows].iter().enumerate() {
                assert_eq!(y, o[r * n_tok + t], "token {t}, row {r}");
            }
            // Past the segment: untouched.
            assert_eq!(row[rows..], [-1.0; 3]);
        }
    }
}
