# The README's two commands are `make run` and `make test`; .ci/run calls `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.toml
STAMP  := $(VENV)/.installed

.PHONY: run test check lint typecheck bench node screenshots clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=python3 if that is 3.11+)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,sdk]'
	@touch $(STAMP)

## run: set up and start the gateway on SQLite with a demo tenant and example receivers, show
## it at work (a claim added, a signup denied, a delivery retried after a 429), then serve
run: $(STAMP)
	$(BIN)/gateway demo --config $(CONFIG)

## node: Auth0's hook compilers for the hosted hooks' runtime and the compatibility tests, the
## browser tests' OpenID Connect provider and axe-core, the integrations' auth servers, and the
## real packages (lodash) the dependency-install tests serve from their own registry (needs node
## and npm)
node: gateway/runtime/node/node_modules/.installed tests/node/node_modules/.installed tests/oidc/node_modules/.installed integrations/node_modules/.installed tests/npm_packages/node_modules/.installed
gateway/runtime/node/node_modules/.installed: gateway/runtime/node/package-lock.json
	cd gateway/runtime/node && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@
tests/%/node_modules/.installed: tests/%/package-lock.json
	cd tests/$* && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@
integrations/node_modules/.installed: integrations/package-lock.json
	cd integrations && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

## test: set up and run the whole test suite: most of it in JOBS processes (its tests mostly wait
## on sockets and timers), then alone the tests that kill processes and measure what survives
JOBS ?= 3
test: $(STAMP) node
	$(BIN)/pytest -q -n $(JOBS) --dist loadfile -m "not serial"
	$(BIN)/pytest -q -m serial

## screenshots: rewrite docs/screenshots/ from the browser tests (needs chromium)
screenshots: $(STAMP) node
	TEST_SCREENSHOTS=1 TEST_BROWSER=required $(BIN)/pytest -q tests/browser

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

## image: build the container image (Dockerfile) with podman on a Debian base made by mmdebstrap
## (no image registry needed); TEST_CONTAINER_IMAGE names it for tests/test_container_image.py
IMAGE ?= localhost/hooks-gateway:test
.PHONY: image
image:
	.ci/image $(IMAGE)

## bench: run the benchmarks on loopback and rewrite docs/BENCHMARKS.md
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]' || echo "py-spy not installed: the benchmark runs without a profile"
	$(BIN)/python -m bench

## soak: run one gateway under a steady mixed load (outside CI) and report RSS, open files and
## backlog every 10 s; MINUTES=10 BACKEND=sqlite|postgres SOAK_OUT=file
.PHONY: soak
soak: $(STAMP)
	$(BIN)/python -m bench.soak --minutes $(or $(MINUTES),10) --backend $(or $(BACKEND),sqlite) $(if $(SOAK_OUT),--out $(SOAK_OUT))

clean:
	rm -rf $(VENV) gateway/runtime/node/node_modules tests/node/node_modules tests/oidc/node_modules integrations/node_modules data .pytest_cache .mypy_cache .ruff_cache
