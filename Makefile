# The README's two commands are `make run` and `make test`; .ci/run calls `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.toml
STAMP  := $(VENV)/.installed

.PHONY: run test check lint typecheck bench node clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=python3 if that is 3.11+)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,sdk]'
	@touch $(STAMP)

## run: set up and start the gateway on SQLite with a demo tenant (prints tokens to try)
run: $(STAMP)
	$(BIN)/gateway serve --config $(CONFIG) --demo

## node: Auth0's hook compilers for the compatibility tests (needs node and npm)
node: tests/node/node_modules/.installed
tests/node/node_modules/.installed: tests/node/package-lock.json
	cd tests/node && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

## test: set up and run the whole test suite
test: $(STAMP) node
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

## bench: run the benchmarks on loopback and rewrite docs/BENCHMARKS.md
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]' || echo "py-spy not installed: the benchmark runs without a profile"
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) tests/node/node_modules data .pytest_cache .mypy_cache .ruff_cache
