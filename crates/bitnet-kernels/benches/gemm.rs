//! Kernel throughput (`make bench`, or `cargo bench -p bitnet-kernels`): every weight
//! format of the kernels' table ([`FORMATS`]) multiplying a 2B-4T FFN-shaped matrix
//! (6912 rows × 2560) by one token (decode: weight bytes streamed per second) and by a
//! 128-token prompt (prefill: multiply-adds per second), each of its products (ggml's,
//! ik_llama.cpp's) in the file layout and, where it has one, its tiled layout. One thread;
//! the best of several runs (the least disturbed by the rest of the machine). Printed, never
//! asserted.

use std::time::{Duration, Instant};

use bitnet_kernels::format::{
    ActBuffers, AlignedBytes, GemmFn, OneThread, Product, WeightFormat, FORMATS,
};
use bitnet_kernels::gemm::RowOrder;
use bitnet_kernels::Isa;

const ROWS: usize = 6912;
const K: usize = 2560;
const PROMPT: usize = 128;
const RUNS: usize = 5;

/// Deterministic values in about [-2, 2] (xorshift).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 4001) as f32 / 1000.0 - 2.0
        })
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

/// Times one product of `f`'s weights `w` (in `order`) for 1 and [`PROMPT`] tokens.
fn measure(label: &str, f: &WeightFormat, w: &AlignedBytes, order: RowOrder, ik: bool) {
    let (act, gemm): (_, GemmFn) = f.product(ik);
    let x = values(PROMPT * K, 7);
    let mut acts = ActBuffers::new(&[act], PROMPT, K);
    let mut out = vec![0f32; ROWS * PROMPT];
    let mut time = |n_tok: usize| {
        acts.quantize(act, &x, n_tok, K, false, &OneThread)
            .expect("buffers sized for the prompt");
        let p = Product {
            w: w.as_bytes(),
            order,
            k: K,
            n: ROWS,
            acts: acts.view(act, &x, n_tok, K),
            n_tok,
        };
        let out = &mut out[..ROWS * n_tok];
        best(|| gemm(Isa::best(), &p, 0..ROWS, out).expect("checked shapes"))
    };
    let (decode, prefill) = (time(1), time(PROMPT));
    let gbs = w.as_bytes().len() as f64 / decode.as_secs_f64() / 1e9;
    let gmacs = (ROWS * K * PROMPT) as f64 / prefill.as_secs_f64() / 1e9;
    println!(
        "{label:<16} decode {:>7.2} ms ({gbs:>5.1} GB/s of weights)   prefill {PROMPT} tokens {:>8.2} ms ({gmacs:>6.1} GMAC/s)",
        decode.as_secs_f64() * 1e3,
        prefill.as_secs_f64() * 1e3,
    );
}

fn main() {
    println!(
        "kernels on {:?}, one thread, {ROWS} × {K} weights",
        Isa::best()
    );
    let x = values(ROWS * K, 3);
    for f in &FORMATS {
        let name = format!("{:?}", f.ggml_type);
        let mut w = AlignedBytes::zeroed(f.tensor_bytes(K, ROWS).expect("fits"));
        (f.quantize)(&x, K, w.as_bytes_mut()).expect("whole rows");
        let products = if f.ik.is_some() {
            &[false, true][..]
        } else {
            &[false]
        };
        for &ik in products {
            let label = if ik {
                format!("{name} ik")
            } else {
                name.clone()
            };
            measure(&label, f, &w, RowOrder::RowMajor, ik);
            // The tiled layout, where this product has one.
            if let Some(t) = f.tiling.filter(|_| ik == f.ik.is_some()) {
                let mut tiled = AlignedBytes::zeroed(w.as_bytes().len());
                (t.tile)(w.as_bytes(), K, tiled.as_bytes_mut()).expect("whole rows");
                let used = if (t.pays_off)(K, ik) {
                    ""
                } else {
                    " (unused here)"
                };
                measure(
                    &format!("{label} tiled{used}"),
                    f,
                    &tiled,
                    RowOrder::Tiled,
                    ik,
                );
            }
        }
    }
}
