//! Generated fixtures: determinism, caching, one model in every format, loader layouts,
//! statistics. Tiny fixtures are generated into the shared cache (`target/fixtures`) on
//! first use; tests needing a fresh directory use a temporary one.

mod common;

use std::collections::BTreeMap;
use std::fs;

use bitnet_fixtures::{
    fixture, fixture_in, plan, tensor_f32, ternary_tensor, Arch, FixtureError, FixtureSpec,
    ScaleStyle, Shape, WeightFormat, N_VOCAB,
};
use bitnet_gguf::{GgmlType, GgufFile, MetadataValue, TensorInfo};
use bitnet_kernels::{i2_s, iq2_bn, tq1_0, tq2_0};
use common::must;
use half::f16;
use rstest::rstest;

fn open(spec: &FixtureSpec) -> GgufFile {
    let path = must(fixture(spec));
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tensor's values as f32, decoded with the kernels' dequantizers.
fn decode(file: &GgufFile, info: &TensorInfo) -> Vec<f32> {
    let bytes = file.tensor_data(info);
    let k = info.dims[0] as usize;
    let n = info.n_elements() as usize;
    let mut out = vec![0f32; n];
    match info.ggml_type {
        GgmlType::F32 => {
            out = pod_vec::<f32>(bytes);
        }
        GgmlType::F16 => {
            let h = pod_vec::<f16>(bytes);
            out = h.into_iter().map(f16::to_f32).collect();
        }
        GgmlType::TQ1_0 => {
            let blocks = pod_vec::<tq1_0::BlockTQ1_0>(bytes);
            tq1_0::dequantize_row_tq1_0(&blocks, &mut out).unwrap();
        }
        GgmlType::TQ2_0 => {
            let blocks = pod_vec::<tq2_0::BlockTQ2_0>(bytes);
            tq2_0::dequantize_row_tq2_0(&blocks, &mut out).unwrap();
        }
        GgmlType::I2_S => {
            let t = i2_s::I2sTensor::from_bytes(bytes, k, n / k).unwrap();
            t.dequantize(&mut out).unwrap();
        }
        GgmlType::IQ2_BN => {
            let row = iq2_bn::iq2_bn_row_size(k).unwrap();
            for (b, o) in bytes.chunks_exact(row).zip(out.chunks_exact_mut(k)) {
                let r = iq2_bn::Iq2BnRow::from_bytes(b, k).unwrap();
                iq2_bn::dequantize_row_iq2_bn(&r, o).unwrap();
            }
        }
        other => panic!("{}: unexpected type {other}", info.name),
    }
    out
}

/// Copies bytes into a vector of `T` (the bytes need not be aligned for `T`).
fn pod_vec<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every format of one (arch, scale style) decodes, tensor by tensor, to exactly the
/// values of the F32 file, and the F32 file holds exactly what `tensor_f32` says.
#[rstest]
fn every_format_decodes_to_the_f32_weights(
    #[values(Arch::Bitnet, Arch::BitnetB158)] arch: Arch,
    #[values(
        WeightFormat::F16,
        WeightFormat::TQ1_0,
        WeightFormat::TQ2_0,
        WeightFormat::I2_S,
        WeightFormat::IQ2_BN
    )]
    format: WeightFormat,
    #[values(ScaleStyle::Folded, ScaleStyle::Tensor)] scales: ScaleStyle,
) {
    let spec = FixtureSpec::tiny(arch, format).with_scales(scales);
    if arch == Arch::BitnetB158 && scales == ScaleStyle::Tensor {
        assert!(matches!(
            fixture(&spec),
            Err(FixtureError::Unsupported { .. })
        ));
        return;
    }
    let reference = open(&FixtureSpec {
        format: WeightFormat::F32,
        ..spec
    });
    let file = open(&spec);
    assert_eq!(file.tensors().len(), reference.tensors().len());
    for (info, ref_info) in file.tensors().iter().zip(reference.tensors()) {
        assert_eq!(info.name, ref_info.name);
        assert_eq!(info.dims, ref_info.dims, "{}", info.name);
        let is_linear = info.dims.len() == 2 && info.name.starts_with("blk.");
        if is_linear {
            assert_eq!(info.ggml_type, format.ggml_type(), "{}", info.name);
            assert_eq!(
                bits(&decode(&file, info)),
                bits(&decode(&reference, ref_info)),
                "{} decodes differently from the F32 file",
                info.name
            );
        } else {
            assert_eq!(info.ggml_type, ref_info.ggml_type, "{}", info.name);
            assert_eq!(
                file.tensor_data(info),
                reference.tensor_data(ref_info),
                "{}",
                info.name
            );
        }
    }
}

#[rstest]
#[case::bitnet_folded(Arch::Bitnet, ScaleStyle::Folded)]
#[case::bitnet_tensor(Arch::Bitnet, ScaleStyle::Tensor)]
#[case::bitnet_b158(Arch::BitnetB158, ScaleStyle::Folded)]
fn the_f32_file_holds_the_api_values(#[case] arch: Arch, #[case] scales: ScaleStyle) {
    let spec = FixtureSpec::tiny(arch, WeightFormat::F32).with_scales(scales);
    let file = open(&spec);
    for info in file.tensors() {
        let api = must(tensor_f32(&spec, &info.name));
        assert_eq!(bits(&decode(&file, info)), bits(&api), "{}", info.name);
    }
    // The ternary view: folded files store s·t, tensor-style files t and `.scale` = [s].
    let q = must(ternary_tensor(&spec, "blk.1.attn_q.weight"));
    let stored = must(tensor_f32(&spec, "blk.1.attn_q.weight"));
    match scales {
        ScaleStyle::Folded => assert_eq!(bits(&stored), bits(&q.to_f32())),
        ScaleStyle::Tensor => {
            let t: Vec<f32> = q.trits.iter().map(|&t| f32::from(t)).collect();
            assert_eq!(bits(&stored), bits(&t));
            assert_eq!(must(tensor_f32(&spec, "blk.1.attn_q.scale")), vec![q.scale]);
        }
    }
}

#[test]
fn formats_store_the_scale_where_the_references_read_it() {
    let spec = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::I2_S);
    let down = must(ternary_tensor(&spec, "blk.0.ffn_down.weight"));
    assert_eq!(down.dims, [1024, 512]);
    // I2_S: one f32 after the codes, max|w| over the tensor (bitnet.cpp's quantize_i2_s).
    let file = open(&spec);
    let bytes = must_tensor(&file, "blk.0.ffn_down.weight");
    let t = i2_s::I2sTensor::from_bytes(bytes, 1024, 512).unwrap();
    assert_eq!(t.scale(), down.scale);
    // IQ2_BN: every row starts with its f32 max|w|.
    let spec = FixtureSpec::tiny(Arch::BitnetB158, WeightFormat::IQ2_BN);
    let file = open(&spec);
    let bytes = must_tensor(&file, "blk.0.ffn_down.weight");
    let row = iq2_bn::iq2_bn_row_size(1024).unwrap();
    for r in bytes.chunks_exact(row) {
        assert_eq!(
            iq2_bn::Iq2BnRow::from_bytes(r, 1024).unwrap().d(),
            down.scale
        );
    }
    // TQ2_0: every 256-block's d = amax (all of them have a non-zero trit here).
    let spec = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0);
    let file = open(&spec);
    let blocks = pod_vec::<tq2_0::BlockTQ2_0>(must_tensor(&file, "blk.0.ffn_down.weight"));
    assert!(blocks.iter().all(|b| b.d.to_f32() == down.scale));
}

fn must_tensor<'f>(file: &'f GgufFile, name: &str) -> &'f [u8] {
    file.tensor_bytes(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn same_spec_gives_identical_bytes_and_another_seed_other_weights() {
    let spec = FixtureSpec::tiny(Arch::BitnetB158, WeightFormat::IQ2_BN);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pa = must(fixture_in(&spec, a.path()));
    let pb = must(fixture_in(&spec, b.path()));
    assert_eq!(pa.file_name(), pb.file_name());
    assert!(fs::read(&pa).unwrap() == fs::read(&pb).unwrap());

    let other = spec.with_seed(1);
    assert_ne!(other.id(), spec.id());
    let name = "blk.2.ffn_gate.weight";
    let (w0, w1) = (
        must(ternary_tensor(&spec, name)),
        must(ternary_tensor(&other, name)),
    );
    assert_ne!(w0.trits, w1.trits);
    assert_ne!(w0.scale, w1.scale);
    let pc = must(fixture_in(&other, a.path()));
    let (f0, f1) = (GgufFile::open(&pa).unwrap(), GgufFile::open(&pc).unwrap());
    for t in ["token_embd.weight", name, "blk.0.attn_norm.weight"] {
        assert_ne!(must_tensor(&f0, t), must_tensor(&f1, t), "{t}");
    }
}

#[test]
fn weights_do_not_depend_on_format_scale_style_or_arch() {
    let base = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::F32);
    let variants = [
        FixtureSpec::tiny(Arch::BitnetB158, WeightFormat::IQ2_BN),
        base.with_scales(ScaleStyle::Tensor),
    ];
    for name in [
        "blk.3.attn_k.weight",
        "blk.0.ffn_down.weight",
        "token_embd.weight",
    ] {
        let want = must(tensor_f32(&base, name));
        for v in variants {
            let got = match (v.scales, ternary_tensor(&v, name)) {
                (ScaleStyle::Tensor, Ok(w)) => w.to_f32(),
                _ => must(tensor_f32(&v, name)),
            };
            assert_eq!(bits(&got), bits(&want), "{name} in {}", v.id());
        }
    }
}

#[test]
fn a_cached_fixture_is_returned_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ1_0);
    let path = must(fixture_in(&spec, dir.path()));
    let before = fs::metadata(&path).unwrap();
    let again = must(fixture_in(&spec, dir.path()));
    let after = fs::metadata(&again).unwrap();
    assert_eq!(again, path);
    assert_eq!(before.modified().unwrap(), after.modified().unwrap());
    assert_eq!(before.len(), after.len());
    // Nothing but the fixture is left in the directory (no temporary files).
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![path.file_name().unwrap().to_owned()]);
    assert!(path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("bitnet-tiny-tq1_0-folded-s0-"));
}

#[test]
fn ids_name_every_field() {
    let spec = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::TQ2_0);
    assert_eq!(spec.id(), "bitnet-tiny-tq2_0-folded-s0");
    let spec = FixtureSpec::full(Arch::BitnetB158, WeightFormat::I2_S).with_seed(7);
    assert_eq!(spec.id(), "bitnet-b158-2b4t-i2_s-folded-s7");
    let spec =
        FixtureSpec::tiny(Arch::Bitnet, WeightFormat::IQ2_BN).with_scales(ScaleStyle::Tensor);
    assert_eq!(spec.id(), "bitnet-tiny-iq2_bn-tensor-s0");
}

#[test]
fn bitnet_b158_refuses_scale_tensors() {
    let spec =
        FixtureSpec::tiny(Arch::BitnetB158, WeightFormat::IQ2_BN).with_scales(ScaleStyle::Tensor);
    let err = plan(&spec).unwrap_err();
    assert!(matches!(err, FixtureError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains(".scale"), "{err}");
}

/// Sorted (name, dims) of a file's tensors.
fn layout(file: &GgufFile) -> Vec<(String, Vec<u64>)> {
    let mut v: Vec<_> = file
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.dims.clone()))
        .collect();
    v.sort();
    v
}

/// The tensors a loader creates for the tiny shape (n_embd 512, n_ff 1024, 4 blocks,
/// n_embd_gqa 128), written out from the C++ sources:
/// - upstream llama.cpp `llama_model_bitnet::load_arch_tensors` (src/models/bitnet.cpp)
///   and bitnet.cpp's `LLM_ARCH_BITNET` case in `llm_load_tensors`: token_embd
///   {n_embd, n_vocab}, output_norm {n_embd}; per block attn_norm, attn_sub_norm {n_embd},
///   attn_q {n_embd, n_embd}, attn_k, attn_v {n_embd, n_embd_gqa}, attn_output
///   {n_embd, n_embd}, ffn_norm {n_embd}, ffn_sub_norm {n_ff}, ffn_gate, ffn_up
///   {n_embd, n_ff}, ffn_down {n_ff, n_embd}; optional `.scale` {1} after each matrix;
/// - ik_llama.cpp `create_bitnet2_tensors` (bitnet-b1.58): the same, no `.scale`, optional
///   `output` (absent: tied to token_embd) and biases (absent).
fn expected_layout(scales: bool) -> Vec<(String, Vec<u64>)> {
    let mut v: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![512, 128256]),
        ("output_norm.weight".into(), vec![512]),
    ];
    for i in 0..4 {
        let mut t = |n: &str, d: &[u64]| v.push((format!("blk.{i}.{n}"), d.to_vec()));
        t("attn_norm.weight", &[512]);
        t("attn_sub_norm.weight", &[512]);
        t("attn_q.weight", &[512, 512]);
        t("attn_k.weight", &[512, 128]);
        t("attn_v.weight", &[512, 128]);
        t("attn_output.weight", &[512, 512]);
        t("ffn_norm.weight", &[512]);
        t("ffn_sub_norm.weight", &[1024]);
        t("ffn_gate.weight", &[512, 1024]);
        t("ffn_up.weight", &[512, 1024]);
        t("ffn_down.weight", &[1024, 512]);
        if scales {
            for m in [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                t(&format!("{m}.scale"), &[1]);
            }
        }
    }
    v.sort();
    v
}

fn u32_key(file: &GgufFile, key: &str) -> u32 {
    file.get_u32(key).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Hyper-parameters every loader reads (required: context_length, embedding_length,
/// block_count, layer_norm_rms_epsilon; read and needed here: feed_forward_length,
/// head_count, head_count_kv, rope.dimension_count, rope.freq_base), and the tokenizer.
fn check_tiny_metadata(file: &GgufFile, arch: &str) {
    assert_eq!(file.get_str("general.architecture").unwrap(), arch);
    let k = |s: &str| format!("{arch}.{s}");
    assert_eq!(u32_key(file, &k("context_length")), 4096);
    assert_eq!(u32_key(file, &k("embedding_length")), 512);
    assert_eq!(u32_key(file, &k("block_count")), 4);
    assert_eq!(u32_key(file, &k("feed_forward_length")), 1024);
    assert_eq!(u32_key(file, &k("attention.head_count")), 8);
    assert_eq!(u32_key(file, &k("attention.head_count_kv")), 2);
    // ik refuses bitnet-b1.58 unless n_rot == n_embd / n_head.
    assert_eq!(u32_key(file, &k("rope.dimension_count")), 512 / 8);
    assert_eq!(u32_key(file, &k("vocab_size")), N_VOCAB);
    assert_eq!(
        file.get_f32(&k("attention.layer_norm_rms_epsilon"))
            .unwrap(),
        1e-5
    );
    assert_eq!(file.get_f32(&k("rope.freq_base")).unwrap(), 500_000.0);
    check_tokenizer(file);
}

/// LLaMA-3 BPE, BOS 128000 added.
fn check_tokenizer(file: &GgufFile) {
    assert_eq!(file.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), "llama-bpe");
    assert_eq!(
        file.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        128256
    );
    assert_eq!(u32_key(file, "tokenizer.ggml.bos_token_id"), 128000);
    assert_eq!(u32_key(file, "tokenizer.ggml.eos_token_id"), 128001);
    assert!(file.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert!(file.get_str_array("tokenizer.ggml.merges").unwrap().len() > 280_000);
}

#[rstest]
fn tiny_bitnet_follows_upstream_llama_cpps_loader(
    #[values(WeightFormat::F32, WeightFormat::TQ2_0, WeightFormat::I2_S)] format: WeightFormat,
    #[values(ScaleStyle::Folded, ScaleStyle::Tensor)] scales: ScaleStyle,
) {
    let file = open(&FixtureSpec::tiny(Arch::Bitnet, format).with_scales(scales));
    assert_eq!(layout(&file), expected_layout(scales == ScaleStyle::Tensor));
    check_tiny_metadata(&file, "bitnet");
    assert_eq!(u32_key(&file, "general.file_type"), format.file_type());
    for t in file.tensors() {
        let want = if t.name == "token_embd.weight" {
            GgmlType::F16
        } else if t.dims.len() == 2 {
            format.ggml_type()
        } else {
            GgmlType::F32
        };
        assert_eq!(t.ggml_type, want, "{}", t.name);
    }
}

#[rstest]
fn tiny_bitnet_b158_follows_ik_llama_cpps_loader(
    #[values(WeightFormat::IQ2_BN, WeightFormat::F16, WeightFormat::I2_S)] format: WeightFormat,
) {
    let file = open(&FixtureSpec::tiny(Arch::BitnetB158, format));
    assert_eq!(layout(&file), expected_layout(false));
    check_tiny_metadata(&file, "bitnet-b1.58");
    // ik's IQ2_BN matmul aborts below K = 512; K/64 even avoids its AVX2 odd-tail path.
    for t in file.tensors().iter().filter(|t| t.dims.len() == 2) {
        assert!(t.dims[0] >= 512 && t.dims[0] % 128 == 0, "{}", t.name);
    }
}

#[test]
fn tiny_statistics_are_realistic() {
    let spec = FixtureSpec::tiny(Arch::Bitnet, WeightFormat::F32);
    let file = open(&spec);
    let mut scales = Vec::new();
    for t in file.tensors() {
        let v = decode(&file, t);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let std = (v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        if t.name == "token_embd.weight" {
            assert!(mean.abs() < 1e-3, "embedding mean {mean}");
            assert!((std - 0.05).abs() < 1e-3, "embedding std {std}");
        } else if t.name == "output_norm.weight" {
            // Gain 3 / (0.05 · sqrt(512)) sets the logit spread.
            assert!((mean - 2.652).abs() < 0.05, "output_norm mean {mean}");
        } else if t.dims.len() == 1 {
            assert!((mean - 1.0).abs() < 0.02, "{}: mean {mean}", t.name);
            assert!(v.iter().all(|x| (x - 1.0).abs() < 0.2), "{}", t.name);
        } else {
            let w = must(ternary_tensor(&spec, &t.name));
            let zeros = v.iter().filter(|&&x| x == 0.0).count() as f64 / n;
            assert!(
                (zeros - 1.0 / 3.0).abs() < 0.01,
                "{}: {zeros} zeros",
                t.name
            );
            assert!(v.iter().all(|&x| x == 0.0 || x.abs() == w.scale));
            // s = u / sqrt(2/3 · K), u in [0.75, 1.25), rounded to f16.
            let base = 1.0 / (2.0 / 3.0 * t.dims[0] as f64).sqrt();
            let u = f64::from(w.scale) / base;
            assert!((0.749..1.251).contains(&u), "{}: u = {u}", t.name);
            assert_eq!(f16::from_f32(w.scale).to_f32(), w.scale);
            scales.push(w.scale);
        }
    }
    assert_eq!(scales.len(), 4 * 7);
    scales.sort_by(f32::total_cmp);
    scales.dedup();
    assert!(
        scales.len() >= 20,
        "per-tensor scales barely vary: {scales:?}"
    );
}

#[rstest]
fn full_2b4t_plan_matches_microsofts_file(
    #[values(WeightFormat::I2_S, WeightFormat::TQ2_0, WeightFormat::IQ2_BN)] format: WeightFormat,
) {
    let spec = FixtureSpec::full(Arch::BitnetB158, format);
    assert_eq!(spec.shape, Shape::Full2B4T);
    let p = must(plan(&spec));
    let md: BTreeMap<&str, &MetadataValue> =
        p.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let want: [(&str, MetadataValue); 14] = [
        ("general.architecture", "bitnet-b1.58".into()),
        ("general.name", "bitnet2b".into()),
        ("bitnet-b1.58.vocab_size", 128256u32.into()),
        ("bitnet-b1.58.context_length", 4096u32.into()),
        ("bitnet-b1.58.embedding_length", 2560u32.into()),
        ("bitnet-b1.58.block_count", 30u32.into()),
        ("bitnet-b1.58.feed_forward_length", 6912u32.into()),
        ("bitnet-b1.58.rope.dimension_count", 128u32.into()),
        ("bitnet-b1.58.attention.head_count", 20u32.into()),
        ("bitnet-b1.58.attention.head_count_kv", 5u32.into()),
        (
            "bitnet-b1.58.attention.layer_norm_rms_epsilon",
            1e-5f32.into(),
        ),
        ("bitnet-b1.58.rope.freq_base", 500_000f32.into()),
        ("general.file_type", format.file_type().into()),
        ("tokenizer.ggml.bos_token_id", 128000u32.into()),
    ];
    for (k, v) in &want {
        assert_eq!(md.get(k), Some(&v), "{k}");
    }
    assert_eq!(md["tokenizer.ggml.model"], &MetadataValue::from("gpt2"));
    assert_eq!(md["tokenizer.ggml.pre"], &MetadataValue::from("llama-bpe"));
    assert_eq!(
        md["tokenizer.ggml.add_bos_token"],
        &MetadataValue::from(true)
    );
    if format == WeightFormat::I2_S {
        assert_eq!(md["general.file_type"], &MetadataValue::from(40u32));
    }

    // 2 + 30 · 11 = 332 tensors, as in ggml-model-i2_s.gguf.
    assert_eq!(p.tensors.len(), 332);
    let mut names: Vec<(String, GgmlType, Vec<u64>)> = p
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ggml_type, t.dims.clone()))
        .collect();
    names.sort();
    let mut want: Vec<(String, GgmlType, Vec<u64>)> = vec![
        (
            "token_embd.weight".into(),
            GgmlType::F16,
            vec![2560, 128256],
        ),
        ("output_norm.weight".into(), GgmlType::F32, vec![2560]),
    ];
    let lin = format.ggml_type();
    for i in 0..30 {
        let mut t =
            |n: &str, ty, d: &[u64]| want.push((format!("blk.{i}.{n}.weight"), ty, d.to_vec()));
        t("attn_norm", GgmlType::F32, &[2560]);
        t("attn_sub_norm", GgmlType::F32, &[2560]);
        t("ffn_norm", GgmlType::F32, &[2560]);
        t("ffn_sub_norm", GgmlType::F32, &[6912]);
        t("attn_q", lin, &[2560, 2560]);
        t("attn_k", lin, &[2560, 640]);
        t("attn_v", lin, &[2560, 640]);
        t("attn_output", lin, &[2560, 2560]);
        t("ffn_gate", lin, &[2560, 6912]);
        t("ffn_up", lin, &[2560, 6912]);
        t("ffn_down", lin, &[6912, 2560]);
    }
    want.sort();
    assert_eq!(names, want);

    // Sizes: the tied F16 head is 657 MB; I2_S linear weights 521 MB (docs/DESIGN.md §9).
    let embd = p.tensor("token_embd.weight").unwrap().size;
    assert_eq!(embd, 2560 * 128256 * 2);
    let linear: u64 = p
        .tensors
        .iter()
        .filter(|t| t.ggml_type == lin)
        .map(|t| t.size)
        .sum();
    let weights_per_block = 2 * 2560 * 2560 + 2 * 2560 * 640 + 3 * 2560 * 6912;
    let expected = match format {
        WeightFormat::I2_S => 30 * (weights_per_block / 4 + 7 * 32),
        WeightFormat::TQ2_0 => 30 * weights_per_block / 256 * 66,
        _ => 30 * (weights_per_block / 4 + 4 * (3 * 2560 + 2 * 640 + 2 * 6912)),
    };
    assert_eq!(linear, expected);
}

#[test]
fn the_full_shape_in_every_other_format_is_the_same_plan() {
    let base = must(plan(&FixtureSpec::full(
        Arch::BitnetB158,
        WeightFormat::I2_S,
    )));
    for format in WeightFormat::ALL {
        for arch in Arch::ALL {
            let p = must(plan(&FixtureSpec::full(arch, format)));
            assert_eq!(p.tensors.len(), base.tensors.len());
            for (t, b) in p.tensors.iter().zip(&base.tensors) {
                assert_eq!((&t.name, &t.dims), (&b.name, &b.dims));
                let want = if b.ggml_type == GgmlType::I2_S {
                    format.ggml_type()
                } else {
                    b.ggml_type
                };
                assert_eq!(t.ggml_type, want, "{}", t.name);
            }
        }
    }
}
