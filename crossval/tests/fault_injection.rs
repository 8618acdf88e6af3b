//! The localiser against injected faults (features `crossval`, `integration-tests`,
//! `fault-injection`): each test perturbs one named op of our engine
//! (`bitnet_models::fault`), runs a real parity case against a reference (upstream
//! llama.cpp on TQ2_0, bitnet.cpp on I2_S, ik_llama.cpp on IQ2_BN), and checks
//! that the case fails and names exactly that op, in that layer, as the first divergent one.
//!
//! The fault is process-global, so the tests take turns (`bitnet_models::fault::with_fault`), and they live in this
//! binary of their own: the main suite never sees a fault.
#![cfg(all(
    feature = "crossval",
    feature = "integration-tests",
    feature = "fault-injection"
))]

use bitnet_crossval::cases::{builtin_models, Case, Mode, SHORT};
use bitnet_crossval::report::{self, CaseReport, Status};
use bitnet_crossval::runner::run_case;
use bitnet_models::fault::{with_fault, Fault};

/// The TQ2_0 fixture with `.scale` tensors (4 layers) on upstream llama.cpp.
const LLAMA_CPP_TQ2_0: &str = "bitnet-tiny-tq2_0-tensor-s0@llama_cpp";
/// The I2_S fixture on bitnet.cpp.
const BITNET_CPP_I2_S: &str = "bitnet-tiny-i2_s-folded-s0@bitnet_cpp";
/// The `bitnet-b1.58` IQ2_BN fixture on ik_llama.cpp.
const IK_IQ2_BN: &str = "bitnet-b158-tiny-iq2_bn-folded-s0@ik_llama_cpp";

/// The built-in model `model` on the short prompt, teacher-forced.
fn case(model: &str, n_tokens: usize) -> Case {
    let model = builtin_models()
        .into_iter()
        .find(|m| m.id() == model)
        .unwrap_or_else(|| panic!("no built-in model {model}"));
    Case {
        model,
        prompt: SHORT,
        n_tokens,
        mode: Mode::TeacherForced,
    }
}

/// Runs the case under `fault` (cleared afterwards, even on panic).
fn run_with(model: &str, fault: Option<Fault>, n_tokens: usize) -> CaseReport {
    let r = with_fault(fault, || run_case(&case(model, n_tokens)));
    eprintln!(
        "{}\n{}",
        report::table_row(&r.summary_row()),
        r.message.as_deref().unwrap_or("(no message)")
    );
    r
}

/// Whether the case was skipped (its reference unavailable, which only
/// `CROSSVAL_ALLOW_CPP_FAIL=1` allows); a skip is recorded as a `skipped` row under this
/// test's name.
fn skipped(r: &CaseReport) -> bool {
    if r.status != Status::Skipped {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("fault_injection")
        .to_owned();
    report::record_skip(
        &format!("fault_injection_{test}"),
        &r.reference,
        r.message.as_deref().unwrap_or_default(),
    )
    .expect("record the skip in target/crossval");
    true
}

/// The llama.cpp case fails, and its report names `op` in `layer` as the first divergent op.
fn assert_localised(fault: Fault, op: &str, layer: usize) {
    assert_localised_on(LLAMA_CPP_TQ2_0, fault, op, layer);
}

/// The case of `model` fails, and its report names `op` in `layer` as the first divergent
/// op.
fn assert_localised_on(model: &str, fault: Fault, op: &str, layer: usize) {
    localised_run(model, fault, op, layer, 1);
}

/// Runs the case of `model` with `n_tokens` under `fault` and checks its localisation as
/// [`assert_localised_on`] does; returns the report (`None` when skipped).
fn localised_run(
    model: &str,
    fault: Fault,
    op: &str,
    layer: usize,
    n_tokens: usize,
) -> Option<CaseReport> {
    let r = run_with(model, Some(fault.clone()), n_tokens);
    if skipped(&r) {
        return None;
    }
    assert_eq!(r.status, Status::Fail, "{fault:?}: the case should fail");
    let msg = r.message.as_deref().unwrap_or_default();
    let first = r
        .first_divergent_op
        .as_ref()
        .unwrap_or_else(|| panic!("{fault:?}: no first divergent op\n{msg}"));
    assert_eq!(
        (first.op.as_str(), first.layer),
        (op, Some(layer)),
        "{fault:?}: localised to {first}\n{msg}"
    );
    assert!(first.nmse > first.threshold, "{first}");
    assert!(
        msg.contains("first divergent op") && msg.contains(&first.name),
        "the failure message carries the localisation:\n{msg}"
    );
    let json = serde_json::to_value(&r).expect("case JSON");
    assert_eq!(json["first_divergent_op"]["op"], op, "case JSON");
    assert_eq!(json["first_divergent_op"]["layer"], layer, "case JSON");
    Some(r)
}

/// A fault from a decode position on: the prompt's positions match, the first divergence is
/// the first decode step the fault reaches, localised (by re-running that step with capture
/// on both sides) to the injected op.
#[test_log::test]
fn ffn_sub_norm_scaled_from_a_decode_position() {
    const FROM: usize = 9;
    let Some(r) = localised_run(
        LLAMA_CPP_TQ2_0,
        Fault::ScaleFrom {
            op: "ffn_sub_norm".into(),
            layer: 2,
            factor: 1.001,
            from: FROM,
        },
        "ffn_sub_norm",
        2,
        8,
    ) else {
        return;
    };
    assert!(
        r.prompt_tokens.len() <= FROM,
        "position {FROM} must be a decode step: the prompt has {} tokens",
        r.prompt_tokens.len()
    );
    let d = r.divergence.as_ref().expect("compared");
    assert_eq!(
        d.first_divergence_token,
        Some(FROM),
        "first diverging position"
    );
}

#[test_log::test]
fn no_fault_passes_without_localisation() {
    for model in [LLAMA_CPP_TQ2_0, BITNET_CPP_I2_S, IK_IQ2_BN] {
        let r = run_with(model, None, 8);
        if skipped(&r) {
            continue;
        }
        assert_eq!(r.status, Status::Pass, "{model}: {:?}", r.message);
        assert_eq!(r.first_divergent_op, None, "{model}");
        assert_eq!(r.message, None, "{model}");
    }
}

#[test_log::test]
fn bitnet_cpp_i2_s_ffn_sub_norm_scaled_in_layer_2() {
    assert_localised_on(
        BITNET_CPP_I2_S,
        Fault::Scale {
            op: "ffn_sub_norm".into(),
            layer: 2,
            factor: 1.001,
        },
        "ffn_sub_norm",
        2,
    );
}

#[test_log::test]
fn ik_iq2_bn_attn_sub_norm_scaled_in_layer_1() {
    assert_localised_on(
        IK_IQ2_BN,
        Fault::Scale {
            op: "attn_sub_norm".into(),
            layer: 1,
            factor: 1.001,
        },
        "attn_sub_norm",
        1,
    );
}

#[test_log::test]
fn ffn_sub_norm_scaled_in_layer_3() {
    assert_localised(
        Fault::Scale {
            op: "ffn_sub_norm".into(),
            layer: 3,
            factor: 1.001,
        },
        "ffn_sub_norm",
        3,
    );
}

#[test_log::test]
fn attn_norm_perturbed_in_layer_1() {
    assert_localised(
        Fault::Scale {
            op: "attn_norm".into(),
            layer: 1,
            factor: 1.0001,
        },
        "attn_norm",
        1,
    );
}

#[test_log::test]
fn rope_style_swapped_in_layer_2() {
    // RoPE is the identity at position 0, so the case fails at position 1, on the rotated
    // query (the second `Qcur-2` of the graph).
    assert_localised(Fault::SwapRopeStyle { layer: 2 }, "Qcur", 2);
}

#[test_log::test]
fn attn_output_scale_dropped_in_layer_0() {
    assert_localised(Fault::DropAttnOutputScale { layer: 0 }, "attn_out", 0);
}

#[test_log::test]
fn ffn_norm_epsilon_changed_in_layer_2() {
    assert_localised(
        Fault::RmsEps {
            op: "ffn_norm".into(),
            layer: 2,
            eps: 1e-2,
        },
        "ffn_norm",
        2,
    );
}

#[test_log::test]
fn attention_output_perturbed_in_layer_1() {
    assert_localised(
        Fault::Scale {
            op: "kqv_out".into(),
            layer: 1,
            factor: 1.001,
        },
        "kqv_out",
        1,
    );
}

#[test_log::test]
fn ffn_gate_perturbed_in_layer_3() {
    assert_localised(
        Fault::Scale {
            op: "ffn_gate".into(),
            layer: 3,
            factor: 1.01,
        },
        "ffn_gate",
        3,
    );
}
