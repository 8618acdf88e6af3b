//! A streaming read-bandwidth probe: the bound a decode step, which reads every weight
//! once, cannot beat.

use std::hint::black_box;
use std::time::Instant;

use bitnet_kernels::format::AlignedBytes;

/// Size of the probe's buffer: far larger than any cache, and about the size of the
/// weights a 2B-4T decode step reads.
pub const PROBE_BYTES: usize = 1 << 30;
/// Timed passes per thread count; the best one is reported.
pub const PROBE_REPEATS: usize = 5;

/// A buffer of `bytes` (rounded down to whole `u64`s) with every page written, so the
/// probe measures reads of resident memory rather than page faults. It is allocated as the
/// engine's weight copies are ([`AlignedBytes`]: huge pages where the kernel grants them),
/// so the limit is for the same kind of memory the weights stream from.
pub fn touched_buffer(bytes: usize) -> AlignedBytes {
    let mut buf = AlignedBytes::zeroed(bytes / 8 * 8);
    for (i, w) in bytemuck::cast_slice_mut::<u8, u64>(buf.as_bytes_mut())
        .iter_mut()
        .enumerate()
    {
        *w = i as u64;
    }
    buf
}

/// The words of a [`touched_buffer`] (its storage is 8-byte aligned and whole words).
pub fn words(buf: &AlignedBytes) -> &[u64] {
    bytemuck::cast_slice(buf.as_bytes())
}

/// Wrapping sum of `v` over eight independent lanes, so the loop is bound by loads rather
/// than by one addition chain (the compiler vectorises it).
pub fn sum_words(v: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(x);
        }
    }
    let tail_sum = tail.iter().fold(0u64, |s, &x| s.wrapping_add(x));
    acc.iter().fold(tail_sum, |s, &x| s.wrapping_add(x))
}

/// Reads all of `buf` once with `threads` threads (contiguous slices) and returns the
/// seconds taken.
fn one_pass(buf: &[u64], threads: usize) -> f64 {
    let per = buf.len().div_ceil(threads.max(1)).max(1);
    let t = Instant::now();
    let total = std::thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks(per)
            .map(|part| s.spawn(move || sum_words(black_box(part))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .fold(0u64, u64::wrapping_add)
    });
    black_box(total);
    t.elapsed().as_secs_f64()
}

/// Best read bandwidth over `repeats` passes of `buf` with `threads` threads, in GB/s
/// (10^9 bytes per second).
pub fn read_bandwidth(buf: &[u64], threads: usize, repeats: usize) -> f64 {
    let bytes = std::mem::size_of_val(buf) as f64;
    (0..repeats.max(1))
        .map(|_| one_pass(buf, threads))
        .map(|secs| bytes / secs.max(1e-9) / 1e9)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use bitnet_kernels::format::HUGE_PAGE_BYTES;

    use super::*;

    #[test]
    fn the_sum_covers_every_word_including_the_tail() {
        let v: Vec<u64> = (1..=21).collect();
        assert_eq!(sum_words(&v), 231);
        assert_eq!(sum_words(&[u64::MAX, 2]), 1);
        assert_eq!(sum_words(&[]), 0);
    }

    #[test]
    fn a_touched_buffer_holds_its_indices() {
        let b = touched_buffer(8 * 10 + 5);
        assert_eq!(words(&b).len(), 10);
        assert_eq!(sum_words(words(&b)), 45);
    }

    #[test]
    fn the_probe_reports_a_positive_finite_rate() {
        // Large enough to be a mapping of its own (huge pages) rather than a heap block.
        let bytes = 2 * HUGE_PAGE_BYTES;
        let b = touched_buffer(bytes);
        assert_eq!(sum_words(words(&b)), (0..bytes as u64 / 8).sum::<u64>());
        for threads in [1, 2, 3] {
            let gb = read_bandwidth(words(&b), threads, 2);
            assert!(gb.is_finite() && gb > 0.0, "{threads} threads: {gb}");
        }
    }
}
