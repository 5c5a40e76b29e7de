# clipresc developer commands. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export VIRTUAL_ENV := $(abspath $(VENV))
STAMP_DEPS := $(VENV)/.deps-stamp
STAMP_BUILD := $(VENV)/.build-stamp
RUST_SRC := $(shell find rust -name '*.rs' -o -name Cargo.toml) Cargo.toml pyproject.toml

.PHONY: help demo test test-rust test-python lint fmt bench build clean
.PHONY: bench-frameworks
.PHONY: bench-gpu
.PHONY: bench-noise bench-cli

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_DEPS): requirements-dev.txt tests/gpu/requirements.txt | $(PY)
	$(PIP) install -q -r requirements-dev.txt -r tests/gpu/requirements.txt
	touch $@

$(STAMP_BUILD): $(STAMP_DEPS) $(RUST_SRC)
	$(VENV)/bin/maturin develop --release -q
	touch $@

build: $(STAMP_BUILD) ## build the extension into .venv (release)

demo: $(STAMP_BUILD) ## run the main job on a built-in default and show the result (and a PNG)
	$(PY) -m clipresc.cli demo --out clipresc-demo.png

test: lint test-rust test-python ## the whole suite: lint, cargo test, pytest

test-rust: ## cargo tests of the core
	cargo test --release -p clipresc-core -q

test-python: $(STAMP_BUILD) ## pytest (doctests included)
	$(PY) -m pytest -q -p no:cacheprovider tests --doctest-modules python/clipresc

lint: $(STAMP_DEPS) ## ruff, mypy, cargo fmt --check, clippy -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(VENV)/bin/mypy
	cargo fmt --all -- --check
	cargo clippy --all-targets -q -- -D warnings

fmt: $(STAMP_DEPS) ## format Rust and Python
	cargo fmt --all
	$(VENV)/bin/ruff format python tests benches
	$(VENV)/bin/ruff check --fix python tests benches

bench: $(STAMP_BUILD) ## core benchmark: medians and ratios against the memory floor
	$(PY) benches/bench_core.py

bench-frameworks: $(STAMP_BUILD) ## torch / jax integration: per-call overhead and throughput
	$(PY) benches/bench_frameworks.py

bench-gpu: $(STAMP_BUILD) ## CuPy kernels vs CuPy x + d and the Rust core (needs a CUDA device)
	$(PY) benches/bench_gpu.py

bench-noise: $(STAMP_BUILD) ## clipresc.noise vs the memory floor at 64x3x224x224 float32
	$(PY) benches/bench_noise.py

bench-cli: $(STAMP_BUILD) ## the clipresc CLI on a 2 GiB file: throughput and peak RSS
	$(PY) benches/bench_cli.py

clean: ## remove build outputs and the virtual environment
	rm -rf target $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
