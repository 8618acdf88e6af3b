//! Runtime CPU feature detection and the choice of kernel ISA.
//!
//! Features are detected once and cached. `BITNET_FORCE_SCALAR=1` makes [`Isa::best`]
//! return [`Isa::Scalar`] so every entry point runs its scalar reference; tests that
//! compare ISAs iterate [`Isa::available`], which ignores that variable.

use std::sync::OnceLock;

/// An instruction-set family a kernel can be written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable scalar code: the oracle every fast path is tested against.
    Scalar,
    /// x86-64 AVX2 (+ FMA, F16C where a kernel says so).
    Avx2,
    /// x86-64 AVX-512 with BW, VL and VNNI (AVX2, FMA and F16C included). Kernels without
    /// an AVX-512 path run their AVX2 path under it ([`Isa::runs_avx2`]).
    Avx512Vnni,
}

impl Isa {
    /// The fastest ISA this CPU supports, or `Scalar` under `BITNET_FORCE_SCALAR=1`.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            if force_scalar() {
                Isa::Scalar
            } else {
                *Isa::available().last().unwrap_or(&Isa::Scalar)
            }
        })
    }

    /// Every ISA this CPU can run, scalar first, fastest last.
    pub fn available() -> &'static [Isa] {
        static AVAILABLE: OnceLock<Vec<Isa>> = OnceLock::new();
        AVAILABLE.get_or_init(|| {
            let mut v = vec![Isa::Scalar];
            if avx2_supported() {
                v.push(Isa::Avx2);
            }
            if avx512_vnni_supported() {
                v.push(Isa::Avx512Vnni);
            }
            v
        })
    }

    /// Whether this CPU can run kernels written for `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_supported(),
            Isa::Avx512Vnni => avx512_vnni_supported(),
        }
    }

    /// Whether a kernel's AVX2 path may run for `self`: `self` is AVX2 or a superset of
    /// it, and this CPU supports `self` (so AVX2, FMA and F16C are present).
    pub fn runs_avx2(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx512Vnni) && self.is_supported()
    }
}

/// `BITNET_FORCE_SCALAR` is set to something other than empty or `0`.
pub(crate) fn force_scalar() -> bool {
    static FORCE: OnceLock<bool> = OnceLock::new();
    *FORCE.get_or_init(|| {
        std::env::var("BITNET_FORCE_SCALAR").is_ok_and(|v| !v.is_empty() && v != "0")
    })
}

/// AVX2, FMA and F16C are all present (every AVX2 kernel may use the three).
pub(crate) fn avx2_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-512 F, BW, VL and VNNI are all present, and so is everything AVX2 kernels use.
pub(crate) fn avx512_vnni_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: OnceLock<bool> = OnceLock::new();
        *AVX512.get_or_init(|| {
            avx2_supported()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `f` inside a function compiled for AVX2 and FMA when the CPU has them, so that once
/// `f` is inlined there, its `f32::mul_add` is one `vfmadd` instead of a call into libm's
/// `fmaf`. The result is the same either way (`mul_add` is an exact fused multiply-add on
/// every target); only the speed changes. For element-wise float loops outside the kernels.
#[inline]
pub fn with_fma<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if avx2_supported() {
        // SAFETY: AVX2, FMA and F16C were detected on this CPU.
        return unsafe { call_with_fma(f) };
    }
    f()
}

/// `f()` compiled with FMA enabled (see [`with_fma`]).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn call_with_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_is_always_available_and_first() {
        assert_eq!(Isa::available()[0], Isa::Scalar);
        assert!(Isa::available().iter().all(|isa| isa.is_supported()));
        assert!(Isa::best().is_supported());
        // Every ISA past scalar is a superset of AVX2.
        assert!(Isa::available()[1..].iter().all(|isa| isa.runs_avx2()));
        assert!(!Isa::Scalar.runs_avx2());
    }
}
