//! Q4_1: 4-bit blocks of 32 with f16 scale and min; multiplied against Q8_1.
