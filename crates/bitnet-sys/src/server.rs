//! The runner side: a reference implements [`Backend`] and calls [`serve`] from `main`.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::FromRawFd;
use std::process::ExitCode;

use crate::protocol::{
    read_frame, write_frame, EvalOutput, LoadParams, ModelInfo, Request, Response, PROTOCOL_VERSION,
};

/// What a reference runner can do. Every method reports a failure as a message; methods a
/// reference cannot serve keep the default, which says so.
pub trait Backend {
    /// Name, crate version and upstream commit of the reference.
    fn version(&self) -> String;
    /// Loads a model and creates its context (replacing any previous one).
    fn load(&mut self, params: &LoadParams) -> Result<ModelInfo, String>;
    fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<i32>, String>;
    /// Detokenized bytes (a token boundary may split a UTF-8 sequence).
    fn detokenize(&mut self, tokens: &[i32]) -> Result<Vec<u8>, String>;
    /// Evaluates `tokens` at positions `n_past..` after dropping cached positions `>= n_past`.
    fn eval(&mut self, tokens: &[i32], n_past: u32) -> Result<EvalOutput, String>;
    fn reset(&mut self) -> Result<(), String>;
    fn quantize_ref(&mut self, ty: u32, n_per_row: u64, x: &[f32]) -> Result<Vec<u8>, String> {
        let _ = (ty, n_per_row, x);
        Err(unsupported("reference quantization"))
    }
    fn quantize_cpu(&mut self, ty: u32, x: &[f32]) -> Result<Vec<u8>, String> {
        let _ = (ty, x);
        Err(unsupported("CPU activation quantization"))
    }
    fn dequantize(&mut self, ty: u32, n: u64, bytes: &[u8]) -> Result<Vec<f32>, String> {
        let _ = (ty, n, bytes);
        Err(unsupported("dequantization"))
    }
    fn vec_dot(&mut self, ty: u32, n: u64, x: &[u8], y: &[u8]) -> Result<f32, String> {
        let _ = (ty, n, x, y);
        Err(unsupported("vec_dot"))
    }
    fn convert_model(&mut self, input: &str, output: &str, ftype: u32) -> Result<(), String> {
        let _ = (input, output, ftype);
        Err(unsupported("model conversion"))
    }
}

fn unsupported(what: &str) -> String {
    format!("{what} is not available in this reference runner")
}

fn handle(backend: &mut impl Backend, req: Request) -> Response {
    let r = match req {
        Request::Version { protocol } if protocol != PROTOCOL_VERSION => Err(format!(
            "this runner speaks protocol {PROTOCOL_VERSION} but the client speaks {protocol}: \
             rebuild the runners with `make refs`"
        )),
        Request::Version { .. } => Ok(Response::Version(backend.version())),
        Request::Load(p) => backend.load(&p).map(Response::Loaded),
        Request::Tokenize {
            text,
            add_special,
            parse_special,
        } => backend
            .tokenize(&text, add_special, parse_special)
            .map(Response::Tokens),
        Request::Detokenize { tokens } => backend.detokenize(&tokens).map(Response::Bytes),
        Request::Eval { tokens, n_past } => backend.eval(&tokens, n_past).map(Response::Evaluated),
        Request::Reset => backend.reset().map(|()| Response::Done),
        Request::QuantizeRef { ty, n_per_row, x } => {
            backend.quantize_ref(ty, n_per_row, &x).map(Response::Bytes)
        }
        Request::QuantizeCpu { ty, x } => backend.quantize_cpu(ty, &x).map(Response::Bytes),
        Request::Dequantize { ty, n, bytes } => {
            backend.dequantize(ty, n, &bytes).map(Response::Floats)
        }
        Request::VecDot { ty, n, x, y } => backend.vec_dot(ty, n, &x, &y).map(Response::Scalar),
        Request::ConvertModel {
            input,
            output,
            ftype,
        } => backend
            .convert_model(&input, &output, ftype)
            .map(|()| Response::Done),
        Request::Shutdown => Ok(Response::Done),
    };
    r.unwrap_or_else(Response::Error)
}

/// Moves the process's stdout to a private descriptor for the protocol and points fd 1 at
/// stderr, so anything the C++ library prints can't corrupt a frame.
fn take_protocol_stdout() -> std::io::Result<File> {
    // SAFETY: dup on fd 1, which every process has open; the result is checked below.
    let fd = unsafe { libc::dup(1) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: dup2 of two descriptors this process owns (2 is stderr); checked below.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor from dup above, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Serves requests from stdin until `Shutdown` or end of input.
pub fn serve(mut backend: impl Backend) -> ExitCode {
    let out = match take_protocol_stdout() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("runner: cannot set up the protocol pipe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = BufWriter::new(out);
    let mut input = BufReader::new(std::io::stdin().lock());
    loop {
        let payload = match read_frame(&mut input) {
            Ok(Some(p)) => p,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("runner: reading a request failed: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (resp, stop) = match Request::decode(&payload) {
            Ok(req) => {
                let stop = req == Request::Shutdown;
                (handle(&mut backend, req), stop)
            }
            Err(e) => (Response::Error(e.to_string()), false),
        };
        if let Err(e) = write_frame(&mut out, &resp.encode()) {
            eprintln!("runner: writing a response failed: {e}");
            return ExitCode::FAILURE;
        }
        if stop {
            return ExitCode::SUCCESS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose every call fails: only the handshake is under test.
    struct Refusing;

    impl Backend for Refusing {
        fn version(&self) -> String {
            "test runner".into()
        }
        fn load(&mut self, _: &LoadParams) -> Result<ModelInfo, String> {
            Err("no".into())
        }
        fn tokenize(&mut self, _: &str, _: bool, _: bool) -> Result<Vec<i32>, String> {
            Err("no".into())
        }
        fn detokenize(&mut self, _: &[i32]) -> Result<Vec<u8>, String> {
            Err("no".into())
        }
        fn eval(&mut self, _: &[i32], _: u32) -> Result<EvalOutput, String> {
            Err("no".into())
        }
        fn reset(&mut self) -> Result<(), String> {
            Err("no".into())
        }
    }

    #[test]
    fn the_handshake_refuses_another_protocol_version() {
        let ok = handle(
            &mut Refusing,
            Request::Version {
                protocol: PROTOCOL_VERSION,
            },
        );
        assert_eq!(ok, Response::Version("test runner".into()));
        match handle(&mut Refusing, Request::Version { protocol: 1 }) {
            Response::Error(m) => assert!(m.contains("make refs"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
