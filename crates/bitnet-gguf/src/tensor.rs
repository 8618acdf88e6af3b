//! Tensor descriptors and the shape rules shared by reader and writer.

use crate::error::GgufError;
use crate::types::GgmlType;
use crate::MAX_DIMS;

/// One tensor's entry in the GGUF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    /// Elements per dimension in ggml order: `dims[0]` is the row length (contiguous).
    /// May be empty (a 0-d tensor of one element), as llama.cpp allows.
    pub dims: Vec<u64>,
    /// Byte offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Byte size of the data (`GgmlType::tensor_size` of `dims`).
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (product of `dims`; 1 for no dims). Saturates for hand-built
    /// infos whose dims overflow; infos from a file were checked to fit in `i64`.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
}

/// Validates a tensor's shape against ggml's rules and returns its byte size.
///
/// ggml stores dims as `i64` and refuses a shape whose element count (checked as a
/// running product) exceeds `i64::MAX`; zero dims are allowed (an empty tensor).
pub(crate) fn checked_tensor_size(
    name: &str,
    ggml_type: GgmlType,
    dims: &[u64],
) -> Result<u64, GgufError> {
    if dims.len() > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name.to_owned(),
            n_dims: dims.len() as u64,
            max: MAX_DIMS,
        });
    }
    let i64_max = i64::MAX as u64;
    if let Some((index, &value)) = dims.iter().enumerate().find(|(_, &d)| d > i64_max) {
        return Err(GgufError::DimTooLarge {
            tensor: name.to_owned(),
            index,
            value,
        });
    }
    let fits = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d).filter(|&n| n <= i64_max));
    if fits.is_none() {
        return Err(GgufError::ElementCountOverflow {
            tensor: name.to_owned(),
            dims: dims.to_vec(),
        });
    }
    let ne0 = dims.first().copied().unwrap_or(1);
    let block_size = ggml_type.layout().block_size;
    if ne0 % block_size != 0 {
        return Err(GgufError::RowNotBlockMultiple {
            tensor: name.to_owned(),
            ggml_type,
            ne0,
            block_size,
        });
    }
    ggml_type
        .tensor_size(dims)
        .ok_or_else(|| GgufError::TensorSizeOverflow {
            tensor: name.to_owned(),
            ggml_type,
            dims: dims.to_vec(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_shape_errors() {
        assert_eq!(
            checked_tensor_size("t", GgmlType::F32, &[3, 2]).ok(),
            Some(24)
        );
        assert_eq!(checked_tensor_size("t", GgmlType::F32, &[]).ok(), Some(4));
        assert_eq!(
            checked_tensor_size("t", GgmlType::Q8_0, &[64, 0]).ok(),
            Some(0)
        );
        assert!(matches!(
            checked_tensor_size("t", GgmlType::F32, &[1, 1, 1, 1, 1]),
            Err(GgufError::TooManyDims { n_dims: 5, .. })
        ));
        assert!(matches!(
            checked_tensor_size("t", GgmlType::F32, &[0, 1 << 63]),
            Err(GgufError::DimTooLarge { index: 1, .. })
        ));
        assert!(matches!(
            checked_tensor_size("t", GgmlType::F32, &[1 << 32, 1 << 31]),
            Err(GgufError::ElementCountOverflow { .. })
        ));
        assert!(matches!(
            checked_tensor_size("t", GgmlType::TQ2_0, &[100]),
            Err(GgufError::RowNotBlockMultiple {
                block_size: 256,
                ..
            })
        ));
        assert!(matches!(
            checked_tensor_size("t", GgmlType::F32, &[1 << 62]),
            Err(GgufError::TensorSizeOverflow { .. })
        ));
    }

    #[test]
    fn n_elements_saturates_on_hand_built_infos() {
        let mut info = TensorInfo {
            name: "t".into(),
            ggml_type: GgmlType::F32,
            dims: vec![],
            offset: 0,
            size: 4,
        };
        assert_eq!(info.n_elements(), 1);
        info.dims = vec![u64::MAX, 2];
        assert_eq!(info.n_elements(), u64::MAX);
    }
}
