//! Reads which version of each reference's -sys crate this checkout pins (the runners'
//! `refs/<dir>/Cargo.lock`, built with `--locked`) into `BITNET_REF_PIN_*`, for
//! `Reference::pinned_build`. A runner reports the pin it was built with; the client refuses
//! one whose pin is not its own (a runner from other sources).

use std::path::Path;

/// (environment variable, runner folder under `refs/`, -sys crate).
const PINS: [(&str, &str, &str); 3] = [
    ("BITNET_REF_PIN_LLAMA_CPP", "llama-cpp", "llama-cpp-sys-2"),
    ("BITNET_REF_PIN_IK_LLAMA", "ik-llama", "ik-llama-cpp-sys"),
    ("BITNET_REF_PIN_BITNET_CPP", "bitnet-cpp", "bitnet-cpp-sys"),
];

fn main() {
    let refs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../refs");
    for (var, dir, krate) in PINS {
        let lock = refs.join(dir).join("Cargo.lock");
        println!("cargo:rerun-if-changed={}", lock.display());
        let pin = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|text| locked(&text, krate))
            .map(|(version, checksum)| format!("{krate} {version} (sha256 {checksum})"))
            .unwrap_or_else(|| format!("{krate} (no pin: refs/{dir}/Cargo.lock unreadable)"));
        println!("cargo:rustc-env={var}={pin}");
    }
}

/// The version and the first 12 hex digits of the checksum of package `name` in a
/// Cargo.lock.
fn locked(lock: &str, name: &str) -> Option<(String, String)> {
    let quoted = |line: &str, key: &str| {
        line.strip_prefix(key)?
            .trim()
            .strip_prefix("= \"")?
            .strip_suffix('"')
            .map(str::to_owned)
    };
    lock.split("[[package]]").find_map(|block| {
        let mut lines = block.lines().map(str::trim);
        if lines.clone().find_map(|l| quoted(l, "name"))? != name {
            return None;
        }
        let version = lines.clone().find_map(|l| quoted(l, "version"))?;
        let checksum = lines.find_map(|l| quoted(l, "checksum"))?;
        Some((version, checksum.chars().take(12).collect()))
    })
}
