# Passed to ik_llama.cpp's CMake through CMAKE_TOOLCHAIN_FILE (see .cargo/config.toml).
# CMake reads this during project(), before ggml's option() calls, so FORCEd cache
# entries here win over the crate's -D defines.
#
# Only the host compiler is used: no CMAKE_SYSTEM_NAME, so this is not a cross build.

# The AVX2 family explicitly, never -march=native: the reference must run the kernels
# users run on this CPU class, and the binary must not depend on the build machine.
set(GGML_NATIVE OFF CACHE BOOL "" FORCE)
set(GGML_AVX    ON  CACHE BOOL "" FORCE)
set(GGML_AVX2   ON  CACHE BOOL "" FORCE)
set(GGML_FMA    ON  CACHE BOOL "" FORCE)
set(GGML_F16C   ON  CACHE BOOL "" FORCE)

# Threads come from the context's n_threads only (determinism, thread control).
set(GGML_OPENMP OFF CACHE BOOL "" FORCE)

# Flash attention is off at run time anyway; compiling its kernels for every K/V quant
# pair multiplies the build time on two cores.
set(GGML_IQK_FA_ALL_QUANTS OFF CACHE BOOL "" FORCE)
