//! The user-shape zoo: what it covers, that every member is the file its spec says, and
//! that our engine loads and runs every member. Members are generated into the shared
//! cache (`target/fixtures`) on first use.

mod common;

use std::collections::HashSet;

use bitnet_fixtures::{
    fixture, user_shape_zoo, Arch, CustomShape, EmbeddingType, FixtureSpec, ScaleStyle, Shape,
    Vocab, WeightFormat,
};
use bitnet_gguf::{GgmlType, GgufFile};
use bitnet_inference::{Session, SessionConfig};
use bitnet_models::{Model, Numerics, Reference};
use common::must;
use rstest::rstest;

/// Members of the zoo (the tests below are one case per index).
const ZOO_LEN: usize = 10;

fn member(i: usize) -> FixtureSpec {
    user_shape_zoo()[i]
}

#[test]
fn the_zoo_has_unique_ids_and_valid_custom_shapes() {
    let zoo = user_shape_zoo();
    assert_eq!(zoo.len(), ZOO_LEN);
    let ids: HashSet<String> = zoo.iter().map(FixtureSpec::id).collect();
    assert_eq!(ids.len(), zoo.len(), "{ids:?}");
    for spec in &zoo {
        let Shape::Custom(shape) = spec.shape else {
            panic!("{}: not a custom shape", spec.id());
        };
        assert_eq!(must(CustomShape::new(shape.dims())), shape, "{}", spec.id());
        assert_eq!(spec.seed, 0);
        assert!(!spec.id().contains('.'), "{}", spec.id());
    }
    assert_eq!(
        zoo[0].id(),
        "bitnet-e256-l1-h4kv4-d64-ff768-c4096-r1e4-eps1e-6-tq2_0-folded-s0-spm"
    );
}

/// Every item the zoo exists for is in at least one member.
#[test]
fn the_zoo_covers_the_shapes_users_bring() {
    let zoo = user_shape_zoo();
    let any = |what: &str, f: &dyn Fn(&FixtureSpec) -> bool| {
        assert!(zoo.iter().any(f), "no zoo member has {what}");
    };
    let d = |s: &FixtureSpec| s.shape.dims();
    any("1 block", &|s| d(s).n_layer == 1);
    any("MHA", &|s| d(s).n_head_kv == d(s).n_head);
    any("MQA", &|s| d(s).n_head_kv == 1);
    for hd in [32, 64, 128] {
        any(&format!("head_dim {hd}"), &|s| d(s).head_dim == hd);
    }
    any("n_ff 768 or 1280", &|s| [768, 1280].contains(&d(s).n_ff));
    any("rope base 1e4", &|s| d(s).rope_freq_base == 1e4);
    any("rope base 5e5", &|s| d(s).rope_freq_base == 5e5);
    any("rms eps 1e-6", &|s| d(s).rms_eps == 1e-6);
    any("the SPM vocabulary", &|s| s.vocab == Vocab::LlamaSpm);
    any(".scale tensors", &|s| s.scales == ScaleStyle::Tensor);
    any("a TQ2_0 token_embd", &|s| {
        s.embedding == EmbeddingType::TQ2_0
    });
    any("context_length 64", &|s| d(s).n_ctx == 64);
    for (arch, format) in [
        (Arch::Bitnet, WeightFormat::TQ2_0),
        (Arch::Bitnet, WeightFormat::TQ1_0),
        (Arch::Bitnet, WeightFormat::F16),
        (Arch::Bitnet, WeightFormat::I2_S),
        (Arch::BitnetB158, WeightFormat::IQ2_BN),
        (Arch::BitnetB158, WeightFormat::I2_S),
    ] {
        any(&format!("{arch:?} {format:?}"), &|s| {
            s.arch == arch && s.format == format
        });
    }
}

/// The limits of the references that should load each member (crate docs): block sizes
/// for the block formats, and for `bitnet-b1.58` ik_llama.cpp's IQ2_BN matmul (K >= 512,
/// K/64 even; the I2_S member is converted to IQ2_BN for it) and no `.scale` tensors.
#[rstest]
fn members_respect_their_references_limits(#[values(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)] i: usize) {
    let spec = member(i);
    let d = spec.shape.dims();
    let ks = [d.n_embd, d.n_ff];
    let block = match spec.format {
        WeightFormat::TQ1_0 | WeightFormat::TQ2_0 => 256,
        WeightFormat::I2_S => 128,
        WeightFormat::IQ2_BN => 64,
        WeightFormat::F32 | WeightFormat::F16 => 1,
    };
    assert!(ks.iter().all(|k| k % block == 0), "{}", spec.id());
    if spec.arch == Arch::BitnetB158 {
        assert!(
            ks.iter().all(|&k| k >= 512 && (k / 64) % 2 == 0),
            "{}",
            spec.id()
        );
        assert_eq!(spec.scales, ScaleStyle::Folded);
        assert_ne!(spec.embedding, EmbeddingType::TQ2_0, "ik dies on TQ types");
    }
}

fn u32_key(file: &GgufFile, key: &str) -> u32 {
    file.get_u32(key).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// The generated file, re-opened with the validating reader, has the metadata and tensors
/// its spec says.
#[rstest]
fn members_are_the_files_their_specs_say(#[values(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)] i: usize) {
    let spec = member(i);
    let id = spec.id();
    let path = must(fixture(&spec));
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let d = spec.shape.dims();
    let arch = spec.arch.gguf_name();
    let k = |s: &str| format!("{arch}.{s}");
    assert_eq!(file.get_str("general.architecture").unwrap(), arch);
    let n_vocab = spec.vocab.n_tokens();
    for (key, want) in [
        ("context_length", d.n_ctx),
        ("embedding_length", d.n_embd),
        ("block_count", d.n_layer),
        ("feed_forward_length", d.n_ff),
        ("attention.head_count", d.n_head),
        ("attention.head_count_kv", d.n_head_kv),
        ("rope.dimension_count", d.head_dim),
        ("vocab_size", n_vocab),
    ] {
        assert_eq!(u32_key(&file, &k(key)), want, "{id}: {key}");
    }
    let eps = file.get_f32(&k("attention.layer_norm_rms_epsilon"));
    assert_eq!(eps.unwrap().to_bits(), d.rms_eps.to_bits(), "{id}");
    let base = file.get_f32(&k("rope.freq_base")).unwrap();
    assert_eq!(base.to_bits(), d.rope_freq_base.to_bits(), "{id}");
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), n_vocab as usize, "{id}");
    let model = match spec.vocab {
        Vocab::LlamaBpe => "gpt2",
        Vocab::LlamaSpm => "llama",
    };
    assert_eq!(file.get_str("tokenizer.ggml.model").unwrap(), model, "{id}");

    let (embd, ff, kv) = (
        u64::from(d.n_embd),
        u64::from(d.n_ff),
        u64::from(d.n_embd_kv()),
    );
    let scales = spec.scales == ScaleStyle::Tensor;
    let per_block = 11 + if scales { 7 } else { 0 };
    assert_eq!(
        file.tensors().len(),
        2 + d.n_layer as usize * per_block,
        "{id}"
    );
    let check = |name: &str, ty: GgmlType, dims: &[u64]| {
        let t = file
            .tensor(name)
            .unwrap_or_else(|| panic!("{id}: no {name}"));
        assert_eq!((t.ggml_type, t.dims.as_slice()), (ty, dims), "{id}: {name}");
    };
    check(
        "token_embd.weight",
        spec.embedding.ggml_type(),
        &[embd, n_vocab.into()],
    );
    check("output_norm.weight", GgmlType::F32, &[embd]);
    let lin = spec.format.ggml_type();
    for il in 0..d.n_layer {
        let name = |t: &str| format!("blk.{il}.{t}");
        for (norm, width) in [
            ("attn_norm", embd),
            ("attn_sub_norm", embd),
            ("ffn_norm", embd),
            ("ffn_sub_norm", ff),
        ] {
            check(&name(&format!("{norm}.weight")), GgmlType::F32, &[width]);
        }
        for (m, dims) in [
            ("attn_q", [embd, embd]),
            ("attn_k", [embd, kv]),
            ("attn_v", [embd, kv]),
            ("attn_output", [embd, embd]),
            ("ffn_gate", [embd, ff]),
            ("ffn_up", [embd, ff]),
            ("ffn_down", [ff, embd]),
        ] {
            check(&name(&format!("{m}.weight")), lin, &dims);
            if scales {
                check(&name(&format!("{m}.scale")), GgmlType::F32, &[1]);
            }
        }
    }
}

/// Arbitrary ids inside each vocabulary, BOS first ("The capital of France is" in
/// each); any ids would do, the logits only have to be computed.
fn prompt(vocab: Vocab) -> &'static [u32] {
    match vocab {
        Vocab::LlamaBpe => &[128000, 791, 6864, 315, 9822, 374],
        Vocab::LlamaSpm => &[1, 450, 7483, 310, 3444, 338],
    }
}

/// Our engine loads every member and, with each reference's numerics (KV type and
/// padding, norm order, activation rounding), evaluates a prompt and then one decode step,
/// with finite, non-constant logits.
#[rstest]
fn our_engine_runs_every_member(#[values(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)] i: usize) {
    let spec = member(i);
    let id = spec.id();
    let path = must(fixture(&spec));
    let model = Model::load(&path).unwrap_or_else(|e| panic!("{id}: loading: {e}"));
    let n_vocab = spec.vocab.n_tokens() as usize;
    assert_eq!(model.config().n_vocab, n_vocab, "{id}");
    assert_eq!(model.config().n_ctx_train, spec.shape.dims().n_ctx as usize);
    let tokens = prompt(spec.vocab);
    for reference in [
        Reference::LlamaCpp,
        Reference::BitnetCpp,
        Reference::IkLlamaCpp,
    ] {
        let id = format!("{id} with {reference:?} numerics");
        let mut config = SessionConfig::new(spec.shape.dims().n_ctx.min(64) as usize);
        config.numerics = Numerics::for_reference(reference);
        let mut session =
            Session::new(&model, &config).unwrap_or_else(|e| panic!("{id}: session: {e}"));
        let logits = session
            .eval(tokens)
            .unwrap_or_else(|e| panic!("{id}: eval: {e}"));
        assert_eq!(logits.len(), tokens.len() * n_vocab, "{id}");
        check_logits(&id, &logits);
        let next = session
            .decode(tokens[1])
            .unwrap_or_else(|e| panic!("{id}: decode: {e}"));
        check_logits(&id, next);
    }
}

fn check_logits(id: &str, logits: &[f32]) {
    assert!(
        logits.iter().all(|x| x.is_finite()),
        "{id}: non-finite logits"
    );
    let (lo, hi) = logits
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!(hi - lo > 1.0, "{id}: logits barely vary: [{lo}, {hi}]");
}
