//! Behaviour of bitnet.cpp's I2_S weights and I8_S activations: round trips, every ISA
//! against the scalar reference, and the float epilogue against an f64 dot product.

use bitnet_kernels::i2_s::{
    dequantize_row_i2_s, gemm_i2_s_i8_s_with, i2_s_dot_to_f32, quantize_i2_s_ref,
    vec_dot_i2_s_i8_s_generic, vec_dot_i2_s_i8_s_with, BlockI2s, I2sTensor, QK_I2_S,
};
use bitnet_kernels::i8_s::{dequantize_row_i8_s, quantize_row_i8_s};
use bitnet_kernels::Isa;
use proptest::prelude::*;

/// Relative slack on top of the analytic I8_S rounding bound (0.5/s per element): `s` and
/// the products are f32, so the reconstructed `q/s` carries a few ulps of its magnitude.
const I8S_ROUND_TRIP_REL_SLACK: f32 = 1e-5;

/// Slack on the epilogue vs an f64 Σw·x, relative to Σ|w|·|x|: the f32 conversions of
/// sumi and Σq, the division and the multiplication each round once.
const I2S_EPILOGUE_REL_TOL: f64 = 1e-5;

/// Activation values: ordinary, zeros of both signs, ±amax, values that land exactly on .5
/// after scaling by 127/4, and subnormals.
fn act_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -4.0f32..4.0,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => prop::sample::select(vec![4.0f32, -4.0]),
        2 => (-127i32..127).prop_map(|k| (k as f32 + 0.5) * 4.0 / 127.0),
        1 => prop::num::f32::SUBNORMAL,
    ]
}

/// A row of `blocks` × 128 activation values.
fn act_row(max_blocks: usize) -> impl Strategy<Value = Vec<f32>> {
    (1..=max_blocks).prop_flat_map(|nb| prop::collection::vec(act_value(), nb * QK_I2_S))
}

/// Raw I2_S blocks: any byte, so malformed code 3 is covered too.
fn raw_blocks(nb: usize) -> impl Strategy<Value = Vec<BlockI2s>> {
    prop::collection::vec(prop::array::uniform32(any::<u8>()), nb)
        .prop_map(|v| v.into_iter().map(|qs| BlockI2s { qs }).collect())
}

/// Exact Σcode·q in i64, straight from the layout (byte b, plane p → element 32p + b).
fn exact_dot(w: &[BlockI2s], q: &[i8]) -> i64 {
    let mut s = 0i64;
    for (b, qb) in w.iter().zip(q.chunks_exact(QK_I2_S)) {
        for p in 0..4 {
            for (byte, &qv) in b.qs.iter().zip(&qb[32 * p..32 * (p + 1)]) {
                s += i64::from((byte >> (6 - 2 * p)) & 3) * i64::from(qv);
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every ISA gives exactly the scalar Σcode·q, over 1..72 blocks (so runs of 32 blocks,
    /// partial runs and the i16 wrap are all exercised) with any activation byte.
    #[test]
    fn dot_every_isa_matches_scalar(
        (w, q) in (1usize..=72).prop_flat_map(|nb| (
            raw_blocks(nb),
            prop::collection::vec(any::<i8>(), nb * QK_I2_S),
        ))
    ) {
        let want = vec_dot_i2_s_i8_s_generic(&w, &q).unwrap();
        for &isa in Isa::available() {
            let got = vec_dot_i2_s_i8_s_with(isa, &w, &q).unwrap();
            prop_assert_eq!(got, want, "{:?} differs from scalar over {} blocks", isa, w.len());
        }
    }

    /// The many-row, many-token product is each row's dot with each token, bit for bit, on
    /// every ISA: row and token counts on both sides of the 4-row and 4-token tiles, runs
    /// past 32 blocks, 16-bit lanes that wrap (any codes, any int8).
    #[test]
    fn gemm_every_isa_matches_row_dots(
        (rows, n_tok, w, q) in (1usize..=9, 1usize..=9, 1usize..=40).prop_flat_map(|(r, t, nb)| (
            Just(r),
            Just(t),
            raw_blocks(r * nb),
            prop::collection::vec(any::<i8>(), t * nb * QK_I2_S),
        ))
    ) {
        let k = q.len() / n_tok;
        let nb = k / QK_I2_S;
        for &isa in Isa::available() {
            let mut out = vec![i32::MIN; rows * n_tok];
            gemm_i2_s_i8_s_with(isa, &w, &q, n_tok, &mut out).unwrap();
            for r in 0..rows {
                for t in 0..n_tok {
                    let want = vec_dot_i2_s_i8_s_generic(
                        &w[r * nb..(r + 1) * nb],
                        &q[t * k..(t + 1) * k],
                    ).unwrap();
                    prop_assert_eq!(out[r * n_tok + t], want, "{:?} row {} token {}", isa, r, t);
                }
            }
        }
    }

    /// With |q| <= 42 no 16-bit lane can wrap (256 · 3 · 42 = 32256 < 32767), so the result
    /// is the exact Σcode·q.
    #[test]
    fn dot_is_exact_when_lanes_cannot_wrap(
        (w, q) in (1usize..=72).prop_flat_map(|nb| (
            raw_blocks(nb),
            prop::collection::vec(-42i8..=42, nb * QK_I2_S),
        ))
    ) {
        let exact = exact_dot(&w, &q);
        for &isa in Isa::available() {
            let got = vec_dot_i2_s_i8_s_with(isa, &w, &q).unwrap();
            prop_assert_eq!(i64::from(got), exact, "{:?} is not the exact sum", isa);
        }
    }

    /// Ternary weights s·t survive quantize → dequantize exactly, row by row and whole.
    #[test]
    fn ternary_round_trip_is_exact(
        s in 0.01f32..10.0,
        (rows, blocks_per_row, t) in (1usize..4, 1usize..4).prop_flat_map(|(r, b)| (
            Just(r),
            Just(b),
            prop::collection::vec(prop::sample::select(vec![-1i8, 0, 1]), r * b * QK_I2_S),
        )),
    ) {
        let n_per_row = blocks_per_row * QK_I2_S;
        let x: Vec<f32> = t.iter().map(|&t| s * f32::from(t)).collect();
        let mut bytes = vec![0u8; x.len() / 4 + 32];
        quantize_i2_s_ref(&x, n_per_row, &mut bytes).unwrap();
        let tensor = I2sTensor::from_bytes(&bytes, n_per_row, rows).unwrap();
        let mut all = vec![f32::NAN; x.len()];
        tensor.dequantize(&mut all).unwrap();
        let amax = if t.iter().any(|&t| t != 0) { s } else { 0.0 };
        prop_assert_eq!(tensor.scale(), amax, "scale is the tensor's max |w|");
        prop_assert_eq!(&all, &x, "whole-tensor round trip");
        for r in 0..rows {
            let mut row = vec![f32::NAN; n_per_row];
            dequantize_row_i2_s(tensor.row(r).unwrap(), tensor.scale(), &mut row).unwrap();
            prop_assert_eq!(&row[..], &x[r * n_per_row..(r + 1) * n_per_row], "row {}", r);
        }
    }

    /// Arbitrary weights become sign(w)·max|w|, or 0 below 1e-6.
    #[test]
    fn general_weights_keep_sign_and_take_the_tensor_max(x in act_row(4)) {
        let mut bytes = vec![0u8; x.len() / 4 + 32];
        quantize_i2_s_ref(&x, QK_I2_S, &mut bytes).unwrap();
        let tensor = I2sTensor::from_bytes(&bytes, QK_I2_S, x.len() / QK_I2_S).unwrap();
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        prop_assert_eq!(tensor.scale(), amax);
        let mut y = vec![0f32; x.len()];
        tensor.dequantize(&mut y).unwrap();
        for (i, (&xv, &yv)) in x.iter().zip(&y).enumerate() {
            let want = if f64::from(xv).abs() < 1e-6 { 0.0 } else { amax.copysign(xv) };
            prop_assert_eq!(yv, want, "element {} of value {}", i, xv);
        }
    }

    /// I8_S quants reconstruct x within half a step (0.5/s), and the row sum is Σq.
    #[test]
    fn i8_s_round_trip_within_half_a_step(x in act_row(3)) {
        let mut q = vec![0i8; x.len()];
        let meta = quantize_row_i8_s(&x, &mut q).unwrap();
        prop_assert_eq!(meta.sum, q.iter().map(|&v| i32::from(v)).sum::<i32>());
        let mut y = vec![0f32; x.len()];
        dequantize_row_i8_s(&q, &meta, &mut y).unwrap();
        let step = 1.0 / meta.scale;
        for (i, (&xv, &yv)) in x.iter().zip(&y).enumerate() {
            let bound = 0.5 * step + I8S_ROUND_TRIP_REL_SLACK * xv.abs();
            prop_assert!((xv - yv).abs() <= bound, "element {}: {} → {} (step {})", i, xv, yv, step);
        }
    }

    /// Exact .5 ties after scaling round to even: with max|x| = 127 the scale is 1.
    #[test]
    fn i8_s_ties_round_to_even(ks in prop::collection::vec(-127i32..127, 1..64)) {
        let mut x = vec![127.0f32];
        x.extend(ks.iter().map(|&k| k as f32 + 0.5));
        let mut q = vec![0i8; x.len()];
        let meta = quantize_row_i8_s(&x, &mut q).unwrap();
        prop_assert_eq!(meta.scale, 1.0);
        for (&k, &qv) in ks.iter().zip(&q[1..]) {
            let even = if k % 2 == 0 { k } else { k + 1 };
            prop_assert_eq!(i32::from(qv), even, "{}.5 should round to {}", k, even);
        }
    }

    /// The whole pipeline (I2_S weights, I8_S activations, integer dot, epilogue) tracks an
    /// f64 Σw·x within the activation rounding bound.
    #[test]
    fn epilogue_tracks_the_f64_dot(
        s in 0.01f32..4.0,
        (t, x) in (1usize..=24).prop_flat_map(|nb| (
            prop::collection::vec(prop::sample::select(vec![-1i8, 0, 1]), nb * QK_I2_S),
            prop::collection::vec(act_value(), nb * QK_I2_S),
        )),
    ) {
        let w: Vec<f32> = t.iter().map(|&t| s * f32::from(t)).collect();
        let mut bytes = vec![0u8; w.len() / 4 + 32];
        quantize_i2_s_ref(&w, w.len(), &mut bytes).unwrap();
        let tensor = I2sTensor::from_bytes(&bytes, w.len(), 1).unwrap();
        let mut q = vec![0i8; x.len()];
        let act = quantize_row_i8_s(&x, &mut q).unwrap();
        let sumi = vec_dot_i2_s_i8_s_with(Isa::best(), tensor.row(0).unwrap(), &q).unwrap();
        let got = f64::from(i2_s_dot_to_f32(sumi, &act, tensor.scale()));
        let exact: f64 = w.iter().zip(&x).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        let magnitude: f64 = w.iter().zip(&x).map(|(&a, &b)| f64::from(a.abs()) * f64::from(b.abs())).sum();
        let n_nonzero = t.iter().filter(|&&t| t != 0).count() as f64;
        // Each activation is off by at most half a step (1/s); each weight is exact.
        let bound = n_nonzero * f64::from(s) * 0.5 / f64::from(act.scale)
            + I2S_EPILOGUE_REL_TOL * (magnitude + f64::from(s) * f64::from(act.sum.unsigned_abs()) / f64::from(act.scale));
        prop_assert!((got - exact).abs() <= bound, "got {} want {} (bound {})", got, exact, bound);
    }
}
