use bitnet_gguf::GgmlType;

/// Errors from the format and kernel entry points. Every variant names the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A row or vector length is not a whole number of the format's blocks.
    #[error("{format}: length {len} is not a multiple of the block size {block}")]
    NotBlockMultiple {
        format: GgmlType,
        len: usize,
        block: usize,
    },
    /// Two buffers that must describe the same number of elements do not.
    #[error("{format}: {what} has {got} elements/blocks/bytes, expected {expected}")]
    LengthMismatch {
        format: GgmlType,
        what: &'static str,
        got: usize,
        expected: usize,
    },
    /// A format-specific precondition (e.g. IQ2_BN/Q8_K64 need K >= 512).
    #[error("{format}: {reason}")]
    Unsupported {
        format: GgmlType,
        reason: &'static str,
    },
}
