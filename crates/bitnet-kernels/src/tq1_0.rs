//! TQ1_0: base-3 packed ternary, 54 bytes per 256 weights; multiplied against Q8_K.
