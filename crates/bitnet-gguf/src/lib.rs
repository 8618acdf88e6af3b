//! GGUF v2/v3 container: a hostile-input-safe, zero-copy mmap reader and a writer.

mod types;

pub use types::{GgmlType, TypeLayout};
