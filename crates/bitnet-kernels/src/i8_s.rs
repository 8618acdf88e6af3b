//! I8_S: bitnet.cpp's per-row int8 activation format for I2_S.
