//! Broken model files give a typed `ModelError` naming the key or tensor at fault.

mod common;

use bitnet_gguf::{GgmlType, MetadataValue};
use bitnet_models::{Model, ModelError};
use common::{metadata, tensors, write, Tiny, T};

fn load_with(
    s: &Tiny,
    edit: impl FnOnce(&mut Vec<(String, MetadataValue)>, &mut Vec<T>),
) -> Result<Model, ModelError> {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, mut t) = (metadata(s), tensors(s));
    edit(&mut m, &mut t);
    let p = dir.path().join("m.gguf");
    write(&p, &m, &t);
    Model::load(&p)
}

fn tiny() -> Tiny {
    Tiny::new("bitnet", GgmlType::TQ2_0)
}

#[test]
fn a_well_formed_tiny_model_loads() {
    for arch in ["bitnet", "bitnet-b1.58", "llama"] {
        let m = load_with(&Tiny::new(arch, GgmlType::TQ2_0), |_, _| {}).unwrap();
        assert_eq!(m.config().n_layer, 2);
        assert_eq!(m.config().head_dim, 64);
        assert_eq!(m.config().eos_token_id, Some(2));
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let err = load_with(&tiny(), |_, t| {
        t.retain(|t| t.name != "blk.1.ffn_up.weight")
    })
    .unwrap_err();
    match err {
        ModelError::MissingTensor { name } => assert_eq!(name, "blk.1.ffn_up.weight"),
        e => panic!("{e}"),
    }
}

#[test]
fn a_wrong_shape_is_named_with_both_shapes() {
    let err = load_with(&tiny(), |_, t| {
        let w = t
            .iter_mut()
            .find(|t| t.name == "blk.0.attn_k.weight")
            .unwrap();
        // 256 x 256 instead of 256 x 128 (GQA with 2 of 4 heads).
        w.dims = vec![256, 256];
        w.values = vec![0.0; 256 * 256];
    })
    .unwrap_err();
    match &err {
        ModelError::WrongShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "blk.0.attn_k.weight");
            assert_eq!(expected, &vec![256, 128]);
            assert_eq!(found, &vec![256, 256]);
        }
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("blk.0.attn_k.weight"), "{err}");
}

#[test]
fn an_unsupported_arch_is_named() {
    let err = load_with(&tiny(), |m, _| {
        m[0].1 = MetadataValue::from("mamba");
    })
    .unwrap_err();
    match err {
        ModelError::UnsupportedArch { arch } => assert_eq!(arch, "mamba"),
        e => panic!("{e}"),
    }
}

#[test]
fn an_unsupported_tensor_type_is_named() {
    // Q8_K is an activation format: valid GGUF, but no matmul weight.
    let dir = tempfile::tempdir().unwrap();
    let s = tiny();
    let mut w = bitnet_gguf::GgufWriter::new();
    for (k, v) in metadata(&s) {
        w.add_metadata(k, v).unwrap();
    }
    for t in tensors(&s) {
        if t.name == "blk.0.ffn_down.weight" {
            let size = GgmlType::Q8_K.tensor_size(&t.dims).unwrap() as usize;
            w.add_tensor_owned(t.name.clone(), GgmlType::Q8_K, &t.dims, vec![0; size])
                .unwrap();
        } else {
            w.add_tensor_owned(
                t.name.clone(),
                t.ty,
                &t.dims,
                common::encode(t.ty, &t.values),
            )
            .unwrap();
        }
    }
    let p = dir.path().join("q8k.gguf");
    w.write_to(&p).unwrap();
    match Model::load(&p).unwrap_err() {
        ModelError::UnsupportedType {
            name, ggml_type, ..
        } => {
            assert_eq!(name, "blk.0.ffn_down.weight");
            assert_eq!(ggml_type, GgmlType::Q8_K);
        }
        e => panic!("{e}"),
    }
}

#[test]
fn a_norm_weight_of_the_wrong_type_is_named() {
    let err = load_with(&tiny(), |_, t| {
        let w = t
            .iter_mut()
            .find(|t| t.name == "output_norm.weight")
            .unwrap();
        w.ty = GgmlType::F16;
    })
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::UnsupportedType { name, .. } if name == "output_norm.weight"),
        "{err}"
    );
}

#[test]
fn a_missing_required_key_is_named() {
    for key in [
        "bitnet.context_length",
        "bitnet.embedding_length",
        "bitnet.block_count",
        "bitnet.feed_forward_length",
        "bitnet.attention.head_count",
        "bitnet.attention.layer_norm_rms_epsilon",
        "general.architecture",
    ] {
        let err = load_with(&tiny(), |m, _| m.retain(|(k, _)| k != key)).unwrap_err();
        match err {
            ModelError::MissingKey { key: k } => assert_eq!(k, key),
            e => panic!("{key}: {e}"),
        }
    }
}

#[test]
fn a_key_of_the_wrong_type_or_value_is_an_error() {
    let err = load_with(&tiny(), |m, _| {
        m.retain(|(k, _)| k != "bitnet.attention.head_count_kv");
        m.push((
            "bitnet.attention.head_count_kv".into(),
            MetadataValue::U32(3),
        ));
    })
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::InvalidKey { key, .. } if key == "bitnet.attention.head_count_kv"),
        "{err}"
    );
    let err = load_with(&tiny(), |m, _| {
        m.retain(|(k, _)| k != "bitnet.block_count");
        m.push(("bitnet.block_count".into(), MetadataValue::from("two")));
    })
    .unwrap_err();
    assert!(err.to_string().contains("bitnet.block_count"), "{err}");
}

#[test]
fn an_unused_tensor_is_refused_like_llama_cpp_does() {
    let err = load_with(&tiny(), |_, t| {
        t.push(T {
            name: "output.weight".into(),
            ty: GgmlType::F32,
            dims: vec![256, 96],
            values: vec![0.0; 256 * 96],
        })
    })
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::InvalidTensor { name, .. } if name == "output.weight"),
        "upstream's bitnet graph always ties its output: {err}"
    );
}

#[test]
fn a_truncated_file_is_a_gguf_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = tiny();
    let p = dir.path().join("t.gguf");
    write(&p, &metadata(&s), &tensors(&s));
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(Model::load(&p).unwrap_err(), ModelError::Gguf(_)));
}
