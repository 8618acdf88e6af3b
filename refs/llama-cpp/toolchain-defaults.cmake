# The defaults build of upstream llama.cpp (`make refs-defaults`): what a user gets from
# `cmake -B build && cmake --build build` on this machine. Passed through
# CMAKE_TOOLCHAIN_FILE; CMake reads it during project(), so FORCEd entries win over the
# crate's -D defines (llama-cpp-sys-2 turns GGML_NATIVE off unless rustc targets native).
#
# Only the host compiler is used: no CMAKE_SYSTEM_NAME, so this is not a cross build.

# ggml's defaults when not cross compiling: -march=native, OpenMP threads, llamafile's
# tinyBLAS sgemm for F32/F16/Q8_0 matmuls. The binary runs only on this CPU's ISA
# (the Makefile rebuilds it when /proc/cpuinfo's flags change).
set(GGML_NATIVE    ON CACHE BOOL "" FORCE)
set(GGML_OPENMP    ON CACHE BOOL "" FORCE)
set(GGML_LLAMAFILE ON CACHE BOOL "" FORCE)
