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

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_DEPS): requirements-dev.txt | $(PY)
	$(PIP) install -q -r requirements-dev.txt
	touch $@

$(STAMP_BUILD): $(STAMP_DEPS) $(RUST_SRC)
	$(VENV)/bin/maturin develop --release -q
	touch $@

build: $(STAMP_BUILD) ## build the extension into .venv (release)

demo: $(STAMP_BUILD) ## run the main job on a built-in default and show the result
	$(PY) -m clipresc.demo

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

clean: ## remove build outputs and the virtual environment
	rm -rf target $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
