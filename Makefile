# `make setup` builds .venv (CPU PyTorch unless TORCH_SPEC says otherwise); `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEEPSPEED_SPEC ?= deepspeed==0.19.8
PY := $(VENV)/bin/python
# Two pytest-xdist workers: a multi-rank run leaves a core idle while its launcher and ranks
# start, and the other worker's tests fill it (tests/conftest.py says how tests are grouped).
TEST_WORKERS ?= 2

.PHONY: setup test
setup:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	# DeepSpeed's setup.py imports torch, so it must build against the torch just installed.
	# Without a GPU, its shared-memory CPU collective op is compiled now rather than at every
	# first start (a JIT build of about a minute that concurrent jobs would repeat).
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet --no-build-isolation "$(DEEPSPEED_SPEC)"; \
	else \
		DS_ACCELERATOR=cpu DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 \
		$(PY) -m pip install --quiet --no-cache-dir --no-build-isolation "$(DEEPSPEED_SPEC)"; \
	fi
	$(PY) -m pip install --quiet -e ".[dev]"

test:
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder
