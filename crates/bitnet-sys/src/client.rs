//! The client side: spawn a reference runner (or another program serving the protocol,
//! such as the benchmark's engine worker) and talk to it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bitnet_gguf::GgmlType;

use crate::protocol::{
    read_frame, write_frame, EvalOutput, KvType, LoadParams, ModelInfo, Request, Response, Timings,
    PROTOCOL_VERSION,
};

/// How many of a runner's last stderr lines an error carries.
const STDERR_TAIL_LINES: usize = 40;
/// Default per-request timeout; `BITNET_REF_TIMEOUT_SECS` overrides it.
const DEFAULT_TIMEOUT_SECS: u64 = 900;

/// One of the C++ reference implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// Upstream llama.cpp (crate `llama-cpp-sys-2`).
    LlamaCpp,
    /// ik_llama.cpp (crate `ik-llama-cpp-sys`).
    IkLlamaCpp,
    /// Microsoft bitnet.cpp (crate `bitnet-cpp-sys`).
    BitnetCpp,
}

impl Reference {
    /// Every reference.
    pub const ALL: [Reference; 3] = [
        Reference::LlamaCpp,
        Reference::IkLlamaCpp,
        Reference::BitnetCpp,
    ];

    /// Short name used in reports and case ids.
    pub fn name(self) -> &'static str {
        match self {
            Reference::LlamaCpp => "llama.cpp",
            Reference::IkLlamaCpp => "ik_llama.cpp",
            Reference::BitnetCpp => "bitnet.cpp",
        }
    }

    /// The runner binary's name (its crate lives in `refs/<dir>`).
    pub fn runner_name(self) -> &'static str {
        match self {
            Reference::LlamaCpp => "bitnet-ref-llama-cpp",
            Reference::IkLlamaCpp => "bitnet-ref-ik-llama",
            Reference::BitnetCpp => "bitnet-ref-bitnet-cpp",
        }
    }

    /// The -sys crate, version and checksum this checkout pins for the reference
    /// (`refs/<dir>/Cargo.lock`, read at build time). Each runner names its own pin in its
    /// version string, and [`RefRunner::spawn_at`] refuses a runner whose pin differs.
    pub fn pinned_build(self) -> &'static str {
        match self {
            Reference::LlamaCpp => env!("BITNET_REF_PIN_LLAMA_CPP"),
            Reference::IkLlamaCpp => env!("BITNET_REF_PIN_IK_LLAMA"),
            Reference::BitnetCpp => env!("BITNET_REF_PIN_BITNET_CPP"),
        }
    }

    /// Where the deterministic build's runner binary is expected
    /// ([`RefBuild::bin_dir`]).
    pub fn runner_path(self) -> PathBuf {
        self.runner_path_of(RefBuild::Deterministic)
    }

    /// Where `build`'s runner binary is expected.
    pub fn runner_path_of(self, build: RefBuild) -> PathBuf {
        build.bin_dir().join(self.runner_name())
    }
}

/// Whether a native build's stamp (the `flags` line of `/proc/cpuinfo` when it was built)
/// names another CPU than `cpuinfo` does. A machine without a `flags` line can't tell.
fn built_for_another_cpu(stamp: &str, cpuinfo: &str) -> bool {
    let here = cpuinfo.lines().find(|l| l.starts_with("flags"));
    here.is_some_and(|flags| flags != stamp.trim_end())
}

/// Which build of a reference serves a runner. Both are built from the same pinned -sys
/// crate (one Cargo.lock); they differ in the CMake options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefBuild {
    /// `make refs` into `target/refs`: the AVX2 family (no `-march=native`), OpenMP off,
    /// llamafile's sgemm off — the kernels whose order the exact axis reproduces.
    Deterministic,
    /// `make refs-defaults` into `target/refs-defaults`: the reference's own CMake
    /// defaults on this machine — native ISA, OpenMP, llamafile where it exists — as a user
    /// building it gets. The reference-defaults axis runs it.
    Defaults,
}

impl RefBuild {
    /// What a defaults-build runner appends to its version string (a deterministic one
    /// appends nothing, so the exact axis' goldens keep their fingerprint).
    pub const DEFAULTS_MARKER: &'static str = "build: CMake defaults (make refs-defaults)";

    /// The build whose version string this is.
    pub fn of_version(version: &str) -> RefBuild {
        if version.contains(RefBuild::DEFAULTS_MARKER) {
            RefBuild::Defaults
        } else {
            RefBuild::Deterministic
        }
    }

    /// Where its runners are expected: `$BITNET_REF_BIN_DIR` (deterministic) or
    /// `$BITNET_REF_DEFAULTS_BIN_DIR` (defaults), else the folder its make target builds
    /// into.
    pub fn bin_dir(self) -> PathBuf {
        let (var, dir) = match self {
            RefBuild::Deterministic => ("BITNET_REF_BIN_DIR", "refs"),
            RefBuild::Defaults => ("BITNET_REF_DEFAULTS_BIN_DIR", "refs-defaults"),
        };
        std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target")
                .join(dir)
                .join("release")
        })
    }

    /// The CPU a defaults build was made for: the `flags` line of `/proc/cpuinfo` that
    /// `make refs-defaults` writes next to its `release` folder. `None` for the
    /// deterministic build (its ISA is fixed) or when there is no stamp to compare.
    fn cpu_stamp(self, bin_dir: &Path) -> Option<PathBuf> {
        match self {
            RefBuild::Deterministic => None,
            RefBuild::Defaults => Some(bin_dir.parent()?.join("cpu-flags")),
        }
    }

    /// The make target that builds it.
    pub fn make_target(self) -> &'static str {
        match self {
            RefBuild::Deterministic => "make refs",
            RefBuild::Defaults => "make refs-defaults",
        }
    }

    /// The build options of `reference`'s runner, as reports name them
    /// (`refs/<dir>/.cargo/config.toml`, `toolchain.cmake`, `toolchain-defaults.cmake`).
    pub fn describe(self, reference: Reference) -> &'static str {
        match (self, reference) {
            (RefBuild::Deterministic, _) => {
                "build: AVX2 family (no -march=native), OpenMP off, llamafile sgemm off"
            }
            (RefBuild::Defaults, Reference::IkLlamaCpp) => {
                "build: CMake defaults (-march=native, OpenMP on, IQK matmuls and flash \
                 attention on; flash-attention kernels for quantized K/V pairs not compiled)"
            }
            (RefBuild::Defaults, _) => {
                "build: CMake defaults (-march=native, OpenMP on, llamafile sgemm on)"
            }
        }
    }
}

impl std::fmt::Display for RefBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefBuild::Deterministic => "deterministic build",
            RefBuild::Defaults => "defaults build",
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who serves a runner process: one of the C++ references, or another program speaking the
/// same protocol (the benchmark runs our own engine that way, so both sides are timed by
/// the same code inside their own process).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    Reference(Reference),
    /// A program named for reports; it is built by cargo, not by `make refs`.
    Program(String),
}

impl Peer {
    /// The reference, if this is one.
    pub fn reference(&self) -> Option<Reference> {
        match self {
            Peer::Reference(r) => Some(*r),
            Peer::Program(_) => None,
        }
    }

    /// How to get a missing binary.
    fn build_hint(&self) -> &'static str {
        match self {
            Peer::Reference(_) => "build it with `make refs`",
            Peer::Program(_) => "build it with `cargo build`",
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Reference(r) => f.write_str(r.name()),
            Peer::Program(name) => f.write_str(name),
        }
    }
}

impl From<Reference> for Peer {
    fn from(r: Reference) -> Peer {
        Peer::Reference(r)
    }
}

/// Everything that can go wrong talking to a runner. Each variant names the runner
/// and, where the runner printed anything, carries its last stderr lines.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("{runner} runner not found at {}: {}", path.display(), runner.build_hint())]
    RunnerMissing { runner: Peer, path: PathBuf },
    #[error("{runner}: could not start the runner: {source}")]
    Spawn {
        runner: Peer,
        source: std::io::Error,
    },
    #[error("{runner} runner died ({status}) during {request}; its last output:\n{stderr_tail}")]
    Crashed {
        runner: Peer,
        request: &'static str,
        status: String,
        stderr_tail: String,
    },
    #[error("{runner}: {request} took longer than {secs} s; runner killed. Its last output:\n{stderr_tail}")]
    Timeout {
        runner: Peer,
        request: &'static str,
        secs: u64,
        stderr_tail: String,
    },
    #[error("{runner} refused {request}: {message}\nits last output:\n{stderr_tail}")]
    Refused {
        runner: Peer,
        request: &'static str,
        message: String,
        stderr_tail: String,
    },
    #[error("{runner}: protocol error during {request}: {detail}")]
    Protocol {
        runner: Peer,
        request: &'static str,
        detail: String,
    },
    #[error(
        "{runner} runner at {} is another build: it reports '{reports}', but this checkout \
         pins {pinned}; rebuild it with `make refs` (or point BITNET_REF_BIN_DIR at runners \
         built from this checkout)",
        path.display()
    )]
    OtherBuild {
        runner: Peer,
        path: PathBuf,
        reports: String,
        pinned: &'static str,
    },
    #[error(
        "{runner} runner at {} is the {found}, but the {wanted} was asked for; build it with \
         `{}`",
        path.display(),
        wanted.make_target()
    )]
    WrongBuild {
        runner: Peer,
        path: PathBuf,
        wanted: RefBuild,
        found: RefBuild,
    },
    #[error(
        "{runner} runner at {} was built natively for another CPU (its {} differs from this \
         machine's /proc/cpuinfo); rebuild it with `make refs-defaults`",
        path.display(),
        stamp.display()
    )]
    OtherCpu {
        runner: Peer,
        path: PathBuf,
        stamp: PathBuf,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Version { .. } => "version",
        Request::Load(_) => "load",
        Request::Tokenize { .. } => "tokenize",
        Request::Detokenize { .. } => "detokenize",
        Request::Eval { .. } => "eval",
        Request::Reset => "reset",
        Request::QuantizeRef { .. } => "quantize_ref",
        Request::QuantizeCpu { .. } => "quantize_cpu",
        Request::Dequantize { .. } => "dequantize",
        Request::VecDot { .. } => "vec_dot",
        Request::ConvertModel { .. } => "convert_model",
        Request::Shutdown => "shutdown",
        Request::Bench { .. } => "bench",
    }
}

type Frame = std::io::Result<Option<Vec<u8>>>;

/// A running runner process. Requests are synchronous; the process is shut down on drop.
#[derive(Debug)]
pub struct RefRunner {
    peer: Peer,
    child: Child,
    stdin: ChildStdin,
    frames: Receiver<Frame>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    timeout: Duration,
    version: String,
}

impl RefRunner {
    /// Starts the deterministic build's runner of `reference` and asks its version.
    pub fn spawn(reference: Reference) -> Result<RefRunner, RefError> {
        RefRunner::spawn_build(reference, RefBuild::Deterministic)
    }

    /// Starts `build`'s runner of `reference` ([`Reference::runner_path_of`]) and asks its
    /// version, which must name that build.
    pub fn spawn_build(reference: Reference, build: RefBuild) -> Result<RefRunner, RefError> {
        RefRunner::spawn_build_at(reference, build, reference.runner_path_of(build))
    }

    /// Starts the runner binary at `path` as `build` of `reference`: its version must name
    /// this checkout's pin and that build, and a native build's CPU stamp (beside its
    /// `release` folder) must name this CPU.
    pub fn spawn_build_at(
        reference: Reference,
        build: RefBuild,
        path: PathBuf,
    ) -> Result<RefRunner, RefError> {
        let stamp = path.parent().and_then(|dir| build.cpu_stamp(dir));
        if let Some(stamp) = stamp {
            if let (Ok(built_for), Ok(cpuinfo)) = (
                std::fs::read_to_string(&stamp),
                std::fs::read_to_string("/proc/cpuinfo"),
            ) {
                if built_for_another_cpu(&built_for, &cpuinfo) {
                    return Err(RefError::OtherCpu {
                        runner: Peer::Reference(reference),
                        path,
                        stamp,
                    });
                }
            }
        }
        let runner = RefRunner::spawn_at(reference, path.clone())?;
        let found = RefBuild::of_version(&runner.version);
        if found != build {
            return Err(RefError::WrongBuild {
                runner: runner.peer.clone(),
                path,
                wanted: build,
                found,
            });
        }
        Ok(runner)
    }

    /// Starts the runner binary at `path` as `reference` and asks its version, which must
    /// name this checkout's pin of the reference ([`Reference::pinned_build`]).
    pub fn spawn_at(reference: Reference, path: PathBuf) -> Result<RefRunner, RefError> {
        RefRunner::spawn_peer(Peer::Reference(reference), path, &[])
    }

    /// Which build answered ([`RefBuild::of_version`]).
    pub fn build(&self) -> RefBuild {
        RefBuild::of_version(&self.version)
    }

    /// Starts another program that serves the protocol (`name` is how reports call it),
    /// with `args`, and asks its version.
    pub fn spawn_program(
        name: &str,
        path: PathBuf,
        args: &[String],
    ) -> Result<RefRunner, RefError> {
        RefRunner::spawn_peer(Peer::Program(name.to_owned()), path, args)
    }

    fn spawn_peer(peer: Peer, path: PathBuf, args: &[String]) -> Result<RefRunner, RefError> {
        if !path.is_file() {
            return Err(RefError::RunnerMissing { runner: peer, path });
        }
        let spawn_err = |source| RefError::Spawn {
            runner: peer.clone(),
            source,
        };
        let started = Instant::now();
        let mut child = Command::new(&path)
            .args(args)
            // Upstream ggml runs gdb for a backtrace on an assertion; its output would push
            // the assertion message out of the stderr tail an error carries.
            .env("GGML_NO_BACKTRACE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let no_pipe = |what: &str| spawn_err(std::io::Error::other(format!("no {what} pipe")));
        let stdin = child.stdin.take().ok_or_else(|| no_pipe("stdin"))?;
        let mut stdout = child.stdout.take().ok_or_else(|| no_pipe("stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| no_pipe("stderr"))?;

        let (tx, frames) = mpsc::channel();
        thread::spawn(move || loop {
            let frame = read_frame(&mut stdout);
            let stop = !matches!(frame, Ok(Some(_)));
            if tx.send(frame).is_err() || stop {
                break;
            }
        });
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        // The reference's own log lines: `tracing` events of target `bitnet_sys::runner` at
        // debug level (`RUST_LOG=bitnet_sys::runner=debug`), or info with the shorthand
        // `BITNET_REF_VERBOSE=1`.
        let verbose = std::env::var_os("BITNET_REF_VERBOSE").is_some_and(|v| v != "0");
        let label = peer.to_string();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if verbose {
                    tracing::info!(target: "bitnet_sys::runner", runner = %label, "{line}");
                } else {
                    tracing::debug!(target: "bitnet_sys::runner", runner = %label, "{line}");
                }
                let Ok(mut t) = tail.lock() else { break };
                if t.len() == STDERR_TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        let secs = std::env::var("BITNET_REF_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_TIMEOUT_SECS);
        let mut runner = RefRunner {
            peer,
            child,
            stdin,
            frames,
            stderr_tail,
            timeout: Duration::from_secs(secs),
            version: String::new(),
        };
        let handshake = runner.call(Request::Version {
            protocol: PROTOCOL_VERSION,
        });
        runner.version = match handshake {
            Ok(Response::Version(v)) => v,
            Ok(other) => return Err(runner.unexpected("version", &other)),
            // A runner from older sources can't even parse the handshake.
            Err(RefError::Refused { message, .. }) => {
                return Err(RefError::Protocol {
                    runner: runner.peer.clone(),
                    request: "version",
                    detail: format!(
                        "{message} (runner {}; rebuild the runners with `make refs`)",
                        path.display()
                    ),
                })
            }
            Err(e) => return Err(e),
        };
        if let Some(reference) = runner.peer.reference() {
            let pinned = reference.pinned_build();
            if !runner.version.contains(pinned) {
                return Err(RefError::OtherBuild {
                    runner: runner.peer.clone(),
                    path,
                    reports: runner.version.clone(),
                    pinned,
                });
            }
        }
        tracing::debug!(
            runner = %runner.peer,
            pid = runner.child.id(),
            elapsed = ?started.elapsed(),
            "started {} ({})",
            path.display(),
            runner.version
        );
        Ok(runner)
    }

    /// Who serves this runner.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Which reference this is (`None` for another program).
    pub fn reference(&self) -> Option<Reference> {
        self.peer.reference()
    }

    /// The runner's process id (for `/proc/<pid>` measurements such as peak RSS).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The reference's exact version (crate version and upstream commit), for reports.
    pub fn version(&self) -> &str {
        &self.version
    }

    fn stderr_tail(&self) -> String {
        // Give the stderr thread a moment to drain what a dying process printed.
        thread::sleep(Duration::from_millis(50));
        self.stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    fn crashed(&mut self, request: &'static str) -> RefError {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => s.to_string(),
            _ => {
                thread::sleep(Duration::from_millis(200));
                match self.child.try_wait() {
                    Ok(Some(s)) => s.to_string(),
                    _ => "pipe closed".to_string(),
                }
            }
        };
        RefError::Crashed {
            runner: self.peer.clone(),
            request,
            status,
            stderr_tail: self.stderr_tail(),
        }
    }

    fn unexpected(&self, request: &'static str, got: &Response) -> RefError {
        let detail = format!("unexpected response {:?}", std::mem::discriminant(got));
        RefError::Protocol {
            runner: self.peer.clone(),
            request,
            detail,
        }
    }

    /// Sends one request and waits for its response. A reference-side failure becomes
    /// [`RefError::Refused`]; a dead runner [`RefError::Crashed`].
    pub fn call(&mut self, req: Request) -> Result<Response, RefError> {
        let name = request_name(&req);
        if write_frame(&mut self.stdin, &req.encode()).is_err() {
            return Err(self.crashed(name));
        }
        let payload = match self.frames.recv_timeout(self.timeout) {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) | Err(RecvTimeoutError::Disconnected) => return Err(self.crashed(name)),
            Ok(Err(e)) => {
                return Err(RefError::Protocol {
                    runner: self.peer.clone(),
                    request: name,
                    detail: e.to_string(),
                })
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                return Err(RefError::Timeout {
                    runner: self.peer.clone(),
                    request: name,
                    secs: self.timeout.as_secs(),
                    stderr_tail: self.stderr_tail(),
                });
            }
        };
        match Response::decode(&payload) {
            Ok(Response::Error(message)) => Err(RefError::Refused {
                runner: self.peer.clone(),
                request: name,
                message,
                stderr_tail: self.stderr_tail(),
            }),
            Ok(r) => Ok(r),
            Err(e) => Err(RefError::Protocol {
                runner: self.peer.clone(),
                request: name,
                detail: e.to_string(),
            }),
        }
    }

    fn call_bytes(&mut self, req: Request) -> Result<Vec<u8>, RefError> {
        let name = request_name(&req);
        match self.call(req)? {
            Response::Bytes(b) => Ok(b),
            other => Err(self.unexpected(name, &other)),
        }
    }

    /// ggml's reference quantizer (`quantize_row_*_ref`, whole tensor for I2_S) applied to
    /// `x` viewed as rows of `n_per_row`.
    pub fn quantize_ref(
        &mut self,
        ty: GgmlType,
        n_per_row: usize,
        x: &[f32],
    ) -> Result<Vec<u8>, RefError> {
        self.call_bytes(Request::QuantizeRef {
            ty: ty.id(),
            n_per_row: n_per_row as u64,
            x: x.to_vec(),
        })
    }

    /// The CPU backend's activation quantizer for `ty` (what a matmul runs on this CPU).
    pub fn quantize_cpu(&mut self, ty: GgmlType, x: &[f32]) -> Result<Vec<u8>, RefError> {
        self.call_bytes(Request::QuantizeCpu {
            ty: ty.id(),
            x: x.to_vec(),
        })
    }

    /// ggml's `to_float` for `n` elements of `ty`.
    pub fn dequantize(
        &mut self,
        ty: GgmlType,
        n: usize,
        bytes: &[u8],
    ) -> Result<Vec<f32>, RefError> {
        match self.call(Request::Dequantize {
            ty: ty.id(),
            n: n as u64,
            bytes: bytes.to_vec(),
        })? {
            Response::Floats(f) => Ok(f),
            other => Err(self.unexpected("dequantize", &other)),
        }
    }

    /// The CPU backend's `vec_dot` of `n` elements: `x` in `ty`, `y` in its `vec_dot_type`.
    pub fn vec_dot(&mut self, ty: GgmlType, n: usize, x: &[u8], y: &[u8]) -> Result<f32, RefError> {
        match self.call(Request::VecDot {
            ty: ty.id(),
            n: n as u64,
            x: x.to_vec(),
            y: y.to_vec(),
        })? {
            Response::Scalar(s) => Ok(s),
            other => Err(self.unexpected("vec_dot", &other)),
        }
    }

    /// Re-quantizes a model file with the reference's `llama_model_quantize`.
    pub fn convert_model(
        &mut self,
        input: &Path,
        output: &Path,
        ftype: u32,
    ) -> Result<(), RefError> {
        let req = Request::ConvertModel {
            input: input.to_string_lossy().into_owned(),
            output: output.to_string_lossy().into_owned(),
            ftype,
        };
        match self.call(req)? {
            Response::Done => Ok(()),
            other => Err(self.unexpected("convert_model", &other)),
        }
    }
}

impl Drop for RefRunner {
    fn drop(&mut self) {
        let _ = write_frame(&mut self.stdin, &Request::Shutdown.encode());
        for _ in 0..20 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a reference session is created. [`SessionConfig::deterministic`] gives the settings
/// docs/DESIGN.md §3.4 established for each reference.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub n_ctx: u32,
    pub n_threads: u32,
    pub n_batch: u32,
    pub type_k: KvType,
    pub type_v: KvType,
    pub capture: Vec<String>,
    /// Whose settings the rest of the context takes; off the deterministic settings,
    /// `type_k`/`type_v` are the defaults' (F16), for reports only.
    pub settings: SessionSettings,
}

/// The settings a reference session runs with beyond context, batch and threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionSettings {
    /// The exact axis' ([`SessionConfig::deterministic`]), on the deterministic build.
    Deterministic,
    /// The library's own default model and context parameters
    /// ([`SessionConfig::reference_defaults`]), on the defaults build.
    Defaults,
    /// [`SessionSettings::Defaults`] plus run-time weight repacking where the library
    /// offers it off by default ([`SessionConfig::fastest`]).
    Fastest,
}

impl SessionConfig {
    /// One thread, flash attention off (always, in every runner), no capture, and the KV
    /// cache type the reference allows without flash attention: F32 for llama.cpp, F16 for
    /// ik_llama.cpp and bitnet.cpp (both refuse an F32 V cache without flash attention).
    pub fn deterministic(reference: Reference, n_ctx: u32) -> SessionConfig {
        let kv = match reference {
            Reference::LlamaCpp => KvType::F32,
            Reference::IkLlamaCpp | Reference::BitnetCpp => KvType::F16,
        };
        SessionConfig {
            n_ctx,
            n_threads: 1,
            n_batch: n_ctx,
            type_k: kv,
            type_v: kv,
            capture: Vec::new(),
            settings: SessionSettings::Deterministic,
        }
    }

    /// The reference as a user runs it: its own default model and context parameters (see
    /// [`SessionConfig::describe`]) with every core of this machine and the logical batch
    /// of llama.cpp's tools (2048, at most the context).
    pub fn reference_defaults(n_ctx: u32) -> SessionConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        SessionConfig {
            n_ctx,
            n_threads: u32::try_from(cores).unwrap_or(1),
            n_batch: n_ctx.min(2048),
            type_k: KvType::F16,
            type_v: KvType::F16,
            capture: Vec::new(),
            settings: SessionSettings::Defaults,
        }
    }

    /// The reference at its fastest, for the bench: its defaults build and default
    /// settings ([`SessionConfig::reference_defaults`]) with `n_threads` threads, a logical
    /// batch of `n_batch`, and run-time weight repacking on where the library offers it
    /// (ik_llama.cpp's `-rtr`; llama.cpp repacks by default; bitnet.cpp has none).
    pub fn fastest(n_ctx: u32, n_batch: u32, n_threads: u32) -> SessionConfig {
        SessionConfig {
            n_threads,
            n_batch,
            settings: SessionSettings::Fastest,
            ..SessionConfig::reference_defaults(n_ctx)
        }
    }

    /// The build that serves these settings: a defaults session runs the reference's
    /// defaults build, a deterministic one the deterministic build.
    pub fn build(&self) -> RefBuild {
        match self.settings {
            SessionSettings::Deterministic => RefBuild::Deterministic,
            SessionSettings::Defaults | SessionSettings::Fastest => RefBuild::Defaults,
        }
    }

    /// The runtime settings as reports name them, for a session of `reference`.
    pub fn describe(&self, reference: Reference) -> String {
        let kv = |t: KvType| match t {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
        };
        let threads = format!(
            "{} thread{}",
            self.n_threads,
            if self.n_threads == 1 { "" } else { "s" }
        );
        if self.settings == SessionSettings::Deterministic {
            // The exact axis (n_ubatch = n_batch); goldens carry this string.
            return format!(
                "n_ctx {}, n_batch {}, {threads}, KV {}/{}, flash attention off, weight \
                 repacking off",
                self.n_ctx,
                self.n_batch,
                kv(self.type_k),
                kv(self.type_v)
            );
        }
        // Each library's defaults (llama_model_default_params, llama_context_default_params).
        let rest = match reference {
            Reference::LlamaCpp => {
                "KV f16/f16, flash attention auto, extra buffer types (weight repacking) on"
            }
            Reference::IkLlamaCpp if self.settings == SessionSettings::Fastest => {
                "KV f16/f16, flash attention on, fused up/gate on, run-time repacking on \
                 (-rtr: IQ2_BN_R4)"
            }
            Reference::IkLlamaCpp => {
                "KV f16/f16, flash attention on, fused up/gate on, weight repacking off"
            }
            Reference::BitnetCpp => "KV f16/f16, flash attention off",
        };
        format!(
            "reference defaults: n_ctx {}, n_batch {} (n_ubatch default 512), {threads}, \
             {rest}; {}",
            self.n_ctx,
            self.n_batch,
            RefBuild::Defaults.describe(reference)
        )
    }
}

/// Ids and per-step logits of a greedy generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated ids (not including the prompt).
    pub tokens: Vec<u32>,
    /// `logits[i]` is the distribution `tokens[i]` was picked from.
    pub logits: Vec<Vec<f32>>,
}

/// A model loaded in a reference.
#[derive(Debug)]
pub struct RefSession {
    runner: RefRunner,
    info: ModelInfo,
    /// Loaded with [`RefSession::load_vocab`]: tokenizer only, no context.
    vocab_only: bool,
}

fn check_config(config: &SessionConfig) -> Result<(), RefError> {
    if config.n_ctx == 0 || config.n_batch == 0 || config.n_threads == 0 {
        return Err(RefError::InvalidArgument(
            "n_ctx, n_batch and n_threads must be positive".into(),
        ));
    }
    Ok(())
}

fn to_ids(tokens: &[u32]) -> Result<Vec<i32>, RefError> {
    tokens
        .iter()
        .map(|&t| i32::try_from(t).map_err(|_| RefError::InvalidArgument(format!("token id {t}"))))
        .collect()
}

/// Index of the largest value, first on ties (llama.cpp's greedy sampler keeps the first).
pub fn argmax(v: &[f32]) -> Option<usize> {
    v.iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, &x)| match best {
            Some((_, b)) if b >= x => best,
            _ => Some((i, x)),
        })
        .map(|(i, _)| i)
}

impl RefSession {
    /// Starts `reference` and loads `model` with `config`.
    pub fn load(
        reference: Reference,
        model: &Path,
        config: &SessionConfig,
    ) -> Result<RefSession, RefError> {
        check_config(config)?;
        let runner = RefRunner::spawn_build(reference, config.build())?;
        RefSession::load_in(runner, model, config)
    }

    /// Loads `model` with `config` in a runner already started (for instance a program
    /// from [`RefRunner::spawn_program`]).
    pub fn load_in(
        runner: RefRunner,
        model: &Path,
        config: &SessionConfig,
    ) -> Result<RefSession, RefError> {
        check_config(config)?;
        let params = LoadParams {
            model_path: model.to_string_lossy().into_owned(),
            n_ctx: config.n_ctx,
            n_threads: config.n_threads,
            n_batch: config.n_batch,
            type_k: config.type_k,
            type_v: config.type_v,
            capture: config.capture.clone(),
            vocab_only: false,
            defaults: config.settings != SessionSettings::Deterministic,
            repack: config.settings == SessionSettings::Fastest,
        };
        RefSession::start(runner, params)
    }

    /// Starts `reference` and loads only the vocabulary of `path` (`vocab_only`: no tensors
    /// are read and no context is created), as vocabulary-only GGUFs need. The session
    /// serves [`RefSession::tokenize`] and [`RefSession::detokenize`]; evaluation is refused.
    pub fn load_vocab(reference: Reference, path: &Path) -> Result<RefSession, RefError> {
        let runner = RefRunner::spawn(reference)?;
        let params = LoadParams {
            model_path: path.to_string_lossy().into_owned(),
            n_ctx: 0,
            n_threads: 1,
            n_batch: 0,
            type_k: KvType::F32,
            type_v: KvType::F32,
            capture: Vec::new(),
            vocab_only: true,
            defaults: false,
            repack: false,
        };
        RefSession::start(runner, params)
    }

    fn start(mut runner: RefRunner, params: LoadParams) -> Result<RefSession, RefError> {
        let vocab_only = params.vocab_only;
        let started = Instant::now();
        let model = params.model_path.clone();
        let info = match runner.call(Request::Load(params))? {
            Response::Loaded(info) => info,
            other => return Err(runner.unexpected("load", &other)),
        };
        tracing::debug!(
            runner = %runner.peer,
            elapsed = ?started.elapsed(),
            "loaded {model}: {}",
            info.description
        );
        Ok(RefSession {
            runner,
            info,
            vocab_only,
        })
    }

    /// Whether only the vocabulary is loaded ([`RefSession::load_vocab`]).
    pub fn is_vocab_only(&self) -> bool {
        self.vocab_only
    }

    /// Vocabulary size, context, special tokens and description of the loaded model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The reference's name and exact version.
    pub fn version(&self) -> &str {
        self.runner.version()
    }

    /// Who serves this session.
    pub fn peer(&self) -> &Peer {
        self.runner.peer()
    }

    /// Which reference this session runs in (`None` for another program).
    pub fn reference(&self) -> Option<Reference> {
        self.runner.reference()
    }

    /// The runner's process id.
    pub fn pid(&self) -> u32 {
        self.runner.pid()
    }

    /// The reference's tokenizer.
    pub fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, RefError> {
        let req = Request::Tokenize {
            text: text.to_owned(),
            add_special,
            parse_special,
        };
        match self.runner.call(req)? {
            Response::Tokens(t) => t
                .into_iter()
                .map(|id| {
                    u32::try_from(id).map_err(|_| RefError::Protocol {
                        runner: self.peer().clone(),
                        request: "tokenize",
                        detail: format!("negative token id {id}"),
                    })
                })
                .collect(),
            other => Err(self.runner.unexpected("tokenize", &other)),
        }
    }

    /// The reference's detokenizer (special tokens rendered, no space stripping).
    pub fn detokenize(&mut self, tokens: &[u32]) -> Result<String, RefError> {
        Ok(String::from_utf8_lossy(&self.detokenize_bytes(tokens)?).into_owned())
    }

    /// [`RefSession::detokenize`] as raw bytes (a token boundary may split a UTF-8
    /// sequence; nothing is replaced).
    pub fn detokenize_bytes(&mut self, tokens: &[u32]) -> Result<Vec<u8>, RefError> {
        let tokens = to_ids(tokens)?;
        match self.runner.call(Request::Detokenize { tokens })? {
            Response::Bytes(b) => Ok(b),
            other => Err(self.runner.unexpected("detokenize", &other)),
        }
    }

    /// Evaluates `tokens` as one batch at positions `n_past..`, returning the logits of
    /// every position and any captured intermediates. The KV cache keeps positions
    /// `< n_past` and drops anything after them, so `n_past` 0 starts afresh.
    pub fn eval(&mut self, tokens: &[u32], n_past: u32) -> Result<EvalOutput, RefError> {
        if self.vocab_only {
            return Err(RefError::InvalidArgument(format!(
                "{}: eval on a vocabulary-only session (loaded with load_vocab: no context)",
                self.peer()
            )));
        }
        if tokens.is_empty() {
            return Err(RefError::InvalidArgument("eval of an empty batch".into()));
        }
        let end = u64::from(n_past) + tokens.len() as u64;
        if end > u64::from(self.info.n_ctx) {
            return Err(RefError::InvalidArgument(format!(
                "positions {n_past}..{end} exceed the context of {}",
                self.info.n_ctx
            )));
        }
        let req = Request::Eval {
            tokens: to_ids(tokens)?,
            n_past,
        };
        match self.runner.call(req)? {
            Response::Evaluated(out) => {
                let expected = tokens.len() * out.n_vocab as usize;
                if out.logits.len() != expected {
                    return Err(RefError::Protocol {
                        runner: self.peer().clone(),
                        request: "eval",
                        detail: format!("{} logits for {expected} expected", out.logits.len()),
                    });
                }
                Ok(out)
            }
            other => Err(self.runner.unexpected("eval", &other)),
        }
    }

    /// [`RefSession::eval`] returning one logits row per position.
    pub fn eval_and_get_logits(
        &mut self,
        tokens: &[u32],
        n_past: u32,
    ) -> Result<Vec<Vec<f32>>, RefError> {
        let out = self.eval(tokens, n_past)?;
        Ok(out
            .logits
            .chunks_exact(out.n_vocab as usize)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Times `prompt` (from an empty cache, logits of its last position only) and then
    /// `n_decode` greedy steps inside the runner's process (the protocol's `Bench`); the
    /// returned ids are the tokens the steps evaluated.
    pub fn bench(&mut self, prompt: &[u32], n_decode: u32) -> Result<Timings, RefError> {
        if self.vocab_only {
            return Err(RefError::InvalidArgument(format!(
                "{}: bench on a vocabulary-only session",
                self.peer()
            )));
        }
        if prompt.is_empty() {
            return Err(RefError::InvalidArgument("bench of an empty prompt".into()));
        }
        let end = prompt.len() as u64 + u64::from(n_decode);
        if end > u64::from(self.info.n_ctx) {
            return Err(RefError::InvalidArgument(format!(
                "{} prompt tokens and {n_decode} decoded ones exceed the context of {}",
                prompt.len(),
                self.info.n_ctx
            )));
        }
        let req = Request::Bench {
            prompt: to_ids(prompt)?,
            n_decode,
        };
        match self.runner.call(req)? {
            Response::Timings(t) if t.tokens.len() == n_decode as usize => Ok(t),
            Response::Timings(t) => Err(RefError::Protocol {
                runner: self.peer().clone(),
                request: "bench",
                detail: format!("{} tokens for {n_decode} decode steps", t.tokens.len()),
            }),
            other => Err(self.runner.unexpected("bench", &other)),
        }
    }

    /// Clears the KV cache.
    pub fn reset(&mut self) -> Result<(), RefError> {
        match self.runner.call(Request::Reset)? {
            Response::Done => Ok(()),
            other => Err(self.runner.unexpected("reset", &other)),
        }
    }

    /// Greedy generation of `n` tokens after `prompt` (evaluated as one batch from an empty
    /// cache, then one token per step). Stops early at the model's EOS.
    pub fn generate_greedy(&mut self, prompt: &[u32], n: usize) -> Result<Generation, RefError> {
        let mut gen = Generation {
            tokens: Vec::with_capacity(n),
            logits: Vec::with_capacity(n),
        };
        let mut last = self
            .eval_and_get_logits(prompt, 0)?
            .pop()
            .ok_or_else(|| RefError::InvalidArgument("empty prompt".into()))?;
        let mut pos = prompt.len() as u32;
        while gen.tokens.len() < n {
            let next = argmax(&last)
                .ok_or_else(|| RefError::InvalidArgument("empty vocab".into()))?
                as u32;
            gen.tokens.push(next);
            gen.logits.push(std::mem::take(&mut last));
            if i64::from(next) == i64::from(self.info.eos) || gen.tokens.len() == n {
                break;
            }
            last = self
                .eval_and_get_logits(&[next], pos)?
                .pop()
                .unwrap_or_default();
            pos += 1;
        }
        Ok(gen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_keeps_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY, -5.0]), Some(1));
    }

    /// Each pin read from `refs/<dir>/Cargo.lock` is the exact version `refs/<dir>/Cargo.toml`
    /// asks for, with a checksum.
    #[test]
    fn pins_are_the_runners_locked_versions() {
        let refs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../refs");
        for (r, dir, krate) in [
            (Reference::LlamaCpp, "llama-cpp", "llama-cpp-sys-2"),
            (Reference::IkLlamaCpp, "ik-llama", "ik-llama-cpp-sys"),
            (Reference::BitnetCpp, "bitnet-cpp", "bitnet-cpp-sys"),
        ] {
            let manifest = std::fs::read_to_string(refs.join(dir).join("Cargo.toml")).unwrap();
            let line = manifest
                .lines()
                .find(|l| l.starts_with(krate))
                .unwrap_or_else(|| panic!("{dir}/Cargo.toml has no {krate}"));
            let version = line.split("\"=").nth(1).and_then(|v| v.split('"').next());
            let version = version.unwrap_or_else(|| panic!("{dir}: {krate} is not pinned: {line}"));
            let pin = r.pinned_build();
            assert!(
                pin.starts_with(&format!("{krate} {version} (sha256 ")),
                "{pin}"
            );
            assert_eq!(
                pin.len(),
                format!("{krate} {version} (sha256 )").len() + 12,
                "{pin}"
            );
        }
    }

    #[test]
    fn a_native_build_is_stale_on_another_cpu_only() {
        let zen4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f\nbugs\t\t: none\n";
        let epyc = "processor\t: 0\nflags\t\t: fpu avx2\n";
        let stamp = "flags\t\t: fpu avx2 avx512f\n"; // as `make refs-defaults` writes it
        assert!(!built_for_another_cpu(stamp, zen4));
        assert!(built_for_another_cpu(stamp, epyc));
        assert!(!built_for_another_cpu(stamp, "no flags here\n"));
    }

    #[test]
    fn a_runner_names_its_build() {
        let det = "llama.cpp (llama-cpp-sys-2 0.1.161 (sha256 0123456789ab); ...); AVX2 = 1";
        assert_eq!(RefBuild::of_version(det), RefBuild::Deterministic);
        let def = format!("{det} | {}", RefBuild::DEFAULTS_MARKER);
        assert_eq!(RefBuild::of_version(&def), RefBuild::Defaults);
        assert!(RefBuild::Defaults
            .bin_dir()
            .ends_with("refs-defaults/release"));
    }

    #[test]
    fn a_missing_runner_is_a_readable_error() {
        let path = PathBuf::from("/nonexistent/bitnet-refs/runner");
        let err = RefRunner::spawn_at(Reference::LlamaCpp, path.clone()).unwrap_err();
        assert!(matches!(err, RefError::RunnerMissing { .. }), "{err}");
        assert!(err.to_string().contains("make refs"), "{err}");
        let err = RefRunner::spawn_program("bitnet-rs", path, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bitnet-rs runner not found at /nonexistent/bitnet-refs/runner: build it with \
             `cargo build`"
        );
    }

    #[test]
    fn deterministic_configs_follow_each_references_kv_rules() {
        let c = SessionConfig::deterministic(Reference::LlamaCpp, 256);
        assert_eq!(
            (c.type_k, c.type_v, c.n_threads),
            (KvType::F32, KvType::F32, 1)
        );
        for r in [Reference::IkLlamaCpp, Reference::BitnetCpp] {
            assert_eq!(SessionConfig::deterministic(r, 64).type_v, KvType::F16);
        }
    }
}
