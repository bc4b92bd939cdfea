# Two-command quick start: `make demo` and `make test` (see README.md).
# Both create .venv with the CPU PyTorch wheel first, then install this project into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU wheel first: a bare `torch` requirement would otherwise pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/centernet demo --out demo_output

test: setup
	bash scripts/run_tests.sh

lint: setup
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python benchmarks/encode.py

clean:
	rm -rf $(VENV) demo_output mlruns mlruns.db .pytest_cache
