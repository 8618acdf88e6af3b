//! The reader: parse and validate once, then serve metadata and zero-copy tensor slices.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::cursor::Cursor;
use crate::error::GgufError;
use crate::strings::StringArray;
use crate::tensor::{checked_tensor_size, TensorInfo};
use crate::types::GgmlType;
use crate::value::{MetadataArray, MetadataType, MetadataValue};
use crate::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, MAX_STRING_LEN, MAX_TENSOR_NAME_LEN,
};

/// Fewest bytes one metadata pair can take: u64 key length, a non-empty key, u32 type, one
/// value byte.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;

/// Fewest bytes one tensor info can take: u64 name length, u32 n_dims (0 dims), u32 type,
/// u64 offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

enum Storage {
    /// The mapping, with the open file and its path (for reads that bypass the mapping).
    Mapped(Mmap, File, PathBuf),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m, ..) => m,
            Storage::Owned(v) => v,
        }
    }

    /// Takes the mapping's pages of bytes `..len` out of this process's resident set. Called
    /// with the header once it is parsed into owned values: a Llama 3 vocabulary and its
    /// merges are 7.5 MiB of header pages nothing reads again (a later read maps them back).
    fn release_front(&self, len: u64) {
        #[cfg(unix)]
        if let Storage::Mapped(map, ..) = self {
            let len = usize::try_from(len).map_or(map.len(), |len| len.min(map.len()));
            // SAFETY: the mapping is a shared, read-only file mapping (`Mmap::map`).
            // MADV_DONTNEED only drops its page-table entries: a later access maps the same
            // file bytes back in, so no byte anyone can observe changes, and no borrow of
            // the range outlives this call (the header was copied into owned values).
            // A failure only leaves the pages resident, so it is ignored.
            let _ =
                unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, len) };
        }
        #[cfg(not(unix))]
        let _ = (self, len);
    }
}

/// A parsed GGUF file: metadata in file order, tensor descriptors, and the bytes they
/// point into (a read-only mapping, or an owned buffer).
pub struct GgufFile {
    storage: Storage,
    header: Header,
}

/// Everything parsed from the bytes, validated.
struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("len", &self.storage.bytes().len())
            .field("alignment", &self.header.alignment)
            .field("data_offset", &self.header.data_offset)
            .field("metadata", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps the file read-only and validates it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_err = |action| {
            move |source| GgufError::Io {
                action,
                path: path.to_owned(),
                source,
            }
        };
        let file = File::open(path).map_err(io_err("opening"))?;
        // SAFETY: the mapping is read-only and we never hand out mutable views of it. The
        // remaining hazard is another process truncating or rewriting the file while it is
        // mapped, which would change (or SIGBUS) bytes we assumed immutable; that cannot be
        // prevented from inside the process, and model files are not modified in place
        // while a model is loaded — the same contract as every mmap-based model loader.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err("mapping"))?;
        GgufFile::from_storage(Storage::Mapped(map, file, path.to_owned()))
    }

    /// Validates a file held in memory (tests, downloads, embedded fixtures).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let header = parse(storage.bytes())?;
        storage.release_front(header.data_offset);
        Ok(GgufFile { storage, header })
    }

    /// The file's GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Alignment of the data section and of every tensor offset.
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute file offset of the data section. It is aligned when the file has tensors;
    /// with none, it is the end of the header (as llama.cpp computes it).
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// All metadata pairs in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.header.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        let i = *self.header.key_index.get(key)?;
        self.header.metadata.get(i).map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&MetadataValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    /// An integer of any GGUF integer type whose value fits in `T`.
    fn get_int<T: TryFrom<i128>>(&self, key: &str, expected: &'static str) -> Result<T, GgufError> {
        let v = self.require(key)?;
        let n = v.as_integer().ok_or_else(|| wrong_type(key, expected, v))?;
        T::try_from(n).map_err(|_| GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: format!("{} {n}, which does not fit", v.type_description()),
        })
    }

    /// A `u32`, from any integer type whose value fits (files vary: u8, u16, i32, ...).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.get_int(key, "u32")
    }

    /// A `u64`, from any integer type whose value fits.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_int(key, "u64")
    }

    /// An `i32`, from any integer type whose value fits.
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        self.get_int(key, "i32")
    }

    /// An `i64`, from any integer type whose value fits.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.get_int(key, "i64")
    }

    /// An `f32` value; other types (even f64) are refused rather than rounded.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.require(key)? {
            MetadataValue::F32(x) => Ok(*x),
            v => Err(wrong_type(key, "f32", v)),
        }
    }

    /// An `f64`, or an `f32` widened exactly.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        match self.require(key)? {
            MetadataValue::F64(x) => Ok(*x),
            MetadataValue::F32(x) => Ok(f64::from(*x)),
            v => Err(wrong_type(key, "f64", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            MetadataValue::Bool(b) => Ok(*b),
            v => Err(wrong_type(key, "bool", v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "str", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&MetadataArray, GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| wrong_type(key, "arr", v))
    }

    /// A string array, e.g. `tokenizer.ggml.tokens` or `tokenizer.ggml.merges`.
    pub fn get_str_array(&self, key: &str) -> Result<&StringArray, GgufError> {
        let v = self.require(key)?;
        v.as_array()
            .and_then(MetadataArray::as_strings)
            .ok_or_else(|| wrong_type(key, "arr[str]", v))
    }

    /// An f32 array, e.g. `tokenizer.ggml.scores`.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32], GgufError> {
        let v = self.require(key)?;
        v.as_array()
            .and_then(MetadataArray::as_f32_slice)
            .ok_or_else(|| wrong_type(key, "arr[f32]", v))
    }

    /// An integer array converted to `T`: borrowed when stored as `T` already, otherwise
    /// converted from any integer element type whose every value fits.
    fn get_int_array<'s, T: TryFrom<i128> + Clone>(
        &'s self,
        key: &str,
        expected: &'static str,
        exact: fn(&MetadataArray) -> Option<&[T]>,
    ) -> Result<Cow<'s, [T]>, GgufError> {
        let v = self.require(key)?;
        let a = v.as_array().ok_or_else(|| wrong_type(key, expected, v))?;
        if let Some(slice) = exact(a) {
            return Ok(Cow::Borrowed(slice));
        }
        if !a.element_type().is_integer() {
            return Err(wrong_type(key, expected, v));
        }
        a.to_integers()
            .map(Cow::Owned)
            .ok_or_else(|| GgufError::WrongType {
                key: key.to_owned(),
                expected,
                found: format!("{} with elements that do not fit", a.type_description()),
            })
    }

    /// An i32 array, e.g. `tokenizer.ggml.token_type` (borrowed when stored as i32).
    pub fn get_i32_array(&self, key: &str) -> Result<Cow<'_, [i32]>, GgufError> {
        self.get_int_array(key, "arr[i32]", MetadataArray::as_i32_slice)
    }

    /// A u32 array (borrowed when stored as u32).
    pub fn get_u32_array(&self, key: &str) -> Result<Cow<'_, [u32]>, GgufError> {
        self.get_int_array(key, "arr[u32]", MetadataArray::as_u32_slice)
    }

    /// Tensor descriptors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let i = *self.header.tensor_index.get(name)?;
        self.header.tensors.get(i)
    }

    /// The tensor's bytes, borrowed from the mapping. Every tensor of this file was checked
    /// to lie in bounds at open; an info from elsewhere whose range falls outside this
    /// file gets an empty slice.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let range = self
            .header
            .data_offset
            .checked_add(info.offset)
            .and_then(|start| Some((start, start.checked_add(info.size)?)))
            .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?));
        range
            .and_then(|r| self.storage.bytes().get(r))
            .unwrap_or_default()
    }

    /// Copies `out.len()` bytes of the tensor, from byte `start` of its data, into `out`,
    /// reading the file itself rather than the mapping, so that the pages stay out of this
    /// process's resident set: for data converted once at load into another layout, whose
    /// original bytes are never needed again. Held-in-memory files copy from memory.
    pub fn read_tensor_range(
        &self,
        info: &TensorInfo,
        start: u64,
        out: &mut [u8],
    ) -> Result<(), GgufError> {
        let len = out.len() as u64;
        let in_tensor = start.checked_add(len).is_some_and(|end| end <= info.size);
        let abs = self
            .header
            .data_offset
            .checked_add(info.offset)
            .and_then(|o| o.checked_add(start));
        let (Some(abs), true) = (abs, in_tensor) else {
            return Err(GgufError::Truncated {
                what: format!(
                    "tensor '{}' bytes {start}..{}",
                    info.name,
                    start.saturating_add(len)
                ),
                offset: start,
                needed: len,
                available: info.size.saturating_sub(start),
            });
        };
        match &self.storage {
            Storage::Mapped(_, file, path) => {
                std::os::unix::fs::FileExt::read_exact_at(file, out, abs).map_err(|source| {
                    GgufError::Io {
                        action: "reading tensor data from",
                        path: path.clone(),
                        source,
                    }
                })
            }
            Storage::Owned(bytes) => {
                let src = usize::try_from(abs)
                    .ok()
                    .and_then(|a| bytes.get(a..a.checked_add(out.len())?));
                match src {
                    Some(src) => {
                        out.copy_from_slice(src);
                        Ok(())
                    }
                    None => Err(GgufError::Truncated {
                        what: format!("tensor '{}' data", info.name),
                        offset: abs,
                        needed: len,
                        available: (bytes.len() as u64).saturating_sub(abs),
                    }),
                }
            }
        }
    }

    /// The named tensor's bytes.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        let info = self.tensor(name).ok_or_else(|| GgufError::TensorNotFound {
            name: name.to_owned(),
        })?;
        Ok(self.tensor_data(info))
    }
}

macro_rules! optional_getters {
    ($($opt:ident => $base:ident -> $t:ty),* $(,)?) => {
        impl GgufFile {$(
            #[doc = concat!("Like [`GgufFile::", stringify!($base), "`], but `Ok(None)` when the key is absent.")]
            pub fn $opt(&self, key: &str) -> Result<Option<$t>, GgufError> {
                optional(self.$base(key))
            }
        )*}
    };
}
optional_getters!(
    get_u32_opt => get_u32 -> u32,
    get_u64_opt => get_u64 -> u64,
    get_i32_opt => get_i32 -> i32,
    get_i64_opt => get_i64 -> i64,
    get_f32_opt => get_f32 -> f32,
    get_f64_opt => get_f64 -> f64,
    get_bool_opt => get_bool -> bool,
    get_str_opt => get_str -> &str,
    get_array_opt => get_array -> &MetadataArray,
    get_str_array_opt => get_str_array -> &StringArray,
    get_f32_array_opt => get_f32_array -> &[f32],
    get_i32_array_opt => get_i32_array -> Cow<'_, [i32]>,
    get_u32_array_opt => get_u32_array -> Cow<'_, [u32]>,
);

/// A missing key becomes `None`; any other error (a wrong type) stays an error.
fn optional<T>(r: Result<T, GgufError>) -> Result<Option<T>, GgufError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(GgufError::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &MetadataValue) -> GgufError {
    GgufError::WrongType {
        key: key.to_owned(),
        expected,
        found: found.type_description(),
    }
}

fn parse(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut cur = Cursor::new(bytes);
    let magic = cur.take(4, "magic")?;
    if magic != GGUF_MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(magic);
        return Err(GgufError::BadMagic { found });
    }
    let version: u32 = cur.read("version")?;
    if !matches!(version, 2 | 3) {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let tensor_count: u64 = cur.read("tensor count")?;
    let kv_count: u64 = cur.read("metadata count")?;
    check_counts(&cur, tensor_count, kv_count)?;

    let (metadata, key_index) = parse_metadata(&mut cur, kv_count)?;
    let alignment = alignment(&metadata, &key_index)?;
    let (tensors, tensor_index) = parse_tensor_infos(&mut cur, tensor_count)?;

    let header_end = cur.pos();
    let data_offset = if tensor_count == 0 {
        header_end
    } else {
        let aligned = header_end.next_multiple_of(alignment);
        cur.take(aligned - header_end, "padding before the tensor data")?;
        aligned
    };
    let data_len = bytes.len() as u64 - data_offset;
    check_placement(&tensors, alignment, data_len)?;

    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

/// Refuses counts that could not fit in the bytes left, before anything is sized by them.
fn check_counts(cur: &Cursor<'_>, tensor_count: u64, kv_count: u64) -> Result<(), GgufError> {
    let offset = cur.pos();
    let remaining = cur.remaining();
    let tensors_max = remaining / MIN_TENSOR_INFO_BYTES;
    if tensor_count > tensors_max {
        return Err(GgufError::TensorCountTooLarge {
            count: tensor_count,
            offset,
            remaining,
            max: tensors_max,
        });
    }
    let kv_max = (remaining - tensor_count * MIN_TENSOR_INFO_BYTES) / MIN_KV_BYTES;
    if kv_count > kv_max {
        return Err(GgufError::MetadataCountTooLarge {
            count: kv_count,
            offset,
            remaining,
            max: kv_max,
        });
    }
    Ok(())
}

type Metadata = (Vec<(String, MetadataValue)>, HashMap<String, usize>);

fn parse_metadata(cur: &mut Cursor<'_>, kv_count: u64) -> Result<Metadata, GgufError> {
    // Bounded by check_counts: at most one entry per MIN_KV_BYTES of input.
    let n = kv_count as usize;
    let mut metadata = Vec::with_capacity(n);
    let mut key_index = HashMap::with_capacity(n);
    for index in 0..kv_count {
        let offset = cur.pos();
        let key = cur.string(MAX_STRING_LEN, format_args!("metadata key #{index}"))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey { index, offset });
        }
        if key_index.contains_key(key) {
            return Err(GgufError::DuplicateKey {
                key: key.to_owned(),
            });
        }
        let type_offset = cur.pos();
        let type_id: u32 = cur.read(format_args!("value type of key '{key}'"))?;
        let ty = MetadataType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_owned(),
            type_id,
            offset: type_offset,
        })?;
        let value = MetadataValue::decode(cur, ty, key)?;
        key_index.insert(key.to_owned(), metadata.len());
        metadata.push((key.to_owned(), value));
    }
    Ok((metadata, key_index))
}

/// The data alignment: llama.cpp requires the key, when present, to be exactly a u32.
fn alignment(
    metadata: &[(String, MetadataValue)],
    key_index: &HashMap<String, usize>,
) -> Result<u64, GgufError> {
    let Some((_, value)) = key_index.get(ALIGNMENT_KEY).and_then(|&i| metadata.get(i)) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match *value {
        MetadataValue::U32(a) if a.is_power_of_two() => Ok(a.into()),
        MetadataValue::U32(a) => Err(GgufError::InvalidAlignment { value: a.into() }),
        ref v => Err(wrong_type(ALIGNMENT_KEY, "u32", v)),
    }
}

type Tensors = (Vec<TensorInfo>, HashMap<String, usize>);

fn parse_tensor_infos(cur: &mut Cursor<'_>, tensor_count: u64) -> Result<Tensors, GgufError> {
    // Bounded by check_counts: at most one entry per MIN_TENSOR_INFO_BYTES of input.
    let n = tensor_count as usize;
    let mut tensors = Vec::with_capacity(n);
    let mut tensor_index = HashMap::with_capacity(n);
    for index in 0..tensor_count {
        let name = cur.string(
            MAX_TENSOR_NAME_LEN as u64,
            format_args!("name of tensor #{index}"),
        )?;
        if tensor_index.contains_key(name) {
            return Err(GgufError::DuplicateTensor {
                name: name.to_owned(),
            });
        }
        let n_dims: u32 = cur.read(format_args!("dimension count of tensor '{name}'"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: name.to_owned(),
                n_dims: n_dims.into(),
                max: MAX_DIMS,
            });
        }
        let dims: Vec<u64> =
            cur.read_vec(n_dims.into(), format_args!("dims of tensor '{name}'"))?;
        let type_id: u32 = cur.read(format_args!("type of tensor '{name}'"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            tensor: name.to_owned(),
            type_id,
        })?;
        let size = checked_tensor_size(name, ggml_type, &dims)?;
        let offset: u64 = cur.read(format_args!("data offset of tensor '{name}'"))?;
        tensor_index.insert(name.to_owned(), tensors.len());
        tensors.push(TensorInfo {
            name: name.to_owned(),
            ggml_type,
            dims,
            offset,
            size,
        });
    }
    Ok((tensors, tensor_index))
}

/// Every tensor must start aligned, end inside the data section and share no byte with
/// another tensor.
fn check_placement(tensors: &[TensorInfo], alignment: u64, data_len: u64) -> Result<(), GgufError> {
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        if t.offset > data_len {
            return Err(GgufError::TensorOffsetOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                data_len,
            });
        }
        if t.size > data_len - t.offset {
            return Err(GgufError::TensorDataOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                size: t.size,
                data_len,
            });
        }
    }
    // Empty tensors occupy no bytes and cannot overlap anything.
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // In bounds, so offset + size cannot overflow.
        let a_end = a.offset + a.size;
        if b.offset < a_end {
            return Err(GgufError::TensorOverlap {
                first: a.name.clone(),
                first_offset: a.offset,
                first_end: a_end,
                second: b.name.clone(),
                second_offset: b.offset,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::GgufWriter;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn sample() -> GgufWriter<'static> {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", "bitnet").unwrap();
        w.add_metadata("bitnet.block_count", 30u32).unwrap();
        w.add_metadata("small", 7u8).unwrap();
        w.add_metadata("neg", -1i32).unwrap();
        w.add_metadata("big", u64::MAX).unwrap();
        w.add_metadata("eps", 1e-5f32).unwrap();
        w.add_metadata("flag", true).unwrap();
        w.add_metadata("tokens", vec!["<s>", "a", "b"]).unwrap();
        w.add_metadata("scores", vec![0.0f32, -1.0, -2.0]).unwrap();
        w.add_metadata("types_i32", vec![3i32, 1, 1]).unwrap();
        w.add_metadata("types_u8", vec![3u8, 1, 1]).unwrap();
        w.add_metadata("too_big", vec![1u64 << 40]).unwrap();
        w.add_tensor_owned("a", GgmlType::F32, &[3], f32_bytes(&[1.0, 2.0, 3.0]))
            .unwrap();
        w.add_tensor_owned("b", GgmlType::F16, &[4, 2], (0..16).collect())
            .unwrap();
        w
    }

    #[test]
    fn open_maps_writer_output_and_slices_are_zero_copy() {
        let w = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        w.write_to(&path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert!(matches!(f.storage, Storage::Mapped(..)));
        assert_eq!(f.version(), 3);
        assert_eq!(f.metadata().len(), 12);
        assert_eq!(f.metadata()[0].0, "general.architecture");
        let a = f.tensor_bytes("a").unwrap();
        assert_eq!(a, &f32_bytes(&[1.0, 2.0, 3.0])[..]);
        assert_eq!(
            f.tensor_bytes("b").unwrap(),
            &(0..16).collect::<Vec<u8>>()[..]
        );
        let mapped = f.storage.bytes().as_ptr_range();
        assert!(
            mapped.contains(&a.as_ptr()),
            "slice must point into the mapping"
        );
        let b = f.tensor("b").unwrap();
        assert_eq!((b.dims.as_slice(), b.offset, b.size), (&[4, 2][..], 32, 16));
        assert_eq!(b.n_elements(), 8);
        assert_eq!(f.data_offset() % 32, 0);
        assert!(matches!(
            f.tensor_bytes("c"),
            Err(GgufError::TensorNotFound { name }) if name == "c"
        ));
    }

    #[test]
    fn open_reports_the_path_of_a_missing_file() {
        let err = GgufFile::open("/nonexistent/x.gguf").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.gguf"), "{err}");
    }

    #[test]
    fn version_2_parses_like_version_3() {
        // gguf.cpp reads v2 and v3 identically (u64 counts and lengths); only v1 used u32.
        let mut bytes = sample().to_bytes();
        bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.version(), 2);
        assert_eq!(f.get_u32("bitnet.block_count").unwrap(), 30);
        assert_eq!(f.tensor_bytes("b").unwrap().len(), 16);
    }

    #[test]
    fn general_alignment_is_honoured() {
        let mut w = sample();
        w.add_metadata(ALIGNMENT_KEY, 256u32).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
        assert_eq!(f.alignment(), 256);
        assert_eq!(f.data_offset() % 256, 0);
        assert_eq!(f.tensor("b").unwrap().offset, 256);
        assert_eq!(
            f.tensor_bytes("b").unwrap(),
            &(0..16).collect::<Vec<u8>>()[..]
        );
    }

    #[test]
    fn integer_getters_accept_any_integer_that_fits() {
        let f = GgufFile::from_bytes(sample().to_bytes()).unwrap();
        assert_eq!(f.get_u32("small").unwrap(), 7);
        assert_eq!(f.get_i64("small").unwrap(), 7);
        assert_eq!(f.get_i32("neg").unwrap(), -1);
        assert_eq!(f.get_u64("big").unwrap(), u64::MAX);
        for (key, r) in [
            ("neg", f.get_u32("neg").map(drop)),
            ("big", f.get_i64("big").map(drop)),
        ] {
            match r {
                Err(GgufError::WrongType {
                    key: k,
                    expected,
                    found,
                }) => {
                    assert_eq!(k, key);
                    assert!(found.contains("does not fit"), "{found}");
                    assert!(expected == "u32" || expected == "i64");
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        let err = f.get_u32("eps").unwrap_err();
        assert_eq!(
            err.to_string(),
            "metadata key 'eps': expected u32, found f32"
        );
        assert!(matches!(
            f.get_u32("flag"),
            Err(GgufError::WrongType { .. })
        ));
    }

    #[test]
    fn other_getters_check_types_and_name_the_key() {
        let f = GgufFile::from_bytes(sample().to_bytes()).unwrap();
        assert_eq!(f.get_str("general.architecture").unwrap(), "bitnet");
        assert_eq!(f.get_f32("eps").unwrap(), 1e-5);
        assert_eq!(f.get_f64("eps").unwrap(), f64::from(1e-5f32));
        assert!(f.get_bool("flag").unwrap());
        assert_eq!(f.get_array("tokens").unwrap().len(), 3);
        let err = f.get_str("missing.key").unwrap_err();
        assert_eq!(err.to_string(), "metadata key 'missing.key' not found");
        let err = f.get_f32("small").unwrap_err();
        assert!(err.to_string().contains("'small'"), "{err}");
        assert!(matches!(
            f.get_str("tokens"),
            Err(GgufError::WrongType { .. })
        ));
    }

    #[test]
    fn array_getters_borrow_exact_types_and_convert_integers() {
        let f = GgufFile::from_bytes(sample().to_bytes()).unwrap();
        assert_eq!(*f.get_str_array("tokens").unwrap(), ["<s>", "a", "b"]);
        assert_eq!(f.get_f32_array("scores").unwrap(), [0.0, -1.0, -2.0]);
        let exact = f.get_i32_array("types_i32").unwrap();
        assert!(matches!(exact, Cow::Borrowed(_)));
        let converted = f.get_i32_array("types_u8").unwrap();
        assert!(matches!(converted, Cow::Owned(_)));
        assert_eq!(exact, converted);
        assert_eq!(f.get_u32_array("types_i32").unwrap().as_ref(), [3, 1, 1]);
        assert!(matches!(
            f.get_i32_array("too_big"),
            Err(GgufError::WrongType {
                expected: "arr[i32]",
                ..
            })
        ));
        assert!(matches!(
            f.get_f32_array("tokens"),
            Err(GgufError::WrongType {
                expected: "arr[f32]",
                ..
            })
        ));
    }

    #[test]
    fn optional_getters_map_only_a_missing_key_to_none() {
        let f = GgufFile::from_bytes(sample().to_bytes()).unwrap();
        assert_eq!(f.get_u32_opt("nope").unwrap(), None);
        assert_eq!(f.get_str_array_opt("nope").unwrap(), None);
        assert_eq!(f.get_u32_opt("small").unwrap(), Some(7));
        assert_eq!(
            f.get_str_opt("general.architecture").unwrap(),
            Some("bitnet")
        );
        assert!(f.get_f32_opt("small").is_err());
        assert!(f.get_i32_array_opt("tokens").is_err());
    }

    #[test]
    fn no_tensors_means_data_starts_at_the_header_end() {
        let mut w = GgufWriter::new();
        w.add_metadata("k", 1u8).unwrap();
        let bytes = w.to_bytes();
        let header_end = 24 + 8 + 1 + 4 + 1;
        assert_eq!(bytes.len(), 64, "the writer still pads, like llama.cpp");
        let f = GgufFile::from_bytes(bytes[..header_end].to_vec()).unwrap();
        assert_eq!(f.data_offset(), header_end as u64);
        assert!(f.tensors().is_empty());
    }

    #[test]
    fn tensor_data_of_a_foreign_info_is_clamped_not_a_panic() {
        let f = GgufFile::from_bytes(sample().to_bytes()).unwrap();
        let mut info = f.tensor("a").unwrap().clone();
        info.offset = u64::MAX - 1;
        assert!(f.tensor_data(&info).is_empty());
        info.offset = 0;
        info.size = 1 << 40;
        assert!(f.tensor_data(&info).is_empty());
    }

    #[test]
    fn a_128k_vocabulary_parses_quickly() {
        let tokens: Vec<String> = (0..128_256).map(|i| format!("tok{i}")).collect();
        let mut w = GgufWriter::new();
        w.add_metadata("tokenizer.ggml.tokens", tokens.clone())
            .unwrap();
        w.add_metadata("tokenizer.ggml.scores", vec![0.5f32; 128_256])
            .unwrap();
        let bytes = w.to_bytes();
        let start = Instant::now();
        let f = GgufFile::from_bytes(bytes).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(
            f.get_str_array("tokenizer.ggml.tokens").unwrap(),
            &tokens[..]
        );
        // Tens of milliseconds even unoptimised; seconds would mean a per-element blow-up.
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    }

    #[test]
    fn debug_summarises_instead_of_dumping() {
        let f = GgufFile::from_bytes(sample().to_bytes()).unwrap();
        let s = format!("{f:?}");
        assert!(s.contains("tensors: 2") && s.contains("version: 3"), "{s}");
    }
}
