# Two commands on a fresh machine: `make up` runs the pipeline locally, `make test` tests it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BQ_VENV := .venv-bqemulator
BQ_STAMP := $(BQ_VENV)/.installed

.PHONY: up test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The BigQuery emulator lives in a venv of its own: it pins gRPC packages differently.
$(BQ_STAMP): tools/bqemulator/requirements.txt
	$(PYTHON) -m venv $(BQ_VENV)
	$(BQ_VENV)/bin/pip install --quiet -r tools/bqemulator/requirements.txt
	touch $(BQ_STAMP)

install: $(STAMP)

## Run the local profile: the SMTP sink and Dagster (UI on http://127.0.0.1:3000).
up: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/notify up

## Lint, type-check and run the whole test suite.
test: $(STAMP) $(BQ_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy notify_pipeline benchmarks
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -n 2 --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy notify_pipeline benchmarks

clean:
	rm -rf $(VENV) $(BQ_VENV) .notify .pytest_cache .mypy_cache .ruff_cache
