//! Kernel throughput (`make bench`, or `cargo bench -p bitnet-kernels`): each ternary
//! format's many-token product on a 2B-4T FFN-shaped matrix (6912 rows × 2560), for one
//! token (decode: weight bytes streamed per second) and a 128-token prompt (prefill:
//! multiply-adds per second), plus the F16 output-head row dot. One thread; the best of
//! several runs (the least disturbed by the rest of the machine). Printed, never asserted.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bitnet_kernels::float::{f32_to_f16_row, vec_dot_f16_f32};
use bitnet_kernels::gemm::RowOrder::{RowMajor, Tiled};
use bitnet_kernels::i2_s::{gemm_i2_s_i8_s, BlockI2s, QK_I2_S};
use bitnet_kernels::iq2_bn::{gemm_iq2_bn_q8_k64, iq2_bn_row_size, iq2_bn_tile_rows};
use bitnet_kernels::q8_k::{quantize_row_q8_k, BlockQ8K, SumOrder, QK_K};
use bitnet_kernels::q8_k64::quantize_row_q8_k64;
use bitnet_kernels::tq1_0::{gemm_tq1_0_q8_k, BlockTQ1_0};
use bitnet_kernels::tq2_0::{gemm_tq2_0_q8_k, BlockTQ2_0};
use bitnet_kernels::Isa;
use bytemuck::Zeroable;
use half::f16;

const ROWS: usize = 6912;
const K: usize = 2560;
const PROMPT: usize = 128;
const RUNS: usize = 5;

/// Deterministic pseudo-random bytes (xorshift).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn floats(n: usize, seed: u64) -> Vec<f32> {
    bytes(n, seed)
        .into_iter()
        .map(|b| f32::from(b as i8) / 32.0)
        .collect()
}

/// Best wall time of `RUNS` calls.
fn best(mut f: impl FnMut()) -> Duration {
    f();
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn report(name: &str, weight_bytes: usize, decode: Duration, prefill: Duration) {
    let gbs = weight_bytes as f64 / decode.as_secs_f64() / 1e9;
    let gmacs = (ROWS * K * PROMPT) as f64 / prefill.as_secs_f64() / 1e9;
    println!(
        "{name:<12} decode {:>7.2} ms ({gbs:>5.1} GB/s of weights)   prefill {PROMPT} tokens {:>8.2} ms ({gmacs:>6.1} GMAC/s)",
        decode.as_secs_f64() * 1e3,
        prefill.as_secs_f64() * 1e3,
    );
}

fn q8k_rows(n_tok: usize) -> Vec<BlockQ8K> {
    let x = floats(n_tok * K, 7);
    let mut y = vec![BlockQ8K::zeroed(); n_tok * K / QK_K];
    quantize_row_q8_k(&x, &mut y).expect("whole blocks");
    y
}

fn main() {
    println!(
        "kernels on {:?}, one thread, {ROWS} × {K} weights",
        Isa::best()
    );
    let mut out = vec![0f32; ROWS * PROMPT];
    let mut sums = vec![0i32; ROWS * PROMPT];

    // I2_S × I8_S.
    let w: Vec<BlockI2s> = bytemuck::cast_slice(&bytes(ROWS * K / 4, 1)).to_vec();
    let q: Vec<i8> = bytemuck::cast_slice(&bytes(PROMPT * K, 2)).to_vec();
    let d = best(|| gemm_i2_s_i8_s(&w, &q[..K], 1, &mut sums[..ROWS]).expect("shape"));
    let p = best(|| gemm_i2_s_i8_s(&w, &q, PROMPT, &mut sums).expect("shape"));
    report("I2_S", w.len() * std::mem::size_of::<BlockI2s>(), d, p);
    assert_eq!(K % QK_I2_S, 0);

    // TQ1_0 / TQ2_0 × Q8_K.
    let (y1, yp) = (q8k_rows(1), q8k_rows(PROMPT));
    let nb = ROWS * K / QK_K;
    let t1: Vec<BlockTQ1_0> = bytemuck::cast_slice(&bytes(nb * 54, 3)).to_vec();
    let t1: Vec<BlockTQ1_0> = t1
        .into_iter()
        .map(|mut b| {
            b.d = f16::from_f32(0.5);
            b
        })
        .collect();
    let d =
        best(|| gemm_tq1_0_q8_k(SumOrder::GgmlAvx2, &t1, &y1, 1, &mut out[..ROWS]).expect("shape"));
    let p =
        best(|| gemm_tq1_0_q8_k(SumOrder::GgmlAvx2, &t1, &yp, PROMPT, &mut out).expect("shape"));
    report("TQ1_0", t1.len() * std::mem::size_of::<BlockTQ1_0>(), d, p);
    let t2: Vec<BlockTQ2_0> = (0..nb)
        .map(|i| {
            let mut b = BlockTQ2_0::zeroed();
            b.qs.copy_from_slice(&bytes(64, i as u64 + 11));
            b.d = f16::from_f32(0.5);
            b
        })
        .collect();
    let d =
        best(|| gemm_tq2_0_q8_k(SumOrder::GgmlAvx2, &t2, &y1, 1, &mut out[..ROWS]).expect("shape"));
    let p =
        best(|| gemm_tq2_0_q8_k(SumOrder::GgmlAvx2, &t2, &yp, PROMPT, &mut out).expect("shape"));
    report("TQ2_0", t2.len() * std::mem::size_of::<BlockTQ2_0>(), d, p);

    // IQ2_BN × Q8_K64.
    let row_size = iq2_bn_row_size(K).expect("K is whole blocks");
    let mut wb = bytes(ROWS * row_size, 5);
    for r in 0..ROWS {
        wb[r * row_size..r * row_size + 4].copy_from_slice(&1.0f32.to_le_bytes());
    }
    let x = floats(PROMPT * K, 6);
    let mut qs = vec![0i8; PROMPT * K];
    let heads: Vec<_> = x
        .chunks_exact(K)
        .zip(qs.chunks_exact_mut(K))
        .map(|(xr, qr)| quantize_row_q8_k64(xr, qr).expect("row"))
        .collect();
    let d = best(|| {
        gemm_iq2_bn_q8_k64(&wb, RowMajor, &qs[..K], &heads[..1], &mut out[..ROWS]).expect("shape")
    });
    let p = best(|| gemm_iq2_bn_q8_k64(&wb, RowMajor, &qs, &heads, &mut out).expect("shape"));
    report("IQ2_BN", wb.len(), d, p);
    // The tiled layout the engine loads IQ2_BN into where it runs faster.
    let mut tiled = vec![0u8; wb.len()];
    iq2_bn_tile_rows(&wb, K, &mut tiled).expect("whole rows");
    let d = best(|| {
        gemm_iq2_bn_q8_k64(&tiled, Tiled, &qs[..K], &heads[..1], &mut out[..ROWS]).expect("shape")
    });
    let p = best(|| gemm_iq2_bn_q8_k64(&tiled, Tiled, &qs, &heads, &mut out).expect("shape"));
    report("IQ2_BN tiled", tiled.len(), d, p);

    // F16 head rows × F16-rounded activations held as f32, the engine's output-head path
    // (decode only: the head runs for one token).
    let wf: Vec<f16> = floats(ROWS * K, 8).into_iter().map(f16::from_f32).collect();
    let mut af = vec![f16::ZERO; K];
    f32_to_f16_row(&floats(K, 9), &mut af).expect("same length");
    let aw: Vec<f32> = af.iter().map(|h| h.to_f32()).collect();
    let d = best(|| {
        for (r, o) in wf.chunks_exact(K).zip(out.iter_mut()) {
            *o = vec_dot_f16_f32(SumOrder::GgmlAvx2, r, &aw).expect("same length");
        }
        black_box(&out);
    });
    println!(
        "{:<8} decode {:>7.2} ms ({:>5.1} GB/s of weights)",
        "F16",
        d.as_secs_f64() * 1e3,
        (wf.len() * 2) as f64 / d.as_secs_f64() / 1e9
    );
}
