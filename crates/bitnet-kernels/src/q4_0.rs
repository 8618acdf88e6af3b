//! Q4_0: 4-bit blocks of 32 with an f16 scale; multiplied against Q8_0.
