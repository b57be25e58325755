# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing (torch first, from the release this machine carries on disk).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tokcomp-installed
ARCH   := $(shell uname -m)

# x86_64: torch 2.14.1 + torchvision 0.29.1 (on the development machines' disk; PyPI's torchvision
# does not load beside the smaller 2.13.0+cpu file). aarch64: the CPU build 2.9.1 + 0.24.1.
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif

PYTEST_ARGS ?=

.PHONY: venv demo test test-all bench clean-artifacts

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tokcomp_edge.demo

test: $(STAMP)
	$(PY) -m pytest -m "not tensorrt" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not tensorrt" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean-artifacts:
	find export engines calibration -mindepth 1 ! -name README.md -exec rm -rf {} +
