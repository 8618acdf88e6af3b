//! The float operators of the graph, reproducing ggml-cpu's arithmetic bit for bit as
//! upstream llama.cpp's x86 AVX2+FMA build runs it (ggml `ggml-cpu/ops.cpp`, `vec.h`,
//! `vec.cpp`; FMA contractions read off the compiled objects, see each function).
//!
//! `f32::mul_add` is an exact fused multiply-add on every target, which is what the C
//! intrinsics (`_mm256_fmadd_ps`) and GCC's `-ffp-contract=fast` contractions compute.

use bitnet_kernels::cpu::with_fma;

/// `0x1.8p23`: adding it rounds to an integer (ggml's `ggml_v_expf`).
const EXP_R: f32 = f32::from_bits(0x4b40_0000);
/// `0x1.715476p+0` ≈ log2(e).
const EXP_LOG2E: f32 = f32::from_bits(0x3fb8_aa3b);
/// `0x1.62e4p-1` and `0x1.7f7d1cp-20`: ln 2 split in two for the Cody–Waite reduction.
const EXP_LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const EXP_LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
/// Polynomial coefficients of `ggml_v_expf`.
const EXP_C5: f32 = f32::from_bits(0x3c07_2010);
const EXP_C4: f32 = f32::from_bits(0x3d2b_9f17);
const EXP_C3: f32 = f32::from_bits(0x3e2a_af33);
const EXP_C2: f32 = f32::from_bits(0x3eff_fedb);
const EXP_C1: f32 = f32::from_bits(0x3f7f_fff6);

/// Lanes of ggml's AVX2 float vectors: element-wise vector loops (`ggml_vec_swiglu_f32`,
/// `ggml_vec_soft_max_f32`) run chunks of this many with the vector approximation and the
/// remainder with libm.
pub const SIMD_LANES: usize = 8;

/// One lane of ggml's AVX2 `ggml_v_expf` (ARM's `expf` approximation, ≤ 1.5 ulp): the
/// vector loops of softmax and SiLU use it, their scalar tails use libm `expf`.
#[inline]
pub fn v_expf(x: f32) -> f32 {
    let z = x.mul_add(EXP_LOG2E, EXP_R);
    let n = z - EXP_R;
    // _mm256_fnmadd_ps(a, b, c) = c - a·b, rounded once.
    let b = (-n).mul_add(EXP_LN2_LO, (-n).mul_add(EXP_LN2_HI, x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = EXP_C5
        .mul_add(b, EXP_C4)
        .mul_add(u, EXP_C3.mul_add(b, EXP_C2))
        .mul_add(u, EXP_C1 * b);
    // NaN compares false, as _CMP_GT_OQ / _CMP_LE_OQ do, so it takes the fast path.
    let big = n.abs() > 126.0;
    if !big {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// ggml's `ggml_v_silu` lane: `x / (1 + v_expf(0 - x))`.
#[inline]
fn v_silu(x: f32) -> f32 {
    x / (1.0 + v_expf(0.0 - x))
}

/// ggml's scalar `ggml_silu_f32`: `x / (1 + expf(-x))` with libm's `expf`.
#[inline]
fn silu_scalar(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `ggml_vec_swiglu_f32`: `out = silu(gate) · up`, vector approximation on whole chunks of
/// 8, libm on the tail. Shapes: gate, up, out: (n,).
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    with_fma(|| {
        let whole = gate.len() / SIMD_LANES * SIMD_LANES;
        for (i, ((o, &g), &u)) in out.iter_mut().zip(gate).zip(up).enumerate() {
            let s = if i < whole { v_silu(g) } else { silu_scalar(g) };
            *o = s * u;
        }
    })
}

/// bitnet-b1.58's squared-ReLU gate (`ggml_relu` then `ggml_sqr`, then `ggml_mul` by up):
/// `out = (max(g, 0))² · up`. Shapes: gate, up, out: (n,).
pub fn relu_sqr_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let r = if g > 0.0 { g } else { 0.0 };
        *o = (r * r) * u;
    }
}

/// How RMSNorm applies its scale and weight; the two C implementations round differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NormOrder {
    /// `(x · scale) · w`: `ggml_rms_norm` then `ggml_mul` (upstream llama.cpp, also its fused
    /// rms_norm·mul kernel, and bitnet.cpp).
    #[default]
    ScaleThenWeight,
    /// `(scale · w) · x`: ik_llama.cpp's `ggml_fused_rms_norm`.
    WeightScaleFirst,
}

/// RMSNorm with a weight, as ggml computes it: the squares are rounded to f32 and summed
/// in f64, `mean = (f32)(sum / n)`, `scale = 1 / sqrtf(mean + eps)`, then `order` decides
/// the two products. Shapes: x, w, out: (n,).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, order: NormOrder, out: &mut [f32]) {
    let sum = x.iter().fold(0.0f64, |s, &v| s + f64::from(v * v));
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    match order {
        NormOrder::ScaleThenWeight => {
            for ((o, &v), &wv) in out.iter_mut().zip(x).zip(w) {
                *o = (v * scale) * wv;
            }
        }
        NormOrder::WeightScaleFirst => {
            for ((o, &v), &wv) in out.iter_mut().zip(x).zip(w) {
                *o = (scale * wv) * v;
            }
        }
    }
}

/// The in-place part of `ggml_compute_forward_soft_max_f32` for one row whose entries past
/// `row.len()` are masked (−inf, hence exactly 0 after the exponential) up to a length
/// that is a multiple of [`SIMD_LANES`] — true of every attention row, whose KV length
/// ggml pads to 256. `row` holds the raw `k·q` products on entry and the probabilities on
/// exit:
/// `w = kq · scale`, `m = max(w)`, each chunk of 8 exponentiated with [`v_expf`] and
/// summed as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))` in f32, the chunk sums added in f64,
/// then every value multiplied by `(f32)(1 / sum)`.
pub fn softmax_scaled_row(row: &mut [f32], scale: f32) {
    with_fma(|| {
        let mut max = f32::NEG_INFINITY;
        for v in row.iter_mut() {
            *v *= scale;
            // C's MAX(a, b) = a > b ? a : b.
            max = if max > *v { max } else { *v };
        }
        let mut sum = 0.0f64;
        for chunk in row.chunks_mut(SIMD_LANES) {
            let mut l = [0.0f32; SIMD_LANES];
            for (lane, v) in l.iter_mut().zip(chunk.iter_mut()) {
                *v = v_expf(*v - max);
                *lane = *v;
            }
            let s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
            sum += f64::from(s);
        }
        let inv = (1.0 / sum) as f32;
        for v in row.iter_mut() {
            *v *= inv;
        }
    })
}

/// How F32 and F16 dot products (F32/F16 weights, attention with either KV type) are
/// computed; the references differ in both rounding and order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FloatDot {
    /// ggml's `vec_dot_f32` / `vec_dot_f16` in the order of the references' x86 AVX2 builds
    /// (`SumOrder::GgmlAvx2`: 4×8-lane FMA accumulators over steps of 32) on every ISA, the
    /// F32 operand of an F16 product first rounded to f16. Upstream llama.cpp and bitnet.cpp.
    #[default]
    Ggml,
    /// ik_llama.cpp's `iqk_mul_mat` float GEMM (`mul_mat_Qx_Qy_MxN`, AVX2): F16 widened to
    /// f32, the F32 operand kept as is, one 8-lane FMA accumulator
    /// (`bitnet_kernels::ik_float`).
    IkGemm,
}

/// How the Q8_K activation quantizer (for TQ1_0/TQ2_0 weights) rounds `iscale · x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Q8KRounding {
    /// `nearest_int` of the f32 product (upstream's `quantize_row_q8_K_ref`).
    #[default]
    Ref,
    /// The exact product rounded once: bitnet.cpp compiles ggml-quants.c with `-mfma`, and
    /// GCC contracts `iscale·x + 1.5·2²³` into one FMA (`quantize_row_q8_k_fma`).
    FmaContracted,
}

/// How RoPE pairs a head's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RopeStyle {
    /// GPT-J / LLaMA `GGML_ROPE_TYPE_NORMAL`: pairs (2i, 2i+1).
    Normal,
    /// GPT-NeoX `GGML_ROPE_TYPE_NEOX`: pairs (i, i + n_rot/2).
    Neox,
}

/// `ggml_rope_cache_init` for one position with no YaRN extrapolation (`ext_factor` 0,
/// `attn_factor` 1, no frequency factors): `theta` starts at the position as f32 and is
/// multiplied by `theta_scale = powf(base, -2/n_rot)` after every pair;
/// `cache[2i] = cosf(freq_scale·θᵢ)`, `cache[2i+1] = sinf(freq_scale·θᵢ)`.
/// Shape: cache: (n_rot,).
pub fn rope_cache(pos: usize, theta_scale: f32, freq_scale: f32, cache: &mut [f32]) {
    let mut theta = pos as f32;
    for pair in cache.chunks_exact_mut(2) {
        let t = freq_scale * theta;
        pair[0] = t.cos();
        pair[1] = t.sin();
        theta *= theta_scale;
    }
}

/// `rotate_pairs<float>` as GCC compiles it with FMA (two products rounded, two fused):
/// `y0 = fma(x0, cos, −(x1·sin))`, `y1 = fma(x0, sin, x1·cos)`. Rotates the first
/// `cache.len()` dimensions of one head in place. Shapes: head: (head_dim,), cache: (n_rot,).
pub fn rope_head(head: &mut [f32], cache: &[f32], style: RopeStyle) {
    with_fma(|| {
        let n_rot = cache.len();
        for (i, cs) in cache.chunks_exact(2).enumerate() {
            let (c, s) = (cs[0], cs[1]);
            let (a, b) = match style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + n_rot / 2),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0.mul_add(c, -(x1 * s));
            head[b] = x0.mul_add(s, x1 * c);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_expf_is_close_to_expf_and_handles_the_extremes() {
        for i in -2000..2000 {
            let x = i as f32 * 0.01;
            let (a, b) = (v_expf(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "{x}: {a} vs {b}");
        }
        assert_eq!(v_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(v_expf(-200.0), 0.0);
        assert_eq!(v_expf(0.0), 1.0);
        assert!(v_expf(100.0).is_infinite());
        assert!(v_expf(-100.0) > 0.0 && v_expf(-100.0) < 1e-40);
    }

    #[test]
    fn softmax_sums_to_one_and_ignores_the_scale_of_masked_tails() {
        let mut row = vec![1.0f32, 2.0, 3.0, 0.5, -1.0];
        softmax_scaled_row(&mut row, 0.5);
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!(row[2] > row[1] && row[1] > row[0]);
    }

    #[test]
    fn rms_norm_of_a_constant_row_is_the_weight() {
        let x = [2.0f32; 16];
        let w: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let mut y = [0.0f32; 16];
        rms_norm(&x, &w, 0.0, NormOrder::ScaleThenWeight, &mut y);
        assert_eq!(y.to_vec(), w);
    }

    #[test]
    fn rope_position_zero_is_the_identity() {
        let mut cache = [0.0f32; 8];
        rope_cache(0, 10000f32.powf(-2.0 / 8.0), 1.0, &mut cache);
        let mut h: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let orig = h.clone();
        rope_head(&mut h, &cache, RopeStyle::Neox);
        assert_eq!(h, orig);
        rope_head(&mut h, &cache, RopeStyle::Normal);
        assert_eq!(h, orig);
    }

    #[test]
    fn norm_orders_agree_to_rounding() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..64)
            .map(|i| 1.0 + (i as f32 * 0.11).cos() * 0.1)
            .collect();
        let (mut a, mut b) = (vec![0.0; 64], vec![0.0; 64]);
        rms_norm(&x, &w, 1e-5, NormOrder::ScaleThenWeight, &mut a);
        rms_norm(&x, &w, 1e-5, NormOrder::WeightScaleFirst, &mut b);
        for (p, q) in a.iter().zip(&b) {
            assert!(
                (p - q).abs() <= 2.0 * f32::EPSILON * p.abs().max(1e-30),
                "{p} {q}"
            );
        }
    }

    #[test]
    fn swiglu_uses_the_vector_path_on_whole_chunks_only() {
        let g: Vec<f32> = (0..11).map(|i| i as f32 * 0.3 - 1.5).collect();
        let u = vec![1.0f32; 11];
        let mut o = vec![0.0f32; 11];
        swiglu(&g, &u, &mut o);
        for (i, (&x, &y)) in g.iter().zip(&o).enumerate() {
            let want = if i < 8 { v_silu(x) } else { silu_scalar(x) };
            assert_eq!(y, want);
            assert!((y - x / (1.0 + (-x).exp())).abs() < 1e-6);
        }
    }
}
