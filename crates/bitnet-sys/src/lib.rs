//! The C++ reference implementations behind a safe, process-isolated API.
//!
//! Upstream llama.cpp, ik_llama.cpp and bitnet.cpp each export the same ggml symbols (and
//! two of their crates declare `links = "llama"`), so they can't share one binary. Each runs
//! in its own runner process (`refs/<reference>/`, built by `make refs`) that serves the
//! [`protocol`] over its stdin/stdout. A C++ abort, a rejected model or a hang becomes a
//! [`RefError`] carrying the reference's last log lines.
//!
//! This crate has no C++ dependency itself: [`client`] spawns runners, [`server`] is the
//! loop each runner's `main` calls. Any other program serving the protocol can be spawned
//! the same way ([`RefRunner::spawn_program`]): the benchmark runs our own engine so, and
//! every runner answers its `Bench` request with the same timing loop
//! ([`server::time_bench`]).

pub mod client;
pub mod protocol;
pub mod server;

pub use client::{
    argmax, Generation, Peer, RefBuild, RefError, RefRunner, RefSession, Reference, SessionConfig,
    SessionSettings,
};
pub use protocol::{CapturedTensor, EvalOutput, KvType, LoadParams, ModelInfo, Timings};
