//! One entry per weight format, as ggml's `type_traits` and `type_traits_cpu` are: block
//! size and bytes, the activation format it multiplies against (ggml's `vec_dot_type`), the
//! load-time check, the reference quantizer, the tiled layout and the many-row product on
//! every [`Isa`] ([`Isa::Scalar`] is the oracle every fast path is tested against). Model
//! binding, the matmul and the benches read this table instead of matching on the format.
//!
//! Products run in the references' x86 AVX2 summation order ([`SumOrder::GgmlAvx2`]) on
//! every ISA, the only order the engine runs; the format modules' functions take other
//! orders for tests.

use std::ops::Range;

use bytemuck::Pod;
use half::{bf16, f16};

use crate::cpu::Isa;
use crate::float::{
    expect_len, f16_to_f32_row, f32_to_bf16_row, f32_to_f16_row, vec_dot_bf16_with,
    vec_dot_f16_f32_with, vec_dot_f32_with, vec_dot_rows_with, FloatRows, Rows,
};
use crate::gemm::RowOrder;
use crate::i2_s::{gemm_i2_s_i8_s_with, i2_s_dot_to_f32, quantize_i2_s_ref, I2sTensor, QK_I2_S};
use crate::i8_s::{quantize_row_i8_s, I8sRowMeta};
use crate::ik_float::{ik_gemm_with, ik_rows_tile, ik_tile_rows};
use crate::iq2_bn::{
    gemm_iq2_bn_q8_k64_with, iq2_bn_tile_rows, iq2_bn_tiled_is_faster, quantize_row_iq2_bn_ref,
    QK_IQ2_BN,
};
use crate::q4_0::{quantize_row_q4_0_ref, vec_dot_q4_0_q8_0_with, BlockQ4_0};
use crate::q4_1::{quantize_row_q4_1_ref, vec_dot_q4_1_q8_1_with, BlockQ4_1};
use crate::q8_0::{
    quantize_row_q8_0_ref, quantize_row_q8_0_x86, vec_dot_q8_0_q8_0_with, BlockQ8_0, QK8_0,
};
use crate::q8_1::{quantize_row_q8_1_x86, BlockQ8_1};
use crate::q8_k::{quantize_row_q8_k, quantize_row_q8_k_fma, BlockQ8K, QK_K};
use crate::q8_k64::{quantize_row_q8_k64, Q8K64Header, Q8_K64_MIN_K};
use crate::tq1_0::{gemm_tq1_0_q8_k_with, quantize_row_tq1_0_ref, BlockTQ1_0};
use crate::tq2_0::{gemm_tq2_0_q8_k_with, quantize_row_tq2_0_ref, BlockTQ2_0};
use crate::{GgmlType, KernelError, SumOrder};

/// The order every product of the table sums in.
const ORDER: SumOrder = SumOrder::GgmlAvx2;

/// The activation formats weights are multiplied against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActFormat {
    F32,
    /// F16-rounded activations, held widened back to f32 ([`Acts::F16Wide`]).
    F16,
    Bf16,
    Q8_0,
    Q8_1,
    Q8K,
    I8s,
    Q8K64,
}

impl ActFormat {
    pub const ALL: [ActFormat; 8] = [
        ActFormat::F32,
        ActFormat::F16,
        ActFormat::Bf16,
        ActFormat::Q8_0,
        ActFormat::Q8_1,
        ActFormat::Q8K,
        ActFormat::I8s,
        ActFormat::Q8K64,
    ];

    /// The format's position in [`ActFormat::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// `n_tok` rows of quantized activations, in the format a weight format takes.
#[derive(Debug, Clone, Copy)]
pub enum Acts<'a> {
    F32(&'a [f32]),
    /// F16 activations widened to f32 exactly: the same products and sums as ggml's
    /// F16 · F16 dot, without converting them again for every weight row.
    F16Wide(&'a [f32]),
    Bf16(&'a [bf16]),
    Q8_0(&'a [BlockQ8_0]),
    Q8_1(&'a [BlockQ8_1]),
    Q8K(&'a [BlockQ8K]),
    /// The quants (`k` per row) and one header per row.
    I8s(&'a [i8], &'a [I8sRowMeta]),
    Q8K64(&'a [i8], &'a [Q8K64Header]),
}

/// One matrix product: a weight tensor of `n` rows of `k` against `n_tok` activation rows.
#[derive(Debug, Clone, Copy)]
pub struct Product<'a> {
    /// The whole tensor, in the format's bytes (file layout or, with [`RowOrder::Tiled`],
    /// the format's tiled layout).
    pub w: &'a [u8],
    pub order: RowOrder,
    pub k: usize,
    pub n: usize,
    pub acts: Acts<'a>,
    pub n_tok: usize,
}

/// Weight rows `rows` of a product against every activation row:
/// `out[i · n_tok + t]` = row `rows.start + i` · activation row `t`. Tiled weights take
/// row ranges that start on a whole tile ([`crate::gemm::TILE_ROWS`]).
pub type GemmFn =
    fn(isa: Isa, p: &Product<'_>, rows: Range<usize>, out: &mut [f32]) -> Result<(), KernelError>;

/// A reference quantizer: `n` rows of `k` floats (`x`) into the format's tensor bytes
/// (`out`, [`WeightFormat::tensor_bytes`] long, aligned as [`AlignedBytes`] is).
pub type QuantizeFn = fn(x: &[f32], k: usize, out: &mut [u8]) -> Result<(), KernelError>;

/// Lays out whole rows of `k` weights (file layout in `src`) in the format's tiles; `dst`
/// is as long as `src`.
pub type TileFn = fn(src: &[u8], k: usize, dst: &mut [u8]) -> Result<(), KernelError>;

/// A weight format's tiled layout and when the products run it.
#[derive(Debug, Clone, Copy)]
pub struct Tiling {
    pub tile: TileFn,
    /// Whether rows of `k` are tiled under ik_llama.cpp's products (`ik`) or ggml's.
    pub pays_off: fn(k: usize, ik: bool) -> bool,
}

/// ik_llama.cpp's product for a format where it differs from ggml's.
#[derive(Debug, Clone, Copy)]
pub struct IkProduct {
    pub act: ActFormat,
    pub gemm: GemmFn,
}

/// Everything the engine knows about one weight format.
#[derive(Debug)]
pub struct WeightFormat {
    pub ggml_type: GgmlType,
    /// Weights per block (ggml's `blck_size`).
    pub block_elems: usize,
    /// Bytes per block (ggml's `type_size`).
    pub block_bytes: usize,
    /// Bytes before each row's blocks (IQ2_BN's row scale).
    pub row_prefix_bytes: usize,
    /// Bytes after the last row (I2_S's tensor scale and padding).
    pub tensor_suffix_bytes: usize,
    /// Smallest row the products take (ik's Q8_K64 needs 512).
    pub min_k: usize,
    /// Alignment the products read the tensor's bytes with (the element or block type's).
    pub align: usize,
    /// What its products multiply against (ggml's `vec_dot_type`).
    pub act: ActFormat,
    /// The reference quantizer (ggml's `quantize_row_*_ref`, or the format's own).
    pub quantize: QuantizeFn,
    pub gemm: GemmFn,
    pub ik: Option<IkProduct>,
    pub tiling: Option<Tiling>,
}

impl WeightFormat {
    /// The entry of `t`, if it can be a matmul weight.
    pub fn of(t: GgmlType) -> Option<&'static WeightFormat> {
        FORMATS.iter().find(|f| f.ggml_type == t)
    }

    /// Bytes of one row of `k` weights (without the tensor suffix).
    pub fn row_bytes(&self, k: usize) -> usize {
        self.row_prefix_bytes + k / self.block_elems * self.block_bytes
    }

    /// Bytes of a tensor of `n` rows of `k`, or `None` on overflow.
    pub fn tensor_bytes(&self, k: usize, n: usize) -> Option<usize> {
        self.row_bytes(k)
            .checked_mul(n)?
            .checked_add(self.tensor_suffix_bytes)
    }

    /// Whether the products take rows of `k`: whole blocks, at least [`Self::min_k`].
    pub fn check_k(&self, k: usize) -> Result<(), KernelError> {
        if k == 0 || !k.is_multiple_of(self.block_elems) {
            return Err(KernelError::NotBlockMultiple {
                format: self.ggml_type,
                len: k,
                block: self.block_elems,
            });
        }
        if k < self.min_k {
            return Err(KernelError::Unsupported {
                format: self.ggml_type,
                reason: "rows need at least 512 weights (ik_llama.cpp's Q8_K64 limit)",
            });
        }
        Ok(())
    }

    /// Checks that `w` holds `n` rows of `k` that the products accept: row length, size
    /// and alignment for the block type. Load runs this once, so a product cannot fail on
    /// the tensor later.
    pub fn check(&self, w: &[u8], k: usize, n: usize) -> Result<(), KernelError> {
        self.check_k(k)?;
        let expected = self.tensor_bytes(k, n).ok_or(KernelError::Unsupported {
            format: self.ggml_type,
            reason: "tensor size overflows usize",
        })?;
        expect_len(self.ggml_type, "tensor bytes", w.len(), expected)?;
        if (w.as_ptr() as usize).is_multiple_of(self.align) {
            Ok(())
        } else {
            Err(KernelError::Unsupported {
                format: self.ggml_type,
                reason: "tensor data is not aligned for its block type",
            })
        }
    }

    /// The product and activation format under ik_llama.cpp's numerics (`ik`) or ggml's.
    pub fn product(&self, ik: bool) -> (ActFormat, GemmFn) {
        match self.ik {
            Some(p) if ik => (p.act, p.gemm),
            _ => (self.act, self.gemm),
        }
    }

    /// The tiling the products of rows of `k` run on this CPU, if any.
    pub fn tiling(&self, k: usize, ik: bool) -> Option<TileFn> {
        self.tiling.filter(|t| (t.pays_off)(k, ik)).map(|t| t.tile)
    }
}

/// Bytes aligned for every block type (8), for quantized and tiled copies of tensors.
///
/// A copy of [`HUGE_PAGE_BYTES`] or more is its own anonymous mapping, advised to be backed
/// by transparent huge pages (Linux `MADV_HUGEPAGE`; many kernels grant them only on
/// request): a decode step streams every weight once, and with 4 KiB pages each page is a
/// TLB miss (2B-4T TQ2_0 decode, Zen 4, 1 thread, alternating runs: see docs/DESIGN.md §9).
/// Where the advice is refused the mapping keeps small pages; where the mapping itself
/// fails the bytes are an ordinary allocation.
pub struct AlignedBytes {
    storage: Storage,
    len: usize,
}

enum Storage {
    Heap(Vec<u64>),
    Mapped(memmap2::MmapMut),
}

/// The size of a transparent huge page on x86-64 (and the smallest copy worth mapping as
/// one): smaller copies stay on the heap.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

impl AlignedBytes {
    pub fn zeroed(len: usize) -> AlignedBytes {
        let storage = if len >= HUGE_PAGE_BYTES {
            // Page-aligned and zero-filled by the kernel; advised before the first write,
            // so that the faults that populate it can take whole huge pages.
            match memmap2::MmapMut::map_anon(len) {
                Ok(map) => {
                    #[cfg(target_os = "linux")]
                    // Only advice: memory without huge pages works the same, slower.
                    let _ = map.advise(memmap2::Advice::HugePage);
                    Storage::Mapped(map)
                }
                Err(_) => Storage::Heap(vec![0; len.div_ceil(8)]),
            }
        } else {
            Storage::Heap(vec![0; len.div_ceil(8)])
        };
        AlignedBytes { storage, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(words) => &bytemuck::cast_slice(words)[..self.len],
            Storage::Mapped(map) => &map[..self.len],
        }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Heap(words) => &mut bytemuck::cast_slice_mut(words)[..self.len],
            Storage::Mapped(map) => &mut map[..self.len],
        }
    }
}

/// Summarizes: tensors are megabytes.
impl std::fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBytes({} bytes)", self.len)
    }
}

/// The table, one entry per weight format the engine multiplies.
pub static FORMATS: [WeightFormat; 10] = [
    WeightFormat {
        ggml_type: GgmlType::F32,
        block_elems: 1,
        block_bytes: 4,
        row_prefix_bytes: 0,
        tensor_suffix_bytes: 0,
        min_k: 1,
        align: 4,
        act: ActFormat::F32,
        quantize: quantize_f32,
        gemm: gemm_dots::<f32>,
        ik: Some(IkProduct {
            act: ActFormat::F32,
            gemm: gemm_ik::<f32>,
        }),
        tiling: Some(IK_TILING_F32),
    },
    WeightFormat {
        ggml_type: GgmlType::F16,
        block_elems: 1,
        block_bytes: 2,
        row_prefix_bytes: 0,
        tensor_suffix_bytes: 0,
        min_k: 1,
        align: 2,
        act: ActFormat::F16,
        quantize: quantize_f16,
        gemm: gemm_dots::<f16>,
        // ik's float GEMM keeps the activations in f32 even against F16 weights.
        ik: Some(IkProduct {
            act: ActFormat::F32,
            gemm: gemm_ik::<f16>,
        }),
        tiling: Some(IK_TILING_F16),
    },
    WeightFormat {
        ggml_type: GgmlType::BF16,
        block_elems: 1,
        block_bytes: 2,
        row_prefix_bytes: 0,
        tensor_suffix_bytes: 0,
        min_k: 1,
        align: 2,
        act: ActFormat::Bf16,
        quantize: quantize_bf16,
        gemm: gemm_dots::<bf16>,
        ik: None,
        tiling: None,
    },
    WeightFormat {
        ggml_type: GgmlType::Q8_0,
        block_elems: QK8_0,
        block_bytes: std::mem::size_of::<BlockQ8_0>(),
        row_prefix_bytes: 0,
        tensor_suffix_bytes: 0,
        min_k: QK8_0,
        align: std::mem::align_of::<BlockQ8_0>(),
        act: ActFormat::Q8_0,
        quantize: quantize_blocks::<BlockQ8_0>,
        gemm: gemm_dots::<BlockQ8_0>,
        ik: None,
        tiling: None,
    },
    WeightFormat {
        ggml_type: GgmlType::Q4_0,
        block_elems: QK8_0,
        block_bytes: std::mem::size_of::<BlockQ4_0>(),
        row_prefix_bytes: 0,
        tensor_suffix_bytes: 0,
        min_k: QK8_0,
        align: std::mem::align_of::<BlockQ4_0>(),
        act: ActFormat::Q8_0,
        quantize: quantize_blocks::<BlockQ4_0>,
        gemm: gemm_dots::<BlockQ4_0>,
        ik: None,
        tiling: None,
    },
    WeightFormat {
        ggml_type: GgmlType::Q4_1,
        block_elems: QK8_0,
        block_bytes: std::mem::size_of::<BlockQ4_1>(),
        row_prefix_bytes: 0,
        tensor_suffix_bytes: 0,
        min_k: QK8_0,
        align: std::mem::align_of::<BlockQ4_1>(),
        act: ActFormat::Q8_1,
        quantize: quantize_blocks::<BlockQ4_1>,
        gemm: gemm_dots::<BlockQ4_1>,
        ik: None,
        tiling: None,
    },
    WeightFormat {
        ggml_type: GgmlType::TQ1_0,
        block_elems: QK_K,
        block_bytes: std::mem::size_of::<BlockTQ1_0>(),
        row_prefix_bytes: 0,
        tensor_suffix_bytes: 0,
        min_k: QK_K,
        align: std::mem::align_of::<BlockTQ1_0>(),
        act: ActFormat::Q8K,
        quantize: quantize_blocks::<BlockTQ1_0>,
        gemm: gemm_tq1_0,
        ik: None,
        tiling: None,
    },
    WeightFormat {
        ggml_type: GgmlType::TQ2_0,
        block_elems: QK_K,
        block_bytes: std::mem::size_of::<BlockTQ2_0>(),
        row_prefix_bytes: 0,
        tensor_suffix_bytes: 0,
        min_k: QK_K,
        align: std::mem::align_of::<BlockTQ2_0>(),
        act: ActFormat::Q8K,
        quantize: quantize_blocks::<BlockTQ2_0>,
        gemm: gemm_tq2_0,
        ik: None,
        tiling: None,
    },
    WeightFormat {
        ggml_type: GgmlType::I2_S,
        block_elems: QK_I2_S,
        block_bytes: QK_I2_S / 4,
        row_prefix_bytes: 0,
        tensor_suffix_bytes: crate::i2_s::I2S_SCALE_TAIL_BYTES,
        min_k: QK_I2_S,
        align: 1,
        act: ActFormat::I8s,
        quantize: quantize_i2_s,
        gemm: gemm_i2_s,
        ik: None,
        tiling: None,
    },
    WeightFormat {
        ggml_type: GgmlType::IQ2_BN,
        block_elems: QK_IQ2_BN,
        block_bytes: QK_IQ2_BN / 4,
        row_prefix_bytes: crate::iq2_bn::IQ2_BN_ROW_PREFIX_BYTES,
        tensor_suffix_bytes: 0,
        min_k: Q8_K64_MIN_K,
        align: 1,
        act: ActFormat::Q8K64,
        quantize: quantize_iq2_bn,
        gemm: gemm_iq2_bn,
        ik: None,
        tiling: Some(Tiling {
            tile: iq2_bn_tile_rows,
            pays_off: |_, _| iq2_bn_tiled_is_faster(),
        }),
    },
];

/// ik's float products stream F16/F32 rows in tiles ([`ik_tile_rows`]) where they tile.
const IK_TILING_F32: Tiling = Tiling {
    tile: tile_ik::<f32>,
    pays_off: |k, ik| ik && ik_rows_tile(k),
};
const IK_TILING_F16: Tiling = Tiling {
    tile: tile_ik::<f16>,
    pays_off: |k, ik| ik && ik_rows_tile(k),
};

fn tile_ik<X: Pod>(src: &[u8], k: usize, dst: &mut [u8]) -> Result<(), KernelError> {
    let format = GgmlType::F16;
    ik_tile_rows::<X>(elements(format, src)?, k, elements_mut(format, dst)?)
}

/// `bytes` as elements or blocks of `T`, of `format`.
fn elements<T: Pod>(format: GgmlType, bytes: &[u8]) -> Result<&[T], KernelError> {
    bytemuck::try_cast_slice(bytes).map_err(|_| misaligned(format))
}

fn elements_mut<T: Pod>(format: GgmlType, bytes: &mut [u8]) -> Result<&mut [T], KernelError> {
    bytemuck::try_cast_slice_mut(bytes).map_err(|_| misaligned(format))
}

fn misaligned(format: GgmlType) -> KernelError {
    KernelError::Unsupported {
        format,
        reason: "buffer is not aligned or sized for its element or block type",
    }
}

/// Products without a tiled kernel take row-major weights only.
fn row_major(format: GgmlType, p: &Product<'_>) -> Result<(), KernelError> {
    match p.order {
        RowOrder::RowMajor => Ok(()),
        RowOrder::Tiled => Err(KernelError::Unsupported {
            format,
            reason: "this product has no tiled layout",
        }),
    }
}

/// The activations of a product, or a mismatch error when the caller passed another
/// format's.
fn acts_mismatch(format: GgmlType) -> KernelError {
    KernelError::Unsupported {
        format,
        reason: "activations are not in the format's activation format",
    }
}

/// Rows `rows` of a row-major `format` tensor of `per` elements or blocks per row.
fn row_blocks<'a, T: Pod>(
    format: GgmlType,
    p: &Product<'a>,
    rows: &Range<usize>,
    per: usize,
) -> Result<&'a [T], KernelError> {
    row_major(format, p)?;
    let all: &[T] = elements(format, p.w)?;
    all.get(rows.start * per..rows.end * per)
        .ok_or(KernelError::LengthMismatch {
            format,
            what: "weight rows",
            got: all.len() / per.max(1),
            expected: rows.end,
        })
}

/// A weight element or block whose product is one dot per output (no many-token kernel).
trait RowDot: Pod {
    const FORMAT: GgmlType;
    /// Weights per element or block.
    const WEIGHTS: usize;
    /// The activation element or block it is multiplied against.
    type Act: 'static;
    fn acts(a: Acts<'_>) -> Option<&[Self::Act]>;
    fn dot(isa: Isa, w: &[Self], a: &[Self::Act]) -> Result<f32, KernelError>;
    /// The dots of every row of `w` (rows of `k`) with the one activation row `a`, in one
    /// many-rows call, for the formats that have one (F32, F16).
    fn dot_rows(
        _isa: Isa,
        _w: &[Self],
        _a: &[Self::Act],
        _k: usize,
        _out: &mut [f32],
    ) -> Option<Result<(), KernelError>> {
        None
    }
}

/// One [`RowDot`] entry: weight type, format, weights per element, activation type, the
/// [`Acts`] variant that carries it, and the dot on a given ISA.
macro_rules! row_dot {
    ($w:ty, $format:ident, $weights:expr, $act:ty, $variant:ident, $dot:path
        $(, rows: $rows:ident)?) => {
        impl RowDot for $w {
            const FORMAT: GgmlType = GgmlType::$format;
            const WEIGHTS: usize = $weights;
            type Act = $act;
            fn acts(a: Acts<'_>) -> Option<&[$act]> {
                match a {
                    Acts::$variant(a) => Some(a),
                    _ => None,
                }
            }
            fn dot(isa: Isa, w: &[$w], a: &[$act]) -> Result<f32, KernelError> {
                $dot(isa, ORDER, w, a)
            }
            $(
                fn dot_rows(
                    isa: Isa,
                    w: &[$w],
                    a: &[f32],
                    k: usize,
                    out: &mut [f32],
                ) -> Option<Result<(), KernelError>> {
                    let (rows, cols, stride) = (out.len(), k, k);
                    let x = FloatRows::$rows(Rows { data: w, rows, cols, stride });
                    let y = Rows { data: a, rows: 1, cols, stride };
                    Some(vec_dot_rows_with(isa, ORDER, x, y, out, rows))
                }
            )?
        }
    };
}

row_dot!(f32, F32, 1, f32, F32, vec_dot_f32_with, rows: F32);
row_dot!(f16, F16, 1, f32, F16Wide, vec_dot_f16_f32_with, rows: F16);
row_dot!(bf16, BF16, 1, bf16, Bf16, vec_dot_bf16_with);
row_dot!(
    BlockQ8_0,
    Q8_0,
    QK8_0,
    BlockQ8_0,
    Q8_0,
    vec_dot_q8_0_q8_0_with
);
row_dot!(
    BlockQ4_0,
    Q4_0,
    QK8_0,
    BlockQ8_0,
    Q8_0,
    vec_dot_q4_0_q8_0_with
);
row_dot!(
    BlockQ4_1,
    Q4_1,
    QK8_0,
    BlockQ8_1,
    Q8_1,
    vec_dot_q4_1_q8_1_with
);

/// The product of a [`RowDot`] format: one dot per output.
fn gemm_dots<W: RowDot>(
    isa: Isa,
    p: &Product<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let a = W::acts(p.acts).ok_or_else(|| acts_mismatch(W::FORMAT))?;
    let per = p.k / W::WEIGHTS;
    let w: &[W] = row_blocks(W::FORMAT, p, &rows, per)?;
    expect_len(W::FORMAT, "outputs", out.len(), rows.len() * p.n_tok)?;
    // One token (decode, and a prompt's head): one call for all the rows where the format
    // has it, not one dispatched dot per row (the tied head's 128k rows per token).
    if p.n_tok == 1 {
        if let Some(done) = W::dot_rows(isa, w, a, per, out) {
            return done;
        }
    }
    // Shape: out (rows, n_tok).
    for (wr, o) in w.chunks_exact(per).zip(out.chunks_exact_mut(p.n_tok)) {
        for (ar, y) in a.chunks_exact(per).zip(o.iter_mut()) {
            *y = W::dot(isa, wr, ar)?;
        }
    }
    Ok(())
}

fn gemm_tq1_0(
    isa: Isa,
    p: &Product<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let Acts::Q8K(a) = p.acts else {
        return Err(acts_mismatch(GgmlType::TQ1_0));
    };
    let w = row_blocks::<BlockTQ1_0>(GgmlType::TQ1_0, p, &rows, p.k / QK_K)?;
    gemm_tq1_0_q8_k_with(isa, ORDER, w, a, p.n_tok, out)
}

fn gemm_tq2_0(
    isa: Isa,
    p: &Product<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let Acts::Q8K(a) = p.acts else {
        return Err(acts_mismatch(GgmlType::TQ2_0));
    };
    let w = row_blocks::<BlockTQ2_0>(GgmlType::TQ2_0, p, &rows, p.k / QK_K)?;
    gemm_tq2_0_q8_k_with(isa, ORDER, w, a, p.n_tok, out)
}

fn gemm_i2_s(
    isa: Isa,
    p: &Product<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let Acts::I8s(q, meta) = p.acts else {
        return Err(acts_mismatch(GgmlType::I2_S));
    };
    row_major(GgmlType::I2_S, p)?;
    let w = I2sTensor::from_bytes(p.w, p.k, p.n)?;
    let blocks = w.rows(rows.clone()).ok_or(KernelError::LengthMismatch {
        format: GgmlType::I2_S,
        what: "weight rows",
        got: p.n,
        expected: rows.end,
    })?;
    // The integer sums land in `out`'s bytes, then become floats in place.
    gemm_i2_s_i8_s_with(isa, blocks, q, p.n_tok, bytemuck::cast_slice_mut(out))?;
    for row in out.chunks_exact_mut(p.n_tok) {
        for (y, m) in row.iter_mut().zip(meta) {
            let sumi = y.to_bits() as i32;
            *y = i2_s_dot_to_f32(sumi, m, w.scale());
        }
    }
    Ok(())
}

fn gemm_iq2_bn(
    isa: Isa,
    p: &Product<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let Acts::Q8K64(q, heads) = p.acts else {
        return Err(acts_mismatch(GgmlType::IQ2_BN));
    };
    let row_size = crate::iq2_bn::iq2_bn_row_size(p.k)?;
    let w =
        p.w.get(rows.start * row_size..rows.end * row_size)
            .ok_or(KernelError::LengthMismatch {
                format: GgmlType::IQ2_BN,
                what: "weight rows",
                got: p.w.len() / row_size,
                expected: rows.end,
            })?;
    gemm_iq2_bn_q8_k64_with(isa, w, p.order, q, heads, out)
}

fn gemm_ik<X: crate::ik_float::IkWeight + Pod>(
    isa: Isa,
    p: &Product<'_>,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let Acts::F32(a) = p.acts else {
        return Err(acts_mismatch(GgmlType::F32));
    };
    let all: &[X] = elements(GgmlType::F32, p.w)?;
    let w = all
        .get(rows.start * p.k..rows.end * p.k)
        .ok_or(KernelError::LengthMismatch {
            format: GgmlType::F32,
            what: "weight rows",
            got: all.len() / p.k.max(1),
            expected: rows.end,
        })?;
    ik_gemm_with(isa, w, p.order, a, p.n_tok, out)
}

fn quantize_f32(x: &[f32], _k: usize, out: &mut [u8]) -> Result<(), KernelError> {
    let out: &mut [f32] = elements_mut(GgmlType::F32, out)?;
    expect_len(GgmlType::F32, "tensor", out.len(), x.len())?;
    out.copy_from_slice(x);
    Ok(())
}

fn quantize_f16(x: &[f32], _k: usize, out: &mut [u8]) -> Result<(), KernelError> {
    f32_to_f16_row(x, elements_mut(GgmlType::F16, out)?)
}

fn quantize_bf16(x: &[f32], _k: usize, out: &mut [u8]) -> Result<(), KernelError> {
    f32_to_bf16_row(x, elements_mut(GgmlType::BF16, out)?)
}

/// A block format's reference quantizer, row by row (blocks never straddle rows).
trait BlockQuantizer: Pod {
    const FORMAT: GgmlType;
    fn quantize_ref(x: &[f32], y: &mut [Self]) -> Result<(), KernelError>;
}

impl BlockQuantizer for BlockQ8_0 {
    const FORMAT: GgmlType = GgmlType::Q8_0;
    fn quantize_ref(x: &[f32], y: &mut [Self]) -> Result<(), KernelError> {
        quantize_row_q8_0_ref(x, y)
    }
}

impl BlockQuantizer for BlockQ4_0 {
    const FORMAT: GgmlType = GgmlType::Q4_0;
    fn quantize_ref(x: &[f32], y: &mut [Self]) -> Result<(), KernelError> {
        quantize_row_q4_0_ref(x, y)
    }
}

impl BlockQuantizer for BlockQ4_1 {
    const FORMAT: GgmlType = GgmlType::Q4_1;
    fn quantize_ref(x: &[f32], y: &mut [Self]) -> Result<(), KernelError> {
        quantize_row_q4_1_ref(x, y)
    }
}

impl BlockQuantizer for BlockTQ1_0 {
    const FORMAT: GgmlType = GgmlType::TQ1_0;
    fn quantize_ref(x: &[f32], y: &mut [Self]) -> Result<(), KernelError> {
        quantize_row_tq1_0_ref(x, y)
    }
}

impl BlockQuantizer for BlockTQ2_0 {
    const FORMAT: GgmlType = GgmlType::TQ2_0;
    fn quantize_ref(x: &[f32], y: &mut [Self]) -> Result<(), KernelError> {
        quantize_row_tq2_0_ref(x, y)
    }
}

fn quantize_blocks<B: BlockQuantizer>(
    x: &[f32],
    _k: usize,
    out: &mut [u8],
) -> Result<(), KernelError> {
    B::quantize_ref(x, elements_mut(B::FORMAT, out)?)
}

fn quantize_i2_s(x: &[f32], k: usize, out: &mut [u8]) -> Result<(), KernelError> {
    quantize_i2_s_ref(x, k, out)
}

fn quantize_iq2_bn(x: &[f32], k: usize, out: &mut [u8]) -> Result<(), KernelError> {
    let row_size = crate::iq2_bn::iq2_bn_row_size(k)?;
    expect_len(
        GgmlType::IQ2_BN,
        "tensor bytes",
        out.len(),
        x.len() / k * row_size,
    )?;
    for (xr, o) in x.chunks_exact(k).zip(out.chunks_exact_mut(row_size)) {
        quantize_row_iq2_bn_ref(xr, o)?;
    }
    Ok(())
}

/// Runs independent row jobs: in parallel where the caller has threads (the engine's pool),
/// in order on this thread with [`OneThread`].
pub trait RowJobs {
    fn for_each<I, F>(&self, items: I, f: F) -> Result<(), KernelError>
    where
        I: Iterator + Send,
        I::Item: Send,
        F: Fn(I::Item) -> Result<(), KernelError> + Sync;
}

/// [`RowJobs`] on the calling thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct OneThread;

impl RowJobs for OneThread {
    fn for_each<I, F>(&self, items: I, f: F) -> Result<(), KernelError>
    where
        I: Iterator + Send,
        I::Item: Send,
        F: Fn(I::Item) -> Result<(), KernelError> + Sync,
    {
        items.into_iter().try_for_each(f)
    }
}

/// Activation rows in every format some weights take, each quantized by the quantizer the
/// references' x86 builds run for it (`from_float` of ggml's `type_traits_cpu`):
///
/// | activations | quantizer |
/// |---|---|
/// | F32 | none: the input itself |
/// | F16 | round to nearest even (F16C), then widened back to f32 exactly |
/// | BF16 | `GGML_FP32_TO_BF16` |
/// | Q8_0 | ggml-cpu x86 `quantize_row_q8_0` (ties to even, `id = 127/amax`) |
/// | Q8_1 | ggml-cpu x86 `quantize_row_q8_1` |
/// | Q8_K | `quantize_row_q8_K_ref` (the only one x86 has), or its FMA-contracted rounding as bitnet.cpp's build runs it |
/// | I8_S | bitnet.cpp `quantize_row_i8_s` (per row) |
/// | Q8_K64 | ik_llama.cpp x86 `quantize_row_q8_K64` (per row) |
pub struct ActBuffers {
    f16: Vec<f16>,
    /// The F16 activations widened back to f32 (exactly), so that the dot of each weight
    /// row (the output head's 128k rows) does not convert them again.
    f16_wide: Vec<f32>,
    bf16: Vec<bf16>,
    q8_0: Vec<BlockQ8_0>,
    q8_1: Vec<BlockQ8_1>,
    q8k: Vec<BlockQ8K>,
    i8s: Vec<i8>,
    i8s_meta: Vec<I8sRowMeta>,
    q8k64: Vec<i8>,
    q8k64_head: Vec<Q8K64Header>,
}

/// Summarizes: the buffers hold megabytes.
impl std::fmt::Debug for ActBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActBuffers").finish_non_exhaustive()
    }
}

impl ActBuffers {
    /// Buffers for up to `n_tok` rows of up to `k_max` values in each format of `kinds`.
    pub fn new(kinds: &[ActFormat], n_tok: usize, k_max: usize) -> ActBuffers {
        let n = n_tok * k_max;
        let sized = |k: ActFormat, len: usize| if kinds.contains(&k) { len } else { 0 };
        // Zeroed allocations: pages are touched only by the rows a product quantizes (the
        // head's F16 activations are one row at a time in decode and in a prompt's last
        // position), not by a fill at creation.
        ActBuffers {
            f16: bytemuck::zeroed_vec(sized(ActFormat::F16, n)),
            f16_wide: bytemuck::zeroed_vec(sized(ActFormat::F16, n)),
            bf16: bytemuck::zeroed_vec(sized(ActFormat::Bf16, n)),
            q8_0: bytemuck::zeroed_vec(sized(ActFormat::Q8_0, n / QK8_0)),
            q8_1: bytemuck::zeroed_vec(sized(ActFormat::Q8_1, n / QK8_0)),
            q8k: bytemuck::zeroed_vec(sized(ActFormat::Q8K, n / QK_K)),
            i8s: bytemuck::zeroed_vec(sized(ActFormat::I8s, n)),
            i8s_meta: vec![I8sRowMeta { scale: 0.0, sum: 0 }; sized(ActFormat::I8s, n_tok)],
            q8k64: bytemuck::zeroed_vec(sized(ActFormat::Q8K64, n)),
            q8k64_head: bytemuck::zeroed_vec(sized(ActFormat::Q8K64, n_tok)),
        }
    }

    /// Quantizes `x` (`n_tok` rows of `k`) to `kind`, rows as `jobs` runs them; `q8k_fma`
    /// picks bitnet.cpp's FMA-contracted Q8_K rounding. The buffers must have been made
    /// for `kind` and at least this many values.
    pub fn quantize(
        &mut self,
        kind: ActFormat,
        x: &[f32],
        n_tok: usize,
        k: usize,
        q8k_fma: bool,
        jobs: &impl RowJobs,
    ) -> Result<(), KernelError> {
        let n = n_tok * k;
        let x = x.get(..n).ok_or(KernelError::LengthMismatch {
            format: GgmlType::F32,
            what: "activations",
            got: x.len(),
            expected: n,
        })?;
        let len = |have: usize, need: usize| {
            if have < need {
                Err(KernelError::LengthMismatch {
                    format: GgmlType::F32,
                    what: "activation buffer (made for fewer values or another format)",
                    got: have,
                    expected: need,
                })
            } else {
                Ok(need)
            }
        };
        match kind {
            ActFormat::F32 => Ok(()),
            ActFormat::F16 => {
                let m = len(self.f16.len(), n)?;
                let ys = self.f16[..m]
                    .chunks_mut(k)
                    .zip(self.f16_wide[..m].chunks_mut(k));
                jobs.for_each(x.chunks(k).zip(ys), |(xr, (h, w))| {
                    f32_to_f16_row(xr, h)?;
                    f16_to_f32_row(h, w)
                })
            }
            ActFormat::Bf16 => {
                let m = len(self.bf16.len(), n)?;
                let ys = self.bf16[..m].chunks_mut(k);
                jobs.for_each(x.chunks(k).zip(ys), |(xr, y)| f32_to_bf16_row(xr, y))
            }
            ActFormat::Q8_0 => {
                let m = len(self.q8_0.len(), n / QK8_0)?;
                let ys = self.q8_0[..m].chunks_mut(k / QK8_0);
                jobs.for_each(x.chunks(k).zip(ys), |(xr, y)| quantize_row_q8_0_x86(xr, y))
            }
            ActFormat::Q8_1 => {
                let m = len(self.q8_1.len(), n / QK8_0)?;
                let ys = self.q8_1[..m].chunks_mut(k / QK8_0);
                jobs.for_each(x.chunks(k).zip(ys), |(xr, y)| quantize_row_q8_1_x86(xr, y))
            }
            ActFormat::Q8K => {
                let m = len(self.q8k.len(), n / QK_K)?;
                let ys = self.q8k[..m].chunks_mut(k / QK_K);
                let quantize = if q8k_fma {
                    quantize_row_q8_k_fma
                } else {
                    quantize_row_q8_k
                };
                jobs.for_each(x.chunks(k).zip(ys), |(xr, y)| quantize(xr, y))
            }
            ActFormat::I8s => {
                let m = len(self.i8s.len(), n)?;
                len(self.i8s_meta.len(), n_tok)?;
                let ys = self.i8s[..m].chunks_mut(k).zip(self.i8s_meta.iter_mut());
                jobs.for_each(x.chunks(k).zip(ys), |(xr, (q, h))| {
                    *h = quantize_row_i8_s(xr, q)?;
                    Ok(())
                })
            }
            ActFormat::Q8K64 => {
                let m = len(self.q8k64.len(), n)?;
                len(self.q8k64_head.len(), n_tok)?;
                let ys = self.q8k64[..m]
                    .chunks_mut(k)
                    .zip(self.q8k64_head.iter_mut());
                jobs.for_each(x.chunks(k).zip(ys), |(xr, (q, h))| {
                    *h = quantize_row_q8_k64(xr, q)?;
                    Ok(())
                })
            }
        }
    }

    /// The `kind` rows [`ActBuffers::quantize`] made from `x` (`n_tok` rows of `k`), F32
    /// being `x` itself.
    pub fn view<'a>(&'a self, kind: ActFormat, x: &'a [f32], n_tok: usize, k: usize) -> Acts<'a> {
        let n = n_tok * k;
        let cut = |len: usize, want: usize| want.min(len);
        match kind {
            ActFormat::F32 => Acts::F32(&x[..cut(x.len(), n)]),
            ActFormat::F16 => Acts::F16Wide(&self.f16_wide[..cut(self.f16_wide.len(), n)]),
            ActFormat::Bf16 => Acts::Bf16(&self.bf16[..cut(self.bf16.len(), n)]),
            ActFormat::Q8_0 => Acts::Q8_0(&self.q8_0[..cut(self.q8_0.len(), n / QK8_0)]),
            ActFormat::Q8_1 => Acts::Q8_1(&self.q8_1[..cut(self.q8_1.len(), n / QK8_0)]),
            ActFormat::Q8K => Acts::Q8K(&self.q8k[..cut(self.q8k.len(), n / QK_K)]),
            ActFormat::I8s => Acts::I8s(
                &self.i8s[..cut(self.i8s.len(), n)],
                &self.i8s_meta[..cut(self.i8s_meta.len(), n_tok)],
            ),
            ActFormat::Q8K64 => Acts::Q8K64(
                &self.q8k64[..cut(self.q8k64.len(), n)],
                &self.q8k64_head[..cut(self.q8k64_head.len(), n_tok)],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: usize = 512;
    const N: usize = 13;

    #[test]
    fn aligned_bytes_are_zeroed_writable_and_8_aligned_on_the_heap_and_mapped() {
        // Below, at and above the size from which a copy is a huge-page mapping; odd
        // lengths, so that the tail past the last whole word is covered.
        for len in [
            0,
            13,
            HUGE_PAGE_BYTES - 3,
            HUGE_PAGE_BYTES,
            3 * HUGE_PAGE_BYTES + 5,
        ] {
            let mut b = AlignedBytes::zeroed(len);
            let mapped = matches!(b.storage, Storage::Mapped(_));
            assert_eq!(mapped, len >= HUGE_PAGE_BYTES, "{len}");
            assert_eq!(b.as_bytes().len(), len);
            assert!(b.as_bytes().iter().all(|&x| x == 0), "{len}");
            assert_eq!(b.as_bytes().as_ptr() as usize % 8, 0, "{len}");
            for (i, x) in b.as_bytes_mut().iter_mut().enumerate() {
                *x = i as u8;
            }
            assert!(b.as_bytes().iter().enumerate().all(|(i, &x)| x == i as u8));
        }
    }

    /// Deterministic values in about [-2, 2] (xorshift).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 4001) as f32 / 1000.0 - 2.0
            })
            .collect()
    }

    fn quantized(f: &WeightFormat) -> AlignedBytes {
        let mut w = AlignedBytes::zeroed(f.tensor_bytes(K, N).expect("small"));
        (f.quantize)(&values(K * N, 3), K, w.as_bytes_mut()).expect("whole rows");
        w
    }

    /// Every product of `f` (ggml's, then ik's if it has one) on `n_tok` activation rows,
    /// checking on the way that the tiled layout, where the product has one, gives the
    /// row-major products.
    fn outputs(f: &WeightFormat, n_tok: usize, isa: Isa) -> Vec<Vec<f32>> {
        let w = quantized(f);
        let x = values(n_tok * K, 5);
        let mut results = Vec::new();
        let products = if f.ik.is_some() {
            &[false, true][..]
        } else {
            &[false]
        };
        for &ik in products {
            let (act, gemm) = f.product(ik);
            let mut bufs = ActBuffers::new(&[act], n_tok, K);
            bufs.quantize(act, &x, n_tok, K, false, &OneThread)
                .expect("sized for it");
            let run = |order: RowOrder, w: &AlignedBytes| {
                let p = Product {
                    w: w.as_bytes(),
                    order,
                    k: K,
                    n: N,
                    acts: bufs.view(act, &x, n_tok, K),
                    n_tok,
                };
                let mut out = vec![0f32; N * n_tok];
                // Two tasks: the first a whole tile, the second the rest.
                let (a, b) = out.split_at_mut(4 * n_tok);
                gemm(isa, &p, 0..4, a).expect("checked shapes");
                gemm(isa, &p, 4..N, b).expect("checked shapes");
                out
            };
            let out = run(RowOrder::RowMajor, &w);
            // ggml's F16/F32 products have no tiled layout: ik's do.
            if let Some(tile) = f.tiling.map(|t| t.tile).filter(|_| ik == f.ik.is_some()) {
                let mut tiled = AlignedBytes::zeroed(w.as_bytes().len());
                tile(w.as_bytes(), K, tiled.as_bytes_mut()).expect("whole rows");
                let t = run(RowOrder::Tiled, &tiled);
                assert_eq!(t, out, "{:?} tiled, ik {ik}, {isa:?}", f.ggml_type);
            }
            results.push(out);
        }
        results
    }

    #[test]
    fn every_isa_matches_the_scalar_oracle_bit_for_bit() {
        for f in &FORMATS {
            for n_tok in [1, 5, 9] {
                let oracle = outputs(f, n_tok, Isa::Scalar);
                assert!(oracle[0].iter().all(|v| v.is_finite() && *v != 0.0));
                for &isa in Isa::available() {
                    assert_eq!(
                        outputs(f, n_tok, isa),
                        oracle,
                        "{:?} on {isa:?}, {n_tok} tokens",
                        f.ggml_type
                    );
                }
            }
        }
    }

    #[test]
    fn one_token_products_equal_the_first_token_of_a_batch() {
        // Every batch starts with the same activation row (`values` is one stream), and
        // one token takes its own path in some products (F32/F16: one many-rows dot).
        for f in &FORMATS {
            for &isa in Isa::available() {
                let batch = outputs(f, 5, isa);
                let first: Vec<Vec<f32>> = batch
                    .iter()
                    .map(|out| out.iter().step_by(5).copied().collect())
                    .collect();
                assert_eq!(outputs(f, 1, isa), first, "{:?} on {isa:?}", f.ggml_type);
            }
        }
    }

    #[test]
    fn check_accepts_the_quantizers_tensors_and_names_what_is_wrong() {
        for f in &FORMATS {
            let w = quantized(f);
            assert_eq!(f.check(w.as_bytes(), K, N), Ok(()), "{:?}", f.ggml_type);
            let short = &w.as_bytes()[..w.as_bytes().len() - 1];
            assert!(
                matches!(
                    f.check(short, K, N),
                    Err(KernelError::LengthMismatch { format, .. }) if format == f.ggml_type
                ),
                "{:?}",
                f.ggml_type
            );
            assert!(f.check(w.as_bytes(), K + 1, N).is_err());
            if f.align > 1 {
                let odd = &w.as_bytes()[1..];
                assert!(f.check(odd, K, N).is_err());
            }
            assert_eq!(
                WeightFormat::of(f.ggml_type).map(|e| e.ggml_type),
                Some(f.ggml_type)
            );
        }
        assert!(WeightFormat::of(GgmlType::Q8_K).is_none());
    }

    #[test]
    fn products_reject_another_formats_activations() {
        let f = WeightFormat::of(GgmlType::TQ2_0).expect("in the table");
        let w = quantized(f);
        let x = values(K, 5);
        let p = Product {
            w: w.as_bytes(),
            order: RowOrder::RowMajor,
            k: K,
            n: N,
            acts: Acts::F32(&x),
            n_tok: 1,
        };
        let mut out = vec![0f32; N];
        assert!((f.gemm)(Isa::best(), &p, 0..N, &mut out).is_err());
        assert!((f.gemm)(Isa::best(), &p, 0..N + 1, &mut out).is_err());
    }
}
