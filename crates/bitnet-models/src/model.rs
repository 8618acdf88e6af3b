//! The loaded model, its per-session run state, and the forward pass.

use std::path::Path;

use bitnet_gguf::GgufFile;
use bitnet_kernels::float::{round_to_f16_in_place, vec_dot_rows, FloatRows, Rows};
use bitnet_kernels::ik_float::ik_dot_rows;
use bitnet_kernels::{KernelError, SumOrder};
use bitnet_pool::Pool;
use half::f16;

use crate::config::{Config, FfnActivation};
use crate::graph::Op;
use crate::kv_cache::{KvCache, KvPart, KvStore, KV_STEP};
use crate::matmul::{apply_scale, matmul, matmul_scratch_len, Activations, Linear};
use crate::numerics::Numerics;
use crate::ops::{
    relu_sqr_mul, rms_norm, rope_cache, rope_head, softmax_scaled_row, swiglu, FloatDot,
};
use crate::weights::{bind, Embedding, LayerWeights, Weights};
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
        // Its float copies (if a state made them) are no longer read.
        head.ik_tiled = std::sync::OnceLock::new();
        head.in_memory = std::sync::OnceLock::new();
        Ok(())
    }

    /// Whether [`Model::quantize_head`] replaced the head.
    pub fn head_is_quantized(&self) -> bool {
        self.weights
            .output
            .repacked
            .as_ref()
            .is_some_and(|r| !r.exact)
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
        let ik = numerics.float_dot == FloatDot::IkGemm;
        for w in self.weights.linears() {
            w.prepare_copies(&self.file, ik)?;
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
            acts: Activations::new(
                &self
                    .weights
                    .act_formats(numerics.float_dot == FloatDot::IkGemm),
                n_batch,
                k_max,
            ),
            kv,
            bufs: Buffers {
                x: vec![0.0; n_batch * c.n_embd],
                xb: vec![0.0; n_batch * k_max],
                q: vec![0.0; n_batch * c.n_embd_q()],
                k: vec![0.0; n_batch * c.n_embd_kv()],
                v: vec![0.0; n_batch * c.n_embd_kv()],
                kqv: vec![0.0; n_batch * c.n_embd_q()],
                hb: vec![0.0; n_batch * c.n_ff],
                hb2: vec![0.0; n_batch * c.n_ff],
                logits: vec![0.0; n_batch * c.n_vocab],
                tmp: vec![
                    0.0;
                    matmul_scratch_len(n_out_max, n_batch, pool.threads()).max(c.n_embd)
                ],
                rope: vec![0.0; c.n_rot],
                attn: AttnScratch {
                    out: vec![0.0; c.n_head * n_batch * c.head_dim],
                    att: vec![0.0; c.n_head * cap],
                    att16: vec![f16::ZERO; c.n_head * cap],
                    q16: vec![f16::ZERO; c.n_head * c.head_dim],
                    qr: vec![0.0; c.n_head * c.head_dim],
                },
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
        hook: Option<&mut CaptureFn<'_>>,
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
        let State {
            numerics,
            acts,
            kv,
            bufs,
            pool,
            ..
        } = state;
        let mut pass = Pass {
            c,
            file: &self.file,
            numerics: *numerics,
            pool,
            n_past,
            n_tok,
            tap: Tap {
                hook,
                n_past,
                n_tok,
            },
        };
        pass.embed(&self.weights.token_embd, tokens, bufs)?;
        for (layer, lw) in self.weights.layers.iter().enumerate() {
            pass.attention_block(layer, lw, kv, acts, bufs)?;
            pass.ffn_block(layer, lw, acts, bufs)?;
        }
        let n_out = pass.head(&self.weights, logits, acts, bufs)?;
        state.n_past = n_past + n_tok;
        Ok(&state.bufs.logits[..n_out * c.n_vocab])
    }
}

/// What every block of one forward call reads: the model, the settings and the batch at
/// positions `n_past..n_past + n_tok`.
struct Pass<'m, 'h, 'a> {
    c: &'m Config,
    file: &'m GgufFile,
    numerics: Numerics,
    pool: &'m Pool,
    n_past: usize,
    n_tok: usize,
    tap: Tap<'h, 'a>,
}

impl Pass<'_, '_, '_> {
    /// `out = W · input` for the batch, then times W's `.scale` if `scaled` and it has one
    /// (`build_lora_mm`). input: (n_tok, W.k), out: (n_tok, W.n).
    fn matmul(
        &self,
        w: &Linear,
        acts: &mut Activations,
        input: &[f32],
        out: &mut [f32],
        tmp: &mut [f32],
        scaled: bool,
    ) -> Result<(), ModelError> {
        let n_tok = self.n_tok;
        matmul(
            self.file,
            w,
            acts,
            input,
            n_tok,
            out,
            tmp,
            &self.numerics,
            self.pool,
        )?;
        if scaled {
            apply_scale(w, &mut out[..n_tok * w.n]);
        }
        Ok(())
    }

    /// A product named twice, as `build_ffn` names it: the bare product as `bare` and, when
    /// W has a `.scale`, the scaled one as `scaled`.
    #[allow(clippy::too_many_arguments)]
    fn scaled_product(
        &mut self,
        layer: usize,
        w: &Linear,
        (bare, scaled): (Op, Op),
        acts: &mut Activations,
        input: &[f32],
        out: &mut [f32],
        tmp: &mut [f32],
    ) -> Result<(), ModelError> {
        let len = self.n_tok * w.n;
        let shape = [w.n, self.n_tok];
        self.matmul(w, acts, input, out, tmp, false)?;
        self.tap.op(bare, Some(layer), &shape, &mut out[..len]);
        if w.scale.is_some() {
            apply_scale(w, &mut out[..len]);
            self.tap.op(scaled, Some(layer), &shape, &mut out[..len]);
        }
        Ok(())
    }

    /// BitNet's sub-norm before the attention output and FFN down projections: `src`
    /// normalised into `out` with gain `w`, or `src` itself where the architecture has none.
    #[allow(clippy::too_many_arguments)]
    fn sub_norm<'b>(
        &mut self,
        op: Op,
        layer: Option<usize>,
        rows: usize,
        width: usize,
        w: Option<&[f32]>,
        src: &'b [f32],
        out: &'b mut [f32],
    ) -> &'b [f32] {
        match w.filter(|_| fault_keep_sub_norm(op.name())) {
            Some(w) => {
                self.norm(op, layer, rows, width, src, w, out);
                out
            }
            None => src,
        }
    }

    /// Norm `op` of each of `rows` rows of `width` values of `src` into `out`, with weight
    /// `w`; `layer` is `None` for the output norm.
    #[allow(clippy::too_many_arguments)]
    fn norm(
        &mut self,
        op: Op,
        layer: Option<usize>,
        rows: usize,
        width: usize,
        src: &[f32],
        w: &[f32],
        out: &mut [f32],
    ) {
        let eps = match layer {
            Some(il) => fault_eps(op.name(), il, self.c.rms_eps),
            None => self.c.rms_eps,
        };
        let (src, out) = (&src[..rows * width], &mut out[..rows * width]);
        // Shape: src, out: (rows, width).
        for (s, o) in src.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
            rms_norm(s, w, eps, self.numerics.norm, o);
        }
        self.tap.op(op, layer, &[width, rows], out);
    }

    /// The residual stream of the batch from its tokens' embeddings. x: (n_tok, n_embd).
    fn embed(
        &mut self,
        token_embd: &Embedding,
        tokens: &[u32],
        b: &mut Buffers,
    ) -> Result<(), ModelError> {
        let d = self.c.n_embd;
        for (&tok, row) in tokens.iter().zip(b.x.chunks_exact_mut(d)) {
            token_embd.row(self.file, tok as usize, row, &mut b.tmp)?;
        }
        Ok(())
    }

    /// Layer `layer`'s attention block: norm, Q/K/V, RoPE, the KV cache, attention, the
    /// sub-norm, the output projection and the residual add. x: (n_tok, n_embd), in and out.
    fn attention_block(
        &mut self,
        layer: usize,
        lw: &LayerWeights,
        kv: &mut KvCache,
        acts: &mut Activations,
        b: &mut Buffers,
    ) -> Result<(), ModelError> {
        let (c, n_tok, il) = (self.c, self.n_tok, Some(layer));
        let (d, nq, hd) = (c.n_embd, c.n_embd_q(), c.head_dim);
        let Buffers {
            x,
            xb,
            q,
            k,
            v,
            kqv,
            hb,
            tmp,
            rope,
            attn,
            ..
        } = b;
        self.norm(Op::AttnNorm, il, n_tok, d, x, &lw.attn_norm, xb);

        acts.invalidate();
        // Each projection is named twice before RoPE, as in llama.cpp's graph: the matmul
        // output and its per-head reshape. Shape: q: (n_tok, n_head, head_dim), k, v:
        // (n_tok, n_head_kv, head_dim).
        for (w, out, op, heads) in [
            (&lw.wq, &mut *q, Op::Qcur, c.n_head),
            (&lw.wk, &mut *k, Op::Kcur, c.n_head_kv),
            (&lw.wv, &mut *v, Op::Vcur, c.n_head_kv),
        ] {
            let out = &mut out[..n_tok * w.n];
            self.matmul(w, acts, xb, out, tmp, true)?;
            self.tap.op(op, il, &[w.n, n_tok], out);
            self.tap.show(op, il, &[hd, heads, n_tok], out);
        }
        self.rope(layer, q, k, rope);

        let nkv = c.n_embd_kv();
        for t in 0..n_tok {
            let (kr, vr) = (&k[t * nkv..(t + 1) * nkv], &v[t * nkv..(t + 1) * nkv]);
            if let Some(cell) = fault_kv_cell(self.n_past + t, kv.capacity()) {
                kv.store(layer, cell, kr, vr);
            }
        }
        self.attention(kv, layer, q, kqv, attn)?;
        self.tap
            .op(Op::KqvOut, il, &[nq, n_tok], &mut kqv[..n_tok * nq]);

        let attn_in = self.sub_norm(
            Op::AttnSubNorm,
            il,
            n_tok,
            nq,
            lw.attn_sub_norm.as_deref(),
            kqv,
            xb,
        );
        acts.invalidate();
        // Shape: hb: (n_tok, n_embd) here, the attention output.
        let scaled = fault_keep_attn_output_scale(layer);
        self.matmul(&lw.wo, acts, attn_in, hb, tmp, scaled)?;
        self.tap
            .op(Op::AttnOut, il, &[d, n_tok], &mut hb[..n_tok * d]);
        let x = &mut x[..n_tok * d];
        for (xv, &a) in x.iter_mut().zip(hb.iter()) {
            *xv += a;
        }
        self.tap.op(Op::FfnInp, il, &[d, n_tok], x);
        Ok(())
    }

    /// RoPE on the batch's queries and keys, named again as `Qcur`/`Kcur`. Shapes: q:
    /// (n_tok, n_head, head_dim), k: (n_tok, n_head_kv, head_dim), rope: (n_rot,).
    fn rope(&mut self, layer: usize, q: &mut [f32], k: &mut [f32], rope: &mut [f32]) {
        let (c, n_tok) = (self.c, self.n_tok);
        let (nq, nkv, hd) = (c.n_embd_q(), c.n_embd_kv(), c.head_dim);
        let theta_scale = c.rope_freq_base.powf(-2.0 / c.n_rot as f32);
        let style = fault_rope_style(layer, c.arch.rope_style());
        for t in 0..n_tok {
            rope_cache(self.n_past + t, theta_scale, c.rope_freq_scale, rope);
            for head in q[t * nq..(t + 1) * nq].chunks_exact_mut(hd) {
                rope_head(head, rope, style);
            }
            for head in k[t * nkv..(t + 1) * nkv].chunks_exact_mut(hd) {
                rope_head(head, rope, style);
            }
        }
        let il = Some(layer);
        self.tap
            .show(Op::Qcur, il, &[hd, c.n_head, n_tok], &q[..n_tok * nq]);
        self.tap
            .show(Op::Kcur, il, &[hd, c.n_head_kv, n_tok], &k[..n_tok * nkv]);
    }

    /// Layer `layer`'s FFN block: norm, up and gate, the gate activation, the sub-norm, the
    /// down projection and the residual add. x: (n_tok, n_embd), in and out.
    fn ffn_block(
        &mut self,
        layer: usize,
        lw: &LayerWeights,
        acts: &mut Activations,
        b: &mut Buffers,
    ) -> Result<(), ModelError> {
        let (c, n_tok, il) = (self.c, self.n_tok, Some(layer));
        let (d, nff) = (c.n_embd, c.n_ff);
        let Buffers {
            x,
            xb,
            hb,
            hb2,
            tmp,
            ..
        } = b;
        self.norm(Op::FfnNorm, il, n_tok, d, x, &lw.ffn_norm, xb);
        acts.invalidate();
        // Shape: hb2: (n_tok, n_ff) up, hb: (n_tok, n_ff) gate.
        let up = (Op::FfnUp, Op::FfnUpS);
        self.scaled_product(layer, &lw.ffn_up, up, acts, xb, hb2, tmp)?;
        let gate = (Op::FfnGate, Op::FfnGateS);
        self.scaled_product(layer, &lw.ffn_gate, gate, acts, xb, hb, tmp)?;

        let activation = fault_ffn_activation(c.ffn_activation);
        let (g, u) = (&hb[..n_tok * nff], &hb2[..n_tok * nff]);
        let gated = &mut xb[..n_tok * nff];
        // Shape: g, u, gated: (n_tok, n_ff).
        for ((g, u), o) in g
            .chunks_exact(nff)
            .zip(u.chunks_exact(nff))
            .zip(gated.chunks_exact_mut(nff))
        {
            match activation {
                FfnActivation::Silu => swiglu(g, u, o),
                FfnActivation::ReluSqr => relu_sqr_mul(g, u, o),
            }
        }
        let (gated_op, down_op) = if c.arch.has_sub_norms() {
            (Op::FfnSubOut, Op::FfnDown)
        } else {
            (Op::FfnSwiglu, Op::FfnOut)
        };
        self.tap.op(gated_op, il, &[nff, n_tok], gated);

        let down_in = self.sub_norm(
            Op::FfnSubNorm,
            il,
            n_tok,
            nff,
            lw.ffn_sub_norm.as_deref(),
            xb,
            hb,
        );
        acts.invalidate();
        // Shape: hb2: (n_tok, n_embd) here, the FFN output.
        self.matmul(&lw.ffn_down, acts, down_in, hb2, tmp, true)?;
        self.tap.op(down_op, il, &[d, n_tok], &mut hb2[..n_tok * d]);
        let x = &mut x[..n_tok * d];
        for (xv, &f) in x.iter_mut().zip(hb2.iter()) {
            *xv += f;
        }
        self.tap.op(Op::LOut, il, &[d, n_tok], x);
        Ok(())
    }

    /// The output norm and head for the positions that get logits; returns how many rows
    /// of logits there are. logits: (rows, n_vocab).
    fn head(
        &mut self,
        weights: &Weights,
        logits: Logits,
        acts: &mut Activations,
        b: &mut Buffers,
    ) -> Result<usize, ModelError> {
        let (d, nv) = (self.c.n_embd, self.c.n_vocab);
        // Only the rows that get logits go through the head.
        let first = match logits {
            Logits::All => 0,
            Logits::Last => self.n_tok - 1,
        };
        let n_out = self.n_tok - first;
        let Buffers {
            x, xb, logits, tmp, ..
        } = b;
        let rows = &x[first * d..];
        self.norm(
            Op::ResultNorm,
            None,
            n_out,
            d,
            rows,
            &weights.output_norm,
            xb,
        );
        acts.invalidate();
        let head = &weights.output;
        matmul(
            self.file,
            head,
            acts,
            xb,
            n_out,
            logits,
            tmp,
            &self.numerics,
            self.pool,
        )?;
        let out = &mut logits[..n_out * nv];
        self.tap.op(Op::ResultOutput, None, &[nv, n_out], out);
        Ok(n_out)
    }

    /// Causal multi-head attention for the batch, whose keys and values are already in the
    /// cache, one head per task. Shapes: q, kqv: (n_tok, n_head, head_dim); `scratch` holds
    /// the per-head buffers.
    fn attention(
        &mut self,
        kv: &KvCache,
        layer: usize,
        q: &[f32],
        kqv: &mut [f32],
        scratch: &mut AttnScratch,
    ) -> Result<(), ModelError> {
        let (c, n_past, n_tok) = (self.c, self.n_past, self.n_tok);
        let (hd, nq, cap) = (c.head_dim, c.n_embd_q(), kv.capacity());
        let head = Head {
            c,
            kv,
            layer,
            n_past,
            kq_scale: fault_kq_scale(1.0 / (c.head_dim as f32).sqrt()),
            fdot: self.numerics.float_dot,
            q,
        };
        if self.tap.is_on() {
            // The reference's KV length for this batch (capture shapes only): the cache size
            // and the used cells each rounded up to `kv_pad`, the smaller, at least one pad.
            let kv_pad = self.numerics.kv_pad.max(KV_STEP);
            let n_kv = {
                let pad = |n: usize| n.div_ceil(kv_pad) * kv_pad;
                pad(kv.n_ctx()).min(pad(n_past + n_tok).max(kv_pad))
            };
            // (n_head, n_tok, n_kv), masked cells 0.
            let mut kq = vec![0.0f32; n_kv * n_tok * c.n_head];
            let mut probs = kq.clone();
            for (h, ((bufs, kqh), ph)) in scratch
                .tasks(c.n_head, 1, n_tok, hd, cap)
                .zip(kq.chunks_mut(n_tok * n_kv))
                .zip(probs.chunks_mut(n_tok * n_kv))
                .enumerate()
            {
                head.run(h, 1, bufs, Some((kqh, ph, n_kv)))?;
            }
            let shape = [n_kv, n_tok, c.n_head];
            self.tap.show(Op::Kq, Some(layer), &shape, &kq);
            self.tap.show(Op::KqSoftMax, Some(layer), &shape, &probs);
        } else {
            let m = heads_per_task(c.n_head, c.n_head / c.n_head_kv, self.pool.threads());
            let tasks = scratch.tasks(c.n_head, m, n_tok, hd, cap).enumerate();
            self.pool
                .try_for_each(tasks, |(i, bufs)| head.run(i * m, m, bufs, None))?;
        }
        // (n_head, n_tok, head_dim) → (n_tok, n_head, head_dim).
        let out = &scratch.out[..c.n_head * n_tok * hd];
        for (h, oh) in out.chunks_exact(n_tok * hd).enumerate() {
            for (t, ot) in oh.chunks_exact(hd).enumerate() {
                kqv[t * nq + h * hd..t * nq + (h + 1) * hd].copy_from_slice(ot);
            }
        }
        Ok(())
    }
}

/// Query heads per attention task: the most heads of one KV group (at most
/// [`MAX_HEADS_PER_TASK`], a divisor of the group size `n_rep`) that still give every thread
/// the same number of tasks, or at least four each. Heads of a task share each cached K and
/// V row's loads (`vec_dot_rows`); more tasks balance the threads.
fn heads_per_task(n_head: usize, n_rep: usize, threads: usize) -> usize {
    (1..=MAX_HEADS_PER_TASK.min(n_rep))
        .rev()
        .filter(|m| n_rep.is_multiple_of(*m))
        .find(|m| {
            let tasks = n_head / m;
            tasks.is_multiple_of(threads) || tasks >= 4 * threads
        })
        .unwrap_or(1)
}

/// The most query heads one attention task takes: the four y rows the AVX-512 many-rows
/// dot keeps in registers.
const MAX_HEADS_PER_TASK: usize = 4;

/// Per-head attention buffers, allocated once per session (never printed: `State`'s
/// `Debug` summarizes).
struct AttnScratch {
    /// Head-major attention output: (n_head, n_batch, head_dim).
    out: Vec<f32>,
    /// One attention row per head: (n_head, KV capacity).
    att: Vec<f32>,
    /// f16 rounding scratch per head: (n_head, KV capacity).
    att16: Vec<f16>,
    /// f16 rounding scratch for the query per head: (n_head, head_dim).
    q16: Vec<f16>,
    /// One query head rounded to f16 and widened back, per head: (n_head, head_dim).
    qr: Vec<f32>,
}

impl AttnScratch {
    /// The buffers of every attention task of `m` of the `n_head` heads, in head order, for
    /// a batch of `n_tok` tokens (the output head-major: (n_head, n_tok, head_dim)).
    fn tasks(
        &mut self,
        n_head: usize,
        m: usize,
        n_tok: usize,
        hd: usize,
        cap: usize,
    ) -> impl Iterator<Item = HeadBufs<'_>> + Send {
        self.out[..n_head * n_tok * hd]
            .chunks_mut(m * n_tok * hd)
            .zip(self.att.chunks_mut(m * cap))
            .zip(self.att16.chunks_mut(m * cap))
            .zip(self.q16.chunks_mut(m * hd))
            .zip(self.qr.chunks_mut(m * hd))
            .map(|((((out, att), att16), q16), qr)| HeadBufs {
                out,
                att,
                att16,
                q16,
                qr,
            })
    }
}

/// One attention task's slices of [`AttnScratch`], for its `m` heads. Shapes: out:
/// (m, n_tok, head_dim); att, att16: (m, capacity); q16, qr: (m, head_dim).
struct HeadBufs<'a> {
    out: &'a mut [f32],
    att: &'a mut [f32],
    att16: &'a mut [f16],
    q16: &'a mut [f16],
    qr: &'a mut [f32],
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
    /// Heads `h0..h0 + m` (one KV group's) for every token of the batch. Per head and token
    /// at position `pos`: `kq[i] = k_i · q` over the cells `0..=pos`, ggml's scaled softmax,
    /// then `out[d] = Vᵀ[d] · p` over those cells rounded up to [`KV_STEP`] (the extra
    /// weights are exact zeros, as ggml's masked cells are). With an F16 cache and ggml's
    /// dots, q and p are rounded to f16 first (ggml converts a matmul's F32 operand to its
    /// F16 partner's type). Capture: (n_tok, n_kv) for `kq` and for the probabilities, one
    /// head at a time (`m == 1`).
    fn run(
        &self,
        h0: usize,
        m: usize,
        bufs: HeadBufs<'_>,
        mut capture: Option<(&mut [f32], &mut [f32], usize)>,
    ) -> Result<(), ModelError> {
        let (c, kv, fdot) = (self.c, self.kv, self.fdot);
        let (hd, nq, nkv, cap) = (c.head_dim, c.n_embd_q(), c.n_embd_kv(), kv.capacity());
        let g = h0 / (c.n_head / c.n_head_kv);
        let layer = self.layer;
        let n_tok = bufs.out.len() / (m * hd);
        let HeadBufs {
            out,
            att,
            att16,
            q16,
            qr,
        } = bufs;
        let kerr = |source| ModelError::Kernel {
            tensor: format!("kq-{layer}"),
            source,
        };
        let ggml_f16 = fdot == FloatDot::Ggml && matches!(kv.store, KvStore::F16 { .. });
        // `rows` K rows (head_dim,) from cell `i` on, n_embd_kv apart (empty past the cache).
        let k_rows = |i: usize, rows: usize| {
            let at = (layer * cap + i) * nkv + g * hd;
            kv.store.rows(KvPart::K, at, rows, hd, nkv)
        };
        // Vᵀ rows (head_dim of them) over the first `cols` cells, capacity apart.
        let vt_rows = |cols: usize| {
            kv.store
                .rows(KvPart::Vt, (layer * nkv + g * hd) * cap, hd, cols, cap)
        };
        for t in 0..n_tok {
            let n = self.n_past + t + 1;
            let n_step = n.div_ceil(KV_STEP) * KV_STEP;
            // The task's query heads of token t: (m, head_dim), rounded to f16 for ggml's F16
            // dot.
            let q_heads = &self.q[t * nq + h0 * hd..t * nq + (h0 + m) * hd];
            let q_heads: &[f32] = if ggml_f16 {
                qr.copy_from_slice(q_heads);
                round_to_f16_in_place(qr, q16).map_err(kerr)?;
                qr
            } else {
                q_heads
            };
            let queries = Rows {
                data: q_heads,
                rows: m,
                cols: hd,
                stride: hd,
            };
            // kq[h][i] = k_i · q_h for the cells 0..n. Shape: att (m, capacity).
            cache_dots(k_rows(0, n), fdot, queries, att, cap).map_err(kerr)?;
            if let Some((kq, _, n_kv)) = capture.as_mut() {
                // ggml's `kq` holds the product with every cell, masked or not; the cells
                // past the causal position are computed here for the capture only.
                let dst = &mut kq[t * *n_kv..(t + 1) * *n_kv];
                dst[..n].copy_from_slice(&att[..n]);
                let end = cap.min(*n_kv);
                if n < end {
                    cache_dots(k_rows(n, end - n), fdot, queries, &mut dst[n..end], 0)
                        .map_err(kerr)?;
                }
            }
            for (row, row16) in att.chunks_exact_mut(cap).zip(att16.chunks_exact_mut(cap)) {
                let row = &mut row[..n_step];
                softmax_scaled_row(&mut row[..n], self.kq_scale);
                row[n..].fill(0.0);
                if let Some((_, probs, n_kv)) = capture.as_mut() {
                    probs[t * *n_kv..t * *n_kv + n].copy_from_slice(&row[..n]);
                }
                if ggml_f16 {
                    round_to_f16_in_place(row, &mut row16[..n_step]).map_err(kerr)?;
                }
            }
            let probs = Rows {
                data: &att[..],
                rows: m,
                cols: n_step,
                stride: cap,
            };
            // out[h][t][d] = Vᵀ[d] · p_h over the cells rounded up to KV_STEP.
            cache_dots(vt_rows(n_step), fdot, probs, &mut out[t * hd..], n_tok * hd)
                .map_err(kerr)?;
        }
        Ok(())
    }
}

/// `out[h·out_stride + i] = m_i · y_h` for every cache row `m_i` and every `y_h`, in
/// `fdot`'s pairing (ggml's take an F16 matrix's partner already rounded to f16), one
/// dispatch per call; ggml's share each cache row's loads between the `y` rows.
fn cache_dots(
    m: FloatRows<'_>,
    fdot: FloatDot,
    y: Rows<'_, f32>,
    out: &mut [f32],
    out_stride: usize,
) -> Result<(), KernelError> {
    match fdot {
        FloatDot::Ggml => vec_dot_rows(SumOrder::GgmlAvx2, m, y, out, out_stride),
        FloatDot::IkGemm => ik_dot_rows(m, y, out, out_stride),
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
    bufs: Buffers,
    /// The threads every parallel region of a forward pass runs on.
    pool: Pool,
}

/// Every activation of one batch (never printed: `State`'s `Debug` summarizes).
struct Buffers {
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
    /// Matmul transpose slots, one per thread ([`matmul_scratch_len`] of the widest
    /// product), or one embedding row read as bytes.
    tmp: Vec<f32>,
    /// RoPE cos/sin of one position: (n_rot,).
    rope: Vec<f32>,
    attn: AttnScratch,
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

/// Where the pass shows each named op: the fault hook (which may perturb it) and the capture
/// hook. Names are formatted only when a capture hook is set.
struct Tap<'h, 'a> {
    hook: Option<&'h mut CaptureFn<'a>>,
    /// The batch, for the fault hook's position ranges.
    n_past: usize,
    n_tok: usize,
}

impl Tap<'_, '_> {
    fn is_on(&self) -> bool {
        self.hook.is_some()
    }

    /// Op `op` (of `layer`, `None` for the head's ops) has just written `data`, one row per
    /// token: the fault hook may perturb it before anything reads it, then the capture hook
    /// sees it.
    fn op(&mut self, op: Op, layer: Option<usize>, shape: &[usize], data: &mut [f32]) {
        if let Some(il) = layer {
            fault_perturb(op.name(), il, self.n_past, self.n_tok, data);
        }
        self.show(op, layer, shape, data);
    }

    /// The capture hook sees `data` under `op`'s name: another view of an op already
    /// tapped (a reshape, RoPE's rotation in place) or a capture-only tensor.
    fn show(&mut self, op: Op, layer: Option<usize>, shape: &[usize], data: &[f32]) {
        if let Some(h) = self.hook.as_deref_mut() {
            match layer {
                Some(il) => h(&format!("{}-{il}", op.name()), shape, data),
                None => h(op.name(), shape, data),
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

/// The fixture writer the integration tests share.
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod common;

#[cfg(test)]
mod tests {
    use bitnet_gguf::GgmlType;

    use super::common::{write_tiny, Tiny};
    use super::{heads_per_task, Model};
    use crate::numerics::{Numerics, Reference};
    use crate::ops::FloatDot;

    #[test]
    fn every_state_reads_its_weights_from_memory_not_the_mapping() {
        let dir = tempfile::tempdir().unwrap();
        for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::F16] {
            let model = Model::load(write_tiny(dir.path(), &Tiny::new("bitnet", ty))).unwrap();
            for reference in [Reference::LlamaCpp, Reference::IkLlamaCpp] {
                let numerics = Numerics::for_reference(reference);
                let ik = numerics.float_dot == FloatDot::IkGemm;
                model.new_state(16, 4, numerics, 1).unwrap();
                for w in model.weights.linears() {
                    let copied = w.repacked.is_some()
                        || w.in_memory.get().is_some()
                        || (ik && w.ik_tiled.get().is_some());
                    assert!(
                        copied,
                        "{ty:?}, {reference:?}: {} read from the mapping",
                        w.name
                    );
                }
            }
        }
    }

    #[test]
    fn attention_tasks_share_a_kv_group_and_balance_the_threads() {
        // 2B-4T: 20 query heads in 5 groups of 4. One thread: whole groups (5 tasks); two:
        // pairs (10 tasks, 5 each) rather than 5 groups split 3/2.
        assert_eq!(heads_per_task(20, 4, 1), 4);
        assert_eq!(heads_per_task(20, 4, 2), 2);
        // More threads: the largest tasks that still divide evenly (or give four each).
        assert_eq!(heads_per_task(20, 4, 3), 1);
        assert_eq!(heads_per_task(20, 4, 4), 1);
        assert_eq!(heads_per_task(20, 4, 5), 4);
        // Without grouped queries every task is one head; groups past four split.
        assert_eq!(heads_per_task(16, 1, 2), 1);
        assert_eq!(heads_per_task(16, 8, 1), 4);
    }
}
