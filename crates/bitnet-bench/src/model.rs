//! How many bytes a decoded token streams from memory.

use bitnet_gguf::GgufFile;

use crate::BenchError;

/// The token embedding; without [`OUTPUT_HEAD`] it is also the (tied) output head.
pub const TOKEN_EMBD: &str = "token_embd.weight";
/// A separate output head.
pub const OUTPUT_HEAD: &str = "output.weight";

/// Tensor data of a GGUF, as decode reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightBytes {
    /// Sum of every tensor's data (each tensor once).
    pub total: u64,
    /// `token_embd.weight`'s data.
    pub token_embd: u64,
    /// No `output.weight`: the head multiplies by `token_embd`, reading all of it.
    pub tied_head: bool,
}

impl WeightBytes {
    pub fn from_gguf(file: &GgufFile) -> Result<WeightBytes, BenchError> {
        let token_embd = file
            .tensor(TOKEN_EMBD)
            .ok_or(BenchError::MissingTensor { name: TOKEN_EMBD })?
            .size;
        Ok(WeightBytes {
            total: file.tensors().iter().map(|t| t.size).sum(),
            token_embd,
            tied_head: file.tensor(OUTPUT_HEAD).is_none(),
        })
    }

    /// Bytes one decode step reads: every matrix and norm once, and `token_embd` once when
    /// it is the tied head (read whole by the head; the embedding lookup's one row is
    /// negligible). Engines that count the tied head twice (ik_llama.cpp's reported size)
    /// overstate this by a whole `token_embd`. With a separate head, only a row of
    /// `token_embd` is read, so it is left out.
    pub fn per_token(&self) -> u64 {
        if self.tied_head {
            self.total
        } else {
            self.total - self.token_embd
        }
    }
}

/// Decode tokens per second that memory bandwidth allows: each step streams
/// `bytes_per_token` at `gb_per_s` (10^9 bytes per second).
pub fn decode_limit(gb_per_s: f64, bytes_per_token: u64) -> f64 {
    if bytes_per_token == 0 {
        return f64::INFINITY;
    }
    gb_per_s * 1e9 / bytes_per_token as f64
}

#[cfg(test)]
mod tests {
    use bitnet_gguf::{GgmlType, GgufWriter};

    use super::*;

    /// A two-layer-ish file: F16 embedding of 16 × 32, one TQ2_0 matrix of 256 × 2, an F32
    /// norm of 32, and optionally an F16 head of the embedding's shape.
    fn file(untied: bool) -> GgufFile {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", "bitnet").unwrap();
        w.add_tensor_owned(TOKEN_EMBD, GgmlType::F16, &[32, 16], vec![0; 32 * 16 * 2])
            .unwrap();
        w.add_tensor_owned(
            "blk.0.attn_q.weight",
            GgmlType::TQ2_0,
            &[256, 2],
            vec![0; 2 * 66],
        )
        .unwrap();
        w.add_tensor_owned("output_norm.weight", GgmlType::F32, &[32], vec![0; 128])
            .unwrap();
        if untied {
            w.add_tensor_owned(OUTPUT_HEAD, GgmlType::F16, &[32, 16], vec![0; 1024])
                .unwrap();
        }
        GgufFile::from_bytes(w.to_bytes()).unwrap()
    }

    #[test]
    fn a_tied_head_counts_the_embedding_once() {
        let b = WeightBytes::from_gguf(&file(false)).unwrap();
        assert_eq!(
            b,
            WeightBytes {
                total: 1024 + 132 + 128,
                token_embd: 1024,
                tied_head: true,
            }
        );
        assert_eq!(b.per_token(), 1284);
    }

    #[test]
    fn a_separate_head_leaves_the_embedding_out() {
        let b = WeightBytes::from_gguf(&file(true)).unwrap();
        assert_eq!((b.total, b.tied_head), (1024 + 132 + 128 + 1024, false));
        assert_eq!(b.per_token(), 132 + 128 + 1024);
    }

    #[test]
    fn a_file_without_an_embedding_is_an_error() {
        let mut w = GgufWriter::new();
        w.add_tensor_owned("output_norm.weight", GgmlType::F32, &[4], vec![0; 16])
            .unwrap();
        let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
        assert!(matches!(
            WeightBytes::from_gguf(&f),
            Err(BenchError::MissingTensor { name: TOKEN_EMBD })
        ));
    }

    #[test]
    fn the_decode_limit_is_bandwidth_over_bytes() {
        // docs/DESIGN.md §9: 11.9 GB/s over ~1.19 GB per token.
        assert!((decode_limit(11.9, 1_190_000_000) - 10.0).abs() < 1e-9);
        assert_eq!(decode_limit(1.0, 0), f64::INFINITY);
    }
}
