//! The parity matrix: which models each reference runs, the prompts, and case ids.

use std::path::{Path, PathBuf};

use bitnet_fixtures::{Arch, FixtureSpec, ScaleStyle, Vocab, WeightFormat};
use bitnet_sys::Reference;

use crate::routing::{route, BadModelFile, FileFacts, Route, IK_FTYPE_IQ2_BN};

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

/// The paragraph of [`LONG`], as a literal so that [`LONG_CONTEXT`] can repeat it.
macro_rules! long_paragraph {
    () => {
        "The history of the printing press begins long before Gutenberg. Woodblock printing \
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
        title pages and the very idea of an edition that many readers share word for word."
    };
}

/// Long English: well over 200 tokens in every vocabulary of the matrix.
pub const LONG: Prompt = Prompt {
    id: "long",
    text: long_paragraph!(),
};

/// Long-context text: [`LONG`]'s paragraph nine times (2,000+ tokens in every vocabulary
/// of the matrix), for the cases past 2048 positions.
pub const LONG_CONTEXT: Prompt = Prompt {
    id: "long_context",
    text: concat!(
        long_paragraph!(),
        " ",
        long_paragraph!(),
        " ",
        long_paragraph!(),
        " ",
        long_paragraph!(),
        " ",
        long_paragraph!(),
        " ",
        long_paragraph!(),
        " ",
        long_paragraph!(),
        " ",
        long_paragraph!(),
        " ",
        long_paragraph!()
    ),
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
/// Context of every built-in model's sessions: the longest prompt plus [`MAX_NEW_TOKENS`],
/// with room.
pub const N_CTX: u32 = 512;
/// The largest context a user model's sessions get: its own `context_length` up to this.
/// Every prompt of the matrix fits in it even with a small vocabulary (the long prompt is
/// ~930 tokens at worst), and the references' per-batch logits buffers (n_batch = n_ctx
/// rows of n_vocab floats) stay near 0.5 GB for a 128k vocabulary.
pub const USER_N_CTX_MAX: u32 = 1024;

/// How the generated positions are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    /// A model converted by a reference's own `llama_model_quantize` (ik_llama.cpp runs
    /// 2B-4T-style I2_S models only after converting them to IQ2_BN). Cached by the input's
    /// content hash and the reference's version.
    Converted {
        from: Box<ModelSource>,
        by: Reference,
        /// llama.cpp `llama_ftype` of the result.
        ftype: u32,
        /// Short name of the target format, for ids.
        to: &'static str,
    },
    /// SmolLM2-135M-Instruct Q4_1 from PyPI.
    SmolLm2,
    /// A user's model (`BITNET_GGUF`, `CROSSVAL_GGUF` or `models/*.gguf`), named by a
    /// file-name-safe slug of its stem.
    User { path: PathBuf, slug: String },
}

impl ModelSource {
    /// The model's part of case ids.
    pub fn id(&self) -> String {
        match self {
            ModelSource::Fixture(spec) => spec.id(),
            ModelSource::Converted { from, to, .. } => format!("{}-to-{to}", from.id()),
            ModelSource::SmolLm2 => "smollm2-135m-q4_1".to_string(),
            ModelSource::User { slug, .. } => format!("user_{slug}"),
        }
    }

    /// Whether this is (or was converted from) a user's model.
    pub fn is_user(&self) -> bool {
        match self {
            ModelSource::User { .. } => true,
            ModelSource::Converted { from, .. } => from.is_user(),
            ModelSource::Fixture(_) | ModelSource::SmolLm2 => false,
        }
    }
}

/// One model run against one reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCase {
    pub source: ModelSource,
    pub reference: Reference,
    /// Context of both sides' sessions.
    pub n_ctx: u32,
}

impl ModelCase {
    /// Stable id: `<model>@<reference>`, with `-ctx<n>` after the model for a built-in model
    /// run with a context other than [`N_CTX`] (user models always run with their own).
    pub fn id(&self) -> String {
        let ctx = if self.n_ctx == N_CTX || self.source.is_user() {
            String::new()
        } else {
            format!("-ctx{}", self.n_ctx)
        };
        format!("{}{ctx}@{}", self.source.id(), reference_id(self.reference))
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
/// `bitnet-fixtures`' crate docs for what each reference loads; `crate::routing` routes
/// each file to the same references).
pub fn builtin_models() -> Vec<ModelCase> {
    let tiny = |arch, format| ModelSource::Fixture(FixtureSpec::tiny(arch, format));
    let case = |source, reference| ModelCase {
        source,
        reference,
        n_ctx: N_CTX,
    };
    let mut v = Vec::new();
    // Upstream llama.cpp and bitnet.cpp: arch `bitnet` in every format both have.
    for reference in [Reference::LlamaCpp, Reference::BitnetCpp] {
        for format in [
            WeightFormat::F32,
            WeightFormat::F16,
            WeightFormat::TQ1_0,
            WeightFormat::TQ2_0,
        ] {
            v.push(case(tiny(Arch::Bitnet, format), reference));
        }
    }
    // `.scale` tensors, and the one real model.
    v.push(case(
        ModelSource::Fixture(
            FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0).with_scales(ScaleStyle::Tensor),
        ),
        Reference::LlamaCpp,
    ));
    v.push(case(ModelSource::SmolLm2, Reference::LlamaCpp));
    // bitnet.cpp: its own I2_S format (arch `bitnet` only).
    v.push(case(
        tiny(Arch::Bitnet, WeightFormat::I2_S),
        Reference::BitnetCpp,
    ));
    // ik_llama.cpp: 2B-4T's architecture in IQ2_BN, directly and converted from I2_S.
    v.push(case(
        tiny(Arch::BitnetB158, WeightFormat::IQ2_BN),
        Reference::IkLlamaCpp,
    ));
    v.push(case(
        ModelSource::Converted {
            from: Box::new(tiny(Arch::BitnetB158, WeightFormat::I2_S)),
            by: Reference::IkLlamaCpp,
            ftype: IK_FTYPE_IQ2_BN,
            to: "iq2_bn",
        },
        Reference::IkLlamaCpp,
    ));
    v
}

/// Context of the long-context cases: past 2048 positions, inside the fixtures' own
/// `context_length` (4096).
pub const LONG_CONTEXT_N_CTX: u32 = 4096;

/// One model per reference for the long-context cases ([`LONG_CONTEXT`], teacher-forced):
/// the tiny fixtures with the SPM vocabulary, whose 32,000-entry logits rows keep 2,000+
/// positions of both sides' logits small enough to hold (the BPE vocabulary's 128,256 would
/// need four times the memory).
pub fn long_context_models() -> Vec<ModelCase> {
    one_per_reference(
        |arch, format| FixtureSpec::tiny(arch, format).with_vocab(Vocab::LlamaSpm),
        LONG_CONTEXT_N_CTX,
    )
}

/// One model per reference at the full 2B-4T shape (30 layers, n_embd 2560, n_ff 6912,
/// 20/5 heads of 128, the 128,256-token vocabulary): TQ2_0 on llama.cpp, I2_S on bitnet.cpp,
/// IQ2_BN (arch `bitnet-b1.58`) on ik_llama.cpp.
pub fn full_shape_models() -> Vec<ModelCase> {
    one_per_reference(FixtureSpec::full, N_CTX)
}

/// Each reference's own format, as fixtures from `spec`: `bitnet` TQ2_0 on llama.cpp,
/// `bitnet` I2_S on bitnet.cpp, `bitnet-b1.58` IQ2_BN on ik_llama.cpp.
fn one_per_reference(
    spec: impl Fn(Arch, WeightFormat) -> FixtureSpec,
    n_ctx: u32,
) -> Vec<ModelCase> {
    [
        (Arch::Bitnet, WeightFormat::TQ2_0, Reference::LlamaCpp),
        (Arch::Bitnet, WeightFormat::I2_S, Reference::BitnetCpp),
        (
            Arch::BitnetB158,
            WeightFormat::IQ2_BN,
            Reference::IkLlamaCpp,
        ),
    ]
    .into_iter()
    .map(|(arch, format, reference)| ModelCase {
        source: ModelSource::Fixture(spec(arch, format)),
        reference,
        n_ctx,
    })
    .collect()
}

/// A user's model file (`BITNET_GGUF`, `CROSSVAL_GGUF`, `models/*.gguf`) and what the matrix
/// does with it.
#[derive(Debug, Clone)]
pub struct UserModel {
    pub path: PathBuf,
    /// File-name-safe, unique among the user models: the file stem.
    pub slug: String,
    /// The file's facts, or why it cannot be read as a model.
    pub facts: Result<FileFacts, BadModelFile>,
}

impl UserModel {
    /// Reads the file's facts and binds every weight once in our engine, so that a type or
    /// shape the engine cannot run is one line here, not the same failure in every case.
    pub fn read(path: PathBuf, slug: String) -> UserModel {
        let facts = FileFacts::read(&path).and_then(|f| {
            bitnet_models::Model::load(&path)
                .map(|_| f)
                .map_err(|e| BadModelFile {
                    path: path.display().to_string(),
                    reason: format!("bitnet-rs cannot load it: {e}"),
                })
        });
        UserModel { path, slug, facts }
    }

    /// Every reference's route for this file (none when the file can't be read).
    pub fn routes(&self) -> Vec<(Reference, Route)> {
        match &self.facts {
            Ok(f) => Reference::ALL.iter().map(|&r| (r, route(f, r))).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The sessions' context: the model's own `context_length`, at most [`USER_N_CTX_MAX`].
    pub fn n_ctx(&self) -> u32 {
        self.facts.as_ref().map_or(USER_N_CTX_MAX, |f| {
            u32::try_from(f.config.n_ctx_train)
                .unwrap_or(u32::MAX)
                .min(USER_N_CTX_MAX)
        })
    }

    /// The model case of one route, if it runs.
    pub fn case(&self, reference: Reference, route: &Route) -> Option<ModelCase> {
        let user = ModelSource::User {
            path: self.path.clone(),
            slug: self.slug.clone(),
        };
        let source = match route {
            Route::Direct => user,
            Route::Convert { ftype, to } => ModelSource::Converted {
                from: Box::new(user),
                by: reference,
                ftype: *ftype,
                to,
            },
            Route::NotApplicable(_) => return None,
        };
        Some(ModelCase {
            source,
            reference,
            n_ctx: self.n_ctx(),
        })
    }
}

/// A file stem as an id: ASCII letters, digits, `.`, `-` and `_` kept, anything else `_`.
fn slug_of(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let slug: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if slug.is_empty() {
        "model".into()
    } else {
        slug
    }
}

/// The user's models (`bitnet_fixtures::user_models`), each read and given a unique slug.
pub fn user_models() -> Vec<UserModel> {
    let mut out: Vec<UserModel> = Vec::new();
    for path in bitnet_fixtures::user_models() {
        let base = slug_of(&path);
        let mut slug = base.clone();
        let mut n = 2;
        while out.iter().any(|m| m.slug == slug) {
            slug = format!("{base}-{n}");
            n += 1;
        }
        out.push(UserModel::read(path, slug));
    }
    out
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
