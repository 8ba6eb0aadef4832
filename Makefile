# The two set-up commands of the README are `make up` and `make test`; the rest are helpers.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed

.PHONY: up test install lint lock wheel mlflow-ui clean-venv

$(BIN)/uv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): requirements.lock pyproject.toml | $(BIN)/uv
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

## install: create .venv and install the pinned dependencies (requirements.lock) and reirrad
install: $(STAMP)

## up: install, train on the synthetic cohort if no champion model is registered, serve the API
up: install
	$(BIN)/reirrad up

## test: install, lint, run the whole test suite
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

## lock: regenerate requirements.lock from pyproject.toml (the only way the lock changes;
## versions already pinned stay unless pyproject.toml excludes them)
lock: | $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

## wheel: build the sdist and the wheel into dist/ (what `pip install .` installs)
wheel: | $(BIN)/uv
	$(BIN)/uv build --out-dir dist .

## mlflow-ui: open the MLflow UI on the local tracking store (the one in REIRRAD_HOME)
mlflow-ui: install
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 \
	  --backend-store-uri "$$($(BIN)/python -c 'from features.paths import default_tracking_uri as u; print(u())')" \
	  --default-artifact-root "$$($(BIN)/python -c 'from features.paths import mlflow_dir as d; print((d() / "artifacts").as_uri())')"

clean-venv:
	rm -rf $(VENV)
