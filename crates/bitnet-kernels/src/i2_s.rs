//! I2_S: bitnet.cpp's 2-bit ternary tensor format (x86 layout); multiplied against I8_S.
