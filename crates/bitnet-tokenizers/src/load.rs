//! Building a tokenizer from `tokenizer.ggml.*` metadata, following llama.cpp's
//! `llama_vocab::impl::load`: per-model defaults, per-pre-tokenizer flags, metadata
//! overrides, and the attribute fix-ups llama.cpp applies by token text.

use std::collections::BTreeSet;
use std::path::Path;

use bitnet_gguf::{GgufError, GgufFile};

use crate::decoder::Decoder;
use crate::error::TokenizerError;
use crate::model::bpe::Bpe;
use crate::model::wpm::Wpm;
use crate::pre_tokenizer::PreConfig;
use crate::special::SpecialTokens;
use crate::tokenizer::{Model, SpecialIds, Tokenizer};
use crate::vocab::{TokenAttr, Vocab};
use crate::TokenizerKind;

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const KEY_LOWERCASE: &str = "tokenizer.ggml.normalizer.lowercase";
const KEY_STRIP_ACCENTS: &str = "tokenizer.ggml.normalizer.strip_accents";

/// Keys of the fill-in-the-middle ids: pre, suf, mid, pad, rep, sep. The deprecated
/// prefix/suffix/middle keys come later in llama.cpp's list, so they win when both exist.
const FIM_KEYS: [&[&str]; 6] = [
    &[
        "tokenizer.ggml.fim_pre_token_id",
        "tokenizer.ggml.prefix_token_id",
    ],
    &[
        "tokenizer.ggml.fim_suf_token_id",
        "tokenizer.ggml.suffix_token_id",
    ],
    &[
        "tokenizer.ggml.fim_mid_token_id",
        "tokenizer.ggml.middle_token_id",
    ],
    &["tokenizer.ggml.fim_pad_token_id"],
    &["tokenizer.ggml.fim_rep_token_id"],
    &["tokenizer.ggml.fim_sep_token_id"],
];

/// Which of llama.cpp's vocabulary types `tokenizer.ggml.model` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Spm,
    Bpe,
    /// `gemma4`: BPE over raw UTF-8 with SPM-style `▁` spaces and `<0xNN>` byte tokens.
    Gemma4,
    Wpm,
}

/// Special-token ids before metadata overrides, as llama.cpp's defaults per type.
struct DefaultIds {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    sep: Option<u32>,
}

impl Tokenizer {
    /// Opens a GGUF file and builds its tokenizer.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_gguf_file(&GgufFile::open(path)?)
    }

    /// Builds the tokenizer of an open GGUF file.
    pub fn from_gguf_file(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        load(file)
    }
}

fn load(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
    let model_name = file
        .get_str_opt(KEY_MODEL)?
        .ok_or(TokenizerError::MissingKey { key: KEY_MODEL })?;
    let pre_name = file.get_str_opt(KEY_PRE)?;
    let family = match model_name {
        "llama" => Family::Spm,
        "gpt2" => Family::Bpe,
        "gemma4" => Family::Gemma4,
        "bert" => Family::Wpm,
        other => {
            return Err(TokenizerError::UnsupportedModel {
                model: other.to_owned(),
            })
        }
    };
    let kind = match family {
        Family::Spm => TokenizerKind::Spm,
        Family::Bpe | Family::Gemma4 => TokenizerKind::Bpe,
        Family::Wpm => TokenizerKind::Wpm,
    };

    let mut defaults = match family {
        Family::Spm => DefaultIds {
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            sep: None,
        },
        Family::Bpe => DefaultIds {
            bos: Some(11),
            eos: Some(11),
            unk: None,
            sep: None,
        },
        Family::Gemma4 => DefaultIds {
            bos: None,
            eos: None,
            unk: None,
            sep: None,
        },
        Family::Wpm => DefaultIds {
            bos: Some(101),
            eos: None,
            unk: Some(100),
            sep: Some(102),
        },
    };
    // (add_space_prefix, add_bos, clean_spaces) per type, before metadata.
    let (mut add_space_prefix, mut add_bos, mut clean_spaces) = match kind {
        TokenizerKind::Spm => (true, true, false),
        TokenizerKind::Bpe => (false, false, true),
        TokenizerKind::Wpm => (false, true, true),
    };
    let pre_config = match family {
        Family::Bpe => Some(PreConfig::for_name(pre_name)?),
        // llama.cpp forces the gemma4 pre-tokenizer for this model whatever the key says.
        Family::Gemma4 => Some(PreConfig::for_name(Some("gemma4"))?),
        Family::Spm | Family::Wpm => None,
    };
    if let Some(c) = &pre_config {
        add_bos |= c.add_bos;
        clean_spaces = c.clean_spaces;
        if c.no_bos {
            defaults.bos = None;
        }
    }
    if let Some(v) = file.get_bool_opt(KEY_ADD_SPACE_PREFIX)? {
        add_space_prefix = v;
    }

    let tokens = file
        .get_str_array_opt(KEY_TOKENS)?
        .ok_or(TokenizerError::MissingKey { key: KEY_TOKENS })?;
    let n = tokens.len();
    let scores = read_scores(file)?;
    if let Some(s) = &scores {
        check_len(KEY_SCORES, s.len(), n)?;
    }
    let types = file.get_i32_array_opt(KEY_TOKEN_TYPE)?;
    if let Some(t) = &types {
        check_len(KEY_TOKEN_TYPE, t.len(), n)?;
    }
    let mut vocab = Vocab::new(tokens, scores, types.as_deref())?;

    let id = |default: Option<u32>, key: &str| resolve_id(file, n, default, key);
    let bos = id(defaults.bos, "tokenizer.ggml.bos_token_id")?;
    let eos = id(defaults.eos, "tokenizer.ggml.eos_token_id")?;
    let eot = id(None, "tokenizer.ggml.eot_token_id")?;
    let eom = id(None, "tokenizer.ggml.eom_token_id")?;
    let unk = id(defaults.unk, "tokenizer.ggml.unknown_token_id")?;
    let sep = id(defaults.sep, "tokenizer.ggml.seperator_token_id")?;
    let mut fim = [None; 6];
    for (slot, keys) in fim.iter_mut().zip(FIM_KEYS) {
        for key in keys {
            *slot = id(*slot, key)?;
        }
    }

    let model = match (family, &pre_config) {
        (Family::Bpe | Family::Gemma4, Some(config)) => {
            let merges = file
                .get_str_array_opt(KEY_MERGES)?
                .ok_or(TokenizerError::MissingKey { key: KEY_MERGES })?;
            Model::Bpe(Bpe::new(&vocab, merges, config)?)
        }
        (Family::Wpm, _) => {
            let lowercase = file.get_bool_opt(KEY_LOWERCASE)?.unwrap_or(true);
            let strip_accents = file.get_bool_opt(KEY_STRIP_ACCENTS)?.unwrap_or(lowercase);
            Model::Wpm(Wpm {
                lowercase,
                strip_accents,
                unk,
            })
        }
        _ => Model::Spm,
    };

    let gemma4 = pre_config
        .as_ref()
        .is_some_and(|c| c.pre == crate::PreTokenizer::Gemma4);
    if let Some(v) = file.get_bool_opt(KEY_ADD_BOS)? {
        add_bos = v;
    }
    // llama.cpp forces BOS on for Gemma 4 whatever the metadata says.
    if gemma4 {
        add_bos = true;
    }
    let add_eos = file.get_bool_opt(KEY_ADD_EOS)?.unwrap_or(false);

    let mut found = FoundIds { eot, eom, fim };
    let eog = fix_attributes(&mut vocab, &mut found, eos);
    let special_tokens = SpecialTokens::new(&vocab);
    set_strip_flags(file, pre_name, &mut vocab, &special_tokens)?;

    let escape_whitespaces = pre_config.as_ref().is_some_and(|c| c.escape_whitespaces);
    Ok(Tokenizer {
        kind,
        pre: pre_config.map(|c| c.pre),
        vocab,
        model,
        special_tokens,
        ids: SpecialIds {
            bos,
            eos,
            eot: found.eot,
            unk,
            sep,
        },
        eog,
        add_bos,
        add_eos,
        add_space_prefix,
        escape_whitespaces,
        decoder: Decoder {
            kind,
            escaped_whitespace: escape_whitespaces,
            add_space_prefix,
            clean_spaces,
        },
    })
}

fn check_len(key: &'static str, len: usize, n_tokens: usize) -> Result<(), TokenizerError> {
    if len == n_tokens {
        Ok(())
    } else {
        Err(TokenizerError::LengthMismatch { key, len, n_tokens })
    }
}

/// `tokenizer.ggml.scores` as f32 (llama.cpp also accepts an i32 array).
fn read_scores(file: &GgufFile) -> Result<Option<Vec<f32>>, TokenizerError> {
    match file.get_f32_array_opt(KEY_SCORES) {
        Ok(scores) => Ok(scores.map(<[f32]>::to_vec)),
        Err(e) => match file
            .get(KEY_SCORES)
            .and_then(|v| v.as_array()?.as_i32_slice())
        {
            // Token scores are small log-probabilities; the conversion is llama.cpp's cast.
            Some(ints) => Ok(Some(ints.iter().map(|&s| s as f32).collect())),
            None => Err(e.into()),
        },
    }
}

/// A special-token id: the metadata value when present and in range, else the default
/// when in range (llama.cpp only warns about an out-of-range id and keeps the default).
fn resolve_id(
    file: &GgufFile,
    n_tokens: usize,
    default: Option<u32>,
    key: &str,
) -> Result<Option<u32>, GgufError> {
    let in_range = |id: u32| usize::try_from(id).is_ok_and(|i| i < n_tokens);
    let default = default.filter(|&id| in_range(id));
    Ok(match file.get_u32_opt(key)? {
        Some(id) if in_range(id) => Some(id),
        _ => default,
    })
}

/// Ids llama.cpp fills in by recognising token texts when metadata does not name them.
struct FoundIds {
    eot: Option<u32>,
    eom: Option<u32>,
    /// fim pre, suf, mid, pad, rep, sep.
    fim: [Option<u32>; 6],
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_TEXTS: [&[&str]; 6] = [
    &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ],
    &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ],
    &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ],
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];
/// Texts llama.cpp treats as end of generation (and therefore as control tokens).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// gpt-oss tokens llama.cpp always renders, as user-defined tokens.
const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// llama.cpp's load-time attribute fix-ups, in its order. Where llama.cpp takes "the first
/// matching token" while iterating a hash map (an unspecified order), the text listed first
/// wins here (so LLaMA 3's end of turn is `<|eot_id|>`, not `<|end_of_text|>`). Returns the
/// end-of-generation ids.
fn fix_attributes(vocab: &mut Vocab, found: &mut FoundIds, eos: Option<u32>) -> BTreeSet<u32> {
    let mark_control = |vocab: &mut Vocab, id: u32| {
        if let Some(a) = vocab.attr_mut(id) {
            *a |= TokenAttr::CONTROL;
        }
    };
    let first_with = |vocab: &Vocab, texts: &[&str]| texts.iter().find_map(|t| vocab.id(t));
    let all_with = |vocab: &Vocab, texts: &[&str]| -> Vec<u32> {
        texts.iter().filter_map(|t| vocab.id(t)).collect()
    };

    let detect = |slot: &mut Option<u32>, texts: &[&str], vocab: &mut Vocab| {
        if slot.is_none() {
            *slot = first_with(vocab, texts);
            if let Some(id) = *slot {
                mark_control(vocab, id);
            }
        }
    };
    detect(&mut found.eot, EOT_TEXTS, vocab);
    detect(&mut found.eom, EOM_TEXTS, vocab);
    for (slot, texts) in found.fim.iter_mut().zip(FIM_TEXTS) {
        detect(slot, texts, vocab);
    }

    // Control tokens named "unused" are unused.
    let unused: Vec<u32> = vocab
        .iter()
        .filter(|&(id, t)| {
            t.contains("unused")
                && vocab
                    .attr(id)
                    .is_some_and(|a| a.intersects(TokenAttr::CONTROL))
        })
        .map(|(id, _)| id)
        .collect();
    for id in unused {
        if let Some(a) = vocab.attr_mut(id) {
            *a |= TokenAttr::UNUSED;
        }
    }

    let mut eog: BTreeSet<u32> = found.fim[3..].iter().flatten().copied().collect();
    for id in all_with(vocab, EOG_TEXTS) {
        eog.insert(id);
        mark_control(vocab, id);
    }
    for id in all_with(vocab, ALWAYS_RENDERED) {
        if let Some(a) = vocab.attr_mut(id) {
            *a = TokenAttr::USER_DEFINED;
        }
    }
    eog.extend([eos, found.eot, found.eom].into_iter().flatten());

    // o200k_harmony and solar-open: "<|end|>" is not an end of generation when the
    // vocabulary also has the tokens that really end a turn.
    let eog_text = |vocab: &Vocab, eog: &BTreeSet<u32>, text: &str| {
        eog.iter().copied().find(|&id| vocab.text(id) == Some(text))
    };
    let has = |vocab: &Vocab, eog: &BTreeSet<u32>, texts: &[&str]| {
        texts.iter().any(|t| eog_text(vocab, eog, t).is_some())
    };
    let has_return = has(vocab, &eog, &["<|return|>"]);
    let has_call = has(vocab, &eog, &["<|call|>", "<|calls|>"]);
    let has_flush = has(vocab, &eog, &["<|flush|>"]);
    if let Some(end) = eog_text(vocab, &eog, "<|end|>") {
        if has_call && (has_return || has_flush) {
            eog.remove(&end);
            if let Some(a) = vocab.attr_mut(end) {
                *a = TokenAttr::USER_DEFINED;
            }
        }
    }
    // Gemma 4 and PLaMo have an ordinary "</s>".
    if has(vocab, &eog, &["<|tool_response>", "<|plamo:eos|>"]) {
        if let Some(s) = eog_text(vocab, &eog, "</s>") {
            eog.remove(&s);
            if let Some(a) = vocab.attr_mut(s) {
                *a = TokenAttr::NORMAL;
            }
        }
    }
    eog
}

/// llama.cpp's per-model `LSTRIP`/`RSTRIP` settings, chosen by `general.name`,
/// `tokenizer.ggml.pre` and `general.architecture`.
fn set_strip_flags(
    file: &GgufFile,
    pre_name: Option<&str>,
    vocab: &mut Vocab,
    special: &SpecialTokens,
) -> Result<(), TokenizerError> {
    let name = file
        .get_str_opt("general.name")?
        .unwrap_or_default()
        .to_ascii_lowercase();
    let arch = file
        .get_str_opt("general.architecture")?
        .unwrap_or_default();
    let pre = pre_name.unwrap_or_default();
    let contains_any = |s: &str, parts: &[&str]| parts.iter().any(|p| s.contains(p));
    let set = |vocab: &mut Vocab, text: &str, attr: TokenAttr, on: bool| {
        if let Some(a) = vocab.id(text).and_then(|id| vocab.attr_mut(id)) {
            *a = a.with(attr, on);
        }
    };
    if contains_any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code", "mmbert"])
        || contains_any(arch, &["nomic-bert-moe", "jina-bert-v3"])
    {
        set(vocab, "<mask>", TokenAttr::LSTRIP, true);
    } else if contains_any(&name, &["phi-3", "phi3"]) {
        for &id in special.ids() {
            if let Some(a) = vocab.attr_mut(id) {
                *a = a.with(TokenAttr::RSTRIP, true);
            }
        }
        set(vocab, "</s>", TokenAttr::RSTRIP, true);
        for text in ["<unk>", "<s>", "<|endoftext|>"] {
            set(vocab, text, TokenAttr::RSTRIP, false);
        }
    } else if contains_any(&name, &["modern-bert"]) {
        set(vocab, "[MASK]", TokenAttr::LSTRIP, true);
    }
    Ok(())
}
