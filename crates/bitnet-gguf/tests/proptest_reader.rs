//! Properties: the reader never panics on any bytes, and writer → reader is the identity.

use bitnet_gguf::{GgmlType, GgufFile, GgufWriter, MetadataArray, MetadataValue};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Checks what a successfully parsed file promises: every tensor slice has its size,
/// every key is found, and the file can be re-written and read back.
fn check_parsed(f: &GgufFile) -> Result<(), TestCaseError> {
    for t in f.tensors() {
        prop_assert_eq!(
            f.tensor_data(t).len() as u64,
            t.size,
            "tensor '{}' slice",
            &t.name
        );
    }
    for (key, _) in f.metadata() {
        prop_assert!(f.get(key).is_some(), "key '{}' not found by get", key);
    }
    let rewritten =
        GgufWriter::from_gguf(f).map_err(|e| TestCaseError::fail(format!("re-writing: {e}")))?;
    let again = GgufFile::from_bytes(rewritten.to_bytes());
    prop_assert!(
        again.is_ok(),
        "re-written file does not parse: {:?}",
        again.err()
    );
    Ok(())
}

/// Parses; an error must have a message, a success must keep its promises.
fn parse_and_check(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => check_parsed(&f),
        Err(e) => {
            prop_assert!(!e.to_string().is_empty(), "empty message for {:?}", e);
            Ok(())
        }
    }
}

/// A small valid file exercising every value type, an array of arrays and a few tensors.
fn base_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "bitnet").unwrap();
    w.add_metadata("general.alignment", 32u32).unwrap();
    w.add_metadata("u8", 1u8).unwrap();
    w.add_metadata("i16", -2i16).unwrap();
    w.add_metadata("f64", 0.5f64).unwrap();
    w.add_metadata("bool", true).unwrap();
    w.add_metadata("tokens", vec!["<s>", "▁a", "b"]).unwrap();
    w.add_metadata("scores", vec![0.0f32, -1.5, 2.25]).unwrap();
    w.add_metadata("types", vec![1i32, 3, 1]).unwrap();
    w.add_metadata(
        "nested",
        MetadataArray::Array(vec![
            MetadataArray::U64(vec![7, 8]),
            MetadataArray::Bool(vec![false]),
        ]),
    )
    .unwrap();
    w.add_tensor_owned("a", GgmlType::F32, &[4, 2], (0..32).collect())
        .unwrap();
    w.add_tensor_owned("b", GgmlType::Q8_0, &[32], vec![5; 34])
        .unwrap();
    w.add_tensor_owned("c", GgmlType::F16, &[3], vec![9; 6])
        .unwrap();
    w.to_bytes()
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        value: u8,
    },
    /// Overwrites 8 bytes (a count, length, dim or offset field, if it lands on one).
    SetWord {
        at: Index,
        value: u64,
    },
    Truncate {
        at: Index,
    },
    Splice {
        at: Index,
        remove: usize,
        insert: Vec<u8>,
    },
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let len = bytes.len();
        match self {
            Mutation::FlipBit { at, bit } => bytes[at.index(len)] ^= 1 << (bit % 8),
            Mutation::SetByte { at, value } => bytes[at.index(len)] = *value,
            Mutation::SetWord { at, value } => {
                let i = at.index(len);
                let end = (i + 8).min(len);
                bytes[i..end].copy_from_slice(&value.to_le_bytes()[..end - i]);
            }
            Mutation::Truncate { at } => bytes.truncate(at.index(len)),
            Mutation::Splice { at, remove, insert } => {
                let i = at.index(len);
                let end = (i + remove).min(len);
                bytes.splice(i..end, insert.iter().copied());
            }
        }
    }
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(3),
        Just(u64::MAX),
        Just(1 << 63),
        Just(1 << 40),
        Just(u32::MAX as u64),
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        (any::<Index>(), interesting_u64()).prop_map(|(at, value)| Mutation::SetWord { at, value }),
        any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        (any::<Index>(), 0usize..16, vec(any::<u8>(), 0..16))
            .prop_map(|(at, remove, insert)| Mutation::Splice { at, remove, insert }),
    ]
}

fn f32_bits() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(f32::from_bits)
}

fn f64_bits() -> impl Strategy<Value = f64> {
    any::<u64>().prop_map(f64::from_bits)
}

fn leaf_array() -> impl Strategy<Value = MetadataArray> {
    const N: usize = 6;
    prop_oneof![
        vec(any::<u8>(), 0..N).prop_map(MetadataArray::U8),
        vec(any::<i8>(), 0..N).prop_map(MetadataArray::I8),
        vec(any::<u16>(), 0..N).prop_map(MetadataArray::U16),
        vec(any::<i16>(), 0..N).prop_map(MetadataArray::I16),
        vec(any::<u32>(), 0..N).prop_map(MetadataArray::U32),
        vec(any::<i32>(), 0..N).prop_map(MetadataArray::I32),
        vec(f32_bits(), 0..N).prop_map(MetadataArray::F32),
        vec(any::<bool>(), 0..N).prop_map(MetadataArray::Bool),
        vec("\\PC{0,8}", 0..N).prop_map(MetadataArray::from),
        vec(any::<u64>(), 0..N).prop_map(MetadataArray::U64),
        vec(any::<i64>(), 0..N).prop_map(MetadataArray::I64),
        vec(f64_bits(), 0..N).prop_map(MetadataArray::F64),
    ]
}

/// Arrays nested up to 5 levels, within the reader's cap of 8.
fn array() -> impl Strategy<Value = MetadataArray> {
    leaf_array().prop_recursive(4, 24, 4, |inner| {
        vec(inner, 0..4).prop_map(MetadataArray::Array)
    })
}

fn value() -> impl Strategy<Value = MetadataValue> {
    prop_oneof![
        any::<u8>().prop_map(MetadataValue::U8),
        any::<i8>().prop_map(MetadataValue::I8),
        any::<u16>().prop_map(MetadataValue::U16),
        any::<i16>().prop_map(MetadataValue::I16),
        any::<u32>().prop_map(MetadataValue::U32),
        any::<i32>().prop_map(MetadataValue::I32),
        f32_bits().prop_map(MetadataValue::F32),
        any::<bool>().prop_map(MetadataValue::Bool),
        "\\PC{0,16}".prop_map(MetadataValue::String),
        array().prop_map(MetadataValue::Array),
        any::<u64>().prop_map(MetadataValue::U64),
        any::<i64>().prop_map(MetadataValue::I64),
        f64_bits().prop_map(MetadataValue::F64),
    ]
}

#[derive(Debug, Clone)]
struct Tensor {
    ggml_type: GgmlType,
    dims: Vec<u64>,
    data: Vec<u8>,
}

/// A tensor of any supported type with whole-block rows (possibly empty, possibly 0-d).
fn tensor() -> impl Strategy<Value = Tensor> {
    (
        prop::sample::select(GgmlType::ALL.to_vec()),
        0u64..3,
        vec(0u64..3, 0..4),
        any::<bool>(),
    )
        .prop_flat_map(|(ggml_type, blocks, rest, scalar)| {
            let dims = if scalar && ggml_type.layout().block_size == 1 {
                vec![]
            } else {
                let mut d = vec![blocks * ggml_type.layout().block_size];
                d.extend(rest);
                d
            };
            let size = ggml_type.tensor_size(&dims).unwrap_or(0) as usize;
            vec(any::<u8>(), size).prop_map(move |data| Tensor {
                ggml_type,
                dims: dims.clone(),
                data,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        parse_and_check(bytes)?;
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_preamble_never_panic(
        version in 2u32..4,
        n_tensors in 0u64..4,
        n_kv in 0u64..6,
        body in vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&n_tensors.to_le_bytes());
        bytes.extend_from_slice(&n_kv.to_le_bytes());
        bytes.extend_from_slice(&body);
        parse_and_check(bytes)?;
    }

    #[test]
    fn mutated_valid_files_never_panic(mutations in vec(mutation(), 1..5)) {
        let mut bytes = base_file();
        for m in &mutations {
            m.apply(&mut bytes);
        }
        parse_and_check(bytes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn writer_then_reader_is_identity(
        metadata in vec(value(), 0..8),
        tensors in vec(tensor(), 0..5),
        alignment_log2 in prop::option::of(0u32..9),
    ) {
        let mut w = GgufWriter::new();
        let mut expected_meta = Vec::new();
        if let Some(log2) = alignment_log2 {
            w.add_metadata("general.alignment", 1u32 << log2).unwrap();
            expected_meta.push(("general.alignment".to_owned(), MetadataValue::U32(1 << log2)));
        }
        for (i, v) in metadata.iter().enumerate() {
            let key = format!("test.key{i}");
            w.add_metadata(key.clone(), v.clone()).unwrap();
            expected_meta.push((key, v.clone()));
        }
        for (i, t) in tensors.iter().enumerate() {
            w.add_tensor(format!("blk.{i}.weight"), t.ggml_type, &t.dims, &t.data).unwrap();
        }
        let bytes = w.to_bytes();
        let f = GgufFile::from_bytes(bytes.clone())
            .map_err(|e| TestCaseError::fail(format!("writer output does not parse: {e}")))?;

        // Debug formatting is exact for every float but NaN; the byte comparison below
        // covers NaN payloads.
        prop_assert_eq!(format!("{:?}", f.metadata()), format!("{:?}", expected_meta));
        prop_assert_eq!(f.alignment(), 1u64 << alignment_log2.unwrap_or(5));
        prop_assert_eq!(f.tensors().len(), tensors.len());
        for (i, (info, t)) in f.tensors().iter().zip(&tensors).enumerate() {
            prop_assert_eq!(&info.name, &format!("blk.{i}.weight"));
            prop_assert_eq!(info.ggml_type, t.ggml_type);
            prop_assert_eq!(&info.dims, &t.dims);
            prop_assert_eq!(info.offset % f.alignment(), 0, "offset of tensor {}", i);
            prop_assert_eq!(f.tensor_data(info), &t.data[..], "data of tensor {}", i);
        }
        let rewritten = GgufWriter::from_gguf(&f).unwrap().to_bytes();
        prop_assert!(rewritten == bytes, "re-writing the parsed file changed its bytes");
    }
}
