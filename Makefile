# `make setup` builds .venv (CPU PyTorch unless TORCH_SPEC says otherwise); `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: setup test
setup:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	# DeepSpeed's setup.py imports torch, so it must build against the torch just installed.
	$(PY) -m pip install --quiet --no-build-isolation "deepspeed>=0.15"
	$(PY) -m pip install --quiet -e ".[dev]"

test:
	$(PY) -m pytest -q
