//! bitnet-rs as a bitnet-sys protocol worker, for the throughput bench:
//! `bitnet-bench-engine --numerics llama.cpp|bitnet.cpp|ik_llama.cpp` serves requests on
//! stdin/stdout until shut down.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use bitnet_bench::engine::EngineBackend;
use bitnet_bench::plan::numerics_from_name;

const USAGE: &str = "usage: bitnet-bench-engine --numerics llama.cpp|bitnet.cpp|ik_llama.cpp";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numerics = match args.as_slice() {
        [flag, name] if flag == "--numerics" => numerics_from_name(name),
        _ => None,
    };
    let Some(numerics) = numerics else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    bitnet_sys::server::serve(EngineBackend::new(numerics))
}
