//! Reading tensors: the one thing the definition shares with the engine's crates. Each
//! format is expanded by `bitnet-kernels`' scalar dequantizer (`dequantize_row_*`, the
//! oracles its fast kernels are tested against) into f32. Every value those produce is
//! exactly representable in f32 (ternary code × f16 or f32 scale, int8 × f16 scale; Q4_1's
//! `d·q + m` is rounded to f32 by ggml's own dequantizer too), so widening to f64 later
//! loses nothing.

use bitnet_gguf::{GgmlType, GgufFile, TensorInfo};
use bitnet_kernels::i2_s::I2sTensor;
use bitnet_kernels::iq2_bn::{iq2_bn_row_size, Iq2BnRow};
use bitnet_kernels::{q4_1, q8_0, tq1_0, tq2_0};
use half::f16;

use super::DefinitionError;

/// A matrix of `rows` rows of `cols` weights, row-major: row `r` is output `r` of a linear
/// layer (ggml's `dims = [cols, rows]`). Shape: data: (rows, cols).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    /// Row `r`: (cols,).
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// `W · x` for every token, in f64. Rows are the outer loop so that each is read from
    /// memory once for all tokens (the tied head is 65M weights). Shapes: xs: (n_tok, cols)
    /// → (n_tok, rows).
    pub fn mul_all(&self, xs: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let mut out = vec![vec![0.0f64; self.rows]; xs.len()];
        for (r, w) in self.data.chunks_exact(self.cols).enumerate() {
            for (o, x) in out.iter_mut().zip(xs) {
                o[r] = dot(w, x);
            }
        }
        out
    }
}

/// `Σ w[i]·x[i]` in f64, with four partial sums (the order does not matter at f64's
/// precision for the widths here, and four sums let the compiler vectorise).
fn dot(w: &[f32], x: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    let (wc, xc) = (w.chunks_exact(4), x.chunks_exact(4));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        s[0] += f64::from(a[0]) * b[0];
        s[1] += f64::from(a[1]) * b[1];
        s[2] += f64::from(a[2]) * b[2];
        s[3] += f64::from(a[3]) * b[3];
    }
    let tail: f64 = wr.iter().zip(xr).map(|(&a, &b)| f64::from(a) * b).sum();
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// The tensor `name`, which must have exactly `dims` (ggml order).
pub(super) fn info<'f>(
    file: &'f GgufFile,
    name: &str,
    dims: &[usize],
) -> Result<&'f TensorInfo, DefinitionError> {
    let info = file
        .tensor(name)
        .ok_or_else(|| DefinitionError::MissingTensor {
            name: name.to_owned(),
        })?;
    let want: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    if info.dims != want {
        return Err(DefinitionError::Shape {
            tensor: name.to_owned(),
            expected: want,
            found: info.dims.clone(),
        });
    }
    Ok(info)
}

/// A linear weight `name` of `rows` outputs and `cols` inputs.
pub(super) fn matrix(
    file: &GgufFile,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<Matrix, DefinitionError> {
    let info = info(file, name, &[cols, rows])?;
    Ok(Matrix {
        rows,
        cols,
        data: dequantize(file, info, rows, cols)?,
    })
}

/// A vector (norm weight, `{1}`-shaped `.scale`) of `n` values, widened to f64.
pub(super) fn vector(file: &GgufFile, name: &str, n: usize) -> Result<Vec<f64>, DefinitionError> {
    let info = info(file, name, &[n])?;
    Ok(dequantize(file, info, 1, n)?
        .into_iter()
        .map(f64::from)
        .collect())
}

/// Expands a tensor of `rows` rows of `cols` values to f32, refusing non-finite values.
/// Shape of the result: (rows, cols).
fn dequantize(
    file: &GgufFile,
    info: &TensorInfo,
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>, DefinitionError> {
    let bytes = file.tensor_data(info);
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| DefinitionError::Shape {
            tensor: info.name.clone(),
            expected: vec![cols as u64, rows as u64],
            found: info.dims.clone(),
        })?;
    let kernel = |source| DefinitionError::Dequantize {
        tensor: info.name.clone(),
        source,
    };
    let mut out = vec![0.0f32; n];
    match info.ggml_type {
        GgmlType::F32 => out = elements(info, bytes, n)?,
        GgmlType::F16 => {
            let v: Vec<f16> = elements(info, bytes, n)?;
            out = v.into_iter().map(f16::to_f32).collect();
        }
        GgmlType::Q8_0 => {
            q8_0::dequantize_row_q8_0(&blocks(info, bytes)?, &mut out).map_err(kernel)?
        }
        GgmlType::Q4_1 => {
            q4_1::dequantize_row_q4_1(&blocks(info, bytes)?, &mut out).map_err(kernel)?
        }
        GgmlType::TQ1_0 => {
            tq1_0::dequantize_row_tq1_0(&blocks(info, bytes)?, &mut out).map_err(kernel)?
        }
        GgmlType::TQ2_0 => {
            tq2_0::dequantize_row_tq2_0(&blocks(info, bytes)?, &mut out).map_err(kernel)?
        }
        GgmlType::I2_S => I2sTensor::from_bytes(bytes, cols, rows)
            .and_then(|t| t.dequantize(&mut out))
            .map_err(kernel)?,
        GgmlType::IQ2_BN => {
            let row_bytes = iq2_bn_row_size(cols).map_err(kernel)?;
            // (rows) × (4-byte scale + cols/4 code bytes).
            if bytes.len() != rows * row_bytes {
                return Err(DefinitionError::Size {
                    tensor: info.name.clone(),
                    expected: rows * row_bytes,
                    found: bytes.len(),
                });
            }
            for (src, dst) in bytes
                .chunks_exact(row_bytes)
                .zip(out.chunks_exact_mut(cols))
            {
                let row = Iq2BnRow::from_bytes(src, cols).map_err(kernel)?;
                bitnet_kernels::iq2_bn::dequantize_row_iq2_bn(&row, dst).map_err(kernel)?;
            }
        }
        other => {
            return Err(DefinitionError::UnsupportedType {
                tensor: info.name.clone(),
                ggml_type: other,
            })
        }
    }
    if let Some(index) = out.iter().position(|x| !x.is_finite()) {
        return Err(DefinitionError::NonFiniteWeight {
            tensor: info.name.clone(),
            index,
        });
    }
    Ok(out)
}

/// The tensor's bytes as exactly `n` plain elements.
fn elements<T: bytemuck::Pod>(
    info: &TensorInfo,
    bytes: &[u8],
    n: usize,
) -> Result<Vec<T>, DefinitionError> {
    let expected = n.saturating_mul(std::mem::size_of::<T>());
    if bytes.len() != expected {
        return Err(DefinitionError::Size {
            tensor: info.name.clone(),
            expected,
            found: bytes.len(),
        });
    }
    blocks(info, bytes)
}

/// The tensor's bytes as `T`s (copied: mapped data need not be aligned for `T`). The
/// dequantizers check the block count against the output length.
fn blocks<T: bytemuck::Pod>(info: &TensorInfo, bytes: &[u8]) -> Result<Vec<T>, DefinitionError> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size) {
        return Err(DefinitionError::Size {
            tensor: info.name.clone(),
            expected: bytes.len() / size * size,
            found: bytes.len(),
        });
    }
    let mut out = vec![T::zeroed(); bytes.len() / size];
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
    Ok(out)
}
