//! IQ2_BN: ik_llama.cpp's 2-bit ternary rows with an f32 row scale; multiplied against Q8_K64.
