# Med-DualLoRA kit. `make demo` and `make test` set up what they need themselves.
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed before the project so pip never pulls a multi-GB CUDA build on CPU machines.
# GPU users: `make setup TORCH_SPEC="torch"` (or your CUDA wheel).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.setup-stamp
# pytest workers under `make test`: one more than 2 cores, because the Flower and browser tests
# spend much of their time waiting on other processes (a clean-clone CI used 1.44 of 2 cores
# with 2 workers)
JOBS ?= 3

.PHONY: setup browser demo test lint clean bench notebooks benchmark

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	@# pip compiles the bytecode on one core; compileall uses them all (a fresh setup: 137 s ->
	@# about 105 s on 2 cores). It leaves out the dependencies' own test suites and transformers'
	@# model zoo (PEFT imports transformers; the kit loads about 15 of its 2,600 model files,
	@# which compile on first import): 63 s -> 40 s on 2 cores. pip ignores files that do not
	@# compile (torch ships a few with newer syntax), so do we: quiet, and the exit status is
	@# not an error.
	@$(PY) -m compileall -q -j 0 -x '[/\\](tests?|transformers[/\\]models)[/\\]' \
	  "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null || true
	@touch $(STAMP)

# The browser test drives Debian's Chromium; installed here when missing (as root or via sudo).
browser:
	@bash tools/ensure_chromium.sh

demo: setup
	$(PY) -m duallora demo

# Two lanes side by side on the machine's cores: pytest (JOBS xdist workers; a file's tests share
# one worker, so module fixtures such as the Flower run are built once; files go out longest
# first, in tests/conftest.py's order, which --no-loadscope-reorder keeps) and the quick
# notebooks, which run in a fresh scratch folder (they neither overwrite the reports/ of
# `make demo` nor reuse data/ left by earlier runs; the folder is kept when a notebook fails).
# Every process runs one OpenMP thread and the notebooks train their runs one at a time
# (DUALLORA_JOBS=1), so the lanes share the cores instead of fighting over
# them. Both lanes keep the benchmark's cohorts and runs in one folder of the scratch folder
# (DUALLORA_BENCHMARK_DATA): the `test` plan's cohorts and runs are built once, for
# tests/test_benchmark.py and notebook 04 (whose runs are a subset) alike; a file lock lets the
# lanes take turns. Ctrl-C (or SIGTERM) stops both lanes.
test: setup browser
	@scratch=$$(mktemp -d "$${TMPDIR:-/tmp}/duallora-test.XXXXXX") || exit 1; \
	export OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} DUALLORA_JOBS=$${DUALLORA_JOBS:-1} \
	  DUALLORA_BENCHMARK_DATA="$$scratch/benchmark-data"; \
	echo "quick notebooks -> $$scratch (log: $$scratch/notebooks.log), beside pytest"; \
	setsid $(PY) -m duallora notebooks --quick --out "$$scratch/reports" --data "$$scratch/data" \
	  > "$$scratch/notebooks.log" 2>&1 < /dev/null & lane=$$!; \
	trap 'kill -TERM -- -'$$lane' 2>/dev/null; exit 130' INT TERM; \
	$(PY) -m pytest -n $(JOBS) --dist loadfile --no-loadscope-reorder; tests=$$?; \
	echo "pytest done; waiting for the quick notebooks ..."; wait $$lane; notebooks=$$?; \
	cat "$$scratch/notebooks.log"; \
	if [ $$notebooks -eq 0 ]; then rm -rf "$$scratch"; \
	else echo "notebooks failed; outputs kept in $$scratch" >&2; fi; \
	if [ $$tests -ne 0 ] || [ $$notebooks -ne 0 ]; then exit 1; fi

notebooks: setup
	$(PY) -m duallora notebooks

# Measures, then replaces the measured block of docs/PERFORMANCE.md (BENCH_ARGS="--quick" etc.).
bench: setup
	$(PY) perf/run.py --update-docs $(BENCH_ARGS)

# The pre-declared benchmark (H1-H3): PLAN=demo (default), full (CPU overnight) or paper (GPU).
PLAN ?= demo
benchmark: setup
	$(PY) -m duallora benchmark --plan $(PLAN) $(BENCHMARK_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf reports runs data .pytest_cache .ruff_cache build *.egg-info
