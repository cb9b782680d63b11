# Med-DualLoRA kit. `make demo` and `make test` set up what they need themselves.
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed before the project so pip never pulls a multi-GB CUDA build on CPU machines.
# GPU users: `make setup TORCH_SPEC="torch"` (or your CUDA wheel).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.setup-stamp
JOBS ?= 2

.PHONY: setup demo test lint clean bench notebooks benchmark

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: setup
	$(PY) -m duallora demo

# The quick notebooks run in a fresh scratch folder: they neither overwrite the reports/ of
# `make demo` nor reuse data/ left by earlier runs (the folder is kept when a notebook fails).
test: setup
	$(PY) -m pytest
	@scratch=$$(mktemp -d "$${TMPDIR:-/tmp}/duallora-test.XXXXXX") && \
	echo "quick notebooks -> $$scratch" && \
	if $(PY) -m duallora notebooks --quick --out "$$scratch/reports" --data "$$scratch/data"; \
	then rm -rf "$$scratch"; \
	else echo "notebooks failed; outputs kept in $$scratch" >&2; exit 1; fi

notebooks: setup
	$(PY) -m duallora notebooks

bench: setup
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# The pre-declared benchmark (H1-H3): PLAN=demo (default), full (CPU overnight) or paper (GPU).
PLAN ?= demo
benchmark: setup
	$(PY) -m duallora benchmark --plan $(PLAN) $(BENCHMARK_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf reports runs data .pytest_cache .ruff_cache build *.egg-info
