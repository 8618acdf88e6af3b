# Passed to bitnet.cpp's CMake through CMAKE_TOOLCHAIN_FILE (see .cargo/config.toml).
# CMake reads this during project(), before the option() calls, so FORCEd cache entries
# here win over the crate's -D defines.
#
# Only the host compiler is used: no CMAKE_SYSTEM_NAME, so this is not a cross build.

# The crate passes -DBITNET_X86_TL2=ON on x86_64, but the LUT kernel header it ships was
# generated for ARM TL1 and does not compile for x86. Without TL2, I2_S runs the MAD
# kernels (ggml-bitnet-mad.cpp), which is what the x86 I2_S models use.
set(BITNET_X86_TL2 OFF CACHE BOOL "" FORCE)

# The AVX2 family explicitly, never -march=native (ggml's default when not cross
# compiling): the reference must run the kernels users run on this CPU class, and the
# binary must not depend on the build machine.
set(GGML_NATIVE OFF CACHE BOOL "" FORCE)
set(GGML_AVX    ON  CACHE BOOL "" FORCE)
set(GGML_AVX2   ON  CACHE BOOL "" FORCE)
set(GGML_FMA    ON  CACHE BOOL "" FORCE)
set(GGML_F16C   ON  CACHE BOOL "" FORCE)

# Threads come from the context's n_threads only (determinism, thread control).
set(GGML_OPENMP OFF CACHE BOOL "" FORCE)

# llamafile's tinyBLAS sgemm would take over batched F32/F16/Q8_0/Q4_0 matmuls (the F16
# tied output head of the 2B-4T model among them) with its own summation order; off,
# every matmul runs ggml's vec_dot kernels, as in the upstream llama.cpp runner.
set(GGML_LLAMAFILE OFF CACHE BOOL "" FORCE)
