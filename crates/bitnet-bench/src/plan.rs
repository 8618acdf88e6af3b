//! What is run: the benchmark settings and which engines load which format.

use bitnet_fixtures::{Arch, FixtureSpec, WeightFormat};
use bitnet_models::Reference as Numerics;
use bitnet_sys::{KvType, Reference, SessionConfig, SessionSettings};
use serde::Serialize;

use crate::BenchError;

/// Name our engine has in reports and as a worker.
pub const OURS: &str = "bitnet-rs";
/// Our engine in its fast mode with a Q8_0 copy of the float head
/// (`Model::quantize_head`): its own row, never the exact engine's.
pub const OURS_Q8_0_HEAD: &str = "bitnet-rs (Q8_0 head)";

/// One weight format and the engines that run it on the full 2B-4T-shaped fixture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FormatPlan {
    /// Name in settings, reports and `BITNET_BENCH_FORMATS`.
    pub name: &'static str,
    pub arch: Arch,
    pub format: WeightFormat,
    /// The reference whose arithmetic our engine follows on this format (the one whose
    /// activation quantizer the format belongs to), always with an F16 KV cache.
    pub numerics: Numerics,
    /// References that load the file; each must load it, or the bench fails with its error.
    pub references: &'static [Reference],
}

impl FormatPlan {
    /// The fixture this format is measured on.
    pub fn fixture(&self) -> FixtureSpec {
        FixtureSpec::full(self.arch, self.format)
    }
}

/// Which engines load which format, checked by loading the full-size fixtures (TQ1_0 too:
/// llama.cpp and bitnet.cpp load and run it): ik_llama.cpp runs only the `bitnet-b1.58`
/// IQ2_BN file (it dies with SIGFPE loading TQ1_0 and TQ2_0, and computes garbage on a raw
/// I2_S file); upstream llama.cpp has no I2_S or IQ2_BN; bitnet.cpp has no IQ2_BN. The F16
/// entry follows the tiny fixtures' checks and is not in the default run.
pub const PLANS: &[FormatPlan] = &[
    FormatPlan {
        name: "i2_s",
        arch: Arch::Bitnet,
        format: WeightFormat::I2_S,
        numerics: Numerics::BitnetCpp,
        references: &[Reference::BitnetCpp],
    },
    FormatPlan {
        name: "tq1_0",
        arch: Arch::Bitnet,
        format: WeightFormat::TQ1_0,
        numerics: Numerics::LlamaCpp,
        references: &[Reference::LlamaCpp, Reference::BitnetCpp],
    },
    FormatPlan {
        name: "tq2_0",
        arch: Arch::Bitnet,
        format: WeightFormat::TQ2_0,
        numerics: Numerics::LlamaCpp,
        references: &[Reference::LlamaCpp, Reference::BitnetCpp],
    },
    FormatPlan {
        name: "iq2_bn",
        arch: Arch::BitnetB158,
        format: WeightFormat::IQ2_BN,
        numerics: Numerics::IkLlamaCpp,
        references: &[Reference::IkLlamaCpp],
    },
    FormatPlan {
        name: "f16",
        arch: Arch::Bitnet,
        format: WeightFormat::F16,
        numerics: Numerics::LlamaCpp,
        references: &[Reference::LlamaCpp, Reference::BitnetCpp],
    },
];

/// Which configuration of each reference the bench runs beside our engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefConfig {
    /// The reference at its fastest: its defaults build (`make refs-defaults`: native ISA,
    /// OpenMP, llamafile) with its default settings, run-time repacking on where it is
    /// offered, the bench's thread count and batch ([`SessionConfig::fastest`]).
    Fastest,
    /// The parity suite's build and settings (`make refs`: AVX2 family, OpenMP and
    /// llamafile off) with an F16 KV cache, flash attention off, the bench's threads.
    Deterministic,
}

impl RefConfig {
    pub const ALL: [RefConfig; 2] = [RefConfig::Fastest, RefConfig::Deterministic];

    /// Name in `BITNET_BENCH_REFS` and in engine names (`ik_llama.cpp (fastest)`).
    pub fn name(self) -> &'static str {
        match self {
            RefConfig::Fastest => "fastest",
            RefConfig::Deterministic => "deterministic",
        }
    }

    /// The session a reference runs under this configuration.
    pub fn session(self, s: &Settings, threads: u32) -> SessionConfig {
        match self {
            RefConfig::Fastest => SessionConfig::fastest(s.n_ctx, s.n_batch, threads),
            RefConfig::Deterministic => s.session(threads),
        }
    }
}

/// Formats run when `BITNET_BENCH_FORMATS` is unset.
pub const DEFAULT_FORMATS: &[&str] = &["i2_s", "tq1_0", "tq2_0", "iq2_bn"];
/// Thread counts run when `BITNET_BENCH_THREADS` is unset.
pub const DEFAULT_THREADS: &[u32] = &[1, 2];
/// Measured runs per engine when `BITNET_BENCH_RUNS` is unset.
pub const DEFAULT_RUNS: u32 = 3;
/// Reference configurations run when `BITNET_BENCH_REFS` is unset.
pub const DEFAULT_REF_CONFIGS: &[RefConfig] = &[RefConfig::Fastest];

/// Context lengths of the decode-cost curve when `BITNET_BENCH_CONTEXTS` is unset.
pub const DEFAULT_CONTEXTS: &[u32] = &[128, 512, 2048, 4096];
/// Formats the curve is measured on when `BITNET_BENCH_CONTEXT_FORMATS` is unset: I2_S,
/// the format of Microsoft's released 2B-4T model (each point costs a prompt of its length
/// in every engine, so one format by default).
pub const DEFAULT_CONTEXT_FORMATS: &[&str] = &["i2_s"];
/// Greedy steps timed at each point of the curve.
pub const CONTEXT_DECODE_STEPS: u32 = 16;
/// The batch the curve's prompts are evaluated in (they are only there to fill the cache).
pub const CONTEXT_BATCH: u32 = 512;

pub const FORMATS_ENV: &str = "BITNET_BENCH_FORMATS";
pub const CONTEXTS_ENV: &str = "BITNET_BENCH_CONTEXTS";
pub const CONTEXT_FORMATS_ENV: &str = "BITNET_BENCH_CONTEXT_FORMATS";
pub const THREADS_ENV: &str = "BITNET_BENCH_THREADS";
pub const RUNS_ENV: &str = "BITNET_BENCH_RUNS";
pub const REFS_ENV: &str = "BITNET_BENCH_REFS";

/// The plan of a format name.
pub fn plan_of(name: &str) -> Option<&'static FormatPlan> {
    PLANS.iter().find(|p| p.name == name)
}

/// Name of the numerics our worker is started with (`--numerics NAME`).
pub fn numerics_name(n: Numerics) -> &'static str {
    match n {
        Numerics::LlamaCpp => "llama.cpp",
        Numerics::BitnetCpp => "bitnet.cpp",
        Numerics::IkLlamaCpp => "ik_llama.cpp",
    }
}

/// The numerics of our engine that reproduce `r` bit for bit.
pub fn numerics_of(r: Reference) -> Numerics {
    match r {
        Reference::LlamaCpp => Numerics::LlamaCpp,
        Reference::BitnetCpp => Numerics::BitnetCpp,
        Reference::IkLlamaCpp => Numerics::IkLlamaCpp,
    }
}

/// Inverse of [`numerics_name`].
pub fn numerics_from_name(name: &str) -> Option<Numerics> {
    [
        Numerics::LlamaCpp,
        Numerics::BitnetCpp,
        Numerics::IkLlamaCpp,
    ]
    .into_iter()
    .find(|&n| numerics_name(n) == name)
}

/// Everything that shapes a measurement; written into the report as is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Prompt length, BOS included: one batch.
    pub n_prompt: usize,
    /// Greedy steps timed after the prompt.
    pub n_decode: u32,
    pub n_ctx: u32,
    pub n_batch: u32,
    /// KV cache element type of every engine.
    pub kv_type: &'static str,
    pub flash_attention: bool,
    pub threads: Vec<u32>,
    /// Unmeasured runs per engine before the measured ones.
    pub warmup_runs: u32,
    pub runs: u32,
    pub formats: Vec<&'static str>,
    /// The configurations each reference runs in.
    pub reference_configs: Vec<RefConfig>,
    /// How the prompt's ids are made.
    pub prompt_ids: &'static str,
    /// The decode-cost curve: at each context length, a prompt of that many tokens (in
    /// batches of `context_batch`), then `context_decode` timed greedy steps, in our engine
    /// and the fastest configuration of each reference of each of `context_formats`, at
    /// every thread count. Empty: no curve.
    pub context_lengths: Vec<u32>,
    pub context_formats: Vec<&'static str>,
    pub context_decode: u32,
    pub context_batch: u32,
}

impl Settings {
    /// The defaults, overridden by `BITNET_BENCH_FORMATS`, `BITNET_BENCH_THREADS`,
    /// `BITNET_BENCH_RUNS` and `BITNET_BENCH_REFS` as `var` returns them.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, BenchError> {
        let formats = match var(FORMATS_ENV) {
            Some(v) => list(FORMATS_ENV, &v, |s| plan_of(s).map(|p| p.name))?,
            None => DEFAULT_FORMATS.to_vec(),
        };
        let threads = match var(THREADS_ENV) {
            Some(v) => list(THREADS_ENV, &v, |s| s.parse().ok().filter(|&n: &u32| n > 0))?,
            None => DEFAULT_THREADS.to_vec(),
        };
        let runs = match var(RUNS_ENV) {
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|&n: &u32| n > 0)
                .ok_or_else(|| bad(RUNS_ENV, &v, "not a positive count"))?,
            None => DEFAULT_RUNS,
        };
        let reference_configs = match var(REFS_ENV) {
            Some(v) => list(REFS_ENV, &v, |s| {
                RefConfig::ALL.into_iter().find(|c| c.name() == s)
            })?,
            None => DEFAULT_REF_CONFIGS.to_vec(),
        };
        let context_lengths = match var(CONTEXTS_ENV) {
            Some(v) if v.trim() == "off" => Vec::new(),
            Some(v) => list(CONTEXTS_ENV, &v, |s| {
                s.parse().ok().filter(|&n: &u32| n > 1)
            })?,
            None => DEFAULT_CONTEXTS.to_vec(),
        };
        let context_formats = match var(CONTEXT_FORMATS_ENV) {
            Some(v) => list(CONTEXT_FORMATS_ENV, &v, |s| plan_of(s).map(|p| p.name))?,
            None => DEFAULT_CONTEXT_FORMATS.to_vec(),
        };
        Ok(Settings {
            n_prompt: 128,
            n_decode: 64,
            n_ctx: 512,
            n_batch: 128,
            kv_type: "f16",
            flash_attention: false,
            threads,
            warmup_runs: 1,
            runs,
            formats,
            reference_configs,
            prompt_ids: "BOS, then (i * 7919 + 13) % n_vocab for i = 0..n_prompt-1",
            context_lengths,
            context_formats,
            context_decode: CONTEXT_DECODE_STEPS,
            context_batch: CONTEXT_BATCH,
        })
    }

    /// The settings the decode-cost curve runs under: a context that holds its longest
    /// prompt and the timed steps, and prompts in batches of `context_batch`.
    pub fn for_context_curve(&self) -> Settings {
        let longest = self.context_lengths.iter().copied().max().unwrap_or(0);
        Settings {
            n_ctx: longest + self.context_decode,
            n_batch: self.context_batch,
            ..self.clone()
        }
    }

    /// Our engine's session (and a deterministic reference's): the bench's context, batch
    /// and `threads`, an F16 KV cache, flash attention off.
    pub fn session(&self, threads: u32) -> SessionConfig {
        SessionConfig {
            n_ctx: self.n_ctx,
            n_threads: threads,
            n_batch: self.n_batch,
            type_k: KvType::F16,
            type_v: KvType::F16,
            capture: Vec::new(),
            settings: SessionSettings::Deterministic,
        }
    }

    /// [`Settings::from_vars`] over the process environment.
    pub fn from_env() -> Result<Settings, BenchError> {
        Settings::from_vars(|k| std::env::var(k).ok())
    }
}

fn bad(var: &'static str, value: &str, reason: &str) -> BenchError {
    BenchError::BadEnv {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A comma-separated list, each item parsed by `item`; an unknown item or an empty list is
/// an error naming what is allowed.
fn list<T>(
    var: &'static str,
    value: &str,
    item: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, BenchError> {
    let items: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err(bad(var, value, "empty list"));
    }
    items
        .into_iter()
        .map(|s| {
            item(s).ok_or_else(|| {
                let allowed = if var == FORMATS_ENV || var == CONTEXT_FORMATS_ENV {
                    let names: Vec<_> = PLANS.iter().map(|p| p.name).collect();
                    format!("unknown format {s:?} (one of {})", names.join(", "))
                } else if var == REFS_ENV {
                    let names: Vec<_> = RefConfig::ALL.iter().map(|c| c.name()).collect();
                    format!("unknown configuration {s:?} (one of {})", names.join(", "))
                } else if var == CONTEXTS_ENV {
                    format!(
                        "{s:?} is not a context of 2 tokens or more (or the list is not \"off\")"
                    )
                } else {
                    format!("{s:?} is not a positive count")
                };
                bad(var, value, &allowed)
            })
        })
        .collect()
}

/// The prompt: `bos`, then `(i * 7919 + 13) % n_vocab` for `i` in `0..n - 1` (the same ids
/// in every engine; tokenization is not measured).
pub fn synthetic_prompt(bos: u32, n_vocab: u32, n: usize) -> Vec<u32> {
    std::iter::once(bos)
        .chain(
            (0..n.saturating_sub(1) as u64).map(|i| ((i * 7919 + 13) % u64::from(n_vocab)) as u32),
        )
        .take(n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_are_the_documented_run() {
        let s = Settings::from_vars(vars(&[])).unwrap();
        assert_eq!(s.formats, ["i2_s", "tq1_0", "tq2_0", "iq2_bn"]);
        assert_eq!(s.threads, [1, 2]);
        assert_eq!((s.runs, s.warmup_runs), (3, 1));
        assert_eq!(
            (s.n_prompt, s.n_decode, s.n_ctx, s.n_batch),
            (128, 64, 512, 128)
        );
        assert!(s.n_prompt <= s.n_batch as usize, "the prompt is one batch");
        assert!(s.n_prompt + s.n_decode as usize <= s.n_ctx as usize);
        assert_eq!(s.context_lengths, [128, 512, 2048, 4096]);
        assert_eq!(s.context_formats, ["i2_s"]);
        let long = s.for_context_curve();
        assert_eq!((long.n_ctx, long.n_batch), (4096 + 16, 512));
        assert_eq!(long.threads, s.threads);
    }

    #[test]
    fn the_context_curve_can_be_chosen_or_turned_off() {
        let s = Settings::from_vars(vars(&[
            (CONTEXTS_ENV, "256,1024"),
            (CONTEXT_FORMATS_ENV, "tq2_0,iq2_bn"),
        ]))
        .unwrap();
        assert_eq!(s.context_lengths, [256, 1024]);
        assert_eq!(s.context_formats, ["tq2_0", "iq2_bn"]);
        assert_eq!(s.for_context_curve().n_ctx, 1024 + 16);
        let off = Settings::from_vars(vars(&[(CONTEXTS_ENV, "off")])).unwrap();
        assert!(off.context_lengths.is_empty());
        let e = Settings::from_vars(vars(&[(CONTEXTS_ENV, "512,1")])).unwrap_err();
        assert!(e.to_string().contains("\"1\" is not a context"), "{e}");
        let e = Settings::from_vars(vars(&[(CONTEXT_FORMATS_ENV, "q4_0")])).unwrap_err();
        assert!(e.to_string().contains("unknown format"), "{e}");
    }

    #[test]
    fn environment_overrides_parse_or_name_the_problem() {
        let s = Settings::from_vars(vars(&[
            (FORMATS_ENV, "tq2_0, f16"),
            (THREADS_ENV, "2"),
            (RUNS_ENV, "1"),
        ]))
        .unwrap();
        assert_eq!(
            (s.formats, s.threads, s.runs),
            (vec!["tq2_0", "f16"], vec![2], 1)
        );

        let e = Settings::from_vars(vars(&[(FORMATS_ENV, "q4_0")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BITNET_BENCH_FORMATS=\"q4_0\": unknown format \"q4_0\" (one of i2_s, tq1_0, \
             tq2_0, iq2_bn, f16)"
        );
        let e = Settings::from_vars(vars(&[(THREADS_ENV, "1,0")])).unwrap_err();
        assert!(
            e.to_string().contains("\"0\" is not a positive count"),
            "{e}"
        );
        assert!(Settings::from_vars(vars(&[(RUNS_ENV, "0")])).is_err());
        assert!(Settings::from_vars(vars(&[(THREADS_ENV, " , ")])).is_err());
    }

    #[test]
    fn every_format_has_a_plan_with_references() {
        for name in DEFAULT_FORMATS.iter().chain(&["f16"]) {
            let p = plan_of(name).unwrap();
            assert!(!p.references.is_empty(), "{name}");
            assert_eq!(p.fixture().format, p.format);
        }
        // ik_llama.cpp runs only the bitnet-b1.58 IQ2_BN file.
        for p in PLANS {
            let ik = p.references.contains(&Reference::IkLlamaCpp);
            assert_eq!(ik, p.format == WeightFormat::IQ2_BN, "{}", p.name);
            assert_eq!(ik, p.arch == Arch::BitnetB158, "{}", p.name);
        }
    }

    #[test]
    fn numerics_names_round_trip() {
        for n in [
            Numerics::LlamaCpp,
            Numerics::BitnetCpp,
            Numerics::IkLlamaCpp,
        ] {
            assert_eq!(numerics_from_name(numerics_name(n)), Some(n));
        }
        assert_eq!(numerics_from_name("candle"), None);
        for r in Reference::ALL {
            assert_eq!(numerics_name(numerics_of(r)), r.name());
        }
        // Each format's numerics are those of a reference that runs it.
        for p in PLANS {
            assert!(
                p.references.iter().any(|&r| numerics_of(r) == p.numerics),
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn the_prompt_starts_with_bos_and_stays_in_the_vocabulary() {
        let p = synthetic_prompt(128000, 128256, 128);
        assert_eq!(p.len(), 128);
        assert_eq!(&p[..4], &[128000, 13, 7932, 15851]);
        assert_eq!(p[127], (126 * 7919 + 13) % 128256);
        assert!(synthetic_prompt(1, 10, 50).iter().all(|&t| t < 10));
        assert_eq!(synthetic_prompt(5, 10, 1), [5]);
        assert!(synthetic_prompt(5, 10, 0).is_empty());
    }
}
