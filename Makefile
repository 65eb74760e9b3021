# Two entry points, both from a fresh clone:
#   make demo   install everything and run the benchmark on the embedded demo clip
#   make test   install the dev extras and run the whole test suite
# The virtual environment lives in .venv; torch is pinned by constraints.txt (the CPU wheel here).

VENV ?= .venv
PYTHON ?= python3
PIP := $(VENV)/bin/python -m pip
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test install install-dev benchmarks gpu-check clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) "torch==2.13.0"
	$(PIP) install $(PIP_FLAGS) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install $(PIP_FLAGS) -e ".[dev,ray]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/bench run --methods all --dataset demo

test: $(VENV)/.installed-dev
	$(VENV)/bin/python -m pytest

benchmarks: $(VENV)/.installed-dev
	$(VENV)/bin/python -m pytest tests/benchmarks --benchmark-only --benchmark-columns=min,mean,median,ops

# Where a CUDA device exists: the demo end to end with --device cuda plus the CUDA tests, as one
# table (phase times, fps per method, precision per component); says so and stops without one.
gpu-check: $(VENV)/.installed-dev
	$(VENV)/bin/python scripts/gpu_check.py

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
