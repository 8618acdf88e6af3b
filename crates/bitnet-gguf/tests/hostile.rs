//! Hostile inputs: each must give its own readable error, never a panic or a huge allocation.
//!
//! Files are built byte by byte so that every field can be made wrong on its own.

use bitnet_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, MAX_ARRAY_DEPTH, MAX_STRING_LEN};

/// Value type ids, as written in files.
const TY_U8: u32 = 0;
const TY_U32: u32 = 4;
const TY_BOOL: u32 = 7;
const TY_STRING: u32 = 8;
const TY_ARRAY: u32 = 9;
const TY_U64: u32 = 10;

const F32_ID: u32 = 0;

/// A GGUF image under construction.
struct Raw(Vec<u8>);

impl Raw {
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }

    /// A v3 header.
    fn v3(n_tensors: u64, n_kv: u64) -> Raw {
        Raw::new(3, n_tensors, n_kv)
    }

    fn u8(&mut self, v: u8) -> &mut Raw {
        self.0.push(v);
        self
    }

    fn u32(&mut self, v: u32) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn str(&mut self, s: &[u8]) -> &mut Raw {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }

    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.str(key.as_bytes()).u32(TY_U32).u32(v)
    }

    fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> &mut Raw {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        dims.iter().for_each(|&d| {
            self.u64(d);
        });
        self.u32(type_id).u64(offset)
    }

    /// Pads to `alignment` and appends `data_len` bytes of tensor data.
    fn data(&mut self, alignment: usize, data_len: usize) -> &mut Raw {
        let padded = self.0.len().next_multiple_of(alignment);
        self.0.resize(padded + data_len, 0xAB);
        self
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// The error the bytes must produce; its message must be non-empty and mention `needle`.
fn parse_err(bytes: Vec<u8>, needle: &str) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("expected an error mentioning {needle:?}, parsed {f:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "message {msg:?} should mention {needle:?}"
            );
            e
        }
    }
}

/// A small valid file with two tensors and every metadata shape the reader handles.
fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "bitnet").unwrap();
    w.add_metadata("general.alignment", 32u32).unwrap();
    w.add_metadata("flag", true).unwrap();
    w.add_metadata("tokens", vec!["a", "bc"]).unwrap();
    w.add_metadata("scores", vec![1.0f32, 2.0]).unwrap();
    w.add_tensor_owned("w", GgmlType::F32, &[2, 2], vec![1; 16])
        .unwrap();
    w.add_tensor_owned("q", GgmlType::Q8_0, &[32], vec![2; 34])
        .unwrap();
    w.to_bytes()
}

#[test]
fn truncated_at_every_byte_position() {
    let bytes = valid_file();
    let full = GgufFile::from_bytes(bytes.clone()).unwrap();
    // The writer pads after the last tensor; those padding bytes are not needed.
    let needed = full
        .tensors()
        .iter()
        .map(|t| full.data_offset() + t.offset + t.size)
        .max()
        .unwrap() as usize;
    for len in 0..=bytes.len() {
        let r = GgufFile::from_bytes(bytes[..len].to_vec());
        match r {
            Ok(_) => assert!(len >= needed, "truncated to {len} bytes yet parsed"),
            Err(e) => {
                assert!(len < needed, "{len} bytes should parse: {e}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn truncated_inside_the_header_names_the_field() {
    let bytes = valid_file();
    let err = parse_err(bytes[..10].to_vec(), "tensor count");
    assert!(matches!(
        err,
        GgufError::Truncated {
            offset: 8,
            needed: 8,
            available: 2,
            ..
        }
    ));
    // "tokens" starts at 120 (24 header + 46 + 33 + 17 bytes of earlier pairs); its
    // elements at 150 ("a": 8 + 1 bytes), "bc" at 159: length to 167, then 2 bytes.
    let err = parse_err(bytes[..168].to_vec(), "key 'tokens'");
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                offset: 167,
                needed: 2,
                available: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_magic() {
    let mut bytes = valid_file();
    bytes[..4].copy_from_slice(b"GGML");
    let err = parse_err(bytes, "magic bytes are \"GGML\"");
    assert!(matches!(err, GgufError::BadMagic { found } if &found == b"GGML"));
}

fn assert_unsupported_version(version: u32) {
    let mut bytes = valid_file();
    bytes[4..8].copy_from_slice(&version.to_le_bytes());
    let err = parse_err(bytes, &version.to_string());
    assert!(matches!(err, GgufError::UnsupportedVersion { version: v } if v == version));
}

#[test]
fn unsupported_version_1() {
    assert_unsupported_version(1);
}

#[test]
fn unsupported_version_4() {
    assert_unsupported_version(4);
}

#[test]
fn unsupported_version_u32_max() {
    assert_unsupported_version(u32::MAX);
}

#[test]
fn byte_swapped_version_hints_at_endianness() {
    let mut bytes = valid_file();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    parse_err(bytes, "big-endian");
}

#[test]
fn absurd_tensor_count() {
    let err = parse_err(Raw::v3(1 << 60, 0).bytes(), "1152921504606846976 tensors");
    assert!(
        matches!(err, GgufError::TensorCountTooLarge { count, max: 0, .. } if count == 1 << 60)
    );
}

#[test]
fn absurd_metadata_count() {
    let mut raw = Raw::v3(0, 1 << 60);
    raw.kv_u32("a", 1);
    let err = parse_err(raw.bytes(), "1152921504606846976 metadata pairs");
    assert!(matches!(
        err,
        GgufError::MetadataCountTooLarge { max: 1, .. }
    ));
}

#[test]
fn absurd_key_length() {
    let mut raw = Raw::v3(0, 1);
    raw.u64(1 << 40).u32(TY_U8).u8(0).u64(0);
    let err = parse_err(raw.bytes(), "metadata key #0");
    assert!(
        matches!(err, GgufError::StringTooLong { len, max: MAX_STRING_LEN, .. } if len == 1 << 40)
    );
}

#[test]
fn absurd_string_value_length() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"general.name").u32(TY_STRING).u64(1 << 40).u64(0);
    let err = parse_err(raw.bytes(), "general.name");
    assert!(matches!(err, GgufError::StringTooLong { len, .. } if len == 1 << 40));
}

#[test]
fn string_value_longer_than_the_file() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"general.name").u32(TY_STRING).u64(1000).u64(0);
    let err = parse_err(raw.bytes(), "general.name");
    assert!(matches!(
        err,
        GgufError::Truncated {
            needed: 1000,
            available: 8,
            ..
        }
    ));
}

#[test]
fn absurd_array_length() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"tokenizer.ggml.tokens")
        .u32(TY_ARRAY)
        .u32(TY_STRING)
        .u64(1 << 50)
        .u64(1)
        .u8(b'a');
    let err = parse_err(raw.bytes(), "tokenizer.ggml.tokens");
    assert!(matches!(err, GgufError::ArrayTooLong { len, .. } if len == 1 << 50));
}

#[test]
fn array_count_exceeding_bytes_left() {
    // 1000 u32 elements need 4000 bytes; only 8 follow.
    let mut raw = Raw::v3(0, 1);
    raw.str(b"ids").u32(TY_ARRAY).u32(TY_U32).u64(1000).u64(0);
    let err = parse_err(raw.bytes(), "4000 bytes");
    assert!(matches!(
        err,
        GgufError::ArrayTooLong {
            needed: 4000,
            remaining: 8,
            ..
        }
    ));
}

#[test]
fn nested_arrays_too_deep() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"deep").u32(TY_ARRAY);
    for _ in 0..MAX_ARRAY_DEPTH + 1 {
        raw.u32(TY_ARRAY).u64(1);
    }
    raw.u32(TY_U8).u64(0);
    let err = parse_err(raw.bytes(), "deep");
    assert!(matches!(
        err,
        GgufError::ArrayTooDeep {
            max: MAX_ARRAY_DEPTH,
            ..
        }
    ));
}

#[test]
fn nesting_at_the_depth_limit_is_accepted() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"deep").u32(TY_ARRAY);
    for _ in 0..MAX_ARRAY_DEPTH - 1 {
        raw.u32(TY_ARRAY).u64(1);
    }
    raw.u32(TY_U8).u64(1).u8(42);
    let f = GgufFile::from_bytes(raw.bytes()).unwrap();
    assert!(f.get_array("deep").is_ok());
}

#[test]
fn empty_key() {
    let mut raw = Raw::v3(0, 1);
    raw.kv_u32("", 1);
    let err = parse_err(raw.bytes(), "empty");
    assert!(matches!(
        err,
        GgufError::EmptyKey {
            index: 0,
            offset: 24
        }
    ));
}

#[test]
fn duplicate_keys() {
    let mut raw = Raw::v3(0, 2);
    raw.kv_u32("general.file_type", 1)
        .kv_u32("general.file_type", 2);
    let err = parse_err(raw.bytes(), "general.file_type");
    assert!(matches!(err, GgufError::DuplicateKey { .. }));
}

#[test]
fn invalid_utf8_key() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"bad\xff").u32(TY_U8).u8(0);
    let err = parse_err(raw.bytes(), "metadata key #0");
    assert!(matches!(err, GgufError::InvalidUtf8 { offset: 24, .. }));
}

#[test]
fn invalid_utf8_string_value() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"general.name").u32(TY_STRING).str(b"\xc3\x28");
    let err = parse_err(raw.bytes(), "general.name");
    assert!(matches!(err, GgufError::InvalidUtf8 { .. }));
}

#[test]
fn invalid_utf8_in_string_array() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"tokens")
        .u32(TY_ARRAY)
        .u32(TY_STRING)
        .u64(2)
        .str(b"ok")
        .str(b"\xed\xa0\x80");
    let err = parse_err(raw.bytes(), "tokens");
    assert!(matches!(err, GgufError::InvalidUtf8 { .. }));
}

#[test]
fn invalid_utf8_tensor_name() {
    let mut raw = Raw::v3(1, 0);
    raw.str(b"w\xff")
        .u32(1)
        .u64(4)
        .u32(F32_ID)
        .u64(0)
        .data(32, 16);
    let err = parse_err(raw.bytes(), "tensor #0");
    assert!(matches!(err, GgufError::InvalidUtf8 { .. }));
}

#[test]
fn bool_byte_not_0_or_1() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"flag").u32(TY_BOOL).u8(2);
    let err = parse_err(raw.bytes(), "flag");
    assert!(matches!(err, GgufError::InvalidBool { byte: 2, .. }));
}

#[test]
fn bool_array_byte_not_0_or_1() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"flags")
        .u32(TY_ARRAY)
        .u32(TY_BOOL)
        .u64(2)
        .u8(1)
        .u8(0xff);
    let err = parse_err(raw.bytes(), "flags");
    assert!(matches!(err, GgufError::InvalidBool { byte: 0xff, .. }));
}

#[test]
fn unknown_metadata_value_type() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"weird").u32(13).u32(0);
    let err = parse_err(raw.bytes(), "weird");
    assert!(matches!(
        err,
        GgufError::UnknownValueType { type_id: 13, .. }
    ));
}

#[test]
fn unknown_array_element_type() {
    let mut raw = Raw::v3(0, 1);
    raw.str(b"weird").u32(TY_ARRAY).u32(0xFFFF_FFFF).u64(0);
    let err = parse_err(raw.bytes(), "weird");
    assert!(matches!(
        err,
        GgufError::UnknownValueType {
            type_id: u32::MAX,
            ..
        }
    ));
}

#[test]
fn alignment_zero() {
    let mut raw = Raw::v3(0, 1);
    raw.kv_u32("general.alignment", 0);
    let err = parse_err(raw.bytes(), "general.alignment");
    assert!(matches!(err, GgufError::InvalidAlignment { value: 0 }));
}

#[test]
fn alignment_not_a_power_of_two() {
    let mut raw = Raw::v3(0, 1);
    raw.kv_u32("general.alignment", 48);
    let err = parse_err(raw.bytes(), "48");
    assert!(matches!(err, GgufError::InvalidAlignment { value: 48 }));
}

#[test]
fn alignment_wrong_type() {
    // llama.cpp requires exactly u32 here, even for a valid value.
    let mut raw = Raw::v3(0, 1);
    raw.str(b"general.alignment").u32(TY_U64).u64(32);
    let err = parse_err(raw.bytes(), "general.alignment");
    assert!(matches!(
        err,
        GgufError::WrongType {
            expected: "u32",
            ..
        }
    ));
}

#[test]
fn tensor_name_too_long() {
    let mut raw = Raw::v3(1, 0);
    raw.tensor(&"x".repeat(64), &[4], F32_ID, 0).data(32, 16);
    let err = parse_err(raw.bytes(), "name of tensor #0");
    assert!(matches!(
        err,
        GgufError::StringTooLong {
            len: 64,
            max: 63,
            ..
        }
    ));
}

#[test]
fn n_dims_over_4() {
    let mut raw = Raw::v3(1, 0);
    raw.tensor("w", &[1, 1, 1, 1, 1], F32_ID, 0).data(32, 4);
    let err = parse_err(raw.bytes(), "'w'");
    assert!(matches!(err, GgufError::TooManyDims { n_dims: 5, .. }));
}

#[test]
fn absurd_n_dims_reads_nothing() {
    let mut raw = Raw::v3(1, 0);
    raw.str(b"w").u32(u32::MAX).u32(F32_ID).u64(0);
    let err = parse_err(raw.bytes(), "'w'");
    assert!(matches!(err, GgufError::TooManyDims { n_dims, .. } if n_dims == u32::MAX.into()));
}

#[test]
fn zero_dim_is_accepted_like_llama_cpp() {
    // gguf.cpp only refuses negative dims; a zero dim is an empty tensor.
    let mut raw = Raw::v3(2, 0);
    raw.tensor("empty", &[4, 0], F32_ID, 0)
        .tensor("w", &[4], F32_ID, 0)
        .data(32, 16);
    let f = GgufFile::from_bytes(raw.bytes()).unwrap();
    assert_eq!(f.tensor_bytes("empty").unwrap(), &[] as &[u8]);
    assert_eq!(f.tensor("empty").unwrap().n_elements(), 0);
    assert_eq!(f.tensor_bytes("w").unwrap(), &[0xAB; 16]);
}

#[test]
fn dims_whose_product_overflows_u64() {
    let mut raw = Raw::v3(1, 0);
    raw.tensor("w", &[1 << 32, 1 << 32, 2], F32_ID, 0)
        .data(32, 4);
    let err = parse_err(raw.bytes(), "'w'");
    assert!(matches!(err, GgufError::ElementCountOverflow { .. }));
}

#[test]
fn dim_over_i64_max() {
    // ggml reads dims as i64: this one would be negative.
    let mut raw = Raw::v3(1, 0);
    raw.tensor("w", &[4, 1 << 63], F32_ID, 0).data(32, 16);
    let err = parse_err(raw.bytes(), "dimension 1");
    assert!(matches!(err, GgufError::DimTooLarge { index: 1, .. }));
}

#[test]
fn tensor_byte_size_overflows() {
    // 2^62 f32 elements fit in i64, but 2^64 bytes do not fit in u64.
    let mut raw = Raw::v3(1, 0);
    raw.tensor("w", &[1 << 62], F32_ID, 0).data(32, 4);
    let err = parse_err(raw.bytes(), "'w'");
    assert!(matches!(err, GgufError::TensorSizeOverflow { .. }));
}

#[test]
fn tensor_offset_past_end_of_file() {
    let mut raw = Raw::v3(1, 0);
    raw.tensor("w", &[4], F32_ID, 1 << 40).data(32, 16);
    let err = parse_err(raw.bytes(), "'w'");
    assert!(
        matches!(err, GgufError::TensorOffsetOutOfBounds { offset, data_len: 16, .. } if offset == 1 << 40)
    );
}

#[test]
fn tensor_data_past_end_of_file() {
    let mut raw = Raw::v3(1, 0);
    raw.tensor("w", &[8], F32_ID, 0).data(32, 16);
    let err = parse_err(raw.bytes(), "'w'");
    assert!(matches!(
        err,
        GgufError::TensorDataOutOfBounds {
            size: 32,
            data_len: 16,
            ..
        }
    ));
}

#[test]
fn overlapping_tensor_data() {
    let mut raw = Raw::v3(2, 0);
    raw.tensor("a", &[16], F32_ID, 0)
        .tensor("b", &[8], F32_ID, 32)
        .data(32, 64);
    let err = parse_err(raw.bytes(), "'b'");
    assert!(
        matches!(err, GgufError::TensorOverlap { ref first, first_end: 64, .. } if first == "a")
    );
}

#[test]
fn misaligned_tensor_offset() {
    let mut raw = Raw::v3(1, 0);
    raw.tensor("w", &[4], F32_ID, 4).data(32, 64);
    let err = parse_err(raw.bytes(), "alignment 32");
    assert!(matches!(err, GgufError::MisalignedTensor { offset: 4, .. }));
}

#[test]
fn unknown_tensor_type_id() {
    let mut raw = Raw::v3(1, 0);
    raw.tensor("w", &[4], 1000, 0).data(32, 16);
    let err = parse_err(raw.bytes(), "1000");
    assert!(matches!(
        err,
        GgufError::UnknownTensorType { type_id: 1000, .. }
    ));
}

#[test]
fn duplicate_tensor_names() {
    let mut raw = Raw::v3(2, 0);
    raw.tensor("w", &[4], F32_ID, 0)
        .tensor("w", &[4], F32_ID, 32)
        .data(32, 64);
    let err = parse_err(raw.bytes(), "'w'");
    assert!(matches!(err, GgufError::DuplicateTensor { .. }));
}

#[test]
fn row_length_not_a_multiple_of_the_block_size() {
    let mut raw = Raw::v3(1, 0);
    raw.tensor("q", &[100, 2], GgmlType::TQ2_0.id(), 0)
        .data(32, 256);
    let err = parse_err(raw.bytes(), "block size 256");
    assert!(matches!(
        err,
        GgufError::RowNotBlockMultiple { ne0: 100, .. }
    ));
}

#[test]
fn tensor_data_may_be_out_of_file_order() {
    // llama.cpp insists on file order; we accept any aligned, disjoint placement.
    let mut raw = Raw::v3(2, 0);
    raw.tensor("late", &[4], F32_ID, 32)
        .tensor("early", &[4], F32_ID, 0)
        .data(32, 48);
    let f = GgufFile::from_bytes(raw.bytes()).unwrap();
    assert_eq!(f.tensor("late").unwrap().offset, 32);
}

#[test]
fn tensor_ranges_read_through_the_file_match_the_mapping() {
    let data: Vec<u8> = (0..=255u8).cycle().take(4 * 64).collect();
    let mut w = bitnet_gguf::GgufWriter::new();
    w.add_tensor("a", bitnet_gguf::GgmlType::F32, &[64], &data[..256])
        .unwrap();
    let bytes = w.to_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    std::fs::write(&path, &bytes).unwrap();
    for f in [
        GgufFile::open(&path).unwrap(),
        GgufFile::from_bytes(bytes.clone()).unwrap(),
    ] {
        let info = f.tensor("a").unwrap().clone();
        let mut out = vec![0u8; 100];
        f.read_tensor_range(&info, 50, &mut out).unwrap();
        assert_eq!(out, f.tensor_data(&info)[50..150]);
        // Past the tensor's end: a typed error naming it, nothing read.
        let mut big = vec![0u8; 10];
        let e = f.read_tensor_range(&info, 250, &mut big).unwrap_err();
        assert!(e.to_string().contains("tensor 'a'"), "{e}");
        assert!(f.read_tensor_range(&info, u64::MAX, &mut big).is_err());
    }
}
