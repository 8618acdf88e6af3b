//! The pipe protocol between [`crate::RefRunner`] and a reference runner process.
//!
//! Every message is a frame: `u32` little-endian payload length, then the payload. A payload
//! starts with a one-byte tag followed by the fields in order: integers little-endian,
//! `bool` as one byte, strings and vectors as a `u32` element count then the elements.
//! Decoding is bounds-checked and never allocates more than the bytes that are present.

use std::io::{self, Read, Write};

/// Version of this protocol. Client and runner compare it in the first request, so a runner
/// built from older sources fails with "rebuild the runners" instead of a garbled frame.
pub const PROTOCOL_VERSION: u32 = 5;

/// Largest frame either side accepts (a 128k-vocab × 512-position logits batch is 256 MiB).
pub const MAX_FRAME: usize = 1 << 30;

/// KV cache element type requested for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvType {
    F32,
    F16,
}

/// Settings a reference session is created with.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadParams {
    pub model_path: String,
    /// Context size (positions); 0 is rejected by the client.
    pub n_ctx: u32,
    pub n_threads: u32,
    /// Logical batch size (the largest batch one `Eval` may submit).
    pub n_batch: u32,
    pub type_k: KvType,
    pub type_v: KvType,
    /// Names of intermediate tensors to capture through `cb_eval` (exact names, or a
    /// trailing `*` for a prefix); empty means capture is off.
    pub capture: Vec<String>,
    /// Load only the vocabulary (`llama_model_params::vocab_only`): no tensors, no context,
    /// so only `Tokenize`/`Detokenize` are served. Vocabulary-only GGUFs need it.
    pub vocab_only: bool,
    /// Leave the reference's own default model and context parameters as they are (flash
    /// attention, KV cache types, weight repacking, micro-batch size, fused ops): only the
    /// context, the logical batch and the thread count are set. Off, the runner applies the
    /// deterministic settings the exact axis compares under.
    pub defaults: bool,
    /// With `defaults`: also turn on the reference's run-time weight repacking where it is
    /// off by default (ik_llama.cpp's `-rtr`) — its fastest configuration, for the bench.
    pub repack: bool,
}

/// What a runner reports about a loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub n_vocab: u32,
    pub n_ctx: u32,
    pub bos: i32,
    pub eos: i32,
    pub description: String,
}

/// One intermediate tensor captured during an evaluation, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedTensor {
    pub name: String,
    /// ggml `ne` order: `ne[0]` is the contiguous (row) dimension.
    pub ne: [u64; 4],
    pub data: Vec<f32>,
}

/// The logits of every position of a batch (row-major `n_tokens × n_vocab`) and any
/// captured intermediates.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOutput {
    pub n_vocab: u32,
    pub logits: Vec<f32>,
    pub captured: Vec<CapturedTensor>,
}

/// What a runner measured for one `Bench` request, timed inside its own process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    /// Wall time of the prompt evaluation (logits of its last position only).
    pub prefill_ns: u64,
    /// Wall time of all the greedy decode steps together.
    pub decode_ns: u64,
    /// The ids the decode steps fed back, in order.
    pub tokens: Vec<i32>,
}

/// Client → runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The handshake: the client's [`PROTOCOL_VERSION`]; the runner answers with its own
    /// name and version, or refuses a different protocol.
    Version {
        protocol: u32,
    },
    Load(LoadParams),
    Tokenize {
        text: String,
        add_special: bool,
        parse_special: bool,
    },
    Detokenize {
        tokens: Vec<i32>,
    },
    Eval {
        tokens: Vec<i32>,
        n_past: u32,
    },
    Reset,
    /// Reference (`*_ref`) quantization of `x` as rows of `n_per_row` into ggml type `ty`.
    QuantizeRef {
        ty: u32,
        n_per_row: u64,
        x: Vec<f32>,
    },
    /// The CPU backend's activation quantizer (`from_float`) for ggml type `ty`.
    QuantizeCpu {
        ty: u32,
        x: Vec<f32>,
    },
    Dequantize {
        ty: u32,
        n: u64,
        bytes: Vec<u8>,
    },
    /// The CPU backend's `vec_dot` of `n` elements: `x` in `ty`, `y` in its `vec_dot_type`.
    VecDot {
        ty: u32,
        n: u64,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    /// `llama_model_quantize` of a whole file to a llama ftype.
    ConvertModel {
        input: String,
        output: String,
        ftype: u32,
    },
    Shutdown,
    /// Throughput: clear the KV cache, evaluate `prompt` from position 0 in `n_batch` chunks
    /// with logits for its last position only (timed), then `n_decode` greedy steps, each
    /// the argmax of the last logits decoded as one token (timed as one span).
    Bench {
        prompt: Vec<i32>,
        n_decode: u32,
    },
}

/// Runner → client.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Version(String),
    Loaded(ModelInfo),
    Tokens(Vec<i32>),
    Bytes(Vec<u8>),
    Floats(Vec<f32>),
    Scalar(f32),
    Evaluated(EvalOutput),
    Done,
    Timings(Timings),
    /// The request failed inside the reference; the message says why.
    Error(String),
}

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protocol frame: {0}")]
pub struct DecodeError(pub &'static str);

/// Appends protocol fields to a payload.
#[derive(Debug, Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn tag(mut self, t: u8) -> Self {
        self.0.push(t);
        self
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn i32s(&mut self, v: &[i32]) {
        self.len(v.len());
        v.iter().for_each(|&x| self.i32(x));
    }
    fn f32s(&mut self, v: &[f32]) {
        self.len(v.len());
        v.iter().for_each(|&x| self.f32(x));
    }
    fn strs(&mut self, v: &[String]) {
        self.len(v.len());
        v.iter().for_each(|s| self.str(s));
    }
    fn kv(&mut self, t: KvType) {
        self.0.push(match t {
            KvType::F32 => 0,
            KvType::F16 => 1,
        });
    }
}

/// Reads protocol fields from a payload, checking every length against what is left.
struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError("field runs past the end of the frame"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.arr::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.arr()?))
    }
    fn f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_le_bytes(self.arr()?))
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("bool byte is not 0 or 1")),
        }
    }
    /// An element count, checked against the bytes left for elements of `size` bytes.
    fn count(&mut self, size: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(size) > self.0.len() {
            return Err(DecodeError("element count exceeds the frame"));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.count(1)?;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?).map_err(|_| DecodeError("string is not UTF-8"))
    }
    fn i32s(&mut self) -> Result<Vec<i32>, DecodeError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.i32()).collect()
    }
    fn f32s(&mut self) -> Result<Vec<f32>, DecodeError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.f32()).collect()
    }
    fn strs(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.str()).collect()
    }
    fn kv(&mut self) -> Result<KvType, DecodeError> {
        match self.u8()? {
            0 => Ok(KvType::F32),
            1 => Ok(KvType::F16),
            _ => Err(DecodeError("unknown KV cache type")),
        }
    }
    fn finish<T>(self, v: T) -> Result<T, DecodeError> {
        if self.0.is_empty() {
            Ok(v)
        } else {
            Err(DecodeError("trailing bytes after the last field"))
        }
    }
}

impl Request {
    /// The payload of this request.
    pub fn encode(&self) -> Vec<u8> {
        let mut e;
        match self {
            Request::Version { protocol } => {
                e = Enc::default().tag(0);
                e.u32(*protocol);
            }
            Request::Load(p) => {
                e = Enc::default().tag(1);
                e.str(&p.model_path);
                e.u32(p.n_ctx);
                e.u32(p.n_threads);
                e.u32(p.n_batch);
                e.kv(p.type_k);
                e.kv(p.type_v);
                e.strs(&p.capture);
                e.bool(p.vocab_only);
                e.bool(p.defaults);
                e.bool(p.repack);
            }
            Request::Tokenize {
                text,
                add_special,
                parse_special,
            } => {
                e = Enc::default().tag(2);
                e.str(text);
                e.bool(*add_special);
                e.bool(*parse_special);
            }
            Request::Detokenize { tokens } => {
                e = Enc::default().tag(3);
                e.i32s(tokens);
            }
            Request::Eval { tokens, n_past } => {
                e = Enc::default().tag(4);
                e.i32s(tokens);
                e.u32(*n_past);
            }
            Request::Reset => e = Enc::default().tag(5),
            Request::QuantizeRef { ty, n_per_row, x } => {
                e = Enc::default().tag(6);
                e.u32(*ty);
                e.u64(*n_per_row);
                e.f32s(x);
            }
            Request::QuantizeCpu { ty, x } => {
                e = Enc::default().tag(7);
                e.u32(*ty);
                e.f32s(x);
            }
            Request::Dequantize { ty, n, bytes } => {
                e = Enc::default().tag(8);
                e.u32(*ty);
                e.u64(*n);
                e.bytes(bytes);
            }
            Request::VecDot { ty, n, x, y } => {
                e = Enc::default().tag(9);
                e.u32(*ty);
                e.u64(*n);
                e.bytes(x);
                e.bytes(y);
            }
            Request::ConvertModel {
                input,
                output,
                ftype,
            } => {
                e = Enc::default().tag(10);
                e.str(input);
                e.str(output);
                e.u32(*ftype);
            }
            Request::Shutdown => e = Enc::default().tag(11),
            Request::Bench { prompt, n_decode } => {
                e = Enc::default().tag(12);
                e.i32s(prompt);
                e.u32(*n_decode);
            }
        }
        e.0
    }

    /// Parses a request payload.
    pub fn decode(payload: &[u8]) -> Result<Request, DecodeError> {
        let mut d = Dec(payload);
        let r = match d.u8()? {
            0 => Request::Version { protocol: d.u32()? },
            1 => Request::Load(LoadParams {
                model_path: d.str()?,
                n_ctx: d.u32()?,
                n_threads: d.u32()?,
                n_batch: d.u32()?,
                type_k: d.kv()?,
                type_v: d.kv()?,
                capture: d.strs()?,
                vocab_only: d.bool()?,
                defaults: d.bool()?,
                repack: d.bool()?,
            }),
            2 => Request::Tokenize {
                text: d.str()?,
                add_special: d.bool()?,
                parse_special: d.bool()?,
            },
            3 => Request::Detokenize { tokens: d.i32s()? },
            4 => Request::Eval {
                tokens: d.i32s()?,
                n_past: d.u32()?,
            },
            5 => Request::Reset,
            6 => Request::QuantizeRef {
                ty: d.u32()?,
                n_per_row: d.u64()?,
                x: d.f32s()?,
            },
            7 => Request::QuantizeCpu {
                ty: d.u32()?,
                x: d.f32s()?,
            },
            8 => Request::Dequantize {
                ty: d.u32()?,
                n: d.u64()?,
                bytes: d.bytes()?,
            },
            9 => Request::VecDot {
                ty: d.u32()?,
                n: d.u64()?,
                x: d.bytes()?,
                y: d.bytes()?,
            },
            10 => Request::ConvertModel {
                input: d.str()?,
                output: d.str()?,
                ftype: d.u32()?,
            },
            11 => Request::Shutdown,
            12 => Request::Bench {
                prompt: d.i32s()?,
                n_decode: d.u32()?,
            },
            _ => return Err(DecodeError("unknown request tag")),
        };
        d.finish(r)
    }
}

impl Response {
    /// The payload of this response.
    pub fn encode(&self) -> Vec<u8> {
        let mut e;
        match self {
            Response::Version(v) => {
                e = Enc::default().tag(0);
                e.str(v);
            }
            Response::Loaded(m) => {
                e = Enc::default().tag(1);
                e.u32(m.n_vocab);
                e.u32(m.n_ctx);
                e.i32(m.bos);
                e.i32(m.eos);
                e.str(&m.description);
            }
            Response::Tokens(t) => {
                e = Enc::default().tag(2);
                e.i32s(t);
            }
            Response::Bytes(b) => {
                e = Enc::default().tag(3);
                e.bytes(b);
            }
            Response::Floats(f) => {
                e = Enc::default().tag(4);
                e.f32s(f);
            }
            Response::Scalar(s) => {
                e = Enc::default().tag(5);
                e.f32(*s);
            }
            Response::Evaluated(out) => {
                e = Enc::default().tag(6);
                e.u32(out.n_vocab);
                e.f32s(&out.logits);
                e.len(out.captured.len());
                for t in &out.captured {
                    e.str(&t.name);
                    t.ne.iter().for_each(|&n| e.u64(n));
                    e.f32s(&t.data);
                }
            }
            Response::Done => e = Enc::default().tag(7),
            Response::Error(m) => {
                e = Enc::default().tag(8);
                e.str(m);
            }
            Response::Timings(t) => {
                e = Enc::default().tag(9);
                e.u64(t.prefill_ns);
                e.u64(t.decode_ns);
                e.i32s(&t.tokens);
            }
        }
        e.0
    }

    /// Parses a response payload.
    pub fn decode(payload: &[u8]) -> Result<Response, DecodeError> {
        let mut d = Dec(payload);
        let r = match d.u8()? {
            0 => Response::Version(d.str()?),
            1 => Response::Loaded(ModelInfo {
                n_vocab: d.u32()?,
                n_ctx: d.u32()?,
                bos: d.i32()?,
                eos: d.i32()?,
                description: d.str()?,
            }),
            2 => Response::Tokens(d.i32s()?),
            3 => Response::Bytes(d.bytes()?),
            4 => Response::Floats(d.f32s()?),
            5 => Response::Scalar(d.f32()?),
            6 => {
                let n_vocab = d.u32()?;
                let logits = d.f32s()?;
                // A captured tensor takes at least 4 + 32 + 4 bytes.
                let n = d.count(40)?;
                let mut captured = Vec::with_capacity(n);
                for _ in 0..n {
                    captured.push(CapturedTensor {
                        name: d.str()?,
                        ne: [d.u64()?, d.u64()?, d.u64()?, d.u64()?],
                        data: d.f32s()?,
                    });
                }
                Response::Evaluated(EvalOutput {
                    n_vocab,
                    logits,
                    captured,
                })
            }
            7 => Response::Done,
            8 => Response::Error(d.str()?),
            9 => Response::Timings(Timings {
                prefill_ns: d.u64()?,
                decode_ns: d.u64()?,
                tokens: d.i32s()?,
            }),
            _ => return Err(DecodeError("unknown response tag")),
        };
        d.finish(r)
    }
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame length exceeds MAX_FRAME",
        ));
    }
    let mut payload = Vec::new();
    r.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stream ended inside a frame",
        ));
    }
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Version {
                protocol: PROTOCOL_VERSION,
            },
            Request::Load(LoadParams {
                model_path: "/m/ödel.gguf".into(),
                n_ctx: 512,
                n_threads: 2,
                n_batch: 512,
                type_k: KvType::F32,
                type_v: KvType::F16,
                capture: vec!["attn_norm-0".into(), "l_out-*".into()],
                vocab_only: false,
                defaults: true,
                repack: true,
            }),
            Request::Load(LoadParams {
                model_path: "/v/ggml-vocab-llama-bpe.gguf".into(),
                n_ctx: 0,
                n_threads: 1,
                n_batch: 0,
                type_k: KvType::F16,
                type_v: KvType::F32,
                capture: Vec::new(),
                vocab_only: true,
                defaults: false,
                repack: false,
            }),
            Request::Tokenize {
                text: "héllo 世界".into(),
                add_special: true,
                parse_special: false,
            },
            Request::Detokenize {
                tokens: vec![1, -2, 3],
            },
            Request::Eval {
                tokens: vec![128000, 9],
                n_past: 7,
            },
            Request::Reset,
            Request::QuantizeRef {
                ty: 35,
                n_per_row: 256,
                x: vec![0.5; 256],
            },
            Request::QuantizeCpu {
                ty: 15,
                x: vec![-1.0, 2.0],
            },
            Request::Dequantize {
                ty: 34,
                n: 256,
                bytes: vec![7; 54],
            },
            Request::VecDot {
                ty: 35,
                n: 256,
                x: vec![1; 66],
                y: vec![2; 292],
            },
            Request::ConvertModel {
                input: "a".into(),
                output: "b".into(),
                ftype: 137,
            },
            Request::Shutdown,
            Request::Bench {
                prompt: vec![128000, 13, 7932],
                n_decode: 64,
            },
            Request::Bench {
                prompt: Vec::new(),
                n_decode: 0,
            },
        ]
    }

    fn responses() -> Vec<Response> {
        vec![
            Response::Version("llama.cpp b1".into()),
            Response::Loaded(ModelInfo {
                n_vocab: 32000,
                n_ctx: 512,
                bos: 1,
                eos: 2,
                description: "bitnet 2B".into(),
            }),
            Response::Tokens(vec![1, 2]),
            Response::Bytes(vec![0, 255]),
            Response::Floats(vec![f32::MIN, 0.0, f32::MAX]),
            Response::Scalar(-3.5),
            Response::Evaluated(EvalOutput {
                n_vocab: 2,
                logits: vec![1.0, 2.0, 3.0, 4.0],
                captured: vec![CapturedTensor {
                    name: "l_out-0".into(),
                    ne: [2, 2, 1, 1],
                    data: vec![0.25; 4],
                }],
            }),
            Response::Done,
            Response::Error("GGML_ASSERT failed".into()),
            Response::Timings(Timings {
                prefill_ns: 6_123_456_789,
                decode_ns: u64::MAX,
                tokens: vec![42, -1, 128001],
            }),
            Response::Timings(Timings {
                prefill_ns: 0,
                decode_ns: 0,
                tokens: Vec::new(),
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_through_a_frame() {
        let mut pipe = Vec::new();
        for r in requests() {
            write_frame(&mut pipe, &r.encode()).unwrap();
        }
        let mut rd = &pipe[..];
        for r in requests() {
            let payload = read_frame(&mut rd).unwrap().unwrap();
            assert_eq!(Request::decode(&payload).unwrap(), r);
        }
        assert!(read_frame(&mut rd).unwrap().is_none());
        for r in responses() {
            assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn truncated_or_padded_payloads_are_errors_not_panics() {
        for r in requests() {
            let p = r.encode();
            for cut in 0..p.len() {
                assert!(Request::decode(&p[..cut]).is_err(), "{r:?} cut at {cut}");
            }
            let mut long = p.clone();
            long.push(0);
            assert!(Request::decode(&long).is_err());
        }
        for r in responses() {
            let p = r.encode();
            for cut in 0..p.len() {
                assert!(Response::decode(&p[..cut]).is_err(), "{r:?} cut at {cut}");
            }
        }
        // A huge element count with no bytes behind it must not allocate.
        let mut p = vec![3u8];
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Request::decode(&p),
            Err(DecodeError("element count exceeds the frame"))
        );
    }

    #[test]
    fn bench_messages_have_the_documented_layout() {
        let req = Request::Bench {
            prompt: vec![1, -2],
            n_decode: 64,
        };
        let mut want = vec![12u8];
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&1i32.to_le_bytes());
        want.extend_from_slice(&(-2i32).to_le_bytes());
        want.extend_from_slice(&64u32.to_le_bytes());
        assert_eq!(req.encode(), want);

        let resp = Response::Timings(Timings {
            prefill_ns: 5,
            decode_ns: 1 << 40,
            tokens: vec![7],
        });
        let mut want = vec![9u8];
        want.extend_from_slice(&5u64.to_le_bytes());
        want.extend_from_slice(&(1u64 << 40).to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&7i32.to_le_bytes());
        assert_eq!(resp.encode(), want);
    }

    #[test]
    fn a_frame_cut_short_is_an_io_error() {
        let mut pipe = Vec::new();
        write_frame(&mut pipe, &[1, 2, 3]).unwrap();
        pipe.pop();
        assert!(read_frame(&mut &pipe[..]).is_err());
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(read_frame(&mut &huge[..]).is_err());
    }
}
