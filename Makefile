# rotator: everything a fresh machine needs is installed by these targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OIDC_PEER := tests/peers/oidc
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: all install node demo test unit lint typecheck bench clean

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

$(OIDC_PEER)/node_modules/.package-lock.json: $(OIDC_PEER)/package.json $(OIDC_PEER)/package-lock.json
	npm ci --prefix $(OIDC_PEER) --no-audit --no-fund --loglevel=error

node: $(OIDC_PEER)/node_modules/.package-lock.json

# A Keycloak-compatible token endpoint, a moto server and the daemon, live, for about a minute.
demo: install
	$(PY) -m rotator.testing.demo --seconds $${DEMO_SECONDS:-60}

lint: install
	$(VENV)/bin/ruff check rotator tests
	$(VENV)/bin/ruff format --check rotator tests

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest -q tests/unit

test: install node lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install node
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m tests.bench.run

clean:
	rm -rf $(VENV) $(OIDC_PEER)/node_modules .mypy_cache .ruff_cache .pytest_cache
