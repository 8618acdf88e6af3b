//! Fault injection for testing the parity suite's localiser (feature `fault-injection`,
//! debug builds only): perturbs one named op of the forward pass so that a test can check
//! that the suite reports exactly that op as the first divergent one.
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
    /// Hooked ops: `attn_norm`, `attn_sub_norm`, `ffn_norm`, `ffn_sub_norm`, `kqv_out`,
    /// `ffn_up`, `ffn_gate`.
    Scale {
        op: String,
        layer: usize,
        factor: f32,
    },
    /// The RMS epsilon of norm `op` (`attn_norm`, `attn_sub_norm`, `ffn_norm`,
    /// `ffn_sub_norm`) in `layer` becomes `eps`.
    RmsEps { op: String, layer: usize, eps: f32 },
    /// Layer `layer` rotates Q and K with the other RoPE style (normal ↔ NEOX).
    SwapRopeStyle { layer: usize },
    /// Layer `layer` ignores the `.scale` tensor of `attn_output` (a no-op for a model whose
    /// scales are folded into the weights).
    DropAttnOutputScale { layer: usize },
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static FAULT: Mutex<Option<Fault>> = Mutex::new(None);

/// Sets (or, with `None`, clears) the process-global fault.
pub fn set_fault(fault: Option<Fault>) {
    let mut f = FAULT.lock().unwrap_or_else(|e| e.into_inner());
    ACTIVE.store(fault.is_some(), Ordering::SeqCst);
    *f = fault;
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

/// Hook: op `base` of `layer` has just written `data`.
pub(crate) fn perturb(base: &str, layer: usize, data: &mut [f32]) {
    let factor = with(|f| match f {
        Fault::Scale {
            op,
            layer: l,
            factor,
        } if op == base && *l == layer => Some(*factor),
        _ => None,
    });
    if let Some(s) = factor {
        data.iter_mut().for_each(|x| *x *= s);
    }
}

/// Hook: the RMS epsilon of norm `base` in `layer`.
pub(crate) fn rms_eps(base: &str, layer: usize, eps: f32) -> f32 {
    with(|f| match f {
        Fault::RmsEps { op, layer: l, eps } if op == base && *l == layer => Some(*eps),
        _ => None,
    })
    .unwrap_or(eps)
}

/// Hook: the RoPE style of `layer`.
pub(crate) fn rope_style(layer: usize, style: RopeStyle) -> RopeStyle {
    let swap = with(|f| match f {
        Fault::SwapRopeStyle { layer: l } if *l == layer => Some(()),
        _ => None,
    });
    match (swap, style) {
        (None, s) => s,
        (Some(()), RopeStyle::Neox) => RopeStyle::Normal,
        (Some(()), _) => RopeStyle::Neox,
    }
}

/// Hook: whether `layer` applies `attn_output.scale`.
pub(crate) fn keep_attn_output_scale(layer: usize) -> bool {
    with(|f| match f {
        Fault::DropAttnOutputScale { layer: l } if *l == layer => Some(()),
        _ => None,
    })
    .is_none()
}
