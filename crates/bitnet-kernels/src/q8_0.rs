//! Q8_0: int8 blocks of 32 with an f16 scale (weights, and activations for Q4_0/Q8_0).
