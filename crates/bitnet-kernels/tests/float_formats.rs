//! Properties of the F32/F16/BF16 conversions and dot products: every ISA against the scalar
//! oracle, and round trips within each format's precision.

use bitnet_kernels::float::*;
use bitnet_kernels::{Isa, SumOrder};
use half::{bf16, f16};
use proptest::prelude::*;

/// Values that exercise the kernels: ordinary magnitudes, signed zeros, halves, subnormals
/// and the full normal range.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -4.0f32..4.0,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => (-64i32..=64).prop_map(|k| k as f32 * 0.5),
        1 => any::<u32>().prop_map(|b| f32::from_bits(b & 0x807F_FFFF)),
        1 => -1000.0f32..1000.0,
    ]
}

/// The generic order (ggml without SIMD), the oracle of the tolerance checks.
const G: SumOrder = SumOrder::GgmlGeneric;
/// The AVX2 order (ggml's x86 AVX2+FMA build), what the engine runs.
const A: SumOrder = SumOrder::GgmlAvx2;

/// [`value`], plus any f32 bit pattern (infinities and NaN included).
fn any_value() -> impl Strategy<Value = f32> {
    prop_oneof![4 => value(), 1 => any::<u32>().prop_map(f32::from_bits)]
}

/// A pair of equal-length vectors; lengths cover whole 32-steps, the 64-step unroll and tails.
fn pair(max_len: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (0..=max_len).prop_flat_map(|n| {
        (
            prop::collection::vec(value(), n),
            prop::collection::vec(value(), n),
        )
    })
}

/// Σ|xᵢ·yᵢ| in f64: the magnitude the summation error bound scales with.
fn magnitude(x: &[f32], y: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
        .sum()
}

/// Operands of a many-rows dot: (row length, stride, x rows, y rows, x data, y data).
type ManyRows = (usize, usize, usize, usize, Vec<f32>, Vec<f32>);

/// [`ManyRows`] with row lengths `unit · 0..=max_units` and strides up to 9 past them.
fn many_rows(unit: usize, max_units: usize) -> impl Strategy<Value = ManyRows> {
    (0..=max_units, 0usize..=9, 0usize..=5, 0usize..=6).prop_flat_map(
        move |(units, gap, x_rows, y_rows)| {
            let (n, stride) = (unit * units, unit * units + gap);
            let span = |rows: usize| {
                if rows == 0 {
                    0
                } else {
                    (rows - 1) * stride + n
                }
            };
            (
                Just(n),
                Just(stride),
                Just(x_rows),
                Just(y_rows),
                prop::collection::vec(any_value(), span(x_rows)),
                prop::collection::vec(any_value(), span(y_rows)),
            )
        },
    )
}

/// Allowed |fast − oracle| for an n-term float dot. The AVX2 path's longest f32 chain is one
/// lane's n/32 FMAs plus the F32 tail's n%32; the oracle sums in f64. Each underflowing
/// product may also lose up to one subnormal ulp (2⁻¹⁴⁹) in the oracle's f32 product.
fn dot_tolerance(n: usize, magnitude: f64) -> f64 {
    f32_sum_tolerance(n / 32 + n % 32) * magnitude + n as f64 * f64::from(f32::from_bits(1))
}

fn check_dot(name: &str, n: usize, mag: f64, fast: f32, oracle: f32) -> Result<(), TestCaseError> {
    let err = (f64::from(fast) - f64::from(oracle)).abs();
    let tol = dot_tolerance(n, mag);
    prop_assert!(
        err <= tol,
        "{name}: n={n} fast={fast} oracle={oracle} |Δ|={err:e} > tolerance {tol:e}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn f32_to_f16_row_is_identical_on_every_isa(bits in prop::collection::vec(any::<u32>(), 0..100)) {
        let x: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let mut want = vec![f16::ZERO; x.len()];
        f32_to_f16_row_generic(&x, &mut want).unwrap();
        for &isa in Isa::available() {
            let mut got = vec![f16::ZERO; x.len()];
            f32_to_f16_row_with(isa, &x, &mut got).unwrap();
            let (g, w): (Vec<u16>, Vec<u16>) =
                (got.iter().map(|h| h.to_bits()).collect(), want.iter().map(|h| h.to_bits()).collect());
            prop_assert_eq!(g, w, "{:?}", isa);
        }
    }

    #[test]
    fn f16_to_f32_row_is_identical_on_every_isa(bits in prop::collection::vec(any::<u16>(), 0..100)) {
        let x: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let mut want = vec![0.0f32; x.len()];
        f16_to_f32_row_generic(&x, &mut want).unwrap();
        for &isa in Isa::available() {
            let mut got = vec![0.0f32; x.len()];
            f16_to_f32_row_with(isa, &x, &mut got).unwrap();
            let (g, w): (Vec<u32>, Vec<u32>) =
                (got.iter().map(|v| v.to_bits()).collect(), want.iter().map(|v| v.to_bits()).collect());
            prop_assert_eq!(g, w, "{:?}", isa);
        }
    }

    #[test]
    fn f16_round_trip_within_half_an_ulp(x in prop::collection::vec(-65504.0f32..65504.0, 1..64)) {
        let mut h = vec![f16::ZERO; x.len()];
        let mut back = vec![0.0f32; x.len()];
        f32_to_f16_row(&x, &mut h).unwrap();
        f16_to_f32_row(&h, &mut back).unwrap();
        for (&v, &b) in x.iter().zip(&back) {
            // Half an ulp: 2^-11 relative for normal f16, 2^-25 absolute below 2^-14.
            let bound = (f64::from(v).abs() * 2f64.powi(-11)).max(2f64.powi(-25));
            prop_assert!((f64::from(v) - f64::from(b)).abs() <= bound, "{} → {}", v, b);
        }
    }

    #[test]
    fn bf16_round_trip_within_half_an_ulp(x in prop::collection::vec(value(), 1..64)) {
        let mut h = vec![bf16::ZERO; x.len()];
        let mut back = vec![0.0f32; x.len()];
        f32_to_bf16_row(&x, &mut h).unwrap();
        bf16_to_f32_row(&h, &mut back).unwrap();
        for (&v, &b) in x.iter().zip(&back) {
            // Half an ulp: 2^-8 relative (8-bit significand), 2^-134 absolute for subnormals.
            let bound = (f64::from(v).abs() * 2f64.powi(-8)).max(2f64.powi(-134));
            prop_assert!((f64::from(v) - f64::from(b)).abs() <= bound, "{} → {}", v, b);
        }
    }

    #[test]
    fn f32_dot_every_isa_matches_scalar((x, y) in pair(300)) {
        let oracle = vec_dot_f32_generic(G, &x, &y).unwrap();
        for &isa in Isa::available() {
            let fast = vec_dot_f32_with(isa, A, &x, &y).unwrap();
            check_dot(&format!("f32 {isa:?}"), x.len(), magnitude(&x, &y), fast, oracle)?;
            prop_assert_eq!(vec_dot_f32_with(isa, G, &x, &y).unwrap().to_bits(), oracle.to_bits(), "f32 {:?}", isa);
        }
    }

    #[test]
    fn f16_dot_every_isa_matches_scalar((x, y) in pair(300)) {
        let (mut xh, mut yh) = (vec![f16::ZERO; x.len()], vec![f16::ZERO; y.len()]);
        f32_to_f16_row(&x, &mut xh).unwrap();
        f32_to_f16_row(&y, &mut yh).unwrap();
        let (xw, yw): (Vec<f32>, Vec<f32>) = (xh.iter().map(|h| h.to_f32()).collect(), yh.iter().map(|h| h.to_f32()).collect());
        let oracle = vec_dot_f16_generic(G, &xh, &yh).unwrap();
        for &isa in Isa::available() {
            let fast = vec_dot_f16_with(isa, A, &xh, &yh).unwrap();
            check_dot(&format!("f16 {isa:?}"), x.len(), magnitude(&xw, &yw), fast, oracle)?;
            prop_assert_eq!(vec_dot_f16_with(isa, G, &xh, &yh).unwrap().to_bits(), oracle.to_bits(), "f16 {:?}", isa);
            // With f16-exact activations, F16·F32 is the same computation in the same order.
            for (order, want) in [(A, fast), (G, oracle)] {
                let mixed = vec_dot_f16_f32_with(isa, order, &xh, &yw).unwrap();
                prop_assert_eq!(mixed.to_bits(), want.to_bits(), "f16·f32 {:?} {:?}", isa, order);
            }
        }
    }

    #[test]
    fn f16_f32_dot_every_isa_matches_scalar((x, y) in pair(300)) {
        let mut xh = vec![f16::ZERO; x.len()];
        f32_to_f16_row(&x, &mut xh).unwrap();
        let xw: Vec<f32> = xh.iter().map(|h| h.to_f32()).collect();
        let oracle = vec_dot_f16_f32_generic(G, &xh, &y).unwrap();
        for &isa in Isa::available() {
            let fast = vec_dot_f16_f32_with(isa, A, &xh, &y).unwrap();
            check_dot(&format!("f16·f32 {isa:?}"), x.len(), magnitude(&xw, &y), fast, oracle)?;
            prop_assert_eq!(vec_dot_f16_f32_with(isa, G, &xh, &y).unwrap().to_bits(), oracle.to_bits(), "f16·f32 {:?}", isa);
        }
    }

    #[test]
    fn bf16_dot_every_isa_matches_scalar((x, y) in pair(300)) {
        let (mut xb, mut yb) = (vec![bf16::ZERO; x.len()], vec![bf16::ZERO; y.len()]);
        f32_to_bf16_row(&x, &mut xb).unwrap();
        f32_to_bf16_row(&y, &mut yb).unwrap();
        let (xw, yw): (Vec<f32>, Vec<f32>) = (xb.iter().map(|&h| bf16_to_f32(h)).collect(), yb.iter().map(|&h| bf16_to_f32(h)).collect());
        let oracle = vec_dot_bf16_generic(G, &xb, &yb).unwrap();
        for &isa in Isa::available() {
            let fast = vec_dot_bf16_with(isa, A, &xb, &yb).unwrap();
            check_dot(&format!("bf16 {isa:?}"), x.len(), magnitude(&xw, &yw), fast, oracle)?;
            prop_assert_eq!(vec_dot_bf16_with(isa, G, &xb, &yb).unwrap().to_bits(), oracle.to_bits(), "bf16 {:?}", isa);
        }
    }

    /// The contract of [`SumOrder`]: each order's result does not depend on the ISA, for any
    /// bit patterns (infinities, NaN, subnormals) and every length (whole 32-steps, the
    /// 64-step unroll, tails).
    #[test]
    fn each_order_is_bit_identical_on_every_isa_for_any_values(
        (x, y) in (0usize..=300).prop_flat_map(|n| (
            prop::collection::vec(any_value(), n),
            prop::collection::vec(any_value(), n),
        ))
    ) {
        let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let yh: Vec<f16> = y.iter().map(|&v| f16::from_f32(v)).collect();
        let xb: Vec<bf16> = x.iter().map(|&v| f32_to_bf16(v)).collect();
        let yb: Vec<bf16> = y.iter().map(|&v| f32_to_bf16(v)).collect();
        for &isa in Isa::available() {
            for o in [G, A] {
                let pairs = [
                    ("f32", vec_dot_f32_with(isa, o, &x, &y), vec_dot_f32_generic(o, &x, &y)),
                    ("f16", vec_dot_f16_with(isa, o, &xh, &yh), vec_dot_f16_generic(o, &xh, &yh)),
                    ("bf16", vec_dot_bf16_with(isa, o, &xb, &yb), vec_dot_bf16_generic(o, &xb, &yb)),
                    ("f16·f32", vec_dot_f16_f32_with(isa, o, &xh, &y), vec_dot_f16_f32_generic(o, &xh, &y)),
                ];
                for (name, got, want) in pairs {
                    let (got, want) = (got.unwrap(), want.unwrap());
                    prop_assert!(
                        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                        "{} n={} {:?} {:?}: {:e} ({:#x}) vs scalar {:e} ({:#x})",
                        name, x.len(), isa, o, got, got.to_bits(), want, want.to_bits()
                    );
                }
            }
        }
    }

    /// The many-rows dots (attention's K and Vᵀ rows against a KV group's query heads)
    /// equal the scalar oracle's dot per pair, bit for bit, on every ISA and in both orders,
    /// for any bit patterns, row counts past the four-at-a-time chunk and every tail length;
    /// with `y` rounded to f16 and back (`round_to_f16_in_place`), F16 rows give ggml's
    /// F16·F16 dot, the pairing attention with an F16 cache reproduces.
    #[test]
    fn many_rows_dots_equal_one_dot_per_pair_on_every_isa(
        (n, x_stride, x_rows, y_rows, x, y) in many_rows(1, 80)
    ) {
        let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let mut y_rounded = y.clone();
        round_to_f16_in_place(&mut y_rounded, &mut vec![f16::ZERO; y.len()]).unwrap();
        let yh: Vec<f16> = y_rounded.iter().map(|&v| f16::from_f32(v)).collect();
        let rows = |data, rows| Rows { data, rows, cols: n, stride: x_stride };
        let (xr, yr, yrr) = (rows(&x[..], x_rows), rows(&y[..], y_rows), rows(&y_rounded[..], y_rows));
        let xhr = Rows { data: &xh[..], rows: x_rows, cols: n, stride: x_stride };
        let out_stride = x_rows + 3;
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for &isa in Isa::available() {
            for o in [G, A] {
                let mut out32 = vec![f32::NAN; y_rows * out_stride];
                let (mut out16, mut out_ggml16) = (out32.clone(), out32.clone());
                vec_dot_rows_with(isa, o, FloatRows::F32(xr), yr, &mut out32, out_stride).unwrap();
                vec_dot_rows_with(isa, o, FloatRows::F16(xhr), yr, &mut out16, out_stride).unwrap();
                vec_dot_rows_with(isa, o, FloatRows::F16(xhr), yrr, &mut out_ggml16, out_stride).unwrap();
                for h in 0..y_rows {
                    let yi = h * x_stride..h * x_stride + n;
                    for i in 0..x_rows {
                        let xi = i * x_stride..i * x_stride + n;
                        let want32 = vec_dot_f32_generic(o, &x[xi.clone()], &y[yi.clone()]).unwrap();
                        let want16 = vec_dot_f16_f32_generic(o, &xh[xi.clone()], &y[yi.clone()]).unwrap();
                        let want_ggml16 = vec_dot_f16_generic(o, &xh[xi], &yh[yi.clone()]).unwrap();
                        let at = h * out_stride + i;
                        let (got32, got16, got_ggml16) = (out32[at], out16[at], out_ggml16[at]);
                        prop_assert!(same(got32, want32), "f32 x{} y{} {:?} {:?}: {:e} vs {:e}", i, h, isa, o, got32, want32);
                        prop_assert!(same(got16, want16), "f16·f32 x{} y{} {:?} {:?}: {:e} vs {:e}", i, h, isa, o, got16, want16);
                        prop_assert!(same(got_ggml16, want_ggml16), "f16·f16 x{} y{} {:?} {:?}: {:e} vs {:e}", i, h, isa, o, got_ggml16, want_ggml16);
                    }
                }
            }
        }
    }

    /// Rows past their data, past `out`, or of different lengths are refused with an error
    /// that names them, never read or written out of bounds.
    #[test]
    fn many_rows_dots_refuse_rows_past_their_buffers(n in 1usize..=40, stride in 1usize..=50, rows in 1usize..=5) {
        let need = (rows - 1) * stride + n;
        let (full, short) = (vec![1.0f32; need], vec![1.0f32; need - 1]);
        let (full_h, short_h) = (vec![f16::ONE; need], vec![f16::ONE; need - 1]);
        let m = |data, cols| Rows { data, rows, cols, stride };
        let mh = |data, cols| Rows { data, rows, cols, stride };
        let out_need = (rows - 1) * rows + rows;
        let cases = [
            ("x rows", m(&short[..], n), mh(&short_h[..], n), m(&full[..], n), out_need),
            ("y rows", m(&full[..], n), mh(&full_h[..], n), m(&short[..], n), out_need),
            ("out rows", m(&full[..], n), mh(&full_h[..], n), m(&full[..], n), out_need - 1),
            ("y row", m(&full[..], n), mh(&full_h[..], n), m(&full[..], n - 1), out_need),
        ];
        for &isa in Isa::available() {
            for o in [G, A] {
                for (what, x, xh, y, out_len) in cases {
                    let mut out = vec![0.0f32; out_len];
                    for err in [
                        vec_dot_rows_with(isa, o, FloatRows::F32(x), y, &mut out, rows).unwrap_err(),
                        vec_dot_rows_with(isa, o, FloatRows::F16(xh), y, &mut out, rows).unwrap_err(),
                    ] {
                        prop_assert!(err.to_string().contains(what), "{}: {}", what, err);
                    }
                }
            }
        }
    }

    /// ik's many-rows dots (attention under ik's numerics) equal ik's scalar dot per pair,
    /// bit for bit, on every ISA; rows whose length is not a multiple of 4 are refused.
    #[test]
    fn ik_many_rows_dots_equal_the_scalar_dot_per_pair(
        (n, stride, x_rows, y_rows, x, y) in many_rows(4, 20)
    ) {
        use bitnet_kernels::ik_float::{ik_dot_f16_f32_generic, ik_dot_f32_generic, ik_dot_rows_with};
        let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let xr = Rows { data: &x[..], rows: x_rows, cols: n, stride };
        let xhr = Rows { data: &xh[..], rows: x_rows, cols: n, stride };
        let yr = Rows { data: &y[..], rows: y_rows, cols: n, stride };
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for &isa in Isa::available() {
            let mut out32 = vec![f32::NAN; y_rows * x_rows];
            let mut out16 = out32.clone();
            ik_dot_rows_with(isa, FloatRows::F32(xr), yr, &mut out32, x_rows).unwrap();
            ik_dot_rows_with(isa, FloatRows::F16(xhr), yr, &mut out16, x_rows).unwrap();
            for h in 0..y_rows {
                let yh = &y[h * stride..][..n];
                for i in 0..x_rows {
                    let xi = i * stride..i * stride + n;
                    let want32 = ik_dot_f32_generic(&x[xi.clone()], yh).unwrap();
                    let want16 = ik_dot_f16_f32_generic(&xh[xi], yh).unwrap();
                    prop_assert!(same(out32[h * x_rows + i], want32), "f32 x{} y{} {:?}", i, h, isa);
                    prop_assert!(same(out16[h * x_rows + i], want16), "f16 x{} y{} {:?}", i, h, isa);
                }
            }
            if x_rows > 0 && y_rows > 0 && n > 0 {
                let odd = Rows { cols: n - 1, ..xr };
                let odd_y = Rows { cols: n - 1, ..yr };
                let err = ik_dot_rows_with(isa, FloatRows::F32(odd), odd_y, &mut out32, x_rows).unwrap_err();
                prop_assert!(err.to_string().contains("multiple of the block size 4"), "{}", err);
            }
        }
    }

    #[test]
    fn integer_valued_dots_are_exact_on_every_isa(
        (x, y) in (0usize..200).prop_flat_map(|n| (
            prop::collection::vec(-64i32..=64, n),
            prop::collection::vec(-64i32..=64, n),
        ))
    ) {
        // |Σ| ≤ 200·64·64 < 2^24: every partial sum is an exactly representable integer, so
        // every summation order gives the same bits.
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let yf: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        let want: i32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        let xh: Vec<f16> = xf.iter().map(|&v| f16::from_f32(v)).collect();
        let yh: Vec<f16> = yf.iter().map(|&v| f16::from_f32(v)).collect();
        let xb: Vec<bf16> = xf.iter().map(|&v| f32_to_bf16(v)).collect();
        let yb: Vec<bf16> = yf.iter().map(|&v| f32_to_bf16(v)).collect();
        for &isa in Isa::available() {
            for o in [G, A] {
                prop_assert_eq!(vec_dot_f32_with(isa, o, &xf, &yf).unwrap(), want as f32, "f32 {:?} {:?}", isa, o);
                prop_assert_eq!(vec_dot_f16_with(isa, o, &xh, &yh).unwrap(), want as f32, "f16 {:?} {:?}", isa, o);
                prop_assert_eq!(vec_dot_bf16_with(isa, o, &xb, &yb).unwrap(), want as f32, "bf16 {:?} {:?}", isa, o);
                prop_assert_eq!(vec_dot_f16_f32_with(isa, o, &xh, &yf).unwrap(), want as f32, "f16·f32 {:?} {:?}", isa, o);
            }
        }
    }
}

/// A weight matrix of `rows` rows of `k`, and `n_tok` activation rows of `k`.
fn ik_operands() -> impl Strategy<Value = (usize, Vec<f32>, Vec<f32>)> {
    (1usize..=11, 0usize..=3, 1usize..=3).prop_flat_map(|(rows, k8, n_tok)| {
        // k: whole chunks of 8 (tileable), or 4 more (row-major only).
        prop_oneof![Just(8 * k8 + 8), Just(8 * k8 + 4)].prop_flat_map(move |k| {
            (
                Just(k),
                prop::collection::vec(value(), rows * k),
                prop::collection::vec(value(), n_tok * k),
            )
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// ik's many-row products, row-major and tiled, equal ik's scalar dot of every (row,
    /// token) pair bit for bit on every ISA, with every row count (whole tiles and the
    /// row-major rest).
    #[test]
    fn ik_gemm_equals_the_scalar_dot_in_both_layouts((k, w, y) in ik_operands()) {
        use bitnet_kernels::gemm::RowOrder;
        use bitnet_kernels::ik_float::*;
        let (rows, n_tok) = (w.len() / k, y.len() / k);
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let want = |dot: &dyn Fn(usize, &[f32]) -> f32| -> Vec<u32> {
            (0..rows)
                .flat_map(|r| y.chunks_exact(k).map(move |yt| (r, yt)))
                .map(|(r, yt)| dot(r, yt).to_bits())
                .collect()
        };
        let want32 = want(&|r, yt| ik_dot_f32_generic(&w[r * k..(r + 1) * k], yt).unwrap());
        let want16 = want(&|r, yt| ik_dot_f16_f32_generic(&wh[r * k..(r + 1) * k], yt).unwrap());
        let mut tiled = vec![0f32; w.len()];
        let mut tiled_h = vec![f16::ZERO; w.len()];
        let orders: &[RowOrder] = if k % 8 == 0 {
            ik_tile_rows(&w, k, &mut tiled).unwrap();
            ik_tile_rows(&wh, k, &mut tiled_h).unwrap();
            &[RowOrder::RowMajor, RowOrder::Tiled]
        } else {
            prop_assert!(ik_tile_rows(&w, k, &mut tiled).is_err());
            &[RowOrder::RowMajor]
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for &isa in Isa::available() {
            for &order in orders {
                let (w32, w16) = match order {
                    RowOrder::RowMajor => (&w, &wh),
                    RowOrder::Tiled => (&tiled, &tiled_h),
                };
                let mut out = vec![0f32; rows * n_tok];
                ik_gemm_with(isa, w32, order, &y, n_tok, &mut out).unwrap();
                prop_assert_eq!(bits(&out), want32.clone(), "f32 {:?} {:?}", isa, order);
                ik_gemm_with(isa, w16, order, &y, n_tok, &mut out).unwrap();
                prop_assert_eq!(bits(&out), want16.clone(), "f16 {:?} {:?}", isa, order);
            }
        }
        // A tiled product of a k that does not tile, and mismatched buffers, are errors.
        let mut out = vec![0f32; rows * n_tok];
        if k % 8 != 0 {
            prop_assert!(ik_gemm_with(Isa::best(), &w, RowOrder::Tiled, &y, n_tok, &mut out).is_err());
        }
        prop_assert!(ik_gemm_with(Isa::best(), &w[1..], RowOrder::RowMajor, &y, n_tok, &mut out).is_err());
        prop_assert!(ik_gemm_with(Isa::best(), &w, RowOrder::RowMajor, &y[1..], n_tok, &mut out).is_err());
    }
}
