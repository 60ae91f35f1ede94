# The same commands run on a laptop and in CI (.ci/run). `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HAVE_GO := $(shell command -v go >/dev/null 2>&1 && echo yes)
HAVE_NODE := $(shell command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && echo yes)
PYTEST_ARGS ?=

.PHONY: help setup gen gen-check lint test test-python test-go test-ts build build-go build-ts \
        demo bench bench-quick fuzz clean

help:
	@echo "make demo        start a coordinator and workers in three languages, run a growing graph"
	@echo "make test        every test tier (core, store, service, CLI, SDKs, conformance)"
	@echo "make lint        ruff, mypy, buf lint/format/breaking, gofmt/go vet, tsc/biome"
	@echo "make gen         regenerate the protocol stubs (Python, Go, TypeScript)"
	@echo "make gen-check   fail if committed generated code differs from make gen"
	@echo "make bench       the benchmark suite, with Ray and Dask side by side"
	@echo "make fuzz        the fuzzing tier at length (FUZZ_EXAMPLES=500; make test runs 15)"

# --- environments ---------------------------------------------------------------------

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

node_modules/.stamp: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

sdks/typescript/node_modules/.stamp: sdks/typescript/package.json
	cd sdks/typescript && npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.stamp

# --- generated code ---------------------------------------------------------------------

gen: $(VENV)/.stamp
	PY=$(PY) bash scripts/gen-python.sh
ifeq ($(HAVE_GO),yes)
	PY=$(abspath $(PY)) bash sdks/go/gen.sh
endif
ifeq ($(HAVE_NODE),yes)
	$(MAKE) sdks/typescript/node_modules/.stamp
	cd sdks/typescript && PY=$(abspath $(PY)) npm run --silent gen
endif

gen-check: gen
	@if ! git diff --quiet -- hivegrid sdks/go/gen sdks/typescript/src/gen || \
	   [ -n "$$(git ls-files --others --exclude-standard -- hivegrid sdks/go/gen sdks/typescript/src/gen)" ]; then \
	  echo "generated code is out of date: run 'make gen' and commit the result"; \
	  git status --short -- hivegrid sdks/go/gen sdks/typescript/src/gen; exit 1; fi

# --- builds -----------------------------------------------------------------------------

build: build-go build-ts

build-go:
ifeq ($(HAVE_GO),yes)
	$(MAKE) -C sdks/go build
endif

build-ts:
ifeq ($(HAVE_NODE),yes)
	$(MAKE) sdks/typescript/node_modules/.stamp
	cd sdks/typescript && npm run --silent build
endif

# --- checks -----------------------------------------------------------------------------

lint: $(VENV)/.stamp node_modules/.stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	npx --no-install buf lint
	npx --no-install buf format --diff --exit-code
	npx --no-install buf breaking --against protos/baseline/v0.1.binpb
	$(MAKE) -C sdks/go lint
	$(MAKE) sdks/typescript/node_modules/.stamp
	cd sdks/typescript && npm run --silent lint

test: $(VENV)/.stamp build
	$(MAKE) test-go test-ts
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-python: $(VENV)/.stamp
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

FUZZ_EXAMPLES ?= 500
fuzz: $(VENV)/.stamp
	HIVEGRID_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

test-go: $(VENV)/.stamp
	$(MAKE) -C sdks/go test

test-ts: sdks/typescript/node_modules/.stamp
	cd sdks/typescript && npm test --silent

# --- the main job -----------------------------------------------------------------------

demo: $(VENV)/.stamp
	-@$(MAKE) --no-print-directory build-go build-ts || echo "(an SDK did not build; the demo runs without it)"
	$(PY) -m examples.demo

bench: $(VENV)/.stamp
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m bench

bench-quick: $(VENV)/.stamp
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) node_modules sdks/typescript/node_modules sdks/typescript/dist sdks/go/bin .pytest_cache .mypy_cache .ruff_cache
