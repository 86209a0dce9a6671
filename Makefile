# gqa-viz developer tasks.  `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
# `make run`: Streamlit workers behind haproxy (scripts/serve.py); one per core by default.
WORKERS ?= $(shell nproc)
# The address haproxy binds for visitors; empty is every interface (127.0.0.1: this machine).
ADDRESS ?=

# Each stamp's name carries a hash of the requirements files it installed, so editing one
# triggers a reinstall while repeated runs are a no-op. `make run` needs requirements.txt
# only; `make test` (and the benchmarks) add requirements-dev.txt on top.
RUN_HASH  := $(shell cat requirements.txt 2>/dev/null | sha256sum | cut -c1-16)
DEV_HASH  := $(shell cat requirements.txt requirements-dev.txt 2>/dev/null | sha256sum | cut -c1-16)
RUN_STAMP := $(VENV)/.installed-run-$(RUN_HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(DEV_HASH)

# Use sudo for apt only when not already root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Keras must use the JAX backend (tests compare against keras.layers.GroupQueryAttention).
export KERAS_BACKEND := jax

.PHONY: help venv dev-venv system-deps serve-deps run test lint format bench bench-app bench-decode bench-checkpoints clean distclean

help:
	@echo "make venv         create .venv with requirements.txt (what the app needs)"
	@echo "make dev-venv     .venv plus requirements-dev.txt (tests, benchmarks, training)"
	@echo "make system-deps  apt-install chromium + chromium-headless-shell (browser tests)"
	@echo "make serve-deps   apt-install haproxy (make run, make test)"
	@echo "make run          WORKERS=$(WORKERS) Streamlit workers behind haproxy on port $(PORT)"
	@echo "make test         ruff check + ruff format --check + pytest (what CI runs)"
	@echo "make lint         ruff check + ruff format --check"
	@echo "make format       ruff format + ruff check --fix"
	@echo "make bench        python -m bench.core"
	@echo "make bench-app    python -m bench.interactive (reruns, payload, browser)"
	@echo "make bench-decode python -m bench.decode (KV-cache decoding vs recompute; not in CI)"
	@echo "make bench-checkpoints python -m bench.checkpoints (real-sized checkpoints vs transformers; not in CI)"
	@echo "make bench-reruns python -m bench.reruns (server CPU per rerun per action; first visits)"
	@echo "make bench-coldstart python -m bench.coldstart (make run's stack vs a one-heatmap page, chromium)"
	@echo "make bench-figure python -m bench.figure_draw (what plotly.js spends on each part of the heads figure)"
	@echo "make bench-press  python -m bench.press_cpu (browser main-thread CPU per slider press, vs the peer page and the Playground skeleton)"
	@echo "make gpu-check    core tests + bench.core --quick with the machine's own python3/jax (installs nothing)"
	@echo "make load         python -m bench.load --stack WORKERS: make run's stack under 30 sessions"
	@echo "                  + 3 browsers, 3 min (not in CI; without --stack: one server)"
	@echo "make load-capacity python -m bench.load --capacity ...: rerun rate, 1 worker vs 2"
	@echo "make train        python -m scripts.train_tiny (the tiny models in assets/trained, then"
	@echo "                  the uptraining experiment, 3 seeds; about 10 min on 2 cores)"
	@echo "make warm         compile the prewarmed programs into .jax_cache (python -m gqa_viz.app.warm)"
	@echo "make docker       docker build -t gqa-viz . (needs a Docker engine; not run in CI)"
	@echo "make clean        remove caches and test artifacts (distclean: also .venv)"

venv: $(RUN_STAMP)
dev-venv: $(DEV_STAMP)

$(RUN_STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	@rm -f $(VENV)/.installed-run-*
	@touch $@

# The dev stamp implies the run stamp: requirements-dev.txt includes requirements.txt.
$(DEV_STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements-dev.txt
	@rm -f $(VENV)/.installed-dev-* $(VENV)/.installed-run-*
	@touch $@ $(RUN_STAMP)

system-deps:
	@if [ -x /usr/bin/chromium ]; then \
	  echo "system-deps: /usr/bin/chromium present, skipping apt-get"; \
	else \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    chromium chromium-headless-shell; \
	fi

# Debian's haproxy: `make run` puts it in front of the workers (cookie stickiness, health
# checks), and tests/test_serving.py starts that stack. The package's own service (systemd
# hosts only) runs Debian's default config, which listens on nothing; scripts/serve.py runs
# a haproxy of its own in the foreground.
serve-deps:
	@if command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ]; then \
	  echo "serve-deps: haproxy present, skipping apt-get"; \
	else \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    haproxy; \
	fi

# WORKERS=1 still runs behind haproxy: one code path, the one the tests check.
run: venv serve-deps
	$(PY) -m scripts.serve --workers $(WORKERS) --port $(PORT) --address "$(ADDRESS)"

# GPU is used automatically when present (JAX_PLATFORMS deliberately not set);
# no preallocation so tests and a running app can share the device.
test: export XLA_PYTHON_CLIENT_PREALLOCATE := false
test: dev-venv system-deps serve-deps
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m pytest -q

lint: dev-venv
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: dev-venv
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

bench: dev-venv
	$(PY) -m bench.core

bench-app: dev-venv system-deps
	$(PY) -m bench.interactive

bench-decode: dev-venv
	$(PY) -m bench.decode

bench-checkpoints: dev-venv
	$(PY) -m bench.checkpoints

.PHONY: bench-reruns bench-coldstart bench-figure bench-press
bench-reruns: dev-venv
	$(PY) -m bench.reruns

bench-coldstart: dev-venv system-deps serve-deps
	$(PY) -m bench.coldstart --workers 2

bench-figure: dev-venv system-deps
	$(PY) -m bench.figure_draw

bench-press: dev-venv system-deps
	$(PY) -m bench.press_cpu

.PHONY: load load-capacity train
load: dev-venv system-deps serve-deps
	$(PY) -m bench.load --stack $(WORKERS)
load-capacity: dev-venv serve-deps
	$(PY) -m bench.load --capacity 20,40,60,80,100,120,140,160,200,240 --minutes 1
train: dev-venv
	$(PY) -m scripts.train_tiny

# Installs nothing and uses no venv: a GPU machine's own Python, JAX and CUDA plugin.
.PHONY: gpu-check
gpu-check:
	bash scripts/gpu_check.sh

.PHONY: warm docker

warm: venv
	$(PY) -m gqa_viz.app.warm

# The CPU image (Dockerfile); deploy/README.md has the GPU image and Kubernetes.
docker:
	docker build -t gqa-viz .

clean:
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache .jax_cache .hypothesis htmlcov .coverage \
	  test-results playwright-report *.egg-info build dist

distclean: clean
	rm -rf $(VENV)
