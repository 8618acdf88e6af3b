//! Fault injection for testing the parity suite's localiser (feature `fault-injection`,
//! debug builds only): perturbs one named op of the forward pass so that a test can check
//! that the suite reports exactly that op as the first divergent one, or makes one
//! whole-model mistake (SiLU for ReLU², the other RoPE style, a skipped sub-norm, a wrong
//! epsilon, attention scale or KV position) that the definition check
//! (`crossval/tests/definition_mutations.rs`) must catch.
//!
//! The fault is process-global: set it with [`set_fault`] in a test binary of its own, never
//! in the main suite. With no fault set every hook is a relaxed atomic load and nothing
//! else; without the feature the hooks (and this module) do not exist at all.
//!
//! ```ignore
//! use bitnet_models::fault::{set_fault, Fault};
//! set_fault(Some(Fault::Scale { op: "ffn_sub_norm".into(), layer: 3, factor: 1.001 }));
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::config::FfnActivation;
use crate::ops::RopeStyle;

#[cfg(not(debug_assertions))]
compile_error!(
    "bitnet-models' `fault-injection` feature is for debug test builds only: it must never \
     reach a release build"
);

/// One perturbation of the forward pass. Ops are named by their llama.cpp `cb_eval` base
/// name (`attn_norm`, `ffn_sub_norm`, ...) and layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Multiplies the output of op `op` in `layer` by `factor` before anything uses it.
    /// Every per-layer op of [`crate::graph::Op`] the pass writes is hooked, at its first
    /// name (`Qcur`/`Kcur` before RoPE); `kq` and `kq_soft_max`, captured only, are not.
    Scale {
        op: String,
        layer: usize,
        factor: f32,
    },
    /// [`Fault::Scale`] from position `from` on: earlier positions are untouched, so a
    /// `from` past the prompt puts the first difference at a decode step.
    ScaleFrom {
        op: String,
        layer: usize,
        factor: f32,
        from: usize,
    },
    /// The RMS epsilon of norm `op` (`attn_norm`, `attn_sub_norm`, `ffn_norm`,
    /// `ffn_sub_norm`) in `layer` becomes `eps`.
    RmsEps { op: String, layer: usize, eps: f32 },
    /// Layer `layer` rotates Q and K with the other RoPE style (normal ↔ NEOX).
    SwapRopeStyle { layer: usize },
    /// Layer `layer` ignores the `.scale` tensor of `attn_output` (a no-op for a model whose
    /// scales are folded into the weights).
    DropAttnOutputScale { layer: usize },
    /// Every layer's FFN gate uses `activation` whatever the architecture says (SiLU in a
    /// `bitnet-b1.58` model: the bug of bitnet.cpp's 2026 main branch).
    FfnActivation { activation: FfnActivation },
    /// Every layer rotates Q and K in `style`.
    RopeStyleAll { style: RopeStyle },
    /// Sub-norm `op` (`attn_sub_norm` or `ffn_sub_norm`) is skipped in every layer: its
    /// input goes to the next matmul unnormalised.
    SkipSubNorm { op: String },
    /// The epsilon of every block norm (`attn_norm`, `attn_sub_norm`, `ffn_norm`,
    /// `ffn_sub_norm`) in every layer is multiplied by `factor`.
    RmsEpsFactor { factor: f32 },
    /// The attention scale `1/√head_dim` is multiplied by `factor`.
    KqScaleFactor { factor: f32 },
    /// The token at position `p` is written to KV cell `p + offset` (attention still reads
    /// cells `0..=p`): a KV position off by `offset`. A cell past the cache is not written.
    KvCellOffset { offset: usize },
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static FAULT: Mutex<Option<Fault>> = Mutex::new(None);

/// Sets (or, with `None`, clears) the process-global fault.
pub fn set_fault(fault: Option<Fault>) {
    let mut f = FAULT.lock().unwrap_or_else(|e| e.into_inner());
    ACTIVE.store(fault.is_some(), Ordering::SeqCst);
    *f = fault;
}

/// Runs `f` with `fault` set, and clears it afterwards, even when `f` panics. Callers take
/// turns: the fault is process-global, so two threads of one test binary never see each
/// other's.
pub fn with_fault<T>(fault: Option<Fault>, f: impl FnOnce() -> T) -> T {
    static TURN: Mutex<()> = Mutex::new(());
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            set_fault(None);
        }
    }
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _clear = Clear;
    set_fault(fault);
    f()
}

/// The fault currently set.
pub fn current() -> Option<Fault> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    FAULT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn with<T>(f: impl FnOnce(&Fault) -> Option<T>) -> Option<T> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    FAULT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(f)
}

/// Hook: op `base` of `layer` has just written `data`, one row per token of a batch at
/// positions `n_past..n_past + n_tok`.
pub(crate) fn perturb(base: &str, layer: usize, n_past: usize, n_tok: usize, data: &mut [f32]) {
    let hit = with(|f| match f {
        Fault::Scale {
            op,
            layer: l,
            factor,
        } if op == base && *l == layer => Some((*factor, 0)),
        Fault::ScaleFrom {
            op,
            layer: l,
            factor,
            from,
        } if op == base && *l == layer => Some((*factor, *from)),
        _ => None,
    });
    if let Some((s, from)) = hit {
        let width = data.len() / n_tok.max(1);
        let first = from.saturating_sub(n_past).min(n_tok);
        data[first * width..].iter_mut().for_each(|x| *x *= s);
    }
}

/// Hook: the RMS epsilon of norm `base` in `layer`.
pub(crate) fn rms_eps(base: &str, layer: usize, eps: f32) -> f32 {
    with(|f| match f {
        Fault::RmsEps {
            op,
            layer: l,
            eps: e,
        } if op == base && *l == layer => Some(*e),
        Fault::RmsEpsFactor { factor } => Some(eps * factor),
        _ => None,
    })
    .unwrap_or(eps)
}

/// Hook: the RoPE style of `layer`.
pub(crate) fn rope_style(layer: usize, style: RopeStyle) -> RopeStyle {
    let set = with(|f| match f {
        Fault::SwapRopeStyle { layer: l } if *l == layer => Some(match style {
            RopeStyle::Neox => RopeStyle::Normal,
            RopeStyle::Normal => RopeStyle::Neox,
        }),
        Fault::RopeStyleAll { style } => Some(*style),
        _ => None,
    });
    set.unwrap_or(style)
}

/// Hook: the FFN gate activation.
pub(crate) fn ffn_activation(activation: FfnActivation) -> FfnActivation {
    with(|f| match f {
        Fault::FfnActivation { activation } => Some(*activation),
        _ => None,
    })
    .unwrap_or(activation)
}

/// Hook: whether sub-norm `base` runs.
pub(crate) fn keep_sub_norm(base: &str) -> bool {
    with(|f| match f {
        Fault::SkipSubNorm { op } if op == base => Some(()),
        _ => None,
    })
    .is_none()
}

/// Hook: the attention scale.
pub(crate) fn kq_scale(scale: f32) -> f32 {
    with(|f| match f {
        Fault::KqScaleFactor { factor } => Some(scale * factor),
        _ => None,
    })
    .unwrap_or(scale)
}

/// Hook: the KV cell of the token at position `pos`.
pub(crate) fn kv_cell(pos: usize) -> usize {
    with(|f| match f {
        Fault::KvCellOffset { offset } => Some(pos + offset),
        _ => None,
    })
    .unwrap_or(pos)
}

/// Hook: whether `layer` applies `attn_output.scale`.
pub(crate) fn keep_attn_output_scale(layer: usize) -> bool {
    with(|f| match f {
        Fault::DropAttnOutputScale { layer: l } if *l == layer => Some(()),
        _ => None,
    })
    .is_none()
}
