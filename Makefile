# Two-command quick start: `make demo` and `make test` (see README.md).
# Both create .venv with the CPU PyTorch wheel first, then install this project into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo test lint bench check-torchvision clean

# The CPU torch wheel goes in first: a bare `torch` requirement would otherwise pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -qq -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/centernet run configs/demo.yaml

test: setup
	bash scripts/run_tests.sh

lint: setup
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python benchmarks/encode.py

# Optional: run the DCN tests beside torchvision's compiled deform_conv2d, in a separate venv
# (torchvision from PyPI does not import beside the CPU torch wheel; this pair does, ~5.5 GB).
TV_VENV ?= .venv-torchvision
check-torchvision:
	test -x $(TV_VENV)/bin/python || $(PYTHON) -m venv $(TV_VENV)
	$(TV_VENV)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 numpy pytest opencv-python-headless pycocotools
	PYTHONPATH=. $(TV_VENV)/bin/python -m pytest -p no:cacheprovider -o addopts="" tests/unit/test_deform_conv.py -rs

clean:
	rm -rf $(VENV) demo_output mlruns mlruns.db mlartifacts ray_results .pytest_cache
