//! Properties of the classic block formats Q8_0, Q8_1, Q4_0, Q4_1: round trips within each
//! format's error bound, every ISA against the scalar oracle (quantizers bit for bit, integer
//! dot products exactly, float accumulation within the summation bound).

use bitnet_kernels::float::f32_sum_tolerance;
use bitnet_kernels::q4_0::*;
use bitnet_kernels::q4_1::*;
use bitnet_kernels::q8_0::*;
use bitnet_kernels::q8_1::*;
use bitnet_kernels::{Isa, SumOrder};
use bytemuck::Zeroable;
use half::f16;
use proptest::prelude::*;

/// Blocks (32 values each) of one flavour, chosen per block:
/// halves in [-s, s] with ±s present (exact .5 ties once scaled: s = 127 gives Q8's id = 1,
/// s = 8 gives Q4_0's d = ±1), ordinary values with zeros, subnormals, and tiny blocks
/// where 1/d overflows.
fn block(scale: f32) -> impl Strategy<Value = Vec<f32>> {
    let steps = (2.0 * scale) as i32;
    prop_oneof![
        3 => (prop::collection::vec((-steps..=steps).prop_map(|k| k as f32 * 0.5), 32), 0usize..32, any::<bool>())
            .prop_map(move |(mut v, at, neg)| {
                v[at] = if neg { -scale } else { scale };
                v
            }),
        3 => prop::collection::vec(prop_oneof![4 => -4.0f32..4.0, 1 => Just(0.0f32), 1 => Just(-0.0f32)], 32),
        1 => prop::collection::vec(any::<u32>().prop_map(|b| f32::from_bits(b & 0x807F_FFFF)), 32),
        1 => prop::collection::vec(-1.0e-38f32..1.0e-38, 32),
        1 => prop::collection::vec(-1000.0f32..1000.0, 32),
    ]
}

/// A row of 1..=max_blocks blocks.
fn row(scale: f32, max_blocks: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(block(scale), 1..=max_blocks).prop_map(|b| b.concat())
}

/// Any f32 bit pattern, NaN and infinities included.
fn any_bits_row(max_blocks: usize) -> impl Strategy<Value = Vec<f32>> {
    (1..=max_blocks)
        .prop_flat_map(|nb| prop::collection::vec(any::<u32>().prop_map(f32::from_bits), nb * 32))
}

/// |f16(d) − d| bound: half an f16 ulp (2⁻¹¹ relative, 2⁻²⁵ absolute in the subnormal range).
fn f16_error(d: f64) -> f64 {
    (d.abs() * 2f64.powi(-11)).max(2f64.powi(-25))
}

/// Slack for the f32 products in dequantization and the scale computation.
const F32_SLACK: f64 = 1e-6;

fn amax(b: &[f32]) -> f64 {
    b.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn q8_0_round_trips_within_half_a_step(x in row(127.0, 8)) {
        let nb = x.len() / 32;
        let mut ref_blocks = vec![BlockQ8_0::zeroed(); nb];
        let mut x86_blocks = vec![BlockQ8_0::zeroed(); nb];
        quantize_row_q8_0_ref(&x, &mut ref_blocks).unwrap();
        quantize_row_q8_0_x86(&x, &mut x86_blocks).unwrap();
        for blocks in [&ref_blocks, &x86_blocks] {
            let mut back = vec![0.0f32; x.len()];
            dequantize_row_q8_0(blocks, &mut back).unwrap();
            for (xb, bb) in x.chunks(32).zip(back.chunks(32)) {
                // Rounding to a step d = amax/127 costs d/2; the f16 scale error is multiplied
                // by |q| ≤ 127.
                let d = amax(xb) / 127.0;
                let bound = 0.5 * d + 127.0 * f16_error(d) + F32_SLACK * amax(xb);
                for (&v, &b) in xb.iter().zip(bb) {
                    let err = (f64::from(v) - f64::from(b)).abs();
                    prop_assert!(err <= bound, "{} → {}: |Δ| {:e} > {:e}", v, b, err, bound);
                }
            }
        }
    }

    #[test]
    fn q8_1_matches_q8_0_and_carries_its_sum(x in row(127.0, 8)) {
        let nb = x.len() / 32;
        let (mut q0, mut q1) = (vec![BlockQ8_0::zeroed(); nb], vec![BlockQ8_1::zeroed(); nb]);
        quantize_row_q8_0_ref(&x, &mut q0).unwrap();
        quantize_row_q8_1_ref(&x, &mut q1).unwrap();
        for (a, b) in q0.iter().zip(&q1) {
            prop_assert_eq!((a.d.to_bits(), a.qs), (b.d.to_bits(), b.qs), "ref quants differ");
        }
        quantize_row_q8_0_x86(&x, &mut q0).unwrap();
        quantize_row_q8_1_x86(&x, &mut q1).unwrap();
        for ((a, b), xb) in q0.iter().zip(&q1).zip(x.chunks(32)) {
            prop_assert_eq!((a.d.to_bits(), a.qs), (b.d.to_bits(), b.qs), "x86 quants differ");
            // s = f16(Σq · d) with the f32 d; compare against the f16 d within both roundings.
            let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
            let d = amax(xb) / 127.0;
            let want = f64::from(sum) * d;
            let err = (f64::from(b.s.to_f32()) - want).abs();
            prop_assert!(err <= f16_error(want) + F32_SLACK * want.abs(), "s {} vs {}", b.s, want);
        }
        let mut back = vec![0.0f32; x.len()];
        let mut back0 = vec![0.0f32; x.len()];
        dequantize_row_q8_1(&q1, &mut back).unwrap();
        dequantize_row_q8_0(&q0, &mut back0).unwrap();
        prop_assert_eq!(back, back0);
    }

    #[test]
    fn q4_0_round_trips_within_one_step(x in row(8.0, 8)) {
        let mut blocks = vec![BlockQ4_0::zeroed(); x.len() / 32];
        quantize_row_q4_0_ref(&x, &mut blocks).unwrap();
        let mut back = vec![0.0f32; x.len()];
        dequantize_row_q4_0(&blocks, &mut back).unwrap();
        for (xb, bb) in x.chunks(32).zip(back.chunks(32)) {
            // d = max/-8. Half a step everywhere except -max, which needs nibble 16 and is
            // clamped to 15: one full step. |nibble - 8| ≤ 8 multiplies the f16 scale error.
            let d = amax(xb) / 8.0;
            let bound = d + 8.0 * f16_error(d) + F32_SLACK * amax(xb);
            for (&v, &b) in xb.iter().zip(bb) {
                let err = (f64::from(v) - f64::from(b)).abs();
                prop_assert!(err <= bound, "{} → {}: |Δ| {:e} > {:e}", v, b, err, bound);
            }
        }
    }

    #[test]
    fn q4_1_round_trips_within_half_a_step(x in row(15.0, 8)) {
        let mut blocks = vec![BlockQ4_1::zeroed(); x.len() / 32];
        quantize_row_q4_1_ref(&x, &mut blocks).unwrap();
        let mut back = vec![0.0f32; x.len()];
        dequantize_row_q4_1(&blocks, &mut back).unwrap();
        for (xb, bb) in x.chunks(32).zip(back.chunks(32)) {
            // d = (max-min)/15: half a step, plus 15× the f16 error of d and the f16 error of m.
            let min = xb.iter().map(|&v| f64::from(v)).fold(f64::INFINITY, f64::min);
            let max = xb.iter().map(|&v| f64::from(v)).fold(f64::NEG_INFINITY, f64::max);
            let d = (max - min) / 15.0;
            let bound = 0.5 * d + 15.0 * f16_error(d) + f16_error(min) + F32_SLACK * amax(xb);
            for (&v, &b) in xb.iter().zip(bb) {
                let err = (f64::from(v) - f64::from(b)).abs();
                prop_assert!(err <= bound, "{} → {}: |Δ| {:e} > {:e}", v, b, err, bound);
            }
        }
    }

    #[test]
    fn x86_quantizers_are_identical_on_every_isa(x in prop_oneof![row(127.0, 8), any_bits_row(8)]) {
        let nb = x.len() / 32;
        let (mut want0, mut want1) = (vec![BlockQ8_0::zeroed(); nb], vec![BlockQ8_1::zeroed(); nb]);
        quantize_row_q8_0_x86_generic(&x, &mut want0).unwrap();
        quantize_row_q8_1_x86_generic(&x, &mut want1).unwrap();
        for &isa in Isa::available() {
            let (mut got0, mut got1) = (vec![BlockQ8_0::zeroed(); nb], vec![BlockQ8_1::zeroed(); nb]);
            quantize_row_q8_0_x86_with(isa, &x, &mut got0).unwrap();
            quantize_row_q8_1_x86_with(isa, &x, &mut got1).unwrap();
            prop_assert_eq!(bytemuck::cast_slice::<_, u8>(&got0), bytemuck::cast_slice::<_, u8>(&want0), "q8_0 {:?}", isa);
            prop_assert_eq!(bytemuck::cast_slice::<_, u8>(&got1), bytemuck::cast_slice::<_, u8>(&want1), "q8_1 {:?}", isa);
        }
    }
}

/// One block pair's share of a dot product's magnitude: |dx·dy|·Σ|qx·qy|.
fn block_magnitude(dx: f16, qx: impl IntoIterator<Item = i32>, dy: f16, qy: &[i8; 32]) -> f64 {
    let s: f64 = qx
        .into_iter()
        .zip(qy)
        .map(|(p, &q)| f64::from(p * i32::from(q)).abs())
        .sum();
    f64::from(dx.to_f32() * dy.to_f32()).abs() * s
}

/// Both summation orders on every ISA: each within the summation bound of the scalar
/// generic order (the ggml no-SIMD oracle), and each bit-identical to its own order on the
/// scalar path.
fn check_block_dot(
    name: &str,
    chain: usize,
    magnitude: f64,
    dot: &dyn Fn(Isa, SumOrder) -> f32,
) -> Result<(), TestCaseError> {
    let oracle = dot(Isa::Scalar, SumOrder::GgmlGeneric);
    for (isa, order) in isa_orders() {
        let fast = dot(isa, order);
        let err = (f64::from(fast) - f64::from(oracle)).abs();
        let tol = f32_sum_tolerance(chain) * magnitude;
        prop_assert!(
            err <= tol,
            "{} {:?} {:?}: fast {} oracle {} |Δ| {:e} > {:e}",
            name,
            isa,
            order,
            fast,
            oracle,
            err,
            tol
        );
        let scalar = dot(Isa::Scalar, order);
        prop_assert_eq!(
            fast.to_bits(),
            scalar.to_bits(),
            "{} {:?} {:?}",
            name,
            isa,
            order
        );
    }
    Ok(())
}

/// Every ISA this CPU runs, in both summation orders.
fn isa_orders() -> impl Iterator<Item = (Isa, SumOrder)> {
    Isa::available()
        .iter()
        .flat_map(|&isa| [SumOrder::GgmlGeneric, SumOrder::GgmlAvx2].map(|o| (isa, o)))
}

/// Equal bits, or both NaN (the payload of a NaN result depends on operand order inside an
/// instruction, which neither ggml nor we pin down).
fn same_result(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Any f16 scale: mostly finite (random exponent and significand), sometimes any bit
/// pattern, infinities and NaN included.
fn any_f16() -> impl Strategy<Value = f16> {
    prop_oneof![
        4 => any::<u16>().prop_map(|b| f16::from_bits(b & 0xBFFF)),
        1 => any::<u16>().prop_map(f16::from_bits),
    ]
}

/// Blocks with arbitrary bytes and scales: (x Q8_0, x Q4_0, x Q4_1, y Q8_0, y Q8_1), nb each.
type AnyBlocks = (
    Vec<BlockQ8_0>,
    Vec<BlockQ4_0>,
    Vec<BlockQ4_1>,
    Vec<BlockQ8_0>,
    Vec<BlockQ8_1>,
);

fn any_blocks(max_blocks: usize) -> impl Strategy<Value = AnyBlocks> {
    let one = (
        (any_f16(), prop::array::uniform32(any::<i8>())),
        (any_f16(), any_f16(), prop::array::uniform16(any::<u8>())),
        (any_f16(), any_f16(), prop::array::uniform32(any::<i8>())),
    );
    prop::collection::vec(one, 0..=max_blocks).prop_map(|v| {
        let mut out: AnyBlocks = Default::default();
        for ((d8, q8), (d4, m4, q4), (dy, sy, qy)) in v {
            out.0.push(BlockQ8_0 { d: d8, qs: q8 });
            out.1.push(BlockQ4_0 { d: d4, qs: q4 });
            out.2.push(BlockQ4_1 {
                d: d4,
                m: m4,
                qs: q4,
            });
            out.3.push(BlockQ8_0 { d: dy, qs: qy });
            out.4.push(BlockQ8_1 {
                d: dy,
                s: sy,
                qs: qy,
            });
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The contract of [`SumOrder`]: an order's result does not depend on the ISA, for any
    /// bytes and scales (−128 activations, inf/NaN scales, zero blocks included).
    #[test]
    fn each_order_is_bit_identical_on_every_isa_for_any_blocks((x80, x40, x41, y80, y81) in any_blocks(12)) {
        for (isa, o) in isa_orders() {
            let pairs = [
                ("q8_0", vec_dot_q8_0_q8_0_with(isa, o, &x80, &y80), vec_dot_q8_0_q8_0_generic(o, &x80, &y80)),
                ("q4_0", vec_dot_q4_0_q8_0_with(isa, o, &x40, &y80), vec_dot_q4_0_q8_0_generic(o, &x40, &y80)),
                ("q4_1", vec_dot_q4_1_q8_1_with(isa, o, &x41, &y81), vec_dot_q4_1_q8_1_generic(o, &x41, &y81)),
            ];
            for (name, got, want) in pairs {
                let (got, want) = (got.unwrap(), want.unwrap());
                prop_assert!(same_result(got, want), "{} {:?} {:?}: {:e} ({:#x}) vs scalar {:e} ({:#x})",
                    name, isa, o, got, got.to_bits(), want, want.to_bits());
            }
        }
    }
}

/// Blocks with every scale 1 and at most 16 blocks: |Σ| ≤ 16·32·128·128 = 2^23, so every
/// partial sum is an exact f32 integer and any summation order gives the true integer dot.
const EXACT_MAX_BLOCKS: usize = 16;

fn i8_blocks(min: i8, n: usize) -> impl Strategy<Value = Vec<[i8; 32]>> {
    prop::collection::vec(prop::array::uniform32(min..=i8::MAX), n)
}

fn nibble_blocks(n: usize) -> impl Strategy<Value = Vec<[u8; 16]>> {
    prop::collection::vec(prop::array::uniform16(any::<u8>()), n)
}

/// Reference integer sum Σ w_i · a_i over a whole row of unpacked values.
fn int_dot(w: impl Iterator<Item = i32>, a: impl Iterator<Item = i32>) -> i64 {
    w.zip(a).map(|(p, q)| i64::from(p) * i64::from(q)).sum()
}

fn unpack(qs: &[u8; 16]) -> impl Iterator<Item = i32> + '_ {
    qs.iter()
        .map(|&q| i32::from(q & 0x0F))
        .chain(qs.iter().map(|&q| i32::from(q >> 4)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn integer_dots_are_exact_on_every_isa(
        (w8, a8, w4) in (1..=EXACT_MAX_BLOCKS).prop_flat_map(|n| (i8_blocks(i8::MIN, n), i8_blocks(-127, n), nibble_blocks(n)))
    ) {
        // Weights take every int8 (−128 included) and nibble; activations stay in [−127, 127],
        // the range every Q8 quantizer writes (see vec_dot_q8_0_q8_0's docs).
        let one = f16::ONE;
        let x80: Vec<BlockQ8_0> = w8.iter().map(|&qs| BlockQ8_0 { d: one, qs }).collect();
        let y80: Vec<BlockQ8_0> = a8.iter().map(|&qs| BlockQ8_0 { d: one, qs }).collect();
        let x40: Vec<BlockQ4_0> = w4.iter().map(|&qs| BlockQ4_0 { d: one, qs }).collect();
        let x41: Vec<BlockQ4_1> = w4.iter().map(|&qs| BlockQ4_1 { d: one, m: f16::ZERO, qs }).collect();
        let y81: Vec<BlockQ8_1> = a8.iter().map(|&qs| BlockQ8_1 { d: one, s: f16::ZERO, qs }).collect();
        let acts = || a8.iter().flatten().map(|&q| i32::from(q));
        let want80 = int_dot(w8.iter().flatten().map(|&q| i32::from(q)), acts());
        let want40 = int_dot(w4.iter().flat_map(unpack).map(|q| q - 8), acts());
        let want41 = int_dot(w4.iter().flat_map(unpack), acts());
        for (isa, o) in isa_orders() {
            prop_assert_eq!(f64::from(vec_dot_q8_0_q8_0_with(isa, o, &x80, &y80).unwrap()), want80 as f64, "q8_0 {:?} {:?}", isa, o);
            prop_assert_eq!(f64::from(vec_dot_q4_0_q8_0_with(isa, o, &x40, &y80).unwrap()), want40 as f64, "q4_0 {:?} {:?}", isa, o);
            prop_assert_eq!(f64::from(vec_dot_q4_1_q8_1_with(isa, o, &x41, &y81).unwrap()), want41 as f64, "q4_1 {:?} {:?}", isa, o);
        }
    }

    #[test]
    fn q4_0_dot_is_exact_for_minus_128_activations(
        (w4, a8) in (1..=EXACT_MAX_BLOCKS).prop_flat_map(|n| (nibble_blocks(n), i8_blocks(i8::MIN, n)))
    ) {
        // Unlike ggml's sign trick, our Q4_0 kernel is exact for every int8 activation.
        let x: Vec<BlockQ4_0> = w4.iter().map(|&qs| BlockQ4_0 { d: f16::ONE, qs }).collect();
        let y: Vec<BlockQ8_0> = a8.iter().map(|&qs| BlockQ8_0 { d: f16::ONE, qs }).collect();
        let want = int_dot(w4.iter().flat_map(unpack).map(|q| q - 8), a8.iter().flatten().map(|&q| i32::from(q)));
        for (isa, o) in isa_orders() {
            prop_assert_eq!(f64::from(vec_dot_q4_0_q8_0_with(isa, o, &x, &y).unwrap()), want as f64, "{:?} {:?}", isa, o);
        }
    }

    #[test]
    fn quantized_dots_every_isa_match_scalar(w in row(8.0, 64), a_scale in 0.01f32..1.0) {
        // Weights through the ref quantizers, activations through the x86 quantizers, as a
        // llama.cpp x86 build pairs them. |a| ≤ 1000 keeps Q8_1's s = d·Σq (up to 32·|a|)
        // inside f16's range (65504); past it s is inf in ggml too.
        let nb = w.len() / 32;
        let a: Vec<f32> = w.iter().rev().map(|v| v * a_scale).collect();
        let (mut x80, mut x40, mut x41) = (vec![BlockQ8_0::zeroed(); nb], vec![BlockQ4_0::zeroed(); nb], vec![BlockQ4_1::zeroed(); nb]);
        let (mut y80, mut y81) = (vec![BlockQ8_0::zeroed(); nb], vec![BlockQ8_1::zeroed(); nb]);
        quantize_row_q8_0_ref(&w, &mut x80).unwrap();
        quantize_row_q4_0_ref(&w, &mut x40).unwrap();
        quantize_row_q4_1_ref(&w, &mut x41).unwrap();
        quantize_row_q8_0_x86(&a, &mut y80).unwrap();
        quantize_row_q8_1_x86(&a, &mut y81).unwrap();

        // Chains: the scalar oracle adds nb block terms in sequence, each AVX2 lane does nb
        // FMAs (Q4_1: plus nb min terms in a separate f32 sum).
        let m80: f64 = x80.iter().zip(&y80).map(|(b, c)| block_magnitude(b.d, b.qs.map(i32::from), c.d, &c.qs)).sum();
        let m40: f64 = x40.iter().zip(&y80).map(|(b, c)| block_magnitude(b.d, unpack(&b.qs).map(|q| q - 8), c.d, &c.qs)).sum();
        let m41: f64 = x41.iter().zip(&y81).map(|(b, c)| {
            block_magnitude(b.d, unpack(&b.qs), c.d, &c.qs) + f64::from(b.m.to_f32() * c.s.to_f32()).abs()
        }).sum();
        check_block_dot("q8_0", 2 * nb, m80, &|isa, o| vec_dot_q8_0_q8_0_with(isa, o, &x80, &y80).unwrap())?;
        check_block_dot("q4_0", 2 * nb, m40, &|isa, o| vec_dot_q4_0_q8_0_with(isa, o, &x40, &y80).unwrap())?;
        check_block_dot("q4_1", 3 * nb, m41, &|isa, o| vec_dot_q4_1_q8_1_with(isa, o, &x41, &y81).unwrap())?;
    }
}
