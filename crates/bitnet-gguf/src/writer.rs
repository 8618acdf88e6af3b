//! The writer: llama.cpp's layout (header, infos, zero padding, each tensor padded).

use std::borrow::Cow;
use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::cursor::Le;
use crate::error::GgufError;
use crate::reader::GgufFile;
use crate::tensor::{checked_tensor_size, TensorInfo};
use crate::types::GgmlType;
use crate::value::{encode_str, MetadataValue};
use crate::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_STRING_LEN, MAX_TENSOR_NAME_LEN,
};

/// Builds a GGUF v3 file the way llama.cpp's `gguf_write_to_file` lays it out: metadata
/// in insertion order, tensor infos in insertion order with each tensor's data following
/// the previous one padded with zeros to the alignment (the last one too), and the data
/// section itself aligned.
///
/// Tensor data is borrowed (`add_tensor`) or owned (`add_tensor_owned`); `write_to`
/// streams it to the file without building the whole image in memory.
#[derive(Clone)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, MetadataValue)>,
    keys: HashSet<String>,
    tensors: Vec<(TensorInfo, Cow<'a, [u8]>)>,
    names: HashSet<String>,
    alignment: u64,
}

/// Summarises: tensor data can be gigabytes.
impl fmt::Debug for GgufWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufWriter")
            .field("alignment", &self.alignment)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// An empty v3 file with the default alignment (32) until `general.alignment` is added.
    pub fn new() -> Self {
        GgufWriter {
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }

    /// A writer holding `file`'s metadata and (borrowed) tensors, to re-write or extend it.
    /// Tensors are re-laid out contiguously in file order; the version becomes 3.
    pub fn from_gguf(file: &'a GgufFile) -> Result<Self, GgufError> {
        let mut w = GgufWriter::new();
        for (key, value) in file.metadata() {
            w.add_metadata(key.clone(), value.clone())?;
        }
        for t in file.tensors() {
            w.add_tensor(t.name.clone(), t.ggml_type, &t.dims, file.tensor_data(t))?;
        }
        Ok(w)
    }

    /// The alignment the file will be written with.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Adds a metadata pair. Refuses an empty or duplicate key, a value the reader would
    /// refuse (over the string, array or nesting caps), and a `general.alignment` that is
    /// not a u32 power of two.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetadataValue>,
    ) -> Result<(), GgufError> {
        let key = key.into();
        let value = value.into();
        let invalid = |reason: String| GgufError::InvalidMetadata {
            key: key.clone(),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("the key is empty".into()));
        }
        if key.len() as u64 > MAX_STRING_LEN {
            return Err(invalid(format!(
                "the key is {} bytes, over the {MAX_STRING_LEN}-byte limit",
                key.len()
            )));
        }
        if self.keys.contains(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        if let Some(reason) = value.unwritable_reason() {
            return Err(invalid(reason));
        }
        if key == ALIGNMENT_KEY {
            self.alignment = match value {
                MetadataValue::U32(a) if a.is_power_of_two() => a.into(),
                MetadataValue::U32(a) => {
                    return Err(GgufError::InvalidAlignment { value: a.into() })
                }
                ref v => {
                    return Err(GgufError::WrongType {
                        key,
                        expected: "u32",
                        found: v.type_description(),
                    })
                }
            };
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(())
    }

    /// Adds a tensor whose bytes are borrowed until the file is written. `dims[0]` is the
    /// row length; `data` must be exactly `ggml_type.tensor_size(dims)` bytes.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        dims: &[u64],
        data: &'a [u8],
    ) -> Result<(), GgufError> {
        self.push_tensor(name.into(), ggml_type, dims, Cow::Borrowed(data))
    }

    /// Like [`GgufWriter::add_tensor`], taking ownership of the bytes.
    pub fn add_tensor_owned(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        dims: &[u64],
        data: Vec<u8>,
    ) -> Result<(), GgufError> {
        self.push_tensor(name.into(), ggml_type, dims, Cow::Owned(data))
    }

    fn push_tensor(
        &mut self,
        name: String,
        ggml_type: GgmlType,
        dims: &[u64],
        data: Cow<'a, [u8]>,
    ) -> Result<(), GgufError> {
        if name.len() > MAX_TENSOR_NAME_LEN {
            return Err(GgufError::InvalidTensorName {
                reason: format!(
                    "{} bytes, ggml allows at most {MAX_TENSOR_NAME_LEN}",
                    name.len()
                ),
                name,
            });
        }
        if self.names.contains(&name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        let size = checked_tensor_size(&name, ggml_type, dims)?;
        if data.len() as u64 != size {
            return Err(GgufError::TensorDataSize {
                tensor: name,
                ggml_type,
                dims: dims.to_vec(),
                expected: size,
                actual: data.len() as u64,
            });
        }
        self.names.insert(name.clone());
        let info = TensorInfo {
            name,
            ggml_type,
            dims: dims.to_vec(),
            // Assigned when the layout is fixed at write time (the alignment may change).
            offset: 0,
            size,
        };
        self.tensors.push((info, data));
        Ok(())
    }

    /// Writes the file, streaming tensor data from where it is held.
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            action: "writing",
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(io_err)?;
        let mut out = BufWriter::new(file);
        self.write_into(&mut out).map_err(io_err)?;
        out.flush().map_err(io_err)
    }

    /// Writes the file to any sink.
    pub fn write_into<W: Write>(&self, out: &mut W) -> io::Result<()> {
        self.emit(|bytes| out.write_all(bytes))
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = self.header();
        let data_len: u64 = self.tensors.iter().map(|(t, _)| self.padded(t.size)).sum();
        let mut out = Vec::with_capacity(header.len() + data_len as usize);
        let Ok(()) = self.emit_with_header(&header, |bytes| {
            out.extend_from_slice(bytes);
            Ok::<(), Infallible>(())
        });
        out
    }

    fn emit<E>(&self, put: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        self.emit_with_header(&self.header(), put)
    }

    /// Header (already padded), then each tensor's bytes followed by zero padding.
    fn emit_with_header<E>(
        &self,
        header: &[u8],
        mut put: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        const ZEROS: [u8; 256] = [0; 256];
        put(header)?;
        for (info, data) in &self.tensors {
            put(data)?;
            let mut pad = self.padded(info.size) - info.size;
            while pad > 0 {
                let n = pad.min(ZEROS.len() as u64);
                put(&ZEROS[..n as usize])?;
                pad -= n;
            }
        }
        Ok(())
    }

    fn padded(&self, size: u64) -> u64 {
        size.next_multiple_of(self.alignment)
    }

    /// Magic, version, counts, metadata, tensor infos with their offsets, zero padding to
    /// the alignment (always, even without tensors, as llama.cpp does).
    fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        GGUF_VERSION.put_le(&mut out);
        (self.tensors.len() as u64).put_le(&mut out);
        (self.metadata.len() as u64).put_le(&mut out);
        for (key, value) in &self.metadata {
            encode_str(key, &mut out);
            value.value_type().id().put_le(&mut out);
            value.encode_payload(&mut out);
        }
        let mut offset = 0u64;
        for (info, _) in &self.tensors {
            encode_str(&info.name, &mut out);
            (info.dims.len() as u32).put_le(&mut out);
            info.dims.iter().for_each(|d| d.put_le(&mut out));
            info.ggml_type.id().put_le(&mut out);
            offset.put_le(&mut out);
            offset += self.padded(info.size);
        }
        out.resize(self.padded(out.len() as u64) as usize, 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_llama_cpp() {
        let mut w = GgufWriter::new();
        w.add_metadata("a", 7u32).unwrap();
        w.add_tensor("t0", GgmlType::F32, &[3], &[1; 12]).unwrap();
        w.add_tensor("t1", GgmlType::F16, &[2, 2], &[2; 8]).unwrap();
        let bytes = w.to_bytes();
        // Header: 4 magic + 4 version + 8 + 8 counts = 24; kv "a": 8 + 1 + 4 + 4 = 17;
        // t0: 8 + 2 + 4 + 8 + 4 + 8 = 34; t1: 8 + 2 + 4 + 16 + 4 + 8 = 42 → 117, padded to 128.
        // t0 at 128 (12 bytes, padded to 32), t1 at 160 (8 bytes, padded to 32) → 192.
        assert_eq!(bytes.len(), 192);
        assert_eq!(&bytes[..4], b"GGUF");
        assert_eq!(&bytes[4..8], &3u32.to_le_bytes());
        assert_eq!(&bytes[117..128], &[0; 11]);
        assert_eq!(&bytes[128..140], &[1; 12]);
        assert_eq!(&bytes[140..160], &[0; 20]);
        assert_eq!(&bytes[160..168], &[2; 8]);
        assert_eq!(&bytes[168..192], &[0; 24]);
        // t1's offset field (relative to the data section) is the last 8 header bytes.
        assert_eq!(&bytes[109..117], &32u64.to_le_bytes());
    }

    #[test]
    fn refuses_what_a_reader_would_refuse() {
        let mut w = GgufWriter::new();
        w.add_metadata("k", 1u8).unwrap();
        assert!(matches!(
            w.add_metadata("k", 2u8),
            Err(GgufError::DuplicateKey { .. })
        ));
        assert!(matches!(
            w.add_metadata("", 2u8),
            Err(GgufError::InvalidMetadata { .. })
        ));
        assert!(matches!(
            w.add_metadata(ALIGNMENT_KEY, 24u32),
            Err(GgufError::InvalidAlignment { value: 24 })
        ));
        assert!(matches!(
            w.add_metadata(ALIGNMENT_KEY, 64u64),
            Err(GgufError::WrongType { .. })
        ));
        w.add_tensor("t", GgmlType::F32, &[2], &[0; 8]).unwrap();
        assert!(matches!(
            w.add_tensor("t", GgmlType::F32, &[2], &[0; 8]),
            Err(GgufError::DuplicateTensor { .. })
        ));
        assert!(matches!(
            w.add_tensor("u", GgmlType::F32, &[2], &[0; 7]),
            Err(GgufError::TensorDataSize {
                expected: 8,
                actual: 7,
                ..
            })
        ));
        assert!(matches!(
            w.add_tensor("x".repeat(64), GgmlType::F32, &[2], &[0; 8]),
            Err(GgufError::InvalidTensorName { .. })
        ));
        assert!(matches!(
            w.add_tensor("q", GgmlType::Q8_0, &[16], &[0; 17]),
            Err(GgufError::RowNotBlockMultiple { .. })
        ));
    }

    #[test]
    fn alignment_set_after_tensors_applies_to_them() {
        let mut w = GgufWriter::new();
        w.add_tensor("t", GgmlType::F32, &[1], &[9; 4]).unwrap();
        w.add_metadata(ALIGNMENT_KEY, 64u32).unwrap();
        let bytes = w.to_bytes();
        assert_eq!(bytes.len() % 64, 0);
        assert_eq!(w.alignment(), 64);
    }

    #[test]
    fn write_to_names_the_path_on_failure() {
        let err = GgufWriter::new()
            .write_to("/nonexistent-dir/out.gguf")
            .unwrap_err();
        assert!(matches!(
            err,
            GgufError::Io {
                action: "writing",
                ..
            }
        ));
        assert!(
            err.to_string().contains("/nonexistent-dir/out.gguf"),
            "{err}"
        );
    }

    #[test]
    fn streamed_and_in_memory_output_agree() {
        let mut w = GgufWriter::new();
        w.add_metadata("s", "v").unwrap();
        w.add_tensor_owned("t", GgmlType::F32, &[5], vec![3; 20])
            .unwrap();
        let mut streamed = Vec::new();
        w.write_into(&mut streamed).unwrap();
        assert_eq!(streamed, w.to_bytes());
    }
}
