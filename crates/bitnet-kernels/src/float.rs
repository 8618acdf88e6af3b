//! F32, F16 and BF16 element formats and their dot products.
