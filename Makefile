# Everything runs from a virtual environment in .venv (override with VENV=...).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# TORCH pins the version only: from PyPI, torch==2.13.0 on Linux is the CUDA build (several GB). For the CPU
# build, name PyTorch's CPU wheel index: `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu`
# (torch alone is installed from it first; everything else, and CI, which sets no TORCH_INDEX, uses PyPI).
# For an NVIDIA GPU, `make install TORCH=torch` takes PyPI's newest (CUDA) torch.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
CONFIG ?= configs/imdb_cpu.yaml
DATA_DIR ?= $(or $(SENTIMENT_DATA_DIR),data)
GLOVE_DIM ?= 50
# With no internet but local copies of the archives beside this checkout (../shared/data), use them;
# otherwise the official URLs. Either can be set explicitly: make download-data IMDB_SOURCE=/path/or/url
IMDB_SOURCE ?= $(or $(SENTIMENT_IMDB_SOURCE),$(wildcard ../shared/data/aclImdb_v1.tar.gz))
GLOVE_SOURCE ?= $(or $(SENTIMENT_GLOVE_SOURCE),$(wildcard ../shared/data/glove.6B.$(GLOVE_DIM)d.zip))

export SENTIMENT_DATA_DIR := $(DATA_DIR)

.PHONY: install download-data prepare train test clean

install:
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(BIN)/pip install "$(TORCH)" --index-url "$(TORCH_INDEX)")
	$(BIN)/pip install "$(TORCH)" -e ".[dev]"

download-data:
	$(BIN)/sentiment download --glove-dim $(GLOVE_DIM) \
		$(if $(IMDB_SOURCE),--imdb-source "$(IMDB_SOURCE)") $(if $(GLOVE_SOURCE),--glove-source "$(GLOVE_SOURCE)")
	$(BIN)/sentiment prepare --config $(CONFIG)

prepare:
	$(BIN)/sentiment prepare --config $(CONFIG)

train:
	$(BIN)/sentiment train --config $(CONFIG)

# The tests that start several training processes alone (gloo ranks sharing the cores with other tests miss
# their start-up), then the rest on every core (tests/conftest.py marks them)
test:
	$(BIN)/python -m pytest -m ranks
	$(BIN)/python -m pytest -m "not ranks" -n auto --dist loadfile

clean:
	rm -rf data/cache .pytest_cache

# Every speed figure against a baseline timed in the same command, one benchmark at a time, with a summary
# (~10-12 min on 2 cores; BENCH_ARGS=--quick for about half). RUN=runs/NAME times predict with that run.
# What it prints and how to read it: docs/benchmarks.md.
.PHONY: bench
bench:
	$(BIN)/python benchmarks/bench.py --data-dir $(DATA_DIR) $(if $(RUN),--run $(RUN)) $(BENCH_ARGS)

# On a CUDA machine: the commands behind the GPU figures (the CPU recipe and one epoch of configs/imdb_gpu.yaml
# with host syncs lazy and eager, then imdb_gpu.yaml over 3 seeds side by side). Never yet run as a whole on
# a GPU: its commands ran one by one on an H200 on 2026-11-30, torch 2.11, commit ca2a10c (docs/results.md).
.PHONY: bench-gpu
bench-gpu:
	PY=$(BIN)/python bash benchmarks/bench_gpu.sh
