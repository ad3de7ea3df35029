# Lightspeed — `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
.DEFAULT_GOAL := help

.PHONY: help install data train test test-full test-gpu lint format tensorboard bench bench-fit tune-loader bench-data compare reproduce rename clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "make: python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install the package with dev tools (quick when done)

data: install ## make Fashion-MNIST available (data/ → system copy → download → apt package)
	@$(PY) scripts/get_data.py

train: install data ## train the default config; extra overrides: make train ARGS="trainer.max_epochs=3"
	LIGHTSPEED_LAUNCHER="make train" $(VENV)/bin/lightspeed $(ARGS)

test: install ## fast test suite
	$(VENV)/bin/pytest -q $(ARGS)

test-full: install ## all tests, including slow ones
	$(VENV)/bin/pytest -q -m "" $(ARGS)

test-gpu: install ## the GPU tests alone (tests/engine/test_gpu.py), on this machine's GPU; make test hides it
	LIGHTSPEED_TEST_GPU=1 $(VENV)/bin/pytest -q -m gpu $(ARGS)

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## ruff fix and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tensorboard: install ## TensorBoard over all runs in logs/
	$(VENV)/bin/tensorboard --logdir logs

tune-loader: install ## measure loader settings for the configured data → configs/local/loader_<data>.yaml (ARGS: overrides)
	$(PY) scripts/tune_loader.py $(ARGS)

bench: install ## template vs hand-written loop, steady-state samples/s → benchmarks/results/bench_<device>_<date>.* (ARGS=--record: the committed file)
	$(PY) scripts/bench.py $(ARGS)

bench-fit: install ## time to accuracy of the default run, whole process, fresh processes → benchmarks/results/bench_fit_<cpu kind>_<date>.* (ARGS: --runs N, --baseline DIR, --record)
	$(PY) scripts/bench_fit.py $(ARGS)

bench-data: install ## data-path throughput: torchvision per-sample vs in-memory vs HDF5 → benchmarks/results/data_loading_<date>.* (ARGS=--record: the committed file)
	$(PY) scripts/bench_data.py $(ARGS)

compare: install ## finished runs side by side → compare.csv/.md (RUNS="dir ...": run dirs, multirun or sweep folders; ARGS: --group-by all-but-seed, --plot FILE, --out DIR)
	@test -n "$(RUNS)" || { echo 'make compare: RUNS is empty; name run dirs or folders: make compare RUNS="logs/fit/multiruns"' >&2; exit 2; }
	$(PY) scripts/compare.py $(RUNS) $(ARGS)

reproduce: install ## re-run a finished fit from its overrides, check its metrics (RUN=dir; ARGS: --tolerance, --out DIR)
	@test -n "$(RUN)" || { echo 'make reproduce: RUN is empty; name a fit run dir: make reproduce RUN=logs/fit/<run>' >&2; exit 2; }
	$(PY) scripts/reproduce.py $(RUN) $(ARGS)

rename: install ## make the example project yours: make rename NAME=my_project (the engine stays lightspeed)
	@test -n "$(NAME)" || { echo "make rename: give the new name, e.g. make rename NAME=my_project" >&2; exit 2; }
	$(PY) scripts/rename.py $(NAME)

clean: ## remove caches and build files (keeps .venv, data/ and logs/)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
