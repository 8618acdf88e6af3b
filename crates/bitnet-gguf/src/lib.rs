//! GGUF v2/v3 container: a hostile-input-safe, zero-copy mmap reader and a writer.
//!
//! ```no_run
//! use bitnet_gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue};
//!
//! # fn main() -> Result<(), bitnet_gguf::GgufError> {
//! let weights = vec![0u8; 4 * 8];
//! let mut w = GgufWriter::new();
//! w.add_metadata("general.architecture", MetadataValue::from("bitnet"))?;
//! w.add_tensor("output_norm.weight", GgmlType::F32, &[8], &weights)?;
//! w.write_to("model.gguf")?;
//!
//! let f = GgufFile::open("model.gguf")?;
//! assert_eq!(f.get_str("general.architecture")?, "bitnet");
//! assert_eq!(f.tensor_bytes("output_norm.weight")?, &weights[..]);
//! # Ok(()) }
//! ```
//!
//! Reading validates the whole header and every tensor's placement once, at open: every
//! count is checked against the bytes left before anything is allocated for it, strings
//! and arrays have caps ([`MAX_STRING_LEN`], [`MAX_ARRAY_LEN`], [`MAX_ARRAY_DEPTH`]), and
//! each tensor must lie aligned, in bounds and apart from the others. After that, tensor
//! data is handed out as zero-copy slices of the mapping.
//!
//! The reader accepts what llama.cpp's `gguf_init_from_file` accepts, with these
//! deliberate differences: bools must be 0 or 1 (llama.cpp takes any non-zero byte as
//! true); strings are capped at [`MAX_STRING_LEN`] rather than 1 GiB; nested arrays
//! are read (llama.cpp refuses them); tensor data may be laid out in any order with any
//! aligned gaps (llama.cpp requires each tensor to follow the previous one, padded to
//! the alignment — which is what [`GgufWriter`] produces); and only the ggml types in
//! [`GgmlType`] can be read, because a tensor's size cannot be known otherwise.

mod cursor;
mod error;
mod reader;
mod strings;
mod tensor;
mod types;
mod value;
mod writer;

pub use error::GgufError;
pub use reader::GgufFile;
pub use strings::StringArray;
pub use tensor::TensorInfo;
pub use types::{GgmlType, TypeLayout};
pub use value::{MetadataArray, MetadataType, MetadataValue};
pub use writer::GgufWriter;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// The version [`GgufWriter`] writes. Version 2 is read too: it differs from 3 only in
/// being older (both use u64 counts and lengths; version 1 used u32 and is refused).
pub const GGUF_VERSION: u32 = 3;

/// The metadata key that sets the data alignment; it must be a `u32` power of two.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Alignment of the data section and of every tensor when [`ALIGNMENT_KEY`] is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Longest string (key or value) read or written, in bytes. Real files stay far below:
/// chat templates are a few KiB, and even a whole embedded `tokenizer.json` (~9 MB for
/// LLaMA 3) fits. llama.cpp allows 1 GiB; a smaller cap bounds what one field can cost.
pub const MAX_STRING_LEN: u64 = 16 << 20;

/// Most elements in one array: llama.cpp's `GGUF_MAX_ARRAY_ELEMENTS`. Vocabularies are
/// ~10^5 entries. Independently, the count times the element's smallest encoding must fit
/// in the bytes left.
pub const MAX_ARRAY_LEN: u64 = 1 << 30;

/// Deepest nesting of arrays (a plain array is level 1). llama.cpp reads no nested
/// arrays at all; the cap keeps recursion bounded.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Most dimensions per tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Longest tensor name in bytes: ggml keeps names in `char[GGML_MAX_NAME = 64]` with a
/// terminating NUL, and llama.cpp refuses longer names.
pub const MAX_TENSOR_NAME_LEN: usize = 63;
