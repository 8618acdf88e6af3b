# The defaults build of Microsoft bitnet.cpp (`make refs-defaults`): what a user gets from
# its CMake defaults on this machine. Passed through CMAKE_TOOLCHAIN_FILE; CMake reads it
# during project(), so FORCEd entries win over the crate's -D defines.
#
# Only the host compiler is used: no CMAKE_SYSTEM_NAME, so this is not a cross build.

# As in toolchain.cmake: the crate's BITNET_X86_TL2=ON does not compile on x86 (the LUT
# header it ships is ARM TL1's), so I2_S runs the MAD kernels, as x86 I2_S models do.
set(BITNET_X86_TL2 OFF CACHE BOOL "" FORCE)

# ggml's defaults when not cross compiling: -march=native, OpenMP threads (the runner's
# `defaults-build` feature turns on the crate's `openmp`, which links libgomp), llamafile's
# tinyBLAS sgemm. The binary runs only on this CPU's ISA (the Makefile rebuilds it when
# /proc/cpuinfo's flags change).
set(GGML_NATIVE    ON CACHE BOOL "" FORCE)
set(GGML_OPENMP    ON CACHE BOOL "" FORCE)
set(GGML_LLAMAFILE ON CACHE BOOL "" FORCE)
