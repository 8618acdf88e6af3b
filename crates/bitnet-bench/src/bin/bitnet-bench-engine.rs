//! bitnet-rs as a bitnet-sys protocol worker, for the throughput bench:
//! `bitnet-bench-engine --numerics llama.cpp|bitnet.cpp|ik_llama.cpp [--head q8_0]` serves
//! requests on stdin/stdout until shut down (`--head q8_0`: the fast mode's quantized head).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use bitnet_bench::engine::EngineBackend;
use bitnet_bench::plan::numerics_from_name;

const USAGE: &str =
    "usage: bitnet-bench-engine --numerics llama.cpp|bitnet.cpp|ik_llama.cpp [--head q8_0]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [flag, name] if flag == "--numerics" => numerics_from_name(name).map(|n| (n, false)),
        [flag, name, head, q8] if flag == "--numerics" && head == "--head" && q8 == "q8_0" => {
            numerics_from_name(name).map(|n| (n, true))
        }
        _ => None,
    };
    let Some((numerics, quantized_head)) = parsed else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    bitnet_sys::server::serve(EngineBackend::new(numerics, quantized_head))
}
