//! Microsoft bitnet.cpp-specific checks through bitnet-sys (feature `crossval`): the kernel
//! entry points of its ternary formats (I2_S with its I8_S activations, TQ1_0 and TQ2_0 with
//! Q8_K). The checks every reference shares are in `references.rs`; bit-exact parity with
//! our kernels is in `kernel_parity.rs`.
#![cfg(feature = "crossval")]

mod common;

use bitnet_sys::protocol::Request;
use bitnet_sys::{RefRunner, Reference};

use common::{bytes, floats, le_f32, le_i32, scalar, ternary, values};

const BITNET: Reference = Reference::BitnetCpp;

/// ggml type ids as bitnet.cpp numbers them.
const Q8_K: u32 = 15;
const TQ1_0: u32 = 34;
const TQ2_0: u32 = 35;
const I2_S: u32 = 36;
const I8_S: u32 = 37;
/// Elements per TQ*/Q8_K block and per I2_S block (x86 layout).
const QK_K: usize = 256;
const QK_I2_S: usize = 128;

/// I2_S code (0, 1, 2 for −1, 0, +1) of element `i` of a tensor: blocks of 128 values in 32
/// bytes, byte `b` holding elements b, b+32, b+64, b+96 in bits 7:6, 5:4, 3:2, 1:0.
fn i2s_code(q: &[u8], i: usize) -> u8 {
    let (block, j) = (i / QK_I2_S, i % QK_I2_S);
    let byte = q[block * 32 + j % 32];
    (byte >> (6 - 2 * (j / 32))) & 3
}

#[test_log::test]
fn bitnet_cpp_i2_s_quantizes_a_whole_tensor_with_one_scale() {
    let mut r = RefRunner::spawn(BITNET).expect("spawn");
    let (rows, k) = (3, 2 * QK_I2_S);
    let w = ternary(rows * k, 0.37, 1);
    let q = bytes(
        r.call(Request::QuantizeRef {
            ty: I2_S,
            n_per_row: k as u64,
            x: w.clone(),
        })
        .unwrap(),
    );
    let n = rows * k;
    assert_eq!(q.len(), n / 4 + 32);
    assert_eq!(le_f32(&q[n / 4..]), 0.37, "per-tensor scale");
    for (i, &x) in w.iter().enumerate() {
        let trit = i2s_code(&q, i) as i32 - 1;
        assert_eq!(trit as f32 * 0.37, x, "element {i}");
    }
}

#[test_log::test]
fn bitnet_cpp_i2_s_vec_dot_with_i8_s_activations() {
    let mut r = RefRunner::spawn(BITNET).expect("spawn");
    let k = 4 * QK_I2_S;
    let w = ternary(k, 0.5, 2);
    let a = values(k, 3);
    let wq = bytes(
        r.call(Request::QuantizeRef {
            ty: I2_S,
            n_per_row: k as u64,
            x: w,
        })
        .unwrap(),
    );
    // One row of I8_S as mul_mat lays it out: k int8 codes, then the f32 scale and the
    // i32 code sum.
    let aq = bytes(
        r.call(Request::QuantizeCpu {
            ty: I8_S,
            x: a.clone(),
        })
        .unwrap(),
    );
    assert_eq!(aq.len(), k + 8);
    let amax = a.iter().fold(1e-5f64, |m, &v| m.max(f64::from(v).abs()));
    let s = (127.0 / amax) as f32;
    assert_eq!(le_f32(&aq[k..]), s, "activation scale");
    let codes: Vec<i32> = aq[..k].iter().map(|&b| i32::from(b as i8)).collect();
    for (i, (&c, &x)) in codes.iter().zip(&a).enumerate() {
        assert!(
            (c as f32 - x * s).abs() <= 0.5 + 1e-4,
            "element {i}: {c} vs {}",
            x * s
        );
    }
    assert_eq!(le_i32(&aq[k + 4..]), codes.iter().sum::<i32>());
    // The kernel returns Σ code·q with weight codes 0, 1, 2; the caller subtracts Σq and
    // applies the scales.
    let got = scalar(
        r.call(Request::VecDot {
            ty: I2_S,
            n: k as u64,
            x: wq.clone(),
            y: aq,
        })
        .unwrap(),
    );
    let want: i32 = (0..k).map(|i| i32::from(i2s_code(&wq, i)) * codes[i]).sum();
    assert_eq!(got, want as f32);
}

#[test_log::test]
fn bitnet_cpp_tq_formats_round_trip_and_dot_with_q8_k() {
    let mut r = RefRunner::spawn(BITNET).expect("spawn");
    let k = 2 * QK_K;
    let w = ternary(k, 0.25, 4);
    let a = values(k, 5);
    let aq = bytes(
        r.call(Request::QuantizeCpu {
            ty: Q8_K,
            x: a.clone(),
        })
        .unwrap(),
    );
    assert_eq!(aq.len(), k / QK_K * 292);
    let exact: f32 = w.iter().zip(&a).map(|(x, y)| x * y).sum();
    for (ty, block_bytes) in [(TQ1_0, 54), (TQ2_0, 66)] {
        let q = bytes(
            r.call(Request::QuantizeRef {
                ty,
                n_per_row: k as u64,
                x: w.clone(),
            })
            .unwrap(),
        );
        assert_eq!(q.len(), k / QK_K * block_bytes, "type {ty}");
        let d = floats(
            r.call(Request::Dequantize {
                ty,
                n: k as u64,
                bytes: q.clone(),
            })
            .unwrap(),
        );
        // 0.25 is exact in f16, so ternary weights come back exactly.
        assert_eq!(d, w, "type {ty}");
        let got = scalar(
            r.call(Request::VecDot {
                ty,
                n: k as u64,
                x: q,
                y: aq.clone(),
            })
            .unwrap(),
        );
        eprintln!("type {ty}·q8_K = {got}, f32 dot = {exact}");
        // Only the activations are rounded (to 1/127 of each block's max).
        let bound = k as f32 * 0.25 * 0.5 / 127.0;
        assert!((got - exact).abs() <= bound, "type {ty}: {got} vs {exact}");
    }
}
