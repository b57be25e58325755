# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing (torch first, from the release this machine carries on disk), with
# every extra the workstation side needs: [export] (torch, transformers, timm, ModelOpt — which brings the
# ONNX Runtime build for this platform) and [test]. No [ort]/[ort-gpu] on top: one onnxruntime module only.
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

.PHONY: venv browser demo test test-all fuzz bench clean-artifacts

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[export,test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tokcomp_edge.demo

# The report's screenshot test needs headless Chromium (Debian's package). Installed when apt-get can
# (CI runs as root); elsewhere the `browser` tests skip with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the report screenshot test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	      echo "chromium could not be installed: the browser tests will be skipped"; \
	  else echo "chromium not found and cannot be installed here: the browser tests will be skipped"; fi; }

# `make test` (the README's test command, what CI runs) leaves out the `slow` tests — the full-size exports,
# the larger ToMe grids and the slow runtime families — to stay near 20 minutes on 2 cores; `make test-all`
# runs everything (about 29 minutes there).
test: $(STAMP) browser
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The fuzz tests (tests/fuzz, Hypothesis) with the `fuzz` profile: random, not derandomized, 25x the cases
# `make test` runs. A failure prints the case and a @reproduce_failure line to replay it.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/fuzz $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean-artifacts:
	find export engines calibration -mindepth 1 ! -name README.md -exec rm -rf {} +
