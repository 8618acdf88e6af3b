//! The runner side: a reference implements [`Backend`] and calls [`serve`] from `main`.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::FromRawFd;
use std::process::ExitCode;
use std::time::Instant;

use crate::protocol::{
    read_frame, write_frame, EvalOutput, LoadParams, ModelInfo, Request, Response, Timings,
    PROTOCOL_VERSION,
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
    /// The `Bench` request: implement [`BenchSteps`] and answer with [`time_bench`], so
    /// every runner is timed by the same loop.
    fn bench(&mut self, prompt: &[i32], n_decode: u32) -> Result<Timings, String> {
        let _ = (prompt, n_decode);
        Err(unsupported("benchmarking"))
    }
}

/// The three operations a `Bench` request times, over a runner's own engine.
pub trait BenchSteps {
    /// Empties the KV cache.
    fn clear(&mut self) -> Result<(), String>;
    /// Evaluates `prompt` at positions `0..` in batches of the session's `n_batch`, asking
    /// for the logits of the last position only, and returns them (`n_vocab` floats).
    fn prefill(&mut self, prompt: &[i32]) -> Result<&[f32], String>;
    /// Evaluates one token at the next position and returns its logits.
    fn step(&mut self, token: i32) -> Result<&[f32], String>;
}

/// Greedy argmax of a logits row as a token id.
fn greedy(logits: &[f32]) -> Result<i32, String> {
    let i = crate::argmax(logits).ok_or("empty logits row")?;
    i32::try_from(i).map_err(|_| format!("token index {i} does not fit an id"))
}

fn nanos(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Answers a `Bench` request: clears the cache, times the prefill of `prompt`, then times
/// `n_decode` greedy steps as one span (argmax of the last logits, then that token
/// evaluated alone). Returns the ids the steps evaluated. Each runner calls this from its
/// own process over its own [`BenchSteps`], so every engine is measured the same way.
pub fn time_bench(
    steps: &mut impl BenchSteps,
    prompt: &[i32],
    n_decode: u32,
) -> Result<Timings, String> {
    if prompt.is_empty() {
        return Err("bench of an empty prompt".into());
    }
    steps.clear()?;
    let t = Instant::now();
    let logits = steps.prefill(prompt)?;
    let prefill_ns = nanos(t);
    let mut tokens = Vec::with_capacity(n_decode as usize);
    let t = Instant::now();
    let mut next = greedy(logits)?;
    for i in 0..n_decode {
        tokens.push(next);
        let logits = steps.step(next)?;
        if i + 1 < n_decode {
            next = greedy(logits)?;
        }
    }
    let decode_ns = nanos(t);
    Ok(Timings {
        prefill_ns,
        decode_ns,
        tokens,
    })
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
        Request::Bench { prompt, n_decode } => {
            backend.bench(&prompt, n_decode).map(Response::Timings)
        }
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

    /// A toy engine over a 5-token vocabulary whose next token after `t` is `(2t + 1) % 5`;
    /// it records every call.
    #[derive(Default)]
    struct Toy {
        calls: Vec<String>,
        logits: Vec<f32>,
    }

    impl Toy {
        fn after(&mut self, t: i32) -> &[f32] {
            self.logits = vec![0.0; 5];
            self.logits[((2 * t + 1) % 5) as usize] = 1.0;
            &self.logits
        }
    }

    impl BenchSteps for Toy {
        fn clear(&mut self) -> Result<(), String> {
            self.calls.push("clear".into());
            Ok(())
        }
        fn prefill(&mut self, prompt: &[i32]) -> Result<&[f32], String> {
            self.calls.push(format!("prefill {prompt:?}"));
            Ok(self.after(*prompt.last().unwrap()))
        }
        fn step(&mut self, token: i32) -> Result<&[f32], String> {
            self.calls.push(format!("step {token}"));
            Ok(self.after(token))
        }
    }

    #[test]
    fn time_bench_clears_prefills_once_and_decodes_each_greedy_token() {
        let mut toy = Toy::default();
        let t = time_bench(&mut toy, &[4, 0], 3).unwrap();
        // After 0 comes 1, then 3, then 2 (7 % 5).
        assert_eq!(t.tokens, vec![1, 3, 2]);
        assert_eq!(
            toy.calls,
            ["clear", "prefill [4, 0]", "step 1", "step 3", "step 2"]
        );

        let mut toy = Toy::default();
        let t = time_bench(&mut toy, &[2], 0).unwrap();
        assert!(t.tokens.is_empty());
        assert_eq!(toy.calls, ["clear", "prefill [2]"]);

        assert!(time_bench(&mut Toy::default(), &[], 4).is_err());
    }

    #[test]
    fn a_backend_without_bench_refuses_it_by_name() {
        let req = Request::Bench {
            prompt: vec![1],
            n_decode: 1,
        };
        match handle(&mut Refusing, req) {
            Response::Error(m) => assert!(m.contains("benchmarking"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
