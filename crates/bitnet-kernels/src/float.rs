//! F32, F16 and BF16 element formats: row conversions and the dot products ggml pairs them
//! with.
//!
//! Pairing (ggml-cpu `type_traits_cpu[..].vec_dot_type`): F32 weights dot F32 activations;
//! F16 weights dot activations first rounded to F16 ([`f32_to_f16_row`], ggml's
//! `ggml_cpu_fp32_to_fp16`); BF16 weights dot activations rounded to BF16
//! ([`f32_to_bf16_row`]). [`vec_dot_f16_f32_with`] (F16 weights, F32 activations) is ours, not a
//! ggml pairing: it skips the activation rounding, for our own output head.
//!
//! Summation order decides the last bits, and ggml's depends on how it was built
//! (ggml-cpu `vec.cpp`, `simd-mappings.h`):
//! * no SIMD ([`SumOrder::GgmlGeneric`]): every product rounded to f32, summed in `ggml_float` (f64),
//!   rounded to f32 once at the end.
//! * AVX2 + FMA + F16C without AVX-512 ([`SumOrder::GgmlAvx2`]): four accumulators of 8 lanes over
//!   steps of 32 elements, `acc[j] = fma(x, y, acc[j])` for elements `32s + 8j ..+ 8`, merged as
//!   `(acc0 + acc2) + (acc1 + acc3)`. F32 and F16 then add lanes as
//!   `((l0+l4) + (l1+l5)) + ((l2+l6) + (l3+l7))` (`GGML_F32x8_REDUCE`: halves, then two
//!   `hadd`s); BF16 as `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))` (halves, `movehl`,
//!   `movehdup`). The `n % 32` tail is added one product at a time: F32 into the f32 sum with
//!   an FMA, F16 and BF16 into an f64 sum. BF16's source writes `add(mul(x, y), acc)`; GCC
//!   contracts it (and F32's tail `sumf += x*y`) to FMA, which is what we follow. AVX-512
//!   builds use 16-lane accumulators: another order.
//!
//! Each dot takes the order as a [`SumOrder`] ([`SumOrder::GgmlGeneric`] = no SIMD,
//! [`SumOrder::GgmlAvx2`] = AVX2 + FMA), and every [`Isa`] computes either order bit for bit:
//! the scalar path emulates the AVX2 lanes with [`f32::mul_add`] where the AVX2 build fuses,
//! and the f64 sum of the generic order runs as scalar code on every ISA.
//!
//! f16·f16 and bf16·bf16 products are exact in f32 (11- and 8-bit significands), so for F16
//! and BF16 only the order of additions differs between the two paths.

use half::{bf16, f16};

use crate::order::{hsum8_ggml, hsum8_hadd};
use crate::{GgmlType, Isa, KernelError, SumOrder};

/// Unit roundoff of f32 (2⁻²⁴): the largest relative error of one rounding to nearest.
pub const F32_UNIT_ROUNDOFF: f64 = 1.0 / 16_777_216.0;

/// Roundings a result takes besides its accumulation chain: the product (F32·F32), the
/// scale products of block formats (two at most), the 4→1 accumulator merge (2 levels),
/// the 8→1 lane sum (3 levels) and the final rounding to f32.
pub const F32_REDUCTION_ROUNDINGS: usize = 9;

/// Largest |a − b| between two summations of the same terms, as a fraction of Σ|termᵢ|,
/// when `chain` is the combined length of their f32 accumulation chains (for an f64 oracle
/// count only the f32 side's chain; its own error is 2⁻²⁹ times smaller). This is the
/// first-order recursive-summation bound `k·u` (Higham, *Accuracy and Stability*, §4.2): each
/// rounding along a chain perturbs by at most `u` times the partial sum's magnitude.
pub fn f32_sum_tolerance(chain: usize) -> f64 {
    (chain + F32_REDUCTION_ROUNDINGS) as f64 * F32_UNIT_ROUNDOFF
}

/// `Ok` when `got == expected`, else [`KernelError::LengthMismatch`] naming `what`.
pub(crate) fn expect_len(
    format: GgmlType,
    what: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch {
            format,
            what,
            got,
            expected,
        })
    }
}

/// How many `block`-element blocks `len` elements make, or [`KernelError::NotBlockMultiple`].
pub(crate) fn block_count(
    format: GgmlType,
    len: usize,
    block: usize,
) -> Result<usize, KernelError> {
    if len.is_multiple_of(block) {
        Ok(len / block)
    } else {
        Err(KernelError::NotBlockMultiple { format, len, block })
    }
}

/// ggml-base's `GGML_FP32_TO_FP16` (software, Maratyszcza's FP16 algorithm): round to
/// nearest even with gradual underflow and overflow to infinity, exactly like
/// `f16::from_f32`, except that every NaN becomes the canonical quiet NaN `0x7E00` (sign
/// kept) where F16C keeps the payload. The `*_ref` quantizers store their scales with it.
pub(crate) fn f32_to_f16_ref(x: f32) -> f16 {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        f16::from_bits(sign | 0x7E00)
    } else {
        f16::from_f32(x)
    }
}

/// ggml's `GGML_FP32_TO_BF16`: round to nearest even by adding `0x7fff + lsb` to the bits
/// (finite values past the largest bf16 round to infinity); a NaN keeps its top 16 bits and
/// is forced quiet (`| 0x40`).
pub fn f32_to_bf16(x: f32) -> bf16 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return bf16::from_bits(((bits >> 16) | 0x40) as u16);
    }
    // No overflow: the largest non-NaN pattern, 0xFF80_0000 (-inf), plus 0x8000 fits in u32.
    bf16::from_bits(((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16)
}

/// ggml's `GGML_BF16_TO_FP32`: the 16 bits become the top half of an f32 (exact).
pub fn bf16_to_f32(x: bf16) -> f32 {
    f32::from_bits(u32::from(x.to_bits()) << 16)
}

/// f32 → f16 row, round to nearest even: the scalar oracle of [`f32_to_f16_row`].
pub fn f32_to_f16_row_generic(x: &[f32], y: &mut [f16]) -> Result<(), KernelError> {
    expect_len(GgmlType::F16, "f16 row", y.len(), x.len())?;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = f16::from_f32(v);
    }
    Ok(())
}

/// [`f32_to_f16_row`] on the given ISA (scalar when `isa` is not supported here).
pub fn f32_to_f16_row_with(isa: Isa, x: &[f32], y: &mut [f16]) -> Result<(), KernelError> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        _ if isa.runs_avx2() => {
            expect_len(GgmlType::F16, "f16 row", y.len(), x.len())?;
            // SAFETY: isa.runs_avx2() (AVX2, FMA, F16C detected) checked above; lengths equal.
            unsafe { avx2::f32_to_f16(x, y) };
            Ok(())
        }
        _ => f32_to_f16_row_generic(x, y),
    }
}

/// ggml-cpu's `ggml_cpu_fp32_to_fp16`, how ggml rounds activations for F16 weights: round to
/// nearest even (F16C `vcvtps2ph` with `_MM_FROUND_TO_NEAREST_INT`; `half` rounds the same);
/// NaN stays NaN, quieted, payload truncated.
pub fn f32_to_f16_row(x: &[f32], y: &mut [f16]) -> Result<(), KernelError> {
    f32_to_f16_row_with(Isa::best(), x, y)
}

/// f16 → f32 row (exact): the scalar oracle of [`f16_to_f32_row`].
pub fn f16_to_f32_row_generic(x: &[f16], y: &mut [f32]) -> Result<(), KernelError> {
    expect_len(GgmlType::F16, "f32 row", y.len(), x.len())?;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v.to_f32();
    }
    Ok(())
}

/// [`f16_to_f32_row`] on the given ISA (scalar when `isa` is not supported here).
pub fn f16_to_f32_row_with(isa: Isa, x: &[f16], y: &mut [f32]) -> Result<(), KernelError> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        _ if isa.runs_avx2() => {
            expect_len(GgmlType::F16, "f32 row", y.len(), x.len())?;
            // SAFETY: isa.runs_avx2() (AVX2, FMA, F16C detected) checked above; lengths equal.
            unsafe { avx2::f16_to_f32(x, y) };
            Ok(())
        }
        _ => f16_to_f32_row_generic(x, y),
    }
}

/// f16 → f32 row (exact; ggml's `dequantize`/`to_float` for F16).
pub fn f16_to_f32_row(x: &[f16], y: &mut [f32]) -> Result<(), KernelError> {
    f16_to_f32_row_with(Isa::best(), x, y)
}

/// f32 → bf16 row with [`f32_to_bf16`] (ggml's `ggml_cpu_fp32_to_bf16`, scalar in every build
/// without AVX512-BF16).
pub fn f32_to_bf16_row(x: &[f32], y: &mut [bf16]) -> Result<(), KernelError> {
    expect_len(GgmlType::BF16, "bf16 row", y.len(), x.len())?;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = f32_to_bf16(v);
    }
    Ok(())
}

/// bf16 → f32 row (exact).
pub fn bf16_to_f32_row(x: &[bf16], y: &mut [f32]) -> Result<(), KernelError> {
    expect_len(GgmlType::BF16, "f32 row", y.len(), x.len())?;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = bf16_to_f32(v);
    }
    Ok(())
}

/// A stored float element that ggml widens to f32 before multiplying.
trait Widen: Copy {
    fn widen(self) -> f32;
}

impl Widen for f32 {
    #[inline]
    fn widen(self) -> f32 {
        self
    }
}

impl Widen for f16 {
    #[inline]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl Widen for bf16 {
    #[inline]
    fn widen(self) -> f32 {
        bf16_to_f32(self)
    }
}

/// ggml's scalar dot: each product rounded to f32, summed in f64 from +0.0 (so all-(−0)
/// products give +0 as in C), one rounding to f32 at the end. Shape: x, y: (n,).
fn dot_f64_sum<X: Widen, Y: Widen>(x: &[X], y: &[Y]) -> f32 {
    f64_tail(x, y, 0.0)
}

/// `sum` widened to f64, then each f32 product of `x` and `y` added in f64, rounded to f32
/// once: the scalar build's whole sum, and the F16/BF16 tail of the AVX2 one.
fn f64_tail<X: Widen, Y: Widen>(x: &[X], y: &[Y], sum: f32) -> f32 {
    x.iter().zip(y).fold(f64::from(sum), |s, (&a, &b)| {
        s + f64::from(a.widen() * b.widen())
    }) as f32
}

/// Elements per step of ggml's AVX float loops: 4 accumulators × 8 lanes.
const STEP: usize = 32;

/// ggml's AVX2 4×8-lane FMA loop in scalar, merged: lane `l` of accumulator `j` takes
/// `fma(x, y, acc)` for elements `32s + 8j + l`, then the accumulators merge lane-wise as
/// `(acc0 + acc2) + (acc1 + acc3)`. Returns the 8 merged lanes and where the `n % 32` tail
/// starts. Shape: x, y: (n,).
fn fma_lanes<X: Widen, Y: Widen>(x: &[X], y: &[Y]) -> ([f32; 8], usize) {
    let np = x.len() - x.len() % STEP;
    let mut acc = [[0.0f32; 8]; 4];
    for (xs, ys) in x[..np].chunks_exact(STEP).zip(y.chunks_exact(STEP)) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, v) in a.iter_mut().enumerate() {
                let i = 8 * j + l;
                *v = xs[i].widen().mul_add(ys[i].widen(), *v);
            }
        }
    }
    let merged = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    (merged, np)
}

/// Which lane sum ends the AVX2 loop (see the module docs).
#[derive(Clone, Copy)]
enum LaneSum {
    /// `GGML_F32x8_REDUCE` (F32, F16).
    Hadd,
    /// `hsum_float_8` (BF16).
    Movehl,
}

/// Which tail follows it.
#[derive(Clone, Copy)]
enum Tail {
    /// `sumf += x·y` in f32, contracted to FMA (F32).
    Fma,
    /// Added in f64 (`ggml_float`) (F16, BF16).
    F64,
}

/// ggml's AVX2 float dot in scalar, bit-identical to the AVX2 kernels of `mod avx2`.
fn dot_avx2_order<X: Widen, Y: Widen>(x: &[X], y: &[Y], lanes: LaneSum, tail: Tail) -> f32 {
    let (v, np) = fma_lanes(x, y);
    let sum = match lanes {
        LaneSum::Hadd => hsum8_hadd(v),
        LaneSum::Movehl => hsum8_ggml(v),
    };
    add_tail(&x[np..], &y[np..], sum, tail)
}

/// The `n % 32` tail `xt · yt` added to the lane sum `sum` as `tail` says.
#[inline]
fn add_tail<X: Widen, Y: Widen>(xt: &[X], yt: &[Y], sum: f32, tail: Tail) -> f32 {
    match tail {
        Tail::Fma => xt
            .iter()
            .zip(yt)
            .fold(sum, |s, (&a, &b)| a.widen().mul_add(b.widen(), s)),
        Tail::F64 => f64_tail(xt, yt, sum),
    }
}

/// F32·F32 dot in `order` on the scalar path: [`SumOrder::GgmlGeneric`] is ggml's scalar
/// build (f32 products, f64 sum), [`SumOrder::GgmlAvx2`] its AVX2 build (module docs).
pub fn vec_dot_f32_generic(order: SumOrder, x: &[f32], y: &[f32]) -> Result<f32, KernelError> {
    vec_dot_f32_with(Isa::Scalar, order, x, y)
}

/// [`vec_dot_f32`] on the given ISA (scalar when `isa` is not supported here); bit-identical
/// to [`vec_dot_f32_generic`] in both orders.
pub fn vec_dot_f32_with(
    isa: Isa,
    order: SumOrder,
    x: &[f32],
    y: &[f32],
) -> Result<f32, KernelError> {
    expect_len(GgmlType::F32, "y", y.len(), x.len())?;
    Ok(match (order, isa) {
        // The f64 sum is scalar in ggml too.
        (SumOrder::GgmlGeneric, _) => dot_f64_sum(x, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; lengths equal (checked above).
        (SumOrder::GgmlAvx2, _) if isa.runs_avx2() => unsafe { avx2::dot_f32(x, y) },
        (SumOrder::GgmlAvx2, _) => dot_avx2_order(x, y, LaneSum::Hadd, Tail::Fma),
    })
}

/// ggml's `ggml_vec_dot_f32` (F32 weights · F32 activations) in `order`, on [`Isa::best`].
/// Errors when lengths differ.
pub fn vec_dot_f32(order: SumOrder, x: &[f32], y: &[f32]) -> Result<f32, KernelError> {
    vec_dot_f32_with(Isa::best(), order, x, y)
}

/// F16·F16 dot in `order` on the scalar path (exact f32 products; f64 sum for
/// [`SumOrder::GgmlGeneric`], the AVX2 lanes for [`SumOrder::GgmlAvx2`]).
pub fn vec_dot_f16_generic(order: SumOrder, x: &[f16], y: &[f16]) -> Result<f32, KernelError> {
    vec_dot_f16_with(Isa::Scalar, order, x, y)
}

/// [`vec_dot_f16`] on the given ISA (scalar when `isa` is not supported here); bit-identical
/// to [`vec_dot_f16_generic`] in both orders.
pub fn vec_dot_f16_with(
    isa: Isa,
    order: SumOrder,
    x: &[f16],
    y: &[f16],
) -> Result<f32, KernelError> {
    expect_len(GgmlType::F16, "y", y.len(), x.len())?;
    Ok(match (order, isa) {
        (SumOrder::GgmlGeneric, _) => dot_f64_sum(x, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; lengths equal (checked above).
        (SumOrder::GgmlAvx2, _) if isa.runs_avx2() => unsafe { avx2::dot_f16(x, y) },
        (SumOrder::GgmlAvx2, _) => dot_avx2_order(x, y, LaneSum::Hadd, Tail::F64),
    })
}

/// ggml's `ggml_vec_dot_f16` (F16 weights · activations rounded by [`f32_to_f16_row`]) in
/// `order`, on [`Isa::best`]. Errors when lengths differ.
pub fn vec_dot_f16(order: SumOrder, x: &[f16], y: &[f16]) -> Result<f32, KernelError> {
    vec_dot_f16_with(Isa::best(), order, x, y)
}

/// A read-only strided matrix: `rows` rows of `cols` elements, row `i` at
/// `data[i·stride ..]` (attention's K rows, transposed V rows, query heads).
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl<'a, T> Rows<'a, T> {
    /// Row `i`: `cols` elements. The caller has checked the matrix with [`Rows::fits`].
    #[inline(always)]
    pub(crate) fn row(&self, i: usize) -> &'a [T] {
        &self.data[i * self.stride..][..self.cols]
    }

    /// Elements from `data[0]` to the end of the last row, `None` on overflow.
    fn extent(&self) -> Option<usize> {
        span(self.rows, self.stride, self.cols)
    }

    /// `Ok` when every row lies inside `data`, else [`KernelError::LengthMismatch`] naming
    /// `what` with the length its rows need.
    fn fits(&self, format: GgmlType, what: &'static str) -> Result<(), KernelError> {
        fits(format, what, self.data.len(), self.extent())
    }
}

/// Elements that `rows` rows of `cols`, `stride` apart, span (0 for no rows).
fn span(rows: usize, stride: usize, cols: usize) -> Option<usize> {
    match rows.checked_sub(1) {
        None => Some(0),
        Some(last) => last.checked_mul(stride)?.checked_add(cols),
    }
}

/// `Ok` when `need` elements fit in `len`, else [`KernelError::LengthMismatch`].
fn fits(
    format: GgmlType,
    what: &'static str,
    len: usize,
    need: Option<usize>,
) -> Result<(), KernelError> {
    match need {
        Some(need) if need <= len => Ok(()),
        need => Err(KernelError::LengthMismatch {
            format,
            what,
            got: len,
            expected: need.unwrap_or(usize::MAX),
        }),
    }
}

/// Checks the operands of a many-rows dot: same row length, every row inside its data,
/// and `out[h·out_stride + i]` inside `out` for every pair.
fn check_rows<X>(
    format: GgmlType,
    x: &Rows<'_, X>,
    y: &Rows<'_, f32>,
    out: &[f32],
    out_stride: usize,
) -> Result<(), KernelError> {
    expect_len(format, "y row", y.cols, x.cols)?;
    x.fits(format, "x rows")?;
    y.fits(format, "y rows")?;
    let need = if x.rows == 0 {
        Some(0)
    } else {
        span(y.rows, out_stride, x.rows)
    };
    fits(format, "out rows", out.len(), need)
}

/// `out[h·out_stride + i] = dot(x_i, y_h)` for every row `i` of `x` and `h` of `y`, one
/// pair at a time (the scalar paths). Operands checked by [`check_rows`].
pub(crate) fn each_pair<X>(
    x: &Rows<'_, X>,
    y: &Rows<'_, f32>,
    out: &mut [f32],
    out_stride: usize,
    dot: impl Fn(&[X], &[f32]) -> f32,
) {
    for h in 0..y.rows {
        let yh = y.row(h);
        for (i, o) in out[h * out_stride..][..x.rows].iter_mut().enumerate() {
            *o = dot(x.row(i), yh);
        }
    }
}

/// An element type of the many-rows dots: F32 and F16, which AVX2 widens 8 at a time.
#[cfg(target_arch = "x86_64")]
trait RowElement: avx2::Load8 {}
/// An element type of the many-rows dots: F32 and F16.
#[cfg(not(target_arch = "x86_64"))]
trait RowElement: Widen {}
impl RowElement for f32 {}
impl RowElement for f16 {}

/// Every row of `x` dotted with every row of `y` in `order` on `isa`; `tail` is the
/// order's `n % 32` tail (F32: [`Tail::Fma`], F16: [`Tail::F64`]). Operands checked.
fn dot_rows<X: RowElement>(
    isa: Isa,
    order: SumOrder,
    x: &Rows<'_, X>,
    y: &Rows<'_, f32>,
    out: &mut [f32],
    out_stride: usize,
    tail: Tail,
) {
    match (order, isa) {
        (SumOrder::GgmlGeneric, _) => each_pair(x, y, out, out_stride, dot_f64_sum),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 (and with it AVX2, FMA, F16C) checked in the guard; operands
        // checked by the caller.
        (SumOrder::GgmlAvx2, Isa::Avx512Vnni) if isa.is_supported() => unsafe {
            avx2::dot_rows_evex(x, y, out, out_stride, tail)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; operands checked by the caller.
        (SumOrder::GgmlAvx2, _) if isa.runs_avx2() => unsafe {
            avx2::dot_rows(x, y, out, out_stride, tail)
        },
        (SumOrder::GgmlAvx2, _) => each_pair(x, y, out, out_stride, |r, yh| {
            dot_avx2_order(r, yh, LaneSum::Hadd, tail)
        }),
    }
}

/// The matrix of a many-rows dot: F32 or F16 rows.
#[derive(Debug, Clone, Copy)]
pub enum FloatRows<'a> {
    F32(Rows<'a, f32>),
    F16(Rows<'a, f16>),
}

impl FloatRows<'_> {
    /// [`check_rows`] for these rows against `y` and `out`.
    pub(crate) fn check(
        &self,
        y: &Rows<'_, f32>,
        out: &[f32],
        out_stride: usize,
    ) -> Result<(), KernelError> {
        match self {
            FloatRows::F32(x) => check_rows(GgmlType::F32, x, y, out, out_stride),
            FloatRows::F16(x) => check_rows(GgmlType::F16, x, y, out, out_stride),
        }
    }
}

/// ggml's float dot of every row of `x` with every row of `y`, dispatched once and sharing
/// each `x` row's loads between up to four `y` rows (attention: cached K rows and the query
/// heads of one KV group; transposed V rows and their probability rows):
/// `out[h·out_stride + i] = x_i · y_h`. Bit-identical to one [`vec_dot_f32_with`] (F32) or
/// [`vec_dot_f16_f32_with`] (F16) per pair; for F16 rows that is ggml's [`vec_dot_f16`] when
/// every element of `y` is an f16 value widened (attention with an F16 cache: round the
/// query and the probabilities to f16 and back). Errors when row lengths differ or a row
/// runs past its data or `out`.
pub fn vec_dot_rows_with(
    isa: Isa,
    order: SumOrder,
    x: FloatRows<'_>,
    y: Rows<'_, f32>,
    out: &mut [f32],
    out_stride: usize,
) -> Result<(), KernelError> {
    x.check(&y, out, out_stride)?;
    match x {
        FloatRows::F32(x) => dot_rows(isa, order, &x, &y, out, out_stride, Tail::Fma),
        FloatRows::F16(x) => dot_rows(isa, order, &x, &y, out, out_stride, Tail::F64),
    }
    Ok(())
}

/// [`vec_dot_rows_with`] on [`Isa::best`].
pub fn vec_dot_rows(
    order: SumOrder,
    x: FloatRows<'_>,
    y: Rows<'_, f32>,
    out: &mut [f32],
    out_stride: usize,
) -> Result<(), KernelError> {
    vec_dot_rows_with(Isa::best(), order, x, y, out, out_stride)
}

/// Rounds every element of `x` to f16 and back in place (`x[i] = f16(x[i])` as an f32,
/// the rounding [`f32_to_f16_row`] does), through `scratch`: the operand that makes
/// [`vec_dot_f16_f32_with`] give ggml's [`vec_dot_f16`]. Errors when lengths differ.
pub fn round_to_f16_in_place(x: &mut [f32], scratch: &mut [f16]) -> Result<(), KernelError> {
    f32_to_f16_row(x, scratch)?;
    f16_to_f32_row(scratch, x)
}

/// BF16·BF16 dot in `order` on the scalar path (exact f32 products; f64 sum for
/// [`SumOrder::GgmlGeneric`], the AVX2 lanes for [`SumOrder::GgmlAvx2`]).
pub fn vec_dot_bf16_generic(order: SumOrder, x: &[bf16], y: &[bf16]) -> Result<f32, KernelError> {
    vec_dot_bf16_with(Isa::Scalar, order, x, y)
}

/// BF16 · BF16 on the given ISA (scalar when `isa` is not supported here); bit-identical
/// to [`vec_dot_bf16_generic`] in both orders.
pub fn vec_dot_bf16_with(
    isa: Isa,
    order: SumOrder,
    x: &[bf16],
    y: &[bf16],
) -> Result<f32, KernelError> {
    expect_len(GgmlType::BF16, "y", y.len(), x.len())?;
    Ok(match (order, isa) {
        (SumOrder::GgmlGeneric, _) => dot_f64_sum(x, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; lengths equal (checked above).
        (SumOrder::GgmlAvx2, _) if isa.runs_avx2() => unsafe { avx2::dot_bf16(x, y) },
        (SumOrder::GgmlAvx2, _) => dot_avx2_order(x, y, LaneSum::Movehl, Tail::F64),
    })
}

/// F16 weights · F32 activations on the scalar path: f32 products (rounded), summed in f64
/// ([`SumOrder::GgmlGeneric`]) or in ggml's F16 AVX2 order ([`SumOrder::GgmlAvx2`]).
pub fn vec_dot_f16_f32_generic(order: SumOrder, x: &[f16], y: &[f32]) -> Result<f32, KernelError> {
    vec_dot_f16_f32_with(Isa::Scalar, order, x, y)
}

/// F16 weights · F32 activations without rounding the activations to F16, in `order`, on
/// the given ISA (scalar when `isa` is not supported here); bit-identical to
/// [`vec_dot_f16_f32_generic`] in both orders. Not a ggml pairing (ggml rounds them first,
/// see [`vec_dot_f16`]); it sums in ggml's F16 order, so when every activation is exactly
/// representable in f16 the result equals [`vec_dot_f16`]'s bit for bit. The engine's F16
/// matmuls (the tied output head) round the activations to f16 once, widen them back, and
/// call this for every weight row: ggml's result without converting the activations again
/// per row. Errors when lengths differ.
pub fn vec_dot_f16_f32_with(
    isa: Isa,
    order: SumOrder,
    x: &[f16],
    y: &[f32],
) -> Result<f32, KernelError> {
    expect_len(GgmlType::F16, "y", y.len(), x.len())?;
    Ok(match (order, isa) {
        (SumOrder::GgmlGeneric, _) => dot_f64_sum(x, y),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; lengths equal (checked above).
        (SumOrder::GgmlAvx2, _) if isa.runs_avx2() => unsafe { avx2::dot_f16_f32(x, y) },
        (SumOrder::GgmlAvx2, _) => dot_avx2_order(x, y, LaneSum::Hadd, Tail::F64),
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use crate::gemm::PREFETCH_BYTES;
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::{add_tail, f64_tail, Rows, Tail, Widen, STEP};

    /// An element type AVX2 widens to 8 f32 lanes in one load.
    pub(super) trait Load8: Widen {
        /// Eight consecutive elements from `p`, widened to f32.
        ///
        /// # Safety
        /// `p..p+8` must be readable and the CPU must support AVX2, FMA and F16C.
        unsafe fn load8(p: *const Self) -> __m256;
    }

    impl Load8 for f32 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8(p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees 8 readable f32 at p.
            unsafe { _mm256_loadu_ps(p) }
        }
    }

    impl Load8 for f16 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8(p: *const f16) -> __m256 {
            // SAFETY: the caller guarantees 8 readable f16 (16 bytes) at p.
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
        }
    }

    impl Load8 for bf16 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8(p: *const bf16) -> __m256 {
            // SAFETY: the caller guarantees 8 readable bf16 (16 bytes) at p.
            let raw = unsafe { _mm_loadu_si128(p.cast()) };
            // bf16 is the top half of an f32: zero-extend to 32 bits and shift up.
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
        }
    }

    /// One 32-element step of ggml's loop: `acc[j] = fma(x[i+8j..], y[i+8j..], acc[j])`.
    ///
    /// # Safety
    /// `x[i..i+32]` and `y[i..i+32]` must be in bounds; the CPU must support AVX2, FMA, F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fma_step<X: Load8, Y: Load8>(acc: &mut [__m256; 4], x: &[X], y: &[Y], i: usize) {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8j + 8 <= i + 32, in bounds of both slices by this fn's contract.
            let (vx, vy) = unsafe {
                (
                    X::load8(x.as_ptr().add(i + 8 * j)),
                    Y::load8(y.as_ptr().add(i + 8 * j)),
                )
            };
            *a = _mm256_fmadd_ps(vx, vy, *a);
        }
    }

    /// ggml's 4×8-lane FMA loop over the first `n - n % 32` elements; returns the four
    /// accumulators and where the tail starts. Shape: x, y: (n,); acc[j] lane l holds the sum
    /// over s of x·y at element 32s + 8j + l.
    ///
    /// # Safety
    /// `y.len() >= x.len()`; the CPU must support AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fma_4x8<X: Load8, Y: Load8>(x: &[X], y: &[Y]) -> ([__m256; 4], usize) {
        let np = x.len() - x.len() % STEP;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // Two steps per iteration: the same per-accumulator sequence as one step at a time,
        // with half the loop overhead.
        let bytes_per_iter = 2 * STEP * std::mem::size_of::<X>();
        while i + 2 * STEP <= np {
            // The weights stream from memory once: ask for them ahead of use.
            let ahead = x
                .as_ptr()
                .cast::<i8>()
                .wrapping_add(i * std::mem::size_of::<X>() + PREFETCH_BYTES);
            for line in (0..bytes_per_iter).step_by(64) {
                // A hint: it never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line));
            }
            // SAFETY: i + 64 <= np <= x.len() <= y.len().
            unsafe {
                fma_step(&mut acc, x, y, i);
                fma_step(&mut acc, x, y, i + STEP);
            }
            i += 2 * STEP;
        }
        if i < np {
            // SAFETY: i + 32 == np <= x.len() <= y.len().
            unsafe { fma_step(&mut acc, x, y, i) };
        }
        (acc, np)
    }

    /// `(acc0 + acc2) + (acc1 + acc3)`: ggml's merge of its four accumulators.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn merge4(acc: [__m256; 4]) -> __m256 {
        _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]))
    }

    /// `GGML_F32x8_REDUCE`'s lane sum: `((l0+l4) + (l1+l5)) + ((l2+l6) + (l3+l7))`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum_hadd(v: __m256) -> f32 {
        let t0 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let t1 = _mm_hadd_ps(t0, t0);
        _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
    }

    /// ggml's `hsum_float_8` (x86 `quants.c`; also the BF16 dot's lane sum):
    /// `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn hsum_float_8(v: __m256) -> f32 {
        let r = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        let r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }

    /// ggml's 4×8 FMA loop merged to one vector, and where the `n % 32` tail starts.
    ///
    /// # Safety
    /// `y.len() >= x.len()`; the CPU must support AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fma_merged<X: Load8, Y: Load8>(x: &[X], y: &[Y]) -> (__m256, usize) {
        // SAFETY: forwarded contract.
        let (acc, np) = unsafe { fma_4x8(x, y) };
        (merge4(acc), np)
    }

    /// ggml's AVX2 `ggml_vec_dot_f32`: FMA loop, `GGML_F32x8_REDUCE`, f32 tail with FMA.
    ///
    /// # Safety
    /// `y.len() == x.len()`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
        // SAFETY: forwarded contract.
        let (v, np) = unsafe { fma_merged(x, y) };
        x[np..]
            .iter()
            .zip(&y[np..])
            .fold(hsum_hadd(v), |s, (a, &b)| a.mul_add(b, s))
    }

    /// ggml's AVX2 `ggml_vec_dot_f16`: FMA loop, `GGML_F32x8_REDUCE`, f64 tail.
    ///
    /// # Safety
    /// `y.len() == x.len()`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16(x: &[f16], y: &[f16]) -> f32 {
        // SAFETY: forwarded contract.
        let (v, np) = unsafe { fma_merged(x, y) };
        f64_tail(&x[np..], &y[np..], hsum_hadd(v))
    }

    /// `out[(h0 + h)·out_stride + i] = x_i · y_h` for `h < M`, in ggml's AVX2 order per
    /// pair: each `x` row is widened once per 8 elements and multiplied into the `4·M`
    /// accumulators of its `M` pairs (each pair's chain is ggml's, step after step), then
    /// every pair is merged, lane-summed and given its tail. Shapes: x (x.rows, n);
    /// y (M, n) from row `h0`; out as [`super::check_rows`] checked.
    ///
    /// # Safety
    /// Operands checked by `super::check_rows`, `h0 + M <= y.rows`; the CPU must support
    /// AVX2, FMA and F16C.
    #[inline(always)]
    unsafe fn dot_rows_m<X: Load8, const M: usize>(
        x: &Rows<'_, X>,
        y: &Rows<'_, f32>,
        h0: usize,
        out: &mut [f32],
        out_stride: usize,
        tail: Tail,
    ) {
        let n = x.cols;
        let np = n - n % STEP;
        let ys: [&[f32]; M] = std::array::from_fn(|h| y.row(h0 + h));
        // The rows stream from memory once (short strided K rows defeat the hardware
        // prefetcher): each step asks for the step PREFETCH_BYTES ahead in reading order,
        // row after row, tracked as (row, column) without dividing.
        let step_bytes = STEP * std::mem::size_of::<X>();
        let ahead = PREFETCH_BYTES / std::mem::size_of::<X>();
        let (mut pf_row, mut pf_col) = match np {
            0 => (0, 0),
            _ => (ahead / np, ahead % np / STEP * STEP),
        };
        for i in 0..x.rows {
            let r = x.row(i);
            // acc[h][j] lane l: Σ over steps s of x·y_h at element 32s + 8j + l.
            // SAFETY: the caller's CPU contract (AVX).
            let mut acc = [[unsafe { _mm256_setzero_ps() }; 4]; M];
            let mut s = 0;
            while s < np {
                let pf = x
                    .data
                    .as_ptr()
                    .wrapping_add(pf_row * x.stride + pf_col)
                    .cast::<i8>();
                for line in (0..step_bytes).step_by(64) {
                    // SAFETY: a hint; it never faults, whatever the address.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(line)) };
                }
                pf_col += STEP;
                if pf_col >= np {
                    pf_col -= np;
                    pf_row += 1;
                }
                for j in 0..4 {
                    // SAFETY: s + 8j + 8 <= np <= n, the length of r and of every ys[h];
                    // the caller's CPU contract.
                    unsafe {
                        let xv = X::load8(r.as_ptr().add(s + 8 * j));
                        for (a, yh) in acc.iter_mut().zip(&ys) {
                            let yv = _mm256_loadu_ps(yh.as_ptr().add(s + 8 * j));
                            a[j] = _mm256_fmadd_ps(xv, yv, a[j]);
                        }
                    }
                }
                s += STEP;
            }
            for (h, (a, yh)) in acc.into_iter().zip(&ys).enumerate() {
                // SAFETY: the caller's CPU contract (AVX2, FMA, F16C).
                let sum = unsafe { hsum_hadd(merge4(a)) };
                out[(h0 + h) * out_stride + i] = add_tail(&r[np..], &yh[np..], sum, tail);
            }
        }
    }

    /// [`dot_rows_m`] over every row of `y`, `MAX_M` at a time, the rest in one call.
    ///
    /// # Safety
    /// As [`dot_rows_m`] for all of `y`.
    #[inline(always)]
    unsafe fn dot_rows_by<X: Load8, const MAX_M: usize>(
        x: &Rows<'_, X>,
        y: &Rows<'_, f32>,
        out: &mut [f32],
        out_stride: usize,
        tail: Tail,
    ) {
        let mut h0 = 0;
        while h0 < y.rows {
            let m = (y.rows - h0).min(MAX_M);
            // SAFETY: h0 + m <= y.rows; the rest forwarded.
            unsafe {
                match m {
                    4 => dot_rows_m::<X, 4>(x, y, h0, out, out_stride, tail),
                    3 => dot_rows_m::<X, 3>(x, y, h0, out, out_stride, tail),
                    2 => dot_rows_m::<X, 2>(x, y, h0, out, out_stride, tail),
                    _ => dot_rows_m::<X, 1>(x, y, h0, out, out_stride, tail),
                }
            }
            h0 += m;
        }
    }

    /// `super::dot_rows` on AVX2: two `y` rows per pass over `x` (eight accumulators
    /// beside the widened `x` vector fit the 16 registers).
    ///
    /// # Safety
    /// Operands checked by `super::check_rows`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows<X: Load8>(
        x: &Rows<'_, X>,
        y: &Rows<'_, f32>,
        out: &mut [f32],
        out_stride: usize,
        tail: Tail,
    ) {
        // SAFETY: forwarded contract.
        unsafe { dot_rows_by::<X, 2>(x, y, out, out_stride, tail) }
    }

    /// [`dot_rows`] compiled for AVX-512 VL: its 32 vector registers hold four `y` rows'
    /// sixteen accumulators, so each `x` row (a K row shared by a KV group's query heads)
    /// is loaded and widened once per four heads. Same instructions per pair, same bits.
    ///
    /// # Safety
    /// Operands checked by `super::check_rows`; the CPU must support AVX-512 F/VL, AVX2,
    /// FMA and F16C.
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows_evex<X: Load8>(
        x: &Rows<'_, X>,
        y: &Rows<'_, f32>,
        out: &mut [f32],
        out_stride: usize,
        tail: Tail,
    ) {
        // SAFETY: forwarded contract.
        unsafe { dot_rows_by::<X, 4>(x, y, out, out_stride, tail) }
    }

    /// F16 · F32 in ggml's F16 order (our pairing, see `vec_dot_f16_f32`).
    ///
    /// # Safety
    /// `y.len() == x.len()`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
        // SAFETY: forwarded contract.
        let (v, np) = unsafe { fma_merged(x, y) };
        f64_tail(&x[np..], &y[np..], hsum_hadd(v))
    }

    /// ggml's AVX2 `ggml_vec_dot_bf16` as GCC compiles it (multiply-add contracted to FMA):
    /// `hsum_float_8` lane order, f64 tail.
    ///
    /// # Safety
    /// `y.len() == x.len()`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_bf16(x: &[bf16], y: &[bf16]) -> f32 {
        // SAFETY: forwarded contract.
        let (v, np) = unsafe { fma_merged(x, y) };
        f64_tail(&x[np..], &y[np..], hsum_float_8(v))
    }

    /// f32 → f16, 8 at a time with `vcvtps2ph` (round to nearest even), scalar tail.
    ///
    /// # Safety
    /// `y.len() == x.len()`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f32_to_f16(x: &[f32], y: &mut [f16]) {
        let mut xs = x.chunks_exact(8);
        let mut ys = y.chunks_exact_mut(8);
        for (xc, yc) in (&mut xs).zip(&mut ys) {
            // SAFETY: both chunks hold exactly 8 elements (32 and 16 bytes).
            unsafe {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(xc.as_ptr()));
                _mm_storeu_si128(yc.as_mut_ptr().cast(), h);
            }
        }
        for (o, &v) in ys.into_remainder().iter_mut().zip(xs.remainder()) {
            *o = f16::from_f32(v);
        }
    }

    /// f16 → f32, 8 at a time with `vcvtph2ps` (exact), scalar tail.
    ///
    /// # Safety
    /// `y.len() == x.len()`; the CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f16_to_f32(x: &[f16], y: &mut [f32]) {
        let mut xs = x.chunks_exact(8);
        let mut ys = y.chunks_exact_mut(8);
        for (xc, yc) in (&mut xs).zip(&mut ys) {
            // SAFETY: both chunks hold exactly 8 elements (16 and 32 bytes).
            unsafe { _mm256_storeu_ps(yc.as_mut_ptr(), f16::load8(xc.as_ptr())) };
        }
        for (o, &v) in ys.into_remainder().iter_mut().zip(xs.remainder()) {
            *o = v.to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: [SumOrder; 2] = [SumOrder::GgmlGeneric, SumOrder::GgmlAvx2];

    #[test]
    fn f16_rounding_known_answers() {
        // 65504 is the largest f16 (0x7BFF); 65520 is halfway to 65536 (= inf's slot) and
        // ties to the even significand, i.e. overflows to inf (0x7C00).
        assert_eq!(f16::from_f32(65504.0).to_bits(), 0x7BFF);
        assert_eq!(f16::from_f32(65520.0).to_bits(), 0x7C00);
        // 2^-24 is the smallest subnormal (0x0001); 2^-25 is halfway to 0 and ties to 0;
        // 3·2^-25 is halfway between 1 and 2 ulps and ties to 2 (0x0002).
        assert_eq!(f16::from_f32(2f32.powi(-24)).to_bits(), 0x0001);
        assert_eq!(f16::from_f32(2f32.powi(-25)).to_bits(), 0x0000);
        assert_eq!(f16::from_f32(3.0 * 2f32.powi(-25)).to_bits(), 0x0002);
        // 1 + 2^-11 is halfway between 1.0 (0x3C00) and 1 + 2^-10 (0x3C01): ties to 0x3C00.
        assert_eq!(f16::from_f32(1.0 + 2f32.powi(-11)).to_bits(), 0x3C00);
        // ggml-base's software conversion canonicalises NaN, F16C keeps the payload.
        let nan = f32::from_bits(0xFFC0_2000);
        assert_eq!(f32_to_f16_ref(nan).to_bits(), 0xFE00);
        assert_eq!(f16::from_f32(nan).to_bits(), 0xFE01);
        assert_eq!(f32_to_f16_ref(-2.5).to_bits(), 0xC100);
    }

    #[test]
    fn bf16_rounding_known_answers() {
        // 1.0 = 0x3F80_0000 → 0x3F80. 0x3F80_8000 is halfway between 0x3F80 and 0x3F81:
        // even → 0x3F80. 0x3F81_8000 is halfway between 0x3F81 and 0x3F82: even → 0x3F82.
        // 0x3F80_8001 is just past halfway → 0x3F81.
        for (bits, want) in [
            (0x3F80_0000u32, 0x3F80u16),
            (0x3F80_8000, 0x3F80),
            (0x3F81_8000, 0x3F82),
            (0x3F80_8001, 0x3F81),
            (0xBF80_7FFF, 0xBF80),
            // Largest finite f32 rounds up into the exponent: infinity.
            (0x7F7F_FFFF, 0x7F80),
            (0x7F80_0000, 0x7F80),
            // Signalling NaN: top half kept, quiet bit 0x40 forced.
            (0x7F80_0001, 0x7FC0),
            (0xFF81_2345, 0xFFC1),
            (0x7FFF_FFFF, 0x7FFF),
            // Smallest subnormal rounds to +0; 0x0000_8000 ties to even 0.
            (0x0000_0001, 0x0000),
            (0x0000_8001, 0x0001),
        ] {
            assert_eq!(
                f32_to_bf16(f32::from_bits(bits)).to_bits(),
                want,
                "{bits:#010x}"
            );
        }
        assert_eq!(bf16_to_f32(bf16::from_bits(0x3FC0)), 1.5);
    }

    #[test]
    fn dot_known_answers() {
        // x = 1..=40, y = 0.5 everywhere: Σ = 0.5 · 40·41/2 = 410, exact in every order
        // (all partial sums are small multiples of 0.5). 40 = one 32-step plus an 8-tail.
        let x: Vec<f32> = (1..=40).map(|i| i as f32).collect();
        let y = vec![0.5f32; 40];
        let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let yh: Vec<f16> = y.iter().map(|&v| f16::from_f32(v)).collect();
        let xb: Vec<bf16> = x.iter().map(|&v| f32_to_bf16(v)).collect();
        let yb: Vec<bf16> = y.iter().map(|&v| f32_to_bf16(v)).collect();
        for &isa in Isa::available() {
            for order in ORDERS {
                let at = format!("{isa:?} {order:?}");
                assert_eq!(vec_dot_f32_with(isa, order, &x, &y), Ok(410.0), "{at}");
                assert_eq!(vec_dot_f16_with(isa, order, &xh, &yh), Ok(410.0), "{at}");
                assert_eq!(vec_dot_bf16_with(isa, order, &xb, &yb), Ok(410.0), "{at}");
                assert_eq!(vec_dot_f16_f32_with(isa, order, &xh, &y), Ok(410.0), "{at}");
            }
        }
    }

    #[test]
    fn avx2_order_follows_ggml_lane_order_on_every_isa() {
        // Elements 0, 1, 2 land in lanes 0, 1, 2 of accumulator 0; all other lanes are 0.
        // x = [v, -v, 1, 0...] with v = 1e8 (f32 spacing 8 there), y = 1.
        // F32/F16 (hadd order): (l0+l4) + (l1+l5) = v - v = 0 first, then + (l2+l6) = 1 → 1.
        // BF16 (movehl order): (l0+l4) + (l2+l6) = v + 1 rounds to v, then + (-v) → 0.
        // The f64 sum of the generic order gives 1 for both.
        let mut x = vec![0.0f32; 32];
        x[0] = 1e8;
        x[1] = -1e8;
        x[2] = 1.0;
        let y = vec![1.0f32; 32];
        let xb: Vec<bf16> = x.iter().map(|&v| f32_to_bf16(v)).collect();
        let yb: Vec<bf16> = y.iter().map(|&v| f32_to_bf16(v)).collect();
        for &isa in Isa::available() {
            for order in ORDERS {
                assert_eq!(vec_dot_f32_with(isa, order, &x, &y), Ok(1.0), "{isa:?}");
            }
            let generic = vec_dot_bf16_with(isa, SumOrder::GgmlGeneric, &xb, &yb);
            assert_eq!(generic, Ok(1.0), "{isa:?}");
            let avx2 = vec_dot_bf16_with(isa, SumOrder::GgmlAvx2, &xb, &yb);
            assert_eq!(avx2, Ok(0.0), "{isa:?}");
        }
    }

    #[test]
    fn avx2_order_fuses_the_f32_tail() {
        // n = 2, all tail. a = 6909/4096, b = 7545/4096: a·b has 26 significant bits.
        // GgmlAvx2: fma(a, b, fma(1, 1, +0)) rounds 1 + a·b once → 0x40836D53.
        // GgmlGeneric: a·b rounded to f32 first, then 1 + that (exact in f64) → 0x40836D52.
        let (a, b) = (6909.0f32 / 4096.0, 7545.0f32 / 4096.0);
        let (x, y) = ([1.0f32, a], [1.0f32, b]);
        for &isa in Isa::available() {
            let fused = vec_dot_f32_with(isa, SumOrder::GgmlAvx2, &x, &y).unwrap();
            assert_eq!(fused.to_bits(), 0x4083_6D53, "{isa:?}");
            let generic = vec_dot_f32_with(isa, SumOrder::GgmlGeneric, &x, &y).unwrap();
            assert_eq!(generic.to_bits(), 0x4083_6D52, "{isa:?}");
        }
    }

    #[test]
    fn negative_zero_products_sum_to_positive_zero() {
        let x = [-0.0f32; 3];
        let y = [1.0f32; 3];
        for &isa in Isa::available() {
            for order in ORDERS {
                let s = vec_dot_f32_with(isa, order, &x, &y).unwrap();
                assert_eq!(s.to_bits(), 0, "{isa:?} {order:?}");
            }
        }
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let err = vec_dot_f32(SumOrder::GgmlAvx2, &[1.0, 2.0], &[1.0]).unwrap_err();
        assert_eq!(
            err,
            KernelError::LengthMismatch {
                format: GgmlType::F32,
                what: "y",
                got: 1,
                expected: 2
            }
        );
        let mut out = [f16::ZERO; 3];
        assert!(f32_to_f16_row(&[1.0; 4], &mut out).is_err());
        let mut out = [0.0f32; 3];
        assert!(bf16_to_f32_row(&[bf16::ZERO; 2], &mut out).is_err());
    }
}
