//! Peak resident memory of a worker and the budget it is held to.

use std::path::PathBuf;

use crate::BenchError;

/// Headroom over file size plus KV cache that a worker's peak RSS may use (scratch,
/// logits, code): 10%.
pub const RSS_HEADROOM_PERCENT: u64 = 10;

/// Bytes of a KV cache: K and V, each `n_layer × n_ctx × n_embd_kv` elements of
/// `elem_bytes` (2 for F16).
pub fn kv_cache_bytes(n_layer: u64, n_ctx: u64, n_embd_kv: u64, elem_bytes: u64) -> u64 {
    2 * n_layer * n_ctx * n_embd_kv * elem_bytes
}

/// What a worker should need at most: the mapped model file (every weight is read, so all
/// of it becomes resident) plus its KV cache, plus [`RSS_HEADROOM_PERCENT`].
pub fn rss_budget(file_bytes: u64, kv_bytes: u64) -> u64 {
    (file_bytes + kv_bytes) * (100 + RSS_HEADROOM_PERCENT) / 100
}

/// The `VmHWM` (peak resident set) of a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut fields = line["VmHWM:".len()..].split_whitespace();
    let kib: u64 = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(kib * 1024)
}

/// Peak resident set of process `pid` so far (Linux `/proc/<pid>/status`, `VmHWM`).
pub fn peak_rss(pid: u32) -> Result<u64, BenchError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status =
        std::fs::read_to_string(&path).map_err(|source| BenchError::Io { path, source })?;
    parse_vm_hwm(&status).ok_or(BenchError::NoPeakRss { pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_cache_of_the_2b4t_shape_at_512_positions() {
        // 30 layers, 5 KV heads × 128, F16.
        assert_eq!(kv_cache_bytes(30, 512, 640, 2), 39_321_600);
        assert_eq!(kv_cache_bytes(1, 1, 1, 4), 8);
    }

    #[test]
    fn the_budget_is_file_plus_kv_plus_ten_percent() {
        assert_eq!(rss_budget(1_000, 0), 1_100);
        assert_eq!(rss_budget(1_187_287_808, 39_321_600), 1_349_270_348);
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tbitnet-ref-llama\nVmPeak:\t 2000000 kB\nVmHWM:\t 1302528 kB\n\
                      VmRSS:\t  1200000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(1_302_528 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS:\t 5 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t 5 MB\n"), None);
    }

    #[test]
    fn our_own_peak_rss_is_readable() {
        let rss = peak_rss(std::process::id()).unwrap();
        assert!(rss > 100 * 1024, "{rss}");
    }
}
