//! The rounding functions the C references use, reproduced bit for bit.

/// 1.5·2^23, ggml's rounding constant: `v + 1.5·2^23` lies in [2^23, 2^24) for
/// |v| < 2^22, where an f32 step is 1, so the sum's single rounding is `v` rounded to the
/// nearest integer, ties to even (1.5·2^23 is even). Added inside an FMA,
/// `fma(a, b, 1.5·2^23) - 1.5·2^23` is the exact product `a·b` so rounded.
pub(crate) const ROUND_F32: f32 = 12_582_912.0;

/// 1.5·2^52: adding and subtracting it rounds an f64 with |v| < 2^51 to an integer, ties
/// to even, in one rounding. The product of two f32 is exact in f64, so this rounds it as
/// [`ROUND_F32`] inside an FMA does.
pub(crate) const ROUND_F64: f64 = 6_755_399_441_055_744.0;

/// ggml's `nearest_int`: round to nearest, ties to even, via the 1.5·2^23 magic constant.
/// Exact for `|x| <= 2^22`, which every caller guarantees by scaling into the int8 range
/// first. Outside that range (NaN, ±inf from a degenerate scale) it returns the same bits
/// ggml's release build computes, without panicking: callers clamp or discard the result.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let val = x + ROUND_F32;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// C's `roundf`: round to nearest, ties away from zero (Q8_0/Q8_1/TQ*'s quantizers).
#[inline]
pub(crate) fn round_away(x: f32) -> f32 {
    x.round()
}

/// Round to nearest, ties to even, as `_mm256_cvtps_epi32`/`vcvtnq_s32_f32` and
/// `nearbyint` in the default rounding mode do.
#[inline]
pub fn round_even(x: f32) -> f32 {
    x.round_ties_even()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-127.0), -127);
        assert_eq!(nearest_int(126.49), 126);
        for i in -1000..1000 {
            let x = i as f32 * 0.37;
            assert_eq!(nearest_int(x), round_even(x) as i32, "{x}");
        }
    }

    #[test]
    fn nearest_int_out_of_range_does_not_panic() {
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30] {
            let _ = nearest_int(x);
        }
    }

    #[test]
    fn round_away_ties_away_from_zero() {
        assert_eq!(round_away(0.5), 1.0);
        assert_eq!(round_away(-0.5), -1.0);
        assert_eq!(round_away(2.5), 3.0);
        assert_eq!(round_even(2.5), 2.0);
    }
}
