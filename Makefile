# Two commands do all the set-up on a fresh machine:
#   make train   — create .venv, install, and run `python -m entry.train` on the Titanic data
#   make test    — create .venv, install with the test and launch extras, and run the test suite
#   make test-fast — the same set-up; only the tests that start no training process, SLURM job,
#                    package build or server (`-m "not slow"`), on every core
#
# TORCH is installed first, on its own, so the build is chosen on purpose. Its default pin takes
# the CPU wheel where pip's index or cache has one; on a GPU machine the same pin from PyPI is the
# CUDA build. For a CPU-only build elsewhere: make train TORCH_INDEX=https://download.pytorch.org/whl/cpu

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
ARGS ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
TORCH_PIP_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: train test test-fast install dev prepare lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install $(TORCH_PIP_ARGS) "$(TORCH)"
	touch $@

$(VENV)/.core: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.core
	$(PIP) install -e ".[launch,onnx,test]"
	touch $@

install: $(VENV)/.core
dev: $(VENV)/.dev

train: $(VENV)/.core
	$(BIN)/python -m entry.train $(ARGS)

prepare: $(VENV)/.core
	$(BIN)/python -m entry.prepare $(ARGS)

# On every core (pytest-xdist), each test file on one worker: a file's tests share its fixtures, and
# the SLURM tests, which share the one-node cluster, run one after another. PYTEST_ARGS="-n 0": one process.
test: $(VENV)/.dev
	$(BIN)/python -m pytest -n auto --dist loadfile $(PYTEST_ARGS)

test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -m "not slow" -n auto --dist loadfile $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .

# Removes only the files this project's commands wrote (their folders' records say which) and the
# folders that leaves empty; the user's own files stay, wherever they are.
clean:
	$(PYTHON) -m titanic_lightning.io.clean
