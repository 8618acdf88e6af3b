//! The KV cache: per layer, K as one row per position and V transposed (one row per
//! channel, positions contiguous), as llama.cpp lays it out without flash attention, in
//! F32 or F16.

use bitnet_kernels::float::{FloatRows, Rows};
use half::f16;

/// Element type of the KV cache; part of the numerics (an F16 cache rounds K and V, and
/// then Q and the attention weights, to f16 before their dot products).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvType {
    /// Upstream llama.cpp's parity setting.
    #[default]
    F32,
    /// What ik_llama.cpp and bitnet.cpp run (they refuse an F32 V cache without flash
    /// attention).
    F16,
}

/// Positions are stored in chunks of this many so that every attention dot product covers
/// whole SIMD steps: ggml pads the KV length to 256 with masked (zero-weight) cells, and its
/// AVX2 dot sums 32 elements per step, so only the real positions rounded up to 32 matter.
pub(crate) const KV_STEP: usize = 32;

/// K: (n_layer, capacity, n_embd_kv); V transposed: (n_layer, n_embd_kv, capacity).
#[derive(Clone)]
pub(crate) enum KvStore {
    F32 { k: Vec<f32>, vt: Vec<f32> },
    F16 { k: Vec<f16>, vt: Vec<f16> },
}

/// One matrix of a [`KvStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KvPart {
    K,
    /// V transposed.
    Vt,
}

impl KvStore {
    /// `rows` rows of `cols` elements of `part`, `stride` apart, from element `at` on (no
    /// rows' data past the end of the store).
    pub(crate) fn rows(
        &self,
        part: KvPart,
        at: usize,
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> FloatRows<'_> {
        fn view<T>(m: &[T], at: usize, rows: usize, cols: usize, stride: usize) -> Rows<'_, T> {
            Rows {
                data: m.get(at..).unwrap_or_default(),
                rows,
                cols,
                stride,
            }
        }
        match (self, part) {
            (KvStore::F32 { k, .. }, KvPart::K) => FloatRows::F32(view(k, at, rows, cols, stride)),
            (KvStore::F32 { vt, .. }, KvPart::Vt) => {
                FloatRows::F32(view(vt, at, rows, cols, stride))
            }
            (KvStore::F16 { k, .. }, KvPart::K) => FloatRows::F16(view(k, at, rows, cols, stride)),
            (KvStore::F16 { vt, .. }, KvPart::Vt) => {
                FloatRows::F16(view(vt, at, rows, cols, stride))
            }
        }
    }
}

/// Keys and values of every layer for up to `capacity` positions.
#[derive(Clone)]
pub(crate) struct KvCache {
    /// Positions the cache can hold (the session's context).
    n_ctx: usize,
    /// Allocated positions: `n_ctx` rounded up to [`KV_STEP`]; the cells past the context
    /// stay zero (ggml's buffer is cleared at creation too).
    capacity: usize,
    /// K/V width per position: `n_head_kv · head_dim`.
    n_embd_kv: usize,
    pub(crate) store: KvStore,
}

impl KvCache {
    pub(crate) fn new(kv_type: KvType, n_layer: usize, n_ctx: usize, n_embd_kv: usize) -> KvCache {
        let capacity = n_ctx.div_ceil(KV_STEP) * KV_STEP;
        let n = n_layer * capacity * n_embd_kv;
        KvCache {
            n_ctx,
            capacity,
            n_embd_kv,
            // Zeroed allocations, so that K's pages past the last written position are never
            // touched and cost no resident memory: 2B-4T at n_ctx 512 after 192 positions
            // holds 7 of K's 18.75 MiB. (`vec![f16::ZERO; n]` would write every element.
            // Vᵀ's rows span all positions, so writing any position touches all of them.)
            store: match kv_type {
                KvType::F32 => KvStore::F32 {
                    k: bytemuck::zeroed_vec(n),
                    vt: bytemuck::zeroed_vec(n),
                },
                KvType::F16 => KvStore::F16 {
                    k: bytemuck::zeroed_vec(n),
                    vt: bytemuck::zeroed_vec(n),
                },
            },
        }
    }

    /// Positions the cache holds.
    pub(crate) fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Writes position `pos` of layer `layer`: k, v: (n_embd_kv,).
    pub(crate) fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (cap, w) = (self.capacity, self.n_embd_kv);
        let krow = (layer * cap + pos) * w;
        let vbase = layer * w * cap;
        match &mut self.store {
            KvStore::F32 { k: kc, vt: vc } => {
                kc[krow..krow + w].copy_from_slice(k);
                for (c, &x) in v.iter().enumerate() {
                    vc[vbase + c * cap + pos] = x;
                }
            }
            KvStore::F16 { k: kc, vt: vc } => {
                // ggml's F16 `set_rows`: round to nearest even.
                for (o, &x) in kc[krow..krow + w].iter_mut().zip(k) {
                    *o = f16::from_f32(x);
                }
                for (c, &x) in v.iter().enumerate() {
                    vc[vbase + c * cap + pos] = f16::from_f32(x);
                }
            }
        }
    }
}
