//! The named ops of the forward pass, in graph order, under the names llama.cpp's `cb_eval`
//! callback sees (`attn_norm-0`, `Qcur-0`, ..., `result_output`). The pass taps each one
//! once ([`crate::CaptureFn`], the fault hooks); the parity suite's localiser reads the same
//! list for what to capture from a reference and how closely each op must match.

/// One named op of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    AttnNorm,
    /// The Q projection; named again per head and after RoPE.
    Qcur,
    /// The K projection; named again per head and after RoPE.
    Kcur,
    /// The V projection; named again per head.
    Vcur,
    /// Every query · key product of the batch, masked cells included (capture only).
    Kq,
    KqSoftMax,
    KqvOut,
    AttnSubNorm,
    AttnOut,
    FfnInp,
    FfnNorm,
    FfnUp,
    /// `ffn_up` times its `.scale`, when it has one.
    FfnUpS,
    FfnGate,
    FfnGateS,
    /// The gated product of an architecture without sub-norms.
    FfnSwiglu,
    /// The gated product of `bitnet-b1.58` (ReLU²).
    FfnSubOut,
    FfnSubNorm,
    /// The down projection of `bitnet-b1.58`.
    FfnDown,
    /// The down projection of an architecture without sub-norms.
    FfnOut,
    LOut,
    ResultNorm,
    ResultOutput,
}

/// What an op computes, which sets how closely a reference must reproduce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// An RMS norm (one float reduction per row).
    Norm,
    /// Per-element arithmetic: RoPE, residual adds, the gate activation.
    Elementwise,
    /// A weight matrix product (quantized activations, long reductions).
    Matmul,
    /// Products against the KV cache and the softmax.
    Attention,
    /// The output head.
    Logits,
}

impl Op {
    /// Every op, in the order the pass runs them.
    pub const ALL: [Op; 23] = [
        Op::AttnNorm,
        Op::Qcur,
        Op::Kcur,
        Op::Vcur,
        Op::Kq,
        Op::KqSoftMax,
        Op::KqvOut,
        Op::AttnSubNorm,
        Op::AttnOut,
        Op::FfnInp,
        Op::FfnNorm,
        Op::FfnUp,
        Op::FfnUpS,
        Op::FfnGate,
        Op::FfnGateS,
        Op::FfnSwiglu,
        Op::FfnSubOut,
        Op::FfnSubNorm,
        Op::FfnDown,
        Op::FfnOut,
        Op::LOut,
        Op::ResultNorm,
        Op::ResultOutput,
    ];

    /// The `cb_eval` base name (without the `-{layer}` suffix).
    pub const fn name(self) -> &'static str {
        match self {
            Op::AttnNorm => "attn_norm",
            Op::Qcur => "Qcur",
            Op::Kcur => "Kcur",
            Op::Vcur => "Vcur",
            Op::Kq => "kq",
            Op::KqSoftMax => "kq_soft_max",
            Op::KqvOut => "kqv_out",
            Op::AttnSubNorm => "attn_sub_norm",
            Op::AttnOut => "attn_out",
            Op::FfnInp => "ffn_inp",
            Op::FfnNorm => "ffn_norm",
            Op::FfnUp => "ffn_up",
            Op::FfnUpS => "ffn_up_s",
            Op::FfnGate => "ffn_gate",
            Op::FfnGateS => "ffn_gate_s",
            Op::FfnSwiglu => "ffn_swiglu",
            Op::FfnSubOut => "ffn_sub_out",
            Op::FfnSubNorm => "ffn_sub_norm",
            Op::FfnDown => "ffn_down",
            Op::FfnOut => "ffn_out",
            Op::LOut => "l_out",
            Op::ResultNorm => "result_norm",
            Op::ResultOutput => "result_output",
        }
    }

    /// The op named `name` (a base name, without the layer suffix).
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// What the op computes.
    pub const fn kind(self) -> OpKind {
        match self {
            Op::AttnNorm | Op::AttnSubNorm | Op::FfnNorm | Op::FfnSubNorm | Op::ResultNorm => {
                OpKind::Norm
            }
            Op::FfnInp | Op::FfnSwiglu | Op::FfnSubOut | Op::LOut => OpKind::Elementwise,
            Op::Qcur
            | Op::Kcur
            | Op::Vcur
            | Op::AttnOut
            | Op::FfnUp
            | Op::FfnUpS
            | Op::FfnGate
            | Op::FfnGateS
            | Op::FfnDown
            | Op::FfnOut => OpKind::Matmul,
            Op::Kq | Op::KqSoftMax | Op::KqvOut => OpKind::Attention,
            Op::ResultOutput => OpKind::Logits,
        }
    }

    /// What the `occurrence`-th distinct tensor under this name (0 the first) computes: the
    /// second `Qcur`/`Kcur` is RoPE's output.
    pub const fn kind_at(self, occurrence: usize) -> OpKind {
        match self {
            Op::Qcur | Op::Kcur if occurrence > 0 => OpKind::Elementwise,
            _ => self.kind(),
        }
    }

    /// Whether the op runs once per layer (named `{name}-{layer}`) rather than once per pass.
    pub const fn per_layer(self) -> bool {
        !matches!(self, Op::ResultNorm | Op::ResultOutput)
    }

    /// The `cb_eval` name pattern that matches every instance of the op.
    pub fn capture_pattern(self) -> String {
        if self.per_layer() {
            format!("{}-*", self.name())
        } else {
            self.name().to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::from_name(op.name()), Some(op));
        }
        assert_eq!(Op::from_name("attn_o_out"), None);
    }

    #[test]
    fn rope_outputs_are_elementwise() {
        assert_eq!(Op::Qcur.kind_at(0), OpKind::Matmul);
        assert_eq!(Op::Qcur.kind_at(1), OpKind::Elementwise);
        assert_eq!(Op::Vcur.kind_at(1), OpKind::Matmul);
    }

    #[test]
    fn only_the_head_runs_once_per_pass() {
        assert_eq!(Op::AttnNorm.capture_pattern(), "attn_norm-*");
        assert_eq!(Op::ResultOutput.capture_pattern(), "result_output");
        let once: Vec<_> = Op::ALL.into_iter().filter(|op| !op.per_layer()).collect();
        assert_eq!(once, [Op::ResultNorm, Op::ResultOutput]);
    }
}
