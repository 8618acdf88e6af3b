//! Properties of Q8_K, TQ1_0 and TQ2_0: round trips within each format's error bound,
//! every available ISA bit-identical to the scalar reference in both summation orders,
//! and the dot products equal to a float dot of the dequantized rows.

use bitnet_kernels::q8_k::{dequantize_row_q8_k, quantize_row_q8_k, BlockQ8K, SumOrder, QK_K};
use bitnet_kernels::round::round_even;
use bitnet_kernels::tq1_0::{
    dequantize_row_tq1_0, gemm_tq1_0_q8_k_with, quantize_row_tq1_0_ref, repack_tq1_0_as_tq2_0,
    vec_dot_tq1_0_q8_k_generic, vec_dot_tq1_0_q8_k_with, BlockTQ1_0,
};
use bitnet_kernels::tq2_0::{
    dequantize_row_tq2_0, gemm_tq2_0_q8_k_with, quantize_row_tq2_0_ref, vec_dot_tq2_0_q8_k_generic,
    vec_dot_tq2_0_q8_k_with, BlockTQ2_0,
};
use bitnet_kernels::Isa;
use bytemuck::Zeroable;
use half::f16;
use proptest::prelude::*;

/// Relative slack on Q8_K's half-step bound: `d = 1/iscale` and `iscale·x` are each
/// rounded once in f32, so `|x - d·q|` may exceed `|d|/2` by a few ulps of `127·|d|`.
const Q8K_ROUND_TRIP_SLACK: f32 = 1e-5;

/// Tolerance of a kernel dot product against the f64 dot of the dequantized rows, relative
/// to `Σ|w·a|`. The integer part is exact; the error is the f32 rounding of `x.d·y.d`, of
/// each block term and of the sum over at most 8 blocks, i.e. ~10 · 2^-24 ≈ 6e-7.
const DOT_VS_DEQUANT_REL_TOL: f64 = 4e-6;

const ORDERS: [SumOrder; 2] = [SumOrder::GgmlGeneric, SumOrder::GgmlAvx2];

/// Values that exercise the quantizers' edges: ordinary values, zeros, ±2 (so that ±1
/// sits exactly on the ternary half-way point when 2 is the block's amax), ±1.5, ±0.5,
/// and subnormals.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -3.0f32..3.0,
        2 => Just(0.0f32),
        2 => prop::sample::select(vec![2.0f32, -2.0, 1.0, -1.0, 1.5, -1.5, 0.5, -0.5]),
        1 => prop::num::f32::SUBNORMAL,
    ]
}

/// A row of `nb` blocks: mostly `value()`s times a power-of-two scale (which keeps ties
/// exact), sometimes nothing but zeros and subnormals (whose reciprocal scale overflows
/// to infinity).
fn row_of(nb: usize) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        4 => (prop::collection::vec(value(), nb * QK_K), -8i32..8)
            .prop_map(|(v, e)| v.into_iter().map(|x| x * 2f32.powi(e)).collect()),
        1 => prop::collection::vec(prop_oneof![Just(0.0f32), prop::num::f32::SUBNORMAL], nb * QK_K),
    ]
}

/// A row of 1..=`max_blocks` blocks.
fn row(max_blocks: usize) -> impl Strategy<Value = Vec<f32>> {
    (1..=max_blocks).prop_flat_map(row_of)
}

/// A weight row and an activation row of the same length.
fn row_pair(max_blocks: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (1..=max_blocks).prop_flat_map(|nb| (row_of(nb), row_of(nb)))
}

fn q8k(x: &[f32]) -> Vec<BlockQ8K> {
    let mut y = vec![BlockQ8K::zeroed(); x.len() / QK_K];
    quantize_row_q8_k(x, &mut y).expect("whole blocks");
    y
}

fn tq1(x: &[f32]) -> Vec<BlockTQ1_0> {
    let mut y = vec![BlockTQ1_0::zeroed(); x.len() / QK_K];
    quantize_row_tq1_0_ref(x, &mut y).expect("whole blocks");
    y
}

fn tq2(x: &[f32]) -> Vec<BlockTQ2_0> {
    let mut y = vec![BlockTQ2_0::zeroed(); x.len() / QK_K];
    quantize_row_tq2_0_ref(x, &mut y).expect("whole blocks");
    y
}

fn deq_tq1(x: &[BlockTQ1_0]) -> Vec<f32> {
    let mut y = vec![0.0; x.len() * QK_K];
    dequantize_row_tq1_0(x, &mut y).expect("matching length");
    y
}

fn deq_tq2(x: &[BlockTQ2_0]) -> Vec<f32> {
    let mut y = vec![0.0; x.len() * QK_K];
    dequantize_row_tq2_0(x, &mut y).expect("matching length");
    y
}

fn deq_q8k(x: &[BlockQ8K]) -> Vec<f32> {
    let mut y = vec![0.0; x.len() * QK_K];
    dequantize_row_q8_k(x, &mut y).expect("matching length");
    y
}

/// The ternary round-trip bound for one block: `x/amax` rounds to the nearest of
/// {-1, 0, 1} (error <= amax/2), and the stored scale is `amax` rounded to f16.
fn check_ternary_round_trip(x: &[f32], deq: &[f32], d: f16) -> Result<(), TestCaseError> {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let bound = 0.5 * amax * (1.0 + 1e-6) + (amax - d.to_f32()).abs();
    for (i, (&a, &b)) in x.iter().zip(deq).enumerate() {
        prop_assert!(
            (a - b).abs() <= bound,
            "element {i}: {a} → {b}, bound {bound} (amax {amax})"
        );
    }
    Ok(())
}

/// Every ISA's dot products, both orders and both formats, equal the scalar reference's
/// bit for bit.
fn check_isas(t1: &[BlockTQ1_0], t2: &[BlockTQ2_0], y: &[BlockQ8K]) -> Result<(), TestCaseError> {
    for order in ORDERS {
        let r1 = vec_dot_tq1_0_q8_k_generic(order, t1, y).expect("same length");
        let r2 = vec_dot_tq2_0_q8_k_generic(order, t2, y).expect("same length");
        for &isa in Isa::available() {
            let s1 = vec_dot_tq1_0_q8_k_with(isa, order, t1, y).expect("same length");
            let s2 = vec_dot_tq2_0_q8_k_with(isa, order, t2, y).expect("same length");
            prop_assert_eq!(
                s1.to_bits(),
                r1.to_bits(),
                "TQ1_0 {:?} {:?}: {} vs scalar {}",
                isa,
                order,
                s1,
                r1
            );
            prop_assert_eq!(
                s2.to_bits(),
                r2.to_bits(),
                "TQ2_0 {:?} {:?}: {} vs scalar {}",
                isa,
                order,
                s2,
                r2
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn q8_k_round_trip_within_half_step(x in row(4)) {
        let y = q8k(&x);
        let deq = deq_q8k(&y);
        let blocks = y.iter().zip(x.chunks_exact(QK_K).zip(deq.chunks_exact(QK_K)));
        for (n, (b, (xs, ds))) in blocks.enumerate() {
            prop_assert_eq!(&b.bsums[..], &b_sums(&b.qs)[..], "block {}: bsums must match qs", n);
            if !b.d.is_finite() || b.d == 0.0 {
                // Zero block, or |max| < 127/f32::MAX: everything quantizes to 0.
                prop_assert!(b.qs.iter().all(|&q| q == 0), "block {}: degenerate scale {} must give q = 0", n, b.d);
                continue;
            }
            let bound = 0.5 * b.d.abs() * (1.0 + Q8K_ROUND_TRIP_SLACK);
            for (i, (&a, &r)) in xs.iter().zip(ds).enumerate() {
                prop_assert!((a - r).abs() <= bound, "block {} element {}: {} → {}, bound {}", n, i, a, r, bound);
            }
        }
    }

    #[test]
    fn q8_k_ties_round_half_to_even(ks in prop::collection::vec(-126i32..126, QK_K - 1), sign in prop::bool::ANY) {
        // max = ∓127 makes iscale = ±1 exactly, so x = k + 0.5 lands on a tie.
        let s = if sign { 1.0 } else { -1.0 };
        let mut x = vec![-127.0 * s];
        x.extend(ks.iter().map(|&k| k as f32 + 0.5));
        let b = q8k(&x)[0];
        prop_assert_eq!(b.qs[0], -127);
        for (i, &k) in ks.iter().enumerate() {
            let want = round_even(s * (k as f32 + 0.5)) as i8;
            prop_assert_eq!(b.qs[i + 1], want, "element {}: {} · {}", i + 1, s, k as f32 + 0.5);
        }
    }

    #[test]
    fn ternary_weights_round_trip_exactly(
        trits in prop::collection::vec(prop::sample::select(vec![-1i8, 0, 1]), QK_K * 3),
        e in -12i32..12,
    ) {
        // s·{-1, 0, 1} with an f16-exact s comes back unchanged (amax = s in each block
        // with a non-zero trit, and d = 0 in an all-zero block).
        let s = 1.25 * 2f32.powi(e);
        let x: Vec<f32> = trits.iter().map(|&t| f32::from(t) * s).collect();
        prop_assert_eq!(&deq_tq1(&tq1(&x)), &x, "TQ1_0 round trip");
        prop_assert_eq!(&deq_tq2(&tq2(&x)), &x, "TQ2_0 round trip");
    }

    #[test]
    fn ternary_round_trip_within_half_amax(x in row(3)) {
        let (t1, t2) = (tq1(&x), tq2(&x));
        let (d1, d2) = (deq_tq1(&t1), deq_tq2(&t2));
        prop_assert_eq!(&d1, &d2, "TQ1_0 and TQ2_0 store the same codes and scale");
        for ((xs, ds), b) in x.chunks_exact(QK_K).zip(d1.chunks_exact(QK_K)).zip(&t1) {
            check_ternary_round_trip(xs, ds, b.d)?;
        }
    }

    #[test]
    fn dot_every_isa_matches_scalar((w, a) in row_pair(8)) {
        check_isas(&tq1(&w), &tq2(&w), &q8k(&a))?;
    }

    #[test]
    fn dot_every_isa_matches_scalar_for_any_bytes(
        nb in 1usize..=6,
        seed in any::<u64>(),
    ) {
        // Arbitrary block bytes (TQ1_0 bytes >= 243, TQ2_0 code 3) and full-range int8
        // activations with consistent bsums: the integer paths must still agree exactly.
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut t1 = vec![BlockTQ1_0::zeroed(); nb];
        let mut t2 = vec![BlockTQ2_0::zeroed(); nb];
        let mut y = vec![BlockQ8K::zeroed(); nb];
        for ((b1, b2), by) in t1.iter_mut().zip(&mut t2).zip(&mut y) {
            b1.qs.iter_mut().chain(&mut b1.qh).for_each(|v| *v = next() as u8);
            b2.qs.iter_mut().for_each(|v| *v = next() as u8);
            b1.d = f16::from_f32((next() % 1000) as f32 / 250.0 - 2.0);
            b2.d = b1.d;
            by.qs.iter_mut().for_each(|v| *v = next() as i8);
            by.bsums = b_sums(&by.qs).try_into().expect("16 sums");
            by.d = (next() % 1000) as f32 / 1e4 - 0.05;
        }
        check_isas(&t1, &t2, &y)?;
    }

    /// The many-row, many-token products equal each row's dot with each token, bit for
    /// bit, on every ISA and in both orders: token counts on both sides of the 4- and 8-token
    /// tiles, row counts on both sides of the 16-row tile.
    #[test]
    fn gemm_matches_single_dots(
        (w, a) in row_pair(2),
        rows in prop::sample::select(vec![1usize, 3, 4, 16, 17, 35]),
        n_tok in prop_oneof![Just(1usize), 1usize..11],
    ) {
        // `rows` weight rows and `n_tok` activation rows: the same rows, scaled differently
        // so each result differs.
        let nb = a.len() / QK_K;
        let scaled = |v: &[f32], n: usize| -> Vec<f32> {
            (0..n).flat_map(|r| v[..nb * QK_K].iter().map(move |&x| x * (r + 1) as f32)).collect()
        };
        let (t1, t2) = (tq1(&scaled(&w, rows)), tq2(&scaled(&w, rows)));
        let y = q8k(&scaled(&a, n_tok));
        for order in ORDERS {
            for &isa in Isa::available() {
                let mut out1 = vec![f32::NAN; rows * n_tok];
                let mut out2 = vec![f32::NAN; rows * n_tok];
                gemm_tq1_0_q8_k_with(isa, order, &t1, &y, n_tok, &mut out1).expect("whole rows");
                gemm_tq2_0_q8_k_with(isa, order, &t2, &y, n_tok, &mut out2).expect("whole rows");
                for r in 0..rows {
                    for t in 0..n_tok {
                        let yt = &y[t * nb..(t + 1) * nb];
                        let one1 = vec_dot_tq1_0_q8_k_generic(order, &t1[r * nb..(r + 1) * nb], yt).expect("same length");
                        let one2 = vec_dot_tq2_0_q8_k_generic(order, &t2[r * nb..(r + 1) * nb], yt).expect("same length");
                        let i = r * n_tok + t;
                        prop_assert_eq!(out1[i].to_bits(), one1.to_bits(), "TQ1_0 {:?} {:?} row {} token {}", isa, order, r, t);
                        prop_assert_eq!(out2[i].to_bits(), one2.to_bits(), "TQ2_0 {:?} {:?} row {} token {}", isa, order, r, t);
                    }
                }
            }
        }
    }

    /// TQ1_0 repacked as TQ2_0 keeps every code and scale, for any block bytes (base-3
    /// values >= 243 included), and every product of the repacked rows equals the
    /// original's bit for bit, on every ISA and in both orders.
    #[test]
    fn repacked_tq1_0_is_bit_identical(
        (rows, nb, bytes) in (1usize..4, 1usize..4).prop_flat_map(|(r, nb)| (
            Just(r),
            Just(nb),
            prop::collection::vec(any::<u8>(), r * nb * 52),
        )),
        a in prop::collection::vec(value(), 3 * QK_K * 3),
        d in prop_oneof![Just(0.0f32), -2.0f32..2.0],
    ) {
        let t1: Vec<BlockTQ1_0> = bytes
            .chunks_exact(52)
            .map(|c| {
                let mut b = BlockTQ1_0::zeroed();
                b.qs.copy_from_slice(&c[..48]);
                b.qh.copy_from_slice(&c[48..]);
                b.d = f16::from_f32(d);
                b
            })
            .collect();
        let mut t2 = vec![BlockTQ2_0::zeroed(); t1.len()];
        repack_tq1_0_as_tq2_0(&t1, &mut t2).expect("same length");
        for (x, y) in t1.iter().zip(&t2) {
            prop_assert_eq!(y, &BlockTQ2_0::from_codes(&codes_of(x), x.d), "repack keeps the codes");
        }
        let n_tok = 3;
        let y = q8k(&a[..n_tok * nb * QK_K]);
        for order in ORDERS {
            for &isa in Isa::available() {
                let mut o1 = vec![f32::NAN; rows * n_tok];
                let mut o2 = vec![f32::NAN; rows * n_tok];
                gemm_tq1_0_q8_k_with(isa, order, &t1, &y, n_tok, &mut o1).expect("whole rows");
                gemm_tq2_0_q8_k_with(isa, order, &t2, &y, n_tok, &mut o2).expect("whole rows");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&o1), bits(&o2), "{:?} {:?}", isa, order);
            }
        }
    }

    #[test]
    fn dot_matches_dequantized_float_dot((w, a) in row_pair(8)) {
        let (t1, t2, y) = (tq1(&w), tq2(&w), q8k(&a));
        // An infinite Q8_K scale (only subnormal activations) gives 0 · inf terms: skip.
        prop_assume!(y.iter().all(|b| b.d.is_finite()));
        let (dw, da) = (deq_tq1(&t1), deq_q8k(&y));
        let exact: f64 = dw.iter().zip(&da).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum();
        let magnitude: f64 = dw.iter().zip(&da).map(|(&p, &q)| (f64::from(p) * f64::from(q)).abs()).sum();
        for order in ORDERS {
            for got in [
                vec_dot_tq1_0_q8_k_generic(order, &t1, &y).expect("same length"),
                vec_dot_tq2_0_q8_k_generic(order, &t2, &y).expect("same length"),
            ] {
                let err = (f64::from(got) - exact).abs();
                prop_assert!(
                    err <= DOT_VS_DEQUANT_REL_TOL * magnitude + f64::from(f32::MIN_POSITIVE),
                    "{:?}: kernel {} vs dequantized {} (Σ|terms| {})", order, got, exact, magnitude
                );
            }
        }
    }
}

fn b_sums(qs: &[i8]) -> Vec<i16> {
    qs.chunks_exact(16)
        .map(|g| g.iter().map(|&q| i16::from(q)).sum())
        .collect()
}

#[test]
fn blocks_cast_from_file_bytes() {
    // Weights reach the kernels as mmap'ed bytes: a row's bytes cast back to the same
    // blocks, and a length that is not whole blocks is an error, not a panic.
    let x: Vec<f32> = (0..QK_K * 2)
        .map(|i| ((i % 3) as f32 - 1.0) * 0.25)
        .collect();
    // A u16 buffer gives the 2-byte alignment the f16 field needs, as a GGUF mapping does.
    let t2 = tq2(&x);
    let mut buf = vec![0u16; 66];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
    bytes.copy_from_slice(bytemuck::cast_slice(&t2));
    let back: &[BlockTQ2_0] = bytemuck::try_cast_slice(bytes).expect("two 66-byte blocks");
    assert_eq!(back, &t2[..]);
    assert!(bytemuck::try_cast_slice::<u8, BlockTQ2_0>(&bytes[..65]).is_err());
    let t1 = tq1(&x);
    let mut buf = vec![0u16; 54];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
    bytes.copy_from_slice(bytemuck::cast_slice(&t1));
    let back: &[BlockTQ1_0] = bytemuck::try_cast_slice(bytes).expect("two 54-byte blocks");
    assert_eq!(back, &t1[..]);
    assert!(bytemuck::try_cast_slice::<u8, BlockTQ1_0>(&bytes[..100]).is_err());
}

/// A TQ1_0 block's codes (element order), read back through dequantization with d = 1.
fn codes_of(b: &BlockTQ1_0) -> [u8; QK_K] {
    let mut one = *b;
    one.d = f16::ONE;
    let mut w = [0f32; QK_K];
    dequantize_row_tq1_0(&[one], &mut w).expect("one block");
    w.map(|v| (v + 1.0) as u8)
}
