//! The summation orders a dot product can follow, and the scalar lane arithmetic that lets
//! every ISA compute ggml's AVX2 order.
//!
//! The integer parts of the quantized dot products are exact in every order; the float
//! parts (and the float dot products entirely) round differently depending on how ggml was
//! built, and the next activation quantization amplifies a last-bit change (docs/DESIGN.md §3.3).
//! So the order is a parameter of each dot, not a property of the ISA that runs it: with
//! [`SumOrder::GgmlAvx2`] the scalar path emulates the AVX2 lanes (FMA through
//! [`f32::mul_add`] exactly where the AVX2 build fuses) and returns the AVX2 kernel's bits,
//! which keeps results unchanged under `BITNET_FORCE_SCALAR=1`.

/// How a dot product adds up its float terms. Each dot documents what the two orders mean
/// for it; both are computed bit-identically by every [`crate::Isa`] (NaN payloads aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SumOrder {
    /// ggml's portable `*_generic` kernels, as a build without SIMD runs them: for the
    /// quantized formats one f32 accumulator in block order; for the float formats f32
    /// products summed in f64 (`ggml_float`).
    GgmlGeneric,
    /// ggml's x86 AVX2 kernels as GCC compiles them for an AVX2+FMA+F16C build (ggml is
    /// built `-std=gnu11`, whose default `-ffp-contract=fast` fuses a multiply feeding an
    /// add into an FMA): 8-lane accumulators, each dot's lane reduction, its tail handling.
    /// Upstream llama.cpp built by GCC with `GGML_AVX2=ON GGML_FMA=ON` (llama-cpp-sys-2's
    /// configuration here) and bitnet.cpp's x86 build run exactly this.
    GgmlAvx2,
}

/// ggml's `hsum_float_8` (x86 `quants.c`), in scalar:
/// `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
pub(crate) fn hsum8_ggml(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// `GGML_F32x8_REDUCE`'s final lane sum (halves, then two `hadd`s), in scalar:
/// `((a0+a4)+(a1+a5)) + ((a2+a6)+(a3+a7))`.
pub(crate) fn hsum8_hadd(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// `maddubs` then `madd(.., 1)` on four byte pairs, in scalar: `u` unsigned, `s` signed;
/// each i16 pair sum saturates as `_mm256_maddubs_epi16` does, then the two pairs add in
/// i32. This is one i32 lane of ggml's AVX2 integer dots (elements `4k..4k+4` → lane `k`).
pub(crate) fn maddubs_madd4(u: [u8; 4], s: [i8; 4]) -> i32 {
    let pair = |j: usize| {
        let p = i32::from(u[j]) * i32::from(s[j]) + i32::from(u[j + 1]) * i32::from(s[j + 1]);
        p.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
    };
    pair(0) + pair(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_follow_ggml_pairings() {
        // 1e8 absorbs 1.0 (f32 spacing 8 there) unless it is cancelled first.
        // hsum_float_8: ((1e8 + -1e8) + (1 + 0)) + ((1 + 0) + (0 + 0)) = 2.
        let a = [1e8, 1.0, 1.0, 0.0, -1e8, 0.0, 0.0, 0.0];
        assert_eq!(hsum8_ggml(a), 2.0);
        // l0 = 1e8, l1 = 1, l2 = -1e8: hsum_float_8 cancels first, (1e8 - 1e8) + 1 = 1;
        // the hadd order adds 1 to 1e8 first, (1e8 + 1) - 1e8 = 0.
        let c = [1e8, 1.0, -1e8, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(hsum8_ggml(c), 1.0);
        assert_eq!(hsum8_hadd(c), 0.0);
    }

    #[test]
    fn maddubs_saturates_pairs() {
        assert_eq!(
            maddubs_madd4([255, 255, 1, 2], [127, 127, 3, -4]),
            32767 - 5
        );
        assert_eq!(maddubs_madd4([255, 255, 0, 0], [-128, -128, 0, 0]), -32768);
        assert_eq!(maddubs_madd4([128, 128, 128, 128], [-128; 4]), -65536);
    }
}
