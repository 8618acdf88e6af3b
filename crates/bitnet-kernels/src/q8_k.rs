//! Q8_K: int8 blocks of 256 with f32 scale and 16 partial sums (activations for TQ1_0/TQ2_0).
