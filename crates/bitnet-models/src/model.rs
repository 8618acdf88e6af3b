//! The loaded model, its per-session run state, and the forward pass.

use std::path::Path;

use bitnet_gguf::GgufFile;
use bitnet_kernels::float::{f32_to_f16_row, vec_dot_f16, vec_dot_f32};
use bitnet_kernels::ik_float::{ik_dot_f16_f32, ik_dot_f32};
use bitnet_kernels::SumOrder;
use bitnet_pool::Pool;
use half::f16;

use crate::config::{Config, FfnActivation};
use crate::kv_cache::{KvCache, KvStore, KV_STEP};
use crate::matmul::{apply_scale, matmul, Activations, Linear};
use crate::numerics::Numerics;
use crate::ops::{
    relu_sqr_mul, rms_norm, rope_cache, rope_head, softmax_scaled_row, swiglu, FloatDot,
};
use crate::weights::{bind, Weights};
use crate::ModelError;

/// A capture hook: called with a tensor's name as llama.cpp's `cb_eval` sees it
/// (`attn_norm-0`, `Qcur-0`, `kq_soft_max-0`, `l_out-29`, `result_output`, ...), its shape
/// in ggml order (`shape[0]` is the contiguous dimension) and its values. `Send` so that a
/// forward pass may run inside a thread pool; it is only ever called from the thread that
/// runs the pass.
pub type CaptureFn<'a> = dyn FnMut(&str, &[usize], &[f32]) + Send + 'a;

/// Which positions of a batch get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Logits {
    /// Every position (llama.cpp with `logits = true` on every token).
    All,
    /// Only the last position (generation).
    Last,
}

/// A GGUF model: memory-mapped weights bound to the graph of its architecture.
#[derive(Debug)]
pub struct Model {
    file: GgufFile,
    config: Config,
    weights: Weights,
}

impl Model {
    /// Maps `path`, reads the hyper-parameters and validates every tensor's name, type and
    /// shape against them.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        Model::from_gguf(GgufFile::open(path)?)
    }

    /// [`Model::load`] for a file already opened (or held in memory).
    pub fn from_gguf(file: GgufFile) -> Result<Model, ModelError> {
        let config = Config::read(&file)?;
        let weights = bind(&file, &config)?;
        Ok(Model {
            file,
            config,
            weights,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The fast mode's head: replaces a float (F32, F16, BF16) output head — `output.weight`,
    /// or `token_embd.weight` when tied — by a Q8_0 copy with Q8_0 activations, as a file
    /// written with `llama-quantize --output-tensor-type q8_0` has. Decode reads about half
    /// the head's bytes (the 2B-4T head: 657 MB in F16, 349 MB in Q8_0); the logits are no
    /// longer the exact engine's, so parity never runs this way. Call before creating
    /// states; the file's float bytes are read through the file, not the mapping.
    pub fn quantize_head(&mut self) -> Result<(), ModelError> {
        let head = &mut self.weights.output;
        head.repacked = Some(crate::matmul::quantize_q8_0(&self.file, head)?);
        // Its float copy for ik's products (if a state made one) is no longer read.
        head.ik_tiled = std::sync::OnceLock::new();
        head.act = crate::matmul::ActKind::Q8_0;
        Ok(())
    }

    /// Whether [`Model::quantize_head`] replaced the head.
    pub fn head_is_quantized(&self) -> bool {
        matches!(
            self.weights.output.repacked,
            Some(crate::matmul::Repacked::Q8_0(_))
        )
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The underlying file (metadata such as the tokenizer).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// Allocates the KV cache and every scratch buffer for `n_ctx` positions and batches of
    /// up to `n_batch` tokens: after this, [`Model::forward`] allocates nothing unless a
    /// capture hook is set.
    pub fn new_state(
        &self,
        n_ctx: usize,
        n_batch: usize,
        numerics: Numerics,
        threads: usize,
    ) -> Result<State, ModelError> {
        if n_ctx == 0 || n_batch == 0 || threads == 0 {
            return Err(ModelError::InvalidArgument(
                "n_ctx, n_batch and the thread count must be positive".into(),
            ));
        }
        if numerics.float_dot == FloatDot::IkGemm {
            for w in self.weights.linears() {
                w.prepare_ik_tiles(&self.file)?;
            }
        }
        let pool = Pool::new(threads)
            .map_err(|e| ModelError::InvalidArgument(format!("starting {threads} threads: {e}")))?;
        let c = &self.config;
        let n_batch = n_batch.min(n_ctx);
        let kv = KvCache::new(numerics.kv_type, c.n_layer, n_ctx, c.n_embd_kv());
        let k_max = c.n_embd.max(c.n_ff).max(c.n_embd_q());
        let n_out_max = k_max.max(c.n_vocab);
        let cap = kv.capacity();
        Ok(State {
            numerics,
            n_batch,
            n_past: 0,
            acts: Activations::new(&self.weights.act_kinds(), n_batch, k_max),
            kv,
            x: vec![0.0; n_batch * c.n_embd],
            xb: vec![0.0; n_batch * k_max],
            q: vec![0.0; n_batch * c.n_embd_q()],
            k: vec![0.0; n_batch * c.n_embd_kv()],
            v: vec![0.0; n_batch * c.n_embd_kv()],
            kqv: vec![0.0; n_batch * c.n_embd_q()],
            hb: vec![0.0; n_batch * c.n_ff],
            hb2: vec![0.0; n_batch * c.n_ff],
            logits: vec![0.0; n_batch * c.n_vocab],
            tmp: vec![0.0; n_batch * n_out_max],
            rope: vec![0.0; c.n_rot],
            attn: AttnScratch {
                out: vec![0.0; c.n_head * n_batch * c.head_dim],
                att: vec![0.0; c.n_head * cap],
                att16: vec![f16::ZERO; c.n_head * cap],
                q16: vec![f16::ZERO; c.n_head * c.head_dim],
            },
            pool,
        })
    }

    /// Runs `tokens` (at most the state's `n_batch`) at positions `state.n_past()..`,
    /// appending their keys and values to the KV cache, and returns the logits
    /// (`(n_tokens, n_vocab)` for [`Logits::All`], `(1, n_vocab)` for [`Logits::Last`]).
    pub fn forward<'s>(
        &self,
        state: &'s mut State,
        tokens: &[u32],
        logits: Logits,
        mut hook: Option<&mut CaptureFn<'_>>,
    ) -> Result<&'s [f32], ModelError> {
        let c = &self.config;
        let n_tok = tokens.len();
        if n_tok == 0 {
            return Err(ModelError::InvalidArgument(
                "forward of an empty batch".into(),
            ));
        }
        if n_tok > state.n_batch {
            return Err(ModelError::InvalidArgument(format!(
                "batch of {n_tok} tokens exceeds the state's n_batch {}",
                state.n_batch
            )));
        }
        let n_past = state.n_past;
        let n_ctx = state.kv.n_ctx();
        if n_past + n_tok > n_ctx {
            return Err(ModelError::ContextOverflow {
                start: n_past,
                end: n_past + n_tok,
                n_ctx,
            });
        }
        if let Some((index, &token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= c.n_vocab)
        {
            return Err(ModelError::TokenOutOfRange {
                token,
                index,
                n_vocab: c.n_vocab,
            });
        }
        let mut tap = Tap { hook: hook.take() };
        let numerics = state.numerics;
        let (norm, kv_pad, fdot) = (
            numerics.norm,
            numerics.kv_pad.max(KV_STEP),
            numerics.float_dot,
        );
        let State {
            acts,
            kv,
            x,
            xb,
            q,
            k,
            v,
            kqv,
            hb,
            hb2,
            logits: out_logits,
            tmp,
            rope,
            attn,
            pool,
            ..
        } = state;
        let (d, nq, nkv, nff) = (c.n_embd, c.n_embd_q(), c.n_embd_kv(), c.n_ff);
        let file = &self.file;
        // W · x then W's `.scale` (`build_lora_mm` with a scale), out: (n_tok, W.n).
        let mm = |w: &Linear,
                  acts: &mut Activations,
                  input: &[f32],
                  out: &mut [f32],
                  tmp: &mut [f32]| {
            matmul(file, w, acts, input, n_tok, out, tmp, &numerics, pool)?;
            apply_scale(w, &mut out[..n_tok * w.n]);
            Ok::<(), ModelError>(())
        };

        // Shape: x: (n_tok, n_embd), the residual stream.
        for (t, &tok) in tokens.iter().enumerate() {
            self.weights
                .token_embd
                .row(file, tok as usize, &mut x[t * d..(t + 1) * d], tmp)?;
        }
        let theta_scale = c.rope_freq_base.powf(-2.0 / c.n_rot as f32);
        let kq_scale = fault_kq_scale(1.0 / (c.head_dim as f32).sqrt());
        let arch_style = c.arch.rope_style();

        for (layer, lw) in self.weights.layers.iter().enumerate() {
            let il = Some(layer);
            // Shape: xb: (n_tok, n_embd).
            for t in 0..n_tok {
                rms_norm(
                    &x[t * d..(t + 1) * d],
                    &lw.attn_norm,
                    fault_eps("attn_norm", layer, c.rms_eps),
                    norm,
                    &mut xb[t * d..(t + 1) * d],
                );
            }
            fault_perturb("attn_norm", layer, n_past, n_tok, &mut xb[..n_tok * d]);
            tap.emit("attn_norm", il, &[d, n_tok], &xb[..n_tok * d]);

            acts.invalidate();
            // Each projection is named twice before RoPE, as in llama.cpp's graph: the
            // matmul output and its per-head reshape.
            let (hd, nh, nhkv) = (c.head_dim, c.n_head, c.n_head_kv);
            mm(&lw.wq, acts, xb, q, tmp)?;
            tap.emit("Qcur", il, &[nq, n_tok], &q[..n_tok * nq]);
            tap.emit("Qcur", il, &[hd, nh, n_tok], &q[..n_tok * nq]);
            mm(&lw.wk, acts, xb, k, tmp)?;
            tap.emit("Kcur", il, &[nkv, n_tok], &k[..n_tok * nkv]);
            tap.emit("Kcur", il, &[hd, nhkv, n_tok], &k[..n_tok * nkv]);
            mm(&lw.wv, acts, xb, v, tmp)?;
            tap.emit("Vcur", il, &[nkv, n_tok], &v[..n_tok * nkv]);
            tap.emit("Vcur", il, &[hd, nhkv, n_tok], &v[..n_tok * nkv]);

            // Shape: q: (n_tok, n_head, head_dim), k: (n_tok, n_head_kv, head_dim).
            let style = fault_rope_style(layer, arch_style);
            for t in 0..n_tok {
                rope_cache(n_past + t, theta_scale, c.rope_freq_scale, rope);
                for head in q[t * nq..(t + 1) * nq].chunks_exact_mut(c.head_dim) {
                    rope_head(head, rope, style);
                }
                for head in k[t * nkv..(t + 1) * nkv].chunks_exact_mut(c.head_dim) {
                    rope_head(head, rope, style);
                }
            }
            tap.emit("Qcur", il, &[hd, nh, n_tok], &q[..n_tok * nq]);
            tap.emit("Kcur", il, &[hd, nhkv, n_tok], &k[..n_tok * nkv]);
            for t in 0..n_tok {
                let (kr, vr) = (&k[t * nkv..(t + 1) * nkv], &v[t * nkv..(t + 1) * nkv]);
                if let Some(cell) = fault_kv_cell(n_past + t, kv.capacity()) {
                    kv.store(layer, cell, kr, vr);
                }
            }

            attention(
                c, kv, layer, n_past, n_tok, kq_scale, kv_pad, fdot, q, kqv, attn, pool, &mut tap,
            )?;
            fault_perturb("kqv_out", layer, n_past, n_tok, &mut kqv[..n_tok * nq]);
            tap.emit("kqv_out", il, &[nq, n_tok], &kqv[..n_tok * nq]);

            let attn_sub_norm = lw
                .attn_sub_norm
                .as_ref()
                .filter(|_| fault_keep_sub_norm("attn_sub_norm"));
            let attn_in: &[f32] = match attn_sub_norm {
                Some(w) => {
                    for t in 0..n_tok {
                        rms_norm(
                            &kqv[t * nq..(t + 1) * nq],
                            w,
                            fault_eps("attn_sub_norm", layer, c.rms_eps),
                            norm,
                            &mut xb[t * nq..(t + 1) * nq],
                        );
                    }
                    fault_perturb("attn_sub_norm", layer, n_past, n_tok, &mut xb[..n_tok * nq]);
                    tap.emit("attn_sub_norm", il, &[nq, n_tok], &xb[..n_tok * nq]);
                    xb
                }
                None => kqv,
            };
            acts.invalidate();
            // Shape: hb: (n_tok, n_embd) here, the attention output.
            if fault_keep_attn_output_scale(layer) {
                mm(&lw.wo, acts, attn_in, hb, tmp)?;
            } else {
                matmul(file, &lw.wo, acts, attn_in, n_tok, hb, tmp, &numerics, pool)?;
            }
            tap.emit("attn_out", il, &[d, n_tok], &hb[..n_tok * d]);
            for (xv, &a) in x[..n_tok * d].iter_mut().zip(&hb[..n_tok * d]) {
                *xv += a;
            }
            tap.emit("ffn_inp", il, &[d, n_tok], &x[..n_tok * d]);

            for t in 0..n_tok {
                rms_norm(
                    &x[t * d..(t + 1) * d],
                    &lw.ffn_norm,
                    fault_eps("ffn_norm", layer, c.rms_eps),
                    norm,
                    &mut xb[t * d..(t + 1) * d],
                );
            }
            fault_perturb("ffn_norm", layer, n_past, n_tok, &mut xb[..n_tok * d]);
            tap.emit("ffn_norm", il, &[d, n_tok], &xb[..n_tok * d]);
            acts.invalidate();
            // Shape: hb2: (n_tok, n_ff) up, hb: (n_tok, n_ff) gate.
            // build_ffn names the bare products and then, when scaled, `ffn_up_s`/`ffn_gate_s`.
            matmul(file, &lw.ffn_up, acts, xb, n_tok, hb2, tmp, &numerics, pool)?;
            fault_perturb("ffn_up", layer, n_past, n_tok, &mut hb2[..n_tok * nff]);
            tap.emit("ffn_up", il, &[nff, n_tok], &hb2[..n_tok * nff]);
            if lw.ffn_up.scale.is_some() {
                apply_scale(&lw.ffn_up, &mut hb2[..n_tok * nff]);
                tap.emit("ffn_up_s", il, &[nff, n_tok], &hb2[..n_tok * nff]);
            }
            matmul(
                file,
                &lw.ffn_gate,
                acts,
                xb,
                n_tok,
                hb,
                tmp,
                &numerics,
                pool,
            )?;
            fault_perturb("ffn_gate", layer, n_past, n_tok, &mut hb[..n_tok * nff]);
            tap.emit("ffn_gate", il, &[nff, n_tok], &hb[..n_tok * nff]);
            if lw.ffn_gate.scale.is_some() {
                apply_scale(&lw.ffn_gate, &mut hb[..n_tok * nff]);
                tap.emit("ffn_gate_s", il, &[nff, n_tok], &hb[..n_tok * nff]);
            }
            let ffn_activation = fault_ffn_activation(c.ffn_activation);
            for t in 0..n_tok {
                let r = t * nff..(t + 1) * nff;
                let (g, u, o) = (&hb[r.clone()], &hb2[r.clone()], &mut xb[r]);
                match ffn_activation {
                    FfnActivation::Silu => swiglu(g, u, o),
                    FfnActivation::ReluSqr => relu_sqr_mul(g, u, o),
                }
            }
            let act_name = if c.arch.has_sub_norms() {
                "ffn_sub_out"
            } else {
                "ffn_swiglu"
            };
            tap.emit(act_name, il, &[nff, n_tok], &xb[..n_tok * nff]);
            let ffn_sub_norm = lw
                .ffn_sub_norm
                .as_ref()
                .filter(|_| fault_keep_sub_norm("ffn_sub_norm"));
            let down_in: &[f32] = match ffn_sub_norm {
                Some(w) => {
                    for t in 0..n_tok {
                        rms_norm(
                            &xb[t * nff..(t + 1) * nff],
                            w,
                            fault_eps("ffn_sub_norm", layer, c.rms_eps),
                            norm,
                            &mut hb[t * nff..(t + 1) * nff],
                        );
                    }
                    fault_perturb("ffn_sub_norm", layer, n_past, n_tok, &mut hb[..n_tok * nff]);
                    tap.emit("ffn_sub_norm", il, &[nff, n_tok], &hb[..n_tok * nff]);
                    hb
                }
                None => xb,
            };
            acts.invalidate();
            // Shape: hb2: (n_tok, n_embd) here, the FFN output.
            mm(&lw.ffn_down, acts, down_in, hb2, tmp)?;
            let down_name = if c.arch.has_sub_norms() {
                "ffn_down"
            } else {
                "ffn_out"
            };
            tap.emit(down_name, il, &[d, n_tok], &hb2[..n_tok * d]);
            for (xv, &f) in x[..n_tok * d].iter_mut().zip(&hb2[..n_tok * d]) {
                *xv += f;
            }
            tap.emit("l_out", il, &[d, n_tok], &x[..n_tok * d]);
        }

        // Only the rows that get logits go through the head.
        let first = match logits {
            Logits::All => 0,
            Logits::Last => n_tok - 1,
        };
        let n_out = n_tok - first;
        for t in 0..n_out {
            let src = &x[(first + t) * d..(first + t + 1) * d];
            rms_norm(
                src,
                &self.weights.output_norm,
                c.rms_eps,
                norm,
                &mut xb[t * d..(t + 1) * d],
            );
        }
        tap.emit("result_norm", None, &[d, n_out], &xb[..n_out * d]);
        acts.invalidate();
        let nv = c.n_vocab;
        matmul(
            file,
            &self.weights.output,
            acts,
            xb,
            n_out,
            out_logits,
            tmp,
            &numerics,
            pool,
        )?;
        tap.emit(
            "result_output",
            None,
            &[nv, n_out],
            &out_logits[..n_out * nv],
        );
        state.n_past = n_past + n_tok;
        Ok(&state.logits[..n_out * nv])
    }
}

/// Causal multi-head attention for a batch at positions `n_past..n_past + n_tok` whose keys
/// and values are already in the cache, one head per task. Shapes: q, kqv:
/// (n_tok, n_head, head_dim); `scratch` holds the per-head buffers.
#[allow(clippy::too_many_arguments)]
fn attention(
    c: &Config,
    kv: &KvCache,
    layer: usize,
    n_past: usize,
    n_tok: usize,
    kq_scale: f32,
    kv_pad: usize,
    fdot: FloatDot,
    q: &[f32],
    kqv: &mut [f32],
    scratch: &mut AttnScratch,
    pool: &Pool,
    tap: &mut Tap<'_, '_>,
) -> Result<(), ModelError> {
    let (hd, nq, cap) = (c.head_dim, c.n_embd_q(), kv.capacity());
    let head = Head {
        c,
        kv,
        layer,
        n_past,
        kq_scale,
        fdot,
        q,
    };
    let AttnScratch {
        out,
        att,
        att16,
        q16,
    } = scratch;
    // Shape: out: (n_head, n_tok, head_dim), head-major so that heads split into chunks.
    let out = &mut out[..c.n_head * n_tok * hd];
    if tap.is_on() {
        // The reference's KV length for this batch (capture shapes only): the cache size
        // and the used cells each rounded up to `kv_pad`, the smaller, at least one pad.
        let n_kv = {
            let pad = |n: usize| n.div_ceil(kv_pad) * kv_pad;
            pad(kv.n_ctx()).min(pad(n_past + n_tok).max(kv_pad))
        };
        // (n_head, n_tok, n_kv), masked cells 0.
        let mut kq = vec![0.0f32; n_kv * n_tok * c.n_head];
        let mut probs = kq.clone();
        for (h, ((o, kqh), ph)) in out
            .chunks_mut(n_tok * hd)
            .zip(kq.chunks_mut(n_tok * n_kv))
            .zip(probs.chunks_mut(n_tok * n_kv))
            .enumerate()
        {
            let capture = Some((kqh, ph, n_kv));
            head.run(
                h,
                o,
                &mut att[..cap],
                &mut att16[..cap],
                &mut q16[..hd],
                capture,
            )?;
        }
        let shape = [n_kv, n_tok, c.n_head];
        tap.emit("kq", Some(layer), &shape, &kq);
        tap.emit("kq_soft_max", Some(layer), &shape, &probs);
    } else {
        let heads = out
            .chunks_mut(n_tok * hd)
            .zip(att.chunks_mut(cap))
            .zip(att16.chunks_mut(cap))
            .zip(q16.chunks_mut(hd))
            .enumerate();
        pool.try_for_each(heads, |(h, (((o, a), a16), q16))| {
            head.run(h, o, a, a16, q16, None)
        })?;
    }
    // (n_head, n_tok, head_dim) → (n_tok, n_head, head_dim).
    for (h, oh) in out.chunks_exact(n_tok * hd).enumerate() {
        for (t, ot) in oh.chunks_exact(hd).enumerate() {
            kqv[t * nq + h * hd..t * nq + (h + 1) * hd].copy_from_slice(ot);
        }
    }
    Ok(())
}

/// Per-head attention buffers, allocated once per session (never printed: `State`'s
/// `Debug` summarizes).
struct AttnScratch {
    /// Head-major attention output: (n_head, n_batch, head_dim).
    out: Vec<f32>,
    /// One attention row per head: (n_head, KV capacity).
    att: Vec<f32>,
    att16: Vec<f16>,
    /// One query head rounded to f16, per head: (n_head, head_dim).
    q16: Vec<f16>,
}

/// What every head of one attention call shares.
struct Head<'a> {
    c: &'a Config,
    kv: &'a KvCache,
    layer: usize,
    n_past: usize,
    kq_scale: f32,
    fdot: FloatDot,
    /// (n_tok, n_head, head_dim).
    q: &'a [f32],
}

impl Head<'_> {
    /// Head `h` for every token of the batch. Per token at position `pos`:
    /// `kq[i] = k_i · q` over the cells `0..=pos`, ggml's scaled softmax, then
    /// `out[d] = Vᵀ[d] · p` over those cells rounded up to [`KV_STEP`] (the extra weights are
    /// exact zeros, as ggml's masked cells are). With an F16 cache and ggml's dots, q and p
    /// are rounded to f16 first (ggml converts a matmul's F32 operand to its F16 partner's
    /// type). Shapes: out: (n_tok, head_dim); att, att16: (capacity,); q16: (head_dim,);
    /// capture: (n_tok, n_kv) for `kq` and for the probabilities.
    fn run(
        &self,
        h: usize,
        out: &mut [f32],
        att: &mut [f32],
        att16: &mut [f16],
        q16: &mut [f16],
        mut capture: Option<(&mut [f32], &mut [f32], usize)>,
    ) -> Result<(), ModelError> {
        let (c, kv, fdot) = (self.c, self.kv, self.fdot);
        let (hd, nq, nkv, cap) = (c.head_dim, c.n_embd_q(), c.n_embd_kv(), kv.capacity());
        let g = h / (c.n_head / c.n_head_kv);
        let layer = self.layer;
        let kerr = |source| ModelError::Kernel {
            tensor: format!("kq-{layer}"),
            source,
        };
        let k_at = |i: usize| (layer * cap + i) * nkv + g * hd;
        let v_at = |dd: usize| (layer * nkv + g * hd + dd) * cap;
        let ggml_f16 = fdot == FloatDot::Ggml && matches!(kv.store, KvStore::F16 { .. });
        for (t, o) in out.chunks_exact_mut(hd).enumerate() {
            let n = self.n_past + t + 1;
            let n_step = n.div_ceil(KV_STEP) * KV_STEP;
            let qh = &self.q[t * nq + h * hd..t * nq + (h + 1) * hd];
            if ggml_f16 {
                f32_to_f16_row(qh, q16).map_err(kerr)?;
            }
            let q16: &[f16] = q16;
            // k_i · q for cell i. Shape: K row (head_dim,).
            let kq_at = |i: usize| -> Result<f32, ModelError> {
                let r = k_at(i)..k_at(i) + hd;
                match (&kv.store, fdot) {
                    (KvStore::F32 { k, .. }, FloatDot::Ggml) => {
                        vec_dot_f32(SumOrder::GgmlAvx2, &k[r], qh)
                    }
                    (KvStore::F16 { k, .. }, FloatDot::Ggml) => {
                        vec_dot_f16(SumOrder::GgmlAvx2, &k[r], q16)
                    }
                    (KvStore::F32 { k, .. }, FloatDot::IkGemm) => ik_dot_f32(&k[r], qh),
                    (KvStore::F16 { k, .. }, FloatDot::IkGemm) => ik_dot_f16_f32(&k[r], qh),
                }
                .map_err(kerr)
            };
            let row = &mut att[..n_step];
            for (i, a) in row[..n].iter_mut().enumerate() {
                *a = kq_at(i)?;
            }
            if let Some((kq, _, n_kv)) = capture.as_mut() {
                // ggml's `kq` holds the product with every cell, masked or not; the cells
                // past the causal position are computed here for the capture only.
                let dst = &mut kq[t * *n_kv..(t + 1) * *n_kv];
                dst[..n].copy_from_slice(&row[..n]);
                for (i, x) in dst.iter_mut().enumerate().take(cap).skip(n) {
                    *x = kq_at(i)?;
                }
            }
            softmax_scaled_row(&mut row[..n], self.kq_scale);
            row[n..].fill(0.0);
            if let Some((_, probs, n_kv)) = capture.as_mut() {
                probs[t * *n_kv..t * *n_kv + n].copy_from_slice(&row[..n]);
            }
            if ggml_f16 {
                f32_to_f16_row(row, &mut att16[..n_step]).map_err(kerr)?;
            }
            let (row, p16): (&[f32], &[f16]) = (row, &att16[..n_step]);
            // Vᵀ[d] · p over the cells rounded up to KV_STEP. Shape: Vᵀ row (n_step,).
            for (dd, y) in o.iter_mut().enumerate() {
                let r = v_at(dd)..v_at(dd) + n_step;
                *y = match (&kv.store, fdot) {
                    (KvStore::F32 { vt, .. }, FloatDot::Ggml) => {
                        vec_dot_f32(SumOrder::GgmlAvx2, &vt[r], row)
                    }
                    (KvStore::F16 { vt, .. }, FloatDot::Ggml) => {
                        vec_dot_f16(SumOrder::GgmlAvx2, &vt[r], p16)
                    }
                    (KvStore::F32 { vt, .. }, FloatDot::IkGemm) => ik_dot_f32(&vt[r], row),
                    (KvStore::F16 { vt, .. }, FloatDot::IkGemm) => ik_dot_f16_f32(&vt[r], row),
                }
                .map_err(kerr)?;
            }
        }
        Ok(())
    }
}

/// Per-session buffers: the KV cache and every activation of one batch.
pub struct State {
    numerics: Numerics,
    /// Largest batch one forward call takes.
    n_batch: usize,
    /// Positions already in the KV cache.
    n_past: usize,
    kv: KvCache,
    acts: Activations,
    /// Residual stream: (n_batch, n_embd).
    x: Vec<f32>,
    /// Norm outputs and the FFN activation: (n_batch, max(n_embd, n_ff, n_embd_q)).
    xb: Vec<f32>,
    /// Q: (n_batch, n_head · head_dim).
    q: Vec<f32>,
    /// K, V of the batch: (n_batch, n_head_kv · head_dim).
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output: (n_batch, n_head · head_dim).
    kqv: Vec<f32>,
    /// FFN gate / attention output / sub-norm: (n_batch, n_ff).
    hb: Vec<f32>,
    /// FFN up / FFN output: (n_batch, n_ff).
    hb2: Vec<f32>,
    /// (n_batch, n_vocab).
    logits: Vec<f32>,
    /// Matmul transpose buffer: (max(n_ff, n_embd, n_vocab), n_batch).
    tmp: Vec<f32>,
    /// RoPE cos/sin of one position: (n_rot,).
    rope: Vec<f32>,
    attn: AttnScratch,
    /// The threads every parallel region of a forward pass runs on.
    pool: Pool,
}

/// Summarizes: the buffers hold megabytes.
impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("numerics", &self.numerics)
            .field("n_ctx", &self.kv.n_ctx())
            .field("n_batch", &self.n_batch)
            .field("n_past", &self.n_past)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Positions in the KV cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Context size (positions the KV cache holds).
    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx()
    }

    /// Largest batch per forward call.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    pub fn numerics(&self) -> Numerics {
        self.numerics
    }

    /// Forgets every position (the cache contents are simply overwritten later).
    pub fn reset(&mut self) {
        self.n_past = 0;
    }

    /// Keeps positions `< n_past` and drops the rest; `n_past` beyond the current length is
    /// an error.
    pub fn truncate(&mut self, n_past: usize) -> Result<(), ModelError> {
        if n_past > self.n_past {
            return Err(ModelError::InvalidArgument(format!(
                "cannot truncate to {n_past}: only {} positions are cached",
                self.n_past
            )));
        }
        self.n_past = n_past;
        Ok(())
    }
}

/// The capture hook, checked once per op; names are formatted only when it is set.
struct Tap<'h, 'a> {
    hook: Option<&'h mut CaptureFn<'a>>,
}

impl Tap<'_, '_> {
    fn is_on(&self) -> bool {
        self.hook.is_some()
    }

    fn emit(&mut self, base: &str, layer: Option<usize>, shape: &[usize], data: &[f32]) {
        if let Some(h) = self.hook.as_deref_mut() {
            match layer {
                Some(il) => h(&format!("{base}-{il}"), shape, data),
                None => h(base, shape, data),
            }
        }
    }
}

// Fault-injection hooks (`crate::fault`): with the feature off they are the identity and
// compile to nothing.

#[cfg(feature = "fault-injection")]
use crate::fault::{
    ffn_activation as fault_ffn_activation, keep_attn_output_scale as fault_keep_attn_output_scale,
    keep_sub_norm as fault_keep_sub_norm, kq_scale as fault_kq_scale, perturb as fault_perturb,
    rms_eps as fault_eps, rope_style as fault_rope_style,
};

/// The KV cell of the token at `pos`, if inside the cache's `capacity` cells.
#[cfg(feature = "fault-injection")]
fn fault_kv_cell(pos: usize, capacity: usize) -> Option<usize> {
    Some(crate::fault::kv_cell(pos)).filter(|&c| c < capacity)
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault_perturb(_base: &str, _layer: usize, _n_past: usize, _n_tok: usize, _data: &mut [f32]) {}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault_eps(_base: &str, _layer: usize, eps: f32) -> f32 {
    eps
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault_rope_style(_layer: usize, style: crate::ops::RopeStyle) -> crate::ops::RopeStyle {
    style
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault_keep_attn_output_scale(_layer: usize) -> bool {
    true
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault_kq_scale(scale: f32) -> f32 {
    scale
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault_kv_cell(pos: usize, _capacity: usize) -> Option<usize> {
    Some(pos)
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault_keep_sub_norm(_base: &str) -> bool {
    true
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault_ffn_activation(activation: FfnActivation) -> FfnActivation {
    activation
}
