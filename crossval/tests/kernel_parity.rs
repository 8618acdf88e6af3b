//! Kernel parity with the C++ references (feature `crossval`): our quantizers write
//! byte-identical blocks, our dequantizers and dot products return bit-identical f32 (integer
//! sums exactly equal), on random inputs (proptest) and on fixed adversarial vectors: ties at
//! .5 after scaling, zeros and -0, all-zero blocks, ±amax and equal magnitudes of opposite
//! sign (which one is "the max" decides the sign of some scales), subnormals, tiny blocks
//! whose 1/d overflows, large outliers up to ±f32::MAX.
//!
//! Each test spawns its reference's runner once and reuses it for every case. Formats × ops:
//! - upstream llama.cpp and bitnet.cpp: TQ1_0 / TQ2_0 reference quantizers, dequantizers and
//!   dots against Q8_K (our `SumOrder::GgmlAvx2`); the Q8_K activation quantizer.
//! - upstream llama.cpp: Q8_0 / Q4_0 / Q4_1 reference quantizers and dequantizers, the x86
//!   activation quantizers of Q8_0 and Q8_1, and the Q8_0·Q8_0, Q4_0·Q8_0, Q4_1·Q8_1 dots
//!   (`SumOrder::GgmlAvx2`).
//!
//! Every comparison runs on every ISA this CPU has (`Isa::available`): each summation order
//! is ISA-independent, so the scalar path must match the AVX2 references too.
//! - bitnet.cpp: I2_S whole-tensor quantization, I8_S activations, the I2_S·I8_S integer dot.
//! - ik_llama.cpp: IQ2_BN quantization and dequantization, Q8_K64 activations, the
//!   IQ2_BN·Q8_K64 dot.
#![cfg(feature = "crossval")]

mod common;

use std::cell::RefCell;
use std::fmt::Debug;

use bitnet_kernels::i2_s::{quantize_i2_s_ref, vec_dot_i2_s_i8_s_with, BlockI2s, QK_I2_S};
use bitnet_kernels::i8_s::quantize_row_i8_s;
use bitnet_kernels::iq2_bn::{
    dequantize_row_iq2_bn, iq2_bn_row_size, quantize_row_iq2_bn_ref, vec_dot_iq2_bn_q8_k64_with,
    Iq2BnRow, QK_IQ2_BN,
};
use bitnet_kernels::q4_0::{dequantize_row_q4_0, quantize_row_q4_0_ref, vec_dot_q4_0_q8_0_with};
use bitnet_kernels::q4_1::{dequantize_row_q4_1, quantize_row_q4_1_ref, vec_dot_q4_1_q8_1_with};
use bitnet_kernels::q8_0::{
    dequantize_row_q8_0, quantize_row_q8_0_ref, quantize_row_q8_0_x86_with, vec_dot_q8_0_q8_0_with,
    QK8_0,
};
use bitnet_kernels::q8_1::quantize_row_q8_1_x86_with;
use bitnet_kernels::q8_k::{quantize_row_q8_k, quantize_row_q8_k_fma, BlockQ8K, SumOrder, QK_K};
use bitnet_kernels::q8_k64::{quantize_row_q8_k64, Q8K64Row, Q8_K64_HEADER_BYTES, Q8_K64_MIN_K};
use bitnet_kernels::tq1_0::{
    dequantize_row_tq1_0, quantize_row_tq1_0_ref, vec_dot_tq1_0_q8_k_with,
};
use bitnet_kernels::tq2_0::{
    dequantize_row_tq2_0, quantize_row_tq2_0_ref, vec_dot_tq2_0_q8_k_with,
};
use bitnet_kernels::{GgmlType, Isa, KernelError};
use bitnet_sys::{RefRunner, Reference};
use bytemuck::{Pod, Zeroable};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use common::{le_f32, le_i32, same_bytes, same_f32, same_f32_bits};

/// Cases per property unless `PROPTEST_CASES` says otherwise. Each case is a few runner
/// round trips of at most a few KiB.
const CASES: u32 = 64;

/// Bytes of one block, by format.
const TQ1_0_BYTES: usize = 54;
const TQ2_0_BYTES: usize = 66;
const Q8_K_BYTES: usize = 292;
const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;
const Q4_0_BYTES: usize = 18;
const Q4_1_BYTES: usize = 20;
/// Elements per Q8_0 / Q8_1 / Q4_0 / Q4_1 block.
const QK32: usize = QK8_0;

fn spawn(r: Reference) -> RefCell<RefRunner> {
    RefCell::new(RefRunner::spawn(r).unwrap_or_else(|e| panic!("{e}")))
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Runs `test` on the fixed adversarial `fixed` inputs, then on [`CASES`] proptest inputs
/// from `strategy` (shrunk on failure). Panics with the first failure's message.
fn check<S>(
    what: &str,
    fixed: Vec<(String, S::Value)>,
    strategy: S,
    test: impl Fn(&S::Value) -> Result<(), String>,
) where
    S: Strategy,
    S::Value: Debug,
{
    for (name, input) in &fixed {
        if let Err(e) = test(input) {
            panic!("{what}, fixed input {name:?}: {e}");
        }
    }
    let mut config = Config {
        source_file: Some(file!()),
        max_shrink_iters: 512,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    let mut runner = TestRunner::new(config);
    match runner.run(&strategy, |v| test(&v).map_err(TestCaseError::fail)) {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => {
            panic!("{what}: {reason}\nminimal failing input: {input:?}")
        }
        Err(TestError::Abort(reason)) => panic!("{what}: proptest aborted: {reason}"),
    }
}

/// Every ISA our kernels have on this CPU; a kernel must match the reference on each.
fn isas() -> &'static [Isa] {
    Isa::available()
}

/// `bytes` as blocks, copied so that alignment is right.
fn blocks<B: Pod>(bytes: &[u8]) -> Vec<B> {
    assert_eq!(bytes.len() % std::mem::size_of::<B>(), 0);
    let mut v = vec![B::zeroed(); bytes.len() / std::mem::size_of::<B>()];
    bytemuck::cast_slice_mut::<B, u8>(&mut v).copy_from_slice(bytes);
    v
}

/// Values of one block of `n` from one adversarial family.
fn block(n: usize) -> BoxedStrategy<Vec<f32>> {
    let uniform = prop::collection::vec(-4.0f32..4.0, n);
    let wide = prop::collection::vec(prop::num::f32::NORMAL, n);
    let zeros = Just(vec![0.0f32; n]);
    // Multiples of amax/div: ties after scaling for div = 2 (TQ, IQ2_BN thresholds),
    // 16 (Q4_0), 30 (Q4_1), 254 (the 8-bit formats), near-ties when 1/d is inexact.
    let grid = (
        prop::sample::select(vec![1.0f32, 127.0, 8.0, 15.0, 0.3, 3.5, 1e-3, 6.0e4]),
        prop::sample::select(vec![2i32, 8, 16, 30, 127, 254]),
        prop::collection::vec(any::<i32>(), n),
        any::<bool>(),
        0..n,
    )
        .prop_map(|(amax, div, js, neg, at)| {
            let mut v: Vec<f32> = js
                .iter()
                .map(|j| amax * (j.rem_euclid(2 * div + 1) - div) as f32 / div as f32)
                .collect();
            v[at] = if neg { -amax } else { amax };
            v
        });
    // One magnitude, random signs and zeros: ternary weights, and ties for "the max".
    let equal = (1e-3f32..100.0, prop::collection::vec(0u8..3, n))
        .prop_map(|(a, t)| t.iter().map(|&t| (f32::from(t) - 1.0) * a).collect());
    let tiny = prop::collection::vec(
        prop_oneof![
            (-1000i32..1000).prop_map(|k| k as f32 * f32::from_bits(1)),
            -1e-37f32..1e-37,
            Just(0.0f32),
        ],
        n,
    );
    let outlier = (
        prop::collection::vec(-1.0f32..1.0, n),
        0..n,
        prop::sample::select(vec![
            1e30f32,
            -1e30,
            f32::MAX,
            f32::MIN,
            3.0e38,
            65504.0,
            -1e6,
        ]),
    )
        .prop_map(|(mut v, at, big)| {
            v[at] = big;
            v
        });
    let element = prop_oneof![
        4 => -4.0f32..4.0,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => (-1000i32..1000).prop_map(|k| k as f32 * f32::from_bits(1)),
        1 => prop::sample::select(vec![1e30f32, -1e30, f32::MAX, f32::MIN]),
        1 => (-255i32..=255).prop_map(|k| k as f32 + 0.5),
    ];
    let mixed = prop::collection::vec(element, n);
    prop_oneof![
        4 => uniform,
        1 => wide,
        1 => zeros,
        2 => grid,
        2 => equal,
        1 => tiny,
        1 => outlier,
        2 => mixed,
    ]
    .boxed()
}

/// A row of `blocks` blocks of `n`: either each block from its own family, or the whole
/// row from one (an all-zero row, a row-wide tie grid, ...).
fn row(n: usize, blocks: std::ops::RangeInclusive<usize>) -> BoxedStrategy<Vec<f32>> {
    blocks
        .prop_flat_map(move |nb| {
            prop_oneof![
                3 => prop::collection::vec(block(n), nb)
                    .prop_map(|bs| bs.into_iter().flatten().collect::<Vec<f32>>()),
                1 => block(n * nb),
            ]
        })
        .boxed()
}

/// Fixed adversarial rows of `len` values (`len` a multiple of 32).
fn adversarial(len: usize) -> Vec<(String, Vec<f32>)> {
    let cycle = |f: &dyn Fn(usize) -> f32| (0..len).map(f).collect::<Vec<f32>>();
    let mut v: Vec<(String, Vec<f32>)> = vec![
        ("all zero".into(), vec![0.0; len]),
        ("all -0".into(), vec![-0.0; len]),
        ("constant 1".into(), vec![1.0; len]),
        ("constant -1".into(), vec![-1.0; len]),
        // amax 127 with every half-integer: the 8-bit formats' scale is exactly 1 (Q8_K's
        // iscale -1), so every value is an exact tie.
        (
            "halves up to 127".into(),
            cycle(&|i| {
                if i % 64 == 0 {
                    127.0
                } else {
                    ((i * 37) % 509) as f32 * 0.5 - 127.0
                }
            }),
        ),
        // Q4_0: the max is -8 (first), d = 1, x + 8.5 lands on .5 exactly.
        (
            "halves with max -8".into(),
            cycle(&|i| {
                if i % 32 == 0 {
                    -8.0
                } else {
                    ((i * 7) % 33) as f32 * 0.5 - 8.0
                }
            }),
        ),
        // Q4_1: min 0, max 15, d = 1.
        (
            "halves 0..15".into(),
            cycle(&|i| match i % 32 {
                0 => 0.0,
                1 => 15.0,
                k => ((k * 11) % 31) as f32 * 0.5,
            }),
        ),
        // Ternary: x/amax = ±0.5 ties, and IQ2_BN's |x| < 0.5·max threshold.
        (
            "halves of amax 1".into(),
            cycle(&|i| [1.0, 0.5, -0.5, 0.0, -1.0, 0.25, -0.75][i % 7]),
        ),
        ("ternary 0.37".into(), common::ternary(len, 0.37, 11)),
        // Equal magnitudes of opposite sign: which is "the max" decides Q8_K's and Q4_0's
        // scale sign.
        (
            "equal magnitudes, negative first".into(),
            cycle(&|i| match i % 32 {
                3 => -2.0,
                9 => 2.0,
                k => (k as f32 - 16.0) / 17.0,
            }),
        ),
        (
            "equal magnitudes, positive first".into(),
            cycle(&|i| match i % 32 {
                3 => 2.0,
                9 => -2.0,
                k => (k as f32 - 16.0) / 17.0,
            }),
        ),
        // An inexact iscale (127/60000) on multiples of 60000/254: f32 products land on
        // .5 where the exact ones are a hair off it (Q8_K under FMA contraction).
        (
            "near-ties, max -60000".into(),
            cycle(&|i| {
                if i % 32 == 0 {
                    -60000.0
                } else {
                    ((i * 37) % 509) as f32 * 236.22047 - 60000.0
                }
            }),
        ),
        (
            "alternating ±amax".into(),
            cycle(&|i| if i % 2 == 0 { 1.5 } else { -1.5 }),
        ),
        (
            "subnormals".into(),
            cycle(&|i| (i as f32 - (len / 2) as f32) * f32::from_bits(1)),
        ),
        // d = amax/127 (or amax itself) is far below f32's normal range: 1/d is +inf.
        (
            "tiny (1/d overflows)".into(),
            cycle(&|i| ((i % 13) as f32 - 6.0) * 1e-39),
        ),
        (
            "outlier f32::MAX".into(),
            cycle(&|i| {
                if i == 5 {
                    f32::MAX
                } else {
                    ((i % 9) as f32 - 4.0) / 4.0
                }
            }),
        ),
        (
            "outlier -f32::MAX and +f32::MAX".into(),
            cycle(&|i| match i % 32 {
                0 => f32::MIN,
                1 => f32::MAX,
                k => k as f32,
            }),
        ),
        (
            "outlier 1e30".into(),
            cycle(&|i| {
                if i % 40 == 7 {
                    -1e30
                } else {
                    ((i % 5) as f32 - 2.0) / 3.0
                }
            }),
        ),
        (
            "magnitudes 1e-30, 1, 1e30 by block of 32".into(),
            cycle(&|i| [1e-30f32, 1.0, 1e30][(i / 32) % 3] * (((i % 7) as f32) - 3.0)),
        ),
    ];
    v.push(("lcg values".into(), common::values(len, 3)));
    v
}

/// [`adversarial`] rows of one or more lengths.
fn adversarial_lens(lens: &[usize]) -> Vec<(String, Vec<f32>)> {
    lens.iter()
        .flat_map(|&n| {
            adversarial(n)
                .into_iter()
                .map(move |(name, x)| (format!("{name} ({n} values)"), x))
        })
        .collect()
}

/// A finite f16 bit pattern (any sign, subnormals included).
fn finite_f16() -> impl Strategy<Value = u16> {
    any::<u16>().prop_map(|b| if b & 0x7c00 == 0x7c00 { b & !0x4000 } else { b })
}

/// `n` blocks of `size` random bytes whose f16 fields at `f16_offsets` are finite.
fn raw_blocks(
    size: usize,
    f16_offsets: &'static [usize],
    n: std::ops::RangeInclusive<usize>,
) -> BoxedStrategy<Vec<u8>> {
    n.prop_flat_map(move |nb| {
        (
            prop::collection::vec(any::<u8>(), nb * size),
            prop::collection::vec(finite_f16(), nb * f16_offsets.len()),
        )
    })
    .prop_map(move |(mut b, scales)| {
        for (i, s) in scales.iter().enumerate() {
            let at = (i / f16_offsets.len()) * size + f16_offsets[i % f16_offsets.len()];
            b[at..at + 2].copy_from_slice(&s.to_le_bytes());
        }
        b
    })
    .boxed()
}

/// A dot-product case: weight blocks as raw bytes (`Some`) or the reference's quantization of
/// a float row (`None`, the first row), and an activation row.
type DotCase = (Option<Vec<u8>>, Vec<f32>, Vec<f32>);

/// A block format with a reference quantizer and a dequantizer in both implementations.
struct BlockFormat<B> {
    ty: GgmlType,
    qk: usize,
    bytes: usize,
    quantize: fn(&[f32], &mut [B]) -> Result<(), KernelError>,
    dequantize: fn(&[B], &mut [f32]) -> Result<(), KernelError>,
}

const TQ1_0: BlockFormat<bitnet_kernels::tq1_0::BlockTQ1_0> = BlockFormat {
    ty: GgmlType::TQ1_0,
    qk: QK_K,
    bytes: TQ1_0_BYTES,
    quantize: quantize_row_tq1_0_ref,
    dequantize: dequantize_row_tq1_0,
};
const TQ2_0: BlockFormat<bitnet_kernels::tq2_0::BlockTQ2_0> = BlockFormat {
    ty: GgmlType::TQ2_0,
    qk: QK_K,
    bytes: TQ2_0_BYTES,
    quantize: quantize_row_tq2_0_ref,
    dequantize: dequantize_row_tq2_0,
};
const Q8_0: BlockFormat<bitnet_kernels::q8_0::BlockQ8_0> = BlockFormat {
    ty: GgmlType::Q8_0,
    qk: QK32,
    bytes: Q8_0_BYTES,
    quantize: quantize_row_q8_0_ref,
    dequantize: dequantize_row_q8_0,
};
const Q4_0: BlockFormat<bitnet_kernels::q4_0::BlockQ4_0> = BlockFormat {
    ty: GgmlType::Q4_0,
    qk: QK32,
    bytes: Q4_0_BYTES,
    quantize: quantize_row_q4_0_ref,
    dequantize: dequantize_row_q4_0,
};
const Q4_1: BlockFormat<bitnet_kernels::q4_1::BlockQ4_1> = BlockFormat {
    ty: GgmlType::Q4_1,
    qk: QK32,
    bytes: Q4_1_BYTES,
    quantize: quantize_row_q4_1_ref,
    dequantize: dequantize_row_q4_1,
};

/// Our blocks of `x` as bytes.
fn our_blocks<B: Pod>(f: &BlockFormat<B>, x: &[f32]) -> Result<Vec<u8>, String> {
    let mut ours = vec![B::zeroed(); x.len() / f.qk];
    (f.quantize)(x, &mut ours).map_err(err)?;
    Ok(bytemuck::cast_slice(&ours).to_vec())
}

/// The reference's `quantize_ref` of `x` (as rows of `n_per_row`) equals ours byte for byte.
fn quantize_ref_matches<B: Pod>(
    r: &mut RefRunner,
    f: &BlockFormat<B>,
    n_per_row: usize,
    x: &[f32],
) -> Result<(), String> {
    let theirs = r.quantize_ref(f.ty, n_per_row, x).map_err(err)?;
    let ours = our_blocks(f, x)?;
    same_bytes(&format!("{:?} quantize_ref", f.ty), f.bytes, &ours, &theirs)
}

/// The reference's `to_float` of `bytes` equals ours bit for bit.
fn dequantize_matches<B: Pod>(
    r: &mut RefRunner,
    f: &BlockFormat<B>,
    bytes: &[u8],
) -> Result<(), String> {
    let n = bytes.len() / f.bytes * f.qk;
    let theirs = r.dequantize(f.ty, n, bytes).map_err(err)?;
    let mut ours = vec![0f32; n];
    (f.dequantize)(&blocks::<B>(bytes), &mut ours).map_err(err)?;
    same_f32_bits(&format!("{:?} dequantize", f.ty), &ours, &theirs)
}

/// The reference's `vec_dot` of weight bytes `w` and activation bytes `a` (its
/// `vec_dot_type`) equals `ours` on each ISA in `isas`, bit for bit.
fn vec_dot_matches<W: Pod, A: Pod>(
    r: &mut RefRunner,
    ty: GgmlType,
    n: usize,
    w: &[u8],
    a: &[u8],
    isas: &[Isa],
    ours: impl Fn(Isa, &[W], &[A]) -> Result<f32, KernelError>,
) -> Result<(), String> {
    let theirs = r.vec_dot(ty, n, w, a).map_err(err)?;
    let (wb, ab) = (blocks::<W>(w), blocks::<A>(a));
    for &isa in isas {
        let got = ours(isa, &wb, &ab).map_err(err)?;
        same_f32(
            &format!("{ty:?} vec_dot ({isa:?}, {n} elements)"),
            got,
            theirs,
        )?;
    }
    Ok(())
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn tq1_0_quantize_ref_is_byte_identical(#[case] reference: Reference) {
    tq_quantize_ref_is_byte_identical(reference, TQ1_0);
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn tq2_0_quantize_ref_is_byte_identical(#[case] reference: Reference) {
    tq_quantize_ref_is_byte_identical(reference, TQ2_0);
}

/// The reference's TQ quantizer against ours, on rows of 1..=4 super-blocks.
fn tq_quantize_ref_is_byte_identical<B: Pod>(reference: Reference, f: BlockFormat<B>) {
    let r = spawn(reference);
    check(
        &format!("{reference} {:?}", f.ty),
        adversarial_lens(&[QK_K, 2 * QK_K]),
        row(QK_K, 1..=4),
        |x| quantize_ref_matches(&mut r.borrow_mut(), &f, x.len(), x),
    );
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn tq_dequantize_is_bit_identical(#[case] reference: Reference) {
    let r = spawn(reference);
    // Arbitrary bytes: every TQ1_0 byte decodes to trits; TQ2_0's unused code 3 is +2.
    check(
        &format!("{reference} TQ1_0 dequantize"),
        vec![],
        raw_blocks(TQ1_0_BYTES, &[52], 1..=3),
        |b| dequantize_matches(&mut r.borrow_mut(), &TQ1_0, b),
    );
    check(
        &format!("{reference} TQ2_0 dequantize"),
        vec![],
        raw_blocks(TQ2_0_BYTES, &[64], 1..=3),
        |b| dequantize_matches(&mut r.borrow_mut(), &TQ2_0, b),
    );
}

/// A Q8_K quantizer of ours.
type Q8kQuantizer = fn(&[f32], &mut [BlockQ8K]) -> Result<(), KernelError>;

// Upstream runs `quantize_row_q8_K_ref` as ggml-base compiles it (no FMA). bitnet.cpp runs
// the same C compiled with -mfma, and GCC contracts `iscale*x + 12582912.f` inside
// `nearest_int` into one FMA: the exact product is rounded once, so some near-ties round the
// other way (found by this test: max -60000, x -30000 → -63 in bitnet.cpp, -64 upstream).
#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp, quantize_row_q8_k)]
#[case::bitnet_cpp(Reference::BitnetCpp, quantize_row_q8_k_fma)]
fn q8_k_activation_quantizer_is_byte_identical(
    #[case] reference: Reference,
    #[case] ours: Q8kQuantizer,
) {
    let r = spawn(reference);
    check(
        &format!("{reference} Q8_K"),
        adversarial_lens(&[QK_K, 2 * QK_K]),
        row(QK_K, 1..=4),
        |x| {
            let theirs = r
                .borrow_mut()
                .quantize_cpu(GgmlType::Q8_K, x)
                .map_err(err)?;
            let mut blocks = vec![BlockQ8K::zeroed(); x.len() / QK_K];
            ours(x, &mut blocks).map_err(err)?;
            same_bytes(
                "Q8_K quantize_cpu",
                Q8_K_BYTES,
                bytemuck::cast_slice(&blocks),
                &theirs,
            )
        },
    );
}

/// TQ weights (random bytes, or the reference's blocks of a float row) against the
/// reference's Q8_K activations of another row.
fn tq_dot_inputs(bytes: usize, d_at: &'static [usize]) -> BoxedStrategy<DotCase> {
    dot_inputs(1..=4, bytes, d_at, |nb| block(nb * QK_K))
}

fn tq_dot_fixed() -> Vec<(String, DotCase)> {
    dot_fixed(&[QK_K, 3 * QK_K], 3)
}

/// `nbs` blocks of weights (random `bytes`-byte blocks with finite f16 fields at `f16_at`,
/// or the reference's blocks of a float row) and an activation row, both rows from
/// `float_row(nb)`.
fn dot_inputs(
    nbs: std::ops::RangeInclusive<usize>,
    bytes: usize,
    f16_at: &'static [usize],
    float_row: fn(usize) -> BoxedStrategy<Vec<f32>>,
) -> BoxedStrategy<DotCase> {
    nbs.prop_flat_map(move |nb| {
        (
            prop_oneof![
                Just(None),
                raw_blocks(bytes, f16_at, nb..=nb).prop_map(Some)
            ],
            float_row(nb),
            float_row(nb),
        )
    })
    .boxed()
}

/// Adversarial rows of `lens` paired with the row `skip` places on (cyclically) of the same
/// length, as weights and activations: each pair is named "weights …, activations …".
fn adversarial_pairs(lens: &[usize], skip: usize) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let rows = adversarial_lens(lens);
    rows.iter()
        .zip(rows.iter().cycle().skip(skip))
        .filter(|((_, a), (_, w))| a.len() == w.len())
        .map(|((an, a), (wn, w))| {
            (
                format!("weights {wn}, activations {an}"),
                w.clone(),
                a.clone(),
            )
        })
        .collect()
}

/// [`adversarial_pairs`] as dot cases with the weights quantized by the reference.
fn dot_fixed(lens: &[usize], skip: usize) -> Vec<(String, DotCase)> {
    adversarial_pairs(lens, skip)
        .into_iter()
        .map(|(name, w, a)| (name, (None, w, a)))
        .collect()
}

/// The reference's `wty`·`aty` dot product against `ours` on each of `isas`, bit for bit:
/// on [`dot_fixed`] cases from `fixed`, then on proptest cases from `inputs`. The weights
/// are `case`'s raw blocks or the reference's `quantize_ref` of its float row; the
/// activations are the reference's `quantize_cpu` of the other row.
fn dot_is_bit_identical<W: Pod, A: Pod>(
    reference: Reference,
    (wty, aty): (GgmlType, GgmlType),
    fixed: Vec<(String, DotCase)>,
    inputs: BoxedStrategy<DotCase>,
    isas: &[Isa],
    ours: impl Fn(Isa, &[W], &[A]) -> Result<f32, KernelError>,
) {
    let r = spawn(reference);
    check(
        &format!("{reference} {wty:?}·{aty:?}"),
        fixed,
        inputs,
        |(raw, w, a)| {
            let mut r = r.borrow_mut();
            let wq = match raw {
                Some(b) => b.clone(),
                None => r.quantize_ref(wty, w.len(), w).map_err(err)?,
            };
            let aq = r.quantize_cpu(aty, a).map_err(err)?;
            vec_dot_matches(&mut r, wty, a.len(), &wq, &aq, isas, &ours)
        },
    );
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn tq1_0_dot_q8_k_is_bit_identical(#[case] reference: Reference) {
    dot_is_bit_identical(
        reference,
        (GgmlType::TQ1_0, GgmlType::Q8_K),
        tq_dot_fixed(),
        tq_dot_inputs(TQ1_0_BYTES, &[52]),
        isas(),
        |isa, x, y| vec_dot_tq1_0_q8_k_with(isa, SumOrder::GgmlAvx2, x, y),
    );
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn tq2_0_dot_q8_k_is_bit_identical(#[case] reference: Reference) {
    dot_is_bit_identical(
        reference,
        (GgmlType::TQ2_0, GgmlType::Q8_K),
        tq_dot_fixed(),
        tq_dot_inputs(TQ2_0_BYTES, &[64]),
        isas(),
        |isa, x, y| vec_dot_tq2_0_q8_k_with(isa, SumOrder::GgmlAvx2, x, y),
    );
}

// The formats with 32-element blocks. bitnet.cpp (which also runs SmolLM2's Q4_1 and Q8_0 tensors)
// shares upstream's activation quantizers and dots; its reference weight quantizers are
// compiled with FMA contraction and are not ours to match (its Q4_0 one rounds
// `x·id + 8.5f` in one FMA and differs on near-ties), so those are checked upstream only.

#[test_log::test]
fn q8_0_quantize_ref_and_dequantize_are_identical() {
    legacy_quantize_ref_and_dequantize(Q8_0);
}

#[test_log::test]
fn q4_0_quantize_ref_and_dequantize_are_identical() {
    legacy_quantize_ref_and_dequantize(Q4_0);
}

#[test_log::test]
fn q4_1_quantize_ref_and_dequantize_are_identical() {
    legacy_quantize_ref_and_dequantize(Q4_1);
}

/// Upstream's reference quantizer (`ggml_quantize_chunk`) and `to_float` of a 32-block
/// format against ours, on float rows and on the reference's own blocks.
fn legacy_quantize_ref_and_dequantize<B: Pod>(f: BlockFormat<B>) {
    let r = spawn(Reference::LlamaCpp);
    check(
        &format!("llama.cpp {:?}", f.ty),
        adversarial_lens(&[QK32, 8 * QK32]),
        row(QK32, 1..=8),
        |x| {
            let mut r = r.borrow_mut();
            quantize_ref_matches(&mut r, &f, x.len(), x)?;
            let theirs = r.quantize_ref(f.ty, x.len(), x).map_err(err)?;
            dequantize_matches(&mut r, &f, &theirs)
        },
    );
}

#[test_log::test]
fn q4_0_and_q4_1_cpu_quantizers_are_their_reference_quantizers() {
    // ggml-cpu's `quantize_row_q4_0` / `_q4_1` (their `from_float`) call the reference
    // quantizers, so ours must match those too.
    let r = spawn(Reference::LlamaCpp);
    check(
        "llama.cpp Q4_0 / Q4_1 quantize_cpu",
        adversarial_lens(&[QK32, 8 * QK32]),
        row(QK32, 1..=8),
        |x| {
            let mut r = r.borrow_mut();
            let theirs = r.quantize_cpu(GgmlType::Q4_0, x).map_err(err)?;
            same_bytes(
                "Q4_0 quantize_cpu",
                Q4_0_BYTES,
                &our_blocks(&Q4_0, x)?,
                &theirs,
            )?;
            let theirs = r.quantize_cpu(GgmlType::Q4_1, x).map_err(err)?;
            same_bytes(
                "Q4_1 quantize_cpu",
                Q4_1_BYTES,
                &our_blocks(&Q4_1, x)?,
                &theirs,
            )
        },
    );
}

/// An x86 activation quantizer of ours, for one ISA.
type X86Quantizer<B> = fn(Isa, &[f32], &mut [B]) -> Result<(), KernelError>;

/// Our x86 activation blocks of `x` (32-element blocks) from `quantize` on `isa`, as bytes.
fn our_x86<B: Pod>(quantize: X86Quantizer<B>, isa: Isa, x: &[f32]) -> Result<Vec<u8>, String> {
    let mut ours = vec![B::zeroed(); x.len() / QK32];
    quantize(isa, x, &mut ours).map_err(err)?;
    Ok(bytemuck::cast_slice(&ours).to_vec())
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn q8_0_and_q8_1_x86_activation_quantizers_are_byte_identical(#[case] reference: Reference) {
    let r = spawn(reference);
    check(
        &format!("{reference} Q8_0 / Q8_1 quantize_cpu"),
        adversarial_lens(&[QK32, 8 * QK32]),
        row(QK32, 1..=8),
        |x| {
            let mut r = r.borrow_mut();
            let q8_0 = r.quantize_cpu(GgmlType::Q8_0, x).map_err(err)?;
            let q8_1 = r.quantize_cpu(GgmlType::Q8_1, x).map_err(err)?;
            for &isa in isas() {
                same_bytes(
                    &format!("Q8_0 quantize_cpu ({isa:?})"),
                    Q8_0_BYTES,
                    &our_x86::<bitnet_kernels::q8_0::BlockQ8_0>(
                        quantize_row_q8_0_x86_with,
                        isa,
                        x,
                    )?,
                    &q8_0,
                )?;
                same_bytes(
                    &format!("Q8_1 quantize_cpu ({isa:?})"),
                    Q8_1_BYTES,
                    &our_x86::<bitnet_kernels::q8_1::BlockQ8_1>(
                        quantize_row_q8_1_x86_with,
                        isa,
                        x,
                    )?,
                    &q8_1,
                )?;
            }
            Ok(())
        },
    );
}

/// Weights (random bytes or the reference's blocks of a float row) and an activation row
/// for the 32-block formats.
fn legacy_dot_inputs(bytes: usize, f16_at: &'static [usize]) -> BoxedStrategy<DotCase> {
    dot_inputs(1..=8, bytes, f16_at, |nb| row(QK32, nb..=nb))
}

fn legacy_dot_fixed() -> Vec<(String, DotCase)> {
    dot_fixed(&[QK32, 8 * QK32], 5)
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn q8_0_dot_q8_0_is_bit_identical(#[case] reference: Reference) {
    dot_is_bit_identical(
        reference,
        (GgmlType::Q8_0, GgmlType::Q8_0),
        legacy_dot_fixed(),
        legacy_dot_inputs(Q8_0_BYTES, &[0]),
        isas(),
        |isa, x, y| vec_dot_q8_0_q8_0_with(isa, SumOrder::GgmlAvx2, x, y),
    );
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn q4_0_dot_q8_0_is_bit_identical(#[case] reference: Reference) {
    dot_is_bit_identical(
        reference,
        (GgmlType::Q4_0, GgmlType::Q8_0),
        legacy_dot_fixed(),
        legacy_dot_inputs(Q4_0_BYTES, &[0]),
        isas(),
        |isa, x, y| vec_dot_q4_0_q8_0_with(isa, SumOrder::GgmlAvx2, x, y),
    );
}

#[test_log::test(rstest::rstest)]
#[case::llama_cpp(Reference::LlamaCpp)]
#[case::bitnet_cpp(Reference::BitnetCpp)]
fn q4_1_dot_q8_1_is_bit_identical(#[case] reference: Reference) {
    dot_is_bit_identical(
        reference,
        (GgmlType::Q4_1, GgmlType::Q8_1),
        legacy_dot_fixed(),
        legacy_dot_inputs(Q4_1_BYTES, &[0, 2]),
        isas(),
        |isa, x, y| vec_dot_q4_1_q8_1_with(isa, SumOrder::GgmlAvx2, x, y),
    );
}

/// Bytes of an I2_S tensor we compare: the codes and the f32 scale. bitnet.cpp's
/// `quantize_i2_s` leaves the 28 padding bytes after the scale as it found them (the
/// runner's buffer, after the quantizer's own scratch), while our writer zero-fills them;
/// nothing reads them.
fn i2_s_compared_bytes(n: usize) -> usize {
    n / 4 + 4
}

#[test_log::test]
fn i2_s_whole_tensor_quantizer_is_byte_identical() {
    let r = spawn(Reference::BitnetCpp);
    // Rows of n_per_row (a multiple of 128), 1..4 rows, one scale for the whole tensor.
    let tensors = (1usize..=4, 1usize..=3).prop_flat_map(|(blocks_per_row, rows)| {
        (
            Just(blocks_per_row * QK_I2_S),
            row(QK_I2_S, blocks_per_row * rows..=blocks_per_row * rows),
        )
    });
    let mut fixed: Vec<(String, (usize, Vec<f32>))> = adversarial_lens(&[QK_I2_S, 6 * QK_I2_S])
        .into_iter()
        .map(|(name, x)| (name, (QK_I2_S.min(x.len()), x)))
        .collect();
    // Around the zero threshold |w| < 1e-6 (compared in double).
    let near = [
        1e-6f32,
        -1e-6,
        9.999999e-7,
        -9.999999e-7,
        1.0000001e-6,
        0.0,
        -0.0,
        0.5,
    ];
    fixed.push((
        "around the 1e-6 zero threshold".into(),
        (
            QK_I2_S,
            (0..2 * QK_I2_S).map(|i| near[i % near.len()]).collect(),
        ),
    ));
    check("bitnet.cpp I2_S", fixed, tensors, |(n_per_row, x)| {
        let theirs = r
            .borrow_mut()
            .quantize_ref(GgmlType::I2_S, *n_per_row, x)
            .map_err(err)?;
        let mut ours = vec![0u8; x.len() / 4 + 32];
        quantize_i2_s_ref(x, *n_per_row, &mut ours).map_err(err)?;
        let n = i2_s_compared_bytes(x.len());
        if theirs.len() != ours.len() {
            return Err(format!(
                "I2_S: {} bytes ours, {} theirs",
                ours.len(),
                theirs.len()
            ));
        }
        same_bytes(
            "I2_S quantize (codes, then the f32 scale at n/4)",
            32,
            &ours[..n],
            &theirs[..n],
        )
    });
}

/// The reference's I8_S row (k codes, f32 scale, i32 Σq) of `x`, and ours.
fn i8_s_rows(r: &mut RefRunner, x: &[f32]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let theirs = r.quantize_cpu(GgmlType::I8_S, x).map_err(err)?;
    let mut q = vec![0i8; x.len()];
    let meta = quantize_row_i8_s(x, &mut q).map_err(err)?;
    let mut ours: Vec<u8> = bytemuck::cast_slice(&q).to_vec();
    ours.extend(meta.scale.to_le_bytes());
    ours.extend(meta.sum.to_le_bytes());
    Ok((ours, theirs))
}

#[test_log::test]
fn i8_s_activation_quantizer_is_byte_identical() {
    let r = spawn(Reference::BitnetCpp);
    check(
        "bitnet.cpp I8_S",
        adversarial_lens(&[QK_I2_S, 4 * QK_I2_S]),
        row(32, 1..=24),
        |x| {
            let (ours, theirs) = i8_s_rows(&mut r.borrow_mut(), x)?;
            let k = x.len();
            same_bytes("I8_S codes", 0, &ours[..k], &theirs[..k.min(theirs.len())])?;
            same_bytes(
                "I8_S f32 scale, i32 Σq",
                0,
                &ours[k..],
                &theirs[k.min(theirs.len())..],
            )
        },
    );
}

/// `n` I2_S weights (the reference's codes of a float row, or random code bytes) against the
/// reference's I8_S row of an activation row, or random int8 codes.
#[derive(Debug, Clone)]
struct I2sDot {
    weights: Result<Vec<f32>, Vec<u8>>,
    acts: Result<Vec<f32>, Vec<u8>>,
}

fn i2_s_dot_inputs() -> impl Strategy<Value = I2sDot> {
    // Up to 80 blocks: more than one run of 32 blocks (the C's 16-bit lane groups) plus a
    // remainder.
    prop_oneof![1usize..=4, 30usize..=80].prop_flat_map(|nb| {
        let n = nb * QK_I2_S;
        (
            prop_oneof![
                block(n).prop_map(Ok),
                prop::collection::vec(any::<u8>(), n / 4).prop_map(Err),
            ],
            prop_oneof![
                row(QK_I2_S, nb..=nb).prop_map(Ok),
                prop::collection::vec(any::<u8>(), n).prop_map(Err),
            ],
        )
            .prop_map(|(weights, acts)| I2sDot { weights, acts })
    })
}

#[test_log::test]
fn i2_s_dot_i8_s_integer_sum_is_exact() {
    let r = spawn(Reference::BitnetCpp);
    // bitnet.cpp's AVX2 kernel sums code·q in 16-bit lanes over runs of 32 blocks: a lane
    // collects 256 products, up to 256·2·127 = 65024 > i16::MAX for valid codes, and wraps.
    // A constant row (q = 127 everywhere) against all-+1 weights (code 2) overflows every
    // lane; random codes 3 against q = -128 go the other way.
    let mut fixed = vec![];
    for nb in [32usize, 33, 64, 70] {
        let n = nb * QK_I2_S;
        fixed.push((
            format!("16-bit overflow: +1 weights, constant activations, {n}"),
            I2sDot {
                weights: Ok(vec![0.5; n]),
                acts: Ok(vec![1.0; n]),
            },
        ));
        fixed.push((
            format!("16-bit overflow: -1 weights, constant activations, {n}"),
            I2sDot {
                weights: Ok(vec![-0.5; n]),
                acts: Ok(vec![-3.0; n]),
            },
        ));
        fixed.push((
            format!("code 3 against q = -128, {n}"),
            I2sDot {
                weights: Err(vec![0xff; n / 4]),
                acts: Err(vec![0x80; n]),
            },
        ));
        fixed.push((
            format!("code 3 against q = 127, {n}"),
            I2sDot {
                weights: Err(vec![0xff; n / 4]),
                acts: Err(vec![0x7f; n]),
            },
        ));
    }
    for (name, x) in adversarial_lens(&[QK_I2_S, 40 * QK_I2_S]) {
        fixed.push((
            format!("weights and activations {name}"),
            I2sDot {
                weights: Ok(x.clone()),
                acts: Ok(x),
            },
        ));
    }
    check("bitnet.cpp I2_S·I8_S", fixed, i2_s_dot_inputs(), |case| {
        let mut r = r.borrow_mut();
        let w = match &case.weights {
            Ok(x) => {
                let q = r.quantize_ref(GgmlType::I2_S, x.len(), x).map_err(err)?;
                q[..x.len() / 4].to_vec()
            }
            Err(codes) => codes.clone(),
        };
        let n = w.len() * 4;
        let a = match &case.acts {
            Ok(x) => r.quantize_cpu(GgmlType::I8_S, x).map_err(err)?,
            Err(codes) => {
                // The dot reads only the codes; the scale and Σq travel beside them.
                let mut b = codes.clone();
                b.extend([0u8; 8]);
                b
            }
        };
        // The runner sizes an I2_S row as n/4 + 32 bytes (codes, then the tensor's scale).
        let mut w_row = w.clone();
        w_row.extend([0u8; 32]);
        let theirs = r.vec_dot(GgmlType::I2_S, n, &w_row, &a).map_err(err)?;
        // |Σ| <= 3·128·n < 2^24 for these n: the reference's f32 holds the sum exactly.
        let theirs_i = theirs as i32;
        if theirs_i as f32 != theirs {
            return Err(format!("reference returned {theirs}, not an integer"));
        }
        let wb: &[BlockI2s] = bytemuck::cast_slice(&w);
        let q: &[i8] = bytemuck::cast_slice(&a[..n]);
        for &isa in isas() {
            let ours = vec_dot_i2_s_i8_s_with(isa, wb, q).map_err(err)?;
            if ours != theirs_i {
                let exact: i64 = (0..n)
                    .map(|i| {
                        let c = (w[(i / 128) * 32 + i % 32] >> (6 - 2 * ((i % 128) / 32))) & 3;
                        i64::from(c) * i64::from(q[i])
                    })
                    .sum();
                return Err(format!(
                    "I2_S·I8_S ({isa:?}, {n} elements): ours {ours}, reference {theirs_i} (exact Σ {exact})"
                ));
            }
        }
        Ok(())
    });
}

#[test_log::test]
fn i2_s_dot_i8_s_wraps_its_16_bit_lanes_like_bitnet_cpp() {
    // 33 blocks of all-+1 weights (code 2) against q = 127: the first 32 blocks are one run
    // of i16 lanes, each summing 256 products of 254 = 65024, which wraps to -512; the last
    // block adds 8·254 = 2032 per lane. 16 lanes: 16·(-512 + 2032) = 24320, where the exact
    // Σcode·q is 33·128·254 = 1072896.
    let mut r = spawn(Reference::BitnetCpp).into_inner();
    let n = 33 * QK_I2_S;
    let w = r.quantize_ref(GgmlType::I2_S, n, &vec![0.5; n]).unwrap();
    let a = r.quantize_cpu(GgmlType::I8_S, &vec![1.0; n]).unwrap();
    assert!(
        a[..n].iter().all(|&q| q == 127),
        "activations are not all 127"
    );
    let theirs = r.vec_dot(GgmlType::I2_S, n, &w, &a).unwrap();
    assert_eq!(theirs, 24320.0, "bitnet.cpp's wrapped sum (exact: 1072896)");
    let wb: &[BlockI2s] = bytemuck::cast_slice(&w[..n / 4]);
    let q: &[i8] = bytemuck::cast_slice(&a[..n]);
    for &isa in isas() {
        assert_eq!(
            vec_dot_i2_s_i8_s_with(isa, wb, q).unwrap(),
            24320,
            "{isa:?}"
        );
    }
}

/// Our IQ2_BN rows of `x` (rows of `k`), as bytes.
fn our_iq2_bn(x: &[f32], k: usize) -> Result<Vec<u8>, String> {
    let size = iq2_bn_row_size(k).map_err(err)?;
    let mut out = vec![0u8; x.len() / k * size];
    for (xr, or) in x.chunks_exact(k).zip(out.chunks_exact_mut(size)) {
        quantize_row_iq2_bn_ref(xr, or).map_err(err)?;
    }
    Ok(out)
}

#[test_log::test]
fn iq2_bn_quantizer_and_dequantizer_are_identical() {
    let r = spawn(Reference::IkLlamaCpp);
    let rows = (1usize..=12, 1usize..=3).prop_flat_map(|(blocks_per_row, rows)| {
        (
            Just(blocks_per_row * QK_IQ2_BN),
            row(QK_IQ2_BN, blocks_per_row * rows..=blocks_per_row * rows),
        )
    });
    let fixed = adversarial_lens(&[QK_IQ2_BN, 8 * QK_IQ2_BN])
        .into_iter()
        .map(|(name, x)| (name, (QK_IQ2_BN, x)))
        .collect();
    check("ik_llama.cpp IQ2_BN", fixed, rows, |(k, x)| {
        let mut r = r.borrow_mut();
        let theirs = r.quantize_ref(GgmlType::IQ2_BN, *k, x).map_err(err)?;
        let ours = our_iq2_bn(x, *k)?;
        let size = iq2_bn_row_size(*k).map_err(err)?;
        same_bytes(
            "IQ2_BN quantize (f32 row scale, then blocks)",
            size,
            &ours,
            &theirs,
        )?;
        for (i, row_bytes) in theirs.chunks_exact(size).enumerate() {
            let theirs = r.dequantize(GgmlType::IQ2_BN, *k, row_bytes).map_err(err)?;
            let mut d = vec![0f32; *k];
            dequantize_row_iq2_bn(&Iq2BnRow::from_bytes(row_bytes, *k).map_err(err)?, &mut d)
                .map_err(err)?;
            same_f32_bits(&format!("IQ2_BN dequantize, row {i}"), &d, &theirs)?;
        }
        Ok(())
    });
}

/// Row lengths ik's Q8_K64 quantizer and IQ2_BN dot accept: multiples of 64, at least 512
/// (it asserts below that; we never send such a row).
fn q8_k64_len(even_blocks_only: bool) -> impl Strategy<Value = usize> {
    (Q8_K64_MIN_K / QK_IQ2_BN..=48usize)
        .prop_map(move |b| if even_blocks_only { b & !1 } else { b } * QK_IQ2_BN)
}

/// The reference's Q8_K64 row of `x` (its ggml row size: 32-byte header, K int8, then
/// K/16 - 32 bytes it leaves alone) and ours (header + K int8).
fn q8_k64_rows(r: &mut RefRunner, x: &[f32]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let theirs = r.quantize_cpu(GgmlType::Q8_K64, x).map_err(err)?;
    let mut qs = vec![0i8; x.len()];
    let header = quantize_row_q8_k64(x, &mut qs).map_err(err)?;
    let mut ours = bytemuck::bytes_of(&header).to_vec();
    ours.extend(bytemuck::cast_slice::<i8, u8>(&qs));
    Ok((ours, theirs))
}

#[test_log::test]
fn q8_k64_activation_quantizer_is_byte_identical() {
    let r = spawn(Reference::IkLlamaCpp);
    let rows = q8_k64_len(false).prop_flat_map(|k| row(16, k / 16..=k / 16));
    check(
        "ik_llama.cpp Q8_K64",
        adversarial_lens(&[Q8_K64_MIN_K, 9 * QK_IQ2_BN, 32 * QK_IQ2_BN]),
        rows,
        |x| {
            let (ours, theirs) = q8_k64_rows(&mut r.borrow_mut(), x)?;
            let k = x.len();
            let used = Q8_K64_HEADER_BYTES + k;
            if theirs.len() != k / 64 * 68 {
                return Err(format!(
                    "Q8_K64: reference returned {} bytes for K = {k}",
                    theirs.len()
                ));
            }
            same_bytes(
                "Q8_K64 header (d[4], d·Σq[4])",
                4,
                &ours[..32],
                &theirs[..32],
            )?;
            same_bytes("Q8_K64 quants", 0, &ours[32..], &theirs[32..used])?;
            match theirs[used..].iter().position(|&b| b != 0) {
                None => Ok(()),
                Some(i) => Err(format!(
                    "Q8_K64 wrote past its quants, at byte {}",
                    used + i
                )),
            }
        },
    );
}

/// An IQ2_BN row (the reference's quantization of floats, or random codes with a finite
/// f32 scale) and an activation row, of `k` elements.
#[derive(Debug, Clone)]
struct Iq2BnDot {
    weights: Result<Vec<f32>, (f32, Vec<u8>)>,
    acts: Vec<f32>,
}

fn iq2_bn_dot_inputs(even_blocks_only: bool) -> impl Strategy<Value = Iq2BnDot> {
    q8_k64_len(even_blocks_only).prop_flat_map(|k| {
        (
            prop_oneof![
                row(QK_IQ2_BN, k / 64..=k / 64).prop_map(Ok),
                (
                    prop_oneof![-4.0f32..4.0, prop::num::f32::NORMAL],
                    prop::collection::vec(any::<u8>(), k / 4)
                )
                    .prop_map(Err),
            ],
            row(16, k / 16..=k / 16),
        )
            .prop_map(|(weights, acts)| Iq2BnDot { weights, acts })
    })
}

/// The reference's IQ2_BN row bytes and Q8_K64 activation bytes for `case`.
fn iq2_bn_dot_bytes(r: &mut RefRunner, case: &Iq2BnDot) -> Result<(Vec<u8>, Vec<u8>), String> {
    let k = case.acts.len();
    let w = match &case.weights {
        Ok(x) => r.quantize_ref(GgmlType::IQ2_BN, k, x).map_err(err)?,
        Err((d, codes)) => {
            let mut b = d.to_le_bytes().to_vec();
            b.extend(codes);
            b
        }
    };
    let a = r.quantize_cpu(GgmlType::Q8_K64, &case.acts).map_err(err)?;
    Ok((w, a))
}

fn iq2_bn_dot_fixed(k: usize) -> Vec<(String, Iq2BnDot)> {
    adversarial_pairs(&[k], 7)
        .into_iter()
        .map(|(name, w, acts)| {
            let weights = Ok(w);
            (name, Iq2BnDot { weights, acts })
        })
        .collect()
}

/// The reference's IQ2_BN·Q8_K64 dot of `case` against ours on every ISA, bit for bit, with
/// our activations the reference's Q8_K64 row (header and quants) after `as_read`.
fn iq2_bn_dot_matches(
    r: &mut RefRunner,
    case: &Iq2BnDot,
    what: &str,
    as_read: impl Fn(&mut [u8]),
) -> Result<(), String> {
    let k = case.acts.len();
    let (w, a) = iq2_bn_dot_bytes(r, case)?;
    let theirs = r.vec_dot(GgmlType::IQ2_BN, k, &w, &a).map_err(err)?;
    let wr = Iq2BnRow::from_bytes(&w, k).map_err(err)?;
    let mut acts = a[..Q8_K64_HEADER_BYTES + k].to_vec();
    as_read(&mut acts);
    let ar = Q8K64Row::from_bytes(&acts).map_err(err)?;
    for &isa in isas() {
        let ours = vec_dot_iq2_bn_q8_k64_with(isa, &wr, &ar).map_err(err)?;
        same_f32(&format!("{what} ({isa:?}, K = {k})"), ours, theirs)?;
    }
    Ok(())
}

#[test_log::test]
fn iq2_bn_dot_q8_k64_is_bit_identical_for_even_block_counts() {
    let r = spawn(Reference::IkLlamaCpp);
    let mut fixed = iq2_bn_dot_fixed(Q8_K64_MIN_K);
    fixed.extend(iq2_bn_dot_fixed(20 * QK_IQ2_BN));
    check(
        "ik_llama.cpp IQ2_BN·Q8_K64 (K/64 even)",
        fixed,
        iq2_bn_dot_inputs(true),
        |case| iq2_bn_dot_matches(&mut r.borrow_mut(), case, "IQ2_BN·Q8_K64", |_| {}),
    );
}

/// Known divergence, pinned: for an odd number of 64-blocks (e.g. K = 576) ik's AVX2 gemm
/// (`mul_mat_iq2bn_q8_K64`, the build every user on this CPU class runs) multiplies the
/// last block's second half (elements K-32..K) by the activations of its first half
/// (`load_quants(iy, i/2, 0)` twice); its AVX512-VNNI path uses the right ones. Our kernel
/// computes the correct sum (see `bitnet_kernels::iq2_bn`), so it differs from this
/// reference there. We check the reference against our kernel fed the activations ik
/// actually reads (the last 32 quants replaced by the 32 before them, same header): equal
/// bit for bit, which both pins the bug's exact shape and shows everything else agrees.
/// BitNet shapes never hit it (2B-4T's K are 2560 and 6912, both K/64 even).
#[test_log::test]
fn iq2_bn_dot_q8_k64_odd_block_counts_read_the_wrong_half_in_ik() {
    let r = spawn(Reference::IkLlamaCpp);
    let odd = iq2_bn_dot_inputs(false).prop_filter("K/64 odd", |c| (c.acts.len() / 64) % 2 == 1);
    let mut fixed = iq2_bn_dot_fixed(9 * QK_IQ2_BN);
    fixed.extend(iq2_bn_dot_fixed(41 * QK_IQ2_BN));
    check(
        "ik_llama.cpp IQ2_BN·Q8_K64 (K/64 odd)",
        fixed,
        odd,
        |case| {
            iq2_bn_dot_matches(
                &mut r.borrow_mut(),
                case,
                "IQ2_BN·Q8_K64 with ik's odd-tail activations",
                |acts| {
                    let end = acts.len();
                    acts.copy_within(end - 64..end - 32, end - 32);
                },
            )
        },
    );
}

#[test_log::test]
fn i8_s_row_layout_is_codes_then_scale_then_sum() {
    // The layout every I8_S comparison above relies on, on one known row.
    let r = spawn(Reference::BitnetCpp);
    let x: Vec<f32> = (0..QK_I2_S).map(|i| (i as f32 - 64.0) / 64.0).collect();
    let (_, theirs) = i8_s_rows(&mut r.borrow_mut(), &x).unwrap();
    assert_eq!(theirs.len(), QK_I2_S + 8);
    assert_eq!(le_f32(&theirs[QK_I2_S..]), 127.0);
    let sum: i32 = theirs[..QK_I2_S].iter().map(|&b| i32::from(b as i8)).sum();
    assert_eq!(le_i32(&theirs[QK_I2_S + 4..]), sum);
}
