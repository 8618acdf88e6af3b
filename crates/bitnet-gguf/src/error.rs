//! The crate's one error type.

use std::path::PathBuf;

use crate::types::GgmlType;

/// Everything that can go wrong reading, querying or writing a GGUF file.
///
/// Offsets are absolute byte positions in the file unless a field says otherwise; every
/// variant names the key, tensor or count it is about, so a message alone locates the fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done: "opening", "mapping", "writing", ...
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("unexpected end of data at offset {offset} reading {what}: need {needed} bytes, {available} left")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },

    #[error("not a GGUF file: magic bytes are \"{}\", expected \"GGUF\"", found.escape_ascii())]
    BadMagic { found: [u8; 4] },

    #[error("unsupported GGUF version {version} (only 2 and 3 are supported{hint})", hint = version_hint(*version))]
    UnsupportedVersion { version: u32 },

    #[error("header declares {count} tensors, but the {remaining} bytes left after offset {offset} hold at most {max}")]
    TensorCountTooLarge {
        count: u64,
        offset: u64,
        remaining: u64,
        max: u64,
    },

    #[error("header declares {count} metadata pairs, but the {remaining} bytes left after offset {offset} hold at most {max}")]
    MetadataCountTooLarge {
        count: u64,
        offset: u64,
        remaining: u64,
        max: u64,
    },

    #[error("string at offset {offset} ({what}) declares {len} bytes, over the {max}-byte limit")]
    StringTooLong {
        what: String,
        offset: u64,
        len: u64,
        max: u64,
    },

    #[error("invalid UTF-8 in {what} at offset {offset}")]
    InvalidUtf8 { what: String, offset: u64 },

    #[error("metadata key #{index} at offset {offset} is empty")]
    EmptyKey { index: u64, offset: u64 },

    #[error("duplicate metadata key '{key}'")]
    DuplicateKey { key: String },

    #[error("key '{key}': unknown metadata value type {type_id} at offset {offset}")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },

    #[error("key '{key}': bool at offset {offset} is {byte}, must be 0 or 1")]
    InvalidBool { key: String, byte: u8, offset: u64 },

    #[error("key '{key}': array at offset {offset} declares {len} elements of {element_type}, needing at least {needed} bytes (limit {max_len} elements), but only {remaining} bytes are left")]
    ArrayTooLong {
        key: String,
        offset: u64,
        len: u64,
        element_type: &'static str,
        needed: u128,
        max_len: u64,
        remaining: u64,
    },

    #[error("key '{key}': arrays nested deeper than {max} levels at offset {offset}")]
    ArrayTooDeep {
        key: String,
        offset: u64,
        max: usize,
    },

    #[error(
        "'{}' must be a non-zero power of two, got {value}",
        crate::ALIGNMENT_KEY
    )]
    InvalidAlignment { value: u64 },

    #[error("duplicate tensor name '{name}'")]
    DuplicateTensor { name: String },

    #[error("tensor '{tensor}': {n_dims} dimensions, at most {max} allowed")]
    TooManyDims {
        tensor: String,
        n_dims: u64,
        max: usize,
    },

    #[error("tensor '{tensor}': dimension {index} is {value}, over ggml's limit of i64::MAX")]
    DimTooLarge {
        tensor: String,
        index: usize,
        value: u64,
    },

    #[error("tensor '{tensor}': dims {dims:?} have more than i64::MAX elements")]
    ElementCountOverflow { tensor: String, dims: Vec<u64> },

    #[error("tensor '{tensor}': unknown or unsupported ggml type id {type_id}")]
    UnknownTensorType { tensor: String, type_id: u32 },

    #[error("tensor '{tensor}': row length {ne0} is not a multiple of {ggml_type}'s block size {block_size}")]
    RowNotBlockMultiple {
        tensor: String,
        ggml_type: GgmlType,
        ne0: u64,
        block_size: u64,
    },

    #[error("tensor '{tensor}': {ggml_type} data of dims {dims:?} is larger than u64::MAX bytes")]
    TensorSizeOverflow {
        tensor: String,
        ggml_type: GgmlType,
        dims: Vec<u64>,
    },

    #[error(
        "tensor '{tensor}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error("tensor '{tensor}': data offset {offset} is past the end of the {data_len}-byte data section")]
    TensorOffsetOutOfBounds {
        tensor: String,
        offset: u64,
        data_len: u64,
    },

    #[error("tensor '{tensor}': {size} bytes at data offset {offset} run past the end of the {data_len}-byte data section")]
    TensorDataOutOfBounds {
        tensor: String,
        offset: u64,
        size: u64,
        data_len: u64,
    },

    #[error("tensor '{second}' (data offset {second_offset}) overlaps tensor '{first}' (bytes {first_offset}..{first_end})")]
    TensorOverlap {
        first: String,
        first_offset: u64,
        first_end: u64,
        second: String,
        second_offset: u64,
    },

    #[error("tensor '{tensor}': {ggml_type} dims {dims:?} take {expected} bytes, but {actual} were given")]
    TensorDataSize {
        tensor: String,
        ggml_type: GgmlType,
        dims: Vec<u64>,
        expected: u64,
        actual: u64,
    },

    #[error("metadata key '{key}' cannot be written: {reason}")]
    InvalidMetadata { key: String, reason: String },

    #[error("tensor name '{name}' cannot be written: {reason}")]
    InvalidTensorName { name: String, reason: String },

    #[error("tensor '{name}' not found")]
    TensorNotFound { name: String },

    #[error("metadata key '{key}' not found")]
    MissingKey { key: String },

    #[error("metadata key '{key}': expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
}

/// A version whose low 16 bits are zero is most likely a byte-swapped (big-endian) file.
fn version_hint(version: u32) -> &'static str {
    if version != 0 && version & 0xFFFF == 0 {
        "; this looks like a big-endian file"
    } else {
        ""
    }
}
