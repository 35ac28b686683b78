# Two commands for a fresh machine: `make run` (the pipeline) and `make test` (the suite).
# Both create .venv, install the pinned project, install the Fashion-MNIST Debian package
# where apt is usable, and set up a local DVC remote if none is configured.

PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed-stamp
DVC_REMOTE_DIR ?= $(HOME)/.cache/cnnpipe/dvc-remote
PYTEST_ARGS ?= -m "not slow"

# Stage commands in dvc.yaml say `python`: make it the project's interpreter.
export PATH := $(BIN):$(PATH)
# No tool phones home: this must work offline.
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := False
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: run test quick bench setup dataset dvc-setup clean-venv

run: setup
	dvc repro

# Quick profile: every stage (in dvc.yaml's order) on a small slice, outputs under quick/,
# outside DVC's lock, all in one Python process (stages/__main__.py). A foreach group
# (evaluate@classifier, ...) runs once, without --task: every task. Registration is left to real runs.
quick: setup
	$(BIN)/python -m stages --params params.quick.yaml --skip register

# Benchmarks (figures, not tests): prints a table, writes benchmarks/results.json. Reads the
# real data/ and models/ (run `make run` first), writes only to temp dirs. BENCH_QUICK=1: ~2 min
# of small sizes (benchmarks/results.quick.json); BENCH_ONLY / BENCH_SKIP: comma-separated sections.
bench: setup
	$(BIN)/python -m benchmarks

# pytest exits 5 when it collects nothing: that is a failure, not a pass.
test: setup
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

setup: $(STAMP) dataset dvc-setup

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "cnnpipe needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

# The Debian package is the preferred offline source; without apt the fetch stage downloads.
dataset:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "dataset-fashion-mnist: present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "warning: could not install dataset-fashion-mnist; fetch will download"; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "warning: could not install dataset-fashion-mnist; fetch will download"; \
	else \
	  echo "apt not usable here: the fetch stage will download Fashion-MNIST"; \
	fi

dvc-setup:
	@if [ -z "$$(dvc remote list)" ]; then \
	  mkdir -p "$(DVC_REMOTE_DIR)" && dvc remote add --local --default localremote "$(DVC_REMOTE_DIR)" \
	  && echo "dvc: default remote -> $(DVC_REMOTE_DIR) (in .dvc/config.local)"; \
	fi

clean-venv:
	rm -rf $(VENV)
