//! TQ2_0: 2-bit ternary, 66 bytes per 256 weights; multiplied against Q8_K.
