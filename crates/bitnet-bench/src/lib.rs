//! Throughput of bitnet-rs next to the C++ references (`make bench`).
//!
//! Every engine runs in its own worker process and is timed there by the same loop
//! ([`bitnet_sys::server::time_bench`]): the references in their runners (`refs/`), our
//! engine in `bitnet-bench-engine` ([`engine::EngineBackend`]). The harness
//! (`benches/throughput.rs`) spawns one worker per engine that loads a format, interleaves
//! their runs, and reports medians next to a memory-bandwidth bound on decode
//! ([`bandwidth`], [`model::WeightBytes`]) and a peak-RSS budget ([`memory`]).
//!
//! This library holds the parts that are plain computation (and are unit-tested here):
//! settings, the engine × format plan, statistics, byte counts, the bandwidth probe, the
//! JSON rows and the table.

#![forbid(unsafe_code)]

pub mod bandwidth;
pub mod engine;
pub mod memory;
pub mod model;
pub mod plan;
pub mod report;
pub mod stats;

use std::path::PathBuf;

/// What can go wrong in the benchmark's own computations (the harness wraps worker and
/// fixture errors with `anyhow`).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A `BITNET_BENCH_*` variable that does not parse.
    #[error("{var}={value:?}: {reason}")]
    BadEnv {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Gguf(#[from] bitnet_gguf::GgufError),
    /// The model has no tensor of this name.
    #[error("the model has no tensor {name}")]
    MissingTensor { name: &'static str },
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `/proc/<pid>/status` without a parsable `VmHWM` line.
    #[error("no VmHWM line in /proc/{pid}/status")]
    NoPeakRss { pid: u32 },
}
