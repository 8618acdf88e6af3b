//! Localises a divergence: the first op, in graph order, whose output differs from the
//! reference's beyond its per-op threshold.
//!
//! When a case fails, the runner re-evaluates the failing position with capture on, on both
//! sides, in the same evaluation order as the case (the prompt as one batch, then one
//! generated token at a time), so the failing position's row of every captured tensor is
//! comparable. Both sides name intermediates as llama.cpp's `cb_eval` sees them
//! (`attn_norm-N`, `Qcur-N`, `Kcur-N`, `Vcur-N`, `kq-N`, `kq_soft_max-N`, `kqv_out-N`,
//! `attn_sub_norm-N`, `attn_out-N`, `ffn_inp-N`, `ffn_norm-N`, `ffn_up-N`, `ffn_gate-N`,
//! `ffn_sub_out-N` / `ffn_swiglu-N`, `ffn_sub_norm-N`, `ffn_down-N` / `ffn_out-N`,
//! `l_out-N`, `result_norm`, `result_output`) with ggml shapes (`shape[0]` contiguous).
//! Tensors are paired by name and occurrence after dropping views (names with a `" ("`
//! suffix such as `Qcur-0 (reshaped)`) and repeats of a name with identical data (a
//! reshape named like its source), so `Qcur-N` is the projection and its second
//! occurrence `Qcur-N#1` the rotated one.
//!
//! For each pair the row of the failing position is compared: normalised MSE
//! `Σ(a−b)²/Σa²` (a the reference) and max |Δ|. Thresholds are per op kind
//! ([`threshold`]), as llama.cpp's `test-backend-ops` sets its NMSE limits per op. Ops
//! after an int8 activation re-quantization legitimately amplify a tiny upstream
//! difference, so what matters is the **first** crossing in the reference's graph order.
//!
//! Rows: for `kq`/`kq_soft_max` (`[n_kv, n_tok, n_head]`) the failing token's row of every
//! head; for every other tensor the batch is the outermost dimension.
//!
//! # Ops without a counterpart
//!
//! Measured with `BITNET_TRACE=1` on every built-in model (each trace also lists what it
//! could not pair: [`OpTrace::reference_only`], [`OpTrace::ours_only`]):
//! * upstream llama.cpp (`bitnet` with and without `.scale` tensors, `llama`): none — every
//!   op we emit pairs up, including `ffn_up_s-N`/`ffn_gate_s-N`; the `l_out-N` duplicate
//!   of `build_cvec` carries the same data and is dropped as a repeat.
//! * bitnet.cpp (`bitnet`): none, under its older names `attn_o_out-N` (our `attn_out-N`)
//!   and `kq_soft_max_ext-N` (our `kq_soft_max-N`), see [`BITNET_CPP`].
//! * ik_llama.cpp (`bitnet-b1.58`): `ffn_inp-N` is never materialised (the residual add
//!   is fused into the FFN's RMSNorm), and the tensor it names `ffn_norm-N` is not the
//!   FFN's input, so our `ffn_inp-N` and `ffn_norm-N` have no counterpart; a fault there
//!   is localised to `ffn_gate-N`/`ffn_up-N`. Its `attn_o_out-N`, `ffn_out-N` (the gated
//!   product) and `kq_soft_max_ext-N` pair with our `attn_out-N`, `ffn_sub_out-N` and
//!   `kq_soft_max-N`, see [`IK_LLAMA_CPP`].

use bitnet_models::graph::{Op, OpKind};
use serde::Serialize;

/// Normalisation ops (RMSNorm outputs: `attn_norm`, `attn_sub_norm`, `ffn_norm`,
/// `ffn_sub_norm`, `result_norm`): pure float arithmetic in the reference's order, exact
/// today; 1 ulp of reassociation per element is NMSE ~1e-14, so 1e-10 keeps four decades of
/// margin and still catches a 1e-5 relative error (NMSE 1e-10).
pub const NMSE_NORM: f64 = 1e-10;

/// Element-wise float ops (residual adds `ffn_inp`, `l_out`; activations `ffn_sub_out`,
/// `ffn_swiglu`; RoPE, i.e. the second occurrence of `Qcur`/`Kcur`): as [`NMSE_NORM`].
pub const NMSE_ELEMENTWISE: f64 = 1e-10;

/// Matmul outputs (`Qcur`, `Kcur`, `Vcur`, `attn_out`, `ffn_up`, `ffn_gate`, `ffn_down`,
/// `ffn_out`, scaled `*_s`): their input is re-quantized to int8, so an upstream difference
/// under [`NMSE_NORM`] may flip a few activation codes; each flip moves an output by about
/// 1/127 of the row's range (NMSE ~1e-7 per flip on the tiny shapes), so 1e-5 tolerates a
/// handful of flips but not a wrong weight, scale or quantizer.
pub const NMSE_MATMUL: f64 = 1e-5;

/// Attention (`kq`, `kq_soft_max`, `kqv_out`): float dots against the KV cache (F16 for
/// ik_llama.cpp and bitnet.cpp) and `ggml_v_expf`; exact today, 1e-8 allows the f16
/// rounding of a query that differs by an ulp.
pub const NMSE_ATTENTION: f64 = 1e-8;

/// The logits (`result_output`): a matmul over int8 (or f16-rounded) activations, as
/// [`NMSE_MATMUL`].
pub const NMSE_LOGITS: f64 = 1e-5;

/// Anything else a reference names and we pair up.
pub const NMSE_OTHER: f64 = 1e-8;

/// The NMSE threshold of op `op` (a `cb_eval` base name without the layer suffix), by what
/// the op computes ([`Op::kind_at`]); `occurrence` 1 of `Qcur`/`Kcur` is the RoPE output.
pub fn threshold(op: &str, occurrence: usize) -> f64 {
    match Op::from_name(op).map(|op| op.kind_at(occurrence)) {
        Some(OpKind::Norm) => NMSE_NORM,
        Some(OpKind::Elementwise) => NMSE_ELEMENTWISE,
        Some(OpKind::Matmul) => NMSE_MATMUL,
        Some(OpKind::Attention) => NMSE_ATTENTION,
        Some(OpKind::Logits) => NMSE_LOGITS,
        // ik_llama.cpp's fused gate activation has no op of ours under its name.
        None if op == "ffn_gate_par" => NMSE_ELEMENTWISE,
        None => NMSE_OTHER,
    }
}

/// Reference names of ops we name otherwise ([`Naming::aliases`]) or not at all, captured
/// beside ours.
const REFERENCE_ONLY_PATTERNS: [&str; 3] = ["kq_soft_max_ext-*", "attn_o_out-*", "ffn_gate_par-*"];

/// The `cb_eval` name patterns the reference captures for localisation: every op of our
/// forward pass ([`Op::ALL`]) and the reference-only names.
pub fn capture_patterns() -> Vec<String> {
    Op::ALL
        .into_iter()
        .map(Op::capture_pattern)
        .chain(REFERENCE_ONLY_PATTERNS.map(str::to_owned))
        .collect()
}

/// How a reference's `cb_eval` names map onto ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Naming {
    /// (reference base name, our base name) of the same op under another name; traces
    /// use our name.
    pub aliases: &'static [(&'static str, &'static str)],
    /// Reference names captured but not comparable with ours (listed as reference-only).
    pub not_comparable: &'static [&'static str],
}

/// Upstream llama.cpp: our names are its names.
pub const LLAMA_CPP: Naming = Naming {
    aliases: &[],
    not_comparable: &[],
};

/// bitnet.cpp (upstream's graph of October 2024): `attn_o_out` is the attention output
/// projection and the masked softmax is `kq_soft_max_ext`.
pub const BITNET_CPP: Naming = Naming {
    aliases: &[
        ("attn_o_out", "attn_out"),
        ("kq_soft_max_ext", "kq_soft_max"),
    ],
    not_comparable: &[],
};

/// ik_llama.cpp (`bitnet-b1.58`): `attn_o_out` is the attention output projection,
/// `ffn_out` the gated FFN product (our `ffn_sub_out`). Its `ffn_norm-N` is not the FFN's
/// input: the residual add is fused into the RMSNorm (`ffn_inp-N` is never materialised)
/// and the tensor the callback sees under that name differs from what `ffn_up`/`ffn_gate`
/// consume (measured: NMSE 5e-3..0.4 while both matmuls and the logits are bit-exact).
pub const IK_LLAMA_CPP: Naming = Naming {
    aliases: &[
        ("attn_o_out", "attn_out"),
        ("ffn_out", "ffn_sub_out"),
        ("kq_soft_max_ext", "kq_soft_max"),
    ],
    not_comparable: &["ffn_norm"],
};

/// One captured tensor: its `cb_eval` name, ggml shape and values.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One op compared at the failing position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpStat {
    /// `cb_eval` name, with `#k` for the k-th (k ≥ 1) distinct tensor of that name.
    pub name: String,
    /// Base name (op kind).
    pub op: String,
    /// Layer, `None` for the output head.
    pub layer: Option<usize>,
    pub occurrence: usize,
    /// Values compared (the failing position's row).
    pub n: usize,
    pub nmse: f64,
    pub max_abs: f32,
    pub threshold: f64,
}

/// Every op at one position, in the reference's graph order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpTrace {
    /// The position (row of the case's logits) re-evaluated.
    pub position: usize,
    pub ops: Vec<OpStat>,
    /// Names the reference captured that we did not emit (or with another size).
    pub reference_only: Vec<String>,
    /// Names we emitted that the reference did not capture.
    pub ours_only: Vec<String>,
}

/// The localisation of a failure: the first op over its threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FirstDivergentOp {
    pub position: usize,
    pub name: String,
    pub op: String,
    pub layer: Option<usize>,
    pub occurrence: usize,
    pub nmse: f64,
    pub max_abs: f32,
    pub threshold: f64,
    /// The op before it in graph order, and its NMSE.
    pub previous_op: Option<String>,
    pub previous_nmse: Option<f64>,
}

impl std::fmt::Display for FirstDivergentOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "first divergent op at position {}: {} (layer {}, op {}) NMSE {:.3e} > threshold {:.0e}, \
             max |Δ| {:.3e}; previous op {}",
            self.position,
            self.name,
            self.layer.map_or_else(|| "-".into(), |l| l.to_string()),
            self.op,
            self.nmse,
            self.threshold,
            self.max_abs,
            match (&self.previous_op, self.previous_nmse) {
                (Some(p), Some(n)) => format!("{p} NMSE {n:.3e}"),
                _ => "none".into(),
            }
        )
    }
}

/// Splits `attn_norm-3` into (`attn_norm`, `Some(3)`).
pub fn split_name(name: &str) -> (&str, Option<usize>) {
    match name.rsplit_once('-') {
        Some((base, l)) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
            (base, l.parse().ok())
        }
        _ => (name, None),
    }
}

/// Drops views and same-data repeats (see the module docs).
fn distinct(items: &[Tensor]) -> Vec<&Tensor> {
    let mut out: Vec<&Tensor> = Vec::new();
    for t in items {
        if t.name.contains(" (") {
            continue;
        }
        let repeat = out
            .iter()
            .rev()
            .find(|o| o.name == t.name)
            .is_some_and(|o| o.data == t.data);
        if !repeat {
            out.push(t);
        }
    }
    out
}

/// Row `t` of a tensor computed for a batch of `n_tok` tokens.
fn row(t: &Tensor, tok: usize, n_tok: usize) -> Option<Vec<f32>> {
    let (base, _) = split_name(&t.name);
    if n_tok == 0 || !t.data.len().is_multiple_of(n_tok) {
        return None;
    }
    if base == "kq" || base == "kq_soft_max" {
        // [n_kv, n_tok, n_head].
        let n_kv = *t.shape.first()?;
        if n_kv == 0 || !t.data.len().is_multiple_of(n_kv * n_tok) {
            return None;
        }
        let n_head = t.data.len() / (n_kv * n_tok);
        let mut r = Vec::with_capacity(n_kv * n_head);
        for h in 0..n_head {
            let at = (h * n_tok + tok) * n_kv;
            r.extend_from_slice(&t.data[at..at + n_kv]);
        }
        return Some(r);
    }
    let w = t.data.len() / n_tok;
    Some(t.data[tok * w..(tok + 1) * w].to_vec())
}

/// `Σ(a−b)²/Σa²` (a the reference) and max |Δ|; NaN anywhere is infinitely divergent.
pub fn nmse(reference: &[f32], ours: &[f32]) -> (f64, f32) {
    let (mut num, mut den, mut max) = (0.0f64, 0.0f64, 0.0f32);
    for (&a, &b) in reference.iter().zip(ours) {
        let d = f64::from(a) - f64::from(b);
        num += d * d;
        den += f64::from(a) * f64::from(a);
        let ad = (a - b).abs();
        max = if ad.is_nan() {
            f32::INFINITY
        } else {
            max.max(ad)
        };
    }
    if num.is_nan() {
        return (f64::INFINITY, f32::INFINITY);
    }
    let v = if num == 0.0 {
        0.0
    } else if den == 0.0 {
        f64::INFINITY
    } else {
        num / den
    };
    (v, max)
}

/// Compares both sides' captures of one evaluation of `n_tok` tokens at row `tok`
/// (`position` is the case's row index, for the report).
pub fn trace(
    naming: Naming,
    ours: &[Tensor],
    theirs: &[Tensor],
    tok: usize,
    n_tok: usize,
    position: usize,
) -> OpTrace {
    let mut reference_only = Vec::new();
    let renamed: Vec<Tensor> = theirs
        .iter()
        .filter(|t| {
            let keep = !naming.not_comparable.contains(&split_name(&t.name).0);
            if !keep && !reference_only.contains(&t.name) {
                reference_only.push(t.name.clone());
            }
            keep
        })
        .map(|t| {
            let (base, layer) = split_name(&t.name);
            match naming.aliases.iter().find(|(r, _)| *r == base) {
                Some((_, o)) => Tensor {
                    name: layer.map_or_else(|| (*o).to_string(), |l| format!("{o}-{l}")),
                    ..t.clone()
                },
                None => t.clone(),
            }
        })
        .collect();
    let ours = distinct(ours);
    let theirs = distinct(&renamed);
    let mut ops = Vec::new();
    let mut used = vec![false; ours.len()];
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    for t in &theirs {
        let k = seen.entry(t.name.as_str()).or_default();
        let occurrence = *k;
        *k += 1;
        let mine = ours
            .iter()
            .enumerate()
            .filter(|(_, o)| o.name == t.name)
            .nth(occurrence)
            .filter(|(_, o)| o.data.len() == t.data.len());
        let label = if occurrence == 0 {
            t.name.clone()
        } else {
            format!("{}#{occurrence}", t.name)
        };
        let Some((i, o)) = mine else {
            reference_only.push(label);
            continue;
        };
        used[i] = true;
        let (Some(a), Some(b)) = (row(t, tok, n_tok), row(o, tok, n_tok)) else {
            reference_only.push(label);
            continue;
        };
        let (base, layer) = split_name(&t.name);
        let (v, max_abs) = nmse(&a, &b);
        ops.push(OpStat {
            name: label,
            op: base.to_owned(),
            layer,
            occurrence,
            n: a.len(),
            nmse: v,
            max_abs,
            threshold: threshold(base, occurrence),
        });
    }
    let mut ours_only: Vec<String> = ours
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(o, _)| o.name.clone())
        .collect();
    ours_only.dedup();
    OpTrace {
        position,
        ops,
        reference_only,
        ours_only,
    }
}

impl OpTrace {
    /// The first op in graph order whose NMSE crosses its threshold.
    pub fn first_divergent(&self) -> Option<FirstDivergentOp> {
        let i = self.ops.iter().position(|o| o.nmse > o.threshold)?;
        let o = &self.ops[i];
        let prev = i.checked_sub(1).map(|j| &self.ops[j]);
        Some(FirstDivergentOp {
            position: self.position,
            name: o.name.clone(),
            op: o.op.clone(),
            layer: o.layer,
            occurrence: o.occurrence,
            nmse: o.nmse,
            max_abs: o.max_abs,
            threshold: o.threshold,
            previous_op: prev.map(|p| p.name.clone()),
            previous_nmse: prev.map(|p| p.nmse),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[usize], data: &[f32]) -> Tensor {
        Tensor {
            name: name.into(),
            shape: shape.into(),
            data: data.into(),
        }
    }

    #[test]
    fn names_split_into_op_and_layer() {
        assert_eq!(split_name("ffn_sub_norm-3"), ("ffn_sub_norm", Some(3)));
        assert_eq!(split_name("result_norm"), ("result_norm", None));
    }

    #[test]
    fn first_crossing_in_reference_order_wins() {
        let theirs = [
            t("attn_norm-0", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
            t("Qcur-0", &[2, 2], &[1.0, 1.0, 1.0, 1.0]),
            t("l_out-0", &[2, 2], &[1.0, 1.0, 1.0, 1.0]),
        ];
        let ours = [
            t("attn_norm-0", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
            t("Qcur-0", &[2, 2], &[1.0, 1.0, 1.0, 1.5]),
            t("l_out-0", &[2, 2], &[1.0, 1.0, 9.0, 9.0]),
        ];
        // Row 0 agrees everywhere.
        assert_eq!(
            trace(LLAMA_CPP, &ours, &theirs, 0, 2, 0).first_divergent(),
            None
        );
        let tr = trace(LLAMA_CPP, &ours, &theirs, 1, 2, 5);
        let f = tr.first_divergent().expect("diverges");
        assert_eq!((f.name.as_str(), f.layer), ("Qcur-0", Some(0)));
        assert_eq!(f.previous_op.as_deref(), Some("attn_norm-0"));
        assert_eq!(f.previous_nmse, Some(0.0));
        assert!((f.nmse - 0.125).abs() < 1e-12);
    }

    #[test]
    fn views_and_repeats_are_dropped_and_occurrences_numbered() {
        let theirs = [
            t("Qcur-0", &[2, 1], &[1.0, 2.0]),
            t("Qcur-0 (reshaped)", &[1, 2, 1], &[1.0, 2.0]),
            t("Qcur-0", &[1, 2, 1], &[3.0, 4.0]),
        ];
        let ours = [
            t("Qcur-0", &[2, 1], &[1.0, 2.0]),
            t("Qcur-0", &[1, 2, 1], &[1.0, 2.0]),
            t("Qcur-0", &[1, 2, 1], &[3.0, 5.0]),
            t("ffn_up_s-0", &[1], &[1.0]),
        ];
        let tr = trace(LLAMA_CPP, &ours, &theirs, 0, 1, 0);
        assert_eq!(tr.ops.len(), 2);
        assert_eq!(tr.ours_only, ["ffn_up_s-0"]);
        let f = tr.first_divergent().expect("diverges");
        assert_eq!((f.name.as_str(), f.occurrence), ("Qcur-0#1", 1));
        assert_eq!(f.threshold, NMSE_ELEMENTWISE);
    }

    #[test]
    fn aliases_rename_and_uncomparable_ops_are_skipped() {
        let theirs = [
            t("ffn_norm-0", &[2, 1], &[1.0, 2.0]),
            t("ffn_out-0", &[2, 1], &[1.0, 2.0]),
        ];
        let ours = [
            t("ffn_norm-0", &[2, 1], &[1.0, 3.0]),
            t("ffn_sub_out-0", &[2, 1], &[1.0, 2.0]),
        ];
        let tr = trace(IK_LLAMA_CPP, &ours, &theirs, 0, 1, 0);
        assert_eq!(tr.first_divergent(), None);
        assert_eq!(tr.ops.len(), 1);
        assert_eq!(tr.ops[0].name, "ffn_sub_out-0");
        assert_eq!(tr.reference_only, ["ffn_norm-0"]);
        assert_eq!(tr.ours_only, ["ffn_norm-0"]);
    }

    #[test]
    fn attention_rows_gather_every_head() {
        // [n_kv 2, n_tok 2, n_head 2].
        let k = t(
            "kq_soft_max-0",
            &[2, 2, 2],
            &[0., 1., 2., 3., 4., 5., 6., 7.],
        );
        assert_eq!(row(&k, 1, 2), Some(vec![2., 3., 6., 7.]));
    }
}
