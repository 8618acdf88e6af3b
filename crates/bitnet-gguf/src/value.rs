//! Metadata values: the 13 GGUF value types, their encoding and their decoding.

use std::fmt;

use crate::cursor::{Cursor, Le};
use crate::error::GgufError;
use crate::strings::StringArray;
use crate::{MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_STRING_LEN};

/// A GGUF metadata value type, with the id written into files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetadataType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl MetadataType {
    /// Every type, in id order (the id is the index).
    pub const ALL: [MetadataType; 13] = [
        MetadataType::U8,
        MetadataType::I8,
        MetadataType::U16,
        MetadataType::I16,
        MetadataType::U32,
        MetadataType::I32,
        MetadataType::F32,
        MetadataType::Bool,
        MetadataType::String,
        MetadataType::Array,
        MetadataType::U64,
        MetadataType::I64,
        MetadataType::F64,
    ];

    /// The id written into GGUF files.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The type with this id, if any.
    pub fn from_id(id: u32) -> Option<MetadataType> {
        MetadataType::ALL.get(usize::try_from(id).ok()?).copied()
    }

    /// llama.cpp's short name (`"u32"`, `"str"`, `"arr"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            MetadataType::U8 => "u8",
            MetadataType::I8 => "i8",
            MetadataType::U16 => "u16",
            MetadataType::I16 => "i16",
            MetadataType::U32 => "u32",
            MetadataType::I32 => "i32",
            MetadataType::F32 => "f32",
            MetadataType::Bool => "bool",
            MetadataType::String => "str",
            MetadataType::Array => "arr",
            MetadataType::U64 => "u64",
            MetadataType::I64 => "i64",
            MetadataType::F64 => "f64",
        }
    }

    /// True for the eight integer types (not bool).
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            MetadataType::U8
                | MetadataType::I8
                | MetadataType::U16
                | MetadataType::I16
                | MetadataType::U32
                | MetadataType::I32
                | MetadataType::U64
                | MetadataType::I64
        )
    }

    /// The fewest bytes one array element of this type can take: a string is at least
    /// its u64 length, a nested array its u32 element type and u64 count.
    fn min_encoded_size(self) -> u64 {
        match self {
            MetadataType::U8 | MetadataType::I8 | MetadataType::Bool => 1,
            MetadataType::U16 | MetadataType::I16 => 2,
            MetadataType::U32 | MetadataType::I32 | MetadataType::F32 => 4,
            MetadataType::U64 | MetadataType::I64 | MetadataType::F64 => 8,
            MetadataType::String => 8,
            MetadataType::Array => 12,
        }
    }
}

impl fmt::Display for MetadataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetadataArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A typed array: one `Vec` per element type (strings in one [`StringArray`]), so a
/// 128k-entry vocabulary is two allocations rather than 128k enum values.
///
/// `Array` holds nested arrays; each inner array has its own element type. llama.cpp
/// itself refuses nested arrays, so files meant for it must not use them.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(StringArray),
    Array(Vec<MetadataArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetadataValue {
    /// This value's GGUF type.
    pub fn value_type(&self) -> MetadataType {
        match self {
            MetadataValue::U8(_) => MetadataType::U8,
            MetadataValue::I8(_) => MetadataType::I8,
            MetadataValue::U16(_) => MetadataType::U16,
            MetadataValue::I16(_) => MetadataType::I16,
            MetadataValue::U32(_) => MetadataType::U32,
            MetadataValue::I32(_) => MetadataType::I32,
            MetadataValue::F32(_) => MetadataType::F32,
            MetadataValue::Bool(_) => MetadataType::Bool,
            MetadataValue::String(_) => MetadataType::String,
            MetadataValue::Array(_) => MetadataType::Array,
            MetadataValue::U64(_) => MetadataType::U64,
            MetadataValue::I64(_) => MetadataType::I64,
            MetadataValue::F64(_) => MetadataType::F64,
        }
    }

    /// A short description of the type for messages: `"u32"`, `"arr[str]"`.
    pub fn type_description(&self) -> String {
        match self {
            MetadataValue::Array(a) => a.type_description(),
            v => v.value_type().name().to_owned(),
        }
    }

    /// The value of an integer-typed value (never of a bool or float), widened losslessly.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            MetadataValue::U8(v) => v.into(),
            MetadataValue::I8(v) => v.into(),
            MetadataValue::U16(v) => v.into(),
            MetadataValue::I16(v) => v.into(),
            MetadataValue::U32(v) => v.into(),
            MetadataValue::I32(v) => v.into(),
            MetadataValue::U64(v) => v.into(),
            MetadataValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetadataArray> {
        match self {
            MetadataValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An array of strings, e.g. `tokenizer.ggml.tokens`.
    pub fn string_array<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> MetadataValue {
        MetadataValue::Array(MetadataArray::String(items.into_iter().collect()))
    }

    /// Appends the value's payload (without its type id) in GGUF encoding.
    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            MetadataValue::U8(v) => v.put_le(out),
            MetadataValue::I8(v) => v.put_le(out),
            MetadataValue::U16(v) => v.put_le(out),
            MetadataValue::I16(v) => v.put_le(out),
            MetadataValue::U32(v) => v.put_le(out),
            MetadataValue::I32(v) => v.put_le(out),
            MetadataValue::F32(v) => v.put_le(out),
            MetadataValue::Bool(v) => out.push(u8::from(*v)),
            MetadataValue::String(s) => encode_str(s, out),
            MetadataValue::Array(a) => a.encode(out),
            MetadataValue::U64(v) => v.put_le(out),
            MetadataValue::I64(v) => v.put_le(out),
            MetadataValue::F64(v) => v.put_le(out),
        }
    }

    /// Why a writer must refuse this value (a reader would reject it), if it must.
    pub(crate) fn unwritable_reason(&self) -> Option<String> {
        match self {
            MetadataValue::String(s) => string_unwritable_reason(s),
            MetadataValue::Array(a) => a.unwritable_reason(1),
            _ => None,
        }
    }

    /// Reads a value of type `ty`; `key` names it in errors.
    pub(crate) fn decode(
        cur: &mut Cursor<'_>,
        ty: MetadataType,
        key: &str,
    ) -> Result<MetadataValue, GgufError> {
        let what = format_args!("value of key '{key}'");
        Ok(match ty {
            MetadataType::U8 => MetadataValue::U8(cur.read(what)?),
            MetadataType::I8 => MetadataValue::I8(cur.read(what)?),
            MetadataType::U16 => MetadataValue::U16(cur.read(what)?),
            MetadataType::I16 => MetadataValue::I16(cur.read(what)?),
            MetadataType::U32 => MetadataValue::U32(cur.read(what)?),
            MetadataType::I32 => MetadataValue::I32(cur.read(what)?),
            MetadataType::F32 => MetadataValue::F32(cur.read(what)?),
            MetadataType::Bool => MetadataValue::Bool(decode_bool(cur, key)?),
            MetadataType::String => {
                MetadataValue::String(cur.string(MAX_STRING_LEN, what)?.to_owned())
            }
            MetadataType::Array => MetadataValue::Array(MetadataArray::decode(cur, key, 1)?),
            MetadataType::U64 => MetadataValue::U64(cur.read(what)?),
            MetadataType::I64 => MetadataValue::I64(cur.read(what)?),
            MetadataType::F64 => MetadataValue::F64(cur.read(what)?),
        })
    }
}

impl MetadataArray {
    /// The type of the elements.
    pub fn element_type(&self) -> MetadataType {
        match self {
            MetadataArray::U8(_) => MetadataType::U8,
            MetadataArray::I8(_) => MetadataType::I8,
            MetadataArray::U16(_) => MetadataType::U16,
            MetadataArray::I16(_) => MetadataType::I16,
            MetadataArray::U32(_) => MetadataType::U32,
            MetadataArray::I32(_) => MetadataType::I32,
            MetadataArray::F32(_) => MetadataType::F32,
            MetadataArray::Bool(_) => MetadataType::Bool,
            MetadataArray::String(_) => MetadataType::String,
            MetadataArray::Array(_) => MetadataType::Array,
            MetadataArray::U64(_) => MetadataType::U64,
            MetadataArray::I64(_) => MetadataType::I64,
            MetadataArray::F64(_) => MetadataType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MetadataArray::U8(v) => v.len(),
            MetadataArray::I8(v) => v.len(),
            MetadataArray::U16(v) => v.len(),
            MetadataArray::I16(v) => v.len(),
            MetadataArray::U32(v) => v.len(),
            MetadataArray::I32(v) => v.len(),
            MetadataArray::F32(v) => v.len(),
            MetadataArray::Bool(v) => v.len(),
            MetadataArray::String(v) => v.len(),
            MetadataArray::Array(v) => v.len(),
            MetadataArray::U64(v) => v.len(),
            MetadataArray::I64(v) => v.len(),
            MetadataArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `"arr[str]"`, `"arr[arr]"`, ...
    pub fn type_description(&self) -> String {
        format!("arr[{}]", self.element_type().name())
    }

    /// The elements converted to `T` if this is an integer array (not bool or float)
    /// and every element fits in `T`.
    pub fn to_integers<T: TryFrom<i128>>(&self) -> Option<Vec<T>> {
        fn convert<S: Copy + Into<i128>, T: TryFrom<i128>>(v: &[S]) -> Option<Vec<T>> {
            v.iter().map(|&x| T::try_from(x.into()).ok()).collect()
        }
        match self {
            MetadataArray::U8(v) => convert(v),
            MetadataArray::I8(v) => convert(v),
            MetadataArray::U16(v) => convert(v),
            MetadataArray::I16(v) => convert(v),
            MetadataArray::U32(v) => convert(v),
            MetadataArray::I32(v) => convert(v),
            MetadataArray::U64(v) => convert(v),
            MetadataArray::I64(v) => convert(v),
            _ => None,
        }
    }

    pub fn as_strings(&self) -> Option<&StringArray> {
        match self {
            MetadataArray::String(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f32_slice(&self) -> Option<&[f32]> {
        match self {
            MetadataArray::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i32_slice(&self) -> Option<&[i32]> {
        match self {
            MetadataArray::I32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_u32_slice(&self) -> Option<&[u32]> {
        match self {
            MetadataArray::U32(v) => Some(v),
            _ => None,
        }
    }

    /// Appends element type, count and elements in GGUF encoding.
    fn encode(&self, out: &mut Vec<u8>) {
        fn scalars<T: Le>(v: &[T], out: &mut Vec<u8>) {
            out.reserve(v.len() * T::SIZE);
            v.iter().for_each(|x| x.put_le(out));
        }
        self.element_type().id().put_le(out);
        (self.len() as u64).put_le(out);
        match self {
            MetadataArray::U8(v) => out.extend_from_slice(v),
            MetadataArray::I8(v) => scalars(v, out),
            MetadataArray::U16(v) => scalars(v, out),
            MetadataArray::I16(v) => scalars(v, out),
            MetadataArray::U32(v) => scalars(v, out),
            MetadataArray::I32(v) => scalars(v, out),
            MetadataArray::F32(v) => scalars(v, out),
            MetadataArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            MetadataArray::String(v) => v.iter().for_each(|s| encode_str(s, out)),
            MetadataArray::Array(v) => v.iter().for_each(|a| a.encode(out)),
            MetadataArray::U64(v) => scalars(v, out),
            MetadataArray::I64(v) => scalars(v, out),
            MetadataArray::F64(v) => scalars(v, out),
        }
    }

    /// Why this array (at nesting level `depth`, top level 1) cannot be read back, if so.
    fn unwritable_reason(&self, depth: usize) -> Option<String> {
        if self.len() as u64 > MAX_ARRAY_LEN {
            return Some(format!(
                "array of {} elements is over the {MAX_ARRAY_LEN}-element limit",
                self.len()
            ));
        }
        match self {
            MetadataArray::String(v) => v.iter().find_map(string_unwritable_reason),
            MetadataArray::Array(v) => {
                // An array of arrays declares a deeper level even when empty.
                if depth >= MAX_ARRAY_DEPTH {
                    return Some(format!(
                        "arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
                    ));
                }
                v.iter().find_map(|a| a.unwritable_reason(depth + 1))
            }
            _ => None,
        }
    }

    /// Reads element type, count and elements of an array at nesting level `depth`
    /// (top level 1). The count is checked against the bytes left before allocating.
    fn decode(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<MetadataArray, GgufError> {
        let offset = cur.pos();
        let type_id: u32 = cur.read(format_args!("array element type of key '{key}'"))?;
        let ty = MetadataType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_owned(),
            type_id,
            offset,
        })?;
        if ty == MetadataType::Array && depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::ArrayTooDeep {
                key: key.to_owned(),
                offset,
                max: MAX_ARRAY_DEPTH,
            });
        }
        let len: u64 = cur.read(format_args!("array length of key '{key}'"))?;
        let needed = u128::from(len) * u128::from(ty.min_encoded_size());
        let remaining = cur.remaining();
        if len > MAX_ARRAY_LEN || needed > u128::from(remaining) {
            return Err(GgufError::ArrayTooLong {
                key: key.to_owned(),
                offset,
                len,
                element_type: ty.name(),
                needed,
                max_len: MAX_ARRAY_LEN,
                remaining,
            });
        }
        let what = format_args!("array elements of key '{key}'");
        Ok(match ty {
            MetadataType::U8 => MetadataArray::U8(cur.read_vec(len, what)?),
            MetadataType::I8 => MetadataArray::I8(cur.read_vec(len, what)?),
            MetadataType::U16 => MetadataArray::U16(cur.read_vec(len, what)?),
            MetadataType::I16 => MetadataArray::I16(cur.read_vec(len, what)?),
            MetadataType::U32 => MetadataArray::U32(cur.read_vec(len, what)?),
            MetadataType::I32 => MetadataArray::I32(cur.read_vec(len, what)?),
            MetadataType::F32 => MetadataArray::F32(cur.read_vec(len, what)?),
            MetadataType::Bool => MetadataArray::Bool(
                (0..len)
                    .map(|_| decode_bool(cur, key))
                    .collect::<Result<_, _>>()?,
            ),
            MetadataType::String => {
                // `len` fits in the bytes left (checked above), so reserving it is bounded.
                let mut strings = StringArray::with_capacity(len as usize);
                for _ in 0..len {
                    strings.push(cur.string(MAX_STRING_LEN, what)?);
                }
                strings.shrink_to_fit();
                MetadataArray::String(strings)
            }
            MetadataType::Array => MetadataArray::Array(
                (0..len)
                    .map(|_| MetadataArray::decode(cur, key, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            MetadataType::U64 => MetadataArray::U64(cur.read_vec(len, what)?),
            MetadataType::I64 => MetadataArray::I64(cur.read_vec(len, what)?),
            MetadataType::F64 => MetadataArray::F64(cur.read_vec(len, what)?),
        })
    }
}

pub(crate) fn encode_str(s: &str, out: &mut Vec<u8>) {
    (s.len() as u64).put_le(out);
    out.extend_from_slice(s.as_bytes());
}

fn string_unwritable_reason(s: &str) -> Option<String> {
    (s.len() as u64 > MAX_STRING_LEN).then(|| {
        format!(
            "string of {} bytes is over the {MAX_STRING_LEN}-byte limit",
            s.len()
        )
    })
}

/// A bool byte; llama.cpp reads any non-zero byte as true, but only 0 and 1 are valid.
fn decode_bool(cur: &mut Cursor<'_>, key: &str) -> Result<bool, GgufError> {
    let offset = cur.pos();
    match cur.read::<u8>(format_args!("bool value of key '{key}'"))? {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(GgufError::InvalidBool {
            key: key.to_owned(),
            byte,
            offset,
        }),
    }
}

macro_rules! impl_from {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for MetadataValue {
            fn from(v: $t) -> Self {
                MetadataValue::$variant(v)
            }
        }
        impl From<Vec<$t>> for MetadataArray {
            fn from(v: Vec<$t>) -> Self {
                MetadataArray::$variant(v)
            }
        }
        impl From<Vec<$t>> for MetadataValue {
            fn from(v: Vec<$t>) -> Self {
                MetadataValue::Array(MetadataArray::$variant(v))
            }
        }
        impl From<&[$t]> for MetadataValue {
            fn from(v: &[$t]) -> Self {
                MetadataValue::Array(MetadataArray::$variant(v.to_vec()))
            }
        }
    )*};
}
impl_from!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, u64 => U64, i64 => I64, f64 => F64, MetadataArray => Array,
);

impl From<String> for MetadataValue {
    fn from(v: String) -> Self {
        MetadataValue::String(v)
    }
}

impl From<StringArray> for MetadataArray {
    fn from(v: StringArray) -> Self {
        MetadataArray::String(v)
    }
}

impl From<StringArray> for MetadataValue {
    fn from(v: StringArray) -> Self {
        MetadataValue::Array(MetadataArray::String(v))
    }
}

impl From<Vec<String>> for MetadataArray {
    fn from(v: Vec<String>) -> Self {
        MetadataArray::String(v.into_iter().collect())
    }
}

impl From<Vec<String>> for MetadataValue {
    fn from(v: Vec<String>) -> Self {
        MetadataValue::string_array(v)
    }
}

impl From<&[String]> for MetadataValue {
    fn from(v: &[String]) -> Self {
        MetadataValue::string_array(v)
    }
}

impl From<&str> for MetadataValue {
    fn from(v: &str) -> Self {
        MetadataValue::String(v.to_owned())
    }
}

impl From<Vec<&str>> for MetadataValue {
    fn from(v: Vec<&str>) -> Self {
        MetadataValue::string_array(v)
    }
}

impl From<&[&str]> for MetadataValue {
    fn from(v: &[&str]) -> Self {
        MetadataValue::string_array(v.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &MetadataValue) -> MetadataValue {
        let mut bytes = Vec::new();
        v.encode_payload(&mut bytes);
        let mut cur = Cursor::new(&bytes);
        let back = MetadataValue::decode(&mut cur, v.value_type(), "k").unwrap();
        assert_eq!(cur.remaining(), 0, "{v:?} left bytes behind");
        back
    }

    #[test]
    fn type_ids_are_the_gguf_ids() {
        assert_eq!(MetadataType::String.id(), 8);
        assert_eq!(MetadataType::Array.id(), 9);
        assert_eq!(MetadataType::F64.id(), 12);
        assert_eq!(MetadataType::from_id(13), None);
        for t in MetadataType::ALL {
            assert_eq!(MetadataType::from_id(t.id()), Some(t));
        }
    }

    #[test]
    fn string_array_encoding_is_count_then_length_prefixed_strings() {
        let mut bytes = Vec::new();
        MetadataValue::from(vec!["a", "bc"]).encode_payload(&mut bytes);
        let expected: Vec<u8> = [
            &8u32.to_le_bytes()[..],
            &2u64.to_le_bytes(),
            &1u64.to_le_bytes(),
            b"a",
            &2u64.to_le_bytes(),
            b"bc",
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn values_round_trip() {
        let nested = MetadataArray::Array(vec![
            MetadataArray::U8(vec![1, 2]),
            MetadataArray::Array(vec![MetadataArray::Bool(vec![true, false])]),
            MetadataArray::String(StringArray::default()),
        ]);
        for v in [
            MetadataValue::from(-3i8),
            MetadataValue::from(u64::MAX),
            MetadataValue::from(true),
            MetadataValue::from("héllo"),
            MetadataValue::from(vec![1.5f32, -0.0]),
            MetadataValue::from(nested),
        ] {
            assert_eq!(round_trip(&v), v);
        }
    }

    #[test]
    fn depth_limit_is_shared_by_reader_and_writer() {
        let mut a = MetadataArray::U8(vec![]);
        for _ in 1..MAX_ARRAY_DEPTH {
            a = MetadataArray::Array(vec![a]);
        }
        let ok = MetadataValue::Array(a.clone());
        assert_eq!(ok.unwritable_reason(), None);
        assert_eq!(round_trip(&ok), ok);
        let deep = MetadataValue::Array(MetadataArray::Array(vec![a]));
        assert!(deep.unwritable_reason().is_some());
        let mut bytes = Vec::new();
        deep.encode_payload(&mut bytes);
        let err = MetadataValue::decode(&mut Cursor::new(&bytes), MetadataType::Array, "k");
        assert!(
            matches!(err, Err(GgufError::ArrayTooDeep { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn integer_widening_covers_integers_only() {
        assert_eq!(
            MetadataValue::from(u64::MAX).as_integer(),
            Some(u64::MAX.into())
        );
        assert_eq!(MetadataValue::from(-1i64).as_integer(), Some(-1));
        assert_eq!(MetadataValue::from(true).as_integer(), None);
        assert_eq!(MetadataValue::from(1.0f32).as_integer(), None);
    }
}
