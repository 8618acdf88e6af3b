//! Q8_K64: ik_llama.cpp's per-row int8 activation format for IQ*_BN.
