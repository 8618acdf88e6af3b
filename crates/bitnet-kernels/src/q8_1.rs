//! Q8_1: int8 blocks of 32 with f16 scale and scaled sum (activations for Q4_1).
