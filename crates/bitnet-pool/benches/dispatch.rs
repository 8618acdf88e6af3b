//! Thread-pool dispatch overhead (`make bench`, or `cargo bench -p bitnet-pool`): one
//! parallel region the way the engine issues them (a matmul's rows split into 16 tasks),
//! each task a fixed 2 µs of work (a decode-sized matmul slice), back to back and after
//! some serial work (the norms and quantizers between two matmuls, during which idle
//! workers may go to sleep), on this crate's pool and on rayon's. Overhead = region time
//! − ideal (total work ÷ threads). A decode step of the 2B-4T model issues about
//! 30 layers × 8 regions + the head. Printed, never asserted.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bitnet_pool::Pool;
use rayon::prelude::*;

/// Parallel regions per decoded token on the 2B-4T shape: 7 matmuls and attention per
/// layer over 30 layers, plus the output head.
const REGIONS_PER_TOKEN: usize = 30 * 8 + 1;
const ITERS: usize = 5_000;
/// Tasks per region and the work in each.
const TASKS: usize = 16;
const TASK: Duration = Duration::from_micros(2);

/// Busy-waits `d` (a stand-in for real work).
fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Mean overhead per region of `region` after `gap` of serial work each time.
fn overhead(threads: usize, gap: Duration, mut region: impl FnMut(&mut [f32])) -> Duration {
    let mut out = vec![0f32; 2560];
    let mut total = Duration::ZERO;
    for _ in 0..ITERS {
        spin(gap);
        let t = Instant::now();
        region(&mut out);
        total += t.elapsed();
    }
    let ideal = TASK * TASKS as u32 / threads as u32;
    (total / ITERS as u32).saturating_sub(ideal)
}

fn print(name: &str, threads: usize, gap: Duration, per: Duration) {
    println!(
        "{name:<6} {threads} thread(s), {:>2} µs serial work between regions: {:>6.2} µs overhead per region, ≈ {:>5.2} ms per decoded token",
        gap.as_micros(),
        per.as_secs_f64() * 1e6,
        per.as_secs_f64() * 1e3 * REGIONS_PER_TOKEN as f64
    );
}

fn main() {
    for threads in [1, 2] {
        let ours = Pool::new(threads).expect("thread pool");
        let rayon = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        for gap_us in [0u64, 5, 20] {
            let gap = Duration::from_micros(gap_us);
            let per = overhead(threads, gap, |out| {
                ours.for_each(out.chunks_mut(2560 / TASKS), |c| {
                    spin(TASK);
                    black_box(c);
                })
            });
            print("pool", threads, gap, per);
            let per = rayon.install(|| {
                overhead(threads, gap, |out| {
                    out.par_chunks_mut(2560 / TASKS).for_each(|c| {
                        spin(TASK);
                        black_box(c);
                    })
                })
            });
            print("rayon", threads, gap, per);
        }
    }
}
