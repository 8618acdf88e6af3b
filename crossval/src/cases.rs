//! The parity matrix: which models each reference runs, the prompts, and case ids.

use std::path::PathBuf;

use bitnet_fixtures::{Arch, FixtureSpec, ScaleStyle, WeightFormat};
use bitnet_sys::Reference;

/// A prompt of the matrix. Ids are stable: they name cases, reports and goldens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prompt {
    pub id: &'static str,
    pub text: &'static str,
}

/// Short English.
pub const SHORT: Prompt = Prompt {
    id: "short",
    text: "The capital of France is",
};

/// Long English: well over 200 tokens in every vocabulary of the matrix.
pub const LONG: Prompt = Prompt {
    id: "long",
    text: "The history of the printing press begins long before Gutenberg. Woodblock printing \
spread across East Asia more than a thousand years earlier, and movable type made of baked \
clay appeared in China in the eleventh century. What changed in fifteenth-century Mainz was \
the combination of a hand mould that cast uniform metal type quickly, an oil-based ink that \
clung to metal, and a screw press adapted from wine making. Together they turned printing \
from a craft that produced a few copies into an industry that produced thousands. Within \
fifty years presses were running in more than two hundred European towns, and the price of \
a book fell so far that students, merchants and artisans could own them. Scholars argue \
about how much the press caused the Reformation, the scientific revolution and the rise of \
vernacular literature, but few doubt that it changed how quickly ideas could travel, how \
reliably texts could be copied, and who could take part in the conversation. Historians \
also point to the less visible consequences: standardised spelling, page numbers, indexes, \
title pages and the very idea of an edition that many readers share word for word.",
};

/// Source code.
pub const CODE: Prompt = Prompt {
    id: "code",
    text: "fn fibonacci(n: u64) -> u64 {\n    match n {\n        0 | 1 => n,\n        _ => \
fibonacci(n - 1) + fibonacci(n - 2),\n    }\n}\n\nfor i in 0..10 {\n    println!(\"{}\", \
fibonacci(i));\n}\n",
};

/// Mixed scripts: accents, CJK, emoji with a zero-width joiner, RTL text.
pub const UNICODE: Prompt = Prompt {
    id: "unicode",
    text: "Café naïve — 東京は日本の首都です。 🦙🚀 👩‍💻 مرحبا بالعالم Ελληνικά ñ",
};

/// Leading and trailing whitespace, tabs and a newline run.
pub const WHITESPACE: Prompt = Prompt {
    id: "whitespace",
    text: "   \t Hello world  \n\n\n  trailing   ",
};

/// One text token (plus BOS where the vocabulary adds it).
pub const SINGLE_TOKEN: Prompt = Prompt {
    id: "single_token",
    text: "Hello",
};

/// Every prompt of the matrix.
pub const PROMPTS: [Prompt; 6] = [SHORT, LONG, CODE, UNICODE, WHITESPACE, SINGLE_TOKEN];

/// Tokens generated (and compared) after the prompt.
pub const TOKEN_COUNTS: [usize; 3] = [1, 8, 32];
/// The longest generation any case needs; runs are shared between token counts.
pub const MAX_NEW_TOKENS: usize = 32;
/// Context of every session: the longest prompt plus [`MAX_NEW_TOKENS`], with room.
pub const N_CTX: u32 = 512;

/// How the generated positions are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Both sides consume the reference's greedy tokens: every position is comparable.
    TeacherForced,
    /// Each side greedy on its own; positions are compared until the chosen tokens differ.
    FreeRunning,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::TeacherForced, Mode::FreeRunning];

    pub fn id(self) -> &'static str {
        match self {
            Mode::TeacherForced => "tf",
            Mode::FreeRunning => "free",
        }
    }
}

/// Where a model of the matrix comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A synthetic fixture, generated on demand by `bitnet-fixtures`.
    Fixture(FixtureSpec),
    /// A fixture converted by a reference's own `llama_model_quantize` (ik_llama.cpp runs
    /// 2B-4T-style I2_S models only after converting them to IQ2_BN).
    Converted {
        from: FixtureSpec,
        by: Reference,
        /// llama.cpp `llama_ftype` of the result.
        ftype: u32,
        /// Short name of the target format, for ids.
        to: &'static str,
    },
    /// SmolLM2-135M-Instruct Q4_1 from PyPI.
    SmolLm2,
    /// A user's model (`BITNET_GGUF`, `CROSSVAL_GGUF` or `models/*.gguf`).
    User(PathBuf),
}

/// `LLAMA_FTYPE_MOSTLY_IQ2_BN` in ik_llama.cpp.
pub const IK_FTYPE_IQ2_BN: u32 = 137;

/// One model run against one reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCase {
    pub source: ModelSource,
    pub reference: Reference,
}

impl ModelCase {
    /// Stable id: `<model>@<reference>`.
    pub fn id(&self) -> String {
        let model = match &self.source {
            ModelSource::Fixture(spec) => spec.id(),
            ModelSource::Converted { from, to, .. } => format!("{}-to-{to}", from.id()),
            ModelSource::SmolLm2 => "smollm2-135m-q4_1".to_string(),
            ModelSource::User(p) => format!(
                "user-{}",
                p.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        };
        format!("{model}@{}", reference_id(self.reference))
    }

    /// The weight format's name as reports show it.
    pub fn format(&self) -> String {
        match &self.source {
            ModelSource::Fixture(spec) => spec.format.ggml_type().name().to_string(),
            ModelSource::Converted { to, .. } => (*to).to_string(),
            ModelSource::SmolLm2 => "q4_1".to_string(),
            ModelSource::User(_) => "user".to_string(),
        }
    }
}

/// File-name-safe reference id.
pub fn reference_id(r: Reference) -> &'static str {
    match r {
        Reference::LlamaCpp => "llama_cpp",
        Reference::IkLlamaCpp => "ik_llama_cpp",
        Reference::BitnetCpp => "bitnet_cpp",
    }
}

/// The built-in models and the references that run each (measured: see
/// `bitnet-fixtures`' crate docs for what each reference loads).
pub fn builtin_models() -> Vec<ModelCase> {
    let tiny = FixtureSpec::tiny;
    let mut v = Vec::new();
    // Upstream llama.cpp: arch `bitnet` in every format it has, and `.scale` tensors.
    for format in [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::TQ1_0,
        WeightFormat::TQ2_0,
    ] {
        v.push(fixture_case(
            tiny(Arch::Bitnet, format),
            Reference::LlamaCpp,
        ));
    }
    v.push(fixture_case(
        tiny(Arch::Bitnet, WeightFormat::TQ2_0).with_scales(ScaleStyle::Tensor),
        Reference::LlamaCpp,
    ));
    v.push(ModelCase {
        source: ModelSource::SmolLm2,
        reference: Reference::LlamaCpp,
    });
    // bitnet.cpp: its own I2_S format (arch `bitnet` only).
    v.push(fixture_case(
        tiny(Arch::Bitnet, WeightFormat::I2_S),
        Reference::BitnetCpp,
    ));
    // ik_llama.cpp: 2B-4T's architecture in IQ2_BN, directly and converted from I2_S.
    v.push(fixture_case(
        tiny(Arch::BitnetB158, WeightFormat::IQ2_BN),
        Reference::IkLlamaCpp,
    ));
    v.push(ModelCase {
        source: ModelSource::Converted {
            from: tiny(Arch::BitnetB158, WeightFormat::I2_S),
            by: Reference::IkLlamaCpp,
            ftype: IK_FTYPE_IQ2_BN,
            to: "iq2_bn",
        },
        reference: Reference::IkLlamaCpp,
    });
    v
}

fn fixture_case(spec: FixtureSpec, reference: Reference) -> ModelCase {
    ModelCase {
        source: ModelSource::Fixture(spec),
        reference,
    }
}

/// User models, each run against upstream llama.cpp (the reference that loads the
/// widest range of files).
pub fn user_models() -> Vec<ModelCase> {
    bitnet_fixtures::user_models()
        .into_iter()
        .map(|p| ModelCase {
            source: ModelSource::User(p),
            reference: Reference::LlamaCpp,
        })
        .collect()
}

/// One case of the matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub model: ModelCase,
    pub prompt: Prompt,
    pub n_tokens: usize,
    pub mode: Mode,
}

impl Case {
    /// Stable, file-name-safe id.
    pub fn id(&self) -> String {
        format!(
            "{}__{}__n{}__{}",
            self.model.id().replace('@', "__"),
            self.prompt.id,
            self.n_tokens,
            self.mode.id()
        )
    }
}
