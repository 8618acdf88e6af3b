//! Q8_K64: ik_llama.cpp's per-row int8 activation format for IQ*_BN (their `vec_dot_type`).
//!
//! One row of K activations, as ik's `quantize_row_q8_K64` writes it (K >= 512, K % 64 == 0):
//! a 32-byte header of 8 f32 — `d[g] = amax_g / 127` for the four lane groups g, then
//! `d[g] · Σq` over each group — followed by K int8 quants. Element n belongs to group
//! `(n % 16) / 4`: ik's x86 quantizer walks the row 16 floats at a time as four 4-lane SSE
//! registers, one register (hence one scale) per group. ggml sizes the row as K/64 blocks of
//! `block_q8_K64` (f32 + 64 int8 = 68 bytes) but nothing reads it as blocks; the header plus
//! K bytes fit in that size only because K >= 512, which is why ik asserts it.
//!
//! The quantizer here reproduces ik's `__AVX__` branch (the one an x86 build runs), not its
//! portable `#else` branch: scales are multiplied by the reciprocal `1/d`, rounding is
//! `_mm_round_ps` (ties to even), and conversion/packing saturate as `cvtps_epi32` +
//! `packs` do.

use crate::float::expect_len;
use crate::round::nearest_int;
use crate::Isa;
use crate::KernelError;
use bitnet_gguf::GgmlType;

/// Elements per ggml block of Q8_K64 (the granularity rows must respect).
pub const QK_K64: usize = 64;

/// Lane groups per row, each with its own scale.
pub const Q8_K64_GROUPS: usize = 4;

/// Smallest row ik accepts (`GGML_ASSERT(k >= 8*QK_IQ1BN)` in `quantize_row_q8_K64_ref`).
pub const Q8_K64_MIN_K: usize = 8 * QK_K64;

/// Size of the row header in ik's byte layout.
pub const Q8_K64_HEADER_BYTES: usize = 32;

/// The 8-float header ik writes before a row's int8 quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Q8K64Header {
    /// Per-group scale `amax_g / 127` (0 for an all-zero group).
    pub d: [f32; Q8_K64_GROUPS],
    /// Per-group `d[g] · Σq` (one f32 product), subtracted in the dot product to undo the
    /// +1 offset of unsigned weight codes.
    pub dsum: [f32; Q8_K64_GROUPS],
}
const _: () = assert!(std::mem::size_of::<Q8K64Header>() == Q8_K64_HEADER_BYTES);

/// The lane group (0..4) element `n` of a row belongs to.
#[inline]
pub fn group_of(n: usize) -> usize {
    (n % 16) / 4
}

/// Checks that `k` is a row length ik can quantize to Q8_K64 (multiple of 64, at least 512).
pub(crate) fn check_row_len(k: usize) -> Result<(), KernelError> {
    if !k.is_multiple_of(QK_K64) {
        return Err(KernelError::NotBlockMultiple {
            format: GgmlType::Q8_K64,
            len: k,
            block: QK_K64,
        });
    }
    if k < Q8_K64_MIN_K {
        return Err(KernelError::Unsupported {
            format: GgmlType::Q8_K64,
            reason: "rows need at least 512 elements (ik_llama.cpp asserts k >= 8*QK_IQ1BN)",
        });
    }
    Ok(())
}

/// A quantized activation row: its header and K int8 quants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q8K64Row<'a> {
    header: Q8K64Header,
    qs: &'a [i8],
}

impl<'a> Q8K64Row<'a> {
    /// Pairs a header with its quants; `qs.len()` must be a valid row length.
    pub fn new(header: Q8K64Header, qs: &'a [i8]) -> Result<Self, KernelError> {
        check_row_len(qs.len())?;
        Ok(Q8K64Row { header, qs })
    }

    /// Reads a row in ik's byte layout (32-byte header, then K int8), e.g. a buffer dumped
    /// from the reference. The header may be unaligned.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, KernelError> {
        let Some((head, qs)) = bytes.split_at_checked(Q8_K64_HEADER_BYTES) else {
            return Err(KernelError::LengthMismatch {
                format: GgmlType::Q8_K64,
                what: "row bytes",
                got: bytes.len(),
                expected: Q8_K64_HEADER_BYTES + Q8_K64_MIN_K,
            });
        };
        let header: Q8K64Header = bytemuck::pod_read_unaligned(head);
        Q8K64Row::new(header, bytemuck::cast_slice(qs))
    }

    /// The row header.
    pub fn header(&self) -> &Q8K64Header {
        &self.header
    }

    /// The K int8 quants.
    pub fn qs(&self) -> &'a [i8] {
        self.qs
    }

    /// Number of elements K.
    pub fn k(&self) -> usize {
        self.qs.len()
    }
}

/// `_mm_max_ps` / `_mm_max_ss` on one lane: the first operand if it is greater, else the
/// second (so a NaN survives only when it is the second operand, as on x86).
#[inline]
fn sse_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `_mm_round_ps(v, _MM_ROUND_NEAREST)`, `_mm_cvtps_epi32`, then the saturating
/// `packs_epi32` + `packs_epi16` down to int8. `cvtps_epi32` yields `i32::MIN` for NaN and
/// for |v| >= 2^31, so those become -128 (reachable when a group's amax is subnormal: `1/d`
/// overflows to +inf and every product is ±inf or NaN).
#[inline]
fn round_saturate_i8(v: f32) -> i8 {
    if v.abs() <= 4_194_303.0 {
        // Within nearest_int's domain: ties to even, exactly as _mm_round_ps.
        nearest_int(v).clamp(-128, 127) as i8
    } else if v > 0.0 && v < 2_147_483_648.0 {
        127
    } else {
        -128
    }
}

/// Quantizes one activation row to Q8_K64 exactly as ik_llama.cpp's x86
/// `quantize_row_q8_K64` does: writes K int8 into `qs` and returns the header. Runs the
/// AVX-512 path where the CPU has it; every path writes the same bytes.
pub fn quantize_row_q8_k64(x: &[f32], qs: &mut [i8]) -> Result<Q8K64Header, KernelError> {
    quantize_row_q8_k64_with(Isa::best(), x, qs)
}

/// [`quantize_row_q8_k64`] on `isa` (the scalar oracle where `isa` has no path or is not
/// supported here).
pub(crate) fn quantize_row_q8_k64_with(
    isa: Isa,
    x: &[f32],
    qs: &mut [i8],
) -> Result<Q8K64Header, KernelError> {
    check_row_len(x.len())?;
    expect_len(GgmlType::Q8_K64, "quant buffer", qs.len(), x.len())?;
    let x: &[[f32; 16]] = bytemuck::cast_slice(x);
    let qs: &mut [[i8; 16]] = bytemuck::cast_slice_mut(qs);
    Ok(match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512Vnni.is_supported()` checked by the match guard.
        Isa::Avx512Vnni if isa.is_supported() => unsafe { avx512::quantize(x, qs) },
        _ => quantize_generic(x, qs),
    })
}

/// The scales from the (group, lane) running maxima of |x|: ik keeps one 4-lane register
/// per group and folds its lanes only at the end, as (l0 max l2) max (l1 max l3). Returns
/// the header with `d` set and the reciprocals `1/d` (0 for an all-zero group) the quants
/// are multiplied by.
fn scales(lane_max: [[f32; 4]; Q8_K64_GROUPS]) -> (Q8K64Header, [f32; Q8_K64_GROUPS]) {
    let mut header = Q8K64Header {
        d: [0.0; Q8_K64_GROUPS],
        dsum: [0.0; Q8_K64_GROUPS],
    };
    let mut inv = [0f32; Q8_K64_GROUPS];
    for (g, m) in lane_max.iter().enumerate() {
        let amax = sse_max(sse_max(m[0], m[2]), sse_max(m[1], m[3]));
        header.d[g] = amax / 127.0;
        // ik multiplies by this reciprocal rather than dividing by d.
        inv[g] = if header.d[g] > 0.0 {
            1.0 / header.d[g]
        } else {
            0.0
        };
    }
    (header, inv)
}

/// The scalar oracle: `x` and `qs` in chunks of 16 (element n of a chunk is in group n / 4).
fn quantize_generic(x: &[[f32; 16]], qs: &mut [[i8; 16]]) -> Q8K64Header {
    let mut lane_max = [[0f32; 4]; Q8_K64_GROUPS];
    for chunk in x {
        for (g, lanes) in lane_max.iter_mut().enumerate() {
            for (l, m) in lanes.iter_mut().enumerate() {
                *m = sse_max(*m, chunk[4 * g + l].abs());
            }
        }
    }
    let (mut header, inv) = scales(lane_max);
    let mut sums = [0i32; Q8_K64_GROUPS];
    // (K/16) chunks x 16 elements.
    for (xc, qc) in x.iter().zip(qs) {
        for (n, (&xv, q)) in xc.iter().zip(qc.iter_mut()).enumerate() {
            let g = n / 4;
            *q = round_saturate_i8(inv[g] * xv);
            sums[g] = sums[g].wrapping_add(i32::from(*q));
        }
    }
    header.dsum = std::array::from_fn(|g| header.d[g] * sums[g] as f32);
    header
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{scales, Q8K64Header};
    use std::arch::x86_64::*;

    /// [`super::quantize_generic`] with a chunk of 16 per vector: lane 4g + l is the
    /// scalar's (group g, lane l). `max_ps(m, a)` is `m > a ? m : a` as `sse_max`, the
    /// rounding `cvtps_epi32` (ties to even; NaN and overflow to `i32::MIN`) and the narrowing
    /// `vpmovsdb`, which saturates to int8 as `packs_epi32` then `packs_epi16` do.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/VNNI (`Isa::Avx512Vnni.is_supported()`);
    /// `qs.len() == x.len()`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn quantize(x: &[[f32; 16]], qs: &mut [[i8; 16]]) -> Q8K64Header {
        let mut m = _mm512_setzero_ps();
        // Shape: K/16 chunks of 16 floats.
        for c in x {
            // SAFETY: a chunk is 16 f32 = 64 readable bytes; `loadu` takes any alignment.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            m = _mm512_max_ps(m, _mm512_abs_ps(v));
        }
        let mut lanes = [0f32; 16];
        // SAFETY: `lanes` is 64 writable bytes; `storeu` takes any alignment.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), m) };
        let (mut header, inv) = scales(std::array::from_fn(|g| {
            std::array::from_fn(|l| lanes[4 * g + l])
        }));
        let inv_lanes: [f32; 16] = std::array::from_fn(|n| inv[n / 4]);
        // SAFETY: `inv_lanes` is 64 readable bytes; `loadu` takes any alignment.
        let inv = unsafe { _mm512_loadu_ps(inv_lanes.as_ptr()) };
        let mut sums = _mm512_setzero_si512();
        for (c, q) in x.iter().zip(qs) {
            // SAFETY: as in the first loop.
            let v = _mm512_mul_ps(inv, unsafe { _mm512_loadu_ps(c.as_ptr()) });
            let q8 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v));
            // SAFETY: a quant chunk is 16 writable bytes; `storeu` takes any alignment.
            unsafe { _mm_storeu_si128(q.as_mut_ptr().cast(), q8) };
            sums = _mm512_add_epi32(sums, _mm512_cvtepi8_epi32(q8));
        }
        let mut lane_sums = [0i32; 16];
        // SAFETY: `lane_sums` is 64 writable bytes; `storeu` takes any alignment.
        unsafe { _mm512_storeu_si512(lane_sums.as_mut_ptr().cast(), sums) };
        header.dsum = std::array::from_fn(|g| {
            let s = lane_sums[4 * g..4 * g + 4]
                .iter()
                .fold(0i32, |a, &b| a.wrapping_add(b));
            header.d[g] * s as f32
        });
        header
    }
}

/// Expands a Q8_K64 row to f32 (`d[group] · q`); `out.len()` must equal the row's K.
pub fn dequantize_row_q8_k64(row: &Q8K64Row<'_>, out: &mut [f32]) -> Result<(), KernelError> {
    if out.len() != row.k() {
        return Err(KernelError::LengthMismatch {
            format: GgmlType::Q8_K64,
            what: "output",
            got: out.len(),
            expected: row.k(),
        });
    }
    for (n, (o, &q)) in out.iter_mut().zip(row.qs).enumerate() {
        *o = row.header.d[group_of(n)] * f32::from(q);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A K=512 row whose scales are powers of two, so every quant is exact arithmetic:
    /// group 0 (n%16 in 0..4):   amax 1.984375 = 127/64 → d = 1/64, 1/d = 64
    ///   x[0] = 127/64 → 127;  x[16] = 0.5 → 32;  x[32] = 32.5/64 → 32.5 → 32 (tie, even);
    ///   x[48] = -33.5/64 → -33.5 → -34 (tie, even);  Σq = 127 + 32 + 32 - 34 = 157
    /// group 1 (n%16 in 4..8):   amax 254 → d = 2, 1/d = 0.5
    ///   x[4] = -254 → -127;  x[5] = 3 → 1.5 → 2;  x[6] = 5 → 2.5 → 2;  Σq = -123
    /// group 2: all zero → d = 0, 1/d := 0, all q = 0
    /// group 3 (n%16 in 12..16): amax 127 → d = 1
    ///   x[12] = 127 → 127;  x[13] = -0.5 → -0 → 0;  x[14] = 1.5 → 2;  Σq = 129
    pub(crate) fn known_row() -> Vec<f32> {
        let mut x = vec![0f32; 512];
        x[0] = 127.0 / 64.0;
        x[16] = 0.5;
        x[32] = 32.5 / 64.0;
        x[48] = -33.5 / 64.0;
        x[4] = -254.0;
        x[5] = 3.0;
        x[6] = 5.0;
        x[12] = 127.0;
        x[13] = -0.5;
        x[14] = 1.5;
        x
    }

    #[test]
    fn known_answer_row() {
        let x = known_row();
        let mut qs = vec![0i8; 512];
        let h = quantize_row_q8_k64(&x, &mut qs).unwrap();
        assert_eq!(h.d, [1.0 / 64.0, 2.0, 0.0, 1.0]);
        // dsum = d · Σq: 157/64 = 2.453125, 2 · -123 = -246, 0, 129.
        assert_eq!(h.dsum, [2.453125, -246.0, 0.0, 129.0]);
        let mut expected = vec![0i8; 512];
        for (n, q) in [
            (0, 127),
            (16, 32),
            (32, 32),
            (48, -34),
            (4, -127),
            (5, 2),
            (6, 2),
            (12, 127),
            (13, 0),
            (14, 2),
        ] {
            expected[n] = q;
        }
        assert_eq!(qs, expected);
    }

    /// Ordinary values, huge ones, signed zeros, subnormals, infinities and NaN.
    fn any_activation() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -4.0f32..4.0,
            1 => prop::num::f32::ANY,
            1 => prop::sample::select(vec![
                0.0,
                -0.0,
                1e-40,
                -1e-40,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                3e38,
            ]),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        /// Every ISA writes the scalar oracle's bytes and header bits, whatever the row.
        #[test]
        fn every_isa_matches_the_scalar_quantizer(
            x in (8usize..=20).prop_flat_map(|c| prop::collection::vec(any_activation(), c * 64)),
        ) {
            let mut want = vec![0i8; x.len()];
            let h = quantize_row_q8_k64_with(Isa::Scalar, &x, &mut want).unwrap();
            for &isa in Isa::available() {
                let mut got = vec![0i8; x.len()];
                let g = quantize_row_q8_k64_with(isa, &x, &mut got).unwrap();
                prop_assert_eq!(&got, &want, "{:?}", isa);
                prop_assert_eq!(
                    bytemuck::bytes_of(&g), bytemuck::bytes_of(&h), "{:?} header", isa
                );
            }
        }
    }

    #[test]
    fn groups_interleave_every_four_elements() {
        assert_eq!(
            (0..20).map(group_of).collect::<Vec<_>>(),
            [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 0, 0, 0, 0]
        );
    }

    #[test]
    fn subnormal_group_max_saturates_like_x86() {
        // amax = 1e-40 (subnormal): d = amax/127 > 0 but 1/d overflows to +inf, so every
        // product is ±inf or NaN (0·inf) and cvtps_epi32 returns i32::MIN → -128.
        let mut x = vec![0f32; 512];
        x[0] = 1e-40;
        x[1] = -1e-40;
        let mut qs = vec![0i8; 512];
        let h = quantize_row_q8_k64(&x, &mut qs).unwrap();
        assert!(h.d[0] > 0.0 && (1.0 / h.d[0]).is_infinite());
        for (n, &q) in qs.iter().enumerate() {
            let want = if group_of(n) == 0 { -128 } else { 0 };
            assert_eq!(q, want, "element {n}");
        }
        assert_eq!(h.dsum[0], h.d[0] * (-128.0 * 128.0));
    }

    #[test]
    fn rejects_short_and_ragged_rows() {
        let x = vec![0f32; 448];
        let mut qs = vec![0i8; 448];
        assert!(matches!(
            quantize_row_q8_k64(&x, &mut qs),
            Err(KernelError::Unsupported { .. })
        ));
        let x = vec![0f32; 520];
        let mut qs = vec![0i8; 520];
        assert!(matches!(
            quantize_row_q8_k64(&x, &mut qs),
            Err(KernelError::NotBlockMultiple { .. })
        ));
        let x = vec![0f32; 512];
        let mut qs = vec![0i8; 511];
        assert!(matches!(
            quantize_row_q8_k64(&x, &mut qs),
            Err(KernelError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn byte_layout_round_trips() {
        let x = known_row();
        let mut qs = vec![0i8; 512];
        let h = quantize_row_q8_k64(&x, &mut qs).unwrap();
        let mut bytes = bytemuck::bytes_of(&h).to_vec();
        bytes.extend(qs.iter().map(|&q| q as u8));
        let row = Q8K64Row::from_bytes(&bytes).unwrap();
        assert_eq!(row.header(), &h);
        assert_eq!(row.qs(), &qs[..]);
        assert!(Q8K64Row::from_bytes(&bytes[..31]).is_err());
        assert!(Q8K64Row::from_bytes(&bytes[..bytes.len() - 64]).is_err());

        let mut out = vec![0f32; 512];
        dequantize_row_q8_k64(&row, &mut out).unwrap();
        assert_eq!(out[48], -34.0 / 64.0);
        assert_eq!(out[4], -254.0);
    }
}
