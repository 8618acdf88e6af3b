# The defaults build of ik_llama.cpp (`make refs-defaults`): what a user gets from
# `cmake -B build && cmake --build build` on this machine. Passed through
# CMAKE_TOOLCHAIN_FILE; CMake reads it during project(), so FORCEd entries win over the
# crate's -D defines. The crate's `native` and `openmp` features (turned on by the
# runner's `defaults-build` feature) set the same two and link libgomp.
#
# Only the host compiler is used: no CMAKE_SYSTEM_NAME, so this is not a cross build.

# ggml's defaults when not cross compiling: -march=native and OpenMP threads. The binary
# runs only on this CPU's ISA (the Makefile rebuilds it when /proc/cpuinfo's flags change).
# IQK matmuls and IQK flash attention are on by default and stay on.
set(GGML_NATIVE ON CACHE BOOL "" FORCE)
set(GGML_OPENMP ON CACHE BOOL "" FORCE)

# The one departure from the defaults, for build time: flash-attention kernels for every
# quantized K/V pair. The defaults axis runs F16 K/V (the context default), whose kernels
# are built either way; compiling all pairs multiplies the build time on two cores.
set(GGML_IQK_FA_ALL_QUANTS OFF CACHE BOOL "" FORCE)
