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

use crate::float::expect_len;
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
pub fn ik_dot_f32_with(isa: Isa, x: &[f32], y: &[f32]) -> Result<f32, KernelError> {
    check(GgmlType::F32, x.len(), y.len())?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: isa.runs_avx2() checked in the guard; lengths equal, % 4 == 0.
        _ if isa.runs_avx2() => Ok(unsafe { avx2::dot(x, y) }),
        _ => Ok(dot_generic(x.len(), |i| x[i], y)),
    }
}

/// [`ik_dot_f16_f32`] on the given ISA (scalar when `isa` is not supported here).
pub fn ik_dot_f16_f32_with(isa: Isa, x: &[f16], y: &[f32]) -> Result<f32, KernelError> {
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::LANES;

    /// An element type loaded as 8 or 4 f32 lanes.
    pub(super) trait Load: Copy {
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
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot<X: Load>(x: &[X], y: &[f32]) -> f32 {
        let n = x.len();
        let nb = n / LANES;
        let (px, py) = (x.as_ptr(), y.as_ptr());
        let mut acc = _mm256_setzero_ps();
        if nb > 0 {
            // SAFETY: 8 <= n elements readable in both.
            acc = unsafe { _mm256_mul_ps(X::load8(px), f32::load8(py)) };
        }
        for c in 1..nb {
            // SAFETY: 8c + 8 <= 8·nb <= n.
            let (vx, vy) = unsafe { (X::load8(px.add(8 * c)), f32::load8(py.add(8 * c))) };
            acc = _mm256_fmadd_ps(vx, vy, acc);
        }
        for c in (2 * nb)..(n / 4) {
            // SAFETY: 4c + 4 <= n.
            let (vx, vy) = unsafe { (X::load4(px.add(4 * c)), f32::load4(py.add(4 * c))) };
            acc = _mm256_fmadd_ps(vx, vy, acc);
        }
        hsum(acc)
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
