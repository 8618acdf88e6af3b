//! ggml tensor type ids and their storage sizes.
//!
//! The ids are those written into GGUF files. Upstream llama.cpp, ik_llama.cpp and
//! Microsoft's bitnet.cpp agree on every id listed here (upstream has no 36/37/134..136,
//! ik_llama.cpp has no TQ1_0/TQ2_0, bitnet.cpp has no IQ*_BN), so one table serves all.

use std::fmt;

/// A ggml tensor type this project can store, read or compute with.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q8_1,
    Q8_K,
    BF16,
    TQ1_0,
    TQ2_0,
    /// Microsoft bitnet.cpp's 2-bit ternary format (x86 layout: 128-element blocks, one f32
    /// scale per tensor stored after the packed codes).
    I2_S,
    /// bitnet.cpp's int8 activation format for I2_S (never stored in model files).
    I8_S,
    /// ik_llama.cpp's 1.625-bit ternary format (f16 row scale, 13 bytes per 64 weights).
    IQ1_BN,
    /// ik_llama.cpp's 2-bit ternary format (f32 row scale, 16 bytes per 64 weights).
    IQ2_BN,
    /// ik_llama.cpp's int8 activation format for IQ*_BN.
    Q8_K64,
}

/// How a type lays its bytes out, as far as a container needs to size a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeLayout {
    /// Elements per block (1 for plain element types).
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
    /// Bytes at the start of every row before its blocks (IQ*_BN row scales).
    pub row_prefix: u64,
    /// Bytes after the whole tensor (I2_S: its per-tensor scale, padded to 32 bytes).
    pub tensor_suffix: u64,
}

impl GgmlType {
    /// Every supported type, in id order.
    pub const ALL: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8_K,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::I2_S,
        GgmlType::I8_S,
        GgmlType::IQ1_BN,
        GgmlType::IQ2_BN,
        GgmlType::Q8_K64,
    ];

    /// The type with this GGUF/ggml id, if supported.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The id written into GGUF files.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q8_K => 15,
            GgmlType::BF16 => 30,
            GgmlType::TQ1_0 => 34,
            GgmlType::TQ2_0 => 35,
            GgmlType::I2_S => 36,
            GgmlType::I8_S => 37,
            GgmlType::IQ1_BN => 134,
            GgmlType::IQ2_BN => 135,
            GgmlType::Q8_K64 => 136,
        }
    }

    /// ggml's lowercase type name (`"tq2_0"`, `"i2_s"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q8_1 => "q8_1",
            GgmlType::Q8_K => "q8_K",
            GgmlType::BF16 => "bf16",
            GgmlType::TQ1_0 => "tq1_0",
            GgmlType::TQ2_0 => "tq2_0",
            GgmlType::I2_S => "i2_s",
            GgmlType::I8_S => "i8_s",
            GgmlType::IQ1_BN => "iq1_bn",
            GgmlType::IQ2_BN => "iq2_bn",
            GgmlType::Q8_K64 => "q8_K64",
        }
    }

    /// Storage layout (block size, bytes per block, row prefix, tensor suffix).
    pub fn layout(self) -> TypeLayout {
        let (block_size, type_size, row_prefix, tensor_suffix) = match self {
            GgmlType::F32 => (1, 4, 0, 0),
            GgmlType::F16 | GgmlType::BF16 => (1, 2, 0, 0),
            // f16 d + 16 bytes of nibbles.
            GgmlType::Q4_0 => (32, 18, 0, 0),
            // f16 d, f16 m + 16 bytes of nibbles.
            GgmlType::Q4_1 => (32, 20, 0, 0),
            // f16 d + 32 int8.
            GgmlType::Q8_0 => (32, 34, 0, 0),
            // f16 d, f16 s + 32 int8.
            GgmlType::Q8_1 => (32, 36, 0, 0),
            // f32 d + 256 int8 + 16 i16 bsums.
            GgmlType::Q8_K => (256, 292, 0, 0),
            // qs[48] + qh[4] + f16 d.
            GgmlType::TQ1_0 => (256, 54, 0, 0),
            // qs[64] + f16 d.
            GgmlType::TQ2_0 => (256, 66, 0, 0),
            // 4 codes per byte; one f32 scale per tensor, padded to 32 bytes.
            GgmlType::I2_S => (4, 1, 0, 32),
            // int8 per element; scale and row sum travel beside the buffer.
            GgmlType::I8_S => (1, 1, 0, 0),
            // 13 bytes per 64 weights after an f16 row scale.
            GgmlType::IQ1_BN => (64, 13, 2, 0),
            // 16 bytes per 64 weights after an f32 row scale.
            GgmlType::IQ2_BN => (64, 16, 4, 0),
            // ggml sizes it as f32 + 64 int8 per block; ik_llama.cpp actually writes an
            // 8-float row header then K int8, which fits because it requires K >= 512.
            GgmlType::Q8_K64 => (64, 68, 0, 0),
        };
        TypeLayout {
            block_size,
            type_size,
            row_prefix,
            tensor_suffix,
        }
    }

    /// Bytes taken by one row of `ne0` elements, or `None` if `ne0` is not a multiple of
    /// the block size or the size overflows. Excludes any per-tensor suffix.
    pub fn row_size(self, ne0: u64) -> Option<u64> {
        let l = self.layout();
        if !ne0.is_multiple_of(l.block_size) {
            return None;
        }
        (ne0 / l.block_size)
            .checked_mul(l.type_size)?
            .checked_add(l.row_prefix)
    }

    /// Bytes taken by a whole tensor of these dims (`dims[0]` is the row length), or `None`
    /// if a row is not a whole number of blocks or the size overflows `u64`.
    pub fn tensor_size(self, dims: &[u64]) -> Option<u64> {
        let ne0 = dims.first().copied().unwrap_or(1);
        let rows = dims
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
        self.row_size(ne0)?
            .checked_mul(rows)?
            .checked_add(self.layout().tensor_suffix)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t), "{t}");
        }
        let mut ids: Vec<u32> = GgmlType::ALL.iter().map(|t| t.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), GgmlType::ALL.len());
        assert_eq!(GgmlType::from_id(4), None, "Q4_2 was removed from ggml");
    }

    #[test]
    fn sizes_match_the_reference_formulas() {
        // TQ2_0: 66 bytes per 256 weights.
        assert_eq!(GgmlType::TQ2_0.tensor_size(&[512, 3]), Some(66 * 2 * 3));
        // I2_S: n/4 + 32 for the whole tensor (bitnet.cpp's ggml_nbytes).
        assert_eq!(
            GgmlType::I2_S.tensor_size(&[2560, 6912]),
            Some(2560 * 6912 / 4 + 32)
        );
        // IQ2_BN: f32 row scale + K/4 bytes per row.
        assert_eq!(GgmlType::IQ2_BN.tensor_size(&[512, 2]), Some((4 + 128) * 2));
        assert_eq!(GgmlType::F16.tensor_size(&[7]), Some(14));
        assert_eq!(GgmlType::TQ2_0.row_size(100), None);
        assert_eq!(GgmlType::F32.tensor_size(&[u64::MAX, 2]), None);
    }
}
